/* Unit tests for coordinator/nodes.c: what a worker's registration leaves
 * in the node table, capacity above all (node_capacity), and what the
 * table tells `builder ls`/`inspect` through nodes_pack. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "nodes.h"
#include "proto.h"

/* Register name from peer rid with capacity cap (none when cap < 0). */
static struct node *
register_node(struct nodes *ns, const char *rid, const char *name, int64_t cap)
{
	struct peer p = { NULL, zframe_new(rid, strlen(rid)) };
	struct proto_writer pw;
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };
	struct node *n = NULL;
	const void *data;
	size_t len;
	msgpack_packer *pk;

	proto_writer_init(&pw, "worker.register", 0);
	proto_w_str(&pw, "name", name);
	pk = proto_w_key(&pw, "platforms");
	msgpack_pack_array(pk, 1);
	proto_pack_str(pk, "linux/amd64");
	if (cap >= 0)
		proto_w_u64(&pw, "capacity", (uint64_t) cap);
	data = proto_writer_data(&pw, &len);
	assert_int_equal(proto_decode(data, len, &m, &err), 0);
	assert_int_equal(nodes_register(ns, &p, m, &n, &err), 0);
	proto_msg_free(m);
	proto_writer_release(&pw);
	peer_release(&p);
	return n;
}

static void
capacity_is_kept_per_node(void **state)
{
	struct nodes *ns = nodes_new(1000);

	(void) state;
	assert_non_null(ns);
	assert_int_equal(node_capacity(register_node(ns, "a", "n0", 1)), 1);
	assert_int_equal(node_capacity(register_node(ns, "b", "n1", 2)), 2);
	assert_int_equal(node_capacity(register_node(ns, "c", "big", 64)), 64);
	/* Registering again (a restarted worker) takes the new value. */
	assert_int_equal(node_capacity(register_node(ns, "d", "n0", 3)), 3);
	nodes_free(ns);
}

static void
capacity_missing_zero_or_huge(void **state)
{
	struct nodes *ns = nodes_new(1000);

	(void) state;
	assert_int_equal(node_capacity(register_node(ns, "a", "old", -1)), 1);
	assert_int_equal(node_capacity(register_node(ns, "b", "zero", 0)), 1);
	assert_int_equal(node_capacity(register_node(ns, "c", "huge", 1ll << 40)), NODE_CAPACITY_MAX);
	nodes_free(ns);
}

static void
capacity_is_listed(void **state)
{
	struct nodes *ns = nodes_new(1000);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked u;
	const msgpack_object *a;
	uint64_t cap = 0;

	(void) state;
	(void) register_node(ns, "a", "n0", 2);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	nodes_pack(ns, &pk, 0);
	msgpack_unpacked_init(&u);
	assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
	a = &u.data;
	assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(a->via.array.size, 1);
	assert_int_equal(proto_obj_get_u64(&a->via.array.ptr[0], "capacity", &cap), 0);
	assert_int_equal(cap, 2);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	nodes_free(ns);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(capacity_is_kept_per_node),
		cmocka_unit_test(capacity_missing_zero_or_huge),
		cmocka_unit_test(capacity_is_listed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
