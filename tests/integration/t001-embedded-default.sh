#!/bin/sh
# (a) A build on the embedded default (no builder configured), checked with
# tools we did not write: skopeo inspect and umoci unpack.
. "$(dirname "$0")/lib.sh"
plan 14
need_fixture

ctx=$T/ctx
mkdir -p "$ctx/sub"
printf 'copied file\n' > "$ctx/hello.txt"
printf 'nested\n' > "$ctx/sub/nested.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
ENV GREETING="hi there" PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /work
COPY hello.txt /work/
COPY sub /opt/sub
RUN echo "made by run" > /work/run.txt && mkdir -p /var/empty-dir && rm /etc/group
RUN ["/bin/sh", "-c", "echo exec-form > /work/exec.txt"]
LABEL org.example.label="a label" other=two
ENTRYPOINT ["/bin/sh"]
CMD ["-c", "cat /work/hello.txt"]
DF

check "build on the embedded default succeeds" \
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
	-t kiln-test/hello:v1 -o type=oci,dest="$T/img.tar" --metadata-file "$T/meta.json" "$ctx"
check "a default builder was started by the build" sh -c "'$KILN' builder ls | grep -q '^default'"
check "skopeo inspect reads the OCI archive" \
	sh -c "skopeo inspect --config oci-archive:'$T/img.tar':v1 > '$T/config.json'"
check "config has the ENV" jq -e '.config.Env | index("GREETING=hi there") != null' "$T/config.json"
check "config has WORKDIR" jq -e '.config.WorkingDir == "/work"' "$T/config.json"
check "config has CMD and ENTRYPOINT" \
	jq -e '.config.Cmd == ["-c","cat /work/hello.txt"] and .config.Entrypoint == ["/bin/sh"]' "$T/config.json"
check "config has the LABELs" \
	jq -e '.config.Labels["org.example.label"] == "a label" and .config.Labels.other == "two"' "$T/config.json"
check "history and diff_ids agree" \
	jq -e '([.history[] | select(.empty_layer != true)] | length) == (.rootfs.diff_ids | length)' "$T/config.json"

mkdir -p "$T/oci"
tar -C "$T/oci" -xf "$T/img.tar"
check "umoci unpacks the image" umoci unpack --image "$T/oci:v1" "$T/bundle"
R=$T/bundle/rootfs
check "COPY put the file in place" sh -c "[ \"\$(cat '$R/work/hello.txt')\" = 'copied file' ]"
check "COPY of a directory copied its contents" sh -c "[ \"\$(cat '$R/opt/sub/nested.txt')\" = nested ]"
check "RUN output is in the image" sh -c "[ \"\$(cat '$R/work/run.txt')\" = 'made by run' ] && [ -d '$R/var/empty-dir' ]"
check "a file RUN removed is gone (whiteout applied)" sh -c "[ ! -e '$R/etc/group' ] && [ -e '$R/etc/passwd' ]"
check "exec-form RUN ran" sh -c "[ \"\$(cat '$R/work/exec.txt')\" = exec-form ]"
done_testing
