/* Content-addressed blob store. The files are the truth: a file at
 * DIR/blobs/sha256/<aa>/<hex> always holds content with that digest,
 * because it only ever gets there by rename() from DIR/tmp/ after being
 * hashed while written, checked and fsync'd, and the directory is fsync'd
 * before the index is told. The LMDB index (DIR/index, key: raw digest,
 * value: struct rec) only adds metadata: size, media type and a coarse
 * last-use time for garbage collection. An index entry may therefore be
 * missing (crash after the rename) or stale (file removed); both are
 * repaired when the blob is next looked at. A file whose size disagrees
 * with its entry, or that has no entry, is re-hashed before it is trusted,
 * so a truncated or damaged file is removed rather than served.
 *
 * Several processes and threads may use one store at once: renames of
 * identical content are idempotent and LMDB serialises index writers
 * through its lock file. Temp files are flock()ed by their writer, which
 * lets cas_open() sweep the ones left behind by dead processes.
 *
 * This is not a garbage collector and not a cache policy: nothing here
 * deletes a valid blob. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "util.h"

#define CAS_MAP_SIZE (1ULL << 30)       /* ~5 million entries */
#define CAS_MAX_READERS 256             /* threads x processes reading at once */
#define CAS_TOUCH_SECS 60               /* last_use granularity: reads rarely write */
#define CAS_STALE_TMP_SECS 3600         /* unlocked temp files older than this are garbage */
#define CAS_COPY_CHUNK (128 * 1024)
#define CAS_LIST_BATCH 256
#define BLOB_NAME_SIZE 68               /* "aa/" + 64 hex + NUL */
#define TMP_NAME_SIZE 48

struct cas {
	char *dir;
	int tmpfd;              /* DIR/tmp */
	int blobfd;             /* DIR/blobs/sha256 */
	MDB_env *env;
	MDB_dbi dbi;
};

struct cas_writer {
	struct cas *cas;
	int fd;
	char name[TMP_NAME_SIZE];       /* under DIR/tmp */
	struct digest_ctx *dc;
	uint64_t size;
	bool has_expect;
	bool failed;            /* a write failed part-way: file and hash disagree */
	struct digest expect;
};

/* Index value. Native byte order is fine: an LMDB file is not portable
 * between architectures anyway. The media type follows, unterminated. */
struct rec {
	uint8_t version;
	uint8_t media_len;
	uint8_t pad[6];
	uint64_t size;
	int64_t last_use;
};

#define REC_VERSION 1

enum index_op {
	INDEX_RECORD,           /* set size, last_use = now, media unless NULL/"" */
	INDEX_TOUCH,            /* last_use = now on an existing entry */
	INDEX_DROP_STALE,       /* delete the entry if the blob file is gone */
};

static int64_t
now_s(void)
{
	return (int64_t) time(NULL);
}

static int
mdb_errno(int rc)
{
	/* LMDB passes system errors through as positive errno values. */
	if (rc > 0)
		return rc;
	switch (rc) {
	case MDB_NOTFOUND:
		return ENOENT;
	case MDB_MAP_FULL:
		return ENOSPC;
	case MDB_READERS_FULL:
		return EAGAIN;
	default:
		return EIO;
	}
}

static int
mdb_fail(struct kiln_err *err, int rc, const char *what)
{
	return kiln_err_set(err, mdb_errno(rc), "index %s: %s", what, mdb_strerror(rc));
}

static void
blob_name(const struct digest *d, char name[BLOB_NAME_SIZE])
{
	char hex[65];

	digest_hex(d, hex);
	snprintf(name, BLOB_NAME_SIZE, "%.2s/%s", hex, hex);
}

static size_t
rec_encode(unsigned char *buf, uint64_t size, int64_t last_use, const char *media)
{
	struct rec r = { .version = REC_VERSION, .size = size, .last_use = last_use };
	size_t mlen = media ? strlen(media) : 0;

	r.media_len = (uint8_t) mlen;
	memcpy(buf, &r, sizeof(r));
	memcpy(buf + sizeof(r), media ? media : "", mlen);
	return sizeof(r) + mlen;
}

