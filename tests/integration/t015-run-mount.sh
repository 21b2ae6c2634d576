#!/bin/sh
# RUN --mount: a cache mount persists on the node across builds and stays
# out of the image; tmpfs content stays out of the image; a bind mount of
# a stage shows its files, is read-only by default, and rw changes are
# discarded; the mount targets stay in the layer as BuildKit leaves them.
. "$(dirname "$0")/lib.sh"
plan 12
need_fixture
ctx=$T/ctx
mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<'DF'
FROM base AS src
RUN mkdir /data && echo from-src > /data/f
FROM base
ARG RUN_ID
RUN --mount=type=cache,target=/var/cache/kiln,id=t015 \
    echo "$RUN_ID" >> /var/cache/kiln/runs && cat /var/cache/kiln/runs > /runs-seen
RUN --mount=type=tmpfs,target=/scratch,size=1m \
    echo tmp > /scratch/f && df /scratch | tail -1 > /tmpfs-df
RUN --mount=type=bind,from=src,source=/data,target=/in \
    cat /in/f > /bind-ro && if touch /in/x 2>/dev/null; then echo writable; else echo read-only; fi >> /bind-ro
RUN --mount=type=bind,from=src,source=/data,target=/rw,rw \
    echo changed > /rw/f && echo new > /rw/new && cat /rw/f > /bind-rw
DF
build() {
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
		--build-arg RUN_ID="$1" -o type=tar,dest="$T/$1.tar" "$ctx"
}
check "first build succeeds" build one
check "second build succeeds" build two
mkdir -p "$T/r1" "$T/r2"
tar -C "$T/r1" -xf "$T/one.tar"
tar -C "$T/r2" -xf "$T/two.tar"
check "first build saw an empty cache" sh -c "[ \"\$(cat '$T/r1/runs-seen')\" = one ]"
check "second build sees what the first wrote in the cache" \
	sh -c "[ \"\$(cat '$T/r2/runs-seen')\" = \"\$(printf 'one\ntwo')\" ]"
check "cache content is not in the image" sh -c "[ -d '$T/r2/var/cache/kiln' ] && [ -z \"\$(ls -A '$T/r2/var/cache/kiln')\" ]"
check "cache is kept on the node" sh -c "grep -q two \$(find '$KILN_CONFIG/state' -path '*cache-mounts/t015-*/runs')"
check "tmpfs has the size asked for" sh -c "awk '{ exit !(\$2 == 1024) }' '$T/r2/tmpfs-df'"
check "tmpfs content is not in the image" sh -c "[ -d '$T/r2/scratch' ] && [ -z \"\$(ls -A '$T/r2/scratch')\" ]"
check "bind from a stage sees its files, read-only by default" \
	sh -c "[ \"\$(cat '$T/r2/bind-ro')\" = \"\$(printf 'from-src\nread-only')\" ]"
check "rw bind is writable in the step" sh -c "[ \"\$(cat '$T/r2/bind-rw')\" = changed ]"
check "rw bind changes are discarded" sh -c "[ -d '$T/r2/rw' ] && [ -z \"\$(ls -A '$T/r2/rw')\" ] && [ ! -e '$T/r2/data' ]"
printf 'FROM base\nRUN --mount=type=tmpfs,target=/t,uid=1 true\n' > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/x.tar" "$ctx" >"$T/err.out" 2>&1
check "invalid mount options are refused with BuildKit's message" \
	grep -q 'uid not allowed for "tmpfs" type mounts' "$T/err.out"
done_testing
