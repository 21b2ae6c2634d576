#!/bin/sh
# kiln's benchmark (`make bench`; root; not part of `make test`): the same
# Dockerfiles built by kiln on one node, by kiln on two nodes, and by
# Debian's buildah, each cold, fully cached and after one context file
# changed; prints the wall-clock times and kiln/buildah ratios in a table
# (also written to bench/results/latest.txt) and kiln's own counters from
# --metadata-file.
#
#   bench/run.sh            (`make all` first; `make bench` does both)
#
# Environment:
#   BENCH_RUNS=N       repeat each cold/cached/touched sequence N times and
#                      report the median (default 1)
#   BENCH_DIR=DIR      work dir (default /var/tmp/kiln-bench): the generated
#                      20,000-file context is kept there between runs, the
#                      logs of the last run in DIR/logs
#   BENCH_WORKLOADS    a subset of "small cpu bigctx multi"
#   BENCH_BUILDERS     a subset of "kiln1 buildah1 kiln2 buildah2"
#   BENCH_LOOPS        shell-loop iterations of one CPU stage (default
#                      1200000, about 1.5 s of one core here)
#   KEEP=1             keep the run's state dir (builders' state, buildah's
#                      storage, the registry)
#
# What a figure is: seconds from the start of the build command to the end
# of the push of its image to a docker-registry on 127.0.0.1 (kiln: `kiln
# build --push`, pushed from the node; buildah: `buildah build --layers`
# then `buildah push`, or `buildah manifest push --all` for two platforms).
# Both builders pull the same base image from that registry. Before every
# cold build the registry is emptied (and the base image pushed again), so
# no layer is already there; kiln gets a new builder (`builder rm`, then
# `create`, started before the clock runs) and buildah an empty storage.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
KILN=$TOP/bin/kiln
REGISTRY_SH=$TOP/tests/fixtures/registry.sh
RUNS=${BENCH_RUNS:-1}
WORK=${BENCH_DIR:-/var/tmp/kiln-bench}
WORKLOADS=${BENCH_WORKLOADS:-small cpu bigctx multi}
BUILDERS=${BENCH_BUILDERS:-kiln1 buildah1 kiln2 buildah2}
LOOPS=${BENCH_LOOPS:-1200000}
CASES="cold cached touched"
BIG_FILES=20000
BIG_BYTES=200000000
BIG_TOUCH=src/d42/f08400.txt
RESULTS=$HERE/results/latest.txt

die() { echo "bench: $*" >&2; exit 2; }
say() { echo "$*"; echo "$*" >>"$LOGS/progress.txt"; }

[ "$(id -u)" = 0 ] || die "run as root (kiln's nodes and buildah make namespaces and overlay mounts)"
[ -x "$KILN" ] || die "$KILN missing: run make all first (make bench does)"
case $RUNS in '' | *[!0-9]* | 0) die "BENCH_RUNS must be a number from 1" ;; esac

# ---- tools, from Debian's archive only ---------------------------------
need=""
for t in buildah:buildah skopeo:skopeo docker-registry:docker-registry jq:jq python3:python3 \
	curl:curl taskset:util-linux qemu-aarch64-static:qemu-user-static; do
	command -v "${t%%:*}" >/dev/null || need="$need ${t#*:}"
done
if [ -n "$need" ]; then
	echo "# installing:$need"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null; } ||
		die "apt-get install$need failed"
fi
if [ "$(nproc)" -lt 2 ]; then
	echo "# this machine has $(nproc) CPU: kiln2 (nodes on CPUs 0 and 1) is left out"
	BUILDERS=$(echo "$BUILDERS" | tr ' ' '\n' | grep -vx kiln2 | tr '\n' ' ')
fi

mkdir -p "$WORK" "$HERE/results"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
S=$(mktemp -d "$WORK/run.XXXXXX")
export KILN_CONFIG=$S/kiln
TIMES=$LOGS/times.txt         # WORKLOAD CASE BUILDER REP SECONDS|FAIL|SKIP
COUNTERS=$LOGS/counters.txt   # WORKLOAD CASE BUILDER REP executed cached ctx_bytes peer_bytes node
: >"$TIMES"
: >"$COUNTERS"
: >"$LOGS/failures.txt"

