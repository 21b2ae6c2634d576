/* Tests for blob movement between nodes (worker/peer): a real blob server
 * on ipc:// and on tcp:// with CURVE keys made here, a real fetcher moving
 * blobs from it into a second store, and the ways a fetch must fail: a
 * blob the peer lacks, a peer serving wrong bytes under a digest (nothing
 * stored), a key not on the peer's allow-list. Resuming is checked on both
 * sides: the server serving from an offset, and the fetcher finishing from
 * the next peer a blob a first peer stopped sending half-way (counting
 * every byte once). A busy server refuses with EBUSY and the fetcher waits
 * it out. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cas.h"
#include "curve.h"
#include "digest.h"
#include "err.h"
#include "peer.h"
#include "proto.h"
#include "util.h"
#include "xfer.h"

#define N_BLOBS 5
#define BIG 4                           /* index of the blob over one credit window */
#define WAIT_MS 4000

struct env {
	char dir[64];
	char srv_dir[128], cli_dir[128];
	struct cas *srv, *cli;
	struct digest d[N_BLOBS];
	uint64_t size[N_BLOBS];
	unsigned char *data[N_BLOBS];
	struct peer_server *server;
	struct peer_fetcher *fetcher;
};

struct tpeer {
	const char *node, *endpoint, *key;
};

static unsigned char *
random_bytes(size_t size, unsigned seed)
{
	unsigned char *buf = malloc(size ? size : 1);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < size; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char) x;
	}
	return buf;
}

static int
env_setup(void **state)
{
	/* empty, under a chunk, a few chunks, not a chunk multiple, more
	 * chunks than one credit window */
	static const uint64_t sizes[N_BLOBS] = {
		0, 1000, 600u << 10, (1u << 20) + 7, (uint64_t) PROTO_CHUNK_SIZE * (XFER_WINDOW + 1) + 1,
	};
	struct env *e = calloc(1, sizeof(*e));
	struct kiln_err err = { 0 };

	snprintf(e->dir, sizeof(e->dir), "/tmp/kiln-peer-XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->srv_dir, sizeof(e->srv_dir), "%s/srv", e->dir);
	snprintf(e->cli_dir, sizeof(e->cli_dir), "%s/cli", e->dir);
	if (cas_open(e->srv_dir, &e->srv, &err) < 0 || cas_open(e->cli_dir, &e->cli, &err) < 0) {
		fprintf(stderr, "cas_open: %s\n", err.msg);
		return -1;
	}
	for (int i = 0; i < N_BLOBS; i++) {
		e->size[i] = sizes[i];
		e->data[i] = random_bytes(sizes[i], (unsigned) i + 1);
		if (cas_put(e->srv, e->data[i], sizes[i], NULL, NULL, &e->d[i], &err) < 0) {
			fprintf(stderr, "cas_put: %s\n", err.msg);
			return -1;
		}
	}
	*state = e;
	return 0;
}

static int
env_teardown(void **state)
{
	struct env *e = *state;

	peer_fetcher_free(e->fetcher);
	peer_server_free(e->server);
	cas_free(e->srv);
	cas_free(e->cli);
	for (int i = 0; i < N_BLOBS; i++)
		free(e->data[i]);
	(void) kiln_rm_rf(e->dir);
	free(e);
	return 0;
}

static void
start_ipc_server(struct env *e, unsigned max)
{
	struct kiln_err err = { 0 };
	char ep[PEER_ENDPOINT_MAX];
	struct peer_server_opts o = { .endpoint = ep, .max_transfers = max };

	snprintf(ep, sizeof(ep), "ipc://%s/blob.sock", e->dir);
	if (peer_server_start(e->srv, &o, &e->server, &err) < 0)
		fail_msg("peer_server_start: %s", err.msg);
	assert_string_equal(peer_server_endpoint(e->server), ep);
	assert_string_equal(peer_server_key(e->server), "");
}

static void
start_fetcher(struct env *e, const char *key)
{
	struct kiln_err err = { 0 };
	struct peer_fetcher_opts o = { .key = key, .idle_ms = 3000 };

	if (peer_fetcher_new(e->cli, &o, &e->fetcher, &err) < 0)
		fail_msg("peer_fetcher_new: %s", err.msg);
}

static struct proto_msg *
finish(struct proto_writer *pw)
{
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;
	const void *data;
	size_t len;

	data = proto_writer_data(pw, &len);
	if (proto_decode(data, len, &m, &err) < 0)
		fail_msg("decode: %s", err.msg);
	proto_writer_release(pw);
	return m;
}

/* A blob.fetch for blobs idx[0..n) of e, each held by the same peers. */
static struct proto_msg *
fetch_msg(const struct env *e, const int *idx, size_t n, const struct tpeer *peers, size_t n_peers)
{
	struct proto_writer pw;
	msgpack_packer *pk;

	proto_writer_init(&pw, "blob.fetch", 42);
	proto_w_str(&pw, "build", "b1");
	pk = proto_w_key(&pw, "blobs");
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++) {
		char ds[DIGEST_STR_SIZE];

		msgpack_pack_map(pk, 3);
		proto_pack_str(pk, "digest");
		proto_pack_str(pk, digest_fmt(&e->d[idx[i]], ds));
		proto_pack_str(pk, "size");
		msgpack_pack_uint64(pk, e->size[idx[i]]);
		proto_pack_str(pk, "peers");
		msgpack_pack_array(pk, n_peers);
		for (size_t k = 0; k < n_peers; k++) {
			msgpack_pack_map(pk, 3);
			proto_pack_str(pk, "node");
			proto_pack_str(pk, peers[k].node);
			proto_pack_str(pk, "endpoint");
			proto_pack_str(pk, peers[k].endpoint);
			proto_pack_str(pk, "key");
			proto_pack_str(pk, peers[k].key ? peers[k].key : "");
		}
	}
	return finish(&pw);
}

