/* Unit tests for shared/cas.c: the put/get/has/stat/list API, the rule
 * that a failed or interrupted write never shows up as a blob, index
 * repair, and several processes and threads writing one store at once.
 * Each test gets a fresh store in a mkdtemp() directory under /tmp. Also
 * covers the shared/util.c helpers the store is built on. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "util.h"

struct fixture {
	char dir[64];
	struct cas *cas;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct kiln_err err = { 0 };

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-cas-test-XXXXXX");
	if (!mkdtemp(f->dir) || cas_open(f->dir, &f->cas, &err) < 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	cas_free(f->cas);
	assert_int_equal(kiln_rm_rf(f->dir), 0);
	assert_int_equal(access(f->dir, F_OK), -1);
	free(f);
	return 0;
}

/* Close and reopen the store, as a restarted process would. */
static void
reopen(struct fixture *f)
{
	struct kiln_err err = { 0 };

	cas_free(f->cas);
	f->cas = NULL;
	if (cas_open(f->dir, &f->cas, &err) < 0)
		fail_msg("reopen: %s", err.msg);
}

/* Deterministic pseudo-random content: blob `seed` is always the same. */
static char *
make_blob(uint64_t seed, size_t *ret_len)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
	size_t len = (size_t) ((seed * 7919) % 9000);
	char *buf = malloc(len + 1);

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (char) x;
	}
	*ret_len = len;
	return buf;
}

static int
count_entries(const char *dir, const char *sub)
{
	_cleanup_free_ char *path = kiln_strdupf("%s/%s", dir, sub);
	_cleanup_closedir_ DIR *d = NULL;
	struct dirent *de;
	int n = 0;

	assert_non_null(path);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	return n;
}

/* Path of the single entry in dir/sub. */
static char *
only_entry(const char *dir, const char *sub)
{
	_cleanup_free_ char *path = kiln_strdupf("%s/%s", dir, sub);
	_cleanup_closedir_ DIR *d = NULL;
	struct dirent *de;
	char *found = NULL;

	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		assert_null(found);
		found = kiln_strdupf("%s/%s", path, de->d_name);
	}
	assert_non_null(found);
	return found;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, len), 0);
}

/* Write data where the store keeps the blob with digest d, bypassing it. */
static void
plant_blob(struct fixture *f, const struct digest *d, const void *data, size_t len)
{
	char path[256], hex[65];
	_cleanup_free_ char *sub = NULL;

	digest_hex(d, hex);
	sub = kiln_strdupf("%s/blobs/sha256/%.2s", f->dir, hex);
	assert_int_equal(kiln_mkdir_p(sub, 0755), 0);
	assert_int_equal(cas_path(f->cas, d, path, sizeof(path)), 0);
	write_file(path, data, len);
}

struct listed {
	struct cas *cas;        /* set: put a new blob from the first callbacks */
	int count;
	int stop_after;
	struct digest want;
	int seen_want;
	char media[128];
};

static int
on_list(const struct digest *d, const struct cas_info *info, void *ctx)
{
	struct listed *l = ctx;

	l->count++;
	if (l->cas && l->count <= 3) {
		struct kiln_err err = { 0 };
		char s[32];

		snprintf(s, sizeof(s), "added while listing %d", l->count);
		if (cas_put(l->cas, s, strlen(s), NULL, NULL, NULL, &err) < 0)
			return -1;
	}
	if (digest_equal(d, &l->want)) {
		l->seen_want++;
		snprintf(l->media, sizeof(l->media), "%s", info->media_type);
	}
	if (l->stop_after && l->count == l->stop_after)
		return 42;
	return 0;
}

static int
list_count(struct cas *cas, const struct digest *want, int *ret_seen)
{
	struct listed l = { 0 };
	struct kiln_err err = { 0 };

	if (want)
		l.want = *want;
	assert_int_equal(cas_list(cas, on_list, &l, &err), 0);
	if (ret_seen)
		*ret_seen = l.seen_want;
	return l.count;
}