# ---- cleanup: only what this script started ----------------------------
stop_pid() {
	p=$1
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null || return 0
	i=0
	while [ -d "/proc/$p" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	[ -d "/proc/$p" ] && kill -9 "$p" 2>/dev/null
	return 0
}
cleanup() {
	for b in bench1 bench2; do
		"$KILN" builder rm "$b" >/dev/null 2>&1
	done
	for f in $(find "$KILN_CONFIG" -name '*.pid' 2>/dev/null); do
		stop_pid "$(cat "$f" 2>/dev/null)"
	done
	if [ -d "$S/buildah" ]; then
		buildah rm --all >/dev/null 2>&1
		buildah rmi --all --force >/dev/null 2>&1
	fi
	"$REGISTRY_SH" stop "$S/registry" 2>/dev/null
	# The big context is shared between runs: put back the file we touch.
	[ -f "$WORK/bigctx.touch.orig" ] && [ -d "$WORK/bigctx" ] &&
		cp "$WORK/bigctx.touch.orig" "$WORK/bigctx/$BIG_TOUCH"
	awk -v t="$S" '$5 == t || index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo |
		sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
	if [ -n "${KEEP:-}" ]; then
		echo "# kept $S"
	else
		rm -rf "$S"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- inputs --------------------------------------------------------------
# The 20,000-file context: generated once, kept under $WORK while the
# generator and its parameters stay the same.
stamp="$(sha256sum <"$HERE/genctx.py" | cut -c1-16) $BIG_FILES $BIG_BYTES"
if [ "$(cat "$WORK/bigctx.stamp" 2>/dev/null)" != "$stamp" ]; then
	echo "# generating the $BIG_FILES-file context ($BIG_BYTES bytes) in $WORK/bigctx (once)"
	rm -rf "$WORK/bigctx" "$WORK/bigctx.new" "$WORK/bigctx.stamp"
	python3 "$HERE/genctx.py" "$WORK/bigctx.new" "$BIG_FILES" "$BIG_BYTES" || die "genctx.py failed"
	cp "$WORK/bigctx.new/$BIG_TOUCH" "$WORK/bigctx.touch.orig"
	mv "$WORK/bigctx.new" "$WORK/bigctx"
	echo "$stamp" >"$WORK/bigctx.stamp"
fi
"$TOP/tests/fixtures/mkbase.sh" "$WORK/base" >"$LOGS/mkbase.log" 2>&1 ||
	{ cat "$LOGS/mkbase.log"; die "mkbase.sh failed"; }

# buildah, private: its storage, registries.conf and auth file under $S.
B=$S/buildah
mkdir -p "$B/run" "$B/tmp" "$B/docker"
echo '{}' >"$B/docker/config.json"
cat >"$B/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$B/graph"
runroot = "$B/run"
EOF
export CONTAINERS_STORAGE_CONF=$B/storage.conf
export CONTAINERS_REGISTRIES_CONF=$B/registries.conf
export DOCKER_CONFIG=$B/docker
export REGISTRY_AUTH_FILE=$B/docker/config.json
export TMPDIR=$B/tmp

# An empty registry with only the base image (linux/amd64 + linux/arm64),
# before every cold build. Sets R and BASE.
registry_reset() {
	"$REGISTRY_SH" stop "$S/registry" 2>/dev/null
	rm -rf "$S/registry"
	# docker-registry reads REGISTRY_* variables as its configuration:
	# buildah's REGISTRY_AUTH_FILE would be taken for auth.file.
	port=$(env -u REGISTRY_AUTH_FILE "$REGISTRY_SH" start "$S/registry") ||
		die "the registry did not start"
	R=127.0.0.1:$port
	BASE=$R/busybox:latest
	skopeo copy -q --all --dest-tls-verify=false oci:"$WORK/base":multiarch docker://"$BASE" \
		>"$LOGS/skopeo-base.log" 2>&1 || { cat "$LOGS/skopeo-base.log"; die "push of the base image failed"; }
	cat >"$B/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "$R"
insecure = true
EOF
}

# ---- workloads -----------------------------------------------------------
# ctx_of W: the context directory of workload W.
ctx_of() {
	case $1 in
	bigctx) echo "$WORK/bigctx" ;;
	*) echo "$S/ctx/$1" ;;
	esac
}
platforms_of() {
	case $1 in
	multi) echo linux/amd64,linux/arm64 ;;
	*) echo linux/amd64 ;;
	esac
}
touched_of() {
	case $1 in
	small | multi) echo app.sh ;;
	cpu) echo seed-a.txt ;;
	bigctx) echo "$BIG_TOUCH" ;;
	esac
}

