#!/bin/sh
# The information calls: `kiln build --call targets|outline` (buildx's
# names, `--print` as an alias, `,format=json` for the raw JSON) are
# answered by the coordinator's frontend without running anything;
# `kiln debug graph` prints the planned graph as JSON; `kiln debug ast`
# prints BuildKit's AST dump of a Dockerfile.
. "$(dirname "$0")/lib.sh"
plan 22
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<'EOF'
# syntax=docker/dockerfile:1
# VERSION the version to build
ARG VERSION=1.0

# build compiles the program
FROM base AS build
# GOOS target os
ARG GOOS=linux
RUN --mount=type=secret,id=token,required true

# release the image to ship
FROM base AS release
COPY --from=build /etc/hostname /x
EOF
k() { name=$1; shift; "$KILN" "$@" > "$T/$name.out" 2> "$T/$name.err"; }
kb() { name=$1; shift; k "$name" build --progress plain "$@"; }

check "--call targets" kb targets --call targets "$ctx"
cat > "$T/targets.want" <<'EOF'
TARGET            DESCRIPTION
build             compiles the program
release (default) the image to ship
EOF
check "targets: buildx's table" diff -u "$T/targets.want" "$T/targets.out"
check "--call targets,format=json" kb tjson --call targets,format=json "$ctx"
check "targets JSON: names, default, base, line" jq -e '.targets[0].name == "build" and
	.targets[1].default == true and .targets[1].base == "base" and
	.targets[1].location.ranges[0].start.line == 12' "$T/tjson.out"
check "targets JSON: the source is the Dockerfile" \
	sh -c "jq -r '.sources[0]' '$T/tjson.out' | base64 -d | cmp - '$ctx/Dockerfile'"

check "--call outline" kb outline --call outline "$ctx"
cat > "$T/outline.want" <<'EOF'
TARGET:      release
DESCRIPTION: the image to ship

BUILD ARG   VALUE   DESCRIPTION
GOOS        linux   target os

SECRET   REQUIRED
token    true

EOF
check "outline of the default target" diff -u "$T/outline.want" "$T/outline.out"
check "--print outline is --call outline" kb print --print outline "$ctx"
check "same output" cmp "$T/outline.out" "$T/print.out"
check "--call outline --target build --build-arg GOOS=darwin" \
	kb obuild --call outline --target build --build-arg GOOS=darwin "$ctx"
cat > "$T/obuild.want" <<'EOF'
TARGET:      build
DESCRIPTION: compiles the program

BUILD ARG   VALUE    DESCRIPTION
GOOS        darwin   target os

SECRET   REQUIRED
token    true

EOF
check "outline of the build target with the build arg" diff -u "$T/obuild.want" "$T/obuild.out"
check "--call outline,format=json" kb ojson --call outline,format=json "$ctx"
check "outline JSON" jq -e '.name == "release" and .args[0].name == "GOOS" and
	.args[0].location.ranges[0].start.line == 8 and .secrets[0].required == true' "$T/ojson.out"

kb unknown --call outline --target nope "$ctx"
rc=$?
check "an unknown target fails" sh -c "[ $rc -eq 1 ] && grep -q 'target stage \"nope\" could not be found' '$T/unknown.err'"
kb check --call check "$ctx"
rc=$?
check "an unsupported call fails" sh -c "[ $rc -eq 1 ] && grep -q \"call 'check' is not supported\" '$T/check.err'"

printf 'FROM base\nARG MSG=hi\nRUN echo "$MSG" > /msg\n' > "$T/simple.Dockerfile"
check "--call build builds" kb build --call build --build-context base=oci-layout://"$BASE" \
	-f "$T/simple.Dockerfile" -o type=tar,dest="$T/build.tar" "$ctx"
check "  and writes the output" sh -c "tar -xOf '$T/build.tar' msg | grep -qx hi"

check "kiln debug graph" k graph debug graph --progress plain \
	--build-context base=oci-layout://"$BASE" -f "$T/simple.Dockerfile" "$ctx"
check "  prints a JSON object" sh -c "test -s '$T/graph.out' && jq -e 'type == \"object\"' '$T/graph.out'"

check "kiln debug ast" k ast debug ast "$ctx/Dockerfile"
cat > "$T/ast.want" <<'EOF'
(arg "VERSION=1.0")
(from "base" "AS" "build")
(arg "GOOS=linux")
(run ["--mount=type=secret,id=token,required"] "true")
(from "base" "AS" "release")
(copy ["--from=build"] "/etc/hostname" "/x")
EOF
check "  prints BuildKit's dump" diff -u "$T/ast.want" "$T/ast.out"
printf 'FROM base\nRUN <<EOF\necho\n' > "$T/bad.Dockerfile"
k astbad debug ast "$T/bad.Dockerfile"
rc=$?
check "  a parse error: ERROR: FILE:LINE: msg, exit 1" \
	sh -c "[ $rc -eq 1 ] && grep -qx 'ERROR: $T/bad.Dockerfile:2: unterminated heredoc' '$T/astbad.err'"
for f in targets outline obuild unknown graph; do echo "# $f:"; diag "$T/$f.err"; done
done_testing
