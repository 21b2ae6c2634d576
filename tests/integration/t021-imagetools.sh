#!/bin/sh
# kiln imagetools (issue 5 item 5): two single-platform images that kiln
# builds and pushes (amd64 natively, arm64 under QEMU) into two repositories
# are merged by `imagetools create -t` into an index in a third; inspect
# shows both platforms, --raw is the registry's bytes, skopeo reads the
# result and a build for arm64 resolves through it. Also: Docker schema2
# sources give a Docker manifest list, --dry-run pushes nothing, --append,
# a digest as a source, clear errors for a missing source and bad usage.
. "$(dirname "$0")/lib.sh"
plan 20
need_fixture

port=$("$TOP/tests/fixtures/registry.sh" start "$T/registry") || { echo "Bail out! registry"; exit 1; }
R=127.0.0.1:$port
skopeo copy --all --dest-tls-verify=false oci:"$BASE":multiarch docker://$R/library/busybox:latest \
	> "$T/skopeo.log" 2>&1 || { diag "$T/skopeo.log"; echo "Bail out! skopeo push"; exit 1; }
# raw REF: the registry's bytes for REF, as skopeo reads them
printf '#!/bin/sh\nexec skopeo inspect --raw --tls-verify=false "docker://$1"\n' > "$T/raw"
chmod +x "$T/raw"
PATH=$T:$PATH
export PATH

ctx=$T/ctx
mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<DF
FROM $R/library/busybox:latest
RUN uname -m > /arch
DF
check "kiln builds and pushes a linux/amd64 image" sh -c \
	"'$KILN' build --progress plain --platform linux/amd64 --push -t $R/kiln/app-amd64:v1 '$ctx' > '$T/amd.log' 2>&1"
check "kiln builds and pushes a linux/arm64 image (QEMU)" sh -c \
	"'$KILN' build --progress plain --platform linux/arm64 --push -t $R/kiln/app-arm64:v1 '$ctx' > '$T/arm.log' 2>&1"
diag "$T/arm.log"

check "imagetools --help works" sh -c "'$KILN' imagetools --help | grep -q 'create' && '$KILN' imagetools create --help | grep -q -- '--dry-run'"

# create: the two images from two repositories into a third
check "imagetools create -t merges the two into one index" sh -c \
	"'$KILN' imagetools create --progress plain -t $R/kiln/app:v1 $R/kiln/app-amd64:v1 $R/kiln/app-arm64:v1 > '$T/create.log' 2>&1"
diag "$T/create.log"
check "the new tag is an OCI index of exactly the two pushed manifests" sh -c \
	"raw $R/kiln/app:v1 > '$T/index.json' && \
	jq -e '.mediaType == \"application/vnd.oci.image.index.v1+json\" and (.manifests | length) == 2' '$T/index.json' >/dev/null && \
	[ \"\$(jq -r '.manifests[0].digest' '$T/index.json')\" = \"\$(skopeo inspect --tls-verify=false docker://$R/kiln/app-amd64:v1 | jq -r .Digest)\" ] && \
	[ \"\$(jq -r '.manifests[1].digest' '$T/index.json')\" = \"\$(skopeo inspect --tls-verify=false docker://$R/kiln/app-arm64:v1 | jq -r .Digest)\" ] && \
	[ \"\$(jq -r '[.manifests[].platform | .os + \"/\" + .architecture] | join(\",\")' '$T/index.json')\" = linux/amd64,linux/arm64 ]"
check "inspect shows both platforms, buildx's way" sh -c \
	"'$KILN' imagetools inspect $R/kiln/app:v1 > '$T/inspect.txt' && \
	grep -qx 'Name:      $R/kiln/app:v1' '$T/inspect.txt' && \
	grep -qx 'MediaType: application/vnd.oci.image.index.v1+json' '$T/inspect.txt' && \
	grep -qx \"Digest:    \$(sha256sum < '$T/index.json' | sed 's/ .*//; s/^/sha256:/')\" '$T/inspect.txt' && \
	grep -qx 'Manifests: ' '$T/inspect.txt' && \
	grep -qx '  Platform:  linux/amd64' '$T/inspect.txt' && grep -qx '  Platform:  linux/arm64' '$T/inspect.txt' && \
	[ \"\$(grep -c '^  Name:      $R/kiln/app:v1@sha256:' '$T/inspect.txt')\" = 2 ]"
diag "$T/inspect.txt"
check "inspect --raw is byte-identical to skopeo inspect --raw" sh -c \
	"'$KILN' imagetools inspect --raw $R/kiln/app:v1 > '$T/kraw' && raw $R/kiln/app:v1 > '$T/sraw' && cmp '$T/kraw' '$T/sraw'"
check "inspect --raw of a single manifest too" sh -c \
	"'$KILN' imagetools inspect --raw $R/kiln/app-arm64:v1 > '$T/kraw1' && raw $R/kiln/app-arm64:v1 > '$T/sraw1' && cmp '$T/kraw1' '$T/sraw1'"
check "skopeo copies the whole new image out of its repository" sh -c \
	"skopeo copy --all --src-tls-verify=false docker://$R/kiln/app:v1 oci:'$T/copied':app > '$T/copy.log' 2>&1"
