/* The wire codec: msgpack maps carried in ZeroMQ frames. Writing builds the
 * top-level map behind a map32 header whose count is patched when the bytes
 * are taken, so callers add fields in any order without counting them.
 *
 * Reading treats every frame as hostile. msgpack-c allocates storage for a
 * container as soon as it reads the container's header, before it has seen
 * a single element, so a 5-byte frame declaring 2^32 elements would make it
 * ask for ~100 GB. proto_decode therefore walks the bytes first without
 * allocating (proto_scan): the frame must hold exactly one complete value,
 * nested at most PROTO_DEPTH_MAX deep, with at most PROTO_VALUES_MAX values,
 * and every container must fit in the bytes that follow its header. Only
 * then does msgpack-c build objects, so its allocations are bounded (about
 * 24 bytes per value: 24 MB at worst) whatever the frame declares.
 *
 * A decoded message owns a copy of the frame (msgpack-c's str and bin
 * objects point into the input) and the msgpack_zone holding its objects,
 * so it outlives the zframe it came from. This module knows nothing about
 * message types beyond the v/t/id envelope. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "proto.h"

#define PROTO_TYPE_MAX  64      /* bytes in "t" */

/* msgpack-c's own parser gives up (NOMEM) past 32 levels */
_Static_assert(PROTO_DEPTH_MAX < 32, "deeper than msgpack-c can unpack");

struct proto_msg {
	msgpack_zone *zone;     /* objects reachable from root; NULL for an empty map */
	msgpack_object root;    /* always a map */
	uint64_t id;
	char type[PROTO_TYPE_MAX + 1];
	size_t len;
	char data[];            /* the frame; str and bin objects point in here */
};

/* ---- writing ---- */

/* msgpack-c's sbuffer reports ENOMEM by returning -1, which the packer
 * ignores; the header promises that writing never fails, so stop here
 * instead of producing a message with holes in it. */
static int
proto_sbuf_write(void *data, const char *buf, size_t len)
{
	if (len == 0)
		return 0;
	if (msgpack_sbuffer_write(data, buf, len) < 0)
		abort();
	return 0;
}

void
proto_writer_init(struct proto_writer *w, const char *type, uint64_t id)
{
	/* map32 with a placeholder count, patched in proto_writer_data() */
	static const char map32[5] = { (char) 0xdf, 0, 0, 0, 0 };

	msgpack_sbuffer_init(&w->sbuf);
	msgpack_packer_init(&w->pk, &w->sbuf, proto_sbuf_write);
	w->count = 0;
	proto_sbuf_write(&w->sbuf, map32, sizeof(map32));
	proto_w_u64(w, "v", PROTO_VERSION);
	proto_w_str(w, "t", type);
	proto_w_u64(w, "id", id);
}

void
proto_writer_release(struct proto_writer *w)
{
	if (!w)
		return;
	msgpack_sbuffer_destroy(&w->sbuf);
	memset(w, 0, sizeof(*w));
}

void
proto_writer_wipe(struct proto_writer *w)
{
	if (!w)
		return;
	if (w->sbuf.data)
		explicit_bzero(w->sbuf.data, w->sbuf.alloc);
	proto_writer_release(w);
}

void
proto_pack_str(msgpack_packer *pk, const char *s)
{
	size_t len;

	if (!s) {
		msgpack_pack_nil(pk);
		return;
	}
	len = strlen(s);
	msgpack_pack_str(pk, len);
	if (len > 0)
		msgpack_pack_str_body(pk, s, len);
}

msgpack_packer *
proto_w_key(struct proto_writer *w, const char *key)
{
	proto_pack_str(&w->pk, key);
	w->count++;
	return &w->pk;
}

void
proto_w_str(struct proto_writer *w, const char *key, const char *val)
{
	proto_pack_str(proto_w_key(w, key), val);
}

void
proto_w_strn(struct proto_writer *w, const char *key, const char *val, size_t len)
{
	msgpack_packer *pk = proto_w_key(w, key);

	if (!val) {
		msgpack_pack_nil(pk);
		return;
	}
	msgpack_pack_str(pk, len);
	if (len > 0)
		msgpack_pack_str_body(pk, val, len);
}

