/* Tests for chunked transfers (xfer): a multi-megabyte random file moved
 * from a sender to a CAS receiver through encoded proto frames, with the
 * flow-control invariants checked on every step (chunk size, frames within
 * PROTO_FRAME_MAX, never more than XFER_WINDOW chunks unacknowledged), and
 * the ways a receiver must refuse a stream: digest mismatch, offsets out
 * of order, more than max bytes, malformed chunks and credits. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cas.h"
#include "digest.h"
#include "err.h"
#include "proto.h"
#include "util.h"
#include "xfer.h"

struct env {
	char dir[64];
	char file[128];
	struct cas *cas;
};

static int
env_setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct kiln_err err = { 0 };

	snprintf(e->dir, sizeof(e->dir), "/tmp/kiln-xfer-XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->file, sizeof(e->file), "%s/input", e->dir);
	{
		char cdir[128];

		snprintf(cdir, sizeof(cdir), "%s/cas", e->dir);
		if (cas_open(cdir, &e->cas, &err) < 0) {
			fprintf(stderr, "cas_open: %s\n", err.msg);
			return -1;
		}
	}
	*state = e;
	return 0;
}

static int
env_teardown(void **state)
{
	struct env *e = *state;

	cas_free(e->cas);
	(void) kiln_rm_rf(e->dir);
	free(e);
	return 0;
}

/* Write size pseudo-random bytes (fixed seed) to path; returns them. */
static unsigned char *
write_random(const char *path, size_t size, unsigned seed)
{
	unsigned char *buf = malloc(size ? size : 1);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < size; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char) x;
	}
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, buf, size, 0644), 0);
	return buf;
}

/* An encoded frame in flight. */
struct frame {
	void *data;
	size_t len;
};

static struct proto_msg *
decode(const struct frame *f)
{
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };

	if (proto_decode(f->data, f->len, &m, &err) < 0)
		fail_msg("decode: %s", err.msg);
	return m;
}

static struct frame
take(struct proto_writer *w)
{
	struct frame f;
	const void *p = proto_writer_data(w, &f.len);

	assert_true(f.len <= PROTO_FRAME_MAX);
	f.data = malloc(f.len);
	memcpy(f.data, p, f.len);
	proto_writer_release(w);
	return f;
}

struct run_stats {
	unsigned chunks;
	unsigned max_in_flight;
	unsigned credit_msgs;
};

/* Move everything from tx to rx. The receiver holds back credits and
 * grants them in batches of up to 3 (or when the queue runs dry), so that
 * both single and multi-credit messages are exercised. Returns the first
 * xfer_rx_data error, or 0 once rx reported done. */
static int
run_transfer(struct xfer_tx *tx, struct xfer_rx *rx, struct run_stats *st, struct kiln_err *err)
{
	struct frame queue[XFER_WINDOW + 1];
	size_t head = 0, count = 0;
	unsigned in_flight = 0, held = 0;
	uint64_t id = 1;
	bool done = false;

	memset(st, 0, sizeof(*st));
	while (!done) {
		while (xfer_tx_ready(tx)) {
			struct proto_writer w;

			proto_writer_init(&w, "xfer.data", id++);
			assert_int_equal(xfer_tx_next(tx, &w, err), 0);
			assert_true(count < XFER_WINDOW + 1);
			queue[(head + count) % (XFER_WINDOW + 1)] = take(&w);
			count++;
			in_flight++;
			assert_true(in_flight <= XFER_WINDOW);
			if (in_flight > st->max_in_flight)
				st->max_in_flight = in_flight;
		}
		if (count == 0) {
			/* tx is stalled: the receiver must release what it holds */
			assert_true(held > 0);
		} else {
			struct frame f = queue[head];
			struct proto_msg *m;
			const void *data;
			size_t len;
			unsigned credit = 0;
			int r;

			head = (head + 1) % (XFER_WINDOW + 1);
			count--;
			m = decode(&f);
			free(f.data);
			assert_int_equal(proto_msg_bin(m, "data", &data, &len), 0);
			assert_true(len <= PROTO_CHUNK_SIZE);
			st->chunks++;
			r = xfer_rx_data(rx, m, &credit, &done, err);
			proto_msg_free(m);
			if (r < 0) {
				while (count > 0) {
					free(queue[head].data);
					head = (head + 1) % (XFER_WINDOW + 1);
					count--;
				}
				return r;
			}
			held += credit;
			in_flight--;
		}
		if (held > 0 && (held >= 3 || count == 0 || done)) {
			struct proto_writer w;
			struct proto_msg *m;
			struct frame f;

			proto_writer_init(&w, "xfer.credit", id++);
			xfer_write_credit(&w, xfer_tx_stream(tx), held);
			f = take(&w);
			m = decode(&f);
			free(f.data);
			assert_int_equal(xfer_tx_credit(tx, m, err), 0);
			proto_msg_free(m);
			st->credit_msgs++;
			held = 0;
		}
	}
	assert_int_equal(count, 0);
	return 0;
}

