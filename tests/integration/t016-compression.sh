#!/bin/sh
# Layer compression of issue 4 item 7: compression=gzip|zstd|uncompressed
# and compression-level= make the build's layers in that format from the
# start (media types in the manifest, OCI or Docker), the diff_ids do not
# change with the compression, outputs stay byte-identical under
# SOURCE_DATE_EPOCH with rewrite-timestamp=true, base image layers keep
# their blobs unless force-compression=true, which recompresses them on the
# node (diff_ids unchanged, media types following).
. "$(dirname "$0")/lib.sh"
plan 41
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
echo hello > "$ctx/hello.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
COPY hello.txt /hello.txt
RUN echo built > /built
DF
mkdir -p "$T/scratch"
echo data > "$T/scratch/data.txt"
cat > "$T/scratch/Dockerfile" <<'DF'
FROM scratch
COPY data.txt /data.txt
DF
export SOURCE_DATE_EPOCH=1700000000
b() { # NAME OUTPUT-SPEC [CONTEXT]
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
		-o "$2" "${3:-$ctx}" > "$T/$1.log" 2>&1 || { diag "$T/$1.log"; return 1; }
}
# bl NAME SPEC [CONTEXT]: b into a layout dir $T/NAME, then its manifest
# and config into $T/NAME.json and $T/NAME-cfg.json. rewrite-timestamp=true
# so that diff_ids can be compared across builds (the RUN writes "now").
bl() {
	b "$1" "type=oci,dest=$T/$1,tar=false,rewrite-timestamp=true,$2" ${3:+"$3"} &&
		skopeo inspect --raw oci:"$T/$1" > "$T/$1.json" &&
		cfg=$(jq -r .config.digest "$T/$1.json" | cut -d: -f2) &&
		cp "$T/$1/blobs/sha256/$cfg" "$T/$1-cfg.json"
}
q() { jq -e "$2" "$T/$1.json" > /dev/null; }             # q NAME FILTER
same() { [ "$(jq -c "$2" "$T/$1")" = "$(jq -c "$4" "$T/$3")" ]; }  # same F1 Q1 F2 Q2
zstd_magic() { # NAME [FIRST-LAYER]: every layer from FIRST-LAYER (default 1) is zstd
	for dg in $(jq -r ".layers[${2:-1}:][].digest" "$T/$1.json" | cut -d: -f2); do
		[ "$(head -c4 "$T/$1/blobs/sha256/$dg" | od -An -tx1 | tr -d ' ')" = 28b52ffd ] || return 1
	done
}
zstd_holds_hello() {
	dg=$(jq -r '.layers[1].digest' "$T/zst.json" | cut -d: -f2) &&
		zstd -dc "$T/zst/blobs/sha256/$dg" | tar -xO hello.txt | grep -qx hello
}
# diff_ids_match NAME DECOMPRESSOR: every layer blob, decompressed, hashes
# to its diff_id in the config.
diff_ids_match() {
	for dg in $(jq -r '.layers[].digest' "$T/$1.json" | cut -d: -f2); do
		echo "sha256:$($2 < "$T/$1/blobs/sha256/$dg" | sha256sum | cut -d' ' -f1)"
	done > "$T/$1.computed" && jq -r '.rootfs.diff_ids[]' "$T/$1-cfg.json" | cmp - "$T/$1.computed"
}
refused() { # SPEC MESSAGE
	! "$KILN" build -o "$1" "$ctx" > "$T/refused.log" 2>&1 && grep -qF -- "$2" "$T/refused.log"
}
ZSTD=application/vnd.oci.image.layer.v1.tar+zstd
TAR=application/vnd.oci.image.layer.v1.tar
GZ=application/vnd.oci.image.layer.v1.tar+gzip
DZSTD=application/vnd.docker.image.rootfs.diff.tar.zstd
DTAR=application/vnd.docker.image.rootfs.diff.tar
DGZ=application/vnd.docker.image.rootfs.diff.tar.gzip

