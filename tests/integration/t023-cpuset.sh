#!/bin/sh
# Nodes that stand in for machines (issue 5 items 3 and 8): a local
# builder's nodes take buildx's --driver-opt cpuset-cpus=LIST and
# memory=SIZE; each worker, every thread of it and every step it runs are
# confined to its CPUs (affinity, plus cpuset.cpus under cgroup v2), a
# memory limit is a cgroup v2 memory.max or a clear refusal, bad values are
# refused at `builder create`, and `builder inspect` shows each node's
# driver options and the capacity it registered (its CPU count by default,
# kiln-worker --capacity N otherwise).
. "$(dirname "$0")/lib.sh"
if [ "$(nproc)" -lt 2 ]; then
	echo "1..0 # SKIP needs 2 CPUs to pin two nodes apart, this machine has $(nproc)"
	exit 0
fi
plan 30
need_fixture

avail=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
state=$KILN_CONFIG/state/pin
wpid() { cat "$state/nodes/$1/worker.pid"; }
# cpus_of PID: the CPU list of every thread of PID, one line if all agree.
cpus_of() { awk '/^Cpus_allowed_list/ { print $2 }' /proc/"$1"/task/*/status | sort -u; }
refused() { # MESSAGE CREATE-ARGS...: create fails with MESSAGE, writes nothing
	msg=$1; shift
	! "$KILN" builder create --name bad --node x "$@" > "$T/refused.log" 2>&1 &&
		grep -qxF -- "ERROR: $msg" "$T/refused.log" &&
		! "$KILN" builder ls | grep -q '^bad '
}

check "cpuset-cpus with a backwards range is refused at create" refused \
	'driver-opt cpuset-cpus: invalid CPU list "1-0": range 1-0 ends before it starts' \
	--driver-opt cpuset-cpus=1-0
check "cpuset-cpus that is not a list is refused at create" refused \
	'driver-opt cpuset-cpus: invalid CPU list "0;1": expected CPU numbers and ranges such as 0, 0-3 or 0,2' \
	--driver-opt cpuset-cpus='0;1'
check "cpuset-cpus naming CPUs this machine lacks is refused at create, docker's words" refused \
	"driver-opt cpuset-cpus: requested CPUs are not available - requested 0-$(nproc), available: $avail" \
	--driver-opt cpuset-cpus=0-"$(nproc)"
check "memory with an unknown unit is refused at create" refused \
	'driver-opt memory: invalid size "12q": expected bytes or a number with a unit b, k, m, g, t or p (e.g. 512m, 2g)' \
	--driver-opt memory=12q
check "memory below docker's 6MB floor is refused at create" refused \
	'driver-opt memory: memory "1m" is below the minimum of 6MB a node can run in' \
	--driver-opt memory=1m

check "create a local builder whose node n0 is pinned to CPU 0" \
	"$KILN" builder create --name pin --driver local --node n0 --driver-opt cpuset-cpus=0
check "append node n1 pinned to CPU 1" \
	"$KILN" builder create --name pin --append --node n1 --driver-opt cpuset-cpus=1
check "inspect --bootstrap starts both" sh -c "'$KILN' builder inspect --bootstrap pin > '$T/inspect.out' 2>&1"
diag "$T/inspect.out"
# has FILE NODE LINE: the inspect block of NODE in FILE has exactly LINE
has() { awk -v n="$2" '/^Name:/ { on = ($2 == n) } on' "$1" | grep -qx -- "$3"; }
check "n0 shows its driver options" has "$T/inspect.out" n0 'Driver Options: cpuset-cpus="0"'
check "n1 shows its own, not n0's" has "$T/inspect.out" n1 'Driver Options: cpuset-cpus="1"'
check "n0 registered capacity 1 (the CPUs it may use)" has "$T/inspect.out" n0 'Capacity: *1'
check "n1 registered capacity 1" has "$T/inspect.out" n1 'Capacity: *1'

# confined PID LIST: every thread of PID may run on LIST and nothing else
confined() { [ -n "$1" ] && [ "$(cpus_of "$1")" = "$2" ]; }
check "n0's worker and all its threads run on CPU 0 only" confined "$(wpid n0)" 0
check "n1's worker and all its threads run on CPU 1 only" confined "$(wpid n1)" 1
for n in n0 n1; do
	echo "$n: pid $(wpid $n), $(ls /proc/"$(wpid $n)"/task | wc -l) threads, CPUs $(cpus_of "$(wpid $n)" | tr '\n' ' ')"
done > "$T/threads.txt"
diag "$T/threads.txt"

# Builds whose RUN prints its own CPUs; --metadata-file names the node it
# ran on. Two at a time, so the coordinator spreads them over both nodes.
ctx=$T/ctx
mkdir -p "$ctx"
build() { # N: build in $T/b$N, nonce so that no step is ever reused
	mkdir -p "$T/b$1"
	printf 'FROM base\nRUN grep Cpus_allowed_list /proc/self/status && sleep 1 && echo nonce-%s\n' \
		"$1-$$" > "$T/b$1/Dockerfile"
	"$KILN" --builder pin build --progress plain --metadata-file "$T/b$1.json" \
		--build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/b$1.tar" "$T/b$1" \
		> "$T/b$1.log" 2>&1
}
# run_cpus N: the CPU list the RUN of build N printed
run_cpus() { sed -n 's/^#[0-9]* [0-9.]* Cpus_allowed_list:[[:space:]]*//p' "$T/b$1.log"; }
seen=""
all_ok=1
i=0
while [ $i -lt 4 ] && ! { echo "$seen" | grep -q n0 && echo "$seen" | grep -q n1; }; do
	build $((i * 2)) & p1=$!
	build $((i * 2 + 1)) & p2=$!
	wait $p1 || { all_ok=0; diag "$T/b$((i * 2)).log"; }
	wait $p2 || { all_ok=0; diag "$T/b$((i * 2 + 1)).log"; }
	for k in $((i * 2)) $((i * 2 + 1)); do
		[ -f "$T/b$k.json" ] || { all_ok=0; continue; }
		# the node progress names for the RUN (kiln.node lists every
		# node that worked on the build, the export's too)
		nd=$(sed -n '/RUN grep/,$ s/^#[0-9]* node \(n[01]\)$/\1/p' "$T/b$k.log" | head -n 1)
		want=$(echo "$nd" | tr -d n)
		got=$(run_cpus $k)
		echo "build $k ran on $nd, its RUN saw CPUs '$got'" >> "$T/runs.txt"
		[ "$got" = "$want" ] || all_ok=0
		seen="$seen $nd"
	done
	i=$((i + 1))
done
diag "$T/runs.txt"
check "every build succeeded and its RUN saw exactly its node's CPU" [ "$all_ok" = 1 ]
check "both nodes ran a build (so both were checked)" sh -c "echo '$seen' | grep -q n0 && echo '$seen' | grep -q n1"
check "the RUN's line is in the plain progress output" grep -q '^#[0-9]* [0-9.]* Cpus_allowed_list:' "$T/b0.log"

# kiln-worker's own flags, as a worker started by hand on another machine
# would get them: --capacity overrides the CPU count, bad values stop it.
ep=$(cat "$state/endpoint")
spawn "$T/w3.log" "$WORKER" --coordinator "$ep" --name hand --state "$T/hand" \
	--cpuset-cpus 1 --capacity 3
inspect_hand() { "$KILN" builder inspect pin > "$T/inspect2.out" 2>&1 && has "$T/inspect2.out" hand 'Capacity: *3'; }
check "a worker with --capacity 3 registers and inspect shows Capacity: 3" wait_for 15 inspect_hand
diag "$T/inspect2.out"
check "that worker is confined to CPU 1 too" confined "$LAST_PID" 1
check "kiln-worker --capacity 0 is refused" sh -c \
	"! '$WORKER' --coordinator '$ep' --name z --state '$T/z' --capacity 0 > '$T/cap0.log' 2>&1 &&
	 grep -qF -- \"--capacity: invalid value '0': expected a number of steps from 1 to 4096\" '$T/cap0.log'"
check "kiln-worker --cpuset-cpus with a CPU it may not use is refused" sh -c \
	"! '$WORKER' --coordinator '$ep' --name z --state '$T/z' --cpuset-cpus $(nproc) > '$T/cpu9.log' 2>&1 &&
	 grep -qF -- \"requested CPUs are not available - requested $(nproc), available: $avail\" '$T/cpu9.log'"
check "kiln-worker --memory with a bad size is refused" sh -c \
	"! '$WORKER' --coordinator '$ep' --name z --state '$T/z' --memory 5x > '$T/mem5x.log' 2>&1 &&
	 grep -qF -- '--memory: invalid size \"5x\"' '$T/mem5x.log'"

# Memory: a cgroup v2 memory.max where the host has one, else a refusal
# that says why (this is decided by the host, so say which case ran).
check "create a node with memory=64m" \
	"$KILN" builder create --name mem --driver local --node m0 --driver-opt memory=64m --driver-opt cpuset-cpus=0
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
	echo "# /sys/fs/cgroup is cgroup v2: checking memory.max"
	"$KILN" builder inspect --bootstrap mem > "$T/mem.out" 2>&1
	check "the memory node starts" grep -q '^Status: *running' "$T/mem.out"
	mpid=$(cat "$KILN_CONFIG/state/mem/nodes/m0/worker.pid")
	cg=$(sed -n 's/^0:://p' /proc/"$mpid"/cgroup)
	echo "# m0's cgroup: $cg"
	check "its worker is in a kiln cgroup of its own" sh -c "echo '$cg' | grep -q '^/kiln/m0-$mpid\$'"
	check "memory.max is 64m" sh -c "[ \"\$(cat '/sys/fs/cgroup$cg/memory.max')\" = 67108864 ]"
	check "cpuset.cpus is 0 where the cpuset controller is available" sh -c \
		"! grep -qw cpuset /sys/fs/cgroup/cgroup.controllers || [ \"\$(cat '/sys/fs/cgroup$cg/cpuset.cpus')\" = 0 ]"
	check "builder stop removes the node's cgroup" sh -c \
		"'$KILN' builder stop mem && [ ! -d '/sys/fs/cgroup$cg' ]"
else
	echo "# /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup), not cgroup v2: checking the refusal"
	check "starting it fails" sh -c "! '$KILN' builder inspect --bootstrap mem > '$T/mem.out' 2>&1"
	diag "$T/mem.out"
	check "and says memory cannot be enforced without cgroup v2 and why" grep -qF \
		'memory=64m cannot be enforced: it needs cgroup v2 with the memory controller, and /sys/fs/cgroup is not a cgroup v2 mount' "$T/mem.out"
	check "naming the node" grep -qF 'worker of node "m0" exited' "$T/mem.out"
	check "no worker of that node is left running" sh -c \
		"! [ -s '$KILN_CONFIG/state/mem/nodes/m0/worker.pid' ] || ! kill -0 \$(cat '$KILN_CONFIG/state/mem/nodes/m0/worker.pid') 2>/dev/null"
	check "no cgroup was made under any v1 hierarchy" sh -c "! ls -d /sys/fs/cgroup/*/kiln 2>/dev/null | grep -q ."
fi
# gone PID: no such process, or only a zombie nobody reaped yet
gone() { ! [ -d /proc/"$1" ] || grep -q '^State:[[:space:]]*Z' /proc/"$1"/status; }
p0=$(wpid n0) p1=$(wpid n1)
rm_pin() { "$KILN" builder rm pin > /dev/null && wait_for 5 gone "$p0" && wait_for 5 gone "$p1"; }
check "builder rm stops pin's workers" rm_pin
check "builder rm mem" "$KILN" builder rm mem
done_testing
