#!/bin/sh
# Where COPY writes and which metadata it keeps, as Docker 20.10's BuildKit
# (tests/differential cases 05, 06, 08, 09, 10, 12, 29, 30): a file copied
# to an existing directory named without "/" goes inside it; an existing
# destination directory keeps its mode and owners; a new one is 0755
# (owned by --chown's ids) whatever the source's mode or --chmod; parents
# a copy creates belong to --chown's ids; WORKDIR creates the directory and
# its parents as the USER; COPY --from follows a source that is a symlink
# (only the source itself). Checked in a type=tar output (numeric owners).
. "$(dirname "$0")/lib.sh"
plan 17
need_fixture
ctx=$T/ctx
mkdir -p "$ctx/dir/sub"
printf 'a\n' > "$ctx/a.txt"
printf 'b\n' > "$ctx/b.txt"
printf 'one\n' > "$ctx/dir/one"; chmod 0600 "$ctx/dir/one"
printf 'two\n' > "$ctx/dir/sub/two"
chmod 0750 "$ctx/dir/sub"
cat > "$ctx/Dockerfile" <<'DF'
FROM base AS build
RUN mkdir -p /out/bin && echo app > /out/bin/app && chmod 755 /out/bin/app && ln -s bin/app /out/app-link && ln -s /out/bin/../bin/app /out/abs-link && ln -s ../../../../out/bin/app /out/esc-link

FROM base
RUN echo 'app:x:1234:4321::/home/app:/bin/sh' >> /etc/passwd && mkdir -p /exists && chmod 0700 /exists && chown 9:9 /exists
COPY b.txt /tmp
COPY --chown=7:8 dir /tmp/
COPY dir/ /exists/
COPY dir/sub /d4
COPY --chmod=0640 dir /cd/
COPY --chown=5:6 dir /od
COPY --chown=42:43 a.txt /new/parent/dirs/a.txt
COPY --from=build /out/app-link /link-copy
COPY --from=build /out/abs-link /exists
COPY --from=build /out /outdir
COPY --from=build /out/esc-link /esc-copy
USER 1000:1000
WORKDIR /owned/by/user
USER app
WORKDIR /named/dir
USER root
WORKDIR /owned/by/user/root-sub
DF
check "build" "$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/out.tar" "$ctx"
TZ=UTC tar --numeric-owner --full-time -tvf "$T/out.tar" > "$T/list" 2>&1
mkdir -p "$T/root" && tar -C "$T/root" -xf "$T/out.tar" 2>/dev/null
R=$T/root
has() { grep -E "$1" "$T/list"; }
check "COPY file /tmp: into the existing directory" sh -c "[ \"\$(cat '$R/tmp/b.txt')\" = b ]"
check "an existing destination keeps 1777 root:root" has '^drwxrwxrwt 0/0 .* tmp/$'
check "--chown applies inside an existing destination" has '^-rw------- 7/8 .* tmp/one$'
check "an existing destination keeps 0700 9:9" has '^drwx------ 9/9 .* exists/$'
check "a new destination is 0755, not the source's 0750" has '^drwxr-xr-x 0/0 .* d4/$'
check "a new destination is 0755 under --chmod, entries 0640" sh -c "grep -E '^drwxr-xr-x 0/0 .* cd/\$' '$T/list' && grep -E '^-rw-r----- 0/0 .* cd/one\$' '$T/list'"
check "a new destination belongs to --chown's ids" has '^drwxr-xr-x 5/6 .* od/$'
check "entries inside keep their modes" has '^drwxr-x--- 5/6 .* od/sub/$'
check "parents a --chown copy creates belong to its ids" sh -c "for d in new new/parent new/parent/dirs; do grep -E \"^drwxr-xr-x 42/43 .* \$d/\\\$\" '$T/list' || exit 1; done"
check "COPY --from follows a relative symlink source" has '^-rwxr-xr-x 0/0 .* link-copy$'
check "COPY --from follows an absolute one, into an existing directory" has '^-rwxr-xr-x 0/0 .* exists/abs-link$'
check "a link's \"..\" stops at the source's root" has '^-rwxr-xr-x 0/0 .* esc-copy$'
check "symlinks inside a copied directory stay" has '^l.* outdir/app-link -> bin/app$'
check "WORKDIR under USER 1000:1000 owns the dir and its parents" sh -c "for d in owned owned/by owned/by/user; do grep -E \"^drwxr-xr-x 1000/1000 .* \$d/\\\$\" '$T/list' || exit 1; done"
check "WORKDIR under a user name: resolved in /etc/passwd" sh -c "for d in named named/dir; do grep -E \"^drwxr-xr-x 1234/4321 .* \$d/\\\$\" '$T/list' || exit 1; done"
check "WORKDIR as root below the user's dir" has '^drwxr-xr-x 0/0 .* owned/by/user/root-sub/$'
grep -E ' (tmp|exists|d4|cd|od|new|link-copy|outdir|owned|named)' "$T/list" | diag
done_testing