check "compression=gzip builds" bl gz "compression=gzip"
check "compression=zstd builds" bl zst "compression=zstd"
check "the built layers are zstd, the base layer stays gzip" q zst "[.layers[].mediaType] == [\"$GZ\", \"$ZSTD\", \"$ZSTD\"]"
check "the zstd blobs start with the zstd magic" zstd_magic zst
check "the zstd layer holds the file" zstd_holds_hello
check "zstd and gzip layers have the same diff_ids" same zst-cfg.json .rootfs.diff_ids gz-cfg.json .rootfs.diff_ids
check "... but other blobs" sh -c "! [ \"\$(jq -c '[.layers[1:][].digest]' '$T/zst.json')\" = \"\$(jq -c '[.layers[1:][].digest]' '$T/gz.json')\" ]"
check "skopeo copies the zstd image (blobs verified)" skopeo copy -q oci:"$T/zst" dir:"$T/zst-dir"
# umoci 0.4.x knows no zstd layers, so it is not asked: the skopeo copy
# above verified the blobs and zstd_holds_hello read the layer's contents.

check "compression=uncompressed builds" bl unc "compression=uncompressed"
check "the built layers are plain tar" q unc "[.layers[].mediaType] == [\"$GZ\", \"$TAR\", \"$TAR\"]"
check "a plain layer's digest is its diff_id" same unc.json '[.layers[1:][].digest]' unc-cfg.json '.rootfs.diff_ids[1:]'
check "umoci unpacks the uncompressed image" sh -c "umoci unpack --rootless --image '$T/unc' '$T/unc-bundle' >/dev/null 2>&1 && grep -qx built '$T/unc-bundle/rootfs/built' && grep -qx hello '$T/unc-bundle/rootfs/hello.txt'"

check "compression=zstd,compression-level=19 builds" bl z19 "compression=zstd,compression-level=19"
check "another level: other blobs" sh -c "! [ \"\$(jq -c '[.layers[1:][].digest]' '$T/z19.json')\" = \"\$(jq -c '[.layers[1:][].digest]' '$T/zst.json')\" ]"
check "... same diff_ids" same z19-cfg.json .rootfs.diff_ids zst-cfg.json .rootfs.diff_ids

check "zstd with oci-mediatypes=false builds" bl zdm "compression=zstd,oci-mediatypes=false"
# containers/image (skopeo) refuses this type in a v2s2 manifest when it
# parses one; BuildKit writes it all the same, and so does kiln.
check "... Docker's zstd layer type (as BuildKit)" q zdm "[.layers[].mediaType] == [\"$DGZ\", \"$DZSTD\", \"$DZSTD\"]"
check "uncompressed with oci-mediatypes=false builds" bl udm "compression=uncompressed,oci-mediatypes=false"
check "... Docker's tar layer type" q udm "[.layers[].mediaType] == [\"$DGZ\", \"$DTAR\", \"$DTAR\"]"

check "zstd type=oci tar twice" sh -c "'$KILN' build --progress quiet --build-context base=oci-layout://'$BASE' -o 'type=oci,dest=$T/zt1.tar,compression=zstd,rewrite-timestamp=true' '$ctx' && \
	'$KILN' build --progress quiet --build-context base=oci-layout://'$BASE' -o 'type=oci,dest=$T/zt2.tar,compression=zstd,rewrite-timestamp=true' '$ctx'"
check "... gives byte-identical tars" cmp "$T/zt1.tar" "$T/zt2.tar"
check "uncompressed type=docker builds" b ud1 "type=docker,dest=$T/ud1.tar,compression=uncompressed"
check "skopeo reads the uncompressed docker archive" skopeo inspect docker-archive:"$T/ud1.tar"

