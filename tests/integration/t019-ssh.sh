#!/bin/sh
# RUN --mount=type=ssh with `kiln build --ssh`: a step reaches the client's
# ssh-agent through a socket at the mount's target (SSH_AUTH_SOCK points at
# the first one), lists its keys and gets a signature, but cannot change
# it. An optional mount the client does not forward is skipped, a required
# one fails with BuildKit's words, and key files are refused. Neither the
# agent's socket path nor any key material reaches the image or the state.
. "$(dirname "$0")/lib.sh"
plan 23
need_fixture
ctx=$T/ctx
mkdir -p "$ctx"
COMMENT=kiln-ssh-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
ssh-keygen -q -t ed25519 -N '' -C "$COMMENT" -f "$T/key" >"$T/keygen.log" 2>&1 || { diag "$T/keygen.log"; exit 1; }
# the agent in the foreground, so that its PID is the one recorded
spawn "$T/agent.log" ssh-agent -D -a "$T/agent.sock"
wait_for 10 test -S "$T/agent.sock" || { diag "$T/agent.log"; exit 1; }
export SSH_AUTH_SOCK=$T/agent.sock
ssh-add "$T/key" >"$T/add.log" 2>&1 || { diag "$T/add.log"; exit 1; }

# A static agent client (the base image has no ssh): lists the identities
# of the agent at $SSH_AUTH_SOCK (or the path given), has it sign with the
# first, and with "remove" asks it to drop every key. "many" opens 40
# connections at once and counts those answered; "big" sends a request
# over the 256 KiB bound.
cat > "$T/probe.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static unsigned char buf[1 << 18];

static int io(int fd, int out, unsigned char *p, size_t n)
{
	while (n) {
		ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : read(fd, p, n);
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t) k;
	}
	return 0;
}

static unsigned get32(const unsigned char *p)
{
	return (unsigned) p[0] << 24 | (unsigned) p[1] << 16 | (unsigned) p[2] << 8 | p[3];
}

static void put32(unsigned char *p, unsigned v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* one request body out, the answer's body into buf: its length or -1 */
static long rpc(int fd, const unsigned char *body, unsigned len)
{
	unsigned char h[4];

	put32(h, len);
	if (io(fd, 1, h, 4) || io(fd, 1, (unsigned char *) body, len) || io(fd, 0, h, 4))
		return -1;
	len = get32(h);
	if (len > sizeof(buf) || io(fd, 0, buf, len))
		return -1;
	return len;
}

int main(int argc, char **argv)
{
	const char *path = argc > 2 ? argv[2] : getenv("SSH_AUTH_SOCK");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	unsigned char req[4096], key[2048];
	unsigned keylen = 0, n, off;
	long len;
	int fd;

	if (!path) {
		printf("probe: no SSH_AUTH_SOCK\n");
		return 2;
	}
	strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
	if (argc > 1 && strcmp(argv[1], "many") == 0) {
		int fds[40], ok = 0;

		for (int i = 0; i < 40; i++) {
			fds[i] = socket(AF_UNIX, SOCK_STREAM, 0);
			if (connect(fds[i], (struct sockaddr *) &sa, sizeof(sa)) < 0)
				fds[i] = -1;
		}
		req[0] = 11;
		for (int i = 0; i < 40; i++)
			ok += fds[i] >= 0 && rpc(fds[i], req, 1) >= 5 && buf[0] == 12;
		printf("probe: %d of 40 connections answered\n", ok);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "big") == 0) {
		unsigned char h[4];

		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		put32(h, (256 << 10) + 1);
		if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || io(fd, 1, h, 4))
			return 3;
		printf("probe: oversized request %s\n", read(fd, h, 1) == 0 ? "closed" : "answered");
		return 0;
	}
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
		printf("probe: cannot connect to %s\n", path);
		return 3;
	}
	req[0] = 11;                    /* SSH_AGENTC_REQUEST_IDENTITIES */
	len = rpc(fd, req, 1);
	if (len < 5 || buf[0] != 12) {
		printf("probe: bad identities answer\n");
		return 4;
	}
	n = get32(buf + 1);
	printf("probe: identities %u\n", n);
	off = 5;
	for (unsigned i = 0; i < n; i++) {
		unsigned bl = get32(buf + off), cl;

		if (i == 0 && bl <= sizeof(key)) {
			memcpy(key, buf + off + 4, bl);
			keylen = bl;
		}
		off += 4 + bl;
		cl = get32(buf + off);
		printf("probe: comment %.*s\n", (int) cl, buf + off + 4);
		off += 4 + cl;
	}
	if (keylen) {
		req[0] = 13;            /* SSH_AGENTC_SIGN_REQUEST: key, data, flags */
		put32(req + 1, keylen);
		memcpy(req + 5, key, keylen);
		put32(req + 5 + keylen, 5);
		memcpy(req + 9 + keylen, "hello", 5);
		put32(req + 14 + keylen, 0);
		len = rpc(fd, req, 18 + keylen);
		printf("probe: sign answer %d\n", len > 0 ? buf[0] : -1);
	}
	if (argc > 1 && strcmp(argv[1], "remove") == 0) {
		req[0] = 19;            /* SSH_AGENTC_REMOVE_ALL_IDENTITIES */
		len = rpc(fd, req, 1);
		printf("probe: remove-all answer %d\n", len > 0 ? buf[0] : -1);
	}
	return 0;
}
EOF
gcc -static -O2 -o "$ctx/probe" "$T/probe.c" >"$T/cc.log" 2>&1 || { diag "$T/cc.log"; exit 1; }

