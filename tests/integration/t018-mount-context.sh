#!/bin/sh
# RUN --mount=type=bind without from= mounts the build context (after
# .dockerignore): all of it, a directory (source=), one file, a symlink
# followed inside the context; read-only by default, rw changes thrown
# away; nothing of it lands in the image; a missing source fails naming
# the line. RUN --mount=type=cache with from= and source= starts from that
# stage's directory and then persists across builds; without from=, source
# is a path inside the cache. Symlinks in a mounted source resolve inside
# its own filesystem, never to the host's.
. "$(dirname "$0")/lib.sh"
plan 24
need_fixture
ctx=$T/ctx
mkdir -p "$ctx/sub/deeper"
printf 'hello from context\n' > "$ctx/hello.txt"
printf 'must not be seen\n' > "$ctx/ignored.txt"
printf 'inner\n' > "$ctx/sub/inner.txt"
printf 'deep\n' > "$ctx/sub/deeper/d.txt"
ln -s sub "$ctx/link-to-sub"
printf 'ignored.txt\n' > "$ctx/.dockerignore"
cat > "$ctx/Dockerfile" <<'DF'
FROM base AS seed
RUN mkdir -p /seed/dir && echo seeded > /seed/dir/from-seed && ln -s /etc /x
FROM base
ARG RUN_ID
RUN --mount=type=bind,target=/ctx \
    cat /ctx/hello.txt > /saw-hello && \
    if [ -e /ctx/ignored.txt ]; then echo present; else echo absent; fi > /saw-ignored && \
    if touch /ctx/new 2>/dev/null; then echo writable; else echo read-only; fi > /saw-ro
RUN --mount=source=sub,target=/s cat /s/inner.txt /s/deeper/d.txt > /saw-sub
RUN --mount=source=hello.txt,target=/one/file.txt \
    cat /one/file.txt > /saw-file && if [ -f /one/file.txt ]; then echo a-file; fi >> /saw-file
RUN --mount=source=link-to-sub,target=/l cat /l/inner.txt > /saw-link
RUN --mount=type=bind,source=sub,target=/w,rw \
    echo changed > /w/inner.txt && echo new > /w/new.txt && cat /w/inner.txt /w/new.txt > /saw-rw
RUN --mount=type=cache,id=t018,target=/cache,from=seed,source=/seed/dir \
    ls /cache > /saw-cache && echo "$RUN_ID" >> /cache/runs && cat /cache/runs > /saw-runs
RUN --mount=type=cache,id=t018-sub,target=/c \
    mkdir -p /c/etc && echo in-cache > /c/etc/marker && ln -sfn /etc /c/x
RUN --mount=type=cache,id=t018-sub,target=/m,source=/x ls /m > /saw-cache-sub
RUN --mount=from=seed,source=/x,target=/e ls /e > /saw-stage-link
DF
build() {
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
		--build-arg RUN_ID="$1" -o type=local,dest="$T/$1" "$ctx" > "$T/$1.log" 2>&1
}
is() { [ "$(cat "$1")" = "$2" ]; }
check "first build succeeds" build one
r=$T/one
check "the whole context is mounted" is "$r/saw-hello" "hello from context"
check ".dockerignore'd files are not in the mount" is "$r/saw-ignored" absent
check "the context mount is read-only by default" is "$r/saw-ro" read-only
check "source=DIR mounts that directory" is "$r/saw-sub" "$(printf 'inner\ndeep')"
check "source=FILE mounts one file on a file" is "$r/saw-file" "$(printf 'hello from context\na-file')"
check "a symlink source is followed inside the context" is "$r/saw-link" inner
check "rw mount is writable in the step" is "$r/saw-rw" "$(printf 'changed\nnew')"
check "rw changes are discarded" sh -c "[ -d '$r/w' ] && [ -z \"\$(ls -A '$r/w')\" ]"
check "no context file lands in the image" \
	sh -c "[ -z \"\$(ls -A '$r/ctx')\" ] && [ -z \"\$(ls -A '$r/s')\" ] && [ ! -s '$r/one/file.txt' ] && [ ! -e '$r/hello.txt' ] && [ ! -e '$r/inner.txt' ]"
check "a cache with from= starts with the stage's source directory" is "$r/saw-cache" from-seed
check "the first build saw no runs in it" is "$r/saw-runs" one
check "a cache's source without from= is a path inside the cache, links resolved there" \
	is "$r/saw-cache-sub" marker
check "a symlink source of a stage resolves in the stage, not on the host" \
	sh -c "[ \"\$(cat '$r/saw-stage-link')\" = \"\$(ls '$r/etc')\" ] && [ \"\$(ls '$r/etc')\" != \"\$(ls /etc)\" ]"
check "cache content is not in the image" sh -c "[ -z \"\$(ls -A '$r/cache')\" ]"
# a second later, so a RUN's files in the seed stage get other times: the
# cache is the same while the stage's steps are
sleep 1
check "second build succeeds" build two
check "the second build sees what the first wrote in the seeded cache" \
	is "$T/two/saw-runs" "$(printf 'one\ntwo')"
check "and the seed is still there" is "$T/two/saw-cache" "$(printf 'from-seed\nruns')"

# a changed seed stage starts a new cache, as BuildKit keys it by its base
sed -i 's/echo seeded/echo reseeded/' "$ctx/Dockerfile"
check "a build with a changed seed stage succeeds" build three
check "a changed seed starts a new cache" is "$T/three/saw-runs" three

printf 'FROM base\nRUN echo ok\nRUN --mount=source=nope,target=/n true\n' > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/x.tar" \
	"$ctx" > "$T/missing.log" 2>&1
check "a missing source fails" sh -c "! grep -q 'exporting to client' '$T/missing.log'"
check "and the error names the line and the path" \
	grep -q 'Dockerfile:3: RUN --mount: failed to compute cache key: "/nope": not found' "$T/missing.log"

cat > "$ctx/Dockerfile" <<'DF'
FROM base AS seed
FROM base
RUN --mount=type=cache,id=t018-missing,target=/c,from=seed,source=/nope true
DF
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/y.tar" \
	"$ctx" > "$T/cache-missing.log" 2>&1
check "a cache whose from= lacks the source fails, naming it" \
	grep -q "cache mount 't018-missing': source \"/nope\": not found" "$T/cache-missing.log"

cat > "$ctx/Dockerfile" <<'DF'
FROM base
RUN --mount=type=cache,target=/c,source=/nope true
DF
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/z.tar" \
	"$ctx" > "$T/sub-missing.log" 2>&1
check "a cache source without from= that the cache lacks fails" \
	grep -q "mount source '/nope' on '/c'" "$T/sub-missing.log"
done_testing
