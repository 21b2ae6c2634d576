/* Tests for the wire codec (proto) and CurveZMQ setup (curve): round trips
 * of every field type, refusal of hostile frames (truncated at every
 * length, oversized, trailing bytes, bad envelopes, huge declared sizes,
 * deep nesting), real send/recv over ZeroMQ, and a CURVE server that
 * answers an allowed client but never hears from an unknown one. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "curve.h"
#include "err.h"
#include "proto.h"
#include "util.h"

/* A message with one field of every type plus nested values. */
static void
build_rich(struct proto_writer *w)
{
	static const unsigned char blob[] = { 0, 1, 2, 0xff, 0xc1 };
	msgpack_packer *pk;

	proto_writer_init(w, "test.rich", 42);
	proto_w_str(w, "s", "hello");
	proto_w_str(w, "empty", "");
	proto_w_str(w, "nil", NULL);
	proto_w_strn(w, "sn", "a\0b", 3);
	proto_w_u64(w, "u0", 0);
	proto_w_u64(w, "u127", 127);
	proto_w_u64(w, "u128", 128);
	proto_w_u64(w, "u32", 1ull << 32);
	proto_w_u64(w, "umax", UINT64_MAX);
	proto_w_i64(w, "ineg", -1);
	proto_w_i64(w, "imin", INT64_MIN);
	proto_w_i64(w, "ipos", 1000);
	proto_w_bool(w, "yes", true);
	proto_w_bool(w, "no", false);
	proto_w_bin(w, "bin", blob, sizeof(blob));
	proto_w_bin(w, "bin0", NULL, 0);

	pk = proto_w_key(w, "map");
	msgpack_pack_map(pk, 3);
	proto_pack_str(pk, "name");
	proto_pack_str(pk, "inner");
	proto_pack_str(pk, "n");
	msgpack_pack_int64(pk, -7);
	proto_pack_str(pk, "list");
	msgpack_pack_array(pk, 3);
	proto_pack_str(pk, "x");
	proto_pack_str(pk, NULL);
	msgpack_pack_uint64(pk, 9);

	pk = proto_w_key(w, "arr");
	msgpack_pack_array(pk, 2);
	msgpack_pack_map(pk, 1);
	proto_pack_str(pk, "k");
	msgpack_pack_uint64(pk, 5);
	msgpack_pack_array(pk, 0);
}

