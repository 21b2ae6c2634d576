/* The CLI's connection to a coordinator: a DEALER socket (CurveZMQ on
 * tcp://, plain on ipc:// where the file mode of the socket is the
 * access control), and request/reply on top of shared/proto's messages.
 *
 * Replies are matched by correlation id, not by order: a request that
 * timed out may still be answered later, and that late answer must not be
 * taken for the reply to the next request. Errors from the coordinator
 * travel as {t:"error", code, msg} and come out of conn_request() as a
 * kiln_err with exactly that code and msg.
 *
 * This module speaks only the generic envelope plus ping and nodes.list,
 * which everything that talks to a builder needs; build-specific messages
 * belong to their commands. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "cleanup.h"
#include "curve.h"
#include "err.h"
#include "proto.h"
#include "util.h"
#include "conn.h"

#define CONN_SNDTIMEO_MS    5000
#define CONN_RECONNECT_MS   50
#define CONN_MAX_NODES      4096
#define CONN_MAX_PLATFORMS  64

struct conn {
	zsock_t *sock;
	char endpoint[512];
	bool tcp;
	uint64_t next_id;
};

static void
proto_msg_freep(struct proto_msg **m)
{
	proto_msg_free(*m);
}
#define _cleanup_msg_ _cleanup_(proto_msg_freep)

int
conn_open(const struct conn_opts *o, struct conn **ret, struct kiln_err *err)
{
	_cleanup_free_ struct conn *c = NULL;
	zsock_t *sock;
	int r;

	if (!kiln_startswith(o->endpoint, "tcp://") && !kiln_startswith(o->endpoint, "ipc://"))
		return kiln_err_set(err, EINVAL, "unsupported endpoint \"%s\" (want tcp:// or ipc://)",
				    o->endpoint);
	c = calloc(1, sizeof(*c));
	if (!c)
		return kiln_err_set(err, ENOMEM, "out of memory");
	snprintf(c->endpoint, sizeof(c->endpoint), "%s", o->endpoint);
	c->tcp = kiln_startswith(o->endpoint, "tcp://");
	c->next_id = 1;

	sock = zsock_new(ZMQ_DEALER);
	if (!sock)
		return kiln_err_errno(err, errno ? errno : ENOMEM, "create socket");
	/* Unsent requests are worthless once we give up: never let exit
	 * wait for a coordinator that is not there. */
	zsock_set_linger(sock, 0);
	zsock_set_sndtimeo(sock, CONN_SNDTIMEO_MS);
	/* A coordinator being started binds within milliseconds; do not
	 * wait libzmq's default 100 ms between attempts. */
	zsock_set_reconnect_ivl(sock, CONN_RECONNECT_MS);
	/* Bulk data is bounded by xfer credits, not by high-water marks;
	 * frames are bounded before they are decoded. */
	zsock_set_sndhwm(sock, 0);
	zsock_set_rcvhwm(sock, 0);
	zsock_set_maxmsgsize(sock, PROTO_FRAME_MAX + 1024);
	if (c->tcp) {
		if (!o->server_cert[0] || !o->client_cert[0]) {
			zsock_destroy(&sock);
			return kiln_err_set(err, EINVAL,
					    "%s needs the coordinator's certificate and this client's key (driver-opts cacert and key)",
					    o->endpoint);
		}
		r = curve_client_apply(sock, o->server_cert, o->client_cert, err);
		if (r < 0) {
			zsock_destroy(&sock);
			return kiln_err_wrap(err, "connect to %s", o->endpoint);
		}
	}
	if (zsock_connect(sock, "%s", o->endpoint) < 0) {
		r = errno ? errno : EINVAL;
		zsock_destroy(&sock);
		return kiln_err_errno(err, r, "connect to %s", o->endpoint);
	}
	c->sock = sock;
	*ret = STEAL_PTR(c);
	return 0;
}

void
conn_free(struct conn *c)
{
	if (!c)
		return;
	zsock_destroy(&c->sock);
	free(c);
}

uint64_t
conn_next_id(struct conn *c)
{
	return c->next_id++;
}

zsock_t *
conn_sock(struct conn *c)
{
	return c->sock;
}

const char *
conn_endpoint(const struct conn *c)
{
	return c->endpoint;
}

