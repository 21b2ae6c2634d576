#!/bin/sh
# make test-faults: a farm of a coordinator and two linux/amd64 workers;
# ROUNDS times (default 20), a build whose RUN takes a few seconds is
# started, the worker running that step is killed with SIGKILL, and the
# build must still succeed on the other node with the image digest of an
# undisturbed build (SOURCE_DATE_EPOCH + rewrite-timestamp=true). The
# killed worker is started again before the next round. Ends with
# "N passed, N failed".
. "$(dirname "$0")/../integration/lib.sh"
ROUNDS=${ROUNDS:-20}
need_fixture
EP=ipc://$T/coord.sock
spawn "$T/coord.log" "$COORD" --listen "$EP" --state "$T/coord-state" --heartbeat-timeout 1000
start_worker() {
	spawn "$T/$1.log" "$WORKER" --coordinator "$EP" --name "$1" --state "$T/$1" --platform linux/amd64 \
		--heartbeat 200
	eval "PID_$1=$LAST_PID"
}
start_worker a
start_worker b
"$KILN" builder create --name farm --driver remote "$EP" >/dev/null 2>&1 || { echo "Bail out! builder"; exit 1; }
two() { [ "$("$KILN" builder inspect farm 2>/dev/null | grep -c 'Status: *running')" = 2 ]; }
wait_for 15 two || { echo "Bail out! nodes"; exit 1; }
ctx=$T/ctx
mkdir -p "$ctx"
echo steady > "$ctx/s.txt"
printf 'FROM base\nCOPY s.txt /s.txt\nRUN sleep 2 && cat /s.txt > /t.txt && date +%%N > /dev/null\n' > "$ctx/Dockerfile"
export SOURCE_DATE_EPOCH=1700000000
kb() {
	"$KILN" --builder farm build --progress plain --no-cache --build-context base=oci-layout://"$BASE" \
		--metadata-file "$T/$1.json" -o type=oci,dest="$T/$1.tar",rewrite-timestamp=true "$ctx" > "$T/$1.log" 2>&1
}
kb ref || { diag "$T/ref.log"; echo "Bail out! undisturbed build"; exit 1; }
want=$(jq -r '."containerimage.digest"' "$T/ref.json")
plan "$ROUNDS"
pass=0
fail=0
r=1
while [ $r -le "$ROUNDS" ]; do
	kb "r$r" & pb=$!
	victim=""
	i=0
	while [ $i -lt 150 ] && [ -z "$victim" ]; do
		if grep -q 'RUN sleep 2' "$T/r$r.log" 2>/dev/null; then
			victim=$(sed -n '/RUN sleep 2/,$ s/^#[0-9]* node \([ab]\)$/\1/p' "$T/r$r.log" | tail -1)
		fi
		[ -z "$victim" ] && sleep 0.05
		i=$((i + 1))
	done
	[ -n "$victim" ] && eval "kill -9 \$PID_$victim"
	wait $pb; rb=$?
	got=$(jq -r '."containerimage.digest"' "$T/r$r.json" 2>/dev/null)
	if [ -n "$victim" ] && [ "$rb" = 0 ] && [ "$got" = "$want" ]; then
		ok "round $r: killed node $victim mid-step, build succeeded with the undisturbed digest"
		pass=$((pass + 1))
	else
		not_ok "round $r: victim '$victim', exit $rb, digest '$got' (want $want)"
		diag "$T/r$r.log" | tail -n 15
		fail=$((fail + 1))
	fi
	[ -n "$victim" ] && start_worker "$victim"
	wait_for 15 two
	r=$((r + 1))
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
