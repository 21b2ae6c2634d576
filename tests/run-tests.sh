#!/bin/sh
# Runs every test kiln has: cmocka unit tests, the corpus conformance
# runner, the fuzz targets' corpus replay, then the TAP integration tests
# through prove. Ends with "N passed, N failed" (suites).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
pass=0
fail=0
failed=""
run() {
	name=$1; shift
	echo "=== $name"
	if "$@"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		failed="$failed $name"
	fi
}
for t in tests/unit/*_test; do
	[ -x "$t" ] || continue
	run "$(basename "$t")" "$t"
done
run corpus tests/conformance/corpus_test ../shared/corpus
run golden tests/conformance/golden_test tests/data/dockerfile
run fuzz_proto tests/fuzz/fuzz_proto tests/fuzz/corpus/proto
run fuzz_dockerfile tests/fuzz/fuzz_dockerfile tests/fuzz/corpus/dockerfile
run integration prove -v ${KILN_PROVE_ARGS:-} tests/integration/t*.sh
echo
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