static void
submit(struct env *e, struct proto_msg *m)
{
	struct kiln_err err = { 0 };

	if (peer_fetcher_submit(e->fetcher, m, &err) < 0)
		fail_msg("submit: %s", err.msg);
	proto_msg_free(m);
}

static struct proto_msg *
wait_done(struct env *e)
{
	zpoller_t *p = zpoller_new(peer_fetcher_sock(e->fetcher), NULL);
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;
	void *which = zpoller_wait(p, WAIT_MS);

	zpoller_destroy(&p);
	if (!which)
		fail_msg("no blob.fetch.done within %d ms", WAIT_MS);
	if (proto_recv(peer_fetcher_sock(e->fetcher), NULL, &m, &err) < 0)
		fail_msg("recv: %s", err.msg);
	assert_string_equal(proto_msg_type(m), "blob.fetch.done");
	assert_int_equal(proto_msg_id(m), 42);
	return m;
}

static uint64_t
u64(const struct proto_msg *m, const char *key)
{
	uint64_t v = UINT64_MAX;

	assert_int_equal(proto_msg_u64(m, key, &v), 0);
	return v;
}

static const msgpack_object *
failed(const struct proto_msg *m, uint32_t *ret_n)
{
	const msgpack_object *a = proto_msg_get(m, "failed");

	assert_non_null(a);
	assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
	*ret_n = a->via.array.size;
	return a->via.array.ptr;
}

/* The one failure in m: its code, and its message into msg. */
static int
only_failure(const struct proto_msg *m, const struct digest *d, char *msg, size_t size)
{
	uint32_t n;
	const msgpack_object *f = failed(m, &n);
	char ds[DIGEST_STR_SIZE];
	uint64_t code = 0;
	char *s;

	assert_int_equal(n, 1);
	s = proto_obj_get_strdup(f, "digest");
	assert_string_equal(s, digest_fmt(d, ds));
	free(s);
	assert_int_equal(proto_obj_get_u64(f, "code", &code), 0);
	s = proto_obj_get_strdup(f, "msg");
	assert_non_null(s);
	snprintf(msg, size, "%s", s);
	free(s);
	return (int) code;
}

static void
assert_same_blob(struct env *e, int i)
{
	struct kiln_err err = { 0 };
	char *buf = NULL;
	size_t len = 0;

	if (cas_get(e->cli, &e->d[i], 64u << 20, &buf, &len, &err) < 0)
		fail_msg("blob %d not in the fetching store: %s", i, err.msg);
	assert_int_equal(len, e->size[i]);
	if (len)
		assert_memory_equal(buf, e->data[i], len);
	free(buf);
}

static size_t
count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ---- a hand-driven client or peer, for the protocol itself ---- */

static zsock_t *
dealer(const char *ep)
{
	zsock_t *s = zsock_new(ZMQ_DEALER);

	assert_non_null(s);
	zsock_set_rcvtimeo(s, WAIT_MS);
	assert_int_equal(zsock_connect(s, "%s", ep), 0);
	return s;
}

