#!/bin/sh
# Output options of issue 4 item 7: type=oci,tar=false (the layout unpacked
# into a directory), type=docker (a docker archive that skopeo reads, with
# RepoTags from name=), oci-mediatypes=true|false, and byte-identical
# outputs under SOURCE_DATE_EPOCH.
. "$(dirname "$0")/lib.sh"
plan 27
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
check "type=oci,tar=false builds" b dir "type=oci,dest=$T/layout,tar=false"
check "the directory is an OCI layout" test -f "$T/layout/oci-layout" -a -f "$T/layout/index.json"
check "skopeo reads the layout" sh -c "skopeo inspect --raw oci:'$T/layout:latest' > '$T/dir-man.json'"
check "its manifest is OCI" test "$(mt "$T/dir-man.json" .mediaType)" = application/vnd.oci.image.manifest.v1+json
check "umoci unpacks it and the files are there" sh -c "umoci unpack --rootless --image '$T/layout:latest' '$T/dir-bundle' >/dev/null 2>&1 && grep -qx hello '$T/dir-bundle/rootfs/hello.txt' && grep -qx built '$T/dir-bundle/rootfs/built'"
check "type=oci tar output builds" b oci "type=oci,dest=$T/o.tar"
check "the layout equals the tar output" sh -c "mkdir '$T/ox' && tar -C '$T/ox' -xf '$T/o.tar' && diff -r '$T/ox' '$T/layout'"

# type=docker
check "type=docker builds" b docker "type=docker,dest=$T/d.tar,name=example.com/kiln/hello"
check "manifest.json names the config, the tag and the layers" sh -c "tar -xOf '$T/d.tar' manifest.json > '$T/d-manifest.json' && \
	[ \"\$(jq -r '.[0].RepoTags[0]' '$T/d-manifest.json')\" = example.com/kiln/hello:latest ] && \
	[ \"\$(jq -r '.[0].Layers | length' '$T/d-manifest.json')\" -ge 2 ] && \
	tar -tf '$T/d.tar' | grep -qx \"\$(jq -r '.[0].Config' '$T/d-manifest.json')\""
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
check "type=oci,oci-mediatypes=false builds" b ocidm "type=oci,dest=$T/odm,tar=false,oci-mediatypes=false"
check "the manifest, config and every layer have Docker media types" sh -c "skopeo inspect --raw oci:'$T/odm' | jq -e '.mediaType == \"application/vnd.docker.distribution.manifest.v2+json\" and .config.mediaType == \"application/vnd.docker.container.image.v1+json\" and ([.layers[].mediaType] | unique) == [\"application/vnd.docker.image.rootfs.diff.tar.gzip\"]' && \
	jq -e '.manifests[0].mediaType == \"application/vnd.docker.distribution.manifest.v2+json\"' '$T/odm/index.json'"
check "only the manifest and config differ from the OCI build: same layers" sh -c "[ \"\$(skopeo inspect --raw oci:'$T/odm' | jq -c '[.layers[].digest]')\" = \"\$(jq -c '[.layers[].digest]' '$T/dir-man.json')\" ]"

# rewrite-timestamp=true: file times inside layers are clamped (always, in kiln)
check "rewrite-timestamp=true builds" b rts "type=oci,dest=$T/rts,tar=false,rewrite-timestamp=true"
check "no file in a layer the build made is newer than SOURCE_DATE_EPOCH" sh -c "for l in \$(skopeo inspect --raw oci:'$T/rts' | jq -r '.layers[1:][].digest' | cut -d: -f2); do \
	tar -tvzf '$T/rts/blobs/sha256/'\$l --full-time | awk '{print \$4\"T\"\$5}'; done | sort -u | tail -1 | awk '{ if (\$1 > \"2023-11-14T22:13:20\") exit 1 }'"

# determinism and errors
check "type=docker again" b docker4 "type=docker,dest=$T/d4.tar,name=example.com/kiln/hello"
check "type=docker twice gives byte-identical archives" cmp "$T/d.tar" "$T/d4.tar"
check "tar=false is refused for other types" sh -c "! '$KILN' build -o 'type=tar,dest=$T/x.tar,tar=false' '$ctx' 2>'$T/e1' && grep -q 'tar=false is only for type=oci' '$T/e1'"
check "a bad boolean is refused" sh -c "! '$KILN' build -o 'type=oci,dest=$T/x.tar,oci-mediatypes=maybe' '$ctx' 2>'$T/e2' && grep -q \"invalid boolean 'maybe'\" '$T/e2'"
done_testing
