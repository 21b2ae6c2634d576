#!/bin/sh
# Two steps that make byte-identical changes have one diff_id, so the same
# layer dir sits twice in the next step's stack; overlayfs refuses a lower
# dir given twice (ELOOP), so kiln passes only its topmost place. Also the
# empty file a bind mount of a file makes for its target is not left in
# the layer (as Docker 20.10's BuildKit), while a directory target stays.
. "$(dirname "$0")/lib.sh"
plan 5
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
echo data > "$ctx/one.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
RUN mkdir -p /d && touch -d @1000000000 /d/f
RUN touch -d @1000000000 /d/f
RUN touch -d @1000000000 /d/f
RUN --mount=type=bind,source=one.txt,target=/mnt/one.txt cp /mnt/one.txt /copied.txt
RUN --mount=type=bind,source=.,target=/ctxdir ls /ctxdir > /listed.txt
RUN ls -la /d > /d.list
DF
check "steps after identical layers still run (no ELOOP from a repeated lower dir)" \
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
	-o type=local,dest="$T/out" "$ctx"
check "... and see what those layers made" grep -q ' f$' "$T/out/d.list"
check "a bind mount of a file works" grep -qx data "$T/out/copied.txt"
check "... and leaves no empty file at its target" test ! -e "$T/out/mnt/one.txt"
check "a bind mount of a directory leaves its target directory, as BuildKit" test -d "$T/out/ctxdir"
done_testing
