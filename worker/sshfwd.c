/* SSH agent relay for one RUN step (see sshfwd.h). The thread owns the
 * connections and, once started, the DEALER; the job thread that made the
 * relay only starts and frees it. Every connection holds at most one
 * message in memory (PROTO_SSH_AGENT_MAX + 4 bytes) and there are at most
 * SSHFWD_CONNS_MAX of them: a connection over the limit is closed at once.
 * A connection waits for its answer before its next request is read, so
 * requests a client pipelines stay in the socket until then; an answer
 * that takes longer than ANSWER_TIMEOUT_MS (the client gives up on its
 * agent before that) closes the connection, so a lost client cannot hang
 * the step. */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "proto.h"
#include "sshfwd.h"
#include "util.h"

#define ANSWER_TIMEOUT_MS (150 * 1000)

enum conn_state { C_FREE, C_READ, C_WAIT, C_WRITE };

struct fwd_conn {
	enum conn_state state;
	int fd;
	uint64_t id;
	size_t sock;                    /* the listening socket it came from */
	unsigned char hdr[4];
	unsigned char *buf;             /* C_READ: the body; C_WRITE: the framed answer */
	size_t len, got;                /* C_READ: len 0 until the header is in */
	bool asked;                     /* a request went to the client */
	int64_t deadline;               /* C_WAIT: when to give up on the answer */
};

struct fwd_sock {
	char *id;
	int fd;
};

struct sshfwd {
	char build[64];
	uint64_t step;
	char route[SSHFWD_ROUTE_SIZE];
	struct fwd_sock socks[SSHFWD_SOCKS_MAX];
	size_t n_socks;
	zsock_t *up;                    /* to the main thread; the actor's once started */
	zactor_t *actor;
	/* the actor's */
	struct fwd_conn conns[SSHFWD_CONNS_MAX];
	uint64_t next_conn;
	bool asked;
};

void
sshfwd_route(const char *build, uint64_t step, char ret[SSHFWD_ROUTE_SIZE])
{
	snprintf(ret, SSHFWD_ROUTE_SIZE, "ssh/%s/%" PRIu64, build, step);
}

int
sshfwd_new(const char *endpoint, const char *build, uint64_t step, struct sshfwd **ret,
	   struct kiln_err *err)
{
	struct sshfwd *f;

	if (!endpoint)
		return kiln_err_set(err, ENOTSUP, "this node cannot forward ssh agents");
	if (strlen(build) >= sizeof(f->build))
		return kiln_err_set(err, EINVAL, "build id too long");
	f = calloc(1, sizeof(*f));
	if (!f)
		return kiln_err_set(err, ENOMEM, "out of memory");
	snprintf(f->build, sizeof(f->build), "%s", build);
	f->step = step;
	sshfwd_route(build, step, f->route);
	for (size_t i = 0; i < SSHFWD_CONNS_MAX; i++)
		f->conns[i].fd = -1;
	f->up = zsock_new(ZMQ_DEALER);
	if (!f->up) {
		free(f);
		return kiln_err_set(err, ENOMEM, "ssh relay: cannot create a socket");
	}
	zsock_set_identity(f->up, f->route);
	/* the last ssh.close must reach the main thread after the socket closes */
	zsock_set_linger(f->up, 1000);
	if (zsock_connect(f->up, "%s", endpoint) < 0) {
		zsock_destroy(&f->up);
		free(f);
		return kiln_err_set(err, EIO, "ssh relay: cannot connect to %s", endpoint);
	}
	*ret = f;
	return 0;
}

int
sshfwd_listen(struct sshfwd *f, const char *id, const char *path, uint32_t mode, uint32_t uid,
	      uint32_t gid, struct kiln_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *slash = strrchr(path, '/');
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int dfd = -1;
	_cleanup_close_ int fd = -1;
	int n;

	if (f->actor)
		return kiln_err_set(err, EBUSY, "ssh relay already started");
	if (f->n_socks == SSHFWD_SOCKS_MAX)
		return kiln_err_set(err, E2BIG, "more than %d ssh mounts in one step", SSHFWD_SOCKS_MAX);
	if (!slash || !slash[1])
		return kiln_err_set(err, EINVAL, "ssh socket path '%s'", path);
	dir = slash == path ? strdup("/") : strndup(path, (size_t) (slash - path));
	if (!dir)
		return kiln_err_set(err, ENOMEM, "out of memory");
	dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_err_errno(err, errno, "open '%s'", dir);
	/* the scratch dir's path can exceed sun_path; its fd's cannot */
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dfd, slash + 1);
	if (n < 0 || (size_t) n >= sizeof(sa.sun_path))
		return kiln_err_set(err, ENAMETOOLONG, "ssh socket name '%s'", slash + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return kiln_err_errno(err, errno, "ssh socket");
	if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, SSHFWD_CONNS_MAX) < 0)
		return kiln_err_errno(err, errno, "listen on '%s'", path);
	if (fchownat(dfd, slash + 1, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    fchmodat(dfd, slash + 1, mode & 07777, 0) < 0)
		return kiln_err_errno(err, errno, "ssh socket '%s'", path);
	f->socks[f->n_socks].id = strdup(id);
	if (!f->socks[f->n_socks].id)
		return kiln_err_set(err, ENOMEM, "out of memory");
	f->socks[f->n_socks++].fd = STEAL_FD(fd);
	return 0;
}