small_dockerfile() {
	cat <<EOF
FROM $BASE
ENV GREETING=hello
COPY config.txt /etc/app/config.txt
RUN echo "\$GREETING from \$(uname -m)" > /greeting
WORKDIR /app
COPY app.sh /app/app.sh
RUN echo built > /app/built && sh /app/app.sh > /app/out
CMD ["sh", "/app/app.sh"]
EOF
}

# prepare W: the context of W as it is before any build of a sequence
# (the Dockerfile names the current registry).
prepare() {
	c=$(ctx_of "$1")
	case $1 in
	small | multi)
		rm -rf "$c"
		mkdir -p "$c"
		printf 'name=bench\nlevel=3\n' >"$c/config.txt"
		printf '#!/bin/sh\necho "app: $(cat /greeting)"\n' >"$c/app.sh"
		small_dockerfile >"$c/Dockerfile"
		;;
	cpu)
		rm -rf "$c"
		mkdir -p "$c"
		: >"$c/Dockerfile"
		for s in a b c d; do
			echo "seed $s" >"$c/seed-$s.txt"
			cat >>"$c/Dockerfile" <<EOF
FROM $BASE AS $s
COPY seed-$s.txt /seed
RUN i=0; while [ \$i -lt $LOOPS ]; do i=\$((i + 1)); done; { cat /seed; echo \$i; } | sha256sum > /out

EOF
		done
		cat >>"$c/Dockerfile" <<EOF
FROM $BASE
COPY --from=a /out /out-a
COPY --from=b /out /out-b
COPY --from=c /out /out-c
COPY --from=d /out /out-d
RUN cat /out-a /out-b /out-c /out-d > /all
EOF
		;;
	bigctx)
		cp "$WORK/bigctx.touch.orig" "$c/$BIG_TOUCH"
		cat >"$c/Dockerfile" <<EOF
FROM $BASE
COPY src/ /data/src/
RUN find /data/src -type f | wc -l > /data/count
EOF
		;;
	esac
}

# touch_file W: change the content of one file of W's context.
touch_file() {
	echo "# touched $(date +%s.%N)" >>"$(ctx_of "$1")/$(touched_of "$1")"
}

# ---- builders ------------------------------------------------------------
label_of() {
	case $1 in
	kiln1) echo kiln-1node ;;
	kiln2) echo kiln-2nodes ;;
	buildah1) echo buildah-1cpu ;;
	buildah2) echo buildah ;;
	esac
}
pin_of() {
	case $1 in
	kiln1 | buildah1) echo "taskset -c 0" ;;
	*) echo "" ;;
	esac
}

# fresh BUILDER: empty state for the next cold build.
fresh() {
	case $1 in
	kiln1 | kiln2)
		name=bench${1#kiln}
		"$KILN" builder rm "$name" >/dev/null 2>&1
		"$KILN" builder create --name "$name" --driver local --node n0 \
			--driver-opt cpuset-cpus=0 >"$L/create.log" 2>&1 || return 1
		if [ "$1" = kiln2 ]; then
			"$KILN" builder create --name "$name" --append --node n1 \
				--driver-opt cpuset-cpus=1 >>"$L/create.log" 2>&1 || return 1
		fi
		# Started before the clock runs; for kiln1 the coordinator
		# inherits CPU 0 from the pinned client.
		$(pin_of "$1") "$KILN" builder inspect --bootstrap "$name" >>"$L/create.log" 2>&1
		;;
	buildah1 | buildah2)
		buildah rm --all >/dev/null 2>&1
		buildah rmi --all --force >/dev/null 2>&1
		rm -rf "$B/graph" "$B/run" "$B/tmp"
		mkdir -p "$B/graph" "$B/run" "$B/tmp"
		;;
	esac
}