static struct proto_msg *
recv_msg(zsock_t *s, zframe_t **rid)
{
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;

	if (proto_recv(s, rid, &m, &err) < 0)
		fail_msg("recv: %s", err.msg);
	return m;
}

static void
send_get(zsock_t *s, uint64_t stream, const struct digest *d, uint64_t offset)
{
	struct proto_writer pw;
	char ds[DIGEST_STR_SIZE];

	proto_writer_init(&pw, "peer.get", stream);
	proto_w_u64(&pw, "stream", stream);
	proto_w_str(&pw, "digest", digest_fmt(d, ds));
	proto_w_u64(&pw, "offset", offset);
	assert_int_equal(proto_send(s, NULL, &pw), 0);
	proto_writer_release(&pw);
}

static void
send_simple(zsock_t *s, zframe_t *rid, const char *type, uint64_t stream, uint64_t n)
{
	struct proto_writer pw;

	proto_writer_init(&pw, type, stream);
	if (strcmp(type, "xfer.credit") == 0)
		xfer_write_credit(&pw, stream, (unsigned) n);
	else
		xfer_write_abort(&pw, stream, NULL);
	assert_int_equal(proto_send(s, rid, &pw), 0);
	proto_writer_release(&pw);
}

/* Receive one xfer.data of stream at off; append its bytes to buf. */
static bool
recv_chunk(zsock_t *s, uint64_t stream, uint64_t off, unsigned char *buf, size_t *len)
{
	struct proto_msg *m = recv_msg(s, NULL);
	const void *data;
	size_t n;
	bool eof = false;

	assert_string_equal(proto_msg_type(m), "xfer.data");
	assert_int_equal(u64(m, "stream"), stream);
	assert_int_equal(u64(m, "off"), off);
	assert_int_equal(proto_msg_bin(m, "data", &data, &n), 0);
	(void) proto_msg_bool(m, "eof", &eof);
	memcpy(buf + *len, data, n);
	*len += n;
	proto_msg_free(m);
	return eof;
}

/* ---- tests ---- */

static void
ipc_fetch_is_identical(void **state)
{
	struct env *e = *state;
	char ep[PEER_ENDPOINT_MAX];
	const int all[N_BLOBS] = { 0, 1, 2, 3, 4 };
	struct tpeer p = { "node-a", ep, NULL };
	struct proto_msg *m;
	uint64_t total = 0;
	uint32_t n;

	start_ipc_server(e, 0);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	start_fetcher(e, NULL);
	submit(e, fetch_msg(e, all, N_BLOBS, &p, 1));
	m = wait_done(e);
	for (int i = 0; i < N_BLOBS; i++)
		total += e->size[i];
	failed(m, &n);
	assert_int_equal(n, 0);
	assert_int_equal(u64(m, "fetched"), N_BLOBS);
	assert_int_equal(u64(m, "present"), 0);
	assert_int_equal(u64(m, "bytes"), total);
	proto_msg_free(m);
	for (int i = 0; i < N_BLOBS; i++)
		assert_same_blob(e, i);

	/* asked again: all here already, nothing moves */
	submit(e, fetch_msg(e, all, N_BLOBS, &p, 1));
	m = wait_done(e);
	assert_int_equal(u64(m, "fetched"), 0);
	assert_int_equal(u64(m, "present"), N_BLOBS);
	assert_int_equal(u64(m, "bytes"), 0);
	proto_msg_free(m);
}

/* Two builds asking for the same blob at once: one transfer, and the
 * second finds it here. */
static void
concurrent_requests_share_a_transfer(void **state)
{
	struct env *e = *state;
	char ep[PEER_ENDPOINT_MAX];
	struct tpeer p = { "node-a", ep, NULL };
	const int idx[1] = { BIG };
	struct proto_msg *m1, *m2;

	start_ipc_server(e, 0);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	start_fetcher(e, NULL);
	submit(e, fetch_msg(e, idx, 1, &p, 1));
	submit(e, fetch_msg(e, idx, 1, &p, 1));
	m1 = wait_done(e);
	m2 = wait_done(e);
	assert_int_equal(u64(m1, "fetched") + u64(m2, "fetched"), 1);
	assert_int_equal(u64(m1, "present") + u64(m2, "present"), 1);
	assert_int_equal(u64(m1, "bytes") + u64(m2, "bytes"), e->size[BIG]);
	proto_msg_free(m1);
	proto_msg_free(m2);
	assert_same_blob(e, BIG);
}

