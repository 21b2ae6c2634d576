/* `kiln build --ssh` sources and the client's end of the agent relay (see
 * ssh.h). Requests are exchanged with the agent synchronously, one message
 * each way, with a timeout, so a stuck agent fails a connection instead of
 * the client. Nothing here prints or sends a socket path or agent bytes;
 * errors that name a path are for the caller to show locally. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "proto.h"
#include "ssh.h"
#include "util.h"

#define AGENT_TIMEOUT_MS (120 * 1000)   /* one message to or from the agent */

/* SSH agent protocol (draft-miller-ssh-agent): what a build may ask. */
#define SSH_AGENT_FAILURE 5
#define SSH_AGENTC_REQUEST_IDENTITIES 11
#define SSH_AGENTC_SIGN_REQUEST 13

struct agent_src {
	char *id;
	char *path;                     /* the agent's socket */
};

struct agent_conn {
	uint64_t step, conn;
	int fd;                         /* -1: free slot */
};

struct ssh_agents {
	struct agent_src *srcs;
	size_t n_srcs;
	struct agent_conn conns[SSH_AGENT_CONNS_MAX];
};

static void
src_release(struct agent_src *s)
{
	free(s->id);
	free(s->path);
}

/* buildx's toAgentSource for one id: exactly one socket. */
static int
check_paths(const char *id, char *paths, char **ret_path, struct kiln_err *err)
{
	char *save = NULL, *sock = NULL;

	for (char *p = strtok_r(paths, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		struct stat st;

		if (sock)
			return kiln_err_set(err, EINVAL, "only single socket allowed");
		if (stat(p, &st) < 0)
			return kiln_err_errno(err, errno, "stat %s", p);
		if (!S_ISSOCK(st.st_mode))
			return kiln_err_set(err, ENOTSUP,
					    "--ssh %s: %s is not a socket; ssh key files are not supported yet: "
					    "load the key into ssh-agent (ssh-add %s) and pass --ssh %s "
					    "(SSH_AUTH_SOCK) or --ssh %s=AGENT_SOCKET", id, p, p, id, id);
		sock = p;
	}
	if (!sock)
		return kiln_err_set(err, EINVAL, "invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set");
	*ret_path = strdup(sock);
	return *ret_path ? 0 : kiln_err_set(err, ENOMEM, "out of memory");
}

int
ssh_agents_new(const char *const *specs, size_t n, struct ssh_agents **ret, struct kiln_err *err)
{
	struct ssh_agents *a;
	int r = 0;

	if (n > SSH_AGENTS_MAX)
		return kiln_err_set(err, E2BIG, "more than %d --ssh values", SSH_AGENTS_MAX);
	a = calloc(1, sizeof(*a));
	if (!a || !(a->srcs = calloc(n + 1, sizeof(*a->srcs)))) {
		free(a);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < SSH_AGENT_CONNS_MAX; i++)
		a->conns[i].fd = -1;
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *eq = strchr(specs[i], '=');
		struct agent_src *s = &a->srcs[a->n_srcs];
		_cleanup_free_ char *paths = NULL;

		s->id = eq ? strndup(specs[i], (size_t) (eq - specs[i])) : strdup(specs[i]);
		paths = strdup(eq && eq[1] ? eq + 1 : getenv("SSH_AUTH_SOCK") ? getenv("SSH_AUTH_SOCK") : "");
		if (!s->id || !paths) {
			src_release(s);
			r = kiln_err_set(err, ENOMEM, "out of memory");
			break;
		}
		if (!*s->id) {
			free(s->id);
			s->id = strdup("default");
		}
		a->n_srcs++;
		for (size_t k = 0; s->id && k + 1 < a->n_srcs; k++)
			if (strcmp(a->srcs[k].id, s->id) == 0)
				r = kiln_err_set(err, EINVAL, "invalid duplicate ID %s", s->id);
		if (!s->id)
			r = kiln_err_set(err, ENOMEM, "out of memory");
		if (r == 0)
			r = check_paths(s->id, paths, &s->path, err);
	}
	if (r < 0) {
		ssh_agents_free(a);
		return r;
	}
	*ret = a;
	return 0;
}

void
ssh_agents_free(struct ssh_agents *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < SSH_AGENT_CONNS_MAX; i++)
		if (a->conns[i].fd >= 0)
			close(a->conns[i].fd);
	for (size_t i = 0; i < a->n_srcs; i++)
		src_release(&a->srcs[i]);
	free(a->srcs);
	free(a);
}

size_t
ssh_agents_count(const struct ssh_agents *a)
{
	return a ? a->n_srcs : 0;
}

const char *
ssh_agents_id(const struct ssh_agents *a, size_t i)
{
	return i < a->n_srcs ? a->srcs[i].id : NULL;
}