static void
cas_put_get_has_stat(void **state)
{
	static const char data[] = "hello, kiln";
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct digest d, want, other;
	struct cas_info info;
	char path[256], *buf = NULL;
	size_t len = 0;
	int64_t now = (int64_t) time(NULL);

	digest_buf(data, sizeof(data) - 1, &want);
	digest_buf("absent", 6, &other);
	assert_false(cas_has(f->cas, &want));
	assert_int_equal(cas_stat(f->cas, &want, &info, &err), -ENOENT);
	assert_int_equal(cas_get(f->cas, &want, 1024, &buf, &len, &err), -ENOENT);

	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, "text/plain", NULL, &d, &err), 0);
	assert_true(digest_equal(&d, &want));
	assert_true(cas_has(f->cas, &d));
	assert_false(cas_has(f->cas, &other));

	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_int_equal(info.size, sizeof(data) - 1);
	assert_string_equal(info.media_type, "text/plain");
	assert_true(info.last_use >= now && info.last_use <= now + 5);

	assert_int_equal(cas_get(f->cas, &d, 1024, &buf, &len, &err), 0);
	assert_int_equal(len, sizeof(data) - 1);
	assert_memory_equal(buf, data, len);
	assert_int_equal(buf[len], '\0');
	free(buf);
	buf = NULL;
	/* Exactly the size is allowed, one byte less is not. */
	assert_int_equal(cas_get(f->cas, &d, sizeof(data) - 1, &buf, NULL, &err), 0);
	free(buf);
	buf = NULL;
	assert_int_equal(cas_get(f->cas, &d, sizeof(data) - 2, &buf, &len, &err), -EFBIG);
	assert_null(buf);

	/* The path names a file holding exactly the content. */
	assert_int_equal(cas_path(f->cas, &d, path, sizeof(path)), 0);
	assert_int_equal(kiln_read_file_at(AT_FDCWD, path, 1024, &buf, &len), 0);
	assert_memory_equal(buf, data, len);
	free(buf);
	buf = NULL;
	assert_int_equal(cas_path(f->cas, &d, path, 20), -ENAMETOOLONG);

	/* A second put is a no-op that keeps the media type unless given a
	 * new one; the index survives a reopen. */
	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, NULL, NULL, NULL, &err), 0);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_string_equal(info.media_type, "text/plain");
	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, "application/x-kiln", &want, NULL,
				 &err),
			 0);
	reopen(f);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_string_equal(info.media_type, "application/x-kiln");
	assert_int_equal(list_count(f->cas, NULL, NULL), 1);

	/* The empty blob is a blob like any other. */
	assert_int_equal(cas_put(f->cas, "", 0, NULL, NULL, &d, &err), 0);
	assert_int_equal(cas_get(f->cas, &d, 0, &buf, &len, &err), 0);
	assert_int_equal(len, 0);
	free(buf);
	assert_int_equal(count_entries(f->dir, "tmp"), 0);
}

static void
cas_bad_media_type(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	char media[200];
	struct cas_info info;
	struct digest d;

	memset(media, 'm', sizeof(media) - 1);
	media[sizeof(media) - 1] = '\0';
	assert_int_equal(cas_put(f->cas, "x", 1, media, NULL, &d, &err), -EINVAL);
	digest_buf("x", 1, &d);
	assert_false(cas_has(f->cas, &d));
	/* 127 characters fit struct cas_info, 128 do not. */
	media[128] = '\0';
	assert_int_equal(cas_put(f->cas, "x", 1, media, NULL, &d, &err), -EINVAL);
	media[127] = '\0';
	assert_int_equal(cas_put(f->cas, "x", 1, media, NULL, &d, &err), 0);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_int_equal(strlen(info.media_type), 127);
}