void
proto_w_u64(struct proto_writer *w, const char *key, uint64_t val)
{
	msgpack_pack_uint64(proto_w_key(w, key), val);
}

void
proto_w_i64(struct proto_writer *w, const char *key, int64_t val)
{
	msgpack_pack_int64(proto_w_key(w, key), val);
}

void
proto_w_bool(struct proto_writer *w, const char *key, bool val)
{
	msgpack_packer *pk = proto_w_key(w, key);

	if (val)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

void
proto_w_bin(struct proto_writer *w, const char *key, const void *data, size_t len)
{
	msgpack_packer *pk = proto_w_key(w, key);

	msgpack_pack_bin(pk, len);
	if (len > 0)
		msgpack_pack_bin_body(pk, data, len);
}

const void *
proto_writer_data(struct proto_writer *w, size_t *ret_len)
{
	unsigned char *p = (unsigned char *) w->sbuf.data;

	p[1] = (unsigned char) (w->count >> 24);
	p[2] = (unsigned char) (w->count >> 16);
	p[3] = (unsigned char) (w->count >> 8);
	p[4] = (unsigned char) w->count;
	*ret_len = w->sbuf.size;
	return p;
}

/* ---- reading ---- */

static uint64_t
proto_be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Check that buf holds exactly one complete msgpack value without building
 * it. pending[d] counts the values still owed to the container open at
 * depth d (depth 0 is the frame itself, owing one value). */
static int
proto_scan(const uint8_t *buf, size_t len, struct kiln_err *err)
{
	uint64_t pending[PROTO_DEPTH_MAX + 1];
	unsigned depth = 0;
	size_t off = 0, values = 0;

	pending[0] = 1;
	for (;;) {
		uint64_t items = 0, skip = 0;
		unsigned lenbytes = 0;
		size_t at = off;
		uint8_t b;

		if (pending[depth] == 0) {
			if (depth == 0)
				break;
			depth--;
			continue;
		}
		pending[depth]--;
		if (off >= len)
			goto truncated;
		if (++values > PROTO_VALUES_MAX)
			return kiln_err_set(err, KILN_EPROTO, "message holds more than %u values",
					    PROTO_VALUES_MAX);
		b = buf[off++];

		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
			/* fixint, nil, bool: the byte is the value */
		} else if (b <= 0x8f) {
			items = 2 * (uint64_t) (b & 0x0f);
		} else if (b <= 0x9f) {
			items = b & 0x0f;
		} else if (b <= 0xbf) {
			skip = b & 0x1f;
		} else {
			switch (b) {
			case 0xc4: case 0xd9: lenbytes = 1; break;      /* bin8, str8 */
			case 0xc5: case 0xda: lenbytes = 2; break;      /* bin16, str16 */
			case 0xc6: case 0xdb: lenbytes = 4; break;      /* bin32, str32 */
			case 0xc7: lenbytes = 1; skip = 1; break;       /* ext8: len, type */
			case 0xc8: lenbytes = 2; skip = 1; break;
			case 0xc9: lenbytes = 4; skip = 1; break;
			case 0xca: skip = 4; break;                     /* float32 */
			case 0xcb: skip = 8; break;                     /* float64 */
			case 0xcc: case 0xd0: skip = 1; break;          /* (u)int8 */
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break;                     /* fixext: type + data */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: case 0xdd: case 0xde: case 0xdf: {
				unsigned n = (b == 0xdc || b == 0xde) ? 2 : 4;

				if (len - off < n)
					goto truncated;
				items = proto_be(buf + off, n);
				off += n;
				if (b >= 0xde)
					items *= 2;
				break;
			}
			default:        /* 0xc1 is never used */
				return kiln_err_set(err, KILN_EPROTO,
						    "invalid msgpack byte 0x%02x at offset %zu",
						    b, at);
			}
		}
		if (lenbytes) {
			if (len - off < lenbytes)
				goto truncated;
			skip += proto_be(buf + off, lenbytes);
			off += lenbytes;
		}
		if (skip > len - off)
			goto truncated;
		off += skip;

		if (items == 0)
			continue;
		/* Every element takes at least one byte; refusing here keeps
		 * the walk linear in the frame, not in the declared sizes. */
		if (items > len - off)
			goto truncated;
		if (depth == PROTO_DEPTH_MAX)
			return kiln_err_set(err, KILN_EPROTO,
					    "message nested deeper than %d levels", PROTO_DEPTH_MAX);
		pending[++depth] = items;
	}
	if (off != len)
		return kiln_err_set(err, KILN_EPROTO, "%zu trailing bytes after message",
				    len - off);
	return 0;

truncated:
	return kiln_err_set(err, KILN_EPROTO, "truncated message (%zu bytes)", len);
}