build() {
	"$KILN" build --progress plain --build-context base=oci-layout://"$BASE" "$@"
}

cat > "$ctx/Dockerfile" <<'DF'
FROM base
COPY probe /probe
RUN --mount=type=ssh sh -c 'echo "first sock=$SSH_AUTH_SOCK"; /probe remove'
RUN --mount=type=ssh,id=other,target=/tmp/agent.sock,mode=0644,uid=1,gid=2 sh -c 'ls -ln /tmp/agent.sock > /other.ls; echo "other sock=$SSH_AUTH_SOCK"; /probe'
RUN --mount=type=ssh,id=absent sh -c 'test -S /run/buildkit/ssh_agent.0 && echo present > /absent || echo skipped > /absent'
RUN --mount=type=ssh sh -c '/probe many; /probe big'
ARG MARK
RUN echo "$MARK" | tr a-f A-F > /mark
DF
# a control for the searches below: not a secret, written into a layer
MARK=kiln-t019-mark-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
MARK_UP=$(echo "$MARK" | tr a-f A-F)
build --ssh default --ssh other="$T/agent.sock" --build-arg MARK="$MARK" \
	-o type=tar,dest="$T/out.tar" "$ctx" >"$T/progress.log" 2>&1
check "a build with two forwarded agents succeeds" sh -c "[ -s '$T/out.tar' ] || { cat '$T/progress.log'; false; }"
check "the step lists the agent's key (its comment in the output)" \
	sh -c "[ \$(grep -c 'probe: comment $COMMENT' '$T/progress.log') = 2 ]"
check "SSH_AUTH_SOCK is the default target, /run/buildkit/ssh_agent.0" \
	grep -q 'first sock=/run/buildkit/ssh_agent.0$' "$T/progress.log"
check "the agent signs for the step (SSH_AGENT_SIGN_RESPONSE)" grep -q 'probe: sign answer 14' "$T/progress.log"
check "the step cannot remove keys (SSH_AGENT_FAILURE)" grep -q 'probe: remove-all answer 5' "$T/progress.log"
check "the agent still holds the key afterwards" sh -c "ssh-add -l | grep -q '$COMMENT'"
check "a custom id and target: SSH_AUTH_SOCK follows the target" \
	grep -q 'other sock=/tmp/agent.sock$' "$T/progress.log"
mkdir -p "$T/r"
tar -C "$T/r" -xf "$T/out.tar"
check "at most 32 connections per step: the others are closed at once" \
	grep -q 'probe: 32 of 40 connections answered' "$T/progress.log"
check "a request over 256 KiB closes the connection" grep -q 'probe: oversized request closed' "$T/progress.log"
check "mode, uid and gid apply to the socket" sh -c "grep -Eq '^srw-r--r--[ 0-9]+ 1 +2 ' '$T/r/other.ls'"
check "an optional mount of an id the client does not forward is skipped" \
	sh -c "[ \"\$(cat '$T/r/absent')\" = skipped ]"

