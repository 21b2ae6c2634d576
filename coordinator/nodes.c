/* Worker node table. Small (tens of nodes), so a list and linear scans. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "nodes.h"
#include "proto.h"
#include "util.h"

struct nodes {
	struct node *head;
	int64_t timeout_ms;
};

struct nodes *
nodes_new(int64_t timeout_ms)
{
	struct nodes *ns = calloc(1, sizeof(*ns));

	if (ns)
		ns->timeout_ms = timeout_ms;
	return ns;
}

void
peer_release(struct peer *p)
{
	zframe_destroy(&p->rid);
	p->sock = NULL;
}

int
peer_copy(struct peer *dst, const struct peer *src)
{
	dst->sock = src->sock;
	dst->rid = src->rid ? zframe_dup(src->rid) : NULL;
	return src->rid && !dst->rid ? -ENOMEM : 0;
}

bool
peer_equal(const struct peer *a, const struct peer *b)
{
	return a->sock == b->sock && a->rid && b->rid && zframe_eq(a->rid, b->rid);
}

int
peer_send(const struct peer *p, struct proto_writer *w)
{
	if (!p->sock)
		return -ENOTCONN;
	return proto_send(p->sock, p->rid, w);
}

int
peer_forward(const struct peer *p, zframe_t *payload)
{
	zmsg_t *msg;

	if (!p->sock || !p->rid)
		return -ENOTCONN;
	msg = zmsg_new();
	if (!msg)
		return -ENOMEM;
	zmsg_append(msg, &(zframe_t *) { zframe_dup(p->rid) });
	zmsg_append(msg, &(zframe_t *) { zframe_dup(payload) });
	return zmsg_send(&msg, p->sock) < 0 ? -EIO : 0;
}

void
nodes_free(struct nodes *ns)
{
	if (!ns)
		return;
	while (ns->head) {
		struct node *n = ns->head;

		ns->head = n->next;
		peer_release(&n->peer);
		free(n);
	}
	free(ns);
}

static int
read_platforms(const struct proto_msg *m, const char *key, struct platform *out, size_t *ret_n,
	       struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, key);

	*ret_n = 0;
	if (!a)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size > NODE_MAX_PLATFORMS)
		return kiln_err_set(err, KILN_EPROTO, "register: '%s' is not a short array", key);
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		char *s = proto_obj_strdup(&a->via.array.ptr[i]);
		int r = s ? platform_parse(s, &out[*ret_n]) : -EINVAL;

		free(s);
		if (r < 0)
			return kiln_err_set(err, KILN_EPROTO, "register: bad platform in '%s'", key);
		(*ret_n)++;
	}
	return 0;
}

/* Optional (older workers send neither); a bad value only costs the node
 * its blob server, not its registration. */
static void
read_blob_server(const struct proto_msg *m, struct node *n)
{
	const char *ep = NULL, *key = NULL;
	size_t ep_len = 0, key_len = 0;

	n->blob_endpoint[0] = n->blob_key[0] = '\0';
	if (proto_msg_strn(m, "blob_endpoint", &ep, &ep_len) < 0 || ep_len == 0)
		return;
	(void) proto_msg_strn(m, "blob_key", &key, &key_len);
	if (ep_len >= sizeof(n->blob_endpoint) || memchr(ep, '\0', ep_len) ||
	    (key_len != 0 && key_len != sizeof(n->blob_key) - 1) || (key && memchr(key, '\0', key_len))) {
		log_warn("node '%s' sent a bad blob_endpoint or blob_key, ignoring", n->name);
		return;
	}
	memcpy(n->blob_endpoint, ep, ep_len);
	n->blob_endpoint[ep_len] = '\0';
	if (key_len) {
		memcpy(n->blob_key, key, key_len);
		n->blob_key[key_len] = '\0';
	}
}

int
nodes_register(struct nodes *ns, const struct peer *from, const struct proto_msg *m,
	       struct node **ret, struct kiln_err *err)
{
	char *name = proto_msg_strdup(m, "name");
	struct node tmp = { 0 }, *n;
	uint64_t cap = 1, load = 0;
	int r;

	if (!name || !*name || strlen(name) >= sizeof(tmp.name)) {
		free(name);
		return kiln_err_set(err, KILN_EPROTO, "register: missing or bad node name");
	}
	snprintf(tmp.name, sizeof(tmp.name), "%s", name);
	free(name);
	r = read_platforms(m, "platforms", tmp.native, &tmp.n_native, err);
	if (r == 0)
		r = read_platforms(m, "emulated", tmp.emulated, &tmp.n_emulated, err);
	if (r < 0)
		return r;
	(void) proto_msg_u64(m, "capacity", &cap);
	(void) proto_msg_u64(m, "load", &load);
	for (n = ns->head; n; n = n->next)
		if (strcmp(n->name, tmp.name) == 0)
			break;
	if (!n) {
		n = calloc(1, sizeof(*n));
		if (!n)
			return kiln_err_set(err, ENOMEM, "out of memory");
		n->next = ns->head;
		ns->head = n;
	} else if (n->status == NODE_READY && !peer_equal(&n->peer, from)) {
		log_warn("node '%s' registered again from a new connection", n->name);
	}
	peer_release(&n->peer);
	if (peer_copy(&n->peer, from) < 0)
		return kiln_err_set(err, ENOMEM, "out of memory");
	memcpy(n->native, tmp.native, sizeof(n->native));
	n->n_native = tmp.n_native;
	memcpy(n->emulated, tmp.emulated, sizeof(n->emulated));
	n->n_emulated = tmp.n_emulated;
	snprintf(n->name, sizeof(n->name), "%s", tmp.name);
	if (cap == 0)
		cap = 1;
	if (cap > NODE_CAPACITY_MAX) {
		log_warn("node '%s' claims capacity %" PRIu64 ", using %d", n->name, cap,
			 NODE_CAPACITY_MAX);
		cap = NODE_CAPACITY_MAX;
	}
	n->capacity = (unsigned) cap;
	n->load = (unsigned) load;
	n->last_seen_ms = kiln_now_ms();
	n->status = NODE_READY;
	read_blob_server(m, n);
	*ret = n;
	return 0;
}