/* msgpack-c leaves ptr NULL for empty str, bin and ext values. Point them
 * at a real (empty) string so that callers may pass any ptr/size pair to
 * memcpy and friends. Recursion is bounded by PROTO_DEPTH_MAX. */
static void
proto_fix_empty(msgpack_object *o)
{
	static const char empty[1] = "";

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		if (!o->via.str.ptr)
			o->via.str.ptr = empty;
		break;
	case MSGPACK_OBJECT_BIN:
		if (!o->via.bin.ptr)
			o->via.bin.ptr = empty;
		break;
	case MSGPACK_OBJECT_EXT:
		if (!o->via.ext.ptr)
			o->via.ext.ptr = empty;
		break;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++)
			proto_fix_empty(&o->via.array.ptr[i]);
		break;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			proto_fix_empty(&o->via.map.ptr[i].key);
			proto_fix_empty(&o->via.map.ptr[i].val);
		}
		break;
	default:
		break;
	}
}

static bool
proto_key_is(const msgpack_object *k, const char *key, size_t klen)
{
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
	       memcmp(k->via.str.ptr, key, klen) == 0;
}

/* Find v, t and id, each exactly once, and check their types. */
static int
proto_check_envelope(struct proto_msg *m, struct kiln_err *err)
{
	const msgpack_object *v = NULL, *t = NULL, *id = NULL;
	const msgpack_object_map *map = &m->root.via.map;

	for (uint32_t i = 0; i < map->size; i++) {
		const msgpack_object *k = &map->ptr[i].key;
		const msgpack_object **slot;
		const char *name;

		if (proto_key_is(k, "v", 1)) {
			slot = &v;
			name = "v";
		} else if (proto_key_is(k, "t", 1)) {
			slot = &t;
			name = "t";
		} else if (proto_key_is(k, "id", 2)) {
			slot = &id;
			name = "id";
		} else {
			continue;
		}
		if (*slot)
			return kiln_err_set(err, KILN_EPROTO, "duplicate '%s' in message", name);
		*slot = &map->ptr[i].val;
	}

	if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return kiln_err_set(err, KILN_EPROTO, "missing or non-integer protocol version 'v'");
	if (v->via.u64 != PROTO_VERSION)
		return kiln_err_set(err, KILN_EPROTO, "unsupported protocol version %llu (want %d)",
				    (unsigned long long) v->via.u64, PROTO_VERSION);
	if (!t || t->type != MSGPACK_OBJECT_STR)
		return kiln_err_set(err, KILN_EPROTO, "missing or non-string message type 't'");
	if (t->via.str.size == 0 || t->via.str.size > PROTO_TYPE_MAX)
		return kiln_err_set(err, KILN_EPROTO, "message type of %u bytes (want 1..%d)",
				    t->via.str.size, PROTO_TYPE_MAX);
	if (memchr(t->via.str.ptr, '\0', t->via.str.size))
		return kiln_err_set(err, KILN_EPROTO, "message type contains a NUL byte");
	if (!id || id->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return kiln_err_set(err, KILN_EPROTO, "missing or non-integer message id 'id'");

	memcpy(m->type, t->via.str.ptr, t->via.str.size);
	m->type[t->via.str.size] = '\0';
	m->id = id->via.u64;
	return 0;
}

int
proto_decode(const void *buf, size_t len, struct proto_msg **ret_m, struct kiln_err *err)
{
	struct proto_msg *m;
	msgpack_unpacked up;
	msgpack_unpack_return ur;
	size_t off = 0;
	int r;

	if (len > PROTO_FRAME_MAX)
		return kiln_err_set(err, KILN_EPROTO, "message of %zu bytes exceeds the limit of %u",
				    len, PROTO_FRAME_MAX);
	if (len == 0)
		return kiln_err_set(err, KILN_EPROTO, "empty message");
	r = proto_scan(buf, len, err);
	if (r < 0)
		return r;

	m = calloc(1, sizeof(*m) + len);
	if (!m)
		return kiln_err_set(err, ENOMEM, "out of memory decoding %zu bytes", len);
	memcpy(m->data, buf, len);
	m->len = len;

	msgpack_unpacked_init(&up);
	ur = msgpack_unpack_next(&up, m->data, len, &off);
	switch (ur) {
	case MSGPACK_UNPACK_SUCCESS:
		break;
	case MSGPACK_UNPACK_CONTINUE:
		r = kiln_err_set(err, KILN_EPROTO, "truncated message (%zu bytes)", len);
		goto out_free;
	case MSGPACK_UNPACK_NOMEM_ERROR:
		r = kiln_err_set(err, ENOMEM, "out of memory decoding %zu bytes", len);
		goto out_free;
	default:
		r = kiln_err_set(err, KILN_EPROTO, "malformed message");
		goto out_free;
	}
	/* proto_scan already refused these; keep the checks so that a
	 * disagreement between the two walkers cannot go unnoticed */
	if (off != len) {
		r = kiln_err_set(err, KILN_EPROTO, "%zu trailing bytes after message", len - off);
		goto out_free;
	}
	if (up.data.type != MSGPACK_OBJECT_MAP) {
		r = kiln_err_set(err, KILN_EPROTO, "message is not a map");
		goto out_free;
	}
	m->root = up.data;
	m->zone = msgpack_unpacked_release_zone(&up);
	proto_fix_empty(&m->root);
	r = proto_check_envelope(m, err);
	if (r < 0) {
		proto_msg_free(m);
		return r;
	}
	*ret_m = m;
	return 0;

out_free:
	msgpack_unpacked_destroy(&up);
	free(m);
	return r;
}

void
proto_msg_free(struct proto_msg *m)
{
	if (!m)
		return;
	if (m->zone)
		msgpack_zone_free(m->zone);
	free(m);
}

void
proto_msg_wipe(struct proto_msg *m)
{
	if (m)
		explicit_bzero(m->data, m->len);
}

const char *
proto_msg_type(const struct proto_msg *m)
{
	return m->type;
}

uint64_t
proto_msg_id(const struct proto_msg *m)
{
	return m->id;
}

const msgpack_object *
proto_msg_root(const struct proto_msg *m)
{
	return &m->root;
}

const msgpack_object *
proto_obj_get(const msgpack_object *map, const char *key)
{
	size_t klen = strlen(key);

	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];

		if (!proto_key_is(&kv->key, key, klen))
			continue;
		return kv->val.type == MSGPACK_OBJECT_NIL ? NULL : &kv->val;
	}
	return NULL;
}