static void
cas_expect_mismatch_stores_nothing(void **state)
{
	static const char data[] = "the real content";
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct digest wrong, real, d;
	struct cas_writer *w = NULL;
	char path[] = "/tmp/kiln-cas-src-XXXXXX";
	int fd;

	digest_buf("something else", 14, &wrong);
	digest_buf(data, sizeof(data) - 1, &real);
	memset(&d, 0xaa, sizeof(d));

	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, NULL, &wrong, &d, &err), -EBADMSG);
	assert_int_equal(err.code, EBADMSG);
	assert_non_null(strstr(err.msg, "expected sha256:"));

	assert_int_equal(cas_writer_new(f->cas, &wrong, &w, &err), 0);
	assert_int_equal(cas_writer_write(w, data, 4, &err), 0);
	assert_int_equal(cas_writer_write(w, data + 4, sizeof(data) - 5, &err), 0);
	assert_int_equal(cas_writer_size(w), sizeof(data) - 1);
	assert_int_equal(cas_writer_commit(w, NULL, &d, &err), -EBADMSG);

	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, sizeof(data) - 1), 0);
	close(fd);
	assert_int_equal(cas_put_file(f->cas, path, NULL, &wrong, &d, &err), -EBADMSG);
	unlink(path);

	/* Nothing under either digest, no temp files, no index entries, and
	 * ret_d was left alone. */
	assert_false(cas_has(f->cas, &wrong));
	assert_false(cas_has(f->cas, &real));
	assert_int_equal(count_entries(f->dir, "tmp"), 0);
	assert_int_equal(count_entries(f->dir, "blobs/sha256"), 0);
	assert_int_equal(list_count(f->cas, NULL, NULL), 0);
	for (size_t i = 0; i < sizeof(d.raw); i++)
		assert_int_equal(d.raw[i], 0xaa);
}

static void
cas_writer_stream_and_abort(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct cas_writer *w = NULL;
	struct digest d, want;
	struct cas_info info;
	size_t len;
	char *blob = make_blob(77, &len), *buf = NULL;

	digest_buf(blob, len, &want);

	/* Aborted: nothing stays behind. */
	assert_int_equal(cas_writer_new(f->cas, NULL, &w, &err), 0);
	assert_int_equal(cas_writer_write(w, blob, len, &err), 0);
	assert_int_equal(count_entries(f->dir, "tmp"), 1);
	cas_writer_abort(w);
	assert_int_equal(count_entries(f->dir, "tmp"), 0);
	assert_false(cas_has(f->cas, &want));
	cas_writer_abort(NULL);

	/* Committed in odd-sized pieces, with the right expectation. */
	assert_int_equal(cas_writer_new(f->cas, &want, &w, &err), 0);
	for (size_t off = 0, step = 1; off < len; off += step, step = step * 3 + 1) {
		size_t n = len - off < step ? len - off : step;

		assert_int_equal(cas_writer_write(w, blob + off, n, &err), 0);
	}
	assert_int_equal(cas_writer_size(w), len);
	assert_int_equal(cas_writer_commit(w, "application/octet-stream", &d, &err), 0);
	assert_true(digest_equal(&d, &want));
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_int_equal(info.size, len);
	assert_string_equal(info.media_type, "application/octet-stream");
	assert_int_equal(cas_get(f->cas, &d, len, &buf, NULL, &err), 0);
	assert_memory_equal(buf, blob, len);
	assert_int_equal(count_entries(f->dir, "tmp"), 0);
	free(buf);
	free(blob);
}

static void
cas_put_file_copies(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	char path[] = "/tmp/kiln-cas-src-XXXXXX";
	struct digest d, want;
	size_t len;
	char *blob = make_blob(4242, &len), *buf = NULL;
	int fd;

	digest_buf(blob, len, &want);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, blob, len), 0);
	close(fd);

	assert_int_equal(cas_put_file(f->cas, path, "application/x-tar", &want, &d, &err), 0);
	assert_true(digest_equal(&d, &want));
	/* A copy: the source may go away. */
	unlink(path);
	assert_int_equal(cas_get(f->cas, &d, len, &buf, NULL, &err), 0);
	assert_memory_equal(buf, blob, len);
	assert_int_equal(cas_put_file(f->cas, path, NULL, NULL, &d, &err), -ENOENT);
	assert_non_null(strstr(err.msg, path));
	free(buf);
	free(blob);
}

