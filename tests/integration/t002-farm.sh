#!/bin/sh
# (b) A coordinator and two workers as separate processes on 127.0.0.1 tcp
# ports, all authenticated with CurveZMQ; a remote builder on it; a build;
# then one worker is killed and `builder ls` marks it gone.
. "$(dirname "$0")/lib.sh"
plan 9
need_fixture

K=$T/keys
"$COORD" --init "$K" >/dev/null
"$COORD" --keys "$K" --new-key w1 >/dev/null
"$COORD" --keys "$K" --new-key w2 >/dev/null
"$COORD" --keys "$K" --new-key client >/dev/null
port=$(free_port)
EP=tcp://127.0.0.1:$port
spawn "$T/coord.log" "$COORD" --listen "$EP" --keys "$K" --heartbeat-timeout 1500
spawn "$T/w1.log" "$WORKER" --coordinator "$EP" --name node-a --state "$T/w1" \
	--server-key "$K/server.cert" --key "$K/w1.cert" --heartbeat 300
W1=$LAST_PID
spawn "$T/w2.log" "$WORKER" --coordinator "$EP" --name node-b --state "$T/w2" \
	--server-key "$K/server.cert" --key "$K/w2.cert" --heartbeat 300
W2=$LAST_PID

check "remote builder is created" "$KILN" builder create --name farm --driver remote \
	--driver-opt cacert="$K/server.cert" --driver-opt key="$K/client.cert" "$EP"
inspect() { "$KILN" builder inspect --bootstrap farm > "$T/inspect.out" 2>&1 && grep -q node-a "$T/inspect.out" && grep -q node-b "$T/inspect.out"; }
check "builder inspect --bootstrap lists both workers" wait_for 10 inspect
check "inspect shows the workers' platforms" grep -q 'linux/amd64' "$T/inspect.out"
diag "$T/inspect.out"

ctx=$T/ctx
mkdir -p "$ctx"
echo farm > "$ctx/f.txt"
printf 'FROM base\nCOPY f.txt /f.txt\nRUN cat /f.txt > /g.txt\n' > "$ctx/Dockerfile"
check "a build on the remote builder succeeds" "$KILN" --builder farm build --progress plain \
	--build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/rootfs.tar" \
	--metadata-file "$T/meta.json" "$ctx"
check "the rootfs tar holds what RUN made" sh -c "tar -xOf '$T/rootfs.tar' g.txt | grep -qx farm"
check "the build ran on one of the farm's nodes" sh -c "jq -r '.\"kiln.node\"' '$T/meta.json' | grep -Eqx 'node-a|node-b'"

kill -9 "$W2"
gone() { "$KILN" builder ls > "$T/ls.out" 2>&1; grep -E 'node-b' "$T/ls.out" | grep -q gone; }
check "builder ls marks the killed worker gone" wait_for 10 gone
check "the other worker is still running" sh -c "grep node-a '$T/ls.out' | grep -q running"
diag "$T/ls.out"
check "a build still works on the remaining node" "$KILN" --builder farm build --progress quiet \
	--build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/rootfs2.tar" "$ctx"
done_testing
