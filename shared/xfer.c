/* Chunked transfers with credit flow control. A sender (xfer_tx) turns a
 * file or fd into "xfer.data" messages of at most PROTO_CHUNK_SIZE bytes,
 * one per credit; a receiver (xfer_rx) stores each chunk (into a CAS
 * writer or an fd) and grants one credit back per chunk stored, so at most
 * XFER_WINDOW chunks are ever queued between the two and a slow receiver
 * slows the sender instead of filling ZeroMQ's queues.
 *
 * Invariants on the receiving side: chunks arrive at contiguous offsets
 * starting at 0, never exceed PROTO_CHUNK_SIZE, never add up to more than
 * max, and nothing follows the eof chunk. Any violation fails the stream
 * for good and, for CAS receivers, discards the partial blob at once: a
 * CAS blob becomes visible only after the eof chunk and a matching digest.
 *
 * The sender reads one byte ahead so that it knows whether a chunk is the
 * last one; this works for pipes as well as files. This module does not
 * send anything itself and does not know about routing. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cas.h"
#include "digest.h"
#include "err.h"
#include "proto.h"
#include "util.h"
#include "xfer.h"

/* A peer granting more than this has lost count. */
#define XFER_CREDIT_MAX 4096u

struct xfer_tx {
	uint64_t stream;
	int fd;
	unsigned credit;
	uint64_t sent;          /* payload bytes handed out */
	bool eof_read;          /* read() returned 0 */
	bool done;              /* the eof chunk was written */
	size_t have;            /* bytes buffered in buf */
	unsigned char buf[PROTO_CHUNK_SIZE + 1];        /* one chunk + one byte of lookahead */
};

struct xfer_rx {
	uint64_t stream;
	uint64_t max;
	uint64_t received;
	struct cas_writer *cw;  /* cas receiver until commit or failure */
	int fd;                 /* fd receiver; -1 for cas */
	struct digest_ctx *dc;  /* fd receiver's running digest */
	struct digest digest;   /* valid once done */
	bool done;
	bool failed;
};

/* ---- sending ---- */

int
xfer_tx_new_fd(uint64_t stream, int fd, struct xfer_tx **ret, struct kiln_err *err)
{
	struct xfer_tx *tx;

	tx = malloc(sizeof(*tx));
	if (!tx) {
		(void) close(fd);
		return kiln_err_set(err, ENOMEM, "allocate transfer %llu",
				    (unsigned long long) stream);
	}
	tx->stream = stream;
	tx->fd = fd;
	tx->credit = XFER_WINDOW;
	tx->sent = 0;
	tx->eof_read = false;
	tx->done = false;
	tx->have = 0;
	*ret = tx;
	return 0;
}

int
xfer_tx_new_file(uint64_t stream, const char *path, struct xfer_tx **ret, struct kiln_err *err)
{
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kiln_err_errno(err, errno, "open '%s'", path);
	return xfer_tx_new_fd(stream, fd, ret, err);
}

void
xfer_tx_free(struct xfer_tx *tx)
{
	if (!tx)
		return;
	if (tx->fd >= 0)
		(void) close(tx->fd);
	free(tx);
}

uint64_t
xfer_tx_stream(const struct xfer_tx *tx)
{
	return tx->stream;
}

bool
xfer_tx_ready(const struct xfer_tx *tx)
{
	return !tx->done && tx->credit > 0;
}

bool
xfer_tx_done(const struct xfer_tx *tx)
{
	return tx->done;
}

uint64_t
xfer_tx_sent(const struct xfer_tx *tx)
{
	return tx->sent;
}

/* Fill buf to a chunk plus one byte, or to the end of the input. */
static int
xfer_tx_fill(struct xfer_tx *tx, struct kiln_err *err)
{
	while (!tx->eof_read && tx->have < sizeof(tx->buf)) {
		ssize_t n = read(tx->fd, tx->buf + tx->have, sizeof(tx->buf) - tx->have);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kiln_err_errno(err, errno, "read transfer %llu at offset %llu",
					      (unsigned long long) tx->stream,
					      (unsigned long long) (tx->sent + tx->have));
		}
		if (n == 0)
			tx->eof_read = true;
		tx->have += (size_t) n;
	}
	return 0;
}