static void
cas_list_sees_every_blob_once(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct listed l = { 0 };
	struct digest d;
	enum { N = 600 };       /* more than one internal batch */

	for (int i = 0; i < N; i++) {
		char s[32];

		snprintf(s, sizeof(s), "blob %d", i);
		assert_int_equal(cas_put(f->cas, s, strlen(s), i % 2 ? "odd" : NULL, NULL, &d, &err), 0);
	}
	l.want = d;
	assert_int_equal(cas_list(f->cas, on_list, &l, &err), 0);
	assert_int_equal(l.count, N);
	assert_int_equal(l.seen_want, 1);
	assert_string_equal(l.media, "odd");

	for (int i = 0; i < N; i++) {
		char s[32];
		int seen = 0;

		snprintf(s, sizeof(s), "blob %d", i);
		digest_buf(s, strlen(s), &d);
		if (i % 97 == 0) {
			assert_int_equal(list_count(f->cas, &d, &seen), N);
			assert_int_equal(seen, 1);
		}
	}

	/* A non-zero return stops the walk and is passed back. */
	memset(&l, 0, sizeof(l));
	l.stop_after = 300;
	assert_int_equal(cas_list(f->cas, on_list, &l, &err), 42);
	assert_int_equal(l.count, 300);

	/* A callback may write to the store while the walk goes on. */
	memset(&l, 0, sizeof(l));
	l.cas = f->cas;
	assert_int_equal(cas_list(f->cas, on_list, &l, &err), 0);
	assert_true(l.count >= N && l.count <= N + 3);
	assert_int_equal(list_count(f->cas, NULL, NULL), N + 3);
}

static void
cas_leftover_temp_is_not_a_blob(void **state)
{
	static const char data[] = "content a crashed writer was storing";
	struct fixture *f = *state;
	struct timespec old[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
	_cleanup_free_ char *tmp = kiln_strdupf("%s/tmp/12345-deadbeefdeadbeef", f->dir);
	_cleanup_free_ char *fresh = kiln_strdupf("%s/tmp/12345-0123456789abcdef", f->dir);
	struct kiln_err err = { 0 };
	struct digest d;
	char *buf = NULL;

	digest_buf(data, sizeof(data) - 1, &d);
	write_file(tmp, data, sizeof(data) - 1);
	write_file(fresh, data, 10);
	assert_false(cas_has(f->cas, &d));
	assert_int_equal(cas_get(f->cas, &d, 1024, &buf, NULL, &err), -ENOENT);
	assert_int_equal(list_count(f->cas, NULL, NULL), 0);

	/* On open, old unlocked temp files are swept; a recent one may still
	 * belong to a live writer and stays. */
	assert_int_equal(utimensat(AT_FDCWD, tmp, old, 0), 0);
	reopen(f);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(access(fresh, F_OK), 0);
	assert_false(cas_has(f->cas, &d));

	/* A temp file whose writer still holds it is never swept, however
	 * old. The sweep runs in a child: one process must not open the
	 * same LMDB environment twice. The child shares the writer's open
	 * file and so its flock, which is exactly the cross-process case. */
	{
		struct cas_writer *w = NULL;
		_cleanup_free_ char *name = NULL;
		int status = 0;
		pid_t pid;

		assert_int_equal(unlink(fresh), 0);
		assert_int_equal(cas_writer_new(f->cas, NULL, &w, &err), 0);
		assert_int_equal(cas_writer_write(w, data, 5, &err), 0);
		assert_int_equal(count_entries(f->dir, "tmp"), 1);
		name = only_entry(f->dir, "tmp");
		assert_int_equal(utimensat(AT_FDCWD, name, old, 0), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct cas *cas = NULL;

			if (cas_open(f->dir, &cas, &err) < 0)
				_exit(1);
			cas_free(cas);
			_exit(0);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_int_equal(access(name, F_OK), 0);
		assert_int_equal(cas_writer_write(w, data + 5, sizeof(data) - 6, &err), 0);
		assert_int_equal(cas_writer_commit(w, NULL, NULL, &err), 0);
	}
	assert_true(cas_has(f->cas, &d));
	assert_int_equal(count_entries(f->dir, "tmp"), 0);
}

static void
cas_truncated_file_is_not_a_blob(void **state)
{
	static const char data[] = "a blob that will be damaged behind the store's back";
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct cas_info info;
	char path[256], *buf = NULL;
	struct digest d;

	/* Unindexed and truncated (what a crash before our fsync could leave
	 * on a filesystem that reorders): re-hashed, refused, removed. */
	digest_buf(data, sizeof(data) - 1, &d);
	plant_blob(f, &d, data, 10);
	assert_int_equal(cas_path(f->cas, &d, path, sizeof(path)), 0);
	assert_false(cas_has(f->cas, &d));
	assert_int_equal(access(path, F_OK), -1);
	plant_blob(f, &d, data, 10);
	assert_int_equal(cas_get(f->cas, &d, 1024, &buf, NULL, &err), -ENOENT);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), -ENOENT);
	assert_int_equal(list_count(f->cas, NULL, NULL), 0);

	/* Indexed, then truncated: the size no longer matches the index. */
	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, "m", NULL, NULL, &err), 0);
	assert_int_equal(truncate(path, 10), 0);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), -ENOENT);
	assert_int_equal(list_count(f->cas, NULL, NULL), 0);

	/* Indexed, then removed: the stale entry goes too. */
	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, "m", NULL, NULL, &err), 0);
	assert_int_equal(list_count(f->cas, NULL, NULL), 1);
	assert_int_equal(unlink(path), 0);
	assert_false(cas_has(f->cas, &d));
	assert_int_equal(list_count(f->cas, NULL, NULL), 0);

	/* And a put afterwards stores it properly again. */
	assert_int_equal(cas_put(f->cas, data, sizeof(data) - 1, NULL, NULL, NULL, &err), 0);
	assert_int_equal(cas_get(f->cas, &d, 1024, &buf, NULL, &err), 0);
	assert_string_equal(buf, data);
	free(buf);
}

