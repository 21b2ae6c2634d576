/* The CLI's coordinator connection (cli/conn.c) against a tiny ROUTER run
 * in a czmq actor: ping and nodes.list, error replies crossing unchanged,
 * late replies dropped by id, undecodable frames refused, timeouts that say
 * what to check. Over ipc://, and over tcp:// with CurveZMQ: an allowed
 * key gets in, a stranger's times out with the allow-list hint. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <czmq.h>

#include "curve.h"
#include "err.h"
#include "proto.h"
#include "util.h"
#include "../../cli/conn.h"

struct server_cfg {
	char endpoint[256];             /* bind here; tcp port filled in */
	const char *curve_dir;          /* NULL: plain */
	int port;
};

/* What nodes.list answers: 0 well-formed, 1 a malformed entry. */
static volatile int nodes_mode;

static char tmpdir[64];
static struct server_cfg ipc_cfg, tcp_cfg;
static zactor_t *ipc_server, *tcp_server, *auth;

static void
reply_nodes(zsock_t *router, zframe_t *rid, uint64_t id)
{
	struct proto_writer w;
	msgpack_packer *pk;

	proto_writer_init(&w, "nodes", id);
	pk = proto_w_key(&w, "nodes");
	if (nodes_mode == 1) {
		msgpack_pack_array(pk, 1);
		msgpack_pack_map(pk, 1);
		proto_pack_str(pk, "status");
		proto_pack_str(pk, "ready");            /* no name */
	} else {
		msgpack_pack_array(pk, 2);
		msgpack_pack_map(pk, 7);
		proto_pack_str(pk, "name");
		proto_pack_str(pk, "n1");
		proto_pack_str(pk, "status");
		proto_pack_str(pk, "ready");
		proto_pack_str(pk, "platforms");
		msgpack_pack_array(pk, 1);
		proto_pack_str(pk, "linux/amd64");
		proto_pack_str(pk, "emulated");
		msgpack_pack_array(pk, 2);
		proto_pack_str(pk, "linux/arm64");
		proto_pack_str(pk, "linux/arm/v7");
		proto_pack_str(pk, "capacity");
		msgpack_pack_uint64(pk, 4);
		proto_pack_str(pk, "load");
		msgpack_pack_uint64(pk, 1);
		proto_pack_str(pk, "last_seen_ms");
		msgpack_pack_uint64(pk, 10);
		/* a minimal entry: lists and counters left out */
		msgpack_pack_map(pk, 2);
		proto_pack_str(pk, "name");
		proto_pack_str(pk, "n2");
		proto_pack_str(pk, "status");
		proto_pack_str(pk, "gone");
	}
	(void) proto_send(router, rid, &w);
	proto_writer_release(&w);
}

static void
reply_simple(zsock_t *router, zframe_t *rid, const char *type, uint64_t id)
{
	struct proto_writer w;

	proto_writer_init(&w, type, id);
	if (strcmp(type, "pong") == 0)
		proto_w_str(&w, "version", "test-1");
	(void) proto_send(router, rid, &w);
	proto_writer_release(&w);
}

static void
reply_error(zsock_t *router, zframe_t *rid, uint64_t id, int code, const char *msg)
{
	struct proto_writer w;

	proto_writer_init(&w, "error", id);
	proto_w_u64(&w, "code", (uint64_t) code);
	proto_w_str(&w, "msg", msg);
	(void) proto_send(router, rid, &w);
	proto_writer_release(&w);
}

static void
server_handle(zsock_t *router)
{
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;
	zframe_t *rid = NULL;
	const char *t;
	uint64_t id;

	if (proto_recv(router, &rid, &m, &err) < 0) {
		if (rid)
			reply_error(router, rid, 0, err.code, err.msg);
		zframe_destroy(&rid);
		return;
	}
	t = proto_msg_type(m);
	id = proto_msg_id(m);
	if (strcmp(t, "ping") == 0) {
		reply_simple(router, rid, "pong", id);
	} else if (strcmp(t, "nodes.list") == 0) {
		reply_nodes(router, rid, id);
	} else if (strcmp(t, "fail") == 0) {
		reply_error(router, rid, id, KILN_EAUTH, "denied: test says no");
	} else if (strcmp(t, "stale") == 0) {
		/* someone else's reply first, then ours */
		reply_simple(router, rid, "pong", id + 1000);
		reply_simple(router, rid, "pong", id);
	} else if (strcmp(t, "slow") == 0) {
		zclock_sleep(300);
		reply_simple(router, rid, "pong", id);
	} else if (strcmp(t, "garbage") == 0) {
		zframe_t *junk = zframe_new("\xc1\xc1", 2);

		(void) zframe_send(&rid, router, ZFRAME_MORE | ZFRAME_REUSE);
		(void) zframe_send(&junk, router, 0);
	} else if (strcmp(t, "silent") != 0) {
		reply_error(router, rid, id, KILN_EPROTO, "unknown message type");
	}
	zframe_destroy(&rid);
	proto_msg_free(m);
}

