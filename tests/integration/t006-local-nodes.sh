#!/bin/sh
# A local builder with two nodes runs one worker process per node; a node
# can be told which platforms it serves; a linux/arm64 build on this amd64
# machine runs under QEMU user emulation; outputs of type local and tar.
. "$(dirname "$0")/lib.sh"
plan 9
need_fixture

check "create a local builder" "$KILN" builder create --name duo --driver local --node n1
check "append a second node that serves only linux/arm64" \
	"$KILN" builder create --name duo --append --node n2 --platform linux/arm64
check "builder use makes it current" "$KILN" builder use duo
check "inspect --bootstrap starts both nodes" sh -c "'$KILN' builder inspect --bootstrap > '$T/inspect.out' 2>&1"
diag "$T/inspect.out"
check "both nodes run as their own worker processes" \
	sh -c "[ \$(grep -c '^Status: *running' '$T/inspect.out') -eq 2 ]"
"$KILN" builder ls > "$T/ls.out" 2>&1
check "builder ls marks n2's arm64 as emulated" sh -c "grep n2 '$T/ls.out' | grep -q 'linux/arm64 (emulated)'"
diag "$T/ls.out"

ctx=$T/ctx
mkdir -p "$ctx"
printf 'FROM base\nRUN uname -m > /arch\n' > "$ctx/Dockerfile"
check "a linux/arm64 build runs under emulation (RUN uname -m prints aarch64)" sh -c \
	"'$KILN' build --progress plain --platform linux/arm64 --build-context base=oci-layout://'$BASE' \
	-o type=local,dest='$T/arm' '$ctx' > '$T/arm.log' 2>&1 && [ \"\$(cat '$T/arm/arch')\" = aarch64 ]"
check "the arm64 image's busybox is an aarch64 binary" sh -c "od -An -tx1 -j18 -N2 '$T/arm/bin/busybox' | grep -q 'b7 00'"
check "builder rm stops it and forgets it" sh -c "'$KILN' builder rm duo && ! '$KILN' builder ls | grep -q duo"
done_testing