int
conn_send(struct conn *c, struct proto_writer *w, struct kiln_err *err)
{
	int r;

	r = proto_send(c->sock, NULL, w);
	if (r == -EAGAIN)
		return kiln_err_set(err, ETIMEDOUT, "cannot send to coordinator at %s: queue full",
				    c->endpoint);
	if (r < 0)
		return kiln_err_errno(err, -r, "send to coordinator at %s", c->endpoint);
	return 0;
}

static int
timeout_error(const struct conn *c, int timeout_ms, struct kiln_err *err)
{
	/* Over tcp:// a refused CURVE handshake looks exactly like silence:
	 * ZeroMQ drops the connection and retries. Name both causes. */
	return kiln_err_set(err, ETIMEDOUT, "no answer from coordinator at %s within %gs (%s)",
			    c->endpoint, timeout_ms / 1000.0,
			    c->tcp ? "is it running, and is this client's key on its allow-list?" :
				     "is it running?");
}

int
conn_recv(struct conn *c, int timeout_ms, struct proto_msg **ret, struct kiln_err *err)
{
	int64_t deadline = timeout_ms < 0 ? -1 : kiln_now_ms() + timeout_ms;
	zmq_pollitem_t item = { .socket = zsock_resolve(c->sock), .events = ZMQ_POLLIN };

	for (;;) {
		long wait = -1;
		int n;

		if (deadline >= 0) {
			wait = (long) (deadline - kiln_now_ms());
			if (wait < 0)
				wait = 0;
		}
		n = zmq_poll(&item, 1, wait);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_err_errno(err, errno, "wait for coordinator at %s", c->endpoint);
		if (n > 0 && (item.revents & ZMQ_POLLIN))
			return proto_recv(c->sock, NULL, ret, err);
		if (deadline >= 0 && kiln_now_ms() >= deadline)
			return timeout_error(c, timeout_ms, err);
	}
}

int
conn_reply_error(const struct proto_msg *m, struct kiln_err *err)
{
	_cleanup_free_ char *msg = NULL;
	uint64_t code = 0;

	if (strcmp(proto_msg_type(m), "error") != 0)
		return 0;
	(void) proto_msg_u64(m, "code", &code);
	msg = proto_msg_strdup(m, "msg");
	if (code == 0 || code > INT32_MAX)
		code = KILN_EPROTO;
	return kiln_err_set(err, (int) code, "%s", msg ? msg : "error without message");
}

int
conn_request(struct conn *c, struct proto_writer *w, int timeout_ms,
	     struct proto_msg **ret_reply, struct kiln_err *err)
{
	_cleanup_msg_ struct proto_msg *self = NULL;
	int64_t deadline = timeout_ms < 0 ? -1 : kiln_now_ms() + timeout_ms;
	const void *data;
	uint64_t id;
	size_t len;
	int r;

	/* The writer does not keep its id apart from the bytes; reading it
	 * back keeps the caller from having to pass it twice. */
	data = proto_writer_data(w, &len);
	r = proto_decode(data, len, &self, err);
	if (r < 0)
		return kiln_err_wrap(err, "request");
	id = proto_msg_id(self);

	r = conn_send(c, w, err);
	if (r < 0)
		return r;
	for (;;) {
		_cleanup_msg_ struct proto_msg *m = NULL;
		int left = -1;

		if (deadline >= 0) {
			int64_t d = deadline - kiln_now_ms();

			left = d < 0 ? 0 : (int) d;
		}
		r = conn_recv(c, left, &m, err);
		if (r == -ETIMEDOUT)
			return timeout_error(c, timeout_ms, err);
		if (r < 0)
			return r;
		if (proto_msg_id(m) != id)
			continue;
		r = conn_reply_error(m, err);
		if (r < 0)
			return r;
		*ret_reply = STEAL_PTR(m);
		return 0;
	}
}

static int
expect_type(const struct proto_msg *m, const char *type, const char *endpoint,
	    struct kiln_err *err)
{
	if (strcmp(proto_msg_type(m), type) == 0)
		return 0;
	return kiln_err_set(err, KILN_EPROTO, "coordinator at %s answered \"%s\", expected \"%s\"",
			    endpoint, proto_msg_type(m), type);
}