/* ---- the thread ---- */

static void
send_close(struct sshfwd *f, const struct fwd_conn *c)
{
	struct proto_writer w;

	proto_writer_init(&w, "ssh.close", 0);
	proto_w_str(&w, "build", f->build);
	proto_w_u64(&w, "step", f->step);
	if (c)
		proto_w_u64(&w, "conn", c->id);
	(void) proto_send(f->up, NULL, &w);
	proto_writer_release(&w);
}

static void
conn_close(struct sshfwd *f, struct fwd_conn *c)
{
	close(c->fd);
	free(c->buf);
	if (c->asked)
		send_close(f, c);
	*c = (struct fwd_conn) { .state = C_FREE, .fd = -1 };
}

static void
on_accept(struct sshfwd *f, size_t sock)
{
	struct fwd_conn *c = NULL;
	int fd = accept4(f->socks[sock].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (size_t i = 0; i < SSHFWD_CONNS_MAX && !c; i++)
		if (f->conns[i].state == C_FREE)
			c = &f->conns[i];
	if (!c) {
		/* the step sees the agent hang up rather than wait forever */
		close(fd);
		return;
	}
	*c = (struct fwd_conn) { .state = C_READ, .fd = fd, .id = ++f->next_conn, .sock = sock };
}

static void
send_request(struct sshfwd *f, struct fwd_conn *c)
{
	struct proto_writer w;
	int r;

	proto_writer_init(&w, "ssh.req", 0);
	proto_w_str(&w, "build", f->build);
	proto_w_u64(&w, "step", f->step);
	proto_w_u64(&w, "conn", c->id);
	proto_w_str(&w, "ssh", f->socks[c->sock].id);
	proto_w_bin(&w, "data", c->buf, c->len);
	r = proto_send(f->up, NULL, &w);
	proto_writer_release(&w);
	free(c->buf);
	c->buf = NULL;
	c->asked = f->asked = true;
	c->state = C_WAIT;
	c->deadline = kiln_now_ms() + ANSWER_TIMEOUT_MS;
	if (r < 0)
		conn_close(f, c);
}

/* Read what is there of the current request; a whole one goes up. */
static void
on_readable(struct sshfwd *f, struct fwd_conn *c)
{
	ssize_t n;

	if (c->len == 0) {
		n = read(c->fd, c->hdr + c->got, 4 - c->got);
		if (n <= 0) {
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				conn_close(f, c);
			return;
		}
		c->got += (size_t) n;
		if (c->got < 4)
			return;
		c->len = (size_t) c->hdr[0] << 24 | (size_t) c->hdr[1] << 16 | (size_t) c->hdr[2] << 8 |
			 c->hdr[3];
		c->got = 0;
		/* as ssh-agent: a message over the bound ends the connection */
		if (c->len == 0 || c->len > PROTO_SSH_AGENT_MAX || !(c->buf = malloc(c->len))) {
			conn_close(f, c);
			return;
		}
		return;
	}
	n = read(c->fd, c->buf + c->got, c->len - c->got);
	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			conn_close(f, c);
		return;
	}
	c->got += (size_t) n;
	if (c->got == c->len)
		send_request(f, c);
}

static void
on_writable(struct sshfwd *f, struct fwd_conn *c)
{
	ssize_t n = send(c->fd, c->buf + c->got, c->len - c->got, MSG_NOSIGNAL);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_close(f, c);
		return;
	}
	c->got += (size_t) n;
	if (c->got < c->len)
		return;
	free(c->buf);
	c->buf = NULL;
	c->len = c->got = 0;
	c->state = C_READ;
}

