#!/bin/sh
# Base images pulled from a registry (Debian's docker-registry on 127.0.0.1,
# the busybox fixture pushed there by skopeo as a two-platform index) and
# images pushed back with --push and -o type=image,push=true, checked by
# skopeo.
. "$(dirname "$0")/lib.sh"
plan 10
need_fixture

port=$("$TOP/tests/fixtures/registry.sh" start "$T/registry") || { echo "Bail out! registry"; exit 1; }
R=127.0.0.1:$port
skopeo copy --all --dest-tls-verify=false oci:"$BASE":multiarch docker://$R/library/busybox:latest \
	> "$T/skopeo.log" 2>&1 || { diag "$T/skopeo.log"; echo "Bail out! skopeo push"; exit 1; }

ctx=$T/ctx
mkdir -p "$ctx"
echo payload > "$ctx/payload.txt"
cat > "$ctx/Dockerfile" <<DF
FROM $R/library/busybox:latest
COPY payload.txt /payload.txt
RUN uname -m > /arch
DF
check "a build pulls its base image from the registry" sh -c \
	"'$KILN' build --progress plain -o type=local,dest='$T/amd' '$ctx' > '$T/pull.log' 2>&1"
check "progress says what was pulled" grep -q "pulling 1 layer" "$T/pull.log"
check "the pulled base is in the result" sh -c "[ -x '$T/amd/bin/busybox' ] && [ \"\$(cat '$T/amd/payload.txt')\" = payload ]"
check "linux/arm64 picks the arm64 image of the index (and runs it under QEMU)" sh -c \
	"'$KILN' build --progress quiet --platform linux/arm64 -o type=local,dest='$T/arm' '$ctx' > '$T/arm.log' 2>&1 && [ \"\$(cat '$T/arm/arch')\" = aarch64 ]"
check "--push pushes the image under its -t name" sh -c \
	"'$KILN' build --progress plain --push -t $R/kiln/pushed:v1 --metadata-file '$T/push.json' '$ctx' > '$T/push.log' 2>&1"
diag "$T/push.log"
check "skopeo reads the pushed image" sh -c \
	"skopeo inspect --tls-verify=false docker://$R/kiln/pushed:v1 > '$T/inspect.json'"
check "the pushed digest is the one the build reported" sh -c \
	"[ \"\$(jq -r .Digest '$T/inspect.json')\" = \"\$(jq -r '.\"containerimage.digest\"' '$T/push.json')\" ]"
check "-o type=image,name=...,push=true works too" sh -c \
	"'$KILN' build --progress quiet -o type=image,name=$R/kiln/other:v2,push=true '$ctx' > '$T/push2.log' 2>&1 && skopeo inspect --tls-verify=false docker://$R/kiln/other:v2 > /dev/null"
check "type=image,push=true,oci-mediatypes=false pushes Docker media types (base layers too)" sh -c \
	"'$KILN' build --progress quiet -o type=image,name=$R/kiln/dockermt:v1,push=true,oci-mediatypes=false '$ctx' > '$T/push3.log' 2>&1 && \
	skopeo inspect --raw --tls-verify=false docker://$R/kiln/dockermt:v1 | jq -e '.mediaType == \"application/vnd.docker.distribution.manifest.v2+json\" and .config.mediaType == \"application/vnd.docker.container.image.v1+json\" and ([.layers[].mediaType] | unique) == [\"application/vnd.docker.image.rootfs.diff.tar.gzip\"]'"
check "an unknown image gives a clear error naming it" sh -c \
	"printf 'FROM $R/nope/missing:1\n' > '$ctx/Dockerfile' && ! '$KILN' build --progress quiet -o type=tar,dest='$T/x.tar' '$ctx' > '$T/missing.log' 2>&1 && grep -q 'nope/missing' '$T/missing.log'"
diag "$T/missing.log"
done_testing