static void
cas_unindexed_blob_is_served(void **state)
{
	static const char data[] = "renamed into place, then the process died";
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct cas_info info;
	struct digest d;
	char *buf = NULL;
	int seen = 0;

	digest_buf(data, sizeof(data) - 1, &d);
	plant_blob(f, &d, data, sizeof(data) - 1);
	assert_int_equal(list_count(f->cas, NULL, NULL), 0);

	assert_int_equal(cas_get(f->cas, &d, 1024, &buf, NULL, &err), 0);
	assert_string_equal(buf, data);
	free(buf);
	/* ... and now it is indexed. */
	assert_int_equal(list_count(f->cas, &d, &seen), 1);
	assert_int_equal(seen, 1);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_int_equal(info.size, sizeof(data) - 1);
	assert_string_equal(info.media_type, "");

	/* cas_has repairs the index the same way. */
	digest_buf("another", 7, &d);
	plant_blob(f, &d, "another", 7);
	assert_true(cas_has(f->cas, &d));
	assert_int_equal(list_count(f->cas, NULL, NULL), 2);
	assert_int_equal(cas_put(f->cas, "another", 7, "late/type", NULL, NULL, &err), 0);
	assert_int_equal(cas_stat(f->cas, &d, &info, &err), 0);
	assert_string_equal(info.media_type, "late/type");
}

/* Several processes, one store. */
enum { SHARED_BLOBS = 200, OWN_BLOBS = 50, WRITERS = 4 };

static int
child_put(struct cas *cas, uint64_t seed, bool stream)
{
	struct kiln_err err = { 0 };
	struct digest d, want;
	size_t len;
	char *blob = make_blob(seed, &len);
	int r;

	digest_buf(blob, len, &want);
	if (stream) {
		struct cas_writer *w = NULL;

		r = cas_writer_new(cas, &want, &w, &err);
		for (size_t off = 0; r == 0 && off < len; off += 1000)
			r = cas_writer_write(w, blob + off, len - off < 1000 ? len - off : 1000, &err);
		if (r == 0)
			r = cas_writer_commit(w, "shared", &d, &err);
		else if (w)
			cas_writer_abort(w);
	} else {
		r = cas_put(cas, blob, len, seed < SHARED_BLOBS ? "shared" : "own", &want, &d, &err);
	}
	if (r == 0 && !digest_equal(&d, &want))
		r = -EIO;
	if (r < 0)
		fprintf(stderr, "child %d: put %llu: %s\n", (int) getpid(),
			(unsigned long long) seed, err.msg);
	free(blob);
	return r;
}