/* ssh.resp {conn, data | fail} from the client, through the main thread. */
static void
on_answer(struct sshfwd *f)
{
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };
	struct fwd_conn *c = NULL;
	const void *data = NULL;
	uint64_t id;
	size_t len = 0;
	bool fail = false;

	if (proto_recv(f->up, NULL, &m, &err) < 0)
		return;
	if (strcmp(proto_msg_type(m), "ssh.resp") != 0 || proto_msg_u64(m, "conn", &id) < 0) {
		proto_msg_free(m);
		return;
	}
	for (size_t i = 0; i < SSHFWD_CONNS_MAX && !c; i++)
		if (f->conns[i].state == C_WAIT && f->conns[i].id == id)
			c = &f->conns[i];
	(void) proto_msg_bool(m, "fail", &fail);
	if (c && (fail || proto_msg_bin(m, "data", &data, &len) < 0 || len == 0 ||
		  len > PROTO_SSH_AGENT_MAX || !(c->buf = malloc(len + 4)))) {
		conn_close(f, c);
		c = NULL;
	}
	if (c) {
		c->buf[0] = (unsigned char) (len >> 24);
		c->buf[1] = (unsigned char) (len >> 16);
		c->buf[2] = (unsigned char) (len >> 8);
		c->buf[3] = (unsigned char) len;
		memcpy(c->buf + 4, data, len);
		c->len = len + 4;
		c->got = 0;
		c->state = C_WRITE;
	}
	proto_msg_free(m);
}

static void
fwd_actor(zsock_t *pipe, void *arg)
{
	struct sshfwd *f = arg;
	zmq_pollitem_t items[2 + SSHFWD_SOCKS_MAX + SSHFWD_CONNS_MAX];
	struct fwd_conn *item_conn[2 + SSHFWD_SOCKS_MAX + SSHFWD_CONNS_MAX];
	bool stop = false;

	zsock_signal(pipe, 0);
	while (!stop) {
		size_t n = 0, first_sock, first_conn;
		int64_t now = kiln_now_ms(), wait = -1;

		items[n++] = (zmq_pollitem_t) { .socket = zsock_resolve(pipe), .events = ZMQ_POLLIN };
		items[n++] = (zmq_pollitem_t) { .socket = zsock_resolve(f->up), .events = ZMQ_POLLIN };
		first_sock = n;
		for (size_t i = 0; i < f->n_socks; i++)
			items[n++] = (zmq_pollitem_t) { .fd = f->socks[i].fd, .events = ZMQ_POLLIN };
		first_conn = n;
		for (size_t i = 0; i < SSHFWD_CONNS_MAX; i++) {
			struct fwd_conn *c = &f->conns[i];

			if (c->state == C_FREE)
				continue;
			if (c->state == C_WAIT && c->deadline <= now) {
				conn_close(f, c);
				continue;
			}
			if (c->state == C_WAIT && (wait < 0 || c->deadline - now < wait))
				wait = c->deadline - now;
			/* while waiting, only a hangup (ZMQ_POLLERR) matters */
			items[n] = (zmq_pollitem_t) { .fd = c->fd, .events = c->state == C_READ ? ZMQ_POLLIN :
							       c->state == C_WRITE ? ZMQ_POLLOUT : 0 };
			item_conn[n++] = c;
		}
		if (zmq_poll(items, (int) n, (long) wait) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (items[0].revents & ZMQ_POLLIN) {
			char *cmd = zstr_recv(pipe);

			stop = !cmd || strcmp(cmd, "$TERM") == 0;
			zstr_free(&cmd);
		}
		if (stop)
			break;
		while (zsock_events(f->up) & ZMQ_POLLIN)
			on_answer(f);
		for (size_t i = first_conn; i < n; i++) {
			struct fwd_conn *c = item_conn[i];

			if (c->state == C_FREE)
				continue;
			if (items[i].revents & ZMQ_POLLIN)
				on_readable(f, c);
			else if (items[i].revents & ZMQ_POLLOUT)
				on_writable(f, c);
			else if (items[i].revents & ZMQ_POLLERR)
				conn_close(f, c);
		}
		for (size_t i = first_sock; i < first_conn; i++)
			if (items[i].revents & ZMQ_POLLIN)
				on_accept(f, i - first_sock);
	}
	for (size_t i = 0; i < SSHFWD_CONNS_MAX; i++) {
		struct fwd_conn *c = &f->conns[i];

		if (c->state != C_FREE) {
			c->asked = false;       /* one ssh.close for the whole step below */
			conn_close(f, c);
		}
	}
	if (f->asked)
		send_close(f, NULL);
	zsock_destroy(&f->up);
}

int
sshfwd_start(struct sshfwd *f, struct kiln_err *err)
{
	if (f->actor)
		return 0;
	f->actor = zactor_new(fwd_actor, f);
	if (!f->actor)
		return kiln_err_set(err, ENOMEM, "ssh relay: cannot start its thread");
	return 0;
}

void
sshfwd_free(struct sshfwd *f)
{
	if (!f)
		return;
	zactor_destroy(&f->actor);
	zsock_destroy(&f->up);          /* not started: still ours */
	for (size_t i = 0; i < f->n_socks; i++) {
		close(f->socks[i].fd);
		free(f->socks[i].id);
	}
	free(f);
}
