/* The wire protocol: every ZeroMQ message payload is one msgpack map with
 * at least "v" (PROTO_VERSION), "t" (message type, a string) and "id" (a
 * correlation id, uint). Replies carry the id of the request.
 *
 * Decoding is bounded: a frame over PROTO_FRAME_MAX, a truncated frame,
 * trailing bytes, a non-map, a missing or wrongly typed v/t/id, or another
 * version is refused with -KILN_EPROTO and a message; never a crash. So
 * are frames nesting containers deeper than PROTO_DEPTH_MAX or holding
 * more than PROTO_VALUES_MAX values (msgpack-c spends ~24 bytes of memory
 * per value, so this bounds what one frame can cost), and a "t" that is
 * empty, over 64 bytes or holds a NUL. Duplicate v/t/id keys are refused;
 * other duplicate keys are not checked (lookups take the first).
 *
 * Writing: proto_writer builds the top-level map without knowing the number
 * of entries in advance (map32 header patched at finish). Nested values are
 * packed with the raw msgpack_packer after proto_w_key(). */
#ifndef KILN_PROTO_H
#define KILN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>
#include <czmq.h>

struct kiln_err;

#define PROTO_VERSION    1
#define PROTO_FRAME_MAX  (4u << 20)     /* whole message */
#define PROTO_CHUNK_SIZE (256u << 10)   /* bulk payload per message */
#define PROTO_DEPTH_MAX  16             /* nested non-empty maps/arrays */
#define PROTO_VALUES_MAX (1u << 20)     /* values (keys included) per message */
/* RUN --mount=type=ssh relays SSH agent messages one by one (ssh.req,
 * ssh.resp): a message's body (after its 4-byte big-endian length) is at
 * most this, as OpenSSH's AGENT_MAX_LEN. */
#define PROTO_SSH_AGENT_MAX (256u << 10)

struct proto_msg;                       /* opaque decoded message */

struct proto_writer {
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	uint32_t count;                 /* top-level entries written */
};

/* Start a message of type t with correlation id. Never fails (aborts on ENOMEM
 * like msgpack-c). */
void proto_writer_init(struct proto_writer *w, const char *type, uint64_t id);
void proto_writer_release(struct proto_writer *w);
/* proto_writer_release after zeroing the bytes written (messages that
 * carry secrets). What ZeroMQ copied while sending is out of reach. */
void proto_writer_wipe(struct proto_writer *w);
void proto_w_str(struct proto_writer *w, const char *key, const char *val);   /* NULL val -> nil */
void proto_w_strn(struct proto_writer *w, const char *key, const char *val, size_t len);
void proto_w_u64(struct proto_writer *w, const char *key, uint64_t val);
void proto_w_i64(struct proto_writer *w, const char *key, int64_t val);
void proto_w_bool(struct proto_writer *w, const char *key, bool val);
void proto_w_bin(struct proto_writer *w, const char *key, const void *data, size_t len);
/* Write key; the caller then packs exactly one value with the returned packer. */
msgpack_packer *proto_w_key(struct proto_writer *w, const char *key);
/* Pack a C string (or nil for NULL) with a raw packer. */
void proto_pack_str(msgpack_packer *pk, const char *s);
/* Finished bytes (borrowed from w; valid until release). */
const void *proto_writer_data(struct proto_writer *w, size_t *ret_len);

/* Decode one frame. The caller owns *ret_m (proto_msg_free). */
int proto_decode(const void *buf, size_t len, struct proto_msg **ret_m, struct kiln_err *err);
void proto_msg_free(struct proto_msg *m);
/* Zero m's copy of the frame (the bytes its str and bin values point to),
 * for messages that carry secrets; m's values read as zeros after this.
 * NULL is a no-op. */
void proto_msg_wipe(struct proto_msg *m);
const char *proto_msg_type(const struct proto_msg *m);   /* NUL-terminated, owned by m */
uint64_t proto_msg_id(const struct proto_msg *m);
const msgpack_object *proto_msg_root(const struct proto_msg *m);

/* Field lookups on the top-level map. Each returns -ENOENT when the key is
 * absent or nil and -EINVAL when its type is wrong (for i64 also: a uint
 * above INT64_MAX). proto_msg_get returns NULL for absent or nil. Returned
 * pointers are borrowed from m. */
const msgpack_object *proto_msg_get(const struct proto_msg *m, const char *key);
int proto_msg_u64(const struct proto_msg *m, const char *key, uint64_t *ret);
int proto_msg_i64(const struct proto_msg *m, const char *key, int64_t *ret);
int proto_msg_bool(const struct proto_msg *m, const char *key, bool *ret);
int proto_msg_bin(const struct proto_msg *m, const char *key, const void **ret, size_t *ret_len);
/* Accepts str or bin. */
int proto_msg_strn(const struct proto_msg *m, const char *key, const char **ret, size_t *ret_len);
/* malloc'd NUL-terminated copy; NULL when absent, not a string, or holding a NUL byte. */
char *proto_msg_strdup(const struct proto_msg *m, const char *key);

/* The same on any msgpack object (for nested maps and arrays). */
const msgpack_object *proto_obj_get(const msgpack_object *map, const char *key);
char *proto_obj_strdup(const msgpack_object *o);                       /* str -> malloc'd copy */
char *proto_obj_get_strdup(const msgpack_object *map, const char *key);
int proto_obj_get_u64(const msgpack_object *map, const char *key, uint64_t *ret);
int proto_obj_get_i64(const msgpack_object *map, const char *key, int64_t *ret);
bool proto_obj_is_str(const msgpack_object *o, const char *s);         /* string equal to s */

/* Send over a czmq socket. For ROUTER sockets pass the peer's routing id
 * frame (borrowed); for DEALER pass NULL. 0 or -errno. */
int proto_send(zsock_t *sock, zframe_t *routing_id, struct proto_writer *w);
/* Receive one message. On a ROUTER socket *ret_routing gets the routing id
 * frame (caller owns); pass NULL for DEALER. A message that fails to decode
 * returns -KILN_EPROTO (the frames are consumed) with *ret_routing still set
 * so that the caller can answer with an error. */
int proto_recv(zsock_t *sock, zframe_t **ret_routing, struct proto_msg **ret_m, struct kiln_err *err);

#endif