static void
proto_roundtrip(void **state)
{
	struct proto_writer w;
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };
	const msgpack_object *o, *map, *list;
	const void *bin;
	const char *str;
	size_t len;
	uint64_t u;
	int64_t i;
	bool b;
	char *s;

	(void) state;
	build_rich(&w);
	bin = proto_writer_data(&w, &len);
	assert_int_equal(proto_decode(bin, len, &m, &err), 0);
	proto_writer_release(&w);

	assert_string_equal(proto_msg_type(m), "test.rich");
	assert_int_equal(proto_msg_id(m), 42);
	assert_int_equal(proto_msg_root(m)->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(proto_msg_root(m)->via.map.size, 3 + 18);

	s = proto_msg_strdup(m, "s");
	assert_string_equal(s, "hello");
	free(s);
	s = proto_msg_strdup(m, "empty");
	assert_string_equal(s, "");
	free(s);
	assert_null(proto_msg_strdup(m, "nil"));
	assert_null(proto_msg_get(m, "nil"));
	assert_int_equal(proto_msg_strn(m, "nil", &str, &len), -ENOENT);
	assert_null(proto_msg_strdup(m, "sn"));         /* holds a NUL */
	assert_int_equal(proto_msg_strn(m, "sn", &str, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(str, "a\0b", 3);

	assert_int_equal(proto_msg_u64(m, "u0", &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(proto_msg_u64(m, "u127", &u), 0);
	assert_int_equal(u, 127);
	assert_int_equal(proto_msg_u64(m, "u128", &u), 0);
	assert_int_equal(u, 128);
	assert_int_equal(proto_msg_u64(m, "u32", &u), 0);
	assert_true(u == 1ull << 32);
	assert_int_equal(proto_msg_u64(m, "umax", &u), 0);
	assert_true(u == UINT64_MAX);
	assert_int_equal(proto_msg_i64(m, "umax", &i), -EINVAL);        /* does not fit */
	assert_int_equal(proto_msg_u64(m, "ineg", &u), -EINVAL);
	assert_int_equal(proto_msg_i64(m, "ineg", &i), 0);
	assert_int_equal(i, -1);
	assert_int_equal(proto_msg_i64(m, "imin", &i), 0);
	assert_true(i == INT64_MIN);
	assert_int_equal(proto_msg_i64(m, "ipos", &i), 0);
	assert_int_equal(i, 1000);
	assert_int_equal(proto_msg_u64(m, "ipos", &u), 0);
	assert_int_equal(u, 1000);

	assert_int_equal(proto_msg_bool(m, "yes", &b), 0);
	assert_true(b);
	assert_int_equal(proto_msg_bool(m, "no", &b), 0);
	assert_false(b);
	assert_int_equal(proto_msg_bool(m, "u0", &b), -EINVAL);

	assert_int_equal(proto_msg_bin(m, "bin", &bin, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(bin, "\0\1\2\xff\xc1", 5);
	assert_int_equal(proto_msg_bin(m, "bin0", &bin, &len), 0);
	assert_int_equal(len, 0);
	assert_non_null(bin);           /* msgpack-c says NULL; callers may memcpy */
	assert_non_null(proto_msg_get(m, "empty")->via.str.ptr);
	assert_int_equal(proto_msg_strn(m, "bin", &str, &len), 0);   /* strn takes bin */
	assert_int_equal(len, 5);
	assert_int_equal(proto_msg_bin(m, "s", &bin, &len), -EINVAL);
	assert_null(proto_msg_strdup(m, "bin"));

	/* absent keys and wrong types */
	assert_null(proto_msg_get(m, "nope"));
	assert_int_equal(proto_msg_u64(m, "nope", &u), -ENOENT);
	assert_int_equal(proto_msg_i64(m, "nope", &i), -ENOENT);
	assert_int_equal(proto_msg_bool(m, "nope", &b), -ENOENT);
	assert_int_equal(proto_msg_bin(m, "nope", &bin, &len), -ENOENT);
	assert_int_equal(proto_msg_u64(m, "s", &u), -EINVAL);
	assert_int_equal(proto_msg_i64(m, "s", &i), -EINVAL);
	assert_int_equal(proto_msg_strn(m, "u0", &str, &len), -EINVAL);
	assert_null(proto_msg_get(m, "n"));             /* nested keys stay nested */

	/* nested map and arrays */
	map = proto_msg_get(m, "map");
	assert_non_null(map);
	assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
	s = proto_obj_get_strdup(map, "name");
	assert_string_equal(s, "inner");
	free(s);
	assert_int_equal(proto_obj_get_i64(map, "n", &i), 0);
	assert_int_equal(i, -7);
	assert_int_equal(proto_obj_get_u64(map, "n", &u), -EINVAL);
	assert_int_equal(proto_obj_get_u64(map, "zz", &u), -ENOENT);
	assert_true(proto_obj_is_str(proto_obj_get(map, "name"), "inner"));
	assert_false(proto_obj_is_str(proto_obj_get(map, "name"), "inne"));
	assert_false(proto_obj_is_str(proto_obj_get(map, "n"), "inner"));
	assert_false(proto_obj_is_str(NULL, "inner"));
	list = proto_obj_get(map, "list");
	assert_non_null(list);
	assert_int_equal(list->type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(list->via.array.size, 3);
	assert_true(proto_obj_is_str(&list->via.array.ptr[0], "x"));
	assert_int_equal(list->via.array.ptr[1].type, MSGPACK_OBJECT_NIL);
	assert_null(proto_obj_strdup(&list->via.array.ptr[1]));
	assert_null(proto_obj_get(list, "x"));          /* not a map */
	assert_null(proto_obj_get(NULL, "x"));

	o = proto_msg_get(m, "arr");
	assert_non_null(o);
	assert_int_equal(o->via.array.size, 2);
	assert_int_equal(proto_obj_get_u64(&o->via.array.ptr[0], "k", &u), 0);
	assert_int_equal(u, 5);
	assert_int_equal(o->via.array.ptr[1].type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(o->via.array.ptr[1].via.array.size, 0);

	proto_msg_free(m);
	proto_msg_free(NULL);
}

/* The decoded message must not depend on the buffer it came from. */
static void
proto_decode_copies(void **state)
{
	struct proto_writer w;
	struct proto_msg *m = NULL;
	const void *data;
	char *copy, *s;
	size_t len;

	(void) state;
	proto_writer_init(&w, "t", 1);
	proto_w_str(&w, "k", "value");
	data = proto_writer_data(&w, &len);
	copy = malloc(len);
	memcpy(copy, data, len);
	proto_writer_release(&w);
	assert_int_equal(proto_decode(copy, len, &m, NULL), 0);
	memset(copy, 0, len);
	free(copy);
	s = proto_msg_strdup(m, "k");
	assert_string_equal(s, "value");
	assert_string_equal(proto_msg_type(m), "t");
	free(s);
	proto_msg_free(m);
}

static void
assert_eproto(const void *buf, size_t len)
{
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };

	assert_int_equal(proto_decode(buf, len, &m, &err), -KILN_EPROTO);
	assert_int_equal(err.code, KILN_EPROTO);
	assert_true(err.msg[0] != '\0');
	assert_null(m);
}

static void
proto_truncated_every_length(void **state)
{
	struct proto_writer w;
	const void *data;
	size_t len;
	char *copy;

	(void) state;
	build_rich(&w);
	data = proto_writer_data(&w, &len);
	for (size_t n = 0; n < len; n++) {
		/* a heap copy of exactly n bytes, so ASan catches overreads */
		copy = malloc(n ? n : 1);
		memcpy(copy, data, n);
		assert_eproto(copy, n);
		free(copy);
	}
	proto_writer_release(&w);
}

static void
proto_trailing_bytes(void **state)
{
	struct proto_writer w;
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;
	const void *data;
	size_t len;
	char *buf;

	(void) state;
	proto_writer_init(&w, "t", 1);
	data = proto_writer_data(&w, &len);
	buf = malloc(len + 1);
	memcpy(buf, data, len);
	buf[len] = (char) 0xc0;
	assert_int_equal(proto_decode(buf, len + 1, &m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "trailing"));
	/* two whole messages back to back are refused as well */
	free(buf);
	buf = malloc(2 * len);
	memcpy(buf, data, len);
	memcpy(buf + len, data, len);
	assert_eproto(buf, 2 * len);
	free(buf);
	proto_writer_release(&w);
}

static void
proto_oversized(void **state)
{
	struct proto_writer w;
	struct kiln_err err = { 0 };
	struct proto_msg *m = NULL;
	const void *data, *bin;
	size_t len, blen;
	char *big;

	(void) state;
	big = calloc(1, PROTO_FRAME_MAX + 1);
	assert_non_null(big);
	assert_int_equal(proto_decode(big, PROTO_FRAME_MAX + 1, &m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "exceeds"));

	/* just under the limit is fine */
	proto_writer_init(&w, "big", 7);
	proto_w_bin(&w, "data", big, PROTO_FRAME_MAX - 64);
	data = proto_writer_data(&w, &len);
	assert_true(len <= PROTO_FRAME_MAX);
	assert_int_equal(proto_decode(data, len, &m, &err), 0);
	assert_int_equal(proto_msg_bin(m, "data", &bin, &blen), 0);
	assert_int_equal(blen, PROTO_FRAME_MAX - 64);
	proto_msg_free(m);
	proto_writer_release(&w);

	/* and proto_send refuses what the peer would refuse */
	proto_writer_init(&w, "big", 7);
	proto_w_bin(&w, "data", big, PROTO_FRAME_MAX);
	assert_int_equal(proto_send(NULL, NULL, &w), -EMSGSIZE);
	proto_writer_release(&w);
	free(big);
}

/* Envelopes built by hand with the raw packer. */
struct raw {
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
};

static msgpack_packer *
raw_init(struct raw *r)
{
	msgpack_sbuffer_init(&r->sbuf);
	msgpack_packer_init(&r->pk, &r->sbuf, msgpack_sbuffer_write);
	return &r->pk;
}

static void
raw_expect(struct raw *r, const char *needle)
{
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };

	assert_int_equal(proto_decode(r->sbuf.data, r->sbuf.size, &m, &err), -KILN_EPROTO);
	if (needle && !strstr(err.msg, needle))
		fail_msg("error '%s' does not mention '%s'", err.msg, needle);
	msgpack_sbuffer_destroy(&r->sbuf);
}

static void
raw_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	proto_pack_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

static void
proto_bad_envelopes(void **state)
{
	char type65[66];
	struct raw r;
	msgpack_packer *pk;
	struct proto_msg *m = NULL;

	(void) state;
	/* wrong version */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 2);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "x");
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "version 2");

	/* version as a string */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	proto_pack_str(pk, "v");
	proto_pack_str(pk, "1");
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "x");
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "'v'");

	/* missing id */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 2);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "x");
	raw_expect(&r, "'id'");

	/* negative id */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "x");
	proto_pack_str(pk, "id");
	msgpack_pack_int64(pk, -1);
	raw_expect(&r, "'id'");

	/* missing type */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 2);
	raw_kv_u64(pk, "v", 1);
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "'t'");

	/* type as bin */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	msgpack_pack_bin(pk, 1);
	msgpack_pack_bin_body(pk, "x", 1);
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "'t'");

	/* type with a NUL */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	msgpack_pack_str(pk, 3);
	msgpack_pack_str_body(pk, "a\0b", 3);
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "NUL");

	/* empty type */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "");
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "type");

	/* type of 65 bytes is refused, 64 is fine */
	memset(type65, 'a', 65);
	type65[65] = '\0';
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, type65);
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "65 bytes");
	type65[64] = '\0';
	pk = raw_init(&r);
	msgpack_pack_map(pk, 3);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, type65);
	raw_kv_u64(pk, "id", 1);
	assert_int_equal(proto_decode(r.sbuf.data, r.sbuf.size, &m, NULL), 0);
	assert_string_equal(proto_msg_type(m), type65);
	proto_msg_free(m);
	msgpack_sbuffer_destroy(&r.sbuf);

	/* duplicate type */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 4);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "a");
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "b");
	raw_kv_u64(pk, "id", 1);
	raw_expect(&r, "duplicate");

	/* not a map */
	pk = raw_init(&r);
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint64(pk, 1);
	proto_pack_str(pk, "t");
	msgpack_pack_uint64(pk, 1);
	raw_expect(&r, "not a map");
	pk = raw_init(&r);
	msgpack_pack_nil(pk);
	raw_expect(&r, "not a map");

	/* non-string keys are skipped, not a crash */
	pk = raw_init(&r);
	msgpack_pack_map(pk, 4);
	msgpack_pack_uint64(pk, 1);
	msgpack_pack_uint64(pk, 1);
	raw_kv_u64(pk, "v", 1);
	proto_pack_str(pk, "t");
	proto_pack_str(pk, "x");
	raw_kv_u64(pk, "id", 3);
	assert_int_equal(proto_decode(r.sbuf.data, r.sbuf.size, &m, NULL), 0);
	assert_int_equal(proto_msg_id(m), 3);
	proto_msg_free(m);
	msgpack_sbuffer_destroy(&r.sbuf);
}