static int
rec_decode(const MDB_val *v, struct cas_info *ret_info)
{
	struct rec r;

	if (v->mv_size < sizeof(r))
		return -EINVAL;
	memcpy(&r, v->mv_data, sizeof(r));
	if (r.version != REC_VERSION || v->mv_size != sizeof(r) + r.media_len ||
	    r.media_len >= sizeof(ret_info->media_type))
		return -EINVAL;
	ret_info->size = r.size;
	ret_info->last_use = r.last_use;
	memcpy(ret_info->media_type, (const char *) v->mv_data + sizeof(r), r.media_len);
	ret_info->media_type[r.media_len] = '\0';
	return 0;
}

static int
index_get(struct cas *cas, const struct digest *d, struct cas_info *ret_info,
	  struct kiln_err *err)
{
	MDB_val key = { DIGEST_RAW_LEN, (void *) d->raw }, val;
	MDB_txn *txn;
	int rc, r;

	rc = mdb_txn_begin(cas->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return mdb_fail(err, rc, "read");
	rc = mdb_get(txn, cas->dbi, &key, &val);
	if (rc == MDB_NOTFOUND)
		r = -ENOENT;
	else if (rc)
		r = mdb_fail(err, rc, "get");
	else if (rec_decode(&val, ret_info) < 0)
		r = -ENOENT;    /* unreadable record: as if unindexed, so it is rewritten */
	else
		r = 0;
	mdb_txn_abort(txn);
	return r;
}

static int
index_write(struct cas *cas, const struct digest *d, enum index_op op, uint64_t size,
	    const char *media, struct kiln_err *err)
{
	MDB_val key = { DIGEST_RAW_LEN, (void *) d->raw }, val;
	unsigned char buf[sizeof(struct rec) + sizeof(((struct cas_info *) 0)->media_type)];
	struct cas_info old;
	char name[BLOB_NAME_SIZE];
	struct stat st;
	bool have;
	MDB_txn *txn;
	int rc;

	rc = mdb_txn_begin(cas->env, NULL, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin write");
	rc = mdb_get(txn, cas->dbi, &key, &val);
	if (rc && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "get");
	}
	have = rc == 0 && rec_decode(&val, &old) == 0;

	switch (op) {
	case INDEX_RECORD:
		if (!media || !*media)
			media = have ? old.media_type : "";
		val.mv_size = rec_encode(buf, size, now_s(), media);
		val.mv_data = buf;
		rc = mdb_put(txn, cas->dbi, &key, &val, 0);
		break;
	case INDEX_TOUCH:
		if (!have)
			goto out_abort;
		val.mv_size = rec_encode(buf, old.size, now_s(), old.media_type);
		val.mv_data = buf;
		rc = mdb_put(txn, cas->dbi, &key, &val, 0);
		break;
	case INDEX_DROP_STALE:
		/* Checked under the write lock: a writer renames before it
		 * takes the lock, so a file absent now had no fresh entry. */
		blob_name(d, name);
		if (rc == MDB_NOTFOUND || fstatat(cas->blobfd, name, &st, 0) == 0 || errno != ENOENT)
			goto out_abort;
		rc = mdb_del(txn, cas->dbi, &key, NULL);
		break;
	}
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "put");
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return mdb_fail(err, rc, "commit");
	return 0;

out_abort:
	mdb_txn_abort(txn);
	return 0;
}

/* Hash the blob file and compare it with its name. A mismatch removes the
 * file (-EBADMSG): it can only come from damage outside our control, and
 * leaving it would make every later put of that digest a no-op. */
static int
blob_verify(struct cas *cas, const struct digest *d, const char *name, uint64_t *ret_size,
	    struct kiln_err *err)
{
	_cleanup_close_ int fd = -1;
	struct stat st, now;
	struct digest got;
	char ds[DIGEST_STR_SIZE];
	int r;