static void
tcp_curve_fetch(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	char keys[128], allowed[160], server_key[160], client_key[160], rogue_key[160];
	char ep[PEER_ENDPOINT_MAX], msg[512];
	struct peer_server_opts so = { .endpoint = "tcp://127.0.0.1:0" };
	struct tpeer p = { "node-a", ep, NULL };
	const int one[1] = { 3 }, other[1] = { 2 };
	struct proto_msg *m;
	uint32_t n;

	snprintf(keys, sizeof(keys), "%s/keys", e->dir);
	snprintf(allowed, sizeof(allowed), "%s/allowed", keys);
	snprintf(server_key, sizeof(server_key), "%s/server.cert", keys);
	snprintf(client_key, sizeof(client_key), "%s/node-b.cert", keys);
	snprintf(rogue_key, sizeof(rogue_key), "%s/rogue.cert", e->dir);
	assert_int_equal(curve_init_dir(keys, &err), 0);
	assert_int_equal(curve_new_key(keys, "node-b", &err), 0);
	assert_int_equal(curve_ensure_cert(rogue_key, &err), 0);

	so.key = server_key;
	so.allow_dir = allowed;
	if (peer_server_start(e->srv, &so, &e->server, &err) < 0)
		fail_msg("peer_server_start: %s", err.msg);
	assert_true(kiln_startswith(peer_server_endpoint(e->server), "tcp://127.0.0.1:"));
	assert_string_not_equal(peer_server_endpoint(e->server), "tcp://127.0.0.1:0");
	assert_int_equal(strlen(peer_server_key(e->server)), PEER_KEY_TXT - 1);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	p.key = peer_server_key(e->server);

	/* a known node's key: served */
	start_fetcher(e, client_key);
	submit(e, fetch_msg(e, one, 1, &p, 1));
	m = wait_done(e);
	failed(m, &n);
	assert_int_equal(n, 0);
	assert_int_equal(u64(m, "fetched"), 1);
	assert_int_equal(u64(m, "bytes"), e->size[3]);
	proto_msg_free(m);
	assert_same_blob(e, 3);
	peer_fetcher_free(e->fetcher);

	/* a key the allow-list does not hold: refused, and said so */
	e->fetcher = NULL;
	start_fetcher(e, rogue_key);
	submit(e, fetch_msg(e, other, 1, &p, 1));
	m = wait_done(e);
	assert_int_equal(only_failure(m, &e->d[2], msg, sizeof(msg)), KILN_EAUTH);
	assert_non_null(strstr(msg, "node-a"));
	assert_non_null(strstr(msg, "allow-list"));
	assert_int_equal(u64(m, "fetched"), 0);
	proto_msg_free(m);
	assert_false(cas_has(e->cli, &e->d[2]));
}

static void
missing_blob_fails_clearly(void **state)
{
	struct env *e = *state;
	char ep[PEER_ENDPOINT_MAX], msg[512], ds[DIGEST_STR_SIZE];
	struct tpeer p = { "node-a", ep, NULL };
	const int idx[2] = { 0, 1 };
	struct proto_msg *m;

	/* blob 1 only on the fetching side's wish list, not on the server */
	{
		char path[PATH_MAX];

		assert_int_equal(cas_path(e->srv, &e->d[1], path, sizeof(path)), 0);
		assert_int_equal(unlink(path), 0);
		assert_false(cas_has(e->srv, &e->d[1]));
	}
	start_ipc_server(e, 0);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	start_fetcher(e, NULL);
	submit(e, fetch_msg(e, idx, 2, &p, 1));
	m = wait_done(e);
	assert_int_equal(only_failure(m, &e->d[1], msg, sizeof(msg)), ENOENT);
	assert_non_null(strstr(msg, "node-a"));
	assert_non_null(strstr(msg, "not on this node"));
	assert_non_null(strstr(msg, digest_fmt(&e->d[1], ds)));
	assert_int_equal(u64(m, "fetched"), 1);
	proto_msg_free(m);
	assert_false(cas_has(e->cli, &e->d[1]));
	assert_same_blob(e, 0);
}