static void
server_actor(zsock_t *pipe, void *args)
{
	struct server_cfg *cfg = args;
	struct kiln_err err = { 0 };
	zsock_t *router = zsock_new(ZMQ_ROUTER);
	zpoller_t *poller;
	int port;

	if (cfg->curve_dir && curve_server_apply(router, cfg->curve_dir, &err) < 0) {
		fprintf(stderr, "server: %s\n", err.msg);
		zsock_destroy(&router);
		zsock_signal(pipe, 1);
		return;
	}
	port = zsock_bind(router, "%s", cfg->endpoint);
	if (port < 0) {
		zsock_destroy(&router);
		zsock_signal(pipe, 1);
		return;
	}
	cfg->port = port;
	zsock_signal(pipe, 0);
	poller = zpoller_new(pipe, router, NULL);
	for (;;) {
		void *which = zpoller_wait(poller, -1);

		if (which == router) {
			server_handle(router);
			continue;
		}
		/* $TERM from zactor_destroy, or an interrupt */
		break;
	}
	zpoller_destroy(&poller);
	zsock_destroy(&router);
}

static int
group_setup(void **state)
{
	struct kiln_err err = { 0 };
	char dir[128];

	(void) state;
	zsys_handler_set(NULL);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kiln-conn-test.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;

	snprintf(ipc_cfg.endpoint, sizeof(ipc_cfg.endpoint), "ipc://%s/coordinator.sock", tmpdir);
	ipc_server = zactor_new(server_actor, &ipc_cfg);
	if (!ipc_server)
		return -1;

	if (!zsys_has_curve())
		return 0;
	snprintf(dir, sizeof(dir), "%s/keys", tmpdir);
	if (curve_init_dir(dir, &err) < 0 || curve_new_key(dir, "client", &err) < 0) {
		fprintf(stderr, "curve setup: %s\n", err.msg);
		return -1;
	}
	auth = curve_auth_start(dir, &err);
	if (!auth) {
		fprintf(stderr, "curve auth: %s\n", err.msg);
		return -1;
	}
	tcp_cfg.curve_dir = strdup(dir);
	snprintf(tcp_cfg.endpoint, sizeof(tcp_cfg.endpoint), "tcp://127.0.0.1:*");
	tcp_server = zactor_new(server_actor, &tcp_cfg);
	return tcp_server ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void) state;
	zactor_destroy(&tcp_server);
	zactor_destroy(&ipc_server);
	zactor_destroy(&auth);
	free((char *) tcp_cfg.curve_dir);
	return kiln_rm_rf(tmpdir);
}

static struct conn *
open_ipc(void)
{
	struct conn_opts o = { 0 };
	struct kiln_err err = { 0 };
	struct conn *c = NULL;

	snprintf(o.endpoint, sizeof(o.endpoint), "%s", ipc_cfg.endpoint);
	if (conn_open(&o, &c, &err) < 0)
		fail_msg("conn_open: %s", err.msg);
	return c;
}

static int
request(struct conn *c, const char *type, int timeout_ms, struct proto_msg **ret,
	struct kiln_err *err)
{
	struct proto_writer w;
	int r;

	proto_writer_init(&w, type, conn_next_id(c));
	r = conn_request(c, &w, timeout_ms, ret, err);
	proto_writer_release(&w);
	return r;
}

static void
ping_over_ipc(void **state)
{
	struct kiln_err err = { 0 };
	struct conn *c = open_ipc();
	char version[32];

	(void) state;
	assert_int_equal(conn_ping(c, 2000, version, sizeof(version), &err), 0);
	assert_string_equal(version, "test-1");
	assert_string_equal(conn_endpoint(c), ipc_cfg.endpoint);
	assert_non_null(conn_sock(c));
	conn_free(c);
}

