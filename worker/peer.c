/* Blobs between nodes, the serving side: the blob server every worker
 * runs for its peers (messages in peer.h), plus what the fetcher
 * (peer-fetch.c) shares with it.
 *
 * The server is a czmq actor: one thread owning one ROUTER, so it never
 * touches the worker's coordinator socket and neither waits on the other.
 * It sends each transfer through an xfer_tx from an fd positioned at the
 * requested offset, never more than one credit window of chunks ahead of
 * the fetcher, serves at most max transfers at once (the rest get EBUSY)
 * and drops a transfer whose fetcher stopped granting credit. It trusts
 * the blob store to hold only verified blobs; the fetcher verifies anyway.
 *
 * Not here: who may connect is decided by the socket (CURVE + zauth on
 * tcp://, file modes on ipc://), set up before the first client can come. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cas.h"
#include "cleanup.h"
#include "curve.h"
#include "digest.h"
#include "err.h"
#include "peer.h"
#include "peer-internal.h"
#include "proto.h"
#include "util.h"
#include "xfer.h"

#define PEER_SERVE_IDLE_MS  30000       /* a fetcher without credit for this long is gone */

bool
peer_is_tcp(const char *ep)
{
	return kiln_startswith(ep, "tcp://");
}

bool
peer_is_ipc(const char *ep)
{
	return kiln_startswith(ep, "ipc://") && ep[6];
}

bool
peer_pipe_term(zsock_t *pipe, char **ret_cmd, zmsg_t **ret_msg)
{
	zmsg_t *msg = zmsg_recv(pipe);
	char *cmd = msg ? zmsg_popstr(msg) : NULL;

	if (!cmd || strcmp(cmd, "$TERM") == 0) {
		free(cmd);
		zmsg_destroy(&msg);
		return true;
	}
	*ret_cmd = cmd;
	*ret_msg = msg;
	return false;
}

int
peer_load_keypair(const char *path, zcert_t **ret, struct kiln_err *err)
{
	zcert_t *cert;
	const byte *k;
	bool secret = false;

	if (!zsys_has_curve())
		return kiln_err_set(err, ENOTSUP, "libzmq was built without CURVE support");
	if (strlen(path) > CURVE_PATH_MAX)
		return kiln_err_set(err, ENAMETOOLONG, "key path '%s' longer than %d bytes", path,
				    CURVE_PATH_MAX);
	cert = zcert_load(path);
	if (!cert)
		return kiln_err_set(err, ENOENT, "cannot load key pair '%s' (and '%s_secret')", path, path);
	k = zcert_secret_key(cert);
	for (int i = 0; i < 32; i++)
		secret = secret || k[i];
	if (!secret) {
		zcert_destroy(&cert);
		return kiln_err_set(err, ENOENT, "no secret key in '%s_secret'", path);
	}
	*ret = cert;
	return 0;
}

/* ---- the blob server ------------------------------------------------ */

struct peer_server {
	struct cas *cas;
	char endpoint[PEER_ENDPOINT_MAX];       /* as asked, then as bound */
	char ipc_path[PEER_ENDPOINT_MAX];       /* "" on tcp:// */
	char key_txt[PEER_KEY_TXT];
	zcert_t *cert;                          /* tcp:// */
	unsigned max;
	zactor_t *auth;
	zactor_t *actor;
	struct kiln_err bind_err;               /* the actor's, read after its first signal */
};

struct serve_tx {
	zframe_t *rid;
	uint64_t stream;
	struct xfer_tx *tx;
	int64_t last_ms;                        /* start or last credit */
};

struct serve {
	struct peer_server *s;                  /* read-only in the actor */
	zsock_t *router;
	struct serve_tx *tx;
	unsigned n;
};

static void
serve_abort(struct serve *sv, zframe_t *rid, uint64_t id, uint64_t stream, const struct kiln_err *e)
{
	struct proto_writer pw;

	proto_writer_init(&pw, "xfer.abort", id);
	xfer_write_abort(&pw, stream, e);
	(void) proto_send(sv->router, rid, &pw);
	proto_writer_release(&pw);
}

