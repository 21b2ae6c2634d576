/* Blobs between nodes, the fetching side: on "blob.fetch" a czmq actor
 * fetches every blob the node lacks from the peers the coordinator named
 * (messages in peer.h) and answers "blob.fetch.done".
 *
 * One thread owns every socket: one DEALER per try (one blob, one peer)
 * with a socket monitor on it, so a refused key, a failed handshake, a
 * peer that cannot be reached and a connection that broke are told apart
 * at once rather than by a timeout; silence past idle_ms is the backstop.
 *
 * Invariants: a blob's bytes go into one cas_writer that lives across
 * tries, so a retry (same peer or the next one) asks for the rest at
 * cas_writer_size() and no byte is fetched twice; the writer checks the
 * digest at commit, so wrong bytes from any peer are discarded, never
 * stored; a peer that answered for good (not here, wrong size or bytes,
 * key refused) is not asked again for that blob; one blob moves at most
 * once at a time, whatever the number of requests naming it. Chunks are
 * checked as xfer_rx checks them (contiguous, bounded, nothing after eof),
 * here against the blob's announced size, because an xfer_rx owns its
 * writer and a resumed blob must keep the one it has.
 *
 * Not here: deciding which peers hold a blob (the coordinator does). */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "peer.h"
#include "peer-internal.h"
#include "proto.h"
#include "util.h"
#include "xfer.h"

#define PEER_LINGER_MS      200         /* lets a last xfer.abort leave a closing socket */
#define PEER_BUSY_TRIES     30          /* EBUSY answers per blob before giving up */
#define PEER_WHY_MAX        200         /* one peer's error in a failure message */
#define PEER_FAIL_MSG_MAX   480
#define PEER_MON_EVENTS     (ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED | \
			     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | \
			     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

/* ---- requests --------------------------------------------- */

struct fetch_peer {
	char node[128];
	char endpoint[PEER_ENDPOINT_MAX];
	unsigned char key[32];
	bool has_key;
	bool excluded;          /* answered for good: not asked again for this blob */
	char why[PEER_WHY_MAX]; /* its last error */
};

enum fetch_state { FB_QUEUED, FB_ACTIVE, FB_DONE };

struct fetch_blob {
	struct digest digest;
	uint64_t size;
	bool size_known;                /* else the first peer's answer says it */
	struct fetch_peer *peers;
	size_t n_peers;
	size_t next;            /* peer to try next */
	unsigned tries, busy;
	int64_t not_before_ms;
	struct cas_writer *w;   /* lives across tries: a retry resumes at its size */
	enum fetch_state state;
	int code;               /* failure, when msg is set */
	char *msg;
};

struct fetch_req {
	struct fetch_req *next;
	uint64_t id;
	char build[64];
	struct fetch_blob *blobs;
	size_t n_blobs;
	size_t n_open;          /* blobs not FB_DONE */
	uint64_t fetched, present, bytes;
};

struct fetch_tx;

struct peer_fetcher {
	struct cas *cas;
	zcert_t *cert;          /* NULL: ipc:// peers only */
	unsigned max;
	int idle_ms;
	struct fetch_tx *tx;    /* max slots, the actor's */
	zmq_pollitem_t *items;  /* 1 + 2 x max, the actor's */
	zactor_t *actor;
};

static void
fetch_req_free(struct fetch_req *q)
{
	if (!q)
		return;
	for (size_t i = 0; q->blobs && i < q->n_blobs; i++) {
		free(q->blobs[i].peers);
		free(q->blobs[i].msg);
		if (q->blobs[i].w)
			cas_writer_abort(q->blobs[i].w);
	}
	free(q->blobs);
	free(q);
}

/* A string field of a nested map into buf: -ENOENT absent, -EINVAL when
 * not a string, holding a NUL or not fitting. */
static int
obj_str(const msgpack_object *map, const char *key, char *buf, size_t size)
{
	const msgpack_object *o = proto_obj_get(map, key);

	buf[0] = '\0';
	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size ||
	    memchr(o->via.str.ptr, '\0', o->via.str.size))
		return -EINVAL;
	memcpy(buf, o->via.str.ptr, o->via.str.size);
	buf[o->via.str.size] = '\0';
	return 0;
}