int
xfer_tx_next(struct xfer_tx *tx, struct proto_writer *w, struct kiln_err *err)
{
	size_t len;
	bool eof;
	int r;

	if (tx->done)
		return kiln_err_set(err, EINVAL, "transfer %llu already complete",
				    (unsigned long long) tx->stream);
	if (tx->credit == 0)
		return kiln_err_set(err, EAGAIN, "transfer %llu has no credit",
				    (unsigned long long) tx->stream);
	r = xfer_tx_fill(tx, err);
	if (r < 0)
		return r;

	len = tx->have < PROTO_CHUNK_SIZE ? tx->have : PROTO_CHUNK_SIZE;
	eof = tx->eof_read && tx->have == len;
	proto_w_u64(w, "stream", tx->stream);
	proto_w_u64(w, "off", tx->sent);
	proto_w_bin(w, "data", tx->buf, len);
	proto_w_bool(w, "eof", eof);

	memmove(tx->buf, tx->buf + len, tx->have - len);
	tx->have -= len;
	tx->sent += len;
	tx->credit--;
	tx->done = eof;
	return 0;
}

static int
xfer_check_stream(const struct proto_msg *m, const char *type, uint64_t stream,
		  struct kiln_err *err)
{
	uint64_t s;

	if (strcmp(proto_msg_type(m), type) != 0)
		return kiln_err_set(err, KILN_EPROTO, "'%s' message where '%s' was expected",
				    proto_msg_type(m), type);
	if (proto_msg_u64(m, "stream", &s) < 0)
		return kiln_err_set(err, KILN_EPROTO, "'%s' without a valid 'stream'", type);
	if (s != stream)
		return kiln_err_set(err, KILN_EPROTO, "'%s' for stream %llu sent to stream %llu",
				    type, (unsigned long long) s, (unsigned long long) stream);
	return 0;
}

int
xfer_tx_credit(struct xfer_tx *tx, const struct proto_msg *m, struct kiln_err *err)
{
	uint64_t n;
	int r;

	r = xfer_check_stream(m, "xfer.credit", tx->stream, err);
	if (r < 0)
		return r;
	if (proto_msg_u64(m, "n", &n) < 0)
		return kiln_err_set(err, KILN_EPROTO, "'xfer.credit' without a valid 'n'");
	if (n > XFER_CREDIT_MAX - tx->credit)
		return kiln_err_set(err, KILN_EPROTO, "transfer %llu: credit overflow (%u + %llu)",
				    (unsigned long long) tx->stream, tx->credit,
				    (unsigned long long) n);
	tx->credit += (unsigned) n;
	return 0;
}

/* ---- receiving ---- */

static struct xfer_rx *
xfer_rx_alloc(uint64_t stream, uint64_t max)
{
	struct xfer_rx *rx = calloc(1, sizeof(*rx));

	if (!rx)
		return NULL;
	rx->stream = stream;
	rx->max = max;
	rx->fd = -1;
	return rx;
}

int
xfer_rx_new_cas(uint64_t stream, struct cas *cas, const struct digest *expect, uint64_t max,
		struct xfer_rx **ret, struct kiln_err *err)
{
	struct xfer_rx *rx;
	int r;

	rx = xfer_rx_alloc(stream, max);
	if (!rx)
		return kiln_err_set(err, ENOMEM, "allocate transfer %llu",
				    (unsigned long long) stream);
	r = cas_writer_new(cas, expect, &rx->cw, err);
	if (r < 0) {
		free(rx);
		return r;
	}
	*ret = rx;
	return 0;
}

int
xfer_rx_new_fd(uint64_t stream, int fd, uint64_t max, struct xfer_rx **ret, struct kiln_err *err)
{
	struct xfer_rx *rx;

	rx = xfer_rx_alloc(stream, max);
	if (rx)
		rx->dc = digest_ctx_new();
	if (!rx || !rx->dc) {
		free(rx);
		(void) close(fd);
		return kiln_err_set(err, ENOMEM, "allocate transfer %llu",
				    (unsigned long long) stream);
	}
	rx->fd = fd;
	*ret = rx;
	return 0;
}

void
xfer_rx_free(struct xfer_rx *rx)
{
	if (!rx)
		return;
	if (rx->cw)
		cas_writer_abort(rx->cw);
	if (rx->fd >= 0)
		(void) close(rx->fd);
	digest_ctx_free(rx->dc);
	free(rx);
}

uint64_t
xfer_rx_received(const struct xfer_rx *rx)
{
	return rx->received;
}

int
xfer_rx_digest(const struct xfer_rx *rx, struct digest *ret)
{
	if (!rx->done)
		return -EAGAIN;
	*ret = rx->digest;
	return 0;
}