static void
corrupt_blob_is_not_stored(void **state)
{
	struct env *e = *state;
	char ep[PEER_ENDPOINT_MAX], msg[512], path[PATH_MAX], tmp[256];
	struct tpeer p = { "node-a", ep, NULL };
	const int idx[1] = { 3 };
	unsigned char *bad;
	struct proto_msg *m;

	/* Same size, other bytes, under the digest's own name: the server's
	 * index still trusts it, so it is served as it is. */
	assert_int_equal(cas_path(e->srv, &e->d[3], path, sizeof(path)), 0);
	bad = random_bytes(e->size[3], 99);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, bad, e->size[3], 0444), 0);
	free(bad);

	start_ipc_server(e, 0);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	start_fetcher(e, NULL);
	submit(e, fetch_msg(e, idx, 1, &p, 1));
	m = wait_done(e);
	assert_int_equal(only_failure(m, &e->d[3], msg, sizeof(msg)), EBADMSG);
	assert_non_null(strstr(msg, "expected"));
	assert_int_equal(u64(m, "fetched"), 0);
	proto_msg_free(m);
	assert_false(cas_has(e->cli, &e->d[3]));
	snprintf(tmp, sizeof(tmp), "%s/tmp", e->cli_dir);
	assert_int_equal(count_files(tmp), 0);
}

/* The server side of resuming: a second peer.get at an offset gets exactly
 * the rest, with offsets counted from there. */
static void
server_serves_from_offset(void **state)
{
	struct env *e = *state;
	const uint64_t half = 2 * (uint64_t) PROTO_CHUNK_SIZE;
	unsigned char *buf = malloc(e->size[3]);
	struct proto_msg *m;
	size_t len = 0, rest = 0;
	zsock_t *c;
	bool eof;

	start_ipc_server(e, 0);
	c = dealer(peer_server_endpoint(e->server));
	send_get(c, 1, &e->d[3], 0);
	m = recv_msg(c, NULL);
	assert_string_equal(proto_msg_type(m), "peer.blob");
	assert_int_equal(u64(m, "size"), e->size[3]);
	assert_int_equal(u64(m, "offset"), 0);
	proto_msg_free(m);
	assert_false(recv_chunk(c, 1, 0, buf, &len));
	assert_false(recv_chunk(c, 1, PROTO_CHUNK_SIZE, buf, &len));
	assert_int_equal(len, half);
	send_simple(c, NULL, "xfer.abort", 1, 0);
	zsock_destroy(&c);

	c = dealer(peer_server_endpoint(e->server));
	send_get(c, 7, &e->d[3], half);
	m = recv_msg(c, NULL);
	assert_string_equal(proto_msg_type(m), "peer.blob");
	assert_int_equal(u64(m, "offset"), half);
	proto_msg_free(m);
	do {
		size_t before = len;

		eof = recv_chunk(c, 7, rest, buf, &len);
		rest += len - before;
		send_simple(c, NULL, "xfer.credit", 7, 1);
	} while (!eof);
	assert_int_equal(len, e->size[3]);
	assert_memory_equal(buf, e->data[3], len);

	/* past the end */
	send_get(c, 8, &e->d[3], e->size[3] + 1);
	m = recv_msg(c, NULL);
	assert_string_equal(proto_msg_type(m), "xfer.abort");
	assert_int_equal(u64(m, "code"), EINVAL);
	proto_msg_free(m);
	zsock_destroy(&c);
	free(buf);
}

/* The fetcher side: a first peer sends two chunks and drops the
 * connection; the blob is finished from the second peer, from where the
 * first stopped. */