static int
child_main(const char *dir, int k, int gate)
{
	struct kiln_err err = { 0 };
	struct cas *cas = NULL;
	char c;

	/* Open first, then wait so that all writers start together. */
	if (cas_open(dir, &cas, &err) < 0)
		return 1;
	if (read(gate, &c, 1) < 0)
		return 2;
	for (int j = 0; j < SHARED_BLOBS; j++) {
		/* Half the writers walk backwards so they also meet mid-way. */
		int i = k % 2 ? SHARED_BLOBS - 1 - j : j;

		if (child_put(cas, (uint64_t) i, (i + k) % 3 == 0) < 0)
			return 3;
		if (j < OWN_BLOBS &&
		    child_put(cas, (uint64_t) (1000 * (k + 1) + j), false) < 0)
			return 4;
	}
	cas_free(cas);
	return 0;
}

static void
verify_blob(struct cas *cas, uint64_t seed)
{
	struct kiln_err err = { 0 };
	struct cas_info info;
	struct digest d;
	size_t len, got = 0;
	char *blob = make_blob(seed, &len), *buf = NULL;

	digest_buf(blob, len, &d);
	if (cas_get(cas, &d, len, &buf, &got, &err) < 0)
		fail_msg("blob %llu: %s", (unsigned long long) seed, err.msg);
	assert_int_equal(got, len);
	assert_memory_equal(buf, blob, len);
	assert_int_equal(cas_stat(cas, &d, &info, &err), 0);
	assert_int_equal(info.size, len);
	assert_string_equal(info.media_type, seed < SHARED_BLOBS ? "shared" : "own");
	free(buf);
	free(blob);
}

static void
cas_concurrent_processes(void **state)
{
	struct fixture *f = *state;
	pid_t pids[WRITERS];
	int gate[2];

	/* LMDB environments must not cross fork(): children open their own,
	 * and the parent reopens only after they are done. */
	cas_free(f->cas);
	f->cas = NULL;
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	for (int k = 0; k < WRITERS; k++) {
		pids[k] = fork();
		assert_true(pids[k] >= 0);
		if (pids[k] == 0) {
			close(gate[1]);
			_exit(child_main(f->dir, k, gate[0]));
		}
	}
	close(gate[0]);
	close(gate[1]);         /* EOF on the gate: go */
	for (int k = 0; k < WRITERS; k++) {
		int status = 0;

		assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("writer %d: status 0x%x", k, status);
	}

	reopen(f);
	for (uint64_t i = 0; i < SHARED_BLOBS; i++)
		verify_blob(f->cas, i);
	for (int k = 0; k < WRITERS; k++)
		for (int j = 0; j < OWN_BLOBS; j++)
			verify_blob(f->cas, (uint64_t) (1000 * (k + 1) + j));
	assert_int_equal(list_count(f->cas, NULL, NULL), SHARED_BLOBS + WRITERS * OWN_BLOBS);
	assert_int_equal(count_entries(f->dir, "tmp"), 0);
}

/* Several threads, one struct cas. */
struct thread_arg {
	struct cas *cas;
	int k;
	int failed;
};

static void *
thread_main(void *p)
{
	struct thread_arg *a = p;

	for (int j = 0; j < SHARED_BLOBS / 2 && !a->failed; j++) {
		int i = a->k % 2 ? SHARED_BLOBS / 2 - 1 - j : j;
		struct kiln_err err = { 0 };
		struct cas_info info;
		struct digest d;
		size_t len;
		char *blob = make_blob((uint64_t) i, &len);

		digest_buf(blob, len, &d);
		if (child_put(a->cas, (uint64_t) i, (i + a->k) % 2 == 0) < 0 ||
		    child_put(a->cas, (uint64_t) (1000 * (a->k + 1) + j), false) < 0 ||
		    cas_stat(a->cas, &d, &info, &err) < 0 || info.size != len)
			a->failed = 1;
		free(blob);
	}
	return NULL;
}