# Without force-compression the base layer is the base image's own blob
# (above: it stays gzip); with it, the node recompresses it.
check "without force-compression the base layer is the base image's blob" sh -c "test -f '$BASE/blobs/sha256/'\$(jq -r '.layers[0].digest' '$T/zst.json' | cut -d: -f2)"
check "compression=zstd,force-compression=true builds" bl fz "compression=zstd,force-compression=true"
check "... every layer is zstd, the base one included" q fz "[.layers[].mediaType] == [\"$ZSTD\", \"$ZSTD\", \"$ZSTD\"]"
check "... and the base blob starts with the zstd magic" zstd_magic fz 0
check "... the diff_ids are unchanged (the base image's included)" same fz-cfg.json .rootfs.diff_ids zst-cfg.json .rootfs.diff_ids
check "... every blob decompresses to its diff_id" diff_ids_match fz "zstd -dc"
check "... skopeo copies it (blobs verified)" skopeo copy -q oci:"$T/fz" dir:"$T/fz-dir"
check "compression=uncompressed,force-compression=true builds" bl fu "compression=uncompressed,force-compression=true"
check "... every layer is a plain tar whose digest is its diff_id" sh -c "jq -e '[.layers[].mediaType] == [\"$TAR\", \"$TAR\", \"$TAR\"]' '$T/fu.json' && \
	[ \"\$(jq -c '[.layers[].digest]' '$T/fu.json')\" = \"\$(jq -c .rootfs.diff_ids '$T/fu-cfg.json')\" ]"
check "... umoci unpacks it with the base image's files and the build's" sh -c "umoci unpack --rootless --image '$T/fu' '$T/fu-bundle' >/dev/null 2>&1 && test -x '$T/fu-bundle/rootfs/bin/busybox' && grep -qx built '$T/fu-bundle/rootfs/built'"
check "force-compression with Docker types: Docker's type for the base layer too" sh -c "'$KILN' build --progress quiet --build-context base=oci-layout://'$BASE' -o 'type=oci,dest=$T/fud,tar=false,compression=uncompressed,force-compression=true,oci-mediatypes=false' '$ctx' && \
	skopeo inspect --raw oci:'$T/fud' | jq -e '[.layers[].mediaType] == [\"$DTAR\", \"$DTAR\", \"$DTAR\"]'"
check "force-compression=true twice (rewrite-timestamp=true) gives byte-identical tars" sh -c "'$KILN' build --progress quiet --build-context base=oci-layout://'$BASE' -o 'type=oci,dest=$T/ft1.tar,compression=zstd,force-compression=true,rewrite-timestamp=true' '$ctx' && \
	'$KILN' build --progress quiet --build-context base=oci-layout://'$BASE' -o 'type=oci,dest=$T/ft2.tar,compression=zstd,force-compression=true,rewrite-timestamp=true' '$ctx' && cmp '$T/ft1.tar' '$T/ft2.tar'"
check "force-compression=true when nothing needs recompressing builds" bl fg "compression=gzip,force-compression=true"
check "... and keeps the base image's blob" sh -c "[ \"\$(jq -c '.layers[0]' '$T/fg.json')\" = \"\$(jq -c '.layers[0]' '$T/gz.json')\" ]"
check "force-compression=true from scratch builds, zstd" sh -c "'$KILN' build --progress quiet -o 'type=oci,dest=$T/fs,tar=false,compression=zstd,force-compression=true' '$T/scratch' && \
	skopeo inspect --raw oci:'$T/fs' | jq -e '[.layers[].mediaType] == [\"$ZSTD\"]'"
check "an unknown compression is refused" refused "type=oci,dest=$T/x.tar,compression=lz4" "unsupported compression type 'lz4'"
check "a gzip level above 9 is refused" refused "type=oci,dest=$T/x.tar,compression-level=10" "compression-level=10 is out of range for gzip (0-9)"
check "compression is refused for type=tar" refused "type=tar,dest=$T/x.tar,compression=zstd" "only for type=oci, docker or image"
done_testing