static void
proto_hostile_sizes(void **state)
{
	/* {"x": array32 of 2^32-1 elements}: msgpack-c would try to allocate
	 * ~100 GB for it if we let it see the header */
	static const unsigned char huge_array[] = { 0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff };
	static const unsigned char huge_map[] = { 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0 };
	static const unsigned char huge_str[] = { 0x81, 0xa1, 'x', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a' };
	static const unsigned char huge_bin[] = { 0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff };
	static const unsigned char huge_ext[] = { 0x81, 0xa1, 'x', 0xc9, 0xff, 0xff, 0xff, 0xff, 1 };
	static const unsigned char never_used[] = { 0x81, 0xa1, 'x', 0xc1 };
	unsigned char deep[200];
	size_t n = 0;

	(void) state;
	assert_eproto(huge_array, sizeof(huge_array));
	assert_eproto(huge_map, sizeof(huge_map));
	assert_eproto(huge_str, sizeof(huge_str));
	assert_eproto(huge_bin, sizeof(huge_bin));
	assert_eproto(huge_ext, sizeof(huge_ext));
	assert_eproto(never_used, sizeof(never_used));

	/* 100 nested one-element arrays inside the map */
	deep[n++] = 0x81;
	deep[n++] = 0xa1;
	deep[n++] = 'x';
	for (int i = 0; i < 100; i++)
		deep[n++] = 0x91;
	deep[n++] = 0xc0;
	assert_eproto(deep, n);

	/* more values than PROTO_VALUES_MAX, in a frame well under the size
	 * limit: refused before msgpack-c allocates ~24 bytes for each */
	{
		struct proto_writer w;
		struct proto_msg *m = NULL;
		const void *data;
		msgpack_packer *pk;
		size_t len;

		proto_writer_init(&w, "many", 1);
		pk = proto_w_key(&w, "nils");
		msgpack_pack_array(pk, PROTO_VALUES_MAX);
		for (unsigned i = 0; i < PROTO_VALUES_MAX; i++)
			msgpack_pack_nil(pk);
		data = proto_writer_data(&w, &len);
		assert_true(len < PROTO_FRAME_MAX);
		assert_eproto(data, len);
		proto_writer_release(&w);

		proto_writer_init(&w, "many", 1);
		pk = proto_w_key(&w, "nils");
		msgpack_pack_array(pk, 100000);
		for (unsigned i = 0; i < 100000; i++)
			msgpack_pack_nil(pk);
		data = proto_writer_data(&w, &len);
		assert_int_equal(proto_decode(data, len, &m, NULL), 0);
		assert_int_equal(proto_msg_get(m, "nils")->via.array.size, 100000);
		proto_msg_free(m);
		proto_writer_release(&w);
	}

	/* garbage: every single byte value as a whole frame */
	for (unsigned b = 0; b < 256; b++) {
		unsigned char one = (unsigned char) b;

		assert_eproto(&one, 1);
	}
}

static void
proto_writer_count_patched(void **state)
{
	struct proto_writer w;
	const unsigned char *p;
	size_t len;

	(void) state;
	proto_writer_init(&w, "t", 1);
	proto_w_u64(&w, "a", 1);
	p = proto_writer_data(&w, &len);
	assert_int_equal(p[0], 0xdf);
	assert_int_equal(p[4], 4);
	proto_w_u64(&w, "b", 1);
	p = proto_writer_data(&w, &len);    /* taking the bytes twice is fine */
	assert_int_equal(p[4], 5);
	proto_writer_release(&w);
}

static void
proto_zmq_router_dealer(void **state)
{
	zsock_t *router, *dealer;
	struct proto_writer w;
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };
	zframe_t *rid = NULL;
	char *s;

	(void) state;
	router = zsock_new_router("@inproc://proto-test-rd");
	dealer = zsock_new_dealer(">inproc://proto-test-rd");
	assert_non_null(router);
	assert_non_null(dealer);
	zsock_set_rcvtimeo(router, 5000);
	zsock_set_rcvtimeo(dealer, 5000);

	proto_writer_init(&w, "hello", 11);
	proto_w_str(&w, "name", "worker-1");
	assert_int_equal(proto_send(dealer, NULL, &w), 0);
	proto_writer_release(&w);

	assert_int_equal(proto_recv(router, &rid, &m, &err), 0);
	assert_non_null(rid);
	assert_string_equal(proto_msg_type(m), "hello");
	assert_int_equal(proto_msg_id(m), 11);
	s = proto_msg_strdup(m, "name");
	assert_string_equal(s, "worker-1");
	free(s);
	proto_msg_free(m);

	proto_writer_init(&w, "welcome", 11);
	assert_int_equal(proto_send(router, rid, &w), 0);
	proto_writer_release(&w);
	assert_int_equal(proto_recv(dealer, NULL, &m, &err), 0);
	assert_string_equal(proto_msg_type(m), "welcome");
	proto_msg_free(m);
	zframe_destroy(&rid);

	/* garbage: consumed, -KILN_EPROTO, routing id still available */
	assert_int_equal(zstr_send(dealer, "not msgpack at all"), 0);
	assert_int_equal(proto_recv(router, &rid, &m, &err), -KILN_EPROTO);
	assert_non_null(rid);
	proto_writer_init(&w, "error", 0);
	proto_w_str(&w, "msg", err.msg);
	assert_int_equal(proto_send(router, rid, &w), 0);
	proto_writer_release(&w);
	zframe_destroy(&rid);
	assert_int_equal(proto_recv(dealer, NULL, &m, &err), 0);
	assert_string_equal(proto_msg_type(m), "error");
	proto_msg_free(m);

	/* two payload frames are refused */
	assert_int_equal(zstr_sendx(dealer, "a", "b", NULL), 0);
	assert_int_equal(proto_recv(router, &rid, &m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "frames"));
	zframe_destroy(&rid);

	/* a timeout is an errno, not a protocol error */
	zsock_set_rcvtimeo(router, 10);
	assert_int_equal(proto_recv(router, &rid, &m, &err), -EAGAIN);
	assert_null(rid);

	zsock_destroy(&dealer);
	zsock_destroy(&router);
}

