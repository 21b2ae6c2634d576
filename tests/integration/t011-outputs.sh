#!/bin/sh
# Output options of issue 4 item 7: type=oci,tar=false (the layout unpacked
# into a directory), type=docker (a docker archive that skopeo reads, with
# RepoTags from name=), oci-mediatypes=true|false, rewrite-timestamp=true
# (file times in the build's layers clamped to SOURCE_DATE_EPOCH at export,
# as BuildKit's exporters do; without it the layers keep them) and
# byte-identical outputs with it.
. "$(dirname "$0")/lib.sh"
plan 35
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
echo hello > "$ctx/hello.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
COPY hello.txt /hello.txt
RUN echo built > /built
CMD ["sh"]
DF
export SOURCE_DATE_EPOCH=1700000000
b() { # NAME OUTPUT-SPEC
	n=$1; shift
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
		-o "$1" --metadata-file "$T/$n.json" "$ctx" > "$T/$n.log" 2>&1 || { diag "$T/$n.log"; return 1; }
}
mt() { jq -r "$2" "$1"; }

# type=oci,tar=false
check "type=oci,tar=false builds" b dir "type=oci,dest=$T/layout,tar=false,rewrite-timestamp=true"
check "the directory is an OCI layout" test -f "$T/layout/oci-layout" -a -f "$T/layout/index.json"
check "skopeo reads the layout" sh -c "skopeo inspect --raw oci:'$T/layout:latest' > '$T/dir-man.json'"
check "its manifest is OCI" test "$(mt "$T/dir-man.json" .mediaType)" = application/vnd.oci.image.manifest.v1+json
check "umoci unpacks it and the files are there" sh -c "umoci unpack --rootless --image '$T/layout:latest' '$T/dir-bundle' >/dev/null 2>&1 && grep -qx hello '$T/dir-bundle/rootfs/hello.txt' && grep -qx built '$T/dir-bundle/rootfs/built'"
check "type=oci tar output builds" b oci "type=oci,dest=$T/o.tar,rewrite-timestamp=true"
check "the layout equals the tar output" sh -c "mkdir '$T/ox' && tar -C '$T/ox' -xf '$T/o.tar' && diff -r '$T/ox' '$T/layout'"

# type=docker
check "type=docker builds" b docker "type=docker,dest=$T/d.tar,name=example.com/kiln/hello,rewrite-timestamp=true"
check "manifest.json names the config, the tag and the layers" sh -c "tar -xOf '$T/d.tar' manifest.json > '$T/d-manifest.json' && \
	[ \"\$(jq -r '.[0].RepoTags[0]' '$T/d-manifest.json')\" = example.com/kiln/hello:latest ] && \
	[ \"\$(jq -r '.[0].Layers | length' '$T/d-manifest.json')\" -ge 2 ] && \
	tar -tf '$T/d.tar' | grep -qx \"\$(jq -r '.[0].Config' '$T/d-manifest.json')\""
check "index.json names the image as containerd's exporter does (podman load reads it)" sh -c "tar -xOf '$T/d.tar' index.json | jq -e '.manifests | length == 1 and .[0].annotations == {\"io.containerd.image.name\": \"example.com/kiln/hello:latest\", \"org.opencontainers.image.ref.name\": \"latest\"}'"
check "skopeo inspect docker-archive: accepts it" sh -c "skopeo inspect docker-archive:'$T/d.tar' > '$T/d-inspect.json'"
check "skopeo finds the image by its tag and sees the CMD" sh -c "skopeo inspect --config docker-archive:'$T/d.tar':example.com/kiln/hello:latest | jq -e '.config.Cmd == [\"sh\"]'"
check "skopeo copy docker-archive: to oci: works" skopeo copy -q docker-archive:"$T/d.tar" oci:"$T/from-docker:x"
check "the copied image unpacks with the built files" sh -c "umoci unpack --rootless --image '$T/from-docker:x' '$T/d-bundle' >/dev/null 2>&1 && grep -qx built '$T/d-bundle/rootfs/built'"
check "type=docker uses Docker media types" sh -c "skopeo inspect --raw oci-archive:'$T/d.tar' > '$T/d-man.json' 2>/dev/null || \
	(mkdir -p '$T/dx' && tar -C '$T/dx' -xf '$T/d.tar' && skopeo inspect --raw oci:'$T/dx' > '$T/d-man.json'); \
	jq -e '.mediaType == \"application/vnd.docker.distribution.manifest.v2+json\" and .config.mediaType == \"application/vnd.docker.container.image.v1+json\" and ([.layers[].mediaType] | unique) == [\"application/vnd.docker.image.rootfs.diff.tar.gzip\"]' '$T/d-man.json'"
check "type=docker without a name builds" b docker2 "type=docker,dest=$T/d2.tar"
check "without a name: no RepoTags, still readable" sh -c "tar -xOf '$T/d2.tar' manifest.json | jq -e '.[0].RepoTags == []' && skopeo inspect docker-archive:'$T/d2.tar' >/dev/null"
check "type=docker,oci-mediatypes=true builds" b docker3 "type=docker,dest=$T/d3.tar,oci-mediatypes=true"
check "type=docker,oci-mediatypes=true: OCI types" sh -c "mkdir '$T/d3x' && tar -C '$T/d3x' -xf '$T/d3.tar' && skopeo inspect --raw oci:'$T/d3x' | jq -e '.mediaType == \"application/vnd.oci.image.manifest.v1+json\"' && skopeo inspect docker-archive:'$T/d3.tar' >/dev/null"