unsigned
node_capacity(const struct node *n)
{
	return n->capacity ? n->capacity : 1;
}

struct node *
nodes_by_peer(struct nodes *ns, const struct peer *from)
{
	for (struct node *n = ns->head; n; n = n->next)
		if (peer_equal(&n->peer, from))
			return n;
	return NULL;
}

struct node *
nodes_heartbeat(struct nodes *ns, const struct peer *from, const struct proto_msg *m)
{
	struct node *n = nodes_by_peer(ns, from);
	uint64_t load;

	if (!n || n->status != NODE_READY)
		return NULL;
	n->last_seen_ms = kiln_now_ms();
	if (proto_msg_u64(m, "load", &load) == 0)
		n->load = (unsigned) load;
	return n;
}

void
nodes_expire(struct nodes *ns, int64_t now_ms, void (*fn)(struct node *n, void *ctx), void *ctx)
{
	for (struct node *n = ns->head; n; n = n->next) {
		if (n->status != NODE_READY || now_ms - n->last_seen_ms <= ns->timeout_ms)
			continue;
		n->status = NODE_GONE;
		log_warn("node '%s' missed heartbeats for %" PRId64 " ms, marking it gone", n->name,
			 now_ms - n->last_seen_ms);
		if (fn)
			fn(n, ctx);
	}
}

static bool
serves(const struct platform *list, size_t n, const struct platform *p)
{
	for (size_t i = 0; i < n; i++)
		if (platform_equal(&list[i], p))
			return true;
	return false;
}

struct node *
nodes_list(struct nodes *ns)
{
	return ns->head;
}

struct node *
nodes_by_name(struct nodes *ns, const char *name)
{
	for (struct node *n = ns->head; n; n = n->next)
		if (strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

bool
node_serves(const struct node *n, const struct platform *p, bool native)
{
	return native ? serves(n->native, n->n_native, p) : serves(n->emulated, n->n_emulated, p);
}

struct node *
nodes_pick(struct nodes *ns, const struct platform *p, bool *ret_emulated)
{
	for (int pass = 0; pass < 2; pass++) {
		struct node *best = NULL;

		for (struct node *n = ns->head; n; n = n->next) {
			bool ok = pass == 0 ? serves(n->native, n->n_native, p)
					    : serves(n->emulated, n->n_emulated, p);

			if (n->status != NODE_READY || !ok)
				continue;
			/* Least busy relative to capacity; ties go to the fewest
			 * builds assigned so work spreads. */
			if (!best || (uint64_t) (n->load + n->assigned) * best->capacity <
				     (uint64_t) (best->load + best->assigned) * n->capacity)
				best = n;
		}
		if (best) {
			*ret_emulated = pass == 1;
			return best;
		}
	}
	return NULL;
}

static void
pack_list(msgpack_packer *pk, const struct platform *p, size_t n)
{
	char s[PLATFORM_STR_SIZE];

	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		proto_pack_str(pk, platform_fmt(&p[i], s));
}

void
nodes_pack(struct nodes *ns, msgpack_packer *pk, int64_t now_ms)
{
	size_t count = 0;

	for (struct node *n = ns->head; n; n = n->next)
		count++;
	msgpack_pack_array(pk, count);
	for (struct node *n = ns->head; n; n = n->next) {
		msgpack_pack_map(pk, 7);
		proto_pack_str(pk, "name");
		proto_pack_str(pk, n->name);
		proto_pack_str(pk, "status");
		proto_pack_str(pk, n->status == NODE_READY ? "ready" : "gone");
		proto_pack_str(pk, "platforms");
		pack_list(pk, n->native, n->n_native);
		proto_pack_str(pk, "emulated");
		pack_list(pk, n->emulated, n->n_emulated);
		proto_pack_str(pk, "capacity");
		msgpack_pack_uint32(pk, n->capacity);
		proto_pack_str(pk, "load");
		msgpack_pack_uint32(pk, n->load + n->assigned);
		proto_pack_str(pk, "last_seen_ms");
		msgpack_pack_uint64(pk, (uint64_t) (now_ms - n->last_seen_ms));
	}
}
