# Shared helpers for the TAP integration tests. Each test sources this,
# gets a fresh temp dir ($T), and every process it starts is recorded so
# the EXIT trap ends exactly those, by PID.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
KILN=$TOP/bin/kiln
COORD=$TOP/bin/kiln-coordinator
WORKER=$TOP/bin/kiln-worker
FIXTURES=${KILN_FIXTURES:-$TOP/.state/fixtures}
BASE=$FIXTURES/busybox
T=$(mktemp -d /tmp/kiln-it.XXXXXX)
export KILN_CONFIG=$T/config
PIDS=""
n_test=0
n_fail=0

# End what this test started: the processes it spawned and the daemons
# that builders it created wrote pidfiles for. Waits until they are gone.
stop_all() {
	all=$PIDS
	for f in $(find "$T" -name '*.pid' 2>/dev/null); do
		p=$(cat "$f" 2>/dev/null) && [ -n "$p" ] && all="$all $p"
	done
	for p in $all; do kill "$p" 2>/dev/null; done
	i=0
	while [ $i -lt 50 ]; do
		alive=""
		for p in $all; do [ -d "/proc/$p" ] && alive=1; done
		[ -z "$alive" ] && break
		sleep 0.1
		i=$((i + 1))
	done
	PIDS=""
}
cleanup() {
	stop_all
	if [ -z "${KEEP:-}" ]; then
		umount -R "$T"/mnt-* 2>/dev/null
		rm -rf "$T"
	else
		echo "# kept $T"
	fi
}
trap cleanup EXIT

plan() { echo "1..$1"; }
ok() { n_test=$((n_test + 1)); echo "ok $n_test - $1"; }
not_ok() { n_test=$((n_test + 1)); n_fail=$((n_fail + 1)); echo "not ok $n_test - $1"; }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() {
	d=$1; shift
	if "$@" >"$T/check.out" 2>&1; then ok "$d"; else not_ok "$d"; sed 's/^/#   /' "$T/check.out" | tail -20; fi
}
diag() { sed 's/^/# /' "$@"; }
# A free TCP port on 127.0.0.1.
free_port() {
	perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1) or die; print $s->sockport'
}
# spawn LOG CMD...: start a process in the background, record its PID.
spawn() {
	log=$1; shift
	setsid "$@" >"$log" 2>&1 &
	PIDS="$PIDS $!"
	LAST_PID=$!
}
# wait_for SECONDS COMMAND...: poll until the command succeeds.
wait_for() {
	secs=$1; shift
	i=0
	while [ "$i" -lt $((secs * 10)) ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
need_fixture() {
	"$TOP/tests/fixtures/mkbase.sh" "$BASE" >"$T/fixture.log" 2>&1 || { diag "$T/fixture.log"; exit 1; }
}
# json_get FILE KEY: a top-level value of a JSON file.
json_get() { jq -r --arg k "$2" '.[$k]' "$1"; }
# Under SAN=1 the daemons write sanitizer reports to their logs, often only
# when they exit: stop them, then fail the test file if any log has one.
done_testing() {
	stop_all
	san=$(grep -rlE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T" --include='*.log' 2>/dev/null)
	if [ -n "$san" ]; then
		for f in $san; do echo "# sanitizer report in $f:"; sed 's/^/#   /' "$f" | head -40; done
		return 1
	fi
	[ "$n_fail" -eq 0 ]
}
