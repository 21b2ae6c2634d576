#!/bin/sh
# Differential test: every case under tests/differential/cases/NN-name/ is
# built by kiln, by Docker 20.10's built-in BuildKit (the reference) and by
# buildah (--isolation chroot), all FROM the busybox fixture
# (tests/fixtures/mkbase.sh) served by a private docker-registry on
# 127.0.0.1. Each image is copied into an OCI layout, unpacked with umoci,
# and compare.py compares the file trees and the config fields with
# BuildKit's. Differences listed in EXPECTED.md are reported as expected;
# any other makes the exit status 1.
#
#   tests/differential/run.sh [CASE...]     (as root; `make all` first)
#
# Environment: KEEP=1 keeps the temp dir; DIFF_BUILDERS="kiln buildah"
# (default) picks the builders compared with BuildKit.
#
# Per case: CASE/Dockerfile with @BASE@ where the base image goes; the rest
# of CASE/ is the build context, except CASE/prepare.sh (run in the copied
# context, then removed: modes git cannot carry) and CASE/build-args (one
# K=V a line, passed to every builder, then removed).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
KILN=$TOP/bin/kiln
COMPARE="python3 $HERE/compare.py"
EXPECTED=$HERE/EXPECTED.md
BUILDERS=${DIFF_BUILDERS:-kiln buildah}
start_s=$(date +%s)

die() { echo "run.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (dockerd, buildah and umoci unpack keep owners)"
[ -x "$KILN" ] || die "$KILN missing: run make all first"

# ---- tools, from Debian's archive only --------------------------------
need=""
command -v dockerd >/dev/null && [ -x /usr/bin/docker ] || need="$need docker.io"
command -v buildah >/dev/null || need="$need buildah"
command -v skopeo >/dev/null || need="$need skopeo"
command -v umoci >/dev/null || need="$need umoci"
command -v docker-registry >/dev/null || need="$need docker-registry"
command -v jq >/dev/null || need="$need jq"
command -v python3 >/dev/null || need="$need python3"
command -v curl >/dev/null || need="$need curl"
if [ -n "$need" ]; then
	echo "# installing:$need"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null; } ||
		die "apt-get install$need failed"
fi
# Debian's docker CLI: another `docker` may come first in PATH.
DOCKER_BIN=/usr/bin/docker

T=$(mktemp -d /tmp/kiln-diff.XXXXXX)
export KILN_CONFIG=$T/kiln
DOCKERD_PID=""

