/* Fuzz target for the wire decoder: proto_decode on arbitrary bytes, then
 * every accessor over everything that decoded (top-level fields by each
 * key the message has, nested maps and arrays to a bounded depth). A
 * message that decodes must also decode again after re-encoding its root
 * with msgpack-c, which catches the pre-scan and msgpack-c disagreeing.
 * Built with libFuzzer by `make fuzz`, or with replay.c to replay the
 * corpus in `make test`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
walk(const msgpack_object *o, unsigned depth)
{
	uint64_t u;
	int64_t i;
	char key[64];

	free(proto_obj_strdup(o));
	(void) proto_obj_is_str(o, "t");
	if (depth > 20)
		return;
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t n = 0; n < o->via.array.size; n++)
			walk(&o->via.array.ptr[n], depth + 1);
	} else if (o->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t n = 0; n < o->via.map.size; n++) {
			const msgpack_object *k = &o->via.map.ptr[n].key;

			walk(k, depth + 1);
			walk(&o->via.map.ptr[n].val, depth + 1);
			if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof(key) ||
			    memchr(k->via.str.ptr, '\0', k->via.str.size))
				continue;
			memcpy(key, k->via.str.ptr, k->via.str.size);
			key[k->via.str.size] = '\0';
			(void) proto_obj_get(o, key);
			free(proto_obj_get_strdup(o, key));
			(void) proto_obj_get_u64(o, key, &u);
			(void) proto_obj_get_i64(o, key, &i);
		}
	}
}

static void
walk_fields(const struct proto_msg *m)
{
	const msgpack_object *root = proto_msg_root(m);
	const void *bin;
	const char *str;
	size_t len;
	uint64_t u;
	int64_t i;
	bool b;
	char key[64];

	for (uint32_t n = 0; n < root->via.map.size; n++) {
		const msgpack_object *k = &root->via.map.ptr[n].key;

		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof(key) ||
		    memchr(k->via.str.ptr, '\0', k->via.str.size))
			continue;
		memcpy(key, k->via.str.ptr, k->via.str.size);
		key[k->via.str.size] = '\0';
		(void) proto_msg_get(m, key);
		(void) proto_msg_u64(m, key, &u);
		(void) proto_msg_i64(m, key, &i);
		(void) proto_msg_bool(m, key, &b);
		if (proto_msg_bin(m, key, &bin, &len) == 0 && len > 0)
			(void) ((const volatile uint8_t *) bin)[len - 1];
		if (proto_msg_strn(m, key, &str, &len) == 0 && len > 0)
			(void) ((const volatile char *) str)[len - 1];
		free(proto_msg_strdup(m, key));
	}
	(void) proto_msg_get(m, "no such key");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_msg *m = NULL, *again = NULL;
	struct kiln_err err = { 0 };
	msgpack_sbuffer sbuf;
	msgpack_packer pk;

	if (proto_decode(data, size, &m, &err) < 0) {
		/* every refusal is a protocol error with a message, or ENOMEM */
		if ((err.code != KILN_EPROTO && err.code != ENOMEM) || !err.msg[0])
			abort();
		return 0;
	}
	if (strlen(proto_msg_type(m)) == 0 || strlen(proto_msg_type(m)) > 64)
		abort();
	(void) proto_msg_id(m);
	walk_fields(m);
	walk(proto_msg_root(m), 0);

	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	msgpack_pack_object(&pk, *proto_msg_root(m));
	if (sbuf.size <= PROTO_FRAME_MAX) {
		if (proto_decode(sbuf.data, sbuf.size, &again, &err) < 0)
			abort();
		if (strcmp(proto_msg_type(m), proto_msg_type(again)) != 0 ||
		    proto_msg_id(m) != proto_msg_id(again))
			abort();
		proto_msg_free(again);
	}
	msgpack_sbuffer_destroy(&sbuf);
	proto_msg_free(m);
	return 0;
}
