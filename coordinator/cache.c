#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lmdb.h>

#include "cache.h"
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "util.h"

#define CACHE_MAP_SIZE (1ull << 32)

struct cache {
	MDB_env *env;
	MDB_dbi results;
	MDB_dbi holders;
	char *tmpdir;                 /* removed on close when we made it */
};

static int
mdb_fail(struct kiln_err *err, int rc, const char *what)
{
	int code = rc > 0 ? rc : rc == MDB_MAP_FULL ? ENOSPC : EIO;

	return kiln_err_set(err, code, "cache index %s: %s", what, mdb_strerror(rc));
}

int
cache_open(const char *dir, struct cache **ret, struct kiln_err *err)
{
	struct cache *c = calloc(1, sizeof(*c));
	_cleanup_free_ char *path = NULL;
	MDB_txn *txn;
	int rc, r = 0;

	if (!c)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (!dir) {
		c->tmpdir = strdup("/tmp/kiln-cache-XXXXXX");
		if (!c->tmpdir || !mkdtemp(c->tmpdir)) {
			r = kiln_err_errno(err, errno ? errno : ENOMEM, "temporary cache index directory");
			goto fail;
		}
		dir = c->tmpdir;
	}
	path = kiln_strdupf("%s/cache.mdb", dir);
	if (!path) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = mdb_env_create(&c->env)) || (rc = mdb_env_set_maxdbs(c->env, 4)) ||
	    (rc = mdb_env_set_mapsize(c->env, CACHE_MAP_SIZE))) {
		r = mdb_fail(err, rc, "create");
		goto fail;
	}
	/* MDB_NOSYNC: the index is a cache; a system crash may lose its last
	 * updates (steps run again) but never corrupts it, and a build that
	 * records 20,000 context files must not wait for 20,000 fsyncs on the
	 * coordinator's loop. cache_close syncs. */
	rc = mdb_env_open(c->env, path, MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC, 0600);
	if (rc) {
		r = mdb_fail(err, rc, "open");
		kiln_err_wrap(err, "'%s'", path);
		goto fail;
	}
	rc = mdb_txn_begin(c->env, NULL, 0, &txn);
	if (rc) {
		r = mdb_fail(err, rc, "begin");
		goto fail;
	}
	if ((rc = mdb_dbi_open(txn, "results", MDB_CREATE, &c->results)) ||
	    (rc = mdb_dbi_open(txn, "holders", MDB_CREATE, &c->holders))) {
		mdb_txn_abort(txn);
		r = mdb_fail(err, rc, "open databases");
		goto fail;
	}
	rc = mdb_txn_commit(txn);
	if (rc) {
		r = mdb_fail(err, rc, "commit");
		goto fail;
	}
	*ret = c;
	return 0;
fail:
	cache_close(c);
	return r;
}

void
cache_close(struct cache *c)
{
	if (!c)
		return;
	if (c->env) {
		(void) mdb_env_sync(c->env, 1);
		mdb_env_close(c->env);
	}
	if (c->tmpdir) {
		(void) kiln_rm_rf(c->tmpdir);
		free(c->tmpdir);
	}
	free(c);
}

static int
get(struct cache *c, MDB_dbi dbi, const struct digest *k, void **ret, size_t *ret_len,
    struct kiln_err *err)
{
	MDB_val key = { sizeof(k->raw), (void *) k->raw }, val;
	MDB_txn *txn;
	int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);

	if (rc)
		return mdb_fail(err, rc, "read");
	rc = mdb_get(txn, dbi, &key, &val);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "get");
	}
	*ret = malloc(val.mv_size + 1);
	if (!*ret) {
		mdb_txn_abort(txn);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	memcpy(*ret, val.mv_data, val.mv_size);
	*ret_len = val.mv_size;
	mdb_txn_abort(txn);
	return 1;
}

static int
put(struct cache *c, MDB_dbi dbi, const struct digest *k, const void *data, size_t len,
    struct kiln_err *err)
{
	MDB_val key = { sizeof(k->raw), (void *) k->raw }, val = { len, (void *) data };
	MDB_txn *txn;
	int rc = mdb_txn_begin(c->env, NULL, 0, &txn);