/* Fail the stream for good; a partial CAS blob is discarded now rather
 * than when the caller gets round to freeing us. */
static int
xfer_rx_fail(struct xfer_rx *rx, int r)
{
	rx->failed = true;
	if (rx->cw) {
		cas_writer_abort(rx->cw);
		rx->cw = NULL;
	}
	return r;
}

static int
xfer_rx_store(struct xfer_rx *rx, const void *data, size_t len, struct kiln_err *err)
{
	int r;

	if (rx->cw)
		return cas_writer_write(rx->cw, data, len, err);
	r = kiln_write_all(rx->fd, data, len);
	if (r < 0)
		return kiln_err_errno(err, -r, "write transfer %llu", (unsigned long long) rx->stream);
	digest_ctx_update(rx->dc, data, len);
	return 0;
}

static int
xfer_rx_finish(struct xfer_rx *rx, struct kiln_err *err)
{
	struct cas_writer *cw = rx->cw;

	if (cw) {
		rx->cw = NULL;          /* commit frees it whatever happens */
		return cas_writer_commit(cw, NULL, &rx->digest, err);
	}
	digest_ctx_final(rx->dc, &rx->digest);
	return 0;
}

int
xfer_rx_data(struct xfer_rx *rx, const struct proto_msg *m, unsigned *ret_credit, bool *ret_done,
	     struct kiln_err *err)
{
	unsigned long long stream = rx->stream;
	const void *data;
	uint64_t off;
	size_t len;
	bool eof = false;
	int r;

	if (rx->failed)
		return kiln_err_set(err, KILN_EPROTO, "transfer %llu already failed", stream);
	if (rx->done)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: data after the end", stream));
	r = xfer_check_stream(m, "xfer.data", rx->stream, err);
	if (r < 0)
		return xfer_rx_fail(rx, r);
	if (proto_msg_u64(m, "off", &off) < 0)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: chunk without a valid 'off'",
						     stream));
	if (off != rx->received)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: chunk at offset %llu, expected %llu",
						     stream, (unsigned long long) off,
						     (unsigned long long) rx->received));
	if (proto_msg_bin(m, "data", &data, &len) < 0)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: chunk without binary 'data'",
						     stream));
	r = proto_msg_bool(m, "eof", &eof);
	if (r < 0 && r != -ENOENT)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: non-boolean 'eof'", stream));
	if (len > PROTO_CHUNK_SIZE)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: chunk of %zu bytes exceeds %u",
						     stream, len, PROTO_CHUNK_SIZE));
	/* an empty chunk that is not the last one would only burn credit */
	if (len == 0 && !eof)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu: empty chunk", stream));
	if (len > rx->max - rx->received)
		return xfer_rx_fail(rx, kiln_err_set(err, KILN_EPROTO,
						     "transfer %llu exceeds its limit of %llu bytes",
						     stream, (unsigned long long) rx->max));

	r = xfer_rx_store(rx, data, len, err);
	if (r < 0)
		return xfer_rx_fail(rx, r);
	rx->received += len;
	if (eof) {
		r = xfer_rx_finish(rx, err);
		if (r < 0) {
			kiln_err_wrap(err, "transfer %llu", stream);
			return xfer_rx_fail(rx, r);
		}
		rx->done = true;
	}
	*ret_credit = eof ? 0 : 1;
	*ret_done = eof;
	return 0;
}

void
xfer_write_credit(struct proto_writer *w, uint64_t stream, unsigned n)
{
	proto_w_u64(w, "stream", stream);
	proto_w_u64(w, "n", n);
}

void
xfer_write_abort(struct proto_writer *w, uint64_t stream, const struct kiln_err *e)
{
	proto_w_u64(w, "stream", stream);
	proto_w_u64(w, "code", e && e->code > 0 ? (uint64_t) e->code : EIO);
	proto_w_str(w, "msg", e && e->msg[0] ? e->msg : "transfer aborted");
}

int
xfer_abort_err(const struct proto_msg *m, struct kiln_err *err)
{
	const char *msg = "transfer aborted by peer";
	uint64_t code = EIO;
	size_t len = strlen(msg);

	if (proto_msg_u64(m, "code", &code) < 0 || code == 0 || code > 65535)
		code = EIO;
	(void) proto_msg_strn(m, "msg", &msg, &len);
	if (len > sizeof(err->msg) - 1)
		len = sizeof(err->msg) - 1;
	return kiln_err_set(err, (int) code, "%.*s", (int) len, msg);
}
