#!/bin/sh
# Issue 5 on a real farm on one machine: a coordinator and three workers
# as separate processes (a and b serve linux/amd64 natively, each pinned
# to its own CPU; arm serves linux/arm64 only, through QEMU), and a local
# docker-registry. Cache keys, the shared cache index (also across a
# coordinator restart), dedupe of concurrent builds, spreading independent
# stages over nodes, multi-platform indexes, and surviving a killed worker.
. "$(dirname "$0")/lib.sh"
plan 37
need_fixture

port=$("$TOP/tests/fixtures/registry.sh" start "$T/registry") || { echo "Bail out! registry"; exit 1; }
R=127.0.0.1:$port
skopeo copy --all --dest-tls-verify=false oci:"$BASE":multiarch docker://$R/library/busybox:latest \
	> "$T/skopeo.log" 2>&1 || { diag "$T/skopeo.log"; echo "Bail out! skopeo push"; exit 1; }

EP=ipc://$T/coord.sock
start_coord() {
	spawn "$T/coord.log" "$COORD" --listen "$EP" --state "$T/coord-state" --heartbeat-timeout 1500
	COORD_PID=$LAST_PID
}
# start_worker NAME PLATFORM [ARGS...]
start_worker() {
	n=$1; p=$2; shift 2
	spawn "$T/$n.log" "$WORKER" --coordinator "$EP" --name "$n" --state "$T/$n" --platform "$p" \
		--heartbeat 300 "$@"
	eval "PID_$n=$LAST_PID"
}
start_coord
start_worker a linux/amd64 --cpuset-cpus 0
start_worker b linux/amd64 --cpuset-cpus 1
start_worker arm linux/arm64
"$KILN" builder create --name farm --driver remote "$EP" > "$T/create.log" 2>&1 ||
	{ diag "$T/create.log"; echo "Bail out! builder create"; exit 1; }
three() { "$KILN" builder inspect farm > "$T/inspect.out" 2>&1 && [ "$(grep -c 'Status: *running' "$T/inspect.out")" = 3 ]; }
check "the farm has three running nodes" wait_for 15 three

meta() { jq -r ".\"$2\"" "$T/$1.json"; }
# kb NAME [build args...] CONTEXT: a build on the farm, plain progress in NAME.log
kb() {
	n=$1; shift
	"$KILN" --builder farm build --progress plain --metadata-file "$T/$n.json" "$@" > "$T/$n.log" 2>&1
}

# ---- cache keys and the index ----
# (SOURCE_DATE_EPOCH fixes the config's created time, so "the same image"
# does not depend on the second each export happens in)
export SOURCE_DATE_EPOCH=1700000000
ctx=$T/ctx
mkdir -p "$ctx/src" "$ctx/docs"
echo one > "$ctx/src/a.txt"
echo manual > "$ctx/docs/readme.txt"
cat > "$ctx/Dockerfile" <<DF
FROM $R/library/busybox:latest
COPY src/ /src/
RUN cat /src/a.txt > /copy.txt
COPY docs/ /docs/
RUN ls /docs > /docs.list
DF
# ran NAME N [build args...]: the build succeeds and ran N steps
ran() { n=$1; want=$2; shift 2; kb "$n" "$@" && [ "$(meta "$n" kiln.steps.executed)" = "$want" ]; }
same_image() { [ "$(meta "$1" containerimage.digest)" = "$(meta "$2" containerimage.digest)" ]; }
nothing_moved() { [ "$(meta "$1" kiln.context.bytes_sent)" = 0 ] && [ "$(meta "$1" kiln.peers.bytes_moved)" = 0 ]; }
check "a first build runs its four steps" ran c1 4 -o type=oci,dest="$T/c1.tar" "$ctx"
check "a second identical build runs no step" ran c2 0 -o type=oci,dest="$T/c2.tar" "$ctx"
check "... moves no byte (context or between nodes)" nothing_moved c2
check "... and gives the same image" same_image c1 c2
check "... and its progress says CACHED" grep -q CACHED "$T/c2.log"
echo changed > "$ctx/docs/readme.txt"
check "a change in docs/ reruns only the two steps that read it" ran c3 2 -o type=oci,dest="$T/c3.tar" "$ctx"
echo two > "$ctx/src/a.txt"
check "a change in src/ reruns the steps that read it and all that build on them" \
	ran c4 4 -o type=oci,dest="$T/c4.tar" "$ctx"
check "--no-cache runs every step" ran c5 4 --no-cache -o type=oci,dest="$T/c5.tar" "$ctx"
check "--no-cache-filter of a stage runs it again" ran c5b 4 --no-cache-filter 0 -o type=oci,dest="$T/c5b.tar" "$ctx"

# the index survives a coordinator restart
kill "$COORD_PID"
wait_for 5 sh -c "! kill -0 $COORD_PID 2>/dev/null"
start_coord
check "after a coordinator restart the nodes register again" wait_for 15 three
check "... and the same build is still answered from the index" ran c6 0 -o type=oci,dest="$T/c6.tar" "$ctx"

