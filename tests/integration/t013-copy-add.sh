#!/bin/sh
# COPY and ADD complete: --chown with names (resolved in the destination's
# /etc/passwd and /etc/group), symbolic --chmod, --parents, --exclude,
# COPY --from with names, symbolic modes and excludes, ADD of local tar
# archives (gzip, bzip2, xz, zstd, plain; found by content, not by name)
# and ADD of http URLs with --checksum, from a python http.server that the
# test starts on 127.0.0.1. Checked in a type=tar output (numeric owners).
. "$(dirname "$0")/lib.sh"
plan 22
need_fixture
ctx=$T/ctx
mkdir -p "$ctx/tree/sub" "$T/arch/top/dir" "$T/www/dl"
printf 'a\n' > "$ctx/a.txt"; chmod 0666 "$ctx/a.txt"
printf 'b\n' > "$ctx/b.txt"
printf 'deep\n' > "$ctx/tree/sub/deep.txt"; chmod 0600 "$ctx/tree/sub/deep.txt"
printf 'log\n' > "$ctx/tree/x.log"
chmod 0700 "$ctx/tree" "$ctx/tree/sub"
printf 'in archive\n' > "$T/arch/top/dir/f.txt"; chmod 0750 "$T/arch/top/dir/f.txt"
tar -C "$T/arch" --numeric-owner --owner=42 --group=43 -cf "$ctx/plain.tar" top
gzip -c "$ctx/plain.tar" > "$ctx/a.tgz"
bzip2 -c "$ctx/plain.tar" > "$ctx/a.tar.bz2"
xz -c "$ctx/plain.tar" > "$ctx/a.tar.xz"
zstd -q -c "$ctx/plain.tar" > "$ctx/zblob"          # no archive name: found by content
printf 'not an archive\n' > "$ctx/fake.tar.gz"      # archive name, not content: copied
printf 'downloaded\n' > "$T/www/dl/tool.bin"
touch -d @1600000000 "$T/www/dl/tool.bin"
sum=sha256:$(sha256sum "$T/www/dl/tool.bin" | cut -d' ' -f1)
port=$(free_port)
spawn "$T/http.log" sh -c "cd '$T/www' && exec python3 -m http.server --bind 127.0.0.1 $port"
wait_for 10 curl -sf "http://127.0.0.1:$port/dl/tool.bin"
cat > "$ctx/Dockerfile" <<DF
FROM base AS src
RUN mkdir -p /app/sub && echo one > /app/one.txt && echo obj > /app/x.o && echo s > /app/sub/s.txt && chmod 0640 /app/one.txt

FROM base
RUN echo 'app:x:1234:4321::/home/app:/bin/sh' >> /etc/passwd && echo 'staff2:x:555:' >> /etc/group
COPY --chown=app:staff2 a.txt /c/named.txt
COPY --chown=app b.txt /c/primary.txt
COPY --chmod=u+x,go-w a.txt /c/sym.txt
COPY --chmod=u=rwX,go=rX tree /c/tree
COPY --parents ./tree/./sub/deep.txt /c/par/
COPY --exclude=*.log tree /c/ex
COPY --from=src --chown=app:staff2 --chmod=g=u --exclude=*.o /app /c/from
ADD a.tgz /c/gz/
ADD a.tar.bz2 /c/bz2/
ADD a.tar.xz /c/xz/
ADD zblob /c/zst
ADD --chown=7:8 plain.tar /c/own/
ADD fake.tar.gz /c/
ADD http://127.0.0.1:$port/dl/tool.bin /c/url/
ADD --checksum=$sum --chmod=755 http://127.0.0.1:$port/dl/tool.bin /c/url2
DF
check "build with COPY and ADD flags" \
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/out.tar" "$ctx"
TZ=UTC tar --numeric-owner --full-time -tvf "$T/out.tar" > "$T/list" 2>&1
mkdir -p "$T/root" && tar -C "$T/root" -xf "$T/out.tar" 2>/dev/null
R=$T/root
has() { grep -E "$1" "$T/list"; }
check "--chown=app:staff2 resolved in the destination" has '^-rw-rw-rw- 1234/555 .* c/named.txt$'
check "--chown=app: the user's primary group" has ' 1234/4321 .* c/primary.txt$'
check "--chmod=u+x,go-w" has '^-rwxr--r-- 0/0 .* c/sym.txt$'
check "--chmod=u=rwX,go=rX on a directory" has '^drwxr-xr-x 0/0 .* c/tree/$'
check "--chmod=u=rwX,go=rX on a file" has '^-rw-r--r-- 0/0 .* c/tree/sub/deep.txt$'
check "--parents keeps what follows /./" has '^-rw------- 0/0 .* c/par/sub/deep.txt$'
check "--parents: the parent keeps its mode" has '^drwx------ 0/0 .* c/par/sub/$'
check "--exclude leaves out *.log" sh -c "[ -f '$R/c/ex/sub/deep.txt' ] && [ ! -e '$R/c/ex/x.log' ]"
check "COPY --from: names, g=u, exclude" sh -c "grep -E '^-rw-rw---- 1234/555 .* c/from/one.txt\$' '$T/list' && [ ! -e '$R/c/from/x.o' ] && [ -f '$R/c/from/sub/s.txt' ]"
check "ADD gzip archive extracted, owners and modes kept" has '^-rwxr-x--- 42/43 .* c/gz/top/dir/f.txt$'
check "ADD bzip2 archive extracted" sh -c "[ \"\$(cat '$R/c/bz2/top/dir/f.txt')\" = 'in archive' ]"
check "ADD xz archive extracted" sh -c "[ \"\$(cat '$R/c/xz/top/dir/f.txt')\" = 'in archive' ]"
check "ADD zstd archive found by content" sh -c "[ \"\$(cat '$R/c/zst/top/dir/f.txt')\" = 'in archive' ]"
check "ADD --chown overrides the archive's owners" has '^-rwxr-x--- 7/8 .* c/own/top/dir/f.txt$'
check "ADD of an archive name that is not an archive copies it" sh -c "[ \"\$(cat '$R/c/fake.tar.gz')\" = 'not an archive' ]"
check "ADD URL: file name from the URL, mode 0600, Last-Modified" \
	has '^-rw------- 0/0 +11 2020-09-13 12:26:40 c/url/tool.bin$'
check "ADD URL with --checksum and --chmod" has '^-rwxr-xr-x 0/0 .* c/url2$'

printf 'FROM base\nCOPY --chown=nosuch a.txt /x\n' > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/x.tar" "$ctx" > "$T/f1.log" 2>&1
check "an unknown user fails the build, named" grep -F 'unable to find user nosuch' "$T/f1.log"
printf 'FROM base\nADD --checksum=sha256:%s http://127.0.0.1:%s/dl/tool.bin /x\n' \
	0000000000000000000000000000000000000000000000000000000000000000 "$port" > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/x.tar" "$ctx" > "$T/f2.log" 2>&1
check "a wrong --checksum fails the build" grep -F 'digest mismatch' "$T/f2.log"
printf 'FROM base\nADD http://127.0.0.1:%s/dl/missing /x\n' "$port" > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" -o type=tar,dest="$T/x.tar" "$ctx" > "$T/f3.log" 2>&1
check "a 404 fails the build" grep -F 'invalid response status 404' "$T/f3.log"
check "the http server was used" grep -q 'GET /dl/tool.bin' "$T/http.log"
grep " c/" "$T/list" | diag
done_testing
