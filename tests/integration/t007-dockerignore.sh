#!/bin/sh
# .dockerignore: what it excludes is not in the context (COPY . cannot see
# it) and never travels to the worker; '!' re-includes, also below an
# excluded directory; '**' matches at any depth; NAME.dockerignore next to
# a Dockerfile called NAME wins over the context's .dockerignore; the
# Dockerfile is read even when the .dockerignore excludes it.
. "$(dirname "$0")/lib.sh"
plan 12
need_fixture

ctx=$T/ctx
mkdir -p "$ctx/src/node_modules/pkg" "$ctx/node_modules" "$ctx/deep/a/node_modules" "$ctx/secret" \
	"$ctx/logs"
printf 'app\n' > "$ctx/app.txt"
printf 'keep me\n' > "$ctx/keep.log"
printf 'debug\n' > "$ctx/debug.log"
printf 'old\n' > "$ctx/logs/old.log"
printf 'int main;\n' > "$ctx/src/main.c"
printf 'x\n' > "$ctx/src/node_modules/pkg/x.js"
printf 'y\n' > "$ctx/node_modules/y.js"
printf 'z\n' > "$ctx/deep/a/node_modules/z.js"
printf 'private\n' > "$ctx/secret/key.pem"
printf 'public\n' > "$ctx/secret/public.txt"
head -c 4000000 /dev/urandom > "$ctx/big.bin"
printf 'FROM base\nCOPY . /ctx\n' > "$ctx/Dockerfile"
cat > "$ctx/.dockerignore" <<'EOF'
# build leftovers
*.log
!keep.log
**/node_modules
logs
secret
!secret/public.txt
big.bin
Dockerfile
EOF

b() { name=$1; shift
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
		-o type=local,dest="$T/$name" --metadata-file "$T/$name.json" "$@" > "$T/$name.log" 2>&1; }
# the files (and directories) under /ctx of an output, one per line
listing() { (cd "$T/$1/ctx" && find . -mindepth 1 | LC_ALL=C sort) > "$T/$1.list"; }

check "build with a .dockerignore" b one "$ctx"
diag "$T/one.log"
listing one
cat > "$T/one.want" <<'EOF'
./.dockerignore
./app.txt
./deep
./deep/a
./keep.log
./secret
./secret/public.txt
./src
./src/main.c
EOF
check "COPY . saw exactly what the .dockerignore leaves" diff -u "$T/one.want" "$T/one.list"
check "the re-included file has its content" grep -qx public "$T/one/ctx/secret/public.txt"
check "the excluded 4 MB file never travelled" \
	sh -c "b=\$(jq '.\"kiln.context.bytes_received\"' '$T/one.json'); [ \"\$b\" -gt 0 ] && [ \"\$b\" -lt 4000000 ]"
check "the progress shows the .dockerignore" grep -q '\[internal\] load .dockerignore' "$T/one.log"

# An excluded file cannot be named by COPY either.
mkdir -p "$T/df"
printf 'FROM base\nCOPY debug.log /debug.log\n' > "$T/df/Named.Dockerfile"
b named -f "$T/df/Named.Dockerfile" "$ctx"
rc=$?
check "COPY of an excluded file fails" test "$rc" -ne 0
check "the error names the file" grep -q 'debug.log' "$T/named.log"

# NAME.dockerignore next to the Dockerfile wins over the context's.
printf 'FROM base\nCOPY . /ctx\n' > "$T/df/Foo.Dockerfile"
printf '*\n!app.txt\n!debug.log\n' > "$T/df/Foo.Dockerfile.dockerignore"
check "build with -f Foo.Dockerfile" b foo -f "$T/df/Foo.Dockerfile" "$ctx"
listing foo
printf './app.txt\n./debug.log\n' > "$T/foo.want"
check "Foo.Dockerfile.dockerignore was applied, not .dockerignore" diff -u "$T/foo.want" "$T/foo.list"

# Dockerfile.dockerignore in the context, for the default Dockerfile.
printf 'keep.log\n' > "$ctx/Dockerfile.dockerignore"
check "build with a Dockerfile.dockerignore" b dflt "$ctx"
listing dflt
check "Dockerfile.dockerignore was applied" sh -c "grep -qx './debug.log' '$T/dflt.list' && \
	grep -qx './big.bin' '$T/dflt.list' && ! grep -qx './keep.log' '$T/dflt.list'"
check "without the .dockerignore the big file travels" \
	sh -c "[ \$(jq '.\"kiln.context.bytes_received\"' '$T/dflt.json') -ge 4000000 ]"
done_testing
