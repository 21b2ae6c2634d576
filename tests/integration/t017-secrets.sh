#!/bin/sh
# RUN --mount=type=secret: values from `kiln build --secret` (a file and an
# environment variable) reach the step as a file on a tmpfs and in an env
# variable, and nowhere else: not in the image, the progress output, or
# anything under the state directory (logs, blobs, decompressed layers).
# A required secret the client lacks fails with its id; an optional one is
# skipped.
. "$(dirname "$0")/lib.sh"
plan 12
need_fixture
ctx=$T/ctx
mkdir -p "$ctx"
# distinctive values, so a hit anywhere cannot be a coincidence
S1=kiln-t017-file-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
S2=kiln-t017-env-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# a control: not a secret, written into a layer, which the search must find
MARK=kiln-t017-mark-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
MARK_UP=$(echo "$MARK" | tr a-f A-F)
printf '%s' "$S1" > "$T/secret-src"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len && ls -l /run/secrets/tok > /mode
RUN --mount=type=secret,id=tok2,env=TOK2 sh -c 'echo ${#TOK2} > /len2'
RUN --mount=type=secret,id=tok,target=/etc/tok,mode=0440,uid=1,gid=2 ls -ln /etc/tok > /mode2
RUN --mount=type=secret,id=optional sh -c 'test ! -e /run/secrets/optional && echo skipped > /opt'
ARG MARK
RUN echo "$MARK" | tr a-f A-F > /mark
DF
TOK2_SRC=$S2 "$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
	--secret id=tok,src="$T/secret-src" --secret id=tok2,env=TOK2_SRC --build-arg MARK="$MARK" \
	-o type=tar,dest="$T/out.tar" "$ctx" >"$T/progress.log" 2>&1
check "build with a file and an env secret succeeds" sh -c "[ -s '$T/out.tar' ] || { cat '$T/progress.log'; false; }"
mkdir -p "$T/r"
tar -C "$T/r" -xf "$T/out.tar"
check "the file secret is mounted at /run/secrets/ID" sh -c "[ \"\$(tr -d ' ' < '$T/r/len')\" = ${#S1} ]"
check "the env secret is in the step's variable" sh -c "[ \"\$(cat '$T/r/len2')\" = ${#S2} ]"
check "a secret file is read-only, 0400 root by default" sh -c "grep -q '^-r-------' '$T/r/mode'"
check "mode, uid and gid apply to the secret file" sh -c "grep -Eq '^-r--r-----[ 0-9]+ 1 +2 ' '$T/r/mode2'"
check "an optional secret the client lacks is skipped" sh -c "[ \"\$(cat '$T/r/opt')\" = skipped ]"
check "no secret in the image" sh -c "! grep -a -r -e '$S1' -e '$S2' '$T/out.tar' '$T/r'"
check "no secret in the progress output" sh -c "! grep -a -q -e '$S1' -e '$S2' '$T/progress.log'"
# search PATTERN...: every file under the builder's config and state (logs,
# CAS blobs, layer dirs, cache mounts) that holds one, as is or decompressed
# (gzip and zstd blobs).
search() {
	set -- $(for p in "$@"; do printf -- '-e %s ' "$p"; done)
	grep -a -r -l "$@" "$KILN_CONFIG" 2>/dev/null
	find "$KILN_CONFIG" -type f | while read -r f; do
		for dec in "gzip -dc" "zstd -dcq"; do
			if $dec < "$f" 2>/dev/null | grep -a -q "$@"; then echo "$f ($dec)"; fi
		done
	done
}
search "$MARK_UP" > "$T/control"
check "the search finds a value a RUN wrote, in a compressed blob too" \
	sh -c "grep -q 'gzip -dc' '$T/control' && grep -qv 'gzip -dc' '$T/control'"
search "$S1" "$S2" > "$T/hits"
check "no secret anywhere under the config and state dirs, decompressed or not" \
	sh -c "! grep . '$T/hits'"
printf 'FROM base\nRUN --mount=type=secret,id=absent_id,required cat /run/secrets/absent_id\n' > "$ctx/Dockerfile"
"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" \
	--secret id=tok,src="$T/secret-src" -o type=tar,dest="$T/x.tar" "$ctx" >"$T/err.out" 2>&1
check "a missing required secret fails the build" sh -c "! [ -s '$T/x.tar' ] && grep -q 'ERROR' '$T/err.out'"
check "the error names the missing secret's id" grep -q 'secret absent_id: not found' "$T/err.out"
done_testing