static void
proto_zmq_pair(void **state)
{
	zsock_t *a, *b;
	struct proto_writer w;
	struct proto_msg *m = NULL;
	const void *bin;
	unsigned char chunk[1000];
	size_t len;

	(void) state;
	a = zsock_new_pair("@inproc://proto-test-pair");
	b = zsock_new_pair(">inproc://proto-test-pair");
	assert_non_null(a);
	assert_non_null(b);
	zsock_set_rcvtimeo(b, 5000);
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (unsigned char) (i * 7);
	proto_writer_init(&w, "xfer.data", 3);
	proto_w_bin(&w, "data", chunk, sizeof(chunk));
	assert_int_equal(proto_send(a, NULL, &w), 0);
	proto_writer_release(&w);
	assert_int_equal(proto_recv(b, NULL, &m, NULL), 0);
	assert_int_equal(proto_msg_bin(m, "data", &bin, &len), 0);
	assert_int_equal(len, sizeof(chunk));
	assert_memory_equal(bin, chunk, sizeof(chunk));
	proto_msg_free(m);
	zsock_destroy(&b);
	zsock_destroy(&a);
}

/* ---- CURVE ---- */

static char *
read_all(const char *path)
{
	char *buf = NULL;
	size_t len;

	if (kiln_read_file_at(AT_FDCWD, path, 1 << 16, &buf, &len) < 0)
		return NULL;
	return buf;
}

