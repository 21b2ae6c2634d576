/* Blob movement between nodes. Every worker serves its blob store to the
 * other nodes (peer_server) and fetches the blobs the coordinator tells it
 * to from them (peer_fetcher). Each runs on its own thread (a czmq actor)
 * with its own sockets, so a transfer never blocks the worker's main loop;
 * both use the blob store, which is safe from any thread.
 *
 * Between peers (one msgpack map per frame with v, t, id, as shared/proto.h;
 * the fetcher's DEALER talks to the server's ROUTER):
 *   "peer.get"   {stream, digest, offset}        fetcher -> server
 *   "peer.blob"  {stream, digest, size, offset}  server -> fetcher, then
 *   "xfer.data"  {stream, off, data, eof}        server -> fetcher; off counts
 *                                                from the requested offset
 *   "xfer.credit" {stream, n}                    fetcher -> server
 *   "xfer.abort" {stream, code, msg}             either way; from the server:
 *       ENOENT  the blob is not here            EINVAL  offset beyond the blob
 *       EBUSY   PEER_SERVE_MAX transfers already running: retry later
 *       KILN_EPROTO  malformed request
 * The stream number is the fetcher's choice, unique on its connection.
 *
 * With the coordinator (relayed by worker/main.c):
 *   "blob.fetch" {build, blobs: [{digest, size, peers: [{node, endpoint, key}]}]}
 *   "blob.fetch.done" {build, fetched, present, bytes,
 *                      failed: [{digest, code, msg}]}     same id as the request
 * fetched counts the blobs stored, present those that were here already,
 * bytes the payload bytes received from peers (a resumed transfer counts
 * each byte once; bytes of a blob that failed verification count too).
 *
 * Trust: on tcp:// the server is a CURVE server with the node's own key
 * pair and a ZAP handler (zauth) admitting only the public keys found in
 * an allow-list directory; on ipc:// it relies on the socket's directory
 * (0700) and mode (0600). A fetched blob is hashed while written into a
 * CAS temp file and renamed into place only when its digest matches, so a
 * peer serving wrong bytes can make a fetch fail but never store them. */
#ifndef KILN_PEER_H
#define KILN_PEER_H

#include <stddef.h>
#include <czmq.h>

struct kiln_err;
struct cas;
struct proto_msg;

#define PEER_SERVE_MAX      8           /* transfers served at once */
#define PEER_FETCH_MAX      4           /* transfers fetched at once */
#define PEER_FETCH_IDLE_MS  10000       /* silence that counts as a broken connection */
#define PEER_FETCH_ROUNDS   3           /* tries of each peer per blob */
#define PEER_FETCH_BLOBS_MAX 4096       /* blobs per blob.fetch: its answer fits a frame */
#define PEER_FETCH_PEERS_MAX 16         /* peers per blob */
#define PEER_ENDPOINT_MAX   256
#define PEER_KEY_TXT        41          /* Z85 public key + NUL */

struct peer_server;
struct peer_fetcher;

struct peer_server_opts {
	const char *endpoint;   /* ipc://PATH or tcp://HOST:PORT; port 0 picks a free one */
	const char *key;        /* tcp: this node's key pair (PATH and PATH_secret) */
	const char *allow_dir;  /* tcp: public certs of the nodes that may fetch */
	unsigned max_transfers; /* 0: PEER_SERVE_MAX */
};

/* Bind and start serving cas (borrowed; must outlive the server). tcp://
 * needs key and allow_dir; ipc:// ignores them. Starts the process's ZAP
 * handler for tcp://, so at most one tcp:// server per process. The
 * caller owns *ret (peer_server_free). */
int peer_server_start(struct cas *cas, const struct peer_server_opts *o, struct peer_server **ret,
		      struct kiln_err *err);
/* Stop serving (transfers in progress are dropped); removes an ipc://
 * socket file. NULL is a no-op. */
void peer_server_free(struct peer_server *s);
/* The bound endpoint, with the real port for tcp://...:0. Borrowed. */
const char *peer_server_endpoint(const struct peer_server *s);
/* The Z85 public key clients must expect; "" on ipc://. Borrowed. */
const char *peer_server_key(const struct peer_server *s);

/* Where a node serves blobs when --blob-listen is not given: next to the
 * coordinator's kind of endpoint. For ipc:// coordinators an ipc:// socket
 * in the state dir (absolute; in a private /tmp/kiln-UID-HASH/ directory
 * when that path does not fit a unix socket address), for tcp://
 * "tcp://127.0.0.1:0". */
int peer_default_endpoint(const char *coordinator, const char *state, char *buf, size_t size,
			  struct kiln_err *err);

struct peer_fetcher_opts {
	const char *key;        /* this node's key pair, for tcp:// peers; NULL: ipc:// only */
	unsigned max_transfers; /* 0: PEER_FETCH_MAX */
	int idle_ms;            /* 0: PEER_FETCH_IDLE_MS */
};

/* Start the fetch thread writing into cas (borrowed; must outlive it). The
 * caller owns *ret (peer_fetcher_free). */
int peer_fetcher_new(struct cas *cas, const struct peer_fetcher_opts *o, struct peer_fetcher **ret,
		     struct kiln_err *err);
/* Stop: transfers in progress are abandoned (their temp files removed),
 * queued requests dropped without an answer. NULL is a no-op. */
void peer_fetcher_free(struct peer_fetcher *f);
/* Check a "blob.fetch" message (borrowed) and queue it; it is answered by
 * one "blob.fetch.done" on peer_fetcher_sock(). A malformed message fails
 * here with -KILN_EPROTO and queues nothing. Never blocks on the network. */
int peer_fetcher_submit(struct peer_fetcher *f, const struct proto_msg *m, struct kiln_err *err);
/* Readable when answers are ready: each is one message of one frame, an
 * encoded "blob.fetch.done" to forward as it is. Borrowed; poll it and
 * zmsg_recv() from it on the thread that owns f. */
zsock_t *peer_fetcher_sock(struct peer_fetcher *f);

#endif
