/* Chunked transfer of large payloads (context files, blobs, outputs) over
 * proto messages, with credit-based flow control: the sender may have at
 * most `credit` chunks in flight; the receiver grants more as it stores
 * them. No payload ever travels as one giant frame.
 *
 * Messages (all carry "stream", a uint chosen by the sender and unique per
 * connection, plus whatever routing fields the caller adds):
 *   "xfer.data"   {stream, off, data: bin <= PROTO_CHUNK_SIZE, eof: bool}
 *   "xfer.credit" {stream, n}        receiver -> sender
 *   "xfer.abort"  {stream, code, msg}
 * The transfer's metadata (digest, size, what it is) is announced by the
 * caller's own message before the first chunk.
 *
 * This module is transport-agnostic: it fills proto_writers and consumes
 * proto_msgs; the caller sends and routes them. */
#ifndef KILN_XFER_H
#define KILN_XFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_err;
struct proto_writer;
struct proto_msg;
struct cas;
struct digest;

#define XFER_WINDOW 8                   /* initial credit, in chunks */

struct xfer_tx;                         /* sender of one stream */
struct xfer_rx;                         /* receiver of one stream */

/* Send the file at path (size bytes). Caller owns *ret (xfer_tx_free). */
int xfer_tx_new_file(uint64_t stream, const char *path, struct xfer_tx **ret, struct kiln_err *err);
/* Send from an fd (taken: closed by xfer_tx_free). */
int xfer_tx_new_fd(uint64_t stream, int fd, struct xfer_tx **ret, struct kiln_err *err);
void xfer_tx_free(struct xfer_tx *tx);
uint64_t xfer_tx_stream(const struct xfer_tx *tx);
/* True while there is data left and credit to send it. */
bool xfer_tx_ready(const struct xfer_tx *tx);
bool xfer_tx_done(const struct xfer_tx *tx);   /* eof chunk sent */
/* Fill w (already proto_writer_init'ed as "xfer.data" by the caller, who may
 * have added routing fields) with the next chunk. Consumes one credit. */
int xfer_tx_next(struct xfer_tx *tx, struct proto_writer *w, struct kiln_err *err);
/* Apply an "xfer.credit" message. */
int xfer_tx_credit(struct xfer_tx *tx, const struct proto_msg *m, struct kiln_err *err);
uint64_t xfer_tx_sent(const struct xfer_tx *tx);   /* payload bytes sent */

/* Receive into the blob store, verifying against expect when given, or into
 * an fd (taken). max bounds the total size. */
int xfer_rx_new_cas(uint64_t stream, struct cas *cas, const struct digest *expect, uint64_t max,
		    struct xfer_rx **ret, struct kiln_err *err);
int xfer_rx_new_fd(uint64_t stream, int fd, uint64_t max, struct xfer_rx **ret, struct kiln_err *err);
void xfer_rx_free(struct xfer_rx *rx);       /* aborts an unfinished cas write */
/* Apply an "xfer.data" message: out-of-order offsets, oversize and bad
 * types fail with -KILN_EPROTO. *ret_credit is set to how many credits
 * to grant back now (0 or more); *ret_done to true after the eof chunk was
 * stored (for cas: committed and verified; a digest mismatch fails). */
int xfer_rx_data(struct xfer_rx *rx, const struct proto_msg *m, unsigned *ret_credit, bool *ret_done,
		 struct kiln_err *err);
uint64_t xfer_rx_received(const struct xfer_rx *rx);
/* The digest of what was received (for cas: of the committed blob), once
 * *ret_done was reported; -EAGAIN before. */
int xfer_rx_digest(const struct xfer_rx *rx, struct digest *ret);
/* Fill w (init'ed as "xfer.credit" by the caller) with n credits. */
void xfer_write_credit(struct proto_writer *w, uint64_t stream, unsigned n);
/* Fill w (init'ed as "xfer.abort") from e (NULL: a generic EIO). Either
 * side may abort; the stream is dead afterwards. */
void xfer_write_abort(struct proto_writer *w, uint64_t stream, const struct kiln_err *e);
/* Turn a received "xfer.abort" into err (its code and msg, unchanged);
 * returns -code. */
int xfer_abort_err(const struct proto_msg *m, struct kiln_err *err);

#endif
