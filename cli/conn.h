/* A client connection to a coordinator: one DEALER socket, CurveZMQ on
 * tcp://, request/reply matched by correlation id. Not thread-safe: one
 * thread uses a conn at a time (ZeroMQ sockets are not shareable). */
#ifndef KILN_CLI_CONN_H
#define KILN_CLI_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <czmq.h>

struct kiln_err;
struct proto_msg;
struct proto_writer;
struct conn;                            /* opaque */

struct conn_opts {
	char endpoint[512];             /* ipc://PATH or tcp://HOST:PORT */
	char server_cert[4096];         /* tcp://: the coordinator's public cert file; "" for ipc:// */
	char client_cert[4096];         /* tcp://: this client's cert file (zcert); "" for ipc:// */
};

/* One node as the coordinator reports it (nodes.list). */
struct conn_node {
	char *name;
	char *status;                   /* "ready" | "gone" | whatever a newer coordinator says */
	char **platforms;               /* native */
	size_t n_platforms;
	char **emulated;                /* through QEMU user emulation */
	size_t n_emulated;
	uint64_t capacity;
	uint64_t load;
	uint64_t last_seen_ms;
};

/* Create the socket and connect (ZeroMQ connects lazily: a coordinator
 * that is not there yet is not an error here). tcp:// requires both
 * certificates. The caller owns *ret (conn_free). */
int conn_open(const struct conn_opts *o, struct conn **ret, struct kiln_err *err);
void conn_free(struct conn *c);         /* NULL is a no-op */

/* A fresh correlation id for a request on c (never 0). */
uint64_t conn_next_id(struct conn *c);
/* The socket, borrowed, for callers that poll it with other sockets. */
zsock_t *conn_sock(struct conn *c);
/* The endpoint c was opened with, borrowed. */
const char *conn_endpoint(const struct conn *c);

/* Send the finished message in w (borrowed; not released). */
int conn_send(struct conn *c, struct proto_writer *w, struct kiln_err *err);
/* Wait up to timeout_ms (< 0: forever) for the next message. -ETIMEDOUT
 * with a message that says what to check; -KILN_EPROTO for an undecodable
 * message (consumed). The caller owns *ret (proto_msg_free). Error replies
 * are returned as messages: see conn_reply_error(). */
int conn_recv(struct conn *c, int timeout_ms, struct proto_msg **ret, struct kiln_err *err);
/* Send w, then wait up to timeout_ms for the message carrying w's id;
 * messages with other ids (late replies to earlier requests) are dropped.
 * A reply of type "error" {code, msg} fails with -code and msg unchanged.
 * The caller owns *ret_reply. */
int conn_request(struct conn *c, struct proto_writer *w, int timeout_ms,
		 struct proto_msg **ret_reply, struct kiln_err *err);
/* If m is an "error" message, fill err from its code and msg and return
 * -code (KILN_EPROTO when it carries none); else 0. */
int conn_reply_error(const struct proto_msg *m, struct kiln_err *err);

/* ping -> pong. version (may be NULL) gets the coordinator's version
 * string ("" if it sent none). */
int conn_ping(struct conn *c, int timeout_ms, char *ret_version, size_t size,
	      struct kiln_err *err);
/* nodes.list -> nodes. The caller owns the array (conn_nodes_free). */
int conn_nodes_list(struct conn *c, int timeout_ms, struct conn_node **ret_nodes,
		    size_t *ret_n, struct kiln_err *err);
void conn_nodes_free(struct conn_node *nodes, size_t n);

#endif