static void
fetcher_resumes_on_next_peer(void **state)
{
	struct env *e = *state;
	char fake_ep[PEER_ENDPOINT_MAX], ep[PEER_ENDPOINT_MAX], ds[DIGEST_STR_SIZE];
	struct tpeer peers[2] = { { "flaky", fake_ep, NULL }, { "node-a", ep, NULL } };
	const int idx[1] = { 3 };
	struct proto_writer pw;
	struct proto_msg *m;
	zframe_t *rid = NULL;
	zsock_t *fake;
	uint64_t stream;
	uint32_t n;

	start_ipc_server(e, 0);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	snprintf(fake_ep, sizeof(fake_ep), "ipc://%s/flaky.sock", e->dir);
	fake = zsock_new(ZMQ_ROUTER);
	assert_non_null(fake);
	zsock_set_rcvtimeo(fake, WAIT_MS);
	assert_true(zsock_bind(fake, "%s", fake_ep) >= 0);
	start_fetcher(e, NULL);
	submit(e, fetch_msg(e, idx, 1, peers, 2));

	m = recv_msg(fake, &rid);
	assert_string_equal(proto_msg_type(m), "peer.get");
	assert_int_equal(u64(m, "offset"), 0);
	stream = u64(m, "stream");
	proto_msg_free(m);
	proto_writer_init(&pw, "peer.blob", stream);
	proto_w_u64(&pw, "stream", stream);
	proto_w_str(&pw, "digest", digest_fmt(&e->d[3], ds));
	proto_w_u64(&pw, "size", e->size[3]);
	proto_w_u64(&pw, "offset", 0);
	assert_int_equal(proto_send(fake, rid, &pw), 0);
	proto_writer_release(&pw);
	for (uint64_t k = 0; k < 2; k++) {
		proto_writer_init(&pw, "xfer.data", stream);
		proto_w_u64(&pw, "stream", stream);
		proto_w_u64(&pw, "off", k * PROTO_CHUNK_SIZE);
		proto_w_bin(&pw, "data", e->data[3] + k * PROTO_CHUNK_SIZE, PROTO_CHUNK_SIZE);
		proto_w_bool(&pw, "eof", false);
		assert_int_equal(proto_send(fake, rid, &pw), 0);
		proto_writer_release(&pw);
	}
	/* a credit per chunk stored: both are in the fetcher's temp file */
	zframe_destroy(&rid);
	for (int k = 0; k < 2; k++) {
		m = recv_msg(fake, &rid);
		zframe_destroy(&rid);
		assert_string_equal(proto_msg_type(m), "xfer.credit");
		proto_msg_free(m);
	}
	zsock_destroy(&fake);

	m = wait_done(e);
	failed(m, &n);
	assert_int_equal(n, 0);
	assert_int_equal(u64(m, "fetched"), 1);
	/* every byte once: a restart from 0 would count the two chunks twice */
	assert_int_equal(u64(m, "bytes"), e->size[3]);
	proto_msg_free(m);
	assert_same_blob(e, 3);
}

/* A peer nobody listens for is passed over at once (its connect fails),
 * not after the silence timeout. */
static void
dead_peer_is_skipped(void **state)
{
	struct env *e = *state;
	char dead[PEER_ENDPOINT_MAX], ep[PEER_ENDPOINT_MAX], msg[512];
	struct tpeer peers[2] = { { "gone", dead, NULL }, { "node-a", ep, NULL } };
	const int idx[1] = { 2 };
	struct proto_msg *m;
	int64_t t0;
	uint32_t n;

	start_ipc_server(e, 0);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	snprintf(dead, sizeof(dead), "ipc://%s/nobody.sock", e->dir);
	start_fetcher(e, NULL);
	t0 = kiln_now_ms();
	submit(e, fetch_msg(e, idx, 1, peers, 2));
	m = wait_done(e);
	assert_true(kiln_now_ms() - t0 < 2500);     /* idle_ms is 3000 */
	failed(m, &n);
	assert_int_equal(n, 0);
	assert_int_equal(u64(m, "fetched"), 1);
	proto_msg_free(m);
	assert_same_blob(e, 2);

	/* alone, it fails after its rounds, saying why */
	peers[1] = peers[0];
	t0 = kiln_now_ms();
	submit(e, fetch_msg(e, (const int[]) { 3 }, 1, peers, 1));
	m = wait_done(e);
	assert_true(kiln_now_ms() - t0 < 2500);
	assert_int_equal(only_failure(m, &e->d[3], msg, sizeof(msg)), ECONNREFUSED);
	assert_non_null(strstr(msg, "gone: cannot connect to ipc://"));
	proto_msg_free(m);
}