	if (rc)
		return mdb_fail(err, rc, "begin write");
	rc = len ? mdb_put(txn, dbi, &key, &val, 0) : mdb_del(txn, dbi, &key, NULL);
	if (rc && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return mdb_fail(err, rc, "put");
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return mdb_fail(err, rc, "commit");
	return 0;
}

int
cache_get(struct cache *c, const struct digest *key, struct solver_rec *ret, struct kiln_err *err)
{
	_cleanup_free_ void *data = NULL;
	struct kiln_err derr = { 0 };
	size_t len = 0;
	int r = get(c, c->results, key, &data, &len, err);

	if (r <= 0)
		return r;
	if (solver_rec_decode(data, len, ret, &derr) < 0) {
		char ds[DIGEST_STR_SIZE];

		log_error_err(&derr, "cache index: record of %s ignored", digest_fmt(key, ds));
		return 0;
	}
	return 1;
}

int
cache_put(struct cache *c, const struct digest *key, const struct solver_rec *rec, struct kiln_err *err)
{
	_cleanup_free_ char *data = NULL;
	size_t len;

	if (solver_rec_encode(rec, &data, &len) < 0)
		return kiln_err_set(err, ENOMEM, "out of memory");
	return put(c, c->results, key, data, len, err);
}

/* Holders are stored as NUL-terminated names one after the other. */
static int
holders_read(MDB_txn *txn, MDB_dbi dbi, const struct digest *blob, char names[][CACHE_NODE_NAME_MAX],
	     size_t max, struct kiln_err *err)
{
	MDB_val key = { sizeof(blob->raw), (void *) blob->raw }, val;
	size_t n = 0;
	int rc = mdb_get(txn, dbi, &key, &val);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return mdb_fail(err, rc, "get");
	for (size_t off = 0; off < val.mv_size && n < max; ) {
		const char *p = (const char *) val.mv_data + off;
		size_t l = strnlen(p, val.mv_size - off);

		if (l > 0 && l < CACHE_NODE_NAME_MAX) {
			memcpy(names[n], p, l);
			names[n++][l] = '\0';
		}
		off += l + 1;
	}
	return (int) n;
}

int
cache_holders(struct cache *c, const struct digest *blob, char names[][CACHE_NODE_NAME_MAX], size_t max,
	      struct kiln_err *err)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
	int n;

	if (rc)
		return mdb_fail(err, rc, "read");
	n = holders_read(txn, c->holders, blob, names, max, err);
	mdb_txn_abort(txn);
	return n;
}

static int
hold_one(MDB_txn *txn, MDB_dbi dbi, const struct digest *blob, const char *node, bool held,
	 struct kiln_err *err)
{
	char names[CACHE_MAX_HOLDERS][CACHE_NODE_NAME_MAX];
	char buf[CACHE_MAX_HOLDERS * CACHE_NODE_NAME_MAX];
	MDB_val key = { sizeof(blob->raw), (void *) blob->raw }, val;
	size_t len = 0;
	int n = holders_read(txn, dbi, blob, names, CACHE_MAX_HOLDERS, err);
	bool found = false;
	int rc;

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		if (strcmp(names[i], node) == 0) {
			found = true;
			if (!held)
				continue;
		}
		memcpy(buf + len, names[i], strlen(names[i]) + 1);
		len += strlen(names[i]) + 1;
	}
	if (held == found)
		return 0;
	if (held) {
		if (n == CACHE_MAX_HOLDERS)     /* enough places hold it */
			return 0;
		memcpy(buf + len, node, strlen(node) + 1);
		len += strlen(node) + 1;
	}
	val.mv_size = len;
	val.mv_data = buf;
	rc = len ? mdb_put(txn, dbi, &key, &val, 0) : mdb_del(txn, dbi, &key, NULL);
	if (rc && rc != MDB_NOTFOUND)
		return mdb_fail(err, rc, "put");
	return 0;
}

int
cache_hold_many(struct cache *c, const struct digest *blobs, size_t n, const char *node, bool held,
		struct kiln_err *err)
{
	MDB_txn *txn;
	int rc;

	if (strlen(node) >= CACHE_NODE_NAME_MAX)
		return kiln_err_set(err, ENAMETOOLONG, "node name '%s' is too long", node);
	rc = mdb_txn_begin(c->env, NULL, 0, &txn);
	if (rc)
		return mdb_fail(err, rc, "begin write");
	for (size_t i = 0; i < n; i++) {
		int r = hold_one(txn, c->holders, &blobs[i], node, held, err);

		if (r < 0) {
			mdb_txn_abort(txn);
			return r;
		}
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return mdb_fail(err, rc, "commit");
	return 0;
}

int
cache_hold(struct cache *c, const struct digest *blob, const char *node, bool held, struct kiln_err *err)
{
	return cache_hold_many(c, blob, 1, node, held, err);
}