static void
serve_drop(struct serve *sv, unsigned i)
{
	zframe_destroy(&sv->tx[i].rid);
	xfer_tx_free(sv->tx[i].tx);
	sv->tx[i] = sv->tx[--sv->n];
	memset(&sv->tx[sv->n], 0, sizeof(sv->tx[sv->n]));
}

static struct serve_tx *
serve_find(struct serve *sv, zframe_t *rid, uint64_t stream, unsigned *ret_i)
{
	for (unsigned i = 0; i < sv->n; i++)
		if (sv->tx[i].stream == stream && zframe_eq(sv->tx[i].rid, rid)) {
			*ret_i = i;
			return &sv->tx[i];
		}
	return NULL;
}

/* Send what the credit allows; drop the transfer once its eof chunk left. */
static void
serve_pump(struct serve *sv, unsigned i)
{
	struct serve_tx *t = &sv->tx[i];
	struct kiln_err err = { 0 };

	while (xfer_tx_ready(t->tx)) {
		struct proto_writer pw;
		int r;

		proto_writer_init(&pw, "xfer.data", t->stream);
		r = xfer_tx_next(t->tx, &pw, &err);
		if (r == 0)
			(void) proto_send(sv->router, t->rid, &pw);
		proto_writer_release(&pw);
		if (r < 0) {
			serve_abort(sv, t->rid, t->stream, t->stream, &err);
			serve_drop(sv, i);
			return;
		}
	}
	if (xfer_tx_done(t->tx))
		serve_drop(sv, i);
}

static int
serve_open(struct serve *sv, const struct digest *d, uint64_t offset, uint64_t *ret_size, int *ret_fd,
	   struct kiln_err *err)
{
	char ds[DIGEST_STR_SIZE], path[PATH_MAX];
	_cleanup_close_ int fd = -1;
	struct cas_info info;
	struct stat st;
	int r;

	digest_fmt(d, ds);
	r = cas_stat(sv->s->cas, d, &info, err);
	if (r == -ENOENT)
		return kiln_err_set(err, ENOENT, "blob %s is not on this node", ds);
	if (r < 0)
		return r;
	if (offset > info.size)
		return kiln_err_set(err, EINVAL, "offset %" PRIu64 " is beyond the end of blob %s (%" PRIu64
				    " bytes)", offset, ds, info.size);
	if (cas_path(sv->s->cas, d, path, sizeof(path)) < 0)
		return kiln_err_set(err, ENAMETOOLONG, "path of blob %s", ds);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? kiln_err_set(err, ENOENT, "blob %s is not on this node", ds)
				       : kiln_err_errno(err, errno, "open blob %s", ds);
	if (fstat(fd, &st) < 0 || (uint64_t) st.st_size != info.size)
		return kiln_err_set(err, EIO, "blob %s changed size while opened", ds);
	if (lseek(fd, (off_t) offset, SEEK_SET) < 0)
		return kiln_err_errno(err, errno, "seek blob %s", ds);
	*ret_size = info.size;
	*ret_fd = STEAL_FD(fd);
	return 0;
}

