#!/bin/sh
# Multi-stage builds end to end: COPY --from of stages, ONBUILD in a child
# stage, EXPOSE ranges and HEALTHCHECK in the config, checked with skopeo
# and umoci.
. "$(dirname "$0")/lib.sh"
plan 8
need_fixture
ctx=$T/ctx
mkdir -p "$ctx/src"
printf 'source\n' > "$ctx/src/main.txt"
cat > "$ctx/Dockerfile" <<'DF'
# syntax=docker/dockerfile:1
ARG GREETING=hello
FROM base AS builder
ARG GREETING
WORKDIR /build
COPY src/ ./
RUN mkdir -p /out && cat main.txt > /out/app && echo "$GREETING" >> /out/app
ONBUILD RUN echo triggered > /trigger.txt

FROM base AS other
RUN echo other > /other.txt

FROM builder AS child
RUN echo child > /child.txt

FROM base
COPY --from=builder /out/app /usr/local/bin/app
COPY --from=other /other.txt /other.txt
COPY --from=child /trigger.txt /child.txt /
EXPOSE 8000-8001
HEALTHCHECK --interval=5s CMD true
CMD ["cat", "/usr/local/bin/app"]
DF
check "multi-stage build succeeds" \
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
	-t kiln-test/multi:v1 -o type=oci,dest="$T/img.tar" "$ctx"
check "skopeo inspect" sh -c "skopeo inspect --config oci-archive:'$T/img.tar':v1 > '$T/config.json'"
check "history and diff_ids agree" \
	jq -e '([.history[] | select(.empty_layer != true)] | length) == (.rootfs.diff_ids | length)' "$T/config.json"
check "exposed ports" jq -e '.config.ExposedPorts | has("8000/tcp") and has("8001/tcp")' "$T/config.json"
mkdir -p "$T/oci"
tar -C "$T/oci" -xf "$T/img.tar"
check "umoci unpacks" umoci unpack --image "$T/oci:v1" "$T/bundle"
R=$T/bundle/rootfs
check "COPY --from builder" sh -c "[ \"\$(cat '$R/usr/local/bin/app')\" = \"\$(printf 'source\nhello')\" ]"
check "COPY --from other" sh -c "[ \"\$(cat '$R/other.txt')\" = other ]"
check "ONBUILD trigger ran in child" sh -c "[ \"\$(cat '$R/trigger.txt')\" = triggered ] && [ \"\$(cat '$R/child.txt')\" = child ]"
diag "$T/config.json"
done_testing