int
conn_ping(struct conn *c, int timeout_ms, char *ret_version, size_t size, struct kiln_err *err)
{
	_cleanup_msg_ struct proto_msg *m = NULL;
	struct proto_writer w;
	const msgpack_object *v;
	int r;

	proto_writer_init(&w, "ping", conn_next_id(c));
	r = conn_request(c, &w, timeout_ms, &m, err);
	proto_writer_release(&w);
	if (r < 0)
		return r;
	r = expect_type(m, "pong", c->endpoint, err);
	if (r < 0)
		return r;
	if (!ret_version || size == 0)
		return 0;
	ret_version[0] = '\0';
	v = proto_msg_get(m, "version");
	if (!v)
		return 0;
	/* A string ("0.1.0") or a bare number: show whichever came. */
	if (v->type == MSGPACK_OBJECT_STR)
		snprintf(ret_version, size, "%.*s", (int) v->via.str.size, v->via.str.ptr);
	else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		snprintf(ret_version, size, "%llu", (unsigned long long) v->via.u64);
	return 0;
}

static void
strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
conn_nodes_free(struct conn_node *nodes, size_t n)
{
	if (!nodes)
		return;
	for (size_t i = 0; i < n; i++) {
		free(nodes[i].name);
		free(nodes[i].status);
		strv_free(nodes[i].platforms, nodes[i].n_platforms);
		strv_free(nodes[i].emulated, nodes[i].n_emulated);
	}
	free(nodes);
}

/* A msgpack array of strings (or absent/nil: empty) into a malloc'd
 * vector. -KILN_EPROTO on any other shape. */
static int
strv_from_obj(const msgpack_object *o, char ***ret_v, size_t *ret_n)
{
	char **v;
	uint32_t n;

	*ret_v = NULL;
	*ret_n = 0;
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > CONN_MAX_PLATFORMS)
		return -KILN_EPROTO;
	n = o->via.array.size;
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		v[i] = proto_obj_strdup(&o->via.array.ptr[i]);
		if (!v[i]) {
			strv_free(v, i);
			return -KILN_EPROTO;
		}
	}
	*ret_v = v;
	*ret_n = n;
	return 0;
}

static int
node_from_obj(const msgpack_object *o, struct conn_node *n)
{
	int r;

	if (o->type != MSGPACK_OBJECT_MAP)
		return -KILN_EPROTO;
	n->name = proto_obj_get_strdup(o, "name");
	n->status = proto_obj_get_strdup(o, "status");
	if (!n->name || !n->status)
		return -KILN_EPROTO;
	r = strv_from_obj(proto_obj_get(o, "platforms"), &n->platforms, &n->n_platforms);
	if (r < 0)
		return r;
	r = strv_from_obj(proto_obj_get(o, "emulated"), &n->emulated, &n->n_emulated);
	if (r < 0)
		return r;
	/* Counters are informative: a coordinator that leaves one out is
	 * not wrong enough to refuse the whole list. */
	(void) proto_obj_get_u64(o, "capacity", &n->capacity);
	(void) proto_obj_get_u64(o, "load", &n->load);
	(void) proto_obj_get_u64(o, "last_seen_ms", &n->last_seen_ms);
	return 0;
}

int
conn_nodes_list(struct conn *c, int timeout_ms, struct conn_node **ret_nodes, size_t *ret_n,
		struct kiln_err *err)
{
	_cleanup_msg_ struct proto_msg *m = NULL;
	const msgpack_object *arr;
	struct conn_node *nodes;
	struct proto_writer w;
	uint32_t n;
	int r;

	proto_writer_init(&w, "nodes.list", conn_next_id(c));
	r = conn_request(c, &w, timeout_ms, &m, err);
	proto_writer_release(&w);
	if (r < 0)
		return r;
	r = expect_type(m, "nodes", c->endpoint, err);
	if (r < 0)
		return r;
	arr = proto_msg_get(m, "nodes");
	if (!arr || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size > CONN_MAX_NODES)
		return kiln_err_set(err, KILN_EPROTO, "coordinator at %s: \"nodes\" is not a list",
				    c->endpoint);
	n = arr->via.array.size;
	nodes = calloc(n + 1, sizeof(*nodes));
	if (!nodes)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		r = node_from_obj(&arr->via.array.ptr[i], &nodes[i]);
		if (r < 0) {
			conn_nodes_free(nodes, n);
			if (r == -ENOMEM)
				return kiln_err_set(err, ENOMEM, "out of memory");
			return kiln_err_set(err, KILN_EPROTO,
					    "coordinator at %s: malformed entry %u of \"nodes\"",
					    c->endpoint, i);
		}
	}
	*ret_nodes = nodes;
	*ret_n = n;
	return 0;
}