# ---- identical steps of concurrent builds run once ----
cc=$T/cc
mkdir -p "$cc"
echo "nonce $$ $(date +%s%N)" > "$cc/n.txt"
cat > "$cc/Dockerfile" <<DF
FROM $R/library/busybox:latest
COPY n.txt /n.txt
RUN sleep 2 && cat /n.txt > /o.txt
DF
kb cc1 -o type=oci,dest="$T/cc1.tar" "$cc" & P1=$!
kb cc2 -o type=oci,dest="$T/cc2.tar" "$cc" & P2=$!
wait $P1; r1=$?
wait $P2; r2=$?
check "two builds of the same thing at once both succeed" [ "$r1$r2" = 00 ]
once() { [ $(($(meta cc1 kiln.steps.executed) + $(meta cc2 kiln.steps.executed))) = 2 ]; }
check "... and their two steps ran once between them" once
check "... with the same image" same_image cc1 cc2

# ---- independent stages of one build use both amd64 nodes ----
st=$T/stages
mkdir -p "$st"
cat > "$st/Dockerfile" <<DF
FROM $R/library/busybox:latest AS s1
RUN sleep 1 && echo 1 > /r
FROM $R/library/busybox:latest AS s2
RUN sleep 1 && echo 2 > /r
FROM $R/library/busybox:latest AS s3
RUN sleep 1 && echo 3 > /r
FROM $R/library/busybox:latest AS s4
RUN sleep 1 && echo 4 > /r
FROM $R/library/busybox:latest
COPY --from=s1 /r /r1
COPY --from=s2 /r /r2
COPY --from=s3 /r /r3
COPY --from=s4 /r /r4
DF
check "a build of four independent stages succeeds" kb st1 -o type=tar,dest="$T/st1.tar" "$st"
check "... its steps ran on both amd64 nodes (progress names them)" sh -c \
	"grep -Eq '^#[0-9]+ node a\$' '$T/st1.log' && grep -Eq '^#[0-9]+ node b\$' '$T/st1.log'"
check "... and the image has what every stage made" sh -c \
	"for i in 1 2 3 4; do tar -xOf '$T/st1.tar' r\$i | grep -qx \$i || exit 1; done"
peer_moved() { [ "$(meta "$1" kiln.peers.bytes_moved)" -gt 0 ]; }
check "... the blobs a node lacked came from its peer" peer_moved st1
diag "$T/st1.log" | grep -E 'node|ERROR' | head -20

# ---- multi-platform: one graph per platform, one index ----
mp=$T/mp
mkdir -p "$mp"
printf 'FROM %s/library/busybox:latest\nRUN uname -m > /arch\n' "$R" > "$mp/Dockerfile"
check "--platform linux/amd64,linux/arm64 --push builds and pushes" \
	kb mp1 --platform linux/amd64,linux/arm64 --push -t "$R/kiln/multi:v1" "$mp"
