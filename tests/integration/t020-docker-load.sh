#!/bin/sh
# type=docker archives load into podman (issue 4 item 7). podman load reads
# the archive as an OCI archive when index.json holds one image, naming it
# after io.containerd.image.name as for BuildKit's archives, and as a docker
# archive (manifest.json's RepoTags) when it holds several names; either
# way it must see the config and manifest kiln wrote. A force-compressed,
# timestamp-rewritten archive loads too. podman runs with its own root,
# runroot, tmpdir and the vfs driver under $T: no global podman state is
# touched and no mount is left. (skopeo's docker-archive: reading of the
# plain archive is t011's.)
. "$(dirname "$0")/lib.sh"
command -v podman >/dev/null 2>&1 || { echo "Bail out! podman is not installed (tests/install-deps.sh installs it)"; exit 1; }
plan 16
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
echo hello > "$ctx/hello.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
ENV GREETING=hello PATH=/usr/local/bin:/usr/bin:/bin
LABEL org.example.kiln=t020
WORKDIR /srv
COPY hello.txt .
RUN echo built > /srv/built
USER nobody
CMD ["cat", "/srv/hello.txt"]
DF
export SOURCE_DATE_EPOCH=1700000000
b() { # NAME ARGS...: build with the base, metadata into $T/NAME.json
	n=$1; shift
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
		--metadata-file "$T/$n.json" "$@" "$ctx" > "$T/$n.log" 2>&1 || { diag "$T/$n.log"; return 1; }
}
pm() { # STORE ARGS...: podman confined to $T/pm-STORE
	s=$1; shift
	mkdir -p "$T/pm-$s/tmp"
	TMPDIR=$T/pm-$s/tmp podman --root "$T/pm-$s/root" --runroot "$T/pm-$s/run" \
		--tmpdir "$T/pm-$s/libpod" --storage-driver vfs --events-backend none "$@"
}
load() { pm "$1" load -i "$2" > "$T/$1-load.log" 2>&1 || { diag "$T/$1-load.log"; return 1; }; }
loaded_as() { grep -qx "Loaded image: $2" "$T/$1-load.log"; }     # STORE REF
listed() { pm "$1" images --format '{{.Repository}}:{{.Tag}}' | grep -qx "$2"; }  # STORE REF
insp() { pm "$1" image inspect "$2" | jq -e ".[0] | $3"; }         # STORE REF FILTER
meta() { json_get "$T/$1.json" "$2"; }

id_is() { id=$(pm "$1" image inspect --format '{{.ID}}' "$2") && [ "sha256:$id" = "$3" ]; }  # STORE REF DIGEST
no_mounts() { ! grep -qF "$T" /proc/mounts; }

check "type=docker with name= builds" b one -o "type=docker,dest=$T/one.tar,name=example.com/kiln/load:v1"
check "podman load accepts the archive" load one "$T/one.tar"
check "... and names the image after name=" loaded_as one example.com/kiln/load:v1
check "podman images lists it" listed one example.com/kiln/load:v1
check "its image ID is kiln's config digest" id_is one example.com/kiln/load:v1 "$(meta one containerimage.config.digest)"
check "its digest is kiln's manifest digest" insp one example.com/kiln/load:v1 ".Digest == \"$(meta one containerimage.digest)\""
check "podman sees the config: Env, Cmd, User, WorkingDir, Labels" insp one example.com/kiln/load:v1 \
	'(.Config.Env | any(. == "GREETING=hello")) and (.Config.Env | any(. == "PATH=/usr/local/bin:/usr/bin:/bin")) and
	 .Config.Cmd == ["cat", "/srv/hello.txt"] and .Config.User == "nobody" and .Config.WorkingDir == "/srv" and
	 .Config.Labels["org.example.kiln"] == "t020"'
check "... and the created time is SOURCE_DATE_EPOCH" insp one example.com/kiln/load:v1 '.Created | startswith("2023-11-14T22:13:20")'

check "type=docker with two -t names builds" b two -o "type=docker,dest=$T/two.tar" -t example.com/kiln/load:a -t example.com/kiln/load:b
both_tags() {
	load two "$T/two.tar" && listed two example.com/kiln/load:a && listed two example.com/kiln/load:b &&
		id_is two example.com/kiln/load:a "$(meta two containerimage.config.digest)" &&
		id_is two example.com/kiln/load:b "$(meta two containerimage.config.digest)"
}
check "podman load gives both tags, of one image" both_tags

# Base layer recompressed (gzip -> plain tar) and the build's layers'
# times clamped: podman must accept every blob and the config's diff_ids
# (4 layers: the base, WORKDIR, COPY, RUN).
check "type=docker,compression=uncompressed,force-compression=true,rewrite-timestamp=true builds" \
	b three -o "type=docker,dest=$T/three.tar,name=example.com/kiln/load:plain,compression=uncompressed,force-compression=true,rewrite-timestamp=true"
check "podman loads it" load three "$T/three.tar"
three_ids() {
	id_is three example.com/kiln/load:plain "$(meta three containerimage.config.digest)" &&
		insp three example.com/kiln/load:plain ".Digest == \"$(meta three containerimage.digest)\""
}
plain_layers() { # manifest.json's layer blobs are the config's diff_ids, and podman's layers
	tar -xOf "$T/three.tar" manifest.json > "$T/three-m.json" &&
		tar -xOf "$T/three.tar" "$(jq -r '.[0].Config' "$T/three-m.json")" | jq -c .rootfs.diff_ids > "$T/three-d1" &&
		jq -c '[.[0].Layers[] | sub("blobs/sha256/"; "sha256:")]' "$T/three-m.json" > "$T/three-d2" &&
		cmp "$T/three-d1" "$T/three-d2" && [ "$(jq length "$T/three-d1")" -eq 4 ] &&
		insp three example.com/kiln/load:plain ".RootFS.Layers == $(cat "$T/three-d1")"
}
skopeo_copy() { # skopeo recompresses while copying: the diff_ids must come out the same
	skopeo copy -q docker-archive:"$T/three.tar" oci:"$T/three-oci:plain" &&
		skopeo inspect --config oci:"$T/three-oci:plain" | jq -e ".rootfs.diff_ids == $(cat "$T/three-d1")"
}
check "... with kiln's manifest and config" three_ids
check "... every layer, the base one included, is a plain tar: its digest is its diff_id" plain_layers
check "skopeo copy docker-archive: of it to oci: works, same diff_ids" skopeo_copy
check "podman left no mount under the test directory" no_mounts
done_testing