static void
conn_drop(struct agent_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

void
ssh_agents_close(struct ssh_agents *a, uint64_t step, uint64_t conn, bool all)
{
	for (size_t i = 0; a && i < SSH_AGENT_CONNS_MAX; i++)
		if (a->conns[i].fd >= 0 && a->conns[i].step == step && (all || a->conns[i].conn == conn))
			conn_drop(&a->conns[i]);
}

static int
agent_connect(const struct agent_src *s, int *ret_fd, struct kiln_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(s->path) >= sizeof(sa.sun_path))
		return kiln_err_set(err, ENAMETOOLONG, "ssh %s: socket path %s is too long", s->id, s->path);
	memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kiln_err_errno(err, errno, "ssh %s: socket", s->id);
	/* a local agent accepts at once or refuses; the exchanges that follow
	 * have a deadline */
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		int e = errno;

		close(fd);
		return kiln_err_errno(err, e, "ssh %s: failed to connect to %s", s->id, s->path);
	}
	*ret_fd = fd;
	return 0;
}

/* Move len bytes to or from fd (non-blocking) within the deadline. */
static int
io_all(int fd, bool out, void *buf, size_t len, int64_t deadline)
{
	size_t done = 0;

	while (done < len) {
		ssize_t k = out ? send(fd, (char *) buf + done, len - done, MSG_NOSIGNAL)
				: recv(fd, (char *) buf + done, len - done, 0);

		if (k > 0) {
			done += (size_t) k;
			continue;
		}
		if (k == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		{
			struct pollfd p = { .fd = fd, .events = out ? POLLOUT : POLLIN };
			int64_t left = deadline - kiln_now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			if (poll(&p, 1, (int) left) < 0 && errno != EINTR)
				return -errno;
		}
	}
	return 0;
}

/* One message to the agent and its answer. */
static int
exchange(int fd, const void *req, size_t len, void **ret_resp, size_t *ret_len)
{
	int64_t deadline = kiln_now_ms() + AGENT_TIMEOUT_MS;
	unsigned char hdr[4] = { len >> 24, len >> 16, len >> 8, len };
	_cleanup_free_ unsigned char *resp = NULL;
	uint32_t n;
	int r;

	r = io_all(fd, true, hdr, 4, deadline);
	if (r == 0)
		r = io_all(fd, true, (void *) req, len, deadline);
	if (r == 0)
		r = io_all(fd, false, hdr, 4, deadline);
	if (r < 0)
		return r;
	n = (uint32_t) hdr[0] << 24 | (uint32_t) hdr[1] << 16 | (uint32_t) hdr[2] << 8 | hdr[3];
	if (n == 0 || n > PROTO_SSH_AGENT_MAX)
		return -EBADMSG;
	resp = malloc(n);
	if (!resp)
		return -ENOMEM;
	r = io_all(fd, false, resp, n, deadline);
	if (r < 0)
		return r;
	*ret_resp = STEAL_PTR(resp);
	*ret_len = n;
	return 0;
}

int
ssh_agents_request(struct ssh_agents *a, uint64_t step, uint64_t conn, const char *id,
		   const void *req, size_t len, void **ret_resp, size_t *ret_len, struct kiln_err *err)
{
	const unsigned char *b = req;
	struct agent_src *s = NULL;
	struct agent_conn *c = NULL, *free_slot = NULL;
	int r;

	if (len == 0 || len > PROTO_SSH_AGENT_MAX)
		return kiln_err_set(err, EBADMSG, "ssh %s: an agent request of %zu bytes", id, len);
	if (b[0] != SSH_AGENTC_REQUEST_IDENTITIES && b[0] != SSH_AGENTC_SIGN_REQUEST) {
		unsigned char *fail = malloc(1);

		if (!fail)
			return kiln_err_set(err, ENOMEM, "out of memory");
		fail[0] = SSH_AGENT_FAILURE;
		*ret_resp = fail;
		*ret_len = 1;
		return 0;
	}
	for (size_t i = 0; i < a->n_srcs && !s; i++)
		if (strcmp(a->srcs[i].id, id) == 0)
			s = &a->srcs[i];
	if (!s)
		return kiln_err_set(err, ENOENT, "unset ssh forward key %s", id);
	for (size_t i = 0; i < SSH_AGENT_CONNS_MAX && !c; i++) {
		if (a->conns[i].fd >= 0 && a->conns[i].step == step && a->conns[i].conn == conn)
			c = &a->conns[i];
		else if (a->conns[i].fd < 0 && !free_slot)
			free_slot = &a->conns[i];
	}
	if (!c) {
		if (!free_slot)
			return kiln_err_set(err, EMFILE, "ssh %s: more than %d agent connections at once", id,
					    SSH_AGENT_CONNS_MAX);
		r = agent_connect(s, &free_slot->fd, err);
		if (r < 0)
			return r;
		c = free_slot;
		c->step = step;
		c->conn = conn;
	}
	r = exchange(c->fd, req, len, ret_resp, ret_len);
	if (r < 0) {
		conn_drop(c);
		if (r == -EBADMSG)
			return kiln_err_set(err, EBADMSG, "ssh %s: the agent at %s sent a bad answer", id, s->path);
		return kiln_err_errno(err, -r, "ssh %s: agent at %s", id, s->path);
	}
	return 0;
}