static void
nodes_list_parses(void **state)
{
	struct kiln_err err = { 0 };
	struct conn *c = open_ipc();
	struct conn_node *nodes = NULL;
	size_t n = 0;

	(void) state;
	nodes_mode = 0;
	assert_int_equal(conn_nodes_list(c, 2000, &nodes, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(nodes[0].name, "n1");
	assert_string_equal(nodes[0].status, "ready");
	assert_int_equal(nodes[0].n_platforms, 1);
	assert_string_equal(nodes[0].platforms[0], "linux/amd64");
	assert_int_equal(nodes[0].n_emulated, 2);
	assert_string_equal(nodes[0].emulated[1], "linux/arm/v7");
	assert_int_equal(nodes[0].capacity, 4);
	assert_int_equal(nodes[0].load, 1);
	assert_int_equal(nodes[0].last_seen_ms, 10);
	assert_string_equal(nodes[1].name, "n2");
	assert_string_equal(nodes[1].status, "gone");
	assert_int_equal(nodes[1].n_platforms, 0);
	assert_int_equal(nodes[1].n_emulated, 0);
	conn_nodes_free(nodes, n);

	nodes_mode = 1;
	nodes = NULL;
	assert_int_equal(conn_nodes_list(c, 2000, &nodes, &n, &err), -KILN_EPROTO);
	assert_null(nodes);
	assert_non_null(strstr(err.msg, "malformed entry 0"));
	nodes_mode = 0;
	conn_free(c);
}

static void
error_reply_crosses_unchanged(void **state)
{
	struct kiln_err err = { 0 };
	struct conn *c = open_ipc();
	struct proto_msg *m = NULL;

	(void) state;
	assert_int_equal(request(c, "fail", 2000, &m, &err), -KILN_EAUTH);
	assert_null(m);
	assert_int_equal(err.code, KILN_EAUTH);
	assert_string_equal(err.msg, "denied: test says no");
	/* and the connection is still good */
	assert_int_equal(conn_ping(c, 2000, NULL, 0, &err), 0);
	conn_free(c);
}

static void
replies_matched_by_id(void **state)
{
	struct kiln_err err = { 0 };
	struct conn *c = open_ipc();
	struct proto_msg *m = NULL;
	struct proto_writer w;
	uint64_t id;

	(void) state;
	id = conn_next_id(c);
	proto_writer_init(&w, "stale", id);
	assert_int_equal(conn_request(c, &w, 2000, &m, &err), 0);
	proto_writer_release(&w);
	assert_int_equal(proto_msg_id(m), id);
	proto_msg_free(m);

	/* A reply that comes after we gave up must not answer the next
	 * request. */
	assert_int_equal(request(c, "slow", 100, &m, &err), -ETIMEDOUT);
	assert_int_equal(conn_ping(c, 2000, NULL, 0, &err), 0);
	conn_free(c);
}

static void
send_and_recv_separately(void **state)
{
	struct kiln_err err = { 0 };
	struct conn *c = open_ipc();
	struct proto_msg *m = NULL;
	struct proto_writer w;
	uint64_t a, b;

	(void) state;
	a = conn_next_id(c);
	b = conn_next_id(c);
	assert_true(a != 0 && b != a);
	proto_writer_init(&w, "ping", a);
	assert_int_equal(conn_send(c, &w, &err), 0);
	proto_writer_release(&w);
	proto_writer_init(&w, "fail", b);
	assert_int_equal(conn_send(c, &w, &err), 0);
	proto_writer_release(&w);

	assert_int_equal(conn_recv(c, 2000, &m, &err), 0);
	assert_string_equal(proto_msg_type(m), "pong");
	assert_int_equal(conn_reply_error(m, &err), 0);
	proto_msg_free(m);
	assert_int_equal(conn_recv(c, 2000, &m, &err), 0);
	assert_int_equal(proto_msg_id(m), b);
	assert_int_equal(conn_reply_error(m, &err), -KILN_EAUTH);
	assert_string_equal(err.msg, "denied: test says no");
	proto_msg_free(m);

	assert_int_equal(conn_recv(c, 50, &m, &err), -ETIMEDOUT);
	conn_free(c);
}

static void
garbage_is_refused(void **state)
{
	struct kiln_err err = { 0 };
	struct conn *c = open_ipc();
	struct proto_msg *m = NULL;

	(void) state;
	assert_int_equal(request(c, "garbage", 2000, &m, &err), -KILN_EPROTO);
	assert_null(m);
	assert_int_equal(conn_ping(c, 2000, NULL, 0, &err), 0);
	conn_free(c);
}

static void
timeout_says_what_to_check(void **state)
{
	struct conn_opts o = { 0 };
	struct kiln_err err = { 0 };
	struct conn *c = NULL;
	int64_t t0;

	(void) state;
	snprintf(o.endpoint, sizeof(o.endpoint), "ipc://%s/nobody.sock", tmpdir);
	assert_int_equal(conn_open(&o, &c, &err), 0);
	t0 = kiln_now_ms();
	assert_int_equal(conn_ping(c, 200, NULL, 0, &err), -ETIMEDOUT);
	assert_true(kiln_now_ms() - t0 >= 190);
	assert_true(kiln_now_ms() - t0 < 2000);
	assert_non_null(strstr(err.msg, "no answer from coordinator at ipc://"));
	assert_non_null(strstr(err.msg, "within 0.2s (is it running?)"));
	conn_free(c);
}

static void
open_refuses_bad_options(void **state)
{
	struct conn_opts o = { 0 };
	struct kiln_err err = { 0 };
	struct conn *c = NULL;

	(void) state;
	snprintf(o.endpoint, sizeof(o.endpoint), "http://example.com");
	assert_int_equal(conn_open(&o, &c, &err), -EINVAL);
	snprintf(o.endpoint, sizeof(o.endpoint), "tcp://127.0.0.1:1");
	assert_int_equal(conn_open(&o, &c, &err), -EINVAL);        /* no certs */
	snprintf(o.server_cert, sizeof(o.server_cert), "%s/missing.cert", tmpdir);
	snprintf(o.client_cert, sizeof(o.client_cert), "%s/missing2.cert", tmpdir);
	assert_true(conn_open(&o, &c, &err) < 0);
	assert_null(c);
	conn_free(NULL);
}

static void
tcp_opts(struct conn_opts *o, const char *client)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->endpoint, sizeof(o->endpoint), "tcp://127.0.0.1:%d", tcp_cfg.port);
	snprintf(o->server_cert, sizeof(o->server_cert), "%s/keys/server.cert", tmpdir);
	snprintf(o->client_cert, sizeof(o->client_cert), "%s", client);
}