skopeo inspect --raw --tls-verify=false docker://$R/kiln/multi:v1 > "$T/mp.index" 2>"$T/mp.err"
check "the tag is an OCI index of the two platforms" sh -c \
	"jq -e '.mediaType == \"application/vnd.oci.image.index.v1+json\" and (.manifests | length) == 2 and
	        ([.manifests[].platform.architecture] | sort) == [\"amd64\", \"arm64\"]' '$T/mp.index'"
reported() { [ "sha256:$(sha256sum < "$T/mp.index" | cut -d' ' -f1)" = "$(meta mp1 containerimage.digest)" ]; }
check "... whose digest the build reported" reported
arm_of() { skopeo copy -q --src-tls-verify=false --override-arch arm64 docker://$R/kiln/multi:v1 oci:"$T/mp-arm:x" &&
	umoci unpack --rootless --image "$T/mp-arm:x" "$T/mp-arm-b" >/dev/null 2>&1 && [ "$(cat "$T/mp-arm-b/rootfs/arch")" = aarch64 ]; }
check "the arm64 image's RUN ran as aarch64 (under QEMU)" arm_of
check "... on the arm64 node, shown in progress as emulated" grep -Eq '^#[0-9]+ node arm \(emulated\)$' "$T/mp1.log"
layout2() {
	kb mp2 --platform linux/amd64,linux/arm64 -o type=oci,dest="$T/mp2.tar" "$mp" && mkdir -p "$T/mp2" &&
		tar -xf "$T/mp2.tar" -C "$T/mp2" && skopeo inspect --raw oci:"$T/mp2" | jq -e '.manifests | length == 2' >/dev/null
}
check "--platform linux/amd64,linux/arm64 -o type=oci writes a layout with the index" layout2
dlist() {
	kb mp3 --platform linux/amd64,linux/arm64 -o type=image,name=$R/kiln/multi:docker,push=true,oci-mediatypes=false "$mp" &&
		skopeo inspect --raw --tls-verify=false docker://$R/kiln/multi:docker |
		jq -e '.mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"' >/dev/null
}
check "oci-mediatypes=false pushes a Docker manifest list" dlist

# ---- a client that goes away cancels its build's steps ----
gw=$T/gw
mkdir -p "$gw"
printf 'FROM %s/library/busybox:latest\nRUN echo %s && sleep 30\n' "$R" "$$" > "$gw/Dockerfile"
setsid "$KILN" --builder farm build --progress plain -o type=oci,dest="$T/gw.tar" "$gw" > "$T/gw.log" 2>&1 &
GW=$!
wait_for 20 grep -q 'RUN echo' "$T/gw.log"
sleep 0.5
kill -9 $GW
canceled() { grep -q 'client silent for 5 s, canceling' "$T/coord.log"; }
check "a client killed mid-build gets its build canceled" wait_for 12 canceled
step_gone() { ! pgrep -f '^sleep 30$' >/dev/null; }
check "... and the step it was running is stopped on its node" wait_for 10 step_gone

# ---- failure: a worker killed in the middle of a step ----
fk=$T/fk
mkdir -p "$fk"
echo steady > "$fk/s.txt"
cat > "$fk/Dockerfile" <<DF
FROM $R/library/busybox:latest
COPY s.txt /s.txt
RUN sleep 3 && cat /s.txt > /t.txt
DF
export SOURCE_DATE_EPOCH=1700000000
check "an undisturbed build (SOURCE_DATE_EPOCH, rewrite-timestamp)" \
	kb fk0 --no-cache -o type=oci,dest="$T/fk0.tar",rewrite-timestamp=true "$fk"
kb fk1 --no-cache -o type=oci,dest="$T/fk1.tar",rewrite-timestamp=true "$fk" & PB=$!
victim=""
i=0
while [ $i -lt 100 ] && [ -z "$victim" ]; do
	victim=$(sed -n 's/^#[0-9]* node \([ab]\)$/\1/p' "$T/fk1.log" | tail -1)
	[ -n "$victim" ] && grep -q 'RUN sleep 3' "$T/fk1.log" || victim=""
	sleep 0.1
	i=$((i + 1))
done
[ -n "$victim" ] && eval "kill -9 \$PID_$victim"
wait $PB; rb=$?
check "killing the node that runs the step (SIGKILL) does not fail the build" [ -n "$victim" ] && [ "$rb" = 0 ]
diag "$T/fk1.log" | grep -E 'node|ERROR' | head
check "... the step ran again on the other node" sh -c \
	"grep -Eq '^#[0-9]+ node $( [ "$victim" = a ] && echo b || echo a)\$' '$T/fk1.log'"
check "... and the image digest equals the undisturbed build's" same_image fk0 fk1
unset SOURCE_DATE_EPOCH
start_worker "$victim" linux/amd64 --cpuset-cpus 0
check "the killed worker comes back and registers again" wait_for 15 three
other=$( [ "$victim" = a ] && echo b || echo a)
eval "kill -9 \$PID_$other"
gone() { "$KILN" builder inspect farm > "$T/inspect2.out" 2>&1 && grep -A3 "Name: *$1\$" "$T/inspect2.out" | grep -q 'Status: *gone'; }
back() { "$KILN" builder inspect farm 2>&1 | grep -A3 "Name: *$1\$" | grep -q 'Status: *running'; }
wait_for 10 gone "$other"
rb=$T/rb
mkdir -p "$rb"
echo "back $$" > "$rb/b.txt"
printf 'FROM %s/library/busybox:latest\nCOPY b.txt /b.txt\nRUN cat /b.txt > /c.txt\n' "$R" > "$rb/Dockerfile"
check "a build on the node that came back runs its two steps" ran rb1 2 -o type=oci,dest="$T/rb1.tar" "$rb"
eval "kill -9 \$PID_$victim"
wait_for 10 gone "$victim"
start_worker "$victim" linux/amd64
wait_for 15 back "$victim"
check "killed and back once more, its blobs answer the same build from the cache" \
	ran rb2 0 -o type=oci,dest="$T/rb2.tar" "$rb"
eval "kill -9 \$PID_arm"
wait_for 10 sh -c "\"$KILN\" builder inspect farm 2>&1 | grep -A3 'Name: *arm\$' | grep -q 'Status: *gone'"
# (a step no node has run yet: a cached one needs no node of its platform)
mkdir -p "$T/arm"
printf 'FROM %s/library/busybox:latest\nRUN echo %s > /n\n' "$R" "$$" > "$T/arm/Dockerfile"
no_arm() { ! kb arm1 --platform linux/arm64 -o type=oci,dest="$T/arm1.tar" "$T/arm" && grep -q 'ERROR.*linux/arm64' "$T/arm1.log"; }
check "with no node left for linux/arm64 the build fails naming the platform" no_arm
# a node whose store is wiped under the same name: the index still says it
# holds the layers; the build notices, forgets them and runs the steps again
eval "kill \$PID_$victim"
wait_for 10 sh -c "! kill -0 \$PID_$victim 2>/dev/null"
rm -rf "${T:?}/$victim"
start_worker "$victim" linux/amd64
wait_for 15 back "$victim"
check "a node whose store was wiped: its lost layers are made again" ran rb3 2 -o type=oci,dest="$T/rb3.tar" "$rb"
"$TOP/tests/fixtures/registry.sh" stop "$T/registry" >/dev/null 2>&1
done_testing