static int
proto_obj_u64(const msgpack_object *o, uint64_t *ret)
{
	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return -EINVAL;
	*ret = o->via.u64;
	return 0;
}

static int
proto_obj_i64(const msgpack_object *o, int64_t *ret)
{
	if (!o)
		return -ENOENT;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*ret = o->via.i64;
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > INT64_MAX)
		return -EINVAL;
	*ret = (int64_t) o->via.u64;
	return 0;
}

const msgpack_object *
proto_msg_get(const struct proto_msg *m, const char *key)
{
	return proto_obj_get(&m->root, key);
}

int
proto_msg_u64(const struct proto_msg *m, const char *key, uint64_t *ret)
{
	return proto_obj_u64(proto_msg_get(m, key), ret);
}

int
proto_msg_i64(const struct proto_msg *m, const char *key, int64_t *ret)
{
	return proto_obj_i64(proto_msg_get(m, key), ret);
}

int
proto_msg_bool(const struct proto_msg *m, const char *key, bool *ret)
{
	const msgpack_object *o = proto_msg_get(m, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return -EINVAL;
	*ret = o->via.boolean;
	return 0;
}

int
proto_msg_bin(const struct proto_msg *m, const char *key, const void **ret, size_t *ret_len)
{
	const msgpack_object *o = proto_msg_get(m, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_BIN)
		return -EINVAL;
	*ret = o->via.bin.ptr;
	*ret_len = o->via.bin.size;
	return 0;
}

int
proto_msg_strn(const struct proto_msg *m, const char *key, const char **ret, size_t *ret_len)
{
	const msgpack_object *o = proto_msg_get(m, key);

	if (!o)
		return -ENOENT;
	if (o->type == MSGPACK_OBJECT_STR) {
		*ret = o->via.str.ptr;
		*ret_len = o->via.str.size;
	} else if (o->type == MSGPACK_OBJECT_BIN) {
		*ret = o->via.bin.ptr;
		*ret_len = o->via.bin.size;
	} else {
		return -EINVAL;
	}
	return 0;
}

char *
proto_msg_strdup(const struct proto_msg *m, const char *key)
{
	return proto_obj_strdup(proto_msg_get(m, key));
}

char *
proto_obj_strdup(const msgpack_object *o)
{
	char *s;

	if (!o || o->type != MSGPACK_OBJECT_STR)
		return NULL;
	if (memchr(o->via.str.ptr, '\0', o->via.str.size))
		return NULL;
	s = malloc((size_t) o->via.str.size + 1);
	if (!s)
		return NULL;
	memcpy(s, o->via.str.ptr, o->via.str.size);
	s[o->via.str.size] = '\0';
	return s;
}

char *
proto_obj_get_strdup(const msgpack_object *map, const char *key)
{
	return proto_obj_strdup(proto_obj_get(map, key));
}

int
proto_obj_get_u64(const msgpack_object *map, const char *key, uint64_t *ret)
{
	return proto_obj_u64(proto_obj_get(map, key), ret);
}

int
proto_obj_get_i64(const msgpack_object *map, const char *key, int64_t *ret)
{
	return proto_obj_i64(proto_obj_get(map, key), ret);
}

bool
proto_obj_is_str(const msgpack_object *o, const char *s)
{
	return o && proto_key_is(o, s, strlen(s));
}

/* ---- transport ---- */

/* zframe_send with ZFRAME_REUSE leaves the frame with us whatever happens;
 * retry on EINTR so that a signal cannot leave half a multipart message
 * queued. */
static int
proto_send_frame(zsock_t *sock, zframe_t *frame, int flags)
{
	for (;;) {
		if (zframe_send(&frame, sock, flags | ZFRAME_REUSE) == 0)
			return 0;
		if (errno != EINTR)
			return -(errno ? errno : EIO);
	}
}

int
proto_send(zsock_t *sock, zframe_t *routing_id, struct proto_writer *w)
{
	zframe_t *payload;
	const void *data;
	size_t len;
	int r;

	data = proto_writer_data(w, &len);
	if (len > PROTO_FRAME_MAX)
		return -EMSGSIZE;
	payload = zframe_new(data, len);
	if (!payload)
		return -ENOMEM;
	if (routing_id) {
		r = proto_send_frame(sock, routing_id, ZFRAME_MORE);
		if (r < 0)
			goto out;
	}
	r = proto_send_frame(sock, payload, 0);
out:
	zframe_destroy(&payload);
	return r;
}

int
proto_recv(zsock_t *sock, zframe_t **ret_routing, struct proto_msg **ret_m, struct kiln_err *err)
{
	zframe_t *payload = NULL;
	zmsg_t *msg;
	int r;

	if (ret_routing)
		*ret_routing = NULL;
	msg = zmsg_recv(sock);
	if (!msg)
		return kiln_err_errno(err, errno ? errno : EINTR, "receive message");
	if (ret_routing) {
		*ret_routing = zmsg_pop(msg);
		if (zmsg_size(msg) == 0) {
			r = kiln_err_set(err, KILN_EPROTO, "message without routing id");
			goto out;
		}
	}
	if (zmsg_size(msg) != 1) {
		r = kiln_err_set(err, KILN_EPROTO, "message of %zu frames (want 1 payload frame)",
				 zmsg_size(msg));
		goto out;
	}
	payload = zmsg_pop(msg);
	r = proto_decode(zframe_data(payload), zframe_size(payload), ret_m, err);
out:
	zframe_destroy(&payload);
	zmsg_destroy(&msg);
	return r;
}