static void
curve_allowed_key_gets_in(void **state)
{
	struct conn_opts o;
	struct kiln_err err = { 0 };
	struct conn *c = NULL;
	struct conn_node *nodes = NULL;
	char client[128];
	size_t n = 0;

	(void) state;
	if (!tcp_server) {
		print_message("libzmq has no CURVE support: tcp:// not tested\n");
		skip();
	}
	snprintf(client, sizeof(client), "%s/keys/client.cert", tmpdir);
	tcp_opts(&o, client);
	assert_int_equal(conn_open(&o, &c, &err), 0);
	assert_int_equal(conn_ping(c, 3000, NULL, 0, &err), 0);
	assert_int_equal(conn_nodes_list(c, 3000, &nodes, &n, &err), 0);
	assert_int_equal(n, 2);
	conn_nodes_free(nodes, n);
	assert_int_equal(request(c, "fail", 3000, &(struct proto_msg *) { NULL }, &err), -KILN_EAUTH);
	conn_free(c);
}

static void
curve_stranger_times_out_with_hint(void **state)
{
	struct conn_opts o;
	struct kiln_err err = { 0 };
	struct conn *c = NULL;
	char stranger[128];

	(void) state;
	if (!tcp_server) {
		print_message("libzmq has no CURVE support: tcp:// not tested\n");
		skip();
	}
	snprintf(stranger, sizeof(stranger), "%s/stranger.cert", tmpdir);
	assert_int_equal(curve_ensure_cert(stranger, &err), 0);
	tcp_opts(&o, stranger);
	assert_int_equal(conn_open(&o, &c, &err), 0);
	assert_int_equal(conn_ping(c, 500, NULL, 0, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "no answer from coordinator at tcp://127.0.0.1:"));
	assert_non_null(strstr(err.msg, "is this client's key on its allow-list?"));
	conn_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ping_over_ipc),
		cmocka_unit_test(nodes_list_parses),
		cmocka_unit_test(error_reply_crosses_unchanged),
		cmocka_unit_test(replies_matched_by_id),
		cmocka_unit_test(send_and_recv_separately),
		cmocka_unit_test(garbage_is_refused),
		cmocka_unit_test(timeout_says_what_to_check),
		cmocka_unit_test(open_refuses_bad_options),
		cmocka_unit_test(curve_allowed_key_gets_in),
		cmocka_unit_test(curve_stranger_times_out_with_hint),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
