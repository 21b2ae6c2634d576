#!/bin/sh
# (d) On tcp:// every peer proves a CurveZMQ key on the coordinator's
# allow-list: a worker or a client with an unknown key is refused.
. "$(dirname "$0")/lib.sh"
plan 6

K=$T/keys
"$COORD" --init "$K" >/dev/null
"$COORD" --keys "$K" --new-key good >/dev/null
port=$(free_port)
EP=tcp://127.0.0.1:$port
spawn "$T/coord.log" "$COORD" --listen "$EP" --keys "$K"
spawn "$T/good.log" "$WORKER" --coordinator "$EP" --name good-node --state "$T/wg" \
	--server-key "$K/server.cert" --key "$K/good.cert" --heartbeat 200
# This worker makes itself a key the coordinator has never seen.
spawn "$T/bad.log" "$WORKER" --coordinator "$EP" --name rogue-node --state "$T/wb" \
	--server-key "$K/server.cert" --key "$T/rogue.cert" --heartbeat 200

"$KILN" builder create --name farm --driver remote --driver-opt cacert="$K/server.cert" \
	--driver-opt key="$K/good.cert" "$EP" >/dev/null
listed() { "$KILN" builder inspect farm > "$T/inspect.out" 2>&1 && grep -q good-node "$T/inspect.out"; }
check "the allowed worker registers" wait_for 10 listed
sleep 1.5
"$KILN" builder inspect farm > "$T/inspect.out" 2>&1
check "the worker with an unknown key is not registered" sh -c "! grep -q rogue-node '$T/inspect.out'"
check "the refused worker says why in its log" wait_for 10 grep -q "refused this node's key" "$T/bad.log"

"$KILN" builder create --name rogue --driver remote --driver-opt cacert="$K/server.cert" \
	--driver-opt key="$T/rogue-client.cert" "$EP" >/dev/null
"$KILN" builder inspect rogue > "$T/rogue.out" 2>&1
check "a client with an unknown key gets no answer" sh -c "! grep -q good-node '$T/rogue.out'"
check "and is told why" grep -q "allow-list" "$T/rogue.out"
diag "$T/rogue.out"
"$COORD" --keys "$K" --allow "$T/rogue-client.cert" >/dev/null
allowed() { "$KILN" builder inspect rogue > "$T/rogue2.out" 2>&1 && grep -q good-node "$T/rogue2.out"; }
check "once its key is allowed, the same client is answered" wait_for 10 allowed
done_testing