# the socket path and key material, nowhere in the image or the state
KEYLINE=$(sed -n 2p "$T/key")
PUBKEY=$(cut -d' ' -f2 "$T/key.pub")
check "the probe is a sound control: the key lines are non-trivial" \
	sh -c "[ ${#KEYLINE} -gt 40 ] && [ ${#PUBKEY} -gt 40 ]"
check "no socket path or key material in the image" \
	sh -c "! grep -a -r -F -e '$T/agent.sock' -e '$KEYLINE' -e '$PUBKEY' '$T/out.tar' '$T/r'"
# every file under the builder's config and state (logs, blobs, layers),
# as is or decompressed
search() {
	set -- $(for p in "$@"; do printf -- '-e %s ' "$p"; done)
	grep -a -r -l -F "$@" "$KILN_CONFIG" 2>/dev/null
	find "$KILN_CONFIG" -type f | while read -r f; do
		for dec in "gzip -dc" "zstd -dcq"; do
			if $dec < "$f" 2>/dev/null | grep -a -q -F "$@"; then echo "$f ($dec)"; fi
		done
	done
}
search "$MARK_UP" > "$T/control"
check "the search finds a value a RUN wrote, in a compressed blob too" \
	sh -c "grep -q 'gzip -dc' '$T/control' && grep -qv 'gzip -dc' '$T/control'"
search "$T/agent.sock" "$KEYLINE" "$PUBKEY" > "$T/hits"
check "no socket path or key material under the config and state dirs" sh -c "! grep . '$T/hits'"
check "no agent socket is left in the state dir" sh -c "! find '$KILN_CONFIG' -name 'ssh-*.sock' | grep ."

# without --ssh: an optional mount is skipped (SSH_AUTH_SOCK is set in the
# step all the same, as BuildKit does), a required one fails
printf 'FROM base\nRUN --mount=type=ssh sh -c '"'"'test -S "$SSH_AUTH_SOCK" && echo mounted || echo "no socket at $SSH_AUTH_SOCK"'"'"'\n' > "$ctx/Dockerfile"
build -o type=tar,dest="$T/n.tar" "$ctx" >"$T/none.log" 2>&1
check "without --ssh, an optional ssh mount runs the step without a socket" \
	sh -c "[ -s '$T/n.tar' ] && grep -q 'no socket at /run/buildkit/ssh_agent.0' '$T/none.log' || { cat '$T/none.log'; false; }"
printf 'FROM base\nRUN --mount=type=ssh,required=true true\n' > "$ctx/Dockerfile"
build -o type=tar,dest="$T/x.tar" "$ctx" >"$T/req.log" 2>&1
check "without --ssh, a required ssh mount fails the build" sh -c "! [ -s '$T/x.tar' ] && grep -q ERROR '$T/req.log'"
check "and says that no key was forwarded" grep -q 'no SSH key "default" forwarded from the client' "$T/req.log"
printf 'FROM base\nRUN --mount=type=ssh,id=gh,required true\n' > "$ctx/Dockerfile"
build --ssh default -o type=tar,dest="$T/y.tar" "$ctx" >"$T/req2.log" 2>&1
check "a required id the client does not forward fails with its id" grep -q 'unset ssh forward key gh' "$T/req2.log"

# flags
build --ssh default="$T/key" -o type=tar,dest="$T/z.tar" "$ctx" >"$T/keyfile.log" 2>&1
check "a key file is refused: not supported yet, load it into ssh-agent" \
	sh -c "grep -q 'key files are not supported yet' '$T/keyfile.log' && grep -q 'ssh-add' '$T/keyfile.log'"
env -u SSH_AUTH_SOCK "$KILN" build --ssh default -o type=tar,dest="$T/z.tar" "$ctx" >"$T/nosock.log" 2>&1
check "--ssh default without SSH_AUTH_SOCK is an error" \
	grep -q 'invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set' "$T/nosock.log"
"$KILN" build --help >"$T/help.txt" 2>&1
check "kiln build --help describes --ssh" \
	sh -c "grep -q -- '--ssh default|ID\[=SOCKET\]' '$T/help.txt' && grep -q 'key' '$T/help.txt'"
done_testing
