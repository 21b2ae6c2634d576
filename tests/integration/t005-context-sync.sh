#!/bin/sh
# Context sync sends only what the worker lacks: a second build of the same
# context sends no file content (counted by the worker and by the client).
# Also: a failing RUN names its command, exit code and last output lines.
. "$(dirname "$0")/lib.sh"
plan 9
need_fixture

ctx=$T/ctx
mkdir -p "$ctx/src"
for i in 1 2 3 4 5; do echo "file $i" > "$ctx/src/f$i.txt"; done
head -c 3000000 /dev/urandom > "$ctx/big.bin"
printf 'FROM base\nCOPY src /src\nCOPY big.bin /big.bin\n' > "$ctx/Dockerfile"
b() { "$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
	-o type=tar,dest="$T/out.tar" --metadata-file "$T/$1.json" "$ctx" > "$T/$1.log" 2>&1; }
check "first build" b first
check "first build sent the files and the base layer" \
	sh -c "[ \$(jq '.\"kiln.context.files_received\"' '$T/first.json') -ge 7 ]"
check "the 3 MB file travelled in chunks" sh -c "[ \$(jq '.\"kiln.context.bytes_received\"' '$T/first.json') -ge 3000000 ]"
check "second build of the same context" b second
check "second build: the worker received no file content" \
	sh -c "[ \$(jq '.\"kiln.context.files_received\"' '$T/second.json') -eq 0 ] && [ \$(jq '.\"kiln.context.bytes_received\"' '$T/second.json') -eq 0 ]"
check "second build: the client sent nothing" sh -c "[ \$(jq '.\"kiln.context.bytes_sent\"' '$T/second.json') -eq 0 ]"

printf 'FROM base\nRUN echo first-line && echo "the last words" && exit 3\n' > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/x.tar" "$ctx" > "$T/fail.log" 2>&1
rc=$?
check "a failing RUN fails the build" test "$rc" -ne 0
check "the error names the command and its exit code" \
	grep -F 'process "/bin/sh -c echo first-line && echo \"the last words\" && exit 3" did not complete successfully: exit code: 3' "$T/fail.log"
check "the error shows the last lines the command printed" grep -F 'the last words' "$T/fail.log"
diag "$T/fail.log"
done_testing