static void
busy_server_refuses_and_fetcher_waits(void **state)
{
	struct env *e = *state;
	char ep[PEER_ENDPOINT_MAX];
	struct tpeer p = { "node-a", ep, NULL };
	const int idx[1] = { 1 };
	struct proto_msg *m;
	uint32_t n;
	zsock_t *c;

	start_ipc_server(e, 1);
	snprintf(ep, sizeof(ep), "%s", peer_server_endpoint(e->server));
	c = dealer(ep);
	/* more chunks than the window: without credit it stays open */
	send_get(c, 1, &e->d[BIG], 0);
	m = recv_msg(c, NULL);
	assert_string_equal(proto_msg_type(m), "peer.blob");
	proto_msg_free(m);
	for (int k = 0; k < XFER_WINDOW; k++) {
		m = recv_msg(c, NULL);
		assert_string_equal(proto_msg_type(m), "xfer.data");
		proto_msg_free(m);
	}
	send_get(c, 2, &e->d[1], 0);
	m = recv_msg(c, NULL);
	assert_string_equal(proto_msg_type(m), "xfer.abort");
	assert_int_equal(u64(m, "stream"), 2);
	assert_int_equal(u64(m, "code"), EBUSY);
	proto_msg_free(m);

	/* the fetcher is refused too, retries, and gets it once the slot
	 * is free */
	start_fetcher(e, NULL);
	submit(e, fetch_msg(e, idx, 1, &p, 1));
	zclock_sleep(300);
	assert_false(cas_has(e->cli, &e->d[1]));
	send_simple(c, NULL, "xfer.abort", 1, 0);
	m = wait_done(e);
	failed(m, &n);
	assert_int_equal(n, 0);
	assert_int_equal(u64(m, "fetched"), 1);
	proto_msg_free(m);
	assert_same_blob(e, 1);
	zsock_destroy(&c);
}

static void
malformed_fetch_is_refused(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	struct tpeer bad_key = { "n", "tcp://127.0.0.1:1", "short" };
	struct tpeer bad_ep = { "n", "http://x", NULL };
	const int idx[1] = { 1 };
	struct proto_writer pw;
	struct proto_msg *m;

	start_fetcher(e, NULL);
	proto_writer_init(&pw, "blob.fetch", 42);
	proto_w_str(&pw, "build", "b1");
	m = finish(&pw);
	assert_int_equal(peer_fetcher_submit(e->fetcher, m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "blobs"));
	proto_msg_free(m);

	m = fetch_msg(e, idx, 1, &bad_key, 1);
	assert_int_equal(peer_fetcher_submit(e->fetcher, m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "Z85"));
	proto_msg_free(m);

	m = fetch_msg(e, idx, 1, &bad_ep, 1);
	assert_int_equal(peer_fetcher_submit(e->fetcher, m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "endpoint"));
	proto_msg_free(m);

	/* nothing was queued: no answer comes */
	assert_false(zsock_events(peer_fetcher_sock(e->fetcher)) & ZMQ_POLLIN);
	zclock_sleep(100);
	assert_false(zsock_events(peer_fetcher_sock(e->fetcher)) & ZMQ_POLLIN);
}

static void
default_endpoints(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	char ep[PEER_ENDPOINT_MAX], want[PATH_MAX + 16], deep[PATH_MAX], real[PATH_MAX];
	struct stat st;

	assert_int_equal(peer_default_endpoint("tcp://10.0.0.1:5555", e->dir, ep, sizeof(ep), &err), 0);
	assert_string_equal(ep, "tcp://127.0.0.1:0");

	assert_non_null(realpath(e->dir, real));
	assert_int_equal(peer_default_endpoint("ipc:///x/coordinator.sock", e->dir, ep, sizeof(ep), &err), 0);
	snprintf(want, sizeof(want), "ipc://%s/blob.sock", real);
	assert_string_equal(ep, want);

	/* too deep for a unix socket address */
	snprintf(deep, sizeof(deep), "%s/%0100d", e->dir, 0);
	assert_int_equal(kiln_mkdir_p(deep, 0700), 0);
	assert_int_equal(peer_default_endpoint("ipc:///x/c.sock", deep, ep, sizeof(ep), &err), 0);
	snprintf(want, sizeof(want), "ipc:///tmp/kiln-%u-", (unsigned) getuid());
	assert_true(kiln_startswith(ep, want));
	assert_true(strlen(ep) < 108 + 6);
	*strrchr(ep, '/') = '\0';
	assert_int_equal(stat(ep + 6, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	(void) rmdir(ep + 6);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(ipc_fetch_is_identical, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(concurrent_requests_share_a_transfer, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(tcp_curve_fetch, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(missing_blob_fails_clearly, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(corrupt_blob_is_not_stored, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(server_serves_from_offset, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(fetcher_resumes_on_next_peer, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(dead_peer_is_skipped, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(busy_server_refuses_and_fetcher_waits, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(malformed_fetch_is_refused, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(default_endpoints, env_setup, env_teardown),
	};

	zsys_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