static void
send_file_to_cas(struct env *e, size_t size, unsigned expect_chunks)
{
	struct kiln_err err = { 0 };
	struct xfer_tx *tx = NULL;
	struct xfer_rx *rx = NULL;
	struct run_stats st;
	struct digest want, got;
	unsigned char *data;
	char *back = NULL;
	size_t back_len;

	data = write_random(e->file, size, (unsigned) size);
	digest_buf(data, size, &want);
	assert_int_equal(xfer_tx_new_file(77, e->file, &tx, &err), 0);
	assert_int_equal(xfer_rx_new_cas(77, e->cas, &want, 16u << 20, &rx, &err), 0);
	assert_int_equal(xfer_rx_digest(rx, &got), -EAGAIN);
	if (run_transfer(tx, rx, &st, &err) < 0)
		fail_msg("transfer: %s", err.msg);

	assert_true(xfer_tx_done(tx));
	assert_false(xfer_tx_ready(tx));
	assert_int_equal(xfer_tx_sent(tx), size);
	assert_int_equal(xfer_rx_received(rx), size);
	assert_int_equal(st.chunks, expect_chunks);
	assert_true(st.max_in_flight <= XFER_WINDOW);
	if (expect_chunks > XFER_WINDOW)
		assert_int_equal(st.max_in_flight, XFER_WINDOW);
	assert_int_equal(xfer_rx_digest(rx, &got), 0);
	assert_true(digest_equal(&got, &want));
	assert_true(cas_has(e->cas, &want));
	assert_int_equal(cas_get(e->cas, &want, size + 1, &back, &back_len, &err), 0);
	assert_int_equal(back_len, size);
	assert_memory_equal(back, data, size);

	free(back);
	free(data);
	xfer_tx_free(tx);
	xfer_rx_free(rx);
}

static void
xfer_3mb_to_cas(void **state)
{
	/* 3 MiB plus a partial chunk */
	send_file_to_cas(*state, (3u << 20) + 12345, 13);
}

static void
xfer_exact_chunks(void **state)
{
	/* a multiple of the chunk size ends with a full eof chunk, not an
	 * extra empty one */
	send_file_to_cas(*state, 3u << 20, 12);
}

static void
xfer_empty_file(void **state)
{
	send_file_to_cas(*state, 0, 1);
}

static int
count_blob(const struct digest *d, const struct cas_info *info, void *ctx)
{
	(void) d;
	(void) info;
	(*(unsigned *) ctx)++;
	return 0;
}