static zsock_t *
curve_dealer(const char *endpoint, const char *server_cert, const char *client_cert)
{
	struct kiln_err err = { 0 };
	zsock_t *d = zsock_new(ZMQ_DEALER);

	assert_non_null(d);
	if (curve_client_apply(d, server_cert, client_cert, &err) < 0)
		fail_msg("curve_client_apply: %s", err.msg);
	zsock_set_rcvtimeo(d, 1000);
	zsock_set_sndtimeo(d, 1000);
	zsock_set_linger(d, 0);
	assert_int_equal(zsock_connect(d, "%s", endpoint), 0);
	return d;
}

/* Send a ping from client; returns true when the server answered it. */
static bool
curve_ping(zsock_t *server, zsock_t *client, int wait_ms)
{
	zpoller_t *poller;
	struct proto_writer w;
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };
	zframe_t *rid = NULL;
	bool seen;

	proto_writer_init(&w, "ping", 5);
	(void) proto_send(client, NULL, &w);    /* may time out if never connected */
	proto_writer_release(&w);

	poller = zpoller_new(server, NULL);
	seen = zpoller_wait(poller, wait_ms) == server;
	zpoller_destroy(&poller);
	if (!seen)
		return false;
	assert_int_equal(proto_recv(server, &rid, &m, &err), 0);
	assert_string_equal(proto_msg_type(m), "ping");
	proto_msg_free(m);
	proto_writer_init(&w, "pong", 5);
	assert_int_equal(proto_send(server, rid, &w), 0);
	proto_writer_release(&w);
	zframe_destroy(&rid);

	assert_int_equal(proto_recv(client, NULL, &m, &err), 0);
	assert_string_equal(proto_msg_type(m), "pong");
	proto_msg_free(m);
	return true;
}

