#!/bin/sh
# kiln build --progress rawjson (issue 5 item 7): every line on stderr is a
# JSON object in BuildKit's SolveStatus shape; the steps appear as
# vertexes, started then completed; a RUN's output arrives as a log whose
# base64 data decodes to what it printed; each step says the node that ran
# it (a status "node NAME"). A failing step carries its error on the
# vertex. plain mode shows the node too.
. "$(dirname "$0")/lib.sh"
plan 11
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
echo hello > "$ctx/hello.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
COPY hello.txt /hello.txt
RUN echo "rawjson-log-line-$((6 * 7))" && echo second-line
DF
check "a build with --progress rawjson succeeds" sh -c \
	"'$KILN' build --progress rawjson --build-context base=oci-layout://'$BASE' -o type=tar,dest='$T/o.tar' '$ctx' \
	> '$T/out' 2> '$T/raw.jsonl'"
check "it wrote progress" test -s "$T/raw.jsonl"
# every line, on its own, is a JSON object with only SolveStatus keys
bad=0
while IFS= read -r line; do
	printf '%s' "$line" | jq -e 'type == "object" and (keys - ["vertexes", "statuses", "logs", "warnings"] == []) and length > 0' \
		> /dev/null 2>&1 || { bad=$((bad + 1)); echo "# not a SolveStatus line: $line"; }
done < "$T/raw.jsonl"
check "every line parses as a SolveStatus JSON object" test "$bad" -eq 0
check "the step names appear as vertexes" sh -c \
	"jq -r '.vertexes[]?.name' '$T/raw.jsonl' > '$T/names' && \
	grep -qx '\[1/3\] FROM base' '$T/names' && grep -qx '\[2/3\] COPY hello.txt /hello.txt' '$T/names' && \
	grep -qx '\[3/3\] RUN echo \"rawjson-log-line-\$((6 \* 7))\" && echo second-line' '$T/names'"
check "every vertex that started also completed, without error" sh -c \
	"[ \"\$(jq -r '.vertexes[]? | select(.completed == null) | .digest' '$T/raw.jsonl' | sort -u)\" = \
	   \"\$(jq -r '.vertexes[]? | select(.completed != null and .error == null) | .digest' '$T/raw.jsonl' | sort -u)\" ] && \
	jq -e -s 'map(.vertexes[]? | .digest | test(\"^sha256:[0-9a-f]{64}\$\")) | length > 0 and all' '$T/raw.jsonl' > /dev/null"
check "the RUN's output is a log of its vertex, base64 as BuildKit sends it" sh -c \
	"run=\$(jq -r '.vertexes[]? | select(.name | startswith(\"[3/3] RUN\")) | .digest' '$T/raw.jsonl' | head -1) && \
	jq -r --arg v \"\$run\" '.logs[]? | select(.vertex == \$v) | .data' '$T/raw.jsonl' | base64 -d > '$T/runlog' && \
	grep -qx rawjson-log-line-42 '$T/runlog' && grep -qx second-line '$T/runlog'"
check "each step says the node that ran it" sh -c \
	"jq -e -s '[.[] | .statuses[]? | select(.id | startswith(\"node \"))] | (map(.vertex) | unique | length) == 3 and all(.completed != null)' \
	'$T/raw.jsonl' > /dev/null"
check "nothing else went to stdout" test ! -s "$T/out"

# a failing step: its vertex carries the error; only the final ERROR line is text
printf 'FROM base\nRUN echo about-to-fail && exit 3\n' > "$ctx/Dockerfile"
check "a failing build exits non-zero" sh -c \
	"! '$KILN' build --progress rawjson --build-context base=oci-layout://'$BASE' -o type=tar,dest='$T/f.tar' '$ctx' \
	> /dev/null 2> '$T/fail.jsonl'"
check "the failed vertex has the error, the rest is JSON but the last line" sh -c \
	"head -n -1 '$T/fail.jsonl' | jq -e -s 'map(.vertexes[]? | select(.error != null)) | length == 1' > /dev/null && \
	head -n -1 '$T/fail.jsonl' | jq -r '.vertexes[]? | select(.error != null) | .error' | grep -q 'exit code: 3' && \
	tail -n 1 '$T/fail.jsonl' | grep -q '^ERROR: failed to solve'"
diag "$T/fail.jsonl"

printf 'FROM base\nRUN true\n' > "$ctx/Dockerfile"
check "plain progress names the node of each step" sh -c \
	"'$KILN' build --progress plain --build-context base=oci-layout://'$BASE' -o type=tar,dest='$T/p.tar' '$ctx' \
	> /dev/null 2> '$T/plain.log' && grep -Eq '^#[0-9]+ node [A-Za-z0-9_.-]+' '$T/plain.log'"
done_testing