/* Entries in the CAS's temp directory: a failed stream leaves none. */
static unsigned
tmp_entries(const struct env *e)
{
	char path[128];
	struct dirent *de;
	unsigned n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/cas/tmp", e->dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void
xfer_digest_mismatch(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	struct xfer_tx *tx = NULL;
	struct xfer_rx *rx = NULL;
	struct run_stats st;
	struct digest wrong, actual;
	unsigned char *data;
	unsigned n = 0;

	data = write_random(e->file, 1u << 20, 5);
	digest_buf(data, 1u << 20, &actual);
	digest_buf("something else", 14, &wrong);
	assert_int_equal(xfer_tx_new_file(1, e->file, &tx, &err), 0);
	assert_int_equal(xfer_rx_new_cas(1, e->cas, &wrong, 16u << 20, &rx, &err), 0);
	assert_true(run_transfer(tx, rx, &st, &err) < 0);
	assert_non_null(strstr(err.msg, "transfer 1"));
	assert_false(cas_has(e->cas, &actual));
	assert_false(cas_has(e->cas, &wrong));
	assert_int_equal(cas_list(e->cas, count_blob, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(tmp_entries(e), 0);    /* discarded before rx is freed */
	free(data);
	xfer_tx_free(tx);
	xfer_rx_free(rx);
}

/* A hand-made "xfer.data" frame. */
static struct proto_msg *
data_msg(uint64_t stream, uint64_t off, const void *data, size_t len, int eof)
{
	struct proto_writer w;
	struct frame f;
	struct proto_msg *m;

	proto_writer_init(&w, "xfer.data", 9);
	proto_w_u64(&w, "stream", stream);
	proto_w_u64(&w, "off", off);
	proto_w_bin(&w, "data", data, len);
	if (eof >= 0)
		proto_w_bool(&w, "eof", eof);
	f = take(&w);
	m = decode(&f);
	free(f.data);
	return m;
}

static void
expect_refused(struct xfer_rx *rx, struct proto_msg *m, const char *needle)
{
	struct kiln_err err = { 0 };
	unsigned credit = 99;
	bool done = false;

	assert_int_equal(xfer_rx_data(rx, m, &credit, &done, &err), -KILN_EPROTO);
	if (needle && !strstr(err.msg, needle))
		fail_msg("error '%s' does not mention '%s'", err.msg, needle);
	proto_msg_free(m);
}

static void
xfer_out_of_order(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	struct xfer_rx *rx = NULL;
	static unsigned char chunk[1000];
	unsigned credit;
	bool done;
	struct proto_msg *m;

	/* first chunk not at 0 */
	assert_int_equal(xfer_rx_new_cas(2, e->cas, NULL, 1u << 20, &rx, &err), 0);
	expect_refused(rx, data_msg(2, 5, chunk, 10, 0), "offset 5, expected 0");
	/* a failed stream stays failed */
	expect_refused(rx, data_msg(2, 0, chunk, 10, 1), "failed");
	xfer_rx_free(rx);

	/* a gap after a good chunk */
	assert_int_equal(xfer_rx_new_cas(3, e->cas, NULL, 1u << 20, &rx, &err), 0);
	m = data_msg(3, 0, chunk, sizeof(chunk), 0);
	assert_int_equal(xfer_rx_data(rx, m, &credit, &done, &err), 0);
	assert_int_equal(credit, 1);
	assert_false(done);
	proto_msg_free(m);
	expect_refused(rx, data_msg(3, 2 * sizeof(chunk), chunk, sizeof(chunk), 0), "offset");
	xfer_rx_free(rx);

	/* a repeated chunk */
	assert_int_equal(xfer_rx_new_cas(4, e->cas, NULL, 1u << 20, &rx, &err), 0);
	m = data_msg(4, 0, chunk, sizeof(chunk), 0);
	assert_int_equal(xfer_rx_data(rx, m, &credit, &done, &err), 0);
	proto_msg_free(m);
	expect_refused(rx, data_msg(4, 0, chunk, sizeof(chunk), 0), "offset 0");
	xfer_rx_free(rx);

	/* data after eof */
	assert_int_equal(xfer_rx_new_cas(5, e->cas, NULL, 1u << 20, &rx, &err), 0);
	m = data_msg(5, 0, chunk, 10, 1);
	assert_int_equal(xfer_rx_data(rx, m, &credit, &done, &err), 0);
	assert_true(done);
	assert_int_equal(credit, 0);
	proto_msg_free(m);
	expect_refused(rx, data_msg(5, 10, chunk, 10, 1), "after the end");
	xfer_rx_free(rx);
}

static void
xfer_over_max(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	struct xfer_tx *tx = NULL;
	struct xfer_rx *rx = NULL;
	struct run_stats st;
	struct digest actual;
	unsigned char *data;
	unsigned n = 0;

	data = write_random(e->file, 3u << 20, 9);
	digest_buf(data, 3u << 20, &actual);
	assert_int_equal(xfer_tx_new_file(6, e->file, &tx, &err), 0);
	assert_int_equal(xfer_rx_new_cas(6, e->cas, NULL, 1u << 20, &rx, &err), 0);
	assert_int_equal(run_transfer(tx, rx, &st, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "limit"));
	assert_int_equal(xfer_rx_received(rx), 1u << 20);
	assert_false(cas_has(e->cas, &actual));
	assert_int_equal(cas_list(e->cas, count_blob, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(tmp_entries(e), 0);
	free(data);
	xfer_tx_free(tx);
	xfer_rx_free(rx);

	/* exactly max is fine */
	data = write_random(e->file, 1000, 10);
	assert_int_equal(xfer_tx_new_file(7, e->file, &tx, &err), 0);
	assert_int_equal(xfer_rx_new_cas(7, e->cas, NULL, 1000, &rx, &err), 0);
	assert_int_equal(run_transfer(tx, rx, &st, &err), 0);
	free(data);
	xfer_tx_free(tx);
	xfer_rx_free(rx);
}

static void
xfer_bad_messages(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	struct xfer_rx *rx = NULL;
	struct xfer_tx *tx = NULL;
	struct proto_writer w;
	struct frame f;
	struct proto_msg *m;
	unsigned char *big;

	big = calloc(1, PROTO_CHUNK_SIZE + 1);
	/* a chunk over PROTO_CHUNK_SIZE */
	assert_int_equal(xfer_rx_new_cas(8, e->cas, NULL, 16u << 20, &rx, &err), 0);
	expect_refused(rx, data_msg(8, 0, big, PROTO_CHUNK_SIZE + 1, 0), "exceeds");
	xfer_rx_free(rx);
	free(big);

	/* another stream's chunk */
	assert_int_equal(xfer_rx_new_cas(9, e->cas, NULL, 1000, &rx, &err), 0);
	expect_refused(rx, data_msg(10, 0, "x", 1, 0), "stream 10");
	xfer_rx_free(rx);

	/* an empty chunk that is not the last */
	assert_int_equal(xfer_rx_new_cas(9, e->cas, NULL, 1000, &rx, &err), 0);
	expect_refused(rx, data_msg(9, 0, "", 0, 0), "empty");
	xfer_rx_free(rx);

	/* data as a string, eof as an integer, wrong message type */
	assert_int_equal(xfer_rx_new_cas(9, e->cas, NULL, 1000, &rx, &err), 0);
	proto_writer_init(&w, "xfer.data", 1);
	proto_w_u64(&w, "stream", 9);
	proto_w_u64(&w, "off", 0);
	proto_w_str(&w, "data", "abc");
	f = take(&w);
	expect_refused(rx, decode(&f), "data");
	free(f.data);
	xfer_rx_free(rx);

	assert_int_equal(xfer_rx_new_cas(9, e->cas, NULL, 1000, &rx, &err), 0);
	proto_writer_init(&w, "xfer.data", 1);
	proto_w_u64(&w, "stream", 9);
	proto_w_u64(&w, "off", 0);
	proto_w_bin(&w, "data", "abc", 3);
	proto_w_u64(&w, "eof", 1);
	f = take(&w);
	expect_refused(rx, decode(&f), "eof");
	free(f.data);
	xfer_rx_free(rx);

	assert_int_equal(xfer_rx_new_cas(9, e->cas, NULL, 1000, &rx, &err), 0);
	proto_writer_init(&w, "xfer.credit", 1);
	xfer_write_credit(&w, 9, 1);
	f = take(&w);
	expect_refused(rx, decode(&f), "xfer.credit");
	free(f.data);
	xfer_rx_free(rx);

	/* eof absent means more to come */
	assert_int_equal(xfer_rx_new_cas(9, e->cas, NULL, 1000, &rx, &err), 0);
	{
		unsigned credit;
		bool done = true;

		m = data_msg(9, 0, "abc", 3, -1);
		assert_int_equal(xfer_rx_data(rx, m, &credit, &done, &err), 0);
		assert_false(done);
		proto_msg_free(m);
	}
	xfer_rx_free(rx);       /* unfinished: the partial blob is dropped */

	/* credits: wrong stream, overflow, missing n */
	free(write_random(e->file, 10, 1));
	assert_int_equal(xfer_tx_new_file(11, e->file, &tx, &err), 0);
	proto_writer_init(&w, "xfer.credit", 1);
	xfer_write_credit(&w, 12, 1);
	f = take(&w);
	m = decode(&f);
	free(f.data);
	assert_int_equal(xfer_tx_credit(tx, m, &err), -KILN_EPROTO);
	proto_msg_free(m);
	proto_writer_init(&w, "xfer.credit", 1);
	proto_w_u64(&w, "stream", 11);
	proto_w_u64(&w, "n", UINT64_MAX);
	f = take(&w);
	m = decode(&f);
	free(f.data);
	assert_int_equal(xfer_tx_credit(tx, m, &err), -KILN_EPROTO);
	assert_non_null(strstr(err.msg, "overflow"));
	proto_msg_free(m);
	proto_writer_init(&w, "xfer.credit", 1);
	proto_w_u64(&w, "stream", 11);
	f = take(&w);
	m = decode(&f);
	free(f.data);
	assert_int_equal(xfer_tx_credit(tx, m, &err), -KILN_EPROTO);
	proto_msg_free(m);
	xfer_tx_free(tx);

	/* missing input file */
	assert_int_equal(xfer_tx_new_file(1, "/nonexistent/kiln", &tx, &err), -ENOENT);
}

static void
xfer_pipe_to_fd(void **state)
{
	struct env *e = *state;
	struct kiln_err err = { 0 };
	struct xfer_tx *tx = NULL;
	struct xfer_rx *rx = NULL;
	struct run_stats st;
	unsigned char src[50000];
	char out[160], *back = NULL;
	struct digest want, got;
	size_t len;
	int p[2], fd;

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char) (i * 31 + 7);
	digest_buf(src, sizeof(src), &want);
	/* the whole payload fits in the pipe buffer, so no writer thread */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(kiln_write_all(p[1], src, sizeof(src)), 0);
	close(p[1]);

	snprintf(out, sizeof(out), "%s/out", e->dir);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(xfer_tx_new_fd(20, p[0], &tx, &err), 0);
	assert_int_equal(xfer_rx_new_fd(20, fd, 1u << 20, &rx, &err), 0);
	assert_int_equal(run_transfer(tx, rx, &st, &err), 0);
	assert_int_equal(st.chunks, 1);
	assert_int_equal(xfer_rx_digest(rx, &got), 0);
	assert_true(digest_equal(&got, &want));
	xfer_tx_free(tx);
	xfer_rx_free(rx);

	assert_int_equal(kiln_read_file_at(AT_FDCWD, out, 1u << 20, &back, &len), 0);
	assert_int_equal(len, sizeof(src));
	assert_memory_equal(back, src, sizeof(src));
	free(back);
}

static void
xfer_abort_roundtrip(void **state)
{
	struct kiln_err e = { 0 }, got = { 0 };
	struct proto_writer w;
	struct frame f;
	struct proto_msg *m;

	(void) state;
	kiln_err_set(&e, ENOSPC, "disk full on worker-3");
	proto_writer_init(&w, "xfer.abort", 4);
	xfer_write_abort(&w, 33, &e);
	f = take(&w);
	m = decode(&f);
	free(f.data);
	assert_int_equal(xfer_abort_err(m, &got), -ENOSPC);
	assert_int_equal(got.code, ENOSPC);
	assert_string_equal(got.msg, "disk full on worker-3");
	proto_msg_free(m);

	proto_writer_init(&w, "xfer.abort", 4);
	xfer_write_abort(&w, 33, NULL);
	f = take(&w);
	m = decode(&f);
	free(f.data);
	assert_int_equal(xfer_abort_err(m, &got), -EIO);
	proto_msg_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(xfer_3mb_to_cas, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_exact_chunks, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_empty_file, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_digest_mismatch, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_out_of_order, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_over_max, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_bad_messages, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(xfer_pipe_to_fd, env_setup, env_teardown),
		cmocka_unit_test(xfer_abort_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