static void
curve_allowed_and_unknown(void **state)
{
	char tmpl[] = "/tmp/kiln-curve-XXXXXX";
	char dir[64], path[256], path2[256], server_cert[128], endpoint[64];
	struct kiln_err err = { 0 };
	zsock_t *server, *good, *bad, *late, *nosecret;
	zactor_t *auth;
	char *pub1, *pub2, *sec;
	zpoller_t *poller;
	struct proto_msg *m = NULL;
	int port;

	(void) state;
	assert_non_null(mkdtemp(tmpl));
	snprintf(dir, sizeof(dir), "%s/keys", tmpl);
	snprintf(server_cert, sizeof(server_cert), "%s/server.cert", dir);

	/* idempotent init keeps the server key */
	assert_int_equal(curve_init_dir(dir, &err), 0);
	pub1 = read_all(server_cert);
	assert_non_null(pub1);
	assert_int_equal(curve_init_dir(dir, &err), 0);
	pub2 = read_all(server_cert);
	assert_string_equal(pub1, pub2);
	assert_null(strstr(pub1, "secret-key"));
	free(pub1);
	free(pub2);
	snprintf(path, sizeof(path), "%s_secret", server_cert);
	sec = read_all(path);
	assert_non_null(strstr(sec, "secret-key"));
	free(sec);

	assert_int_equal(curve_new_key(dir, "worker1", &err), 0);
	assert_int_equal(curve_new_key(dir, "worker1", &err), -EEXIST);
	assert_int_equal(curve_new_key(dir, "../evil", &err), -EINVAL);
	snprintf(path, sizeof(path), "%s/allowed/worker1.cert", dir);
	sec = read_all(path);
	assert_non_null(sec);
	assert_null(strstr(sec, "secret-key"));
	free(sec);

	/* allowing the same key again is a no-op; under a new name it is refused */
	snprintf(path, sizeof(path), "%s/worker1.cert", dir);
	assert_int_equal(curve_allow(dir, path, &err), 0);
	snprintf(path2, sizeof(path2), "%s/copy.cert", tmpl);
	sec = read_all(path);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path2, sec, strlen(sec), 0644), 0);
	free(sec);
	assert_int_equal(curve_allow(dir, path2, &err), -EEXIST);

	snprintf(path2, sizeof(path2), "%s/unknown.cert", tmpl);
	assert_int_equal(curve_ensure_cert(path2, &err), 0);
	assert_int_equal(curve_ensure_cert(path2, &err), 0);

	auth = curve_auth_start(dir, &err);
	if (!auth)
		fail_msg("curve_auth_start: %s", err.msg);
	server = zsock_new(ZMQ_ROUTER);
	assert_non_null(server);
	assert_int_equal(curve_server_apply(server, dir, &err), 0);
	port = zsock_bind(server, "tcp://127.0.0.1:*");
	assert_true(port > 0);
	snprintf(endpoint, sizeof(endpoint), "tcp://127.0.0.1:%d", port);

	/* the allowed client gets its answer */
	snprintf(path, sizeof(path), "%s/worker1.cert", dir);
	good = curve_dealer(endpoint, server_cert, path);
	assert_true(curve_ping(server, good, 5000));

	/* the unknown client is never heard and never answered */
	bad = curve_dealer(endpoint, server_cert, path2);
	assert_false(curve_ping(server, bad, 1000));
	assert_int_equal(proto_recv(bad, NULL, &m, &err), -EAGAIN);

	/* a key allowed after zauth started is picked up without a restart */
	assert_int_equal(curve_new_key(dir, "late", &err), 0);
	snprintf(path, sizeof(path), "%s/late.cert", dir);
	late = curve_dealer(endpoint, server_cert, path);
	assert_true(curve_ping(server, late, 5000));

	/* and the good client still works; the bad one stays silent */
	assert_true(curve_ping(server, good, 5000));
	poller = zpoller_new(server, NULL);
	assert_null(zpoller_wait(poller, 200));
	zpoller_destroy(&poller);

	/* a client cert without its secret half cannot be used */
	snprintf(path, sizeof(path), "%s/allowed/worker1.cert", dir);
	nosecret = zsock_new(ZMQ_DEALER);
	assert_int_equal(curve_client_apply(nosecret, server_cert, path, &err), -ENOENT);
	zsock_destroy(&nosecret);

	zsock_destroy(&late);
	zsock_destroy(&bad);
	zsock_destroy(&good);
	zsock_destroy(&server);
	zactor_destroy(&auth);
	assert_int_equal(kiln_rm_rf(tmpl), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(proto_roundtrip),
		cmocka_unit_test(proto_decode_copies),
		cmocka_unit_test(proto_truncated_every_length),
		cmocka_unit_test(proto_trailing_bytes),
		cmocka_unit_test(proto_oversized),
		cmocka_unit_test(proto_bad_envelopes),
		cmocka_unit_test(proto_hostile_sizes),
		cmocka_unit_test(proto_writer_count_patched),
		cmocka_unit_test(proto_zmq_router_dealer),
		cmocka_unit_test(proto_zmq_pair),
		cmocka_unit_test(curve_allowed_and_unknown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
