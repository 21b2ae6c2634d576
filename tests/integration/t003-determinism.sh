#!/bin/sh
# (c) With SOURCE_DATE_EPOCH set and rewrite-timestamp=true (BuildKit's
# exporter option that clamps file times inside the build's layers; the
# RUN below writes files "now"), the same Dockerfile built twice from an
# empty state, and on two different workers, gives identical layer, config
# and manifest digests.
. "$(dirname "$0")/lib.sh"
plan 6
need_fixture

ctx=$T/ctx
mkdir -p "$ctx/d"
echo one > "$ctx/d/one"
echo two > "$ctx/two"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
WORKDIR /app
COPY . /app/
RUN echo generated > /app/gen && mkdir -p /var/x && touch /var/x/y && rm -f /etc/group
ENV A=1
CMD ["sh"]
DF
export SOURCE_DATE_EPOCH=1700000000
build() { # NAME: a fresh embedded default in its own config dir = a new worker, empty state
	KILN_CONFIG=$T/cfg-$1 "$KILN" build --progress quiet --build-context base=oci-layout://"$BASE" \
		-o type=oci,dest="$T/$1.tar",rewrite-timestamp=true --metadata-file "$T/$1.json" "$ctx"
}
check "first build from an empty state" build a
check "second build from another empty state (another worker)" build b
check "manifest digests are identical" sh -c "[ \"\$(jq -r '.\"containerimage.digest\"' '$T/a.json')\" = \"\$(jq -r '.\"containerimage.digest\"' '$T/b.json')\" ]"
check "config digests are identical" sh -c "[ \"\$(jq -r '.\"containerimage.config.digest\"' '$T/a.json')\" = \"\$(jq -r '.\"containerimage.config.digest\"' '$T/b.json')\" ]"
layers() { mkdir -p "$T/x$1" && tar -C "$T/x$1" -xf "$T/$1.tar" && ls "$T/x$1/blobs/sha256" | sort; }
layers a > "$T/la"; layers b > "$T/lb"
check "every blob (layers included) is identical" cmp "$T/la" "$T/lb"
check "the output tars are byte-identical" cmp "$T/a.tar" "$T/b.tar"
done_testing