# oci-mediatypes=false on type=oci
check "type=oci,oci-mediatypes=false builds" b ocidm "type=oci,dest=$T/odm,tar=false,oci-mediatypes=false,rewrite-timestamp=true"
check "the manifest, config and every layer have Docker media types" sh -c "skopeo inspect --raw oci:'$T/odm' | jq -e '.mediaType == \"application/vnd.docker.distribution.manifest.v2+json\" and .config.mediaType == \"application/vnd.docker.container.image.v1+json\" and ([.layers[].mediaType] | unique) == [\"application/vnd.docker.image.rootfs.diff.tar.gzip\"]' && \
	jq -e '.manifests[0].mediaType == \"application/vnd.docker.distribution.manifest.v2+json\"' '$T/odm/index.json'"
check "only the manifest and config differ from the OCI build: same layers" sh -c "[ \"\$(skopeo inspect --raw oci:'$T/odm' | jq -c '[.layers[].digest]')\" = \"\$(jq -c '[.layers[].digest]' '$T/dir-man.json')\" ]"

# rewrite-timestamp: without it the build's layers keep their file times
# (the RUN wrote /built "now", after SOURCE_DATE_EPOCH) and only the
# config's times are SOURCE_DATE_EPOCH; with it, the exporter clamps the
# times in the layers the build made, never in the base image's.
newest_is_epoch() { # LAYOUT: the newest file time in the layers after the base one
	n=$(for l in $(skopeo inspect --raw oci:"$1" | jq -r '.layers[1:][].digest' | cut -d: -f2); do
		tar -tvzf "$1/blobs/sha256/$l" --full-time | awk '{print $4"T"$5}'
	done | sort -u | tail -1)
	[ "$n" = 2023-11-14T22:13:20 ] || { echo "newest: $n"; return 1; }
}
check "without rewrite-timestamp builds" b keep "type=oci,dest=$T/keep,tar=false"
check "... /built keeps the time the RUN wrote it (after SOURCE_DATE_EPOCH)" sh -c "tar -tvzf '$T/keep/blobs/sha256/'\$(skopeo inspect --raw oci:'$T/keep' | jq -r '.layers[-1].digest' | cut -d: -f2) --full-time built | awk '{ if (\$4\"T\"\$5 <= \"2023-11-14T22:13:20\") exit 1 }'"
check "... and the config's times are SOURCE_DATE_EPOCH all the same" sh -c "skopeo inspect --config oci:'$T/keep' | jq -e '.created == \"2023-11-14T22:13:20Z\" and .history[-1].created == \"2023-11-14T22:13:20Z\"'"
check "with rewrite-timestamp=true: no file in a layer the build made is newer than SOURCE_DATE_EPOCH" newest_is_epoch "$T/layout"
check "the base layer is the base image's, untouched, and carries no annotation" sh -c "[ \"\$(skopeo inspect --raw oci:'$T/layout' | jq -c '.layers[0]')\" = \"\$(skopeo inspect --raw oci:'$T/keep' | jq -c '.layers[0]')\" ] && \
	skopeo inspect --raw oci:'$T/layout' | jq -e '.layers[0].annotations == null'"
check "the rewritten layers carry buildkit/rewritten-timestamp, as BuildKit's" sh -c "skopeo inspect --raw oci:'$T/layout' | jq -e '[.layers[1:][].annotations[\"buildkit/rewritten-timestamp\"]] | unique == [\"1700000000\"]'"
check "the config's diff_ids are those of the rewritten layers" sh -c "for l in \$(skopeo inspect --raw oci:'$T/layout' | jq -r '.layers[].digest' | cut -d: -f2); do \
	echo sha256:\$(gzip -dc '$T/layout/blobs/sha256/'\$l | sha256sum | cut -d' ' -f1); done > '$T/rts-diffs' && \
	skopeo inspect --config oci:'$T/layout' | jq -r '.rootfs.diff_ids[]' | cmp - '$T/rts-diffs'"
check "the layers without rewrite-timestamp differ" sh -c "! [ \"\$(skopeo inspect --raw oci:'$T/layout' | jq -c '[.layers[1:][].digest]')\" = \"\$(skopeo inspect --raw oci:'$T/keep' | jq -c '[.layers[1:][].digest]')\" ]"

# determinism and errors
check "type=docker again" b docker4 "type=docker,dest=$T/d4.tar,name=example.com/kiln/hello,rewrite-timestamp=true"
check "type=docker twice gives byte-identical archives" cmp "$T/d.tar" "$T/d4.tar"
check "tar=false is refused for other types" sh -c "! '$KILN' build -o 'type=tar,dest=$T/x.tar,tar=false' '$ctx' 2>'$T/e1' && grep -q 'tar=false is only for type=oci' '$T/e1'"
check "an invalid image name is refused before the build" sh -c "! '$KILN' build -o 'type=docker,dest=$T/x.tar,name=Example/Bad' '$ctx' 2>'$T/e3' && grep -q \"invalid image name: reference 'Example/Bad': repository name must be lowercase\" '$T/e3'"
check "a bad boolean is refused" sh -c "! '$KILN' build -o 'type=oci,dest=$T/x.tar,oci-mediatypes=maybe' '$ctx' 2>'$T/e2' && grep -q \"invalid boolean 'maybe'\" '$T/e2'"
done_testing