# Processes are ended by the PIDs we recorded (and the kiln daemons by the
# pidfiles they wrote under $KILN_CONFIG), mounts left under $T unmounted.
stop_pid() {
	p=$1
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null || return 0
	i=0
	while [ -d "/proc/$p" ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
	[ -d "/proc/$p" ] && kill -9 "$p" 2>/dev/null
	return 0
}
cleanup() {
	if [ -d "$T/buildah" ]; then
		buildah rm --all >/dev/null 2>&1
		buildah rmi --all --force >/dev/null 2>&1
	fi
	stop_pid "$DOCKERD_PID"
	for f in $(find "$KILN_CONFIG" -name '*.pid' 2>/dev/null); do
		stop_pid "$(cat "$f" 2>/dev/null)"
	done
	"$TOP/tests/fixtures/registry.sh" stop "$T/registry" 2>/dev/null
	# Deepest first.
	awk -v t="$T" '$5 == t || index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo |
		sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
	if [ -n "${KEEP:-}" ]; then
		echo "# kept $T"
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- base image in a private registry --------------------------------
"$TOP/tests/fixtures/mkbase.sh" "$T/base" >"$T/mkbase.log" 2>&1 ||
	{ cat "$T/mkbase.log"; die "mkbase.sh failed"; }
port=$("$TOP/tests/fixtures/registry.sh" start "$T/registry") || die "registry did not start"
R=127.0.0.1:$port
BASE=$R/busybox:latest
skopeo copy -q --all --dest-tls-verify=false oci:"$T/base":multiarch docker://$BASE \
	>"$T/skopeo-push.log" 2>&1 || { cat "$T/skopeo-push.log"; die "push of the base image failed"; }

# ---- dockerd, private ------------------------------------------------
D=$T/docker
mkdir -p "$D/data" "$D/exec"
setsid dockerd --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
	--bridge=none --storage-driver=overlay2 --data-root "$D/data" --exec-root "$D/exec" \
	--pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --insecure-registry "$R" \
	>"$D/dockerd.log" 2>&1 </dev/null &
DOCKERD_PID=$!
docker_() { DOCKER_BUILDKIT=1 DOCKER_CONFIG=$D/cli "$DOCKER_BIN" -H "unix://$D/docker.sock" "$@"; }
i=0
until docker_ version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 300 ] || [ ! -d "/proc/$DOCKERD_PID" ]; then
		tail -20 "$D/dockerd.log"
		die "dockerd did not start"
	fi
	sleep 0.1
done

# ---- buildah, private ------------------------------------------------
B=$T/buildah
mkdir -p "$B/graph" "$B/run" "$B/tmp" "$B/docker"
cat >"$B/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$B/graph"
runroot = "$B/run"
EOF
cat >"$B/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "$R"
insecure = true
EOF
echo '{}' >"$B/docker/config.json"
export CONTAINERS_STORAGE_CONF=$B/storage.conf
export CONTAINERS_REGISTRIES_CONF=$B/registries.conf
export DOCKER_CONFIG=$B/docker
export REGISTRY_AUTH_FILE=$B/docker/config.json
export TMPDIR=$B/tmp

# ---- one case --------------------------------------------------------
# build_X CASE CTX ARGS_FILE OUT_LAYOUT: builds, leaves the image in
# OUT_LAYOUT (an OCI layout, ref "img"); the log in $W/X.log. ARGS_FILE
# holds K=V lines passed as --build-arg.
build_kiln() {
	c=$1 ctx=$2 args=$3 out=$4
	set --
	while IFS= read -r a; do [ -n "$a" ] && set -- "$@" --build-arg "$a"; done <"$args"
	{ "$KILN" build --progress plain "$@" -o type=oci,dest="$W/kiln.tar" "$ctx" &&
	  skopeo copy -q oci-archive:"$W/kiln.tar" oci:"$out":img; } >"$W/kiln.log" 2>&1
}
build_buildkit() {
	c=$1 ctx=$2 args=$3 out=$4
	set --
	while IFS= read -r a; do [ -n "$a" ] && set -- "$@" --build-arg "$a"; done <"$args"
	{ docker_ build --progress plain --network none "$@" -t "kiln-diff/$c" "$ctx" &&
	  docker_ save -o "$W/docker.tar" "kiln-diff/$c" &&
	  skopeo copy -q docker-archive:"$W/docker.tar" oci:"$out":img; } >"$W/buildkit.log" 2>&1
}
build_buildah() {
	c=$1 ctx=$2 args=$3 out=$4
	set --
	while IFS= read -r a; do [ -n "$a" ] && set -- "$@" --build-arg "$a"; done <"$args"
	{ buildah build --layers --isolation chroot --tls-verify=false --platform linux/amd64 \
		--identity-label=false \
		"$@" -t "kiln-diff-$c" -f "$ctx/Dockerfile" "$ctx" &&
	  buildah push -q "kiln-diff-$c" oci:"$out":img; } >"$W/buildah.log" 2>&1
}

cases=""
if [ $# -gt 0 ]; then
	for a in "$@"; do cases="$cases $(basename "$a")"; done
else
	for d in "$HERE"/cases/*/; do cases="$cases $(basename "$d")"; done
fi

n=0 same=0 differ=0 unexpected=0 errors=0
summary=$T/summary
: >"$summary"
for c in $cases; do
	n=$((n + 1))
	src=$HERE/cases/$c
	[ -f "$src/Dockerfile" ] || die "no case $c"
	W=$T/work/$c
	ctx=$W/ctx
	mkdir -p "$W"
	cp -a "$src" "$ctx"
	sed -i "s#@BASE@#$BASE#g" "$ctx/Dockerfile"
	if [ -f "$ctx/prepare.sh" ]; then (cd "$ctx" && sh ./prepare.sh) && rm -f "$ctx/prepare.sh"; fi
	: >"$W/args"
	if [ -f "$ctx/build-args" ]; then mv "$ctx/build-args" "$W/args"; fi

	echo "== $c"
	if ! build_buildkit "$c" "$ctx" "$W/args" "$W/buildkit"; then
		echo "  BuildKit build FAILED (the case is broken):"
		tail -15 "$W/buildkit.log" | sed 's/^/    /'
		errors=$((errors + 1))
		echo "$c: BuildKit build failed" >>"$summary"
		continue
	fi
	umoci unpack --image "$W/buildkit":img "$W/u-buildkit" >"$W/umoci-buildkit.log" 2>&1 &&
		$COMPARE snap "$W/buildkit" img "$W/u-buildkit/rootfs" "$W/buildkit.json" "$W/docker.tar" ||
		{ echo "  cannot unpack BuildKit's image"; errors=$((errors + 1)); continue; }
	for b in $BUILDERS; do
		if ! "build_$b" "$c" "$ctx" "$W/args" "$W/$b"; then
			res="    DIFFERS:  build: BuildKit builds it, $b fails: $(grep -iE 'error|fail' "$W/$b.log" | tail -1)
$(tail -8 "$W/$b.log" | sed 's/^/      | /')"
			if why=$($COMPARE match "$EXPECTED" "$b" "$c" build); then
				res="    expected: build: $b fails ($why)"
			fi
		elif ! umoci unpack --image "$W/$b":img "$W/u-$b" >"$W/umoci-$b.log" 2>&1 ||
		     ! $COMPARE snap "$W/$b" img "$W/u-$b/rootfs" "$W/$b.json"; then
			res="    DIFFERS:  unpack: umoci cannot unpack $b's image: $(tail -1 "$W/umoci-$b.log")"
		else
			res=$($COMPARE diff --expected "$EXPECTED" --builder "$b" --case "$c" \
				"$W/buildkit.json" "$W/$b.json")
		fi
		if [ -z "$res" ]; then
			echo "  $b: same"
			[ "$b" = kiln ] && same=$((same + 1))
		else
			if printf '%s\n' "$res" | grep -q 'DIFFERS:'; then
				echo "  $b: differs from BuildKit (BuildKit vs $b):"
				unexpected=$((unexpected + 1))
				printf '%s\n' "$res" | grep 'DIFFERS:' | sed "s/^ *DIFFERS: */$c [$b] /" >>"$summary"
			else
				echo "  $b: same but for expected differences:"
			fi
			printf '%s\n' "$res"
			if [ "$b" = kiln ]; then
				if printf '%s\n' "$res" | grep -q 'DIFFERS:'; then differ=$((differ + 1)); else same=$((same + 1)); fi
			fi
		fi
	done
	# Keep the disk use down: the unpacked trees are the big part.
	[ -n "${KEEP:-}" ] || rm -rf "$W/u-buildkit" "$W/u-kiln" "$W/u-buildah" "$W"/*.tar
done

end_s=$(date +%s)
echo
echo "$n cases: $same identical to BuildKit, $differ differ (kiln; expected differences count as identical)"
if [ -s "$summary" ]; then
	echo "unexpected differences from BuildKit (BuildKit vs builder):"
	sed 's/^/  /' "$summary"
fi
echo "time: $((end_s - start_s)) s"
[ "$unexpected" -eq 0 ] && [ "$errors" -eq 0 ]