static int
fetch_parse_peer(const msgpack_object *o, struct fetch_peer *p, struct kiln_err *err)
{
	char key[PEER_KEY_TXT + 1];
	int r;

	if (o->type != MSGPACK_OBJECT_MAP)
		return kiln_err_set(err, KILN_EPROTO, "a peer is not a map");
	if (obj_str(o, "node", p->node, sizeof(p->node)) == -EINVAL)
		return kiln_err_set(err, KILN_EPROTO, "bad peer node name");
	if (!p->node[0])
		snprintf(p->node, sizeof(p->node), "?");
	if (obj_str(o, "endpoint", p->endpoint, sizeof(p->endpoint)) < 0 ||
	    (!peer_is_tcp(p->endpoint) && !peer_is_ipc(p->endpoint)))
		return kiln_err_set(err, KILN_EPROTO, "peer '%s': endpoint missing or not ipc:// or tcp://",
				    p->node);
	r = obj_str(o, "key", key, sizeof(key));
	if (r == -EINVAL)
		return kiln_err_set(err, KILN_EPROTO, "peer '%s': bad key", p->node);
	if (key[0]) {
		/* zmq_z85_decode would read past a short string */
		if (strlen(key) != PEER_KEY_TXT - 1 || !zmq_z85_decode(p->key, key))
			return kiln_err_set(err, KILN_EPROTO, "peer '%s': key is not a Z85 public key",
					    p->node);
		p->has_key = true;
	}
	return 0;
}

static int
fetch_parse_blob(const msgpack_object *o, struct fetch_blob *b, struct kiln_err *err)
{
	char ds[DIGEST_STR_SIZE + 1];
	const msgpack_object *peers;
	int r;

	if (o->type != MSGPACK_OBJECT_MAP || obj_str(o, "digest", ds, sizeof(ds)) < 0 ||
	    digest_parse(ds, &b->digest) < 0)
		return kiln_err_set(err, KILN_EPROTO, "a blob without a valid digest");
	/* a context file's size may be unknown to the coordinator: the
	 * digest still decides what is stored */
	b->size_known = proto_obj_get_u64(o, "size", &b->size) == 0;
	peers = proto_obj_get(o, "peers");
	if (peers && (peers->type != MSGPACK_OBJECT_ARRAY || peers->via.array.size > PEER_FETCH_PEERS_MAX))
		return kiln_err_set(err, KILN_EPROTO, "blob %s: peers is not an array of at most %d",
				    ds, PEER_FETCH_PEERS_MAX);
	if (!peers || peers->via.array.size == 0)
		return 0;
	b->peers = calloc(peers->via.array.size, sizeof(*b->peers));
	if (!b->peers)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < peers->via.array.size; i++) {
		r = fetch_parse_peer(&peers->via.array.ptr[i], &b->peers[i], err);
		if (r < 0)
			return kiln_err_wrap(err, "blob %s", ds);
		b->n_peers++;
	}
	return 0;
}