static void
serve_get(struct serve *sv, zframe_t *rid, const struct proto_msg *m)
{
	_cleanup_free_ char *ds = proto_msg_strdup(m, "digest");
	struct kiln_err err = { 0 };
	uint64_t id = proto_msg_id(m), stream = 0, offset = 0, size = 0;
	struct proto_writer pw;
	struct serve_tx *t;
	struct digest d;
	unsigned i;
	int fd = -1, r;

	if (proto_msg_u64(m, "stream", &stream) < 0 || !ds || digest_parse(ds, &d) < 0) {
		kiln_err_set(&err, KILN_EPROTO, "peer.get needs a stream and a digest");
		goto out_abort;
	}
	r = proto_msg_u64(m, "offset", &offset);
	if (r < 0 && r != -ENOENT) {
		kiln_err_set(&err, KILN_EPROTO, "peer.get: offset is not an unsigned integer");
		goto out_abort;
	}
	if (serve_find(sv, rid, stream, &i)) {
		kiln_err_set(&err, KILN_EPROTO, "peer.get: stream %" PRIu64 " is already in use", stream);
		goto out_abort;
	}
	if (sv->n == sv->s->max) {
		kiln_err_set(&err, EBUSY, "node is serving %u transfers already, retry later", sv->n);
		goto out_abort;
	}
	r = serve_open(sv, &d, offset, &size, &fd, &err);
	if (r < 0)
		goto out_abort;
	t = &sv->tx[sv->n];
	r = xfer_tx_new_fd(stream, fd, &t->tx, &err);
	if (r < 0)
		goto out_abort;
	t->rid = zframe_dup(rid);
	t->stream = stream;
	t->last_ms = kiln_now_ms();
	sv->n++;
	proto_writer_init(&pw, "peer.blob", id);
	proto_w_u64(&pw, "stream", stream);
	proto_w_str(&pw, "digest", ds);
	proto_w_u64(&pw, "size", size);
	proto_w_u64(&pw, "offset", offset);
	(void) proto_send(sv->router, rid, &pw);
	proto_writer_release(&pw);
	serve_pump(sv, sv->n - 1);
	return;

out_abort:
	serve_abort(sv, rid, id, stream, &err);
}

static void
serve_message(struct serve *sv)
{
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;
	zframe_t *rid = NULL;
	struct serve_tx *t;
	uint64_t stream = 0;
	const char *type;
	unsigned i;

	if (proto_recv(sv->router, &rid, &m, &err) < 0) {
		if (rid)
			serve_abort(sv, rid, 0, 0, &err);
		goto out;
	}
	type = proto_msg_type(m);
	if (strcmp(type, "peer.get") == 0) {
		serve_get(sv, rid, m);
		goto out;
	}
	(void) proto_msg_u64(m, "stream", &stream);
	t = serve_find(sv, rid, stream, &i);
	if (strcmp(type, "xfer.credit") == 0 && t) {
		if (xfer_tx_credit(t->tx, m, &err) < 0) {
			serve_abort(sv, rid, stream, stream, &err);
			serve_drop(sv, i);
			goto out;
		}
		t->last_ms = kiln_now_ms();
		serve_pump(sv, i);
	} else if (strcmp(type, "xfer.abort") == 0) {
		if (t)
			serve_drop(sv, i);
	} else if (strcmp(type, "xfer.credit") != 0) {
		/* late credits for a finished stream are normal; the rest is not */
		kiln_err_set(&err, KILN_EPROTO, "unexpected message '%s' on the blob server", type);
		serve_abort(sv, rid, proto_msg_id(m), stream, &err);
	}
out:
	proto_msg_free(m);
	zframe_destroy(&rid);
}

static int
serve_bind(struct serve *sv, struct kiln_err *err)
{
	struct peer_server *s = sv->s;
	zsock_t *r = zsock_new(ZMQ_ROUTER);
	char *last;

	if (!r)
		return kiln_err_set(err, ENOMEM, "create the blob server socket");
	/* Credits bound what is queued: at most max x XFER_WINDOW chunks. */
	zsock_set_sndhwm(r, 0);
	zsock_set_router_mandatory(r, 0);
	zsock_set_maxmsgsize(r, PROTO_FRAME_MAX + 1024);
	zsock_set_linger(r, 0);
	if (s->cert) {
		zcert_apply(s->cert, r);
		zsock_set_curve_server(r, 1);
	}
	if (zsock_bind(r, "%s", s->endpoint) < 0) {
		kiln_err_set(err, EADDRNOTAVAIL, "cannot bind the blob server to '%s': %s", s->endpoint,
			     zmq_strerror(zmq_errno()));
		zsock_destroy(&r);
		return -EADDRNOTAVAIL;
	}
	last = zsock_last_endpoint(r);
	if (last && strlen(last) < sizeof(s->endpoint))
		snprintf(s->endpoint, sizeof(s->endpoint), "%s", last);
	free(last);
	/* Connecting to a unix socket needs write access to it. */
	if (s->ipc_path[0] && chmod(s->ipc_path, 0600) < 0) {
		kiln_err_errno(err, errno, "chmod '%s'", s->ipc_path);
		zsock_destroy(&r);
		return -err->code;
	}
	sv->router = r;
	return 0;
}