diag "$T/copy.log"
printf 'FROM %s\nRUN cat /arch > /seen\n' "$R/kiln/app:v1" > "$ctx/Dockerfile"
check "a linux/arm64 build through the new index gets the arm64 image" sh -c \
	"'$KILN' build --progress quiet --platform linux/arm64 -o type=local,dest='$T/via' '$ctx' > '$T/via.log' 2>&1 && \
	[ \"\$(cat '$T/via/seen')\" = aarch64 ]"
diag "$T/via.log"
idig=sha256:$(sha256sum < "$T/index.json" | cut -c1-64)
check "--format runs a Go template" sh -c \
	"[ \"\$('$KILN' imagetools inspect --format '{{.Name}} {{(index .Image \"linux/arm64\").Architecture}}' $R/kiln/app:v1)\" = '$R/kiln/app:v1 arm64' ] && \
	'$KILN' imagetools inspect --format '{{json .Manifest}}' $R/kiln/app:v1 | \
	jq -e --arg d $idig --slurpfile ix '$T/index.json' '.digest == \$d and .manifests == \$ix[0].manifests' > /dev/null"

# --dry-run: the index on stdout, nothing in the registry
check "--dry-run prints the index" sh -c \
	"'$KILN' imagetools create --dry-run -t $R/kiln/dry:v1 $R/kiln/app-amd64:v1 $R/kiln/app-arm64:v1 > '$T/dry.json' 2> '$T/dry.log' && \
	jq -e '(.manifests | length) == 2' '$T/dry.json' >/dev/null && \
	[ \"\$(head -c -1 '$T/dry.json' | sha256sum)\" = \"\$(sha256sum < '$T/index.json')\" ]"
check "--dry-run pushes nothing" sh -c \
	"! raw $R/kiln/dry:v1 > /dev/null 2>&1 && \
	! curl -sf http://$R/v2/_catalog | jq -e '.repositories | index(\"kiln/dry\")' > /dev/null"

# Docker schema2 sources give a Docker manifest list
for a in amd64 arm64; do
	skopeo copy --format v2s2 --override-arch $a --dest-tls-verify=false oci:"$BASE":multiarch \
		docker://$R/docker/bb-$a:v1 >> "$T/skopeo.log" 2>&1
done
check "Docker manifests merge into a Docker manifest list" sh -c \
	"'$KILN' imagetools create --progress quiet -t $R/docker/bb:v1 $R/docker/bb-amd64:v1 $R/docker/bb-arm64:v1 > '$T/docker.log' 2>&1 && \
	raw $R/docker/bb:v1 | jq -e '.mediaType == \"application/vnd.docker.distribution.manifest.list.v2+json\" and (.manifests | length) == 2 and ([.manifests[].mediaType] | unique) == [\"application/vnd.docker.distribution.manifest.v2+json\"]' > /dev/null"
diag "$T/docker.log"

# --append, and a source given by digest in the tag's repository
check "--append adds a platform to an existing index" sh -c \
	"'$KILN' imagetools create --progress quiet -t $R/kiln/grow:v1 $R/kiln/app-amd64:v1 && \
	raw $R/kiln/grow:v1 | jq -e '(.manifests | length) == 1' > /dev/null && \
	'$KILN' imagetools create --progress quiet --append -t $R/kiln/grow:v1 $R/kiln/app-arm64:v1 && \
	[ \"\$(raw $R/kiln/grow:v1 | jq -r '[.manifests[].platform.architecture] | join(\",\")')\" = amd64,arm64 ]"
arm=$(jq -r '.manifests[1].digest' "$T/index.json")
exp=$(jq -c '[.manifests[1]]' "$T/index.json")
check "a bare digest is looked up in the one repository named" sh -c \
	"[ \"\$('$KILN' imagetools create --dry-run -t $R/kiln/app:v1 $arm | jq -c .manifests)\" = '$exp' ]"

# errors
check "a missing source fails, naming it, and pushes nothing" sh -c \
	"! '$KILN' imagetools create --progress quiet -t $R/kiln/never:v1 $R/kiln/app-amd64:v1 $R/kiln/nope:v9 > '$T/missing.log' 2>&1 && \
	grep -qx 'ERROR: $R/kiln/nope:v9: not found' '$T/missing.log' && ! raw $R/kiln/never:v1 > /dev/null 2>&1"
diag "$T/missing.log"
check "inspect of a missing tag fails clearly" sh -c \
	"! '$KILN' imagetools inspect $R/kiln/app:nope > '$T/miss2.log' 2>&1 && grep -qx 'ERROR: $R/kiln/app:nope: not found' '$T/miss2.log'"
check "create without -t or --dry-run says so" sh -c \
	"! '$KILN' imagetools create $R/kiln/app-amd64:v1 > '$T/notag.log' 2>&1 && \
	grep -q \"can't push with no tags specified, please set --tag or --dry-run\" '$T/notag.log'"
check "--raw with --format is refused" sh -c \
	"! '$KILN' imagetools inspect --raw --format '{{.Name}}' $R/kiln/app:v1 > '$T/rawfmt.log' 2>&1 && \
	grep -q 'format and raw cannot be used together' '$T/rawfmt.log'"
done_testing