static void
cas_concurrent_threads(void **state)
{
	struct fixture *f = *state;
	struct thread_arg args[WRITERS];
	pthread_t t[WRITERS];

	for (int k = 0; k < WRITERS; k++) {
		args[k] = (struct thread_arg){ .cas = f->cas, .k = k };
		assert_int_equal(pthread_create(&t[k], NULL, thread_main, &args[k]), 0);
	}
	for (int k = 0; k < WRITERS; k++) {
		assert_int_equal(pthread_join(t[k], NULL), 0);
		assert_int_equal(args[k].failed, 0);
	}
	for (uint64_t i = 0; i < SHARED_BLOBS / 2; i++)
		verify_blob(f->cas, i);
	assert_int_equal(list_count(f->cas, NULL, NULL), SHARED_BLOBS / 2 * (1 + WRITERS));
}

static void
cas_open_errors(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = { 0 };
	struct cas *cas = NULL;
	_cleanup_free_ char *file = kiln_strdupf("%s/plain-file", f->dir);
	_cleanup_free_ char *under = kiln_strdupf("%s/plain-file/store", f->dir);

	write_file(file, "x", 1);
	assert_true(cas_open(under, &cas, &err) < 0);
	assert_null(cas);
	assert_int_equal(err.code, ENOTDIR);
	assert_non_null(strstr(err.msg, under));
	cas_free(NULL);
}

/* The shared/util.c helpers the store stands on. */
static void
util_helpers(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *deep = kiln_strdupf("%s/x/y//z/", f->dir);
	_cleanup_free_ char *file = kiln_strdupf("%s/x/y/z/f", f->dir);
	_cleanup_free_ char *link = kiln_strdupf("%s/x/link", f->dir);
	_cleanup_free_ char *outside = kiln_strdupf("%s/outside", f->dir);
	_cleanup_free_ char *x = kiln_strdupf("%s/x", f->dir);
	char *buf = NULL, *exe;
	size_t len = 99;

	assert_int_equal(kiln_mkdir_p(deep, 0755), 0);
	assert_int_equal(kiln_mkdir_p(deep, 0755), 0);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, file, "12345", 5, 0600), 0);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, file, "abc", 3, 0600), 0);
	assert_int_equal(kiln_read_file_at(AT_FDCWD, file, 3, &buf, &len), 0);
	assert_string_equal(buf, "abc");
	assert_int_equal(len, 3);
	free(buf);
	buf = NULL;
	assert_int_equal(kiln_read_file_at(AT_FDCWD, file, 2, &buf, &len), -EFBIG);
	assert_null(buf);
	assert_int_equal(kiln_read_file_at(AT_FDCWD, "/nonexistent", 2, &buf, &len), -ENOENT);
	assert_int_equal(kiln_mkdir_p(file, 0755), -ENOTDIR);

	/* rm -rf removes a symlink, not what it points at. */
	assert_int_equal(kiln_mkdir_p(outside, 0755), 0);
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(kiln_rm_rf(x), 0);
	assert_int_equal(access(x, F_OK), -1);
	assert_int_equal(access(outside, F_OK), 0);
	assert_int_equal(kiln_rm_rf(x), 0);

	assert_true(kiln_startswith("sha256:abc", "sha256:"));
	assert_false(kiln_startswith("sha25", "sha256:"));
	assert_true(kiln_now_ms() > 0);
	assert_int_equal(setenv("SOURCE_DATE_EPOCH", "1700000000", 1), 0);
	assert_int_equal(kiln_source_date_epoch(), 1700000000);
	assert_int_equal(setenv("SOURCE_DATE_EPOCH", "17x", 1), 0);
	assert_int_equal(kiln_source_date_epoch(), -1);
	assert_int_equal(setenv("SOURCE_DATE_EPOCH", "-5", 1), 0);
	assert_int_equal(kiln_source_date_epoch(), -1);
	assert_int_equal(unsetenv("SOURCE_DATE_EPOCH"), 0);
	assert_int_equal(kiln_source_date_epoch(), -1);
	exe = kiln_sibling_exe("no-such-kiln-tool");
	assert_string_equal(exe, "no-such-kiln-tool");
	free(exe);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(cas_put_get_has_stat, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_bad_media_type, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_expect_mismatch_stores_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_writer_stream_and_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_put_file_copies, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_list_sees_every_blob_once, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_leftover_temp_is_not_a_blob, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_truncated_file_is_not_a_blob, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_unindexed_blob_is_served, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_concurrent_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_concurrent_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(cas_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(util_helpers, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