static int
fetch_parse(const struct proto_msg *m, struct fetch_req **ret, struct kiln_err *err)
{
	const msgpack_object *blobs = proto_msg_get(m, "blobs");
	const char *build;
	struct fetch_req *q;
	size_t len;
	int r;

	if (proto_msg_strn(m, "build", &build, &len) < 0 || len == 0 || len >= sizeof(q->build) ||
	    memchr(build, '\0', len))
		return kiln_err_set(err, KILN_EPROTO, "blob.fetch without a valid build");
	if (!blobs || blobs->type != MSGPACK_OBJECT_ARRAY || blobs->via.array.size > PEER_FETCH_BLOBS_MAX)
		return kiln_err_set(err, KILN_EPROTO, "blob.fetch: blobs is not an array of at most %d",
				    PEER_FETCH_BLOBS_MAX);
	q = calloc(1, sizeof(*q));
	if (q)
		q->blobs = calloc(blobs->via.array.size + 1, sizeof(*q->blobs));
	if (!q || !q->blobs) {
		fetch_req_free(q);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	q->id = proto_msg_id(m);
	memcpy(q->build, build, len);
	for (uint32_t i = 0; i < blobs->via.array.size; i++) {
		r = fetch_parse_blob(&blobs->via.array.ptr[i], &q->blobs[i], err);
		q->n_blobs++;
		if (r < 0) {
			fetch_req_free(q);
			return kiln_err_wrap(err, "blob.fetch");
		}
	}
	q->n_open = q->n_blobs;
	*ret = q;
	return 0;
}

/* ---- the thread ------------------------------------------- */

enum fetch_outcome {
	FX_CONTINUE,
	FX_OK,          /* stored */
	FX_RETRY,       /* this try failed; the peer may do better later */
	FX_EXCLUDE,     /* the peer answered for good */
	FX_FAIL,        /* a local error: the blob fails whatever the peers */
};

struct fetch_tx {
	struct fetch_req *req;
	struct fetch_blob *b;
	size_t peer;
	zsock_t *sock;
	zsock_t *mon;
	uint64_t stream;
	uint64_t got;           /* payload bytes on this stream */
	bool started;           /* peer.blob seen */
	int64_t last_ms;        /* start or last message from the peer */
	short revents[2];       /* sock, mon; from the last poll */
};

struct fetch {
	struct peer_fetcher *f; /* read-only in the actor */
	zsock_t *pipe;
	struct fetch_req *reqs, **tail;
	struct fetch_tx *tx;
	unsigned n_tx;
	uint64_t next_stream;
};

/* Monitor endpoints must be unique in the process for longer than one
 * fetcher: libzmq releases an inproc name only when the reaper gets to
 * the closed socket. */
static atomic_uint mon_seq;

static bool
fetch_usable(const struct fetch_blob *b)
{
	for (size_t i = 0; i < b->n_peers; i++)
		if (!b->peers[i].excluded)
			return true;
	return false;
}

/* "no peer could serve it: a: why; b: why", as much as fits. */
static void
fetch_blob_fail(struct fetch_req *q, struct fetch_blob *b, int code, const char *msg)
{
	char buf[PEER_FAIL_MSG_MAX];
	size_t len = 0;

	if (msg) {
		snprintf(buf, sizeof(buf), "%s", msg);
	} else if (b->n_peers == 0) {
		snprintf(buf, sizeof(buf), "no peer holds it");
		code = ENOENT;
	} else {
		len = (size_t) snprintf(buf, sizeof(buf), "no peer could serve it");
		for (size_t i = 0; i < b->n_peers && len < sizeof(buf); i++)
			len += (size_t) snprintf(buf + len, sizeof(buf) - len, "%s %s: %s", i ? ";" : ":",
						 b->peers[i].node,
						 b->peers[i].why[0] ? b->peers[i].why : "not tried");
	}
	if (b->w) {
		cas_writer_abort(b->w);
		b->w = NULL;
	}
	free(b->msg);
	b->msg = strdup(buf);
	b->code = code > 0 ? code : EIO;
	b->state = FB_DONE;
	q->n_open--;
}

static void
fetch_blob_done(struct fetch_req *q, struct fetch_blob *b, bool fetched)
{
	b->state = FB_DONE;
	if (fetched)
		q->fetched++;
	else
		q->present++;
	q->n_open--;
}

/* After a try that did not store the blob: note why, and queue it again
 * or give up. */
static void
fetch_blob_after(struct fetch_req *q, struct fetch_blob *b, size_t peer, enum fetch_outcome o,
		 const struct kiln_err *e)
{
	struct fetch_peer *p = &b->peers[peer];
	int64_t delay = 0;

	snprintf(p->why, sizeof(p->why), "%.*s", (int) sizeof(p->why) - 1, e->msg);
	b->code = e->code;
	if (o == FX_FAIL) {
		fetch_blob_fail(q, b, e->code, e->msg);
		return;
	}
	if (o == FX_EXCLUDE)
		p->excluded = true;
	b->next = (peer + 1) % b->n_peers;
	if (e->code == EBUSY) {
		/* the peer is healthy, only full: wait for it longer */
		if (++b->busy >= PEER_BUSY_TRIES) {
			fetch_blob_fail(q, b, e->code, NULL);
			return;
		}
		delay = b->busy * 100 < 2000 ? b->busy * 100 : 2000;
	} else if (o == FX_RETRY) {
		b->tries++;
		/* every peer tried once: pause before the next round */
		delay = 200 * (int64_t) (b->tries / b->n_peers);
	}
	if (!fetch_usable(b) || b->tries >= b->n_peers * PEER_FETCH_ROUNDS) {
		fetch_blob_fail(q, b, b->code, NULL);
		return;
	}
	b->state = FB_QUEUED;
	b->not_before_ms = kiln_now_ms() + delay;
}

static void
fetch_tx_close(struct fetch_tx *t, bool tell_peer)
{
	if (tell_peer) {
		struct kiln_err e = { .code = ECANCELED };
		struct proto_writer pw;

		snprintf(e.msg, sizeof(e.msg), "fetch abandoned");
		proto_writer_init(&pw, "xfer.abort", t->stream);
		xfer_write_abort(&pw, t->stream, &e);
		(void) proto_send(t->sock, NULL, &pw);      /* sndtimeo 0: never waits */
		proto_writer_release(&pw);
	}
	if (t->sock)
		(void) zmq_socket_monitor(zsock_resolve(t->sock), NULL, 0);
	zsock_destroy(&t->mon);
	zsock_destroy(&t->sock);
}

/* End transfer i with outcome o (not FX_CONTINUE). */
static void
fetch_tx_end(struct fetch *fe, unsigned i, enum fetch_outcome o, const struct kiln_err *e)
{
	struct fetch_tx t = fe->tx[i];

	fe->tx[i] = fe->tx[--fe->n_tx];
	memset(&fe->tx[fe->n_tx], 0, sizeof(fe->tx[fe->n_tx]));
	/* so that the server frees its slot now rather than at its timeout */
	fetch_tx_close(&t, o != FX_OK);
	if (o == FX_OK)
		fetch_blob_done(t.req, t.b, true);
	else
		fetch_blob_after(t.req, t.b, t.peer, o, e);
}

static int
fetch_connect(struct fetch *fe, struct fetch_tx *t, const struct fetch_peer *p, struct kiln_err *err)
{
	char mon_ep[96];

	t->sock = zsock_new(ZMQ_DEALER);
	if (!t->sock)
		return kiln_err_set(err, ENOMEM, "create a socket");
	zsock_set_maxmsgsize(t->sock, PROTO_FRAME_MAX + 1024);
	zsock_set_sndtimeo(t->sock, 0);
	zsock_set_linger(t->sock, PEER_LINGER_MS);
	if (peer_is_tcp(p->endpoint)) {
		zcert_apply(fe->f->cert, t->sock);
		zsock_set_curve_serverkey_bin(t->sock, p->key);
	}
	snprintf(mon_ep, sizeof(mon_ep), "inproc://kiln-peer-mon-%u", atomic_fetch_add(&mon_seq, 1));
	if (zmq_socket_monitor(zsock_resolve(t->sock), mon_ep, PEER_MON_EVENTS) < 0)
		return kiln_err_set(err, EIO, "monitor a socket: %s", zmq_strerror(zmq_errno()));
	/* Connected before the DEALER connects, so no event is missed. */
	t->mon = zsock_new_pair(mon_ep);
	if (!t->mon)
		return kiln_err_set(err, ENOMEM, "connect a socket monitor");
	if (zsock_connect(t->sock, "%s", p->endpoint) < 0)
		return kiln_err_set(err, EINVAL, "cannot connect to '%s': %s", p->endpoint,
				    zmq_strerror(zmq_errno()));
	return 0;
}

/* Start a try of b on its next usable peer. */
static void
fetch_start(struct fetch *fe, struct fetch_req *q, struct fetch_blob *b)
{
	struct fetch_tx *t = &fe->tx[fe->n_tx];
	struct kiln_err err = { 0 };
	struct fetch_peer *p = NULL;
	struct proto_writer pw;
	char ds[DIGEST_STR_SIZE];
	size_t k;
	int r;

	for (k = 0; k < b->n_peers; k++) {
		p = &b->peers[(b->next + k) % b->n_peers];
		if (!p->excluded)
			break;
	}
	if (k == b->n_peers) {
		fetch_blob_fail(q, b, b->code, NULL);
		return;
	}
	k = (b->next + k) % b->n_peers;
	if (!b->w) {
		r = cas_writer_new(fe->f->cas, &b->digest, &b->w, &err);
		if (r < 0) {
			fetch_blob_fail(q, b, err.code, err.msg);
			return;
		}
	}
	if (peer_is_tcp(p->endpoint) && !fe->f->cert) {
		kiln_err_set(&err, KILN_EAUTH, "tcp:// peer and this node has no key pair (--key)");
		fetch_blob_after(q, b, k, FX_EXCLUDE, &err);
		return;
	}
	if (peer_is_tcp(p->endpoint) && !p->has_key) {
		kiln_err_set(&err, KILN_EAUTH, "tcp:// peer without a public key");
		fetch_blob_after(q, b, k, FX_EXCLUDE, &err);
		return;
	}
	*t = (struct fetch_tx) { .req = q, .b = b, .peer = k, .stream = ++fe->next_stream };
	r = fetch_connect(fe, t, p, &err);
	if (r < 0) {
		/* an endpoint libzmq refuses stays refused; the rest is ours */
		fetch_tx_close(t, false);
		fetch_blob_after(q, b, k, r == -EINVAL ? FX_EXCLUDE : FX_RETRY, &err);
		return;
	}
	proto_writer_init(&pw, "peer.get", t->stream);
	proto_w_u64(&pw, "stream", t->stream);
	proto_w_str(&pw, "digest", digest_fmt(&b->digest, ds));
	proto_w_u64(&pw, "offset", cas_writer_size(b->w));
	r = proto_send(t->sock, NULL, &pw);
	proto_writer_release(&pw);
	if (r < 0) {
		kiln_err_errno(&err, -r, "send to '%s'", p->endpoint);
		fetch_tx_close(t, false);
		fetch_blob_after(q, b, k, FX_RETRY, &err);
		return;
	}
	t->last_ms = kiln_now_ms();
	b->state = FB_ACTIVE;
	fe->n_tx++;
}

static enum fetch_outcome
fetch_on_data(struct fetch_tx *t, const struct proto_msg *m, struct kiln_err *err)
{
	struct fetch_blob *b = t->b;
	struct cas_writer *w;
	struct proto_writer pw;
	const void *data;
	uint64_t off, have = cas_writer_size(b->w);
	bool eof = false;
	size_t len;
	int r;

	if (!t->started)
		return kiln_err_set(err, KILN_EPROTO, "sent data before peer.blob"), FX_EXCLUDE;
	if (proto_msg_u64(m, "off", &off) < 0 || off != t->got)
		return kiln_err_set(err, KILN_EPROTO, "sent a chunk out of order (expected offset %" PRIu64
				    ")", t->got), FX_EXCLUDE;
	if (proto_msg_bin(m, "data", &data, &len) < 0 || len > PROTO_CHUNK_SIZE)
		return kiln_err_set(err, KILN_EPROTO, "sent a chunk without data or over %u bytes",
				    PROTO_CHUNK_SIZE), FX_EXCLUDE;
	r = proto_msg_bool(m, "eof", &eof);
	if ((r < 0 && r != -ENOENT) || (len == 0 && !eof))
		return kiln_err_set(err, KILN_EPROTO, "sent a malformed chunk"), FX_EXCLUDE;
	if (len > b->size - have)
		return kiln_err_set(err, KILN_EPROTO, "sent more than the blob's %" PRIu64 " bytes",
				    b->size), FX_EXCLUDE;
	if (cas_writer_write(b->w, data, len, err) < 0)
		return FX_FAIL;
	t->got += len;
	t->req->bytes += len;
	if (!eof) {
		proto_writer_init(&pw, "xfer.credit", t->stream);
		xfer_write_credit(&pw, t->stream, 1);
		r = proto_send(t->sock, NULL, &pw);
		proto_writer_release(&pw);
		if (r < 0)
			return kiln_err_errno(err, -r, "grant credit"), FX_RETRY;
		return FX_CONTINUE;
	}
	if (cas_writer_size(b->w) != b->size)
		return kiln_err_set(err, KILN_EPROTO, "ended the blob at %" PRIu64 " of %" PRIu64 " bytes",
				    cas_writer_size(b->w), b->size), FX_EXCLUDE;
	w = STEAL_PTR(b->w);    /* commit frees it whatever happens */
	r = cas_writer_commit(w, NULL, NULL, err);
	if (r == -EBADMSG)
		return FX_EXCLUDE;      /* wrong bytes: discarded; the next peer starts over */
	if (r < 0)
		return FX_FAIL;
	return FX_OK;
}

static enum fetch_outcome
fetch_on_message(struct fetch_tx *t, const struct proto_msg *m, struct kiln_err *err)
{
	const char *type = proto_msg_type(m);
	uint64_t stream = 0, size = 0, offset = 0;

	/* one stream per connection: an abort is ours whatever stream it names
	 * (a server that could not decode our request cannot name it) */
	if (strcmp(type, "xfer.abort") == 0) {
		int code = -xfer_abort_err(m, err);

		return code == EBUSY || code == EAGAIN || code == EINTR ? FX_RETRY : FX_EXCLUDE;
	}
	if (proto_msg_u64(m, "stream", &stream) < 0 || stream != t->stream)
		return kiln_err_set(err, KILN_EPROTO, "answered '%s' for another stream", type), FX_EXCLUDE;
	if (strcmp(type, "xfer.data") == 0)
		return fetch_on_data(t, m, err);
	if (strcmp(type, "peer.blob") == 0) {
		if (t->started || proto_msg_u64(m, "size", &size) < 0 ||
		    proto_msg_u64(m, "offset", &offset) < 0 || offset != cas_writer_size(t->b->w))
			return kiln_err_set(err, KILN_EPROTO, "sent a malformed peer.blob"), FX_EXCLUDE;
		if (!t->b->size_known) {
			t->b->size = size;
			t->b->size_known = true;
		}
		if (size != t->b->size)
			return kiln_err_set(err, EBADMSG, "holds %" PRIu64 " bytes under that digest, "
					    "expected %" PRIu64, size, t->b->size), FX_EXCLUDE;
		t->started = true;
		return FX_CONTINUE;
	}
	return kiln_err_set(err, KILN_EPROTO, "sent unexpected '%s'", type), FX_EXCLUDE;
}

/* Read whatever the peer sent; stops early when the transfer ends. */
static enum fetch_outcome
fetch_drain(struct fetch_tx *t, struct kiln_err *err)
{
	enum fetch_outcome o = FX_CONTINUE;

	while (o == FX_CONTINUE && (zsock_events(t->sock) & ZMQ_POLLIN)) {
		struct proto_msg *m = NULL;

		if (proto_recv(t->sock, NULL, &m, err) < 0)
			return FX_EXCLUDE;
		t->last_ms = kiln_now_ms();
		o = fetch_on_message(t, m, err);
		proto_msg_free(m);
	}
	return o;
}

static enum fetch_outcome
fetch_on_event(struct fetch_tx *t, struct kiln_err *err)
{
	const struct fetch_peer *p = &t->b->peers[t->peer];
	zmsg_t *ev = zmsg_recv(t->mon);
	zframe_t *f = ev ? zmsg_first(ev) : NULL;
	enum fetch_outcome o = FX_CONTINUE;
	uint16_t event = 0;
	uint32_t value = 0;

	if (f && zframe_size(f) == 6) {
		memcpy(&event, zframe_data(f), 2);
		memcpy(&value, zframe_data(f) + 2, 4);
	}
	zmsg_destroy(&ev);
	switch (event) {
	case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
		kiln_err_set(err, KILN_EAUTH, "refused this node's key (ZAP status %u): it is not in "
			     "the peer's allow-list", value);
		return FX_EXCLUDE;
	case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
	case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
		kiln_err_set(err, KILN_EAUTH, "handshake with %s failed (wrong public key for the peer?)",
			     p->endpoint);
		return FX_EXCLUDE;
	case ZMQ_EVENT_CONNECT_RETRIED:
		kiln_err_set(err, ECONNREFUSED, "cannot connect to %s", p->endpoint);
		return FX_RETRY;
	case ZMQ_EVENT_DISCONNECTED:
		/* what arrived before the break is still good */
		o = fetch_drain(t, err);
		if (o != FX_CONTINUE)
			return o;
		kiln_err_set(err, ECONNRESET, "connection lost after %" PRIu64 " of %" PRIu64 " bytes",
			     cas_writer_size(t->b->w), t->b->size);
		return FX_RETRY;
	default:
		return FX_CONTINUE;
	}
}

static void
fetch_answer(struct fetch *fe, struct fetch_req *q)
{
	struct proto_writer pw;
	msgpack_packer *pk;
	uint32_t n_failed = 0;

	for (size_t i = 0; i < q->n_blobs; i++)
		n_failed += q->blobs[i].msg != NULL;
	proto_writer_init(&pw, "blob.fetch.done", q->id);
	proto_w_str(&pw, "build", q->build);
	proto_w_u64(&pw, "fetched", q->fetched);
	proto_w_u64(&pw, "present", q->present);
	proto_w_u64(&pw, "bytes", q->bytes);
	pk = proto_w_key(&pw, "failed");
	msgpack_pack_array(pk, n_failed);
	for (size_t i = 0; i < q->n_blobs; i++) {
		const struct fetch_blob *b = &q->blobs[i];
		char ds[DIGEST_STR_SIZE];

		if (!b->msg)
			continue;
		msgpack_pack_map(pk, 3);
		proto_pack_str(pk, "digest");
		proto_pack_str(pk, digest_fmt(&b->digest, ds));
		proto_pack_str(pk, "code");
		msgpack_pack_uint32(pk, (uint32_t) b->code);
		proto_pack_str(pk, "msg");
		proto_pack_str(pk, b->msg);
	}
	(void) proto_send(fe->pipe, NULL, &pw);
	proto_writer_release(&pw);
}

static bool
fetch_moving(const struct fetch *fe, const struct digest *d)
{
	for (unsigned i = 0; i < fe->n_tx; i++)
		if (digest_equal(&fe->tx[i].b->digest, d))
			return true;
	return false;
}

/* Start what may start; answer requests that are complete. Returns the
 * ms until a queued blob may be retried (-1: none waits). */
static int64_t
fetch_schedule(struct fetch *fe)
{
	int64_t now = kiln_now_ms(), wait = -1;

	for (struct fetch_req *q = fe->reqs; q; q = q->next) {
		for (size_t i = 0; i < q->n_blobs && fe->n_tx < fe->f->max;) {
			struct fetch_blob *b = &q->blobs[i++];

			if (b->state != FB_QUEUED)
				continue;
			if (b->not_before_ms > now) {
				if (wait < 0 || b->not_before_ms - now < wait)
					wait = b->not_before_ms - now;
				continue;
			}
			/* another request's transfer brings it: look again after */
			if (fetch_moving(fe, &b->digest))
				continue;
			if (!b->w && cas_has(fe->f->cas, &b->digest)) {
				fetch_blob_done(q, b, false);
				continue;
			}
			if (b->n_peers == 0) {
				fetch_blob_fail(q, b, ENOENT, NULL);
				continue;
			}
			fetch_start(fe, q, b);
			/* refused before anything was sent (no key, bad
			 * endpoint): try its next peer now */
			if (b->state == FB_QUEUED && b->not_before_ms <= now)
				i--;
		}
	}
	for (struct fetch_req **pq = &fe->reqs; *pq;) {
		struct fetch_req *q = *pq;

		if (q->n_open) {
			pq = &q->next;
			continue;
		}
		fetch_answer(fe, q);
		*pq = q->next;
		if (fe->tail == &q->next)
			fe->tail = pq;
		fetch_req_free(q);
	}
	return wait;
}

static void
fetch_queue(struct fetch *fe, struct fetch_req *q)
{
	q->next = NULL;
	*fe->tail = q;
	fe->tail = &q->next;
}

/* Take every queued command, so that the main thread's sends never meet a
 * full pipe. false on $TERM. */
static bool
fetch_commands(struct fetch *fe)
{
	while (zsock_events(fe->pipe) & ZMQ_POLLIN) {
		char *cmd = NULL;
		zmsg_t *msg = NULL;
		zframe_t *f;

		if (peer_pipe_term(fe->pipe, &cmd, &msg))
			return false;
		f = zmsg_first(msg);
		if (strcmp(cmd, "FETCH") == 0 && f && zframe_size(f) == sizeof(void *)) {
			struct fetch_req *q;

			memcpy(&q, zframe_data(f), sizeof(q));
			fetch_queue(fe, q);
		}
		free(cmd);
		zmsg_destroy(&msg);
	}
	return true;
}

static void
fetch_actor(zsock_t *pipe, void *arg)
{
	struct fetch fe = { .f = arg, .pipe = pipe };
	zmq_pollitem_t *items;

	fe.tail = &fe.reqs;
	fe.tx = fe.f->tx;
	items = fe.f->items;
	zsock_signal(pipe, 0);
	for (;;) {
		int64_t wait = fetch_schedule(&fe), now = kiln_now_ms();
		unsigned n = 1;
		int rc;

		for (unsigned i = 0; i < fe.n_tx; i++) {
			int64_t left = fe.tx[i].last_ms + fe.f->idle_ms - now;

			if (wait < 0 || left < wait)
				wait = left < 0 ? 0 : left;
		}
		if (wait < 0 || wait > PEER_TICK_MS)
			wait = PEER_TICK_MS;
		items[0] = (zmq_pollitem_t) { zsock_resolve(pipe), 0, ZMQ_POLLIN, 0 };
		for (unsigned i = 0; i < fe.n_tx; i++) {
			items[n++] = (zmq_pollitem_t) { zsock_resolve(fe.tx[i].sock), 0, ZMQ_POLLIN, 0 };
			items[n++] = (zmq_pollitem_t) { zsock_resolve(fe.tx[i].mon), 0, ZMQ_POLLIN, 0 };
		}
		rc = zmq_poll(items, (int) n, (long) wait);
		if (rc < 0 && zmq_errno() != EINTR)
			break;
		for (unsigned i = 0; i < fe.n_tx; i++) {
			fe.tx[i].revents[0] = rc > 0 ? items[1 + 2 * i].revents : 0;
			fe.tx[i].revents[1] = rc > 0 ? items[2 + 2 * i].revents : 0;
		}
		if (rc > 0 && (items[0].revents & ZMQ_POLLIN) && !fetch_commands(&fe))
			break;
		now = kiln_now_ms();
		/* Ending a transfer moves the last one into its slot: look at
		 * slot i again then. */
		for (unsigned i = 0; i < fe.n_tx;) {
			struct fetch_tx *t = &fe.tx[i];
			struct kiln_err err = { 0 };
			enum fetch_outcome o = FX_CONTINUE;

			if (t->revents[0] & ZMQ_POLLIN)
				o = fetch_drain(t, &err);
			if (o == FX_CONTINUE && (t->revents[1] & ZMQ_POLLIN))
				o = fetch_on_event(t, &err);
			if (o == FX_CONTINUE && now - t->last_ms > fe.f->idle_ms) {
				kiln_err_set(&err, ETIMEDOUT, "no answer for %d ms", fe.f->idle_ms);
				o = FX_RETRY;
			}
			t->revents[0] = t->revents[1] = 0;
			if (o == FX_CONTINUE) {
				i++;
				continue;
			}
			fetch_tx_end(&fe, i, o, &err);
		}
	}
	while (fe.n_tx) {
		fetch_tx_close(&fe.tx[fe.n_tx - 1], true);
		fe.n_tx--;
	}
	while (fe.reqs) {
		struct fetch_req *q = fe.reqs;

		fe.reqs = q->next;
		fetch_req_free(q);
	}
}

int
peer_fetcher_new(struct cas *cas, const struct peer_fetcher_opts *o, struct peer_fetcher **ret,
		 struct kiln_err *err)
{
	struct peer_fetcher *f = calloc(1, sizeof(*f));
	int r;

	if (!f)
		return kiln_err_set(err, ENOMEM, "out of memory");
	f->cas = cas;
	f->max = o->max_transfers ? o->max_transfers : PEER_FETCH_MAX;
	if (f->max > 64)
		f->max = 64;
	f->idle_ms = o->idle_ms > 0 ? o->idle_ms : PEER_FETCH_IDLE_MS;
	f->tx = calloc(f->max, sizeof(*f->tx));
	f->items = calloc(1 + 2 * f->max, sizeof(*f->items));
	if (!f->tx || !f->items) {
		peer_fetcher_free(f);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	if (o->key) {
		r = peer_load_keypair(o->key, &f->cert, err);
		if (r < 0) {
			peer_fetcher_free(f);
			return r;
		}
	}
	f->actor = zactor_new(fetch_actor, f);
	if (!f->actor) {
		peer_fetcher_free(f);
		return kiln_err_set(err, ENOMEM, "start the blob fetch thread");
	}
	*ret = f;
	return 0;
}

void
peer_fetcher_free(struct peer_fetcher *f)
{
	if (!f)
		return;
	zactor_destroy(&f->actor);
	zcert_destroy(&f->cert);
	free(f->tx);
	free(f->items);
	free(f);
}

int
peer_fetcher_submit(struct peer_fetcher *f, const struct proto_msg *m, struct kiln_err *err)
{
	struct fetch_req *q = NULL;
	int r;

	r = fetch_parse(m, &q, err);
	if (r < 0)
		return r;
	/* The actor takes q; a pipe that refuses it means the actor is gone. */
	if (zsock_send(f->actor, "sp", "FETCH", q) < 0) {
		fetch_req_free(q);
		return kiln_err_set(err, EIO, "the blob fetch thread is gone");
	}
	return 0;
}

zsock_t *
peer_fetcher_sock(struct peer_fetcher *f)
{
	return zactor_sock(f->actor);
}