static void
serve_actor(zsock_t *pipe, void *arg)
{
	struct serve sv = { .s = arg };
	zmq_pollitem_t items[2];

	sv.tx = calloc(sv.s->max, sizeof(*sv.tx));
	if (!sv.tx)
		kiln_err_set(&sv.s->bind_err, ENOMEM, "out of memory");
	else
		(void) serve_bind(&sv, &sv.s->bind_err);
	zsock_signal(pipe, 0);
	items[0] = (zmq_pollitem_t) { zsock_resolve(pipe), 0, ZMQ_POLLIN, 0 };
	items[1] = (zmq_pollitem_t) { sv.router ? zsock_resolve(sv.router) : NULL, 0, ZMQ_POLLIN, 0 };
	for (;;) {
		int64_t now;
		int rc = zmq_poll(items, sv.router ? 2 : 1, PEER_TICK_MS);

		if (rc < 0 && zmq_errno() != EINTR)
			break;
		if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
			char *cmd = NULL;
			zmsg_t *msg = NULL;

			if (peer_pipe_term(pipe, &cmd, &msg))
				break;
			free(cmd);
			zmsg_destroy(&msg);
		}
		if (rc > 0 && sv.router && (items[1].revents & ZMQ_POLLIN))
			serve_message(&sv);
		now = kiln_now_ms();
		for (unsigned i = sv.n; i-- > 0;)
			if (now - sv.tx[i].last_ms > PEER_SERVE_IDLE_MS)
				serve_drop(&sv, i);
	}
	while (sv.n)
		serve_drop(&sv, 0);
	free(sv.tx);
	zsock_destroy(&sv.router);
}

void
peer_server_free(struct peer_server *s)
{
	if (!s)
		return;
	zactor_destroy(&s->actor);
	zactor_destroy(&s->auth);
	zcert_destroy(&s->cert);
	if (s->ipc_path[0])
		(void) unlink(s->ipc_path);
	free(s);
}

/* An ipc:// path may be reused when it is a socket (a previous run's). */
static int
server_prepare_ipc(struct peer_server *s, struct kiln_err *err)
{
	struct stat st;

	snprintf(s->ipc_path, sizeof(s->ipc_path), "%s", s->endpoint + 6);
	if (lstat(s->ipc_path, &st) < 0)
		return errno == ENOENT ? 0 : kiln_err_errno(err, errno, "stat '%s'", s->ipc_path);
	if (!S_ISSOCK(st.st_mode)) {
		s->ipc_path[0] = '\0';
		return kiln_err_set(err, EEXIST, "'%s' exists and is not a socket", s->endpoint + 6);
	}
	if (unlink(s->ipc_path) < 0)
		return kiln_err_errno(err, errno, "remove stale socket '%s'", s->ipc_path);
	return 0;
}