# build BUILDER W LOG META DIGEST: one build and its push; the digest of
# what was pushed (manifest, or index for two platforms) goes to DIGEST.
build() {
	bl=$1 w=$2 log=$3 meta=$4 dig=$5
	pin=$(pin_of "$bl")
	c=$(ctx_of "$w")
	plats=$(platforms_of "$w")
	ref=$R/bench/$w:latest
	case $bl in
	kiln1 | kiln2)
		$pin "$KILN" --builder "bench${bl#kiln}" build --progress plain --platform "$plats" \
			--metadata-file "$meta" --push -t "$ref" "$c" >"$log" 2>&1 || return
		jq -r '."containerimage.digest" // empty' "$meta" >"$dig" 2>/dev/null
		;;
	buildah1 | buildah2)
		if [ "$w" = multi ]; then
			{ $pin buildah build --layers --isolation chroot --tls-verify=false --jobs 4 \
				--platform "$plats" --manifest "bench-$w" -f "$c/Dockerfile" "$c" &&
			  $pin buildah manifest push --all --tls-verify=false --digestfile "$dig" \
				"bench-$w" docker://"$ref"; } >"$log" 2>&1
		else
			{ $pin buildah build --layers --isolation chroot --tls-verify=false --jobs 4 \
				--platform "$plats" -t "bench-$w" -f "$c/Dockerfile" "$c" &&
			  $pin buildah push --tls-verify=false --digestfile "$dig" "bench-$w" docker://"$ref"; } \
				>"$log" 2>&1
		fi
		;;
	esac
}

# unpushed W DIGEST: why the registry does not hold what the build said it
# pushed (nothing when it does): W's tag must be DIGEST, an index of two
# manifests for multi, a manifest with layers otherwise.
unpushed() {
	[ -n "$2" ] || { echo "the build reported no image digest"; return; }
	raw=$(skopeo inspect --raw --tls-verify=false docker://"$R/bench/$1:latest" 2>/dev/null) ||
		{ echo "$R/bench/$1:latest is not in the registry"; return; }
	got=sha256:$(printf '%s' "$raw" | sha256sum | cut -c1-64)
	[ "$got" = "$2" ] || { echo "$R/bench/$1:latest is $got, not the $2 the build reported"; return; }
	if [ "$1" = multi ]; then
		printf '%s' "$raw" | jq -e '(.manifests | length) == 2' >/dev/null ||
			echo "$R/bench/$1:latest is not an index of two platforms"
	else
		printf '%s' "$raw" | jq -e '(.layers | length) > 0' >/dev/null ||
			echo "$R/bench/$1:latest is not an image manifest"
	fi
}

# Keep a failed kiln build's daemon logs before the builder is removed.
keep_kiln_logs() {
	d=$KILN_CONFIG/state/bench${1#kiln}
	[ -d "$d" ] || return 0
	cp "$d/coordinator.log" "$L/" 2>/dev/null
	for n in "$d"/nodes/*/; do
		[ -f "$n/worker.log" ] && cp "$n/worker.log" "$L/worker-$(basename "$n").log"
	done
}

now() { date +%s.%N; }
human() { # BYTES
	awk -v b="$1" 'BEGIN { if (b !~ /^[0-9]+$/) print b; else if (b < 1000) print b " B";
		else if (b < 1e6) printf "%.1f kB\n", b / 1e3; else printf "%.1f MB\n", b / 1e6 }'
}

# one W BUILDER REP CASE: time one build, record the figure and counters.
one() {
	w=$1 bl=$2 rep=$3 cs=$4
	L=$LOGS/$w/$bl-r$rep-$cs
	mkdir -p "$L"
	meta=$L/metadata.json
	[ "$w" = multi ] && case $bl in buildah*) buildah manifest rm "bench-$w" >/dev/null 2>&1 ;; esac
	: >"$L/digest"
	t0=$(now)
	if build "$bl" "$w" "$L/build.log" "$meta" "$L/digest"; then
		t1=$(now)
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
		digest=$(cat "$L/digest")
		why=$(unpushed "$w" "$digest")
		if [ -z "$why" ] && [ "$cs" = touched ] && [ "$digest" = "$PREV_DIGEST" ]; then
			why="a context file changed but the pushed image is the same ($digest)"
		fi
		[ -n "$why" ] && secs=FAIL
		PREV_DIGEST=$digest
	else
		why="exit status $?"
		e=$(grep -E '^(ERROR|Error|error)' "$L/build.log" | tail -n 1)
		[ -n "$e" ] && why="$why: $e"
		secs=FAIL
	fi
	extra=""
	case $bl in
	kiln*)
		if [ -s "$meta" ]; then
			if jq -r --arg k "$w $cs $bl $rep" '[$k, (."kiln.steps.executed" // "?"),
				(."kiln.steps.cached" // "?"), (."kiln.context.bytes_sent" // "?"),
				(."kiln.peers.bytes_moved" // "?"), (."kiln.node" // "?")] | join(" ")' \
				"$meta" >>"$COUNTERS" 2>/dev/null; then
				set -- $(tail -n 1 "$COUNTERS")
				extra=" ($5 steps executed, $6 cached, context $(human "$7") sent, $(human "$8") between nodes)"
			fi
		fi
		[ "$secs" = FAIL ] && keep_kiln_logs "$bl"
		;;
	esac
	echo "$w $cs $bl $rep $secs" >>"$TIMES"
	if [ "$secs" = FAIL ]; then
		say "[$w] $(label_of "$bl") $cs run $rep: FAILED ($why); logs in $L"
		tail -n 12 "$L/build.log" | sed 's/^/    | /'
		echo "$w $cs $(label_of "$bl") run $rep: $why" >>"$LOGS/failures.txt"
		echo "    logs: $L" >>"$LOGS/failures.txt"
		return 1
	fi
	say "[$w] $(label_of "$bl") $cs run $rep: $secs s$extra"
}

# ---- run -----------------------------------------------------------------
started=$(date +%s)
echo "# kiln benchmark: workloads: $WORKLOADS; builders: $BUILDERS; $RUNS run(s) each; logs in $LOGS"
for w in $WORKLOADS; do
	for bl in $BUILDERS; do
		rep=1
		while [ "$rep" -le "$RUNS" ]; do
			registry_reset
			prepare "$w"
			L=$LOGS/$w/$bl-r$rep-cold
			mkdir -p "$L"
			if ! fresh "$bl"; then
				say "[$w] $(label_of "$bl") run $rep: FAILED to create/start the builder; see $L/create.log"
				tail -n 12 "$L/create.log" | sed 's/^/    | /'
				keep_kiln_logs "$bl"
				echo "$w - $(label_of "$bl") run $rep: builder did not start; logs in $L" >>"$LOGS/failures.txt"
				for c in $CASES; do echo "$w $c $bl $rep FAIL" >>"$TIMES"; done
				rep=$((rep + 1))
				continue
			fi
			PREV_DIGEST=""
			if one "$w" "$bl" "$rep" cold; then
				one "$w" "$bl" "$rep" cached
				touch_file "$w"
				one "$w" "$bl" "$rep" touched
			else
				# Anything after a failed cold build would time a
				# half-cold one: not a figure worth printing.
				echo "$w cached $bl $rep SKIP" >>"$TIMES"
				echo "$w touched $bl $rep SKIP" >>"$TIMES"
			fi
			prepare "$w"
			rep=$((rep + 1))
		done
		case $bl in kiln*) "$KILN" builder rm "bench${bl#kiln}" >/dev/null 2>&1 ;; esac
	done
done
elapsed=$(($(date +%s) - started))

# ---- report --------------------------------------------------------------
# fig W CASE BUILDER: the median of its runs, FAIL if any failed, - if none.
fig() {
	awk -v w="$1" -v c="$2" -v b="$3" '
		$1 == w && $2 == c && $3 == b { n++; if ($5 == "FAIL") f++; else if ($5 == "SKIP") s++; else v[++k] = $5 }
		END {
			if (n == 0) { print "-"; exit }
			if (f) { print "FAIL"; exit }
			if (s || k == 0) { print "skipped"; exit }
			# insertion sort, then the median
			for (i = 2; i <= k; i++) { x = v[i]; j = i - 1; while (j > 0 && v[j] + 0 > x + 0) { v[j + 1] = v[j]; j-- } v[j + 1] = x }
			if (k % 2) m = v[(k + 1) / 2]; else m = (v[k / 2] + v[k / 2 + 1]) / 2
			printf "%.2f\n", m
		}' "$TIMES"
}
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f\n", a / b; else print "-" }'
}

report() {
	echo "kiln benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(uname -sr)"
	echo "kiln: $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$TOP" diff --quiet HEAD -- shared coordinator worker cli drivers 2>/dev/null ||
		echo ' (+ uncommitted changes to its sources)'); $(buildah --version)"
	echo "runs per figure: $RUNS (median); bench took ${elapsed}s"
	cat <<EOF

Seconds of wall-clock time for one build plus the push of its image to a
docker-registry on 127.0.0.1 (kiln: kiln build --push, from the node;
buildah: buildah build --layers --jobs 4 + buildah push, or manifest push
--all). Same base image (busybox, from that registry) for both. A figure
is printed only when the registry then holds the digest the build
reported (after "touched", a new one); otherwise FAIL and the reason below.
  cold     empty state: kiln a new builder (started before the clock),
           buildah an empty storage; the registry holds only the base
  cached   the same build again
  touched  after the content of one context file changed
  kiln-1node    one node pinned to CPU 0 (client and coordinator on CPU 0 too)
  buildah-1cpu  buildah under taskset -c 0
  kiln-2nodes   node n0 on CPU 0, node n1 on CPU 1
  buildah       buildah on both CPUs
Workloads:
  small   7 steps on busybox (ENV, COPY, RUN echo, WORKDIR, COPY, RUN, CMD);
          touched: the file the second COPY reads
  cpu     4 independent stages, each a shell loop of $LOOPS iterations
          (~1.5 s of one core), a final stage COPY --from each;
          touched: the seed file of stage a
  bigctx  $BIG_FILES files, $BIG_BYTES bytes, COPY'd into the image, then a
          RUN; touched: one of the files
  multi   small, for linux/amd64 and linux/arm64 (arm64 under QEMU)

EOF
	printf '%-8s %-8s %11s %13s %12s %9s %14s %14s\n' workload case kiln-1node buildah-1cpu \
		kiln-2nodes buildah kiln1/buildah1 kiln2/buildah
	for w in $WORKLOADS; do
		for c in $CASES; do
			k1=$(fig "$w" "$c" kiln1) b1=$(fig "$w" "$c" buildah1)
			k2=$(fig "$w" "$c" kiln2) b2=$(fig "$w" "$c" buildah2)
			printf '%-8s %-8s %11s %13s %12s %9s %14s %14s\n' "$w" "$c" "$k1" "$b1" "$k2" "$b2" \
				"$(ratio "$k1" "$b1")" "$(ratio "$k2" "$b2")"
		done
	done
	if [ -s "$COUNTERS" ]; then
		echo
		echo "kiln's counters (--metadata-file; of the last run): steps executed and cached,"
		echo "context bytes the client sent, bytes moved between nodes, the nodes that built"
		printf '%-8s %-8s %-12s %8s %6s %12s %12s  %s\n' workload case builder executed cached \
			ctx-sent peer-moved node
		for w in $WORKLOADS; do
			for c in $CASES; do
				for bl in kiln1 kiln2; do
					line=$(awk -v w="$w" -v c="$c" -v b="$bl" \
						'$1 == w && $2 == c && $3 == b { l = $0 } END { print l }' "$COUNTERS")
					[ -n "$line" ] || continue
					set -- $line
					printf '%-8s %-8s %-12s %8s %6s %12s %12s  %s\n' "$w" "$c" "$(label_of "$bl")" \
						"$5" "$6" "$7" "$8" "$9"
				done
			done
		done
	fi
	if [ -s "$LOGS/failures.txt" ]; then
		echo
		echo "FAILED (no figure printed for these):"
		sed 's/^/  /' "$LOGS/failures.txt"
	fi
}

echo
report | tee "$RESULTS"
echo
echo "# written to $RESULTS; per-build logs and metadata under $LOGS"
[ ! -s "$LOGS/failures.txt" ]