	fd = openat(cas->blobfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kiln_err_errno(err, errno, "open blob %s", digest_fmt(d, ds));
	if (fstat(fd, &st) < 0)
		return kiln_err_errno(err, errno, "stat blob %s", digest_fmt(d, ds));
	r = digest_fd(fd, &got, ret_size);
	if (r < 0)
		return kiln_err_errno(err, -r, "hash blob %s", digest_fmt(d, ds));
	if (digest_equal(&got, d))
		return 0;
	/* Only unlink the inode we hashed: another writer may have just
	 * renamed a good copy over it. */
	if (fstatat(cas->blobfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == st.st_ino &&
	    now.st_dev == st.st_dev)
		(void) unlinkat(cas->blobfd, name, 0);
	return kiln_err_set(err, EBADMSG, "blob %s is damaged", digest_fmt(d, ds));
}

/* Find a blob and its metadata, repairing the index on the way: 0 with
 * *ret_info filled, -ENOENT, or another error. */
static int
blob_check(struct cas *cas, const struct digest *d, struct cas_info *ret_info,
	   struct kiln_err *err)
{
	char name[BLOB_NAME_SIZE], ds[DIGEST_STR_SIZE];
	struct cas_info info;
	struct stat st;
	uint64_t size;
	int r;

	blob_name(d, name);
	if (fstatat(cas->blobfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			return kiln_err_errno(err, errno, "stat blob %s", digest_fmt(d, ds));
		if (index_get(cas, d, &info, NULL) == 0)
			(void) index_write(cas, d, INDEX_DROP_STALE, 0, NULL, NULL);
		return kiln_err_set(err, ENOENT, "blob %s not found", digest_fmt(d, ds));
	}
	if (!S_ISREG(st.st_mode))
		return kiln_err_set(err, EIO, "blob %s is not a regular file", digest_fmt(d, ds));
	r = index_get(cas, d, &info, err);
	if (r == 0 && info.size == (uint64_t) st.st_size) {
		*ret_info = info;
		return 0;
	}
	if (r < 0 && r != -ENOENT)
		return r;

	r = blob_verify(cas, d, name, &size, err);
	if (r == -EBADMSG) {
		(void) index_write(cas, d, INDEX_DROP_STALE, 0, NULL, NULL);
		return kiln_err_set(err, ENOENT, "blob %s not found (damaged copy removed)",
				    digest_fmt(d, ds));
	}
	if (r < 0)
		return r;
	r = index_write(cas, d, INDEX_RECORD, size, NULL, err);
	if (r < 0)
		return r;
	r = index_get(cas, d, ret_info, err);
	if (r == -ENOENT)
		return kiln_err_set(err, EIO, "index entry for %s vanished", digest_fmt(d, ds));
	return r;
}

/* Remove temp files whose writer is gone. A live writer holds an flock on
 * its file; the age check covers the moment between its open and flock. */
static void
sweep_tmp(struct cas *cas)
{
	_cleanup_closedir_ DIR *dir = NULL;
	struct dirent *de;
	int fd;

	fd = openat(cas->tmpfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (!dir) {
		(void) close(fd);
		return;
	}
	while ((de = readdir(dir))) {
		_cleanup_close_ int tfd = -1;
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		tfd = openat(cas->tmpfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (tfd < 0 || fstat(tfd, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (now_s() - st.st_mtime < CAS_STALE_TMP_SECS)
			continue;
		if (flock(tfd, LOCK_EX | LOCK_NB) < 0)
			continue;
		(void) unlinkat(cas->tmpfd, de->d_name, 0);
	}
}

int
cas_open(const char *dir, struct cas **ret_cas, struct kiln_err *err)
{
	struct cas *cas;
	_cleanup_free_ char *path = NULL;
	MDB_txn *txn;
	int rc, r, dead;

	cas = calloc(1, sizeof(*cas));
	if (!cas)
		return kiln_err_set(err, ENOMEM, "open store '%s'", dir);
	cas->tmpfd = cas->blobfd = -1;
	cas->dir = strdup(dir);
	if (!cas->dir) {
		r = kiln_err_set(err, ENOMEM, "open store '%s'", dir);
		goto out_free;
	}

	for (int i = 0; i < 2; i++) {
		const char *sub = i == 0 ? "tmp" : "blobs/sha256";
		int fd;

		free(path);
		path = kiln_strdupf("%s/%s", dir, sub);
		if (!path) {
			r = kiln_err_set(err, ENOMEM, "open store '%s'", dir);
			goto out_free;
		}
		r = kiln_mkdir_p(path, 0755);
		if (r < 0) {
			r = kiln_err_errno(err, -r, "create '%s'", path);
			goto out_free;
		}
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			r = kiln_err_errno(err, errno, "open '%s'", path);
			goto out_free;
		}
		if (i == 0)
			cas->tmpfd = fd;
		else
			cas->blobfd = fd;
	}

	free(path);
	path = kiln_strdupf("%s/index", dir);
	if (!path) {
		r = kiln_err_set(err, ENOMEM, "open store '%s'", dir);
		goto out_free;
	}
	rc = mdb_env_create(&cas->env);
	if (rc) {
		r = mdb_fail(err, rc, "create");
		goto out_free;
	}
	(void) mdb_env_set_maxreaders(cas->env, CAS_MAX_READERS);
	rc = mdb_env_set_mapsize(cas->env, CAS_MAP_SIZE);
	if (rc) {
		r = mdb_fail(err, rc, "set map size");
		goto out_free;
	}
	/* MDB_NOTLS: read transactions are not tied to a thread, so any
	 * thread may use the store. MDB_NOMETASYNC: a system crash may lose
	 * the last index update but never corrupts it, and a lost entry is
	 * rebuilt from the blob file, so the second fsync buys nothing. */
	rc = mdb_env_open(cas->env, path, MDB_NOSUBDIR | MDB_NOTLS | MDB_NOMETASYNC, 0644);
	if (rc) {
		r = mdb_fail(err, rc, "open");
		goto out_free;
	}
	/* Reader slots of crashed processes would otherwise pin old pages. */
	(void) mdb_reader_check(cas->env, &dead);
	rc = mdb_txn_begin(cas->env, NULL, 0, &txn);
	if (rc) {
		r = mdb_fail(err, rc, "begin");
		goto out_free;
	}
	rc = mdb_dbi_open(txn, NULL, 0, &cas->dbi);
	if (rc) {
		mdb_txn_abort(txn);
		r = mdb_fail(err, rc, "open database");
		goto out_free;
	}
	rc = mdb_txn_commit(txn);
	if (rc) {
		r = mdb_fail(err, rc, "commit");
		goto out_free;
	}

	sweep_tmp(cas);
	*ret_cas = cas;
	return 0;

out_free:
	cas_free(cas);
	return r;
}

void
cas_free(struct cas *cas)
{
	if (!cas)
		return;
	if (cas->env)
		mdb_env_close(cas->env);
	if (cas->tmpfd >= 0)
		(void) close(cas->tmpfd);
	if (cas->blobfd >= 0)
		(void) close(cas->blobfd);
	free(cas->dir);
	free(cas);
}

bool
cas_has(struct cas *cas, const struct digest *d)
{
	struct cas_info info;

	return blob_check(cas, d, &info, NULL) == 0;
}

int
cas_stat(struct cas *cas, const struct digest *d, struct cas_info *ret_info, struct kiln_err *err)
{
	return blob_check(cas, d, ret_info, err);
}

int
cas_path(struct cas *cas, const struct digest *d, char *buf, size_t size)
{
	char name[BLOB_NAME_SIZE];
	int n;

	blob_name(d, name);
	n = snprintf(buf, size, "%s/blobs/sha256/%s", cas->dir, name);
	if (n < 0 || (size_t) n >= size)
		return -ENAMETOOLONG;
	return 0;
}

int
cas_get(struct cas *cas, const struct digest *d, size_t max, char **ret_buf, size_t *ret_len,
	struct kiln_err *err)
{
	char name[BLOB_NAME_SIZE], ds[DIGEST_STR_SIZE];
	_cleanup_free_ char *buf = NULL;
	struct cas_info info;
	size_t len;
	int r;

	r = blob_check(cas, d, &info, err);
	if (r < 0)
		return r;
	if (info.size > max)
		return kiln_err_set(err, EFBIG, "blob %s is %llu bytes, limit %zu",
				    digest_fmt(d, ds), (unsigned long long) info.size, max);
	blob_name(d, name);
	r = kiln_read_file_at(cas->blobfd, name, max, &buf, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "read blob %s", digest_fmt(d, ds));
	if (len != info.size)
		return kiln_err_set(err, EIO, "blob %s changed size while read", digest_fmt(d, ds));
	/* Best effort: failing to note the use must not fail the read. */
	if (now_s() - info.last_use >= CAS_TOUCH_SECS)
		(void) index_write(cas, d, INDEX_TOUCH, 0, NULL, NULL);

	*ret_buf = STEAL_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

static int
check_media(const char *media, struct kiln_err *err)
{
	if (media && strlen(media) >= sizeof(((struct cas_info *) 0)->media_type))
		return kiln_err_set(err, EINVAL, "media type '%.40s...' is too long", media);
	return 0;
}

/* Create and lock a fresh temp file under DIR/tmp. */
static int
tmp_create(struct cas *cas, char name[TMP_NAME_SIZE], struct kiln_err *err)
{
	for (int tries = 0;; tries++) {
		uint64_t rnd;
		int fd;

		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = (uint64_t) kiln_now_ms() * 2654435761u + (uint64_t) tries;
		snprintf(name, TMP_NAME_SIZE, "%d-%016llx", (int) getpid(), (unsigned long long) rnd);
		fd = openat(cas->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0) {
			/* Tells sweep_tmp() in other processes that we are alive;
			 * a filesystem without flock only loses that protection. */
			(void) flock(fd, LOCK_EX | LOCK_NB);
			return fd;
		}
		if (errno != EEXIST || tries >= 8)
			return kiln_err_errno(err, errno, "create temp file in '%s/tmp'", cas->dir);
	}
}

/* Open DIR/blobs/sha256/<aa>, creating it durably on first use. */
static int
open_fanout(struct cas *cas, const char *sub, struct kiln_err *err)
{
	int fd;

	fd = openat(cas->blobfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT)
		goto out;
	if (mkdirat(cas->blobfd, sub, 0755) < 0 && errno != EEXIST)
		return kiln_err_errno(err, errno, "create '%s/blobs/sha256/%s'", cas->dir, sub);
	if (fsync(cas->blobfd) < 0)
		return kiln_err_errno(err, errno, "sync '%s/blobs/sha256'", cas->dir);
	fd = openat(cas->blobfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
out:
	if (fd < 0)
		return kiln_err_errno(err, errno, "open '%s/blobs/sha256/%s'", cas->dir, sub);
	return fd;
}

/* Move a complete, verified temp file into place and index it. The caller
 * removes the temp file on failure. */
static int
commit_tmp(struct cas *cas, int fd, const char *tmpname, const struct digest *d, uint64_t size,
	   const char *media, struct kiln_err *err)
{
	_cleanup_close_ int subfd = -1;
	char name[BLOB_NAME_SIZE], sub[3], ds[DIGEST_STR_SIZE];

	if (fsync(fd) < 0)
		return kiln_err_errno(err, errno, "sync blob %s", digest_fmt(d, ds));
	blob_name(d, name);
	memcpy(sub, name, 2);
	sub[2] = '\0';
	subfd = open_fanout(cas, sub, err);
	if (subfd < 0)
		return subfd;
	/* Replacing an existing copy is harmless (same content) and heals a
	 * copy damaged behind our back. */
	if (renameat(cas->tmpfd, tmpname, cas->blobfd, name) < 0)
		return kiln_err_errno(err, errno, "rename blob %s into place", digest_fmt(d, ds));
	/* The index must never name a blob whose rename a crash could undo. */
	if (fsync(subfd) < 0)
		return kiln_err_errno(err, errno, "sync blob directory for %s", digest_fmt(d, ds));
	return index_write(cas, d, INDEX_RECORD, size, media, err);
}

static int
mismatch(struct kiln_err *err, const struct digest *got, const struct digest *expect)
{
	char g[DIGEST_STR_SIZE], e[DIGEST_STR_SIZE];

	return kiln_err_set(err, EBADMSG, "content has digest %s, expected %s",
			    digest_fmt(got, g), digest_fmt(expect, e));
}

int
cas_put(struct cas *cas, const void *data, size_t len, const char *media_type,
	const struct digest *expect, struct digest *ret_d, struct kiln_err *err)
{
	_cleanup_close_ int fd = -1;
	char tmpname[TMP_NAME_SIZE];
	struct cas_info info;
	struct digest d;
	int r;

	r = check_media(media_type, err);
	if (r < 0)
		return r;
	/* Hashing memory first costs little and lets an existing blob skip
	 * the write and both fsyncs. */
	digest_buf(data, len, &d);
	if (expect && !digest_equal(&d, expect))
		return mismatch(err, &d, expect);

	r = blob_check(cas, &d, &info, NULL);
	if (r == 0) {
		if (now_s() - info.last_use >= CAS_TOUCH_SECS ||
		    (media_type && *media_type && strcmp(media_type, info.media_type) != 0)) {
			r = index_write(cas, &d, INDEX_RECORD, info.size, media_type, err);
			if (r < 0)
				return r;
		}
		goto out;
	}

	fd = tmp_create(cas, tmpname, err);
	if (fd < 0)
		return fd;
	r = kiln_write_all(fd, data, len);
	if (r < 0) {
		(void) unlinkat(cas->tmpfd, tmpname, 0);
		return kiln_err_errno(err, -r, "write temp file in '%s/tmp'", cas->dir);
	}
	r = commit_tmp(cas, fd, tmpname, &d, len, media_type, err);
	if (r < 0) {
		(void) unlinkat(cas->tmpfd, tmpname, 0);
		return r;
	}
out:
	if (ret_d)
		*ret_d = d;
	return 0;
}

int
cas_writer_new(struct cas *cas, const struct digest *expect, struct cas_writer **ret_w,
	       struct kiln_err *err)
{
	struct cas_writer *w;

	w = calloc(1, sizeof(*w));
	if (!w)
		return kiln_err_set(err, ENOMEM, "new blob writer");
	w->cas = cas;
	w->dc = digest_ctx_new();
	if (!w->dc) {
		free(w);
		return kiln_err_set(err, ENOMEM, "new blob writer");
	}
	w->fd = tmp_create(cas, w->name, err);
	if (w->fd < 0) {
		int r = w->fd;

		digest_ctx_free(w->dc);
		free(w);
		return r;
	}
	if (expect) {
		w->has_expect = true;
		w->expect = *expect;
	}
	*ret_w = w;
	return 0;
}

int
cas_writer_write(struct cas_writer *w, const void *data, size_t len, struct kiln_err *err)
{
	int r;

	if (w->failed)
		return kiln_err_set(err, EIO, "blob writer already failed");
	r = kiln_write_all(w->fd, data, len);
	if (r < 0) {
		/* Some bytes may be in the file but not in the hash. */
		w->failed = true;
		return kiln_err_errno(err, -r, "write temp file in '%s/tmp'", w->cas->dir);
	}
	digest_ctx_update(w->dc, data, len);
	w->size += len;
	return 0;
}

uint64_t
cas_writer_size(const struct cas_writer *w)
{
	return w->size;
}

int
cas_writer_commit(struct cas_writer *w, const char *media_type, struct digest *ret_d,
		  struct kiln_err *err)
{
	struct digest d;
	int r;

	if (w->failed) {
		r = kiln_err_set(err, EIO, "blob writer already failed");
		goto out_abort;
	}
	r = check_media(media_type, err);
	if (r < 0)
		goto out_abort;
	digest_ctx_final(w->dc, &d);
	if (w->has_expect && !digest_equal(&d, &w->expect)) {
		r = mismatch(err, &d, &w->expect);
		goto out_abort;
	}
	r = commit_tmp(w->cas, w->fd, w->name, &d, w->size, media_type, err);
	if (r < 0)
		goto out_abort;
	if (ret_d)
		*ret_d = d;
	(void) close(w->fd);
	digest_ctx_free(w->dc);
	free(w);
	return 0;

out_abort:
	cas_writer_abort(w);
	return r;
}

void
cas_writer_abort(struct cas_writer *w)
{
	if (!w)
		return;
	(void) unlinkat(w->cas->tmpfd, w->name, 0);
	(void) close(w->fd);
	digest_ctx_free(w->dc);
	free(w);
}

int
cas_put_file(struct cas *cas, const char *path, const char *media_type,
	     const struct digest *expect, struct digest *ret_d, struct kiln_err *err)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -1;
	struct cas_writer *w = NULL;
	int r;

	r = check_media(media_type, err);
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kiln_err_errno(err, errno, "open '%s'", path);
	buf = malloc(CAS_COPY_CHUNK);
	if (!buf)
		return kiln_err_set(err, ENOMEM, "store '%s'", path);
	r = cas_writer_new(cas, expect, &w, err);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read(fd, buf, CAS_COPY_CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = kiln_err_errno(err, errno, "read '%s'", path);
			cas_writer_abort(w);
			return r;
		}
		if (n == 0)
			break;
		r = cas_writer_write(w, buf, (size_t) n, err);
		if (r < 0) {
			cas_writer_abort(w);
			return r;
		}
	}
	r = cas_writer_commit(w, media_type, ret_d, err);
	if (r < 0)
		return kiln_err_wrap(err, "store '%s'", path);
	return 0;
}

struct list_entry {
	struct digest d;
	struct cas_info info;
};

/* Read up to CAS_LIST_BATCH entries after the key in last (all when
 * *last_len is 0) into out. Batches keep the read transaction short, so a
 * callback may take its time or write to the store. */
static int
list_batch(struct cas *cas, unsigned char *last, size_t *last_len, struct list_entry *out,
	   size_t *ret_n, bool *ret_done, struct kiln_err *err)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	size_t n = 0, seen = 0;
	int rc;

	rc = mdb_txn_begin(cas->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return mdb_fail(err, rc, "read");
	rc = mdb_cursor_open(txn, cas->dbi, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "cursor");
	}
	if (*last_len) {
		key.mv_size = *last_len;
		key.mv_data = last;
		rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
		if (rc == 0 && key.mv_size == *last_len && memcmp(key.mv_data, last, *last_len) == 0)
			rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
	} else {
		rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
	}
	while (rc == 0 && seen < CAS_LIST_BATCH) {
		seen++;
		/* Remember the raw key even if the entry is unusable, so the
		 * next batch starts after it. */
		*last_len = key.mv_size < 512 ? key.mv_size : 511;
		memcpy(last, key.mv_data, *last_len);
		if (key.mv_size == DIGEST_RAW_LEN && rec_decode(&val, &out[n].info) == 0) {
			memcpy(out[n].d.raw, key.mv_data, DIGEST_RAW_LEN);
			n++;
		}
		rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (rc && rc != MDB_NOTFOUND)
		return mdb_fail(err, rc, "iterate");
	*ret_n = n;
	*ret_done = rc == MDB_NOTFOUND;
	return 0;
}

int
cas_list(struct cas *cas, cas_list_fn fn, void *ctx, struct kiln_err *err)
{
	_cleanup_free_ struct list_entry *batch = NULL;
	unsigned char last[512];
	size_t last_len = 0;
	bool done = false;

	batch = calloc(CAS_LIST_BATCH, sizeof(*batch));
	if (!batch)
		return kiln_err_set(err, ENOMEM, "list blobs");
	while (!done) {
		size_t n = 0;
		int r;

		r = list_batch(cas, last, &last_len, batch, &n, &done, err);
		if (r < 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			r = fn(&batch[i].d, &batch[i].info, ctx);
			if (r != 0)
				return r;
		}
	}
	return 0;
}