static int
server_prepare_tcp(struct peer_server *s, const struct peer_server_opts *o, struct kiln_err *err)
{
	struct stat st;
	int r;

	if (!o->key || !o->allow_dir)
		return kiln_err_set(err, EINVAL, "a blob server on tcp:// needs the node's key pair and an "
				    "allow-list directory (--key, --peer-allow)");
	if (stat(o->allow_dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return kiln_err_set(err, ENOENT, "peer allow-list '%s' is not a directory", o->allow_dir);
	r = peer_load_keypair(o->key, &s->cert, err);
	if (r < 0)
		return r;
	snprintf(s->key_txt, sizeof(s->key_txt), "%s", zcert_public_txt(s->cert));
	/* Before the bind: without a ZAP handler libzmq admits any client
	 * that knows the server key. */
	s->auth = zactor_new(zauth, NULL);
	if (!s->auth)
		return kiln_err_set(err, ENOMEM, "start the authenticator");
	if (zstr_sendx(s->auth, "CURVE", o->allow_dir, NULL) < 0 || zsock_wait(s->auth) < 0)
		return kiln_err_set(err, EIO, "configure the authenticator for '%s'", o->allow_dir);
	return 0;
}

int
peer_server_start(struct cas *cas, const struct peer_server_opts *o, struct peer_server **ret,
		  struct kiln_err *err)
{
	struct peer_server *s;
	int r;

	if (!o->endpoint || strlen(o->endpoint) >= PEER_ENDPOINT_MAX)
		return kiln_err_set(err, EINVAL, "blob endpoint missing or too long");
	if (!peer_is_tcp(o->endpoint) && !peer_is_ipc(o->endpoint))
		return kiln_err_set(err, EINVAL, "blob endpoint '%s' is neither ipc://PATH nor tcp://HOST:PORT",
				    o->endpoint);
	s = calloc(1, sizeof(*s));
	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	s->cas = cas;
	s->max = o->max_transfers ? o->max_transfers : PEER_SERVE_MAX;
	snprintf(s->endpoint, sizeof(s->endpoint), "%s", o->endpoint);
	r = peer_is_tcp(o->endpoint) ? server_prepare_tcp(s, o, err) : server_prepare_ipc(s, err);
	if (r < 0)
		goto out_free;
	s->actor = zactor_new(serve_actor, s);
	if (!s->actor) {
		r = kiln_err_set(err, ENOMEM, "start the blob server thread");
		goto out_free;
	}
	if (s->bind_err.code) {
		*err = s->bind_err;
		r = -s->bind_err.code;
		s->ipc_path[0] = '\0';          /* nothing of ours is there */
		goto out_free;
	}
	*ret = s;
	return 0;

out_free:
	peer_server_free(s);
	return r;
}

const char *
peer_server_endpoint(const struct peer_server *s)
{
	return s->endpoint;
}

const char *
peer_server_key(const struct peer_server *s)
{
	return s->key_txt;
}

int
peer_default_endpoint(const char *coordinator, const char *state, char *buf, size_t size,
		      struct kiln_err *err)
{
	const size_t sun_max = sizeof(((struct sockaddr_un *) 0)->sun_path) - 1;
	_cleanup_free_ char *abs = NULL;
	char dir[64], hex[65];
	struct digest d;
	struct stat st;
	int n;

	if (peer_is_tcp(coordinator)) {
		n = snprintf(buf, size, "tcp://127.0.0.1:0");
		return n < 0 || (size_t) n >= size ? kiln_err_set(err, ENAMETOOLONG, "endpoint buffer") : 0;
	}
	/* Absolute: peers connect from their own working directories. */
	abs = realpath(state, NULL);
	if (!abs)
		return kiln_err_errno(err, errno, "resolve state directory '%s'", state);
	n = snprintf(buf, size, "ipc://%s/blob.sock", abs);
	if (n > 0 && (size_t) n < size && (size_t) n - 6 <= sun_max)
		return 0;
	/* Too long for a unix socket: the same state always maps to the same
	 * private directory, as the local driver does for its coordinator. */
	digest_buf(abs, strlen(abs), &d);
	digest_hex(&d, hex);
	snprintf(dir, sizeof(dir), "/tmp/kiln-%u-%.16s", (unsigned) getuid(), hex);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return kiln_err_errno(err, errno, "create '%s'", dir);
	if (lstat(dir, &st) < 0)
		return kiln_err_errno(err, errno, "stat '%s'", dir);
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 0077))
		return kiln_err_set(err, EPERM, "'%s' is not a private directory of ours; remove it", dir);
	n = snprintf(buf, size, "ipc://%s/blob.sock", dir);
	return n < 0 || (size_t) n >= size ? kiln_err_set(err, ENAMETOOLONG, "endpoint buffer") : 0;
}

