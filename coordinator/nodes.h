/* The coordinator's table of worker nodes: what each serves, how busy it
 * is, and whether it is still alive. A node that misses heartbeats for the
 * timeout is marked gone (kept in the table so `builder ls` can show it);
 * a node that registers again under the same name comes back. */
#ifndef KILN_NODES_H
#define KILN_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <czmq.h>
#include <msgpack.h>

#include "platform.h"

struct kiln_err;
struct proto_msg;
struct proto_writer;

#define NODE_MAX_PLATFORMS 16
/* The most concurrent steps a node may claim; more is read as this. */
#define NODE_CAPACITY_MAX  4096

/* Where a message goes: a ROUTER socket and the peer's routing id. */
struct peer {
	zsock_t *sock;                /* borrowed */
	zframe_t *rid;                /* owned */
};

enum node_status { NODE_READY, NODE_GONE };

struct node {
	struct node *next;
	char name[128];
	struct peer peer;
	struct platform native[NODE_MAX_PLATFORMS];
	size_t n_native;
	struct platform emulated[NODE_MAX_PLATFORMS];
	size_t n_emulated;
	unsigned capacity;            /* steps it runs at once, 1..NODE_CAPACITY_MAX */
	unsigned load;                /* reported by the node */
	unsigned assigned;            /* jobs this coordinator gave it (bounded by capacity) */
	int64_t last_seen_ms;
	enum node_status status;
	char blob_endpoint[256];      /* where peers fetch its blobs; "" if it serves none */
	char blob_key[41];            /* that server's Z85 public key; "" on ipc:// */
};

struct nodes;

struct nodes *nodes_new(int64_t timeout_ms);
void nodes_free(struct nodes *ns);

void peer_release(struct peer *p);
/* Copy of p (routing frame duplicated). */
int peer_copy(struct peer *dst, const struct peer *src);
bool peer_equal(const struct peer *a, const struct peer *b);
/* Send to a peer; 0 or -errno. */
int peer_send(const struct peer *p, struct proto_writer *w);
/* Send an already encoded payload (borrowed) unchanged. */
int peer_forward(const struct peer *p, zframe_t *payload);

/* The steps n runs at once, as it said when it registered ("capacity";
 * by default the number of CPUs its worker may use): at least 1. */
unsigned node_capacity(const struct node *n);

/* "worker.register": add or revive the node named in m, at peer. A
 * missing or zero capacity is read as 1. */
int nodes_register(struct nodes *ns, const struct peer *from, const struct proto_msg *m,
		   struct node **ret, struct kiln_err *err);
/* "worker.hb": NULL when the peer is not a registered, live node. */
struct node *nodes_heartbeat(struct nodes *ns, const struct peer *from, const struct proto_msg *m);
/* Nodes whose heartbeats stopped become NODE_GONE; fn is called for each. */
void nodes_expire(struct nodes *ns, int64_t now_ms, void (*fn)(struct node *n, void *ctx), void *ctx);
/* The node from peer (any status), or NULL. */
struct node *nodes_by_peer(struct nodes *ns, const struct peer *from);
/* Pick a ready node for p: native before emulated, then least busy.
 * *ret_emulated says which kind was chosen. NULL when none serves p. */
struct node *nodes_pick(struct nodes *ns, const struct platform *p, bool *ret_emulated);
/* The table, to walk with n->next (any status). */
struct node *nodes_list(struct nodes *ns);
struct node *nodes_by_name(struct nodes *ns, const char *name);
/* Whether n serves p natively (native) or under emulation (!native). */
bool node_serves(const struct node *n, const struct platform *p, bool native);
/* Pack the table as the array of "nodes" in a "nodes" reply. */
void nodes_pack(struct nodes *ns, msgpack_packer *pk, int64_t now_ms);

#endif
