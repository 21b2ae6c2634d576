/* COPY, ADD (archives, URLs), WORKDIR and COPY --from written into a
 * step's upper directory: metadata, --chown names resolved in the
 * destination's passwd and group, globs in a source snapshot; and cache
 * mounts seeded from an op's result, which copy the same way. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <fnmatch.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cas.h"
#include "cleanup.h"
#include "err.h"
#include "ignore.h"
#include "job.h"
#include "layer.h"
#include "oci.h"
#include "proto.h"
#include "registry.h"
#include "snapshot.h"
#include "sshfwd.h"
#include "util.h"

#include "job-internal.h"

/* Copy size bytes from in to out (in the kernel where it can); what names
 * the file in an error. */
static int
copy_bytes(int in, int out, off_t size, const char *what, struct kiln_err *err)
{
	for (off_t left = size; left > 0; ) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t) left, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return kiln_err_errno(err, n < 0 ? errno : EIO, "copy '%s'", what);
		left -= n;
	}
	return 0;
}

static int
copy_blob(struct job *j, const struct op_entry *e, const char *dst, struct kiln_err *err)
{
	char src[4096], s[DIGEST_STR_SIZE];
	_cleanup_close_ int in = -1;
	_cleanup_close_ int out = -1;
	struct stat st;

	cas_path(j->cas, &e->digest, src, sizeof(src));
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return kiln_err_errno(err, errno, "context file %s for '%s'", digest_fmt(&e->digest, s),
				      e->path);
	if (fstat(in, &st) < 0)
		return kiln_err_errno(err, errno, "stat '%s'", src);
	(void) unlink(dst);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
		return kiln_err_errno(err, errno, "create '%s'", e->path);
	return copy_bytes(in, out, st.st_size, e->path, err);
}

static int
set_meta(const char *path, uint32_t mode, uint32_t uid, uint32_t gid, int64_t mtime, bool link,
	 struct kiln_err *err)
{
	struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };

	if (lchown(path, uid, gid) < 0)
		return kiln_err_errno(err, errno, "chown '%s'", path);
	if (!link && chmod(path, mode) < 0)
		return kiln_err_errno(err, errno, "chmod '%s'", path);
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_errno(err, errno, "set times of '%s'", path);
	return 0;
}

/* Create the parents of path (absolute, in the image) inside upper with the
 * metadata they have in the snapshot below, so that the layer carries the
 * same directory modes and owners as the image already had. Parents that
 * do not exist below are made 0755 and owned by uid:gid (BuildKit's
 * MkdirAll with the copy's --chown or the WORKDIR's user). */
static int
prepare_parents(struct job *j, const char *upper, const char *path, uint32_t uid, uint32_t gid,
		struct kiln_err *err)
{
	_cleanup_free_ char *p = strdup(path);
	int64_t now = j->epoch >= 0 ? j->epoch : (int64_t) time(NULL);
	char *c;

	if (!p)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (c = p + 1; (c = strchr(c, '/')); c++) {
		_cleanup_free_ char *full = NULL;
		struct stat st, below;

		*c = '\0';
		full = kiln_strdupf("%s%s", upper, p);
		if (!full)
			return kiln_err_set(err, ENOMEM, "out of memory");
		if (lstat(full, &st) == 0) {
			*c = '/';
			if (!S_ISDIR(st.st_mode))
				return kiln_err_set(err, ENOTDIR, "'%s' is not a directory", p);
			continue;
		}
		if (snap_lookup(j->stack, j->n_stack, p, &below) == 1) {
			if (!S_ISDIR(below.st_mode)) {
				*c = '/';
				return kiln_err_set(err, ENOTDIR, "cannot copy to '%s': a parent is not a directory",
						    path);
			}
		} else {
			memset(&below, 0, sizeof(below));
			below.st_mode = S_IFDIR | 0755;
			below.st_uid = uid;
			below.st_gid = gid;
			below.st_mtim.tv_sec = now;
		}
		if (mkdir(full, 0700) < 0)
			return kiln_err_errno(err, errno, "mkdir '%s'", p);
		if (set_meta(full, below.st_mode & 07777, below.st_uid, below.st_gid,
			     below.st_mtim.tv_sec, false, err) < 0)
			return -err->code;
		*c = '/';
	}
	return 0;
}

/* ADD of a local file: when its content is a tar archive, extract it into
 * e->unpack_dir and return 0; 1 when it is not an archive. */
static int
unpack_entry(struct job *j, const struct op_entry *e, const char *upper, int64_t uid, int64_t gid,
	     struct kiln_err *err)
{
	_cleanup_free_ char *dir = kiln_strdupf("%s%s", upper, strcmp(e->unpack_dir, "/") ? e->unpack_dir : "");
	_cleanup_free_ char *probe = kiln_strdupf("%s/.", e->unpack_dir);
	char src[4096];
	struct stat st;
	bool made;
	int r;

	if (!dir || !probe)
		return kiln_err_set(err, ENOMEM, "out of memory");
	cas_path(j->cas, &e->digest, src, sizeof(src));
	made = lstat(dir, &st) < 0;
	/* dest and its parents, with the metadata they have below */
	r = prepare_parents(j, upper, probe, uid >= 0 ? (uint32_t) uid : 0, gid >= 0 ? (uint32_t) gid : 0,
			    err);
	if (r < 0)
		return r;
	r = layer_unpack_archive(src, dir, uid, gid, err);
	if (r < 0)
		return kiln_err_wrap(err, "ADD: extract '%s'", e->path);
	if (r == 1 && made)
		(void) rmdir(dir);      /* not an archive: the file goes to e->path */
	return r;
}

/* ---- --chown names, resolved in the destination's /etc/passwd and
 * /etc/group (BuildKit reads them from the snapshot the copy goes into) ---- */

#define DB_MAX (4 << 20)

/* Field 2 (uid or gid) and, for passwd, field 3 (primary gid) of the line
 * of db (relative to the image root, e.g. "etc/passwd") naming name. */
static int
db_lookup(struct job *j, const char *db, const char *name, uint32_t *ret_id, uint32_t *ret_gid,
	  bool *ret_found, struct kiln_err *err)
{
	_cleanup_free_ char *real = NULL;
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0;
	int r;

	*ret_found = false;
	if (snap_resolve(j->stack, j->n_stack, db, &st, &real) != 1 || !S_ISREG(st.st_mode))
		return 0;
	r = kiln_read_file_at(AT_FDCWD, real, DB_MAX, &buf, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "read '%s'", db);
	for (char *line = buf, *next; line && line < buf + len; line = next) {
		char *f[4] = { 0 };
		char *nl = memchr(line, '\n', (size_t) (buf + len - line));
		char *p = line;
		size_t n = 0;

		next = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		while (n < 4 && p) {
			f[n++] = p;
			p = strchr(p, ':');
			if (p)
				*p++ = '\0';
		}
		if (n < 3 || strcmp(f[0], name) != 0)
			continue;
		*ret_id = (uint32_t) strtoul(f[2], NULL, 10);
		if (ret_gid && n >= 4)
			*ret_gid = (uint32_t) strtoul(f[3], NULL, 10);
		*ret_found = true;
		return 0;
	}
	return 0;
}

static bool
is_number(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long v;

	if (!*s || strspn(s, "0123456789") != strlen(s))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || v > UINT32_MAX)
		return false;
	*ret = (uint32_t) v;
	return true;
}

/* uid and gid of user[:group] (names or numbers; NULL keeps uid or gid)
 * as BuildKit's readUser: a user name gives its uid and primary group, a
 * number gives itself for both, and group overrides the gid. */
static int
resolve_ids(struct job *j, const char *user, const char *group, uint32_t uid, uint32_t gid,
	    uint32_t *ret_uid, uint32_t *ret_gid, struct kiln_err *err)
{
	bool found;
	int r;

	if (user && !is_number(user, &uid)) {
		r = db_lookup(j, "/etc/passwd", user, &uid, &gid, &found, err);
		if (r < 0)
			return r;
		if (!found)
			return kiln_err_set(err, ENOENT, "unable to find user %s: no matching entries in "
					    "passwd file", user);
	} else if (user) {
		gid = uid;
	}
	if (group && !is_number(group, &gid)) {
		r = db_lookup(j, "/etc/group", group, &gid, NULL, &found, err);
		if (r < 0)
			return r;
		if (!found)
			return kiln_err_set(err, ENOENT, "unable to find group %s: no matching entries in "
					    "group file", group);
	}
	*ret_uid = uid;
	*ret_gid = gid;
	return 0;
}

/* uid and gid for op's --chown: the numbers the planner put in op->uid and
 * op->gid, overridden by what the names resolve to. */
static int
job_resolve_chown(struct job *j, const struct op *op, uint32_t *ret_uid, uint32_t *ret_gid,
		  struct kiln_err *err)
{
	return resolve_ids(j, op->chown_user, op->chown_group, op->uid, op->gid, ret_uid, ret_gid, err);
}

/* Is path (absolute, in the image) a directory, in upper or below it? */
static bool
dir_exists(struct job *j, const char *upper, const char *path)
{
	_cleanup_free_ char *full = kiln_strdupf("%s%s", upper, strcmp(path, "/") ? path : "");
	struct stat st;

	if (full && lstat(full, &st) == 0)
		return S_ISDIR(st.st_mode);
	return snap_lookup(j->stack, j->n_stack, path, &st) == 1 && S_ISDIR(st.st_mode);
}

/* A copy's destination directory that the snapshot below already has: it
 * keeps its metadata (BuildKit copies into it without touching it). */
static bool
root_kept(struct job *j, const struct op_entry *e)
{
	struct stat st;

	return e->is_root && snap_lookup(j->stack, j->n_stack, e->path, &st) == 1 && S_ISDIR(st.st_mode);
}

/* ---- ADD https://... ---- */

#define URL_MAX ((curl_off_t) 16 << 30)    /* bytes of one download */

struct dl {
	int fd;
	struct digest_ctx *dc;
	int werr;
};

static size_t
dl_write(char *data, size_t size, size_t nmemb, void *p)
{
	struct dl *d = p;
	size_t n = size * nmemb;

	if (kiln_write_all(d->fd, data, n) < 0) {
		d->werr = errno ? errno : EIO;
		return 0;
	}
	digest_ctx_update(d->dc, data, n);
	return n;
}

/* Download e->url to dst (created 0600), verify the checksum, and return
 * the Last-Modified time (or -1). */
static int
download(const struct op_entry *e, const char *dst, int64_t *ret_mtime, struct kiln_err *err)
{
	struct dl d = { .fd = -1 };
	char ebuf[CURL_ERROR_SIZE] = "";
	curl_off_t ft = -1;
	struct digest got;
	long status = 0;
	CURL *c;
	CURLcode cr;
	int r = 0;

	(void) unlink(dst);
	d.fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (d.fd < 0)
		return kiln_err_errno(err, errno, "create '%s'", e->path);
	d.dc = digest_ctx_new();
	c = curl_easy_init();
	if (!c || !d.dc) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, e->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(c, CURLOPT_FILETIME, 1L);
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, URL_MAX);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "kiln");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
	cr = curl_easy_perform(c);
	if (cr != CURLE_OK) {
		r = d.werr ? kiln_err_errno(err, d.werr, "write '%s'", e->path)
			   : kiln_err_set(err, EIO, "ADD %s: %s", e->url, *ebuf ? ebuf : curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		r = kiln_err_set(err, EIO, "ADD %s: invalid response status %ld", e->url, status);
		goto out;
	}
	digest_ctx_final(d.dc, &got);
	if (e->has_checksum && !digest_equal(&got, &e->checksum)) {
		char a[DIGEST_STR_SIZE], b[DIGEST_STR_SIZE];

		r = kiln_err_set(err, EBADMSG, "ADD %s: digest mismatch %s: %s", e->url,
				 digest_fmt(&e->checksum, a), digest_fmt(&got, b));
		goto out;
	}
	if (curl_easy_getinfo(c, CURLINFO_FILETIME_T, &ft) != CURLE_OK)
		ft = -1;
	*ret_mtime = ft;
out:
	if (c)
		curl_easy_cleanup(c);
	digest_ctx_free(d.dc);
	(void) close(d.fd);
	return r;
}

int
apply_copy(struct job *j, const struct op *op, const char *upper, struct kiln_err *err)
{
	uint32_t uid = op->uid, gid = op->gid;
	bool names = op->chown_user || op->chown_group;
	uint32_t new_uid, new_gid;              /* owners of the directories the copy makes */
	int r;

	if (names) {
		r = job_resolve_chown(j, op, &uid, &gid, err);
		if (r < 0)
			return r;
	}
	new_uid = names || op->chown ? uid : 0;
	new_gid = names || op->chown ? gid : 0;

	for (size_t i = 0; i < op->n_entries; i++) {
		const struct op_entry *e = &op->entries[i];
		const char *path = e->path;
		_cleanup_free_ char *dst = NULL;
		struct stat st;

		/* COPY file /dir (no slash) where /dir is a directory: inside it */
		if (e->path_if_dir && dir_exists(j, upper, e->path))
			path = e->path_if_dir;
		dst = kiln_strdupf("%s%s", upper, path);
		if (!dst)
			return kiln_err_set(err, ENOMEM, "out of memory");
		if (root_kept(j, e))
			continue;       /* what goes inside makes it in upper, as a parent */
		r = prepare_parents(j, upper, path, new_uid, new_gid, err);
		if (r < 0)
			return r;
		switch (e->kind) {
		case OP_ENTRY_DIR:
			if (lstat(dst, &st) == 0 && S_ISDIR(st.st_mode))
				break;
			(void) unlink(dst);
			if (mkdir(dst, 0700) < 0)
				return kiln_err_errno(err, errno, "mkdir '%s'", path);
			break;
		case OP_ENTRY_FILE:
			if (e->unpack_dir) {
				r = unpack_entry(j, e, upper, names ? (int64_t) uid : -1,
						 names ? (int64_t) gid : -1, err);
				if (r < 0)
					return r;
				if (r == 0)
					continue;
			}
			r = copy_blob(j, e, dst, err);
			if (r < 0)
				return r;
			break;
		case OP_ENTRY_URL: {
			int64_t mtime = -1;

			r = download(e, dst, &mtime, err);
			if (r < 0)
				return r;
			if (mtime < 0)
				mtime = j->epoch >= 0 ? j->epoch : (int64_t) time(NULL);
			r = set_meta(dst, e->mode, names ? uid : e->uid, names ? gid : e->gid, mtime, false,
				     err);
			if (r < 0)
				return r;
			continue;
		}
		case OP_ENTRY_SYMLINK:
			(void) unlink(dst);
			if (symlink(e->link, dst) < 0)
				return kiln_err_errno(err, errno, "symlink '%s'", path);
			break;
		}
		if (e->kind != OP_ENTRY_DIR) {
			r = set_meta(dst, e->mode, names ? uid : e->uid, names ? gid : e->gid, e->mtime,
				     e->kind == OP_ENTRY_SYMLINK, err);
			if (r < 0)
				return r;
		}
	}
	/* Directory times last, children first, since filling a directory
	 * changes its mtime. */
	for (size_t i = op->n_entries; i-- > 0; ) {
		const struct op_entry *e = &op->entries[i];
		_cleanup_free_ char *dst = NULL;

		if (e->kind != OP_ENTRY_DIR || root_kept(j, e))
			continue;
		dst = kiln_strdupf("%s%s", upper, e->path);
		if (!dst)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = set_meta(dst, e->mode, names ? uid : e->uid, names ? gid : e->gid, e->mtime, false, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int
apply_mkdir(struct job *j, const struct op *op, const char *upper, struct kiln_err *err)
{
	_cleanup_free_ char *dst = kiln_strdupf("%s%s", upper, op->path);
	int64_t now = j->epoch >= 0 ? j->epoch : (int64_t) time(NULL);
	uint32_t uid = 0, gid = 0;
	struct stat st;
	int r;

	if (!dst)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (snap_lookup(j->stack, j->n_stack, op->path, &st) == 1) {
		if (!S_ISDIR(st.st_mode))
			return kiln_err_set(err, ENOTDIR, "WORKDIR '%s' exists and is not a directory",
					    op->path);
		return 0;
	}
	if (op->user && *op->user) {
		/* USER's uid[:gid] or names, in this image's passwd and group */
		const char *colon = strchr(op->user, ':');
		_cleanup_free_ char *user = colon ? strndup(op->user, (size_t) (colon - op->user))
						  : strdup(op->user);

		if (!user)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = resolve_ids(j, user, colon ? colon + 1 : NULL, 0, 0, &uid, &gid, err);
		if (r < 0)
			return kiln_err_wrap(err, "WORKDIR %s", op->path);
	}
	r = prepare_parents(j, upper, op->path, uid, gid, err);
	if (r < 0)
		return r;
	if (mkdir(dst, 0755) < 0)
		return kiln_err_errno(err, errno, "mkdir '%s'", op->path);
	return set_meta(dst, 0755, uid, gid, now, false, err);
}

/* ---- COPY --from: sources resolved in another op's result ---- */

static bool
has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* Expand pattern (absolute, globs in any component) against the snapshot
 * src into matching absolute paths, sorted. */
static int
glob_snapshot(const struct job_snap *src, const char *pattern, char ***ret, size_t *ret_n,
	      struct kiln_err *err)
{
	char **cur = NULL, **next = NULL;
	size_t n_cur = 0, n_next = 0;
	_cleanup_free_ char *pat = strdup(pattern);
	char *save = NULL;
	int r;

	if (!pat || op_add_arg(&cur, &n_cur, "") < 0)
		goto nomem;
	for (char *comp = strtok_r(pat, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		for (size_t i = 0; i < n_cur; i++) {
			char **names = NULL;
			size_t n_names = 0;

			if (!has_glob(comp)) {
				_cleanup_free_ char *p = kiln_strdupf("%s/%s", cur[i], comp);

				if (!p || op_add_arg(&next, &n_next, p) < 0)
					goto nomem;
				continue;
			}
			r = snap_readdir(src->stack, src->n_stack, *cur[i] ? cur[i] : "/", &names, &n_names, err);
			if (r < 0) {
				op_strv_free(cur, n_cur);
				op_strv_free(next, n_next);
				return r;
			}
			for (size_t k = 0; k < n_names; k++) {
				_cleanup_free_ char *p = NULL;

				if (fnmatch(comp, names[k], FNM_PERIOD) != 0)
					continue;
				p = kiln_strdupf("%s/%s", cur[i], names[k]);
				if (!p || op_add_arg(&next, &n_next, p) < 0) {
					op_strv_free(names, n_names);
					goto nomem;
				}
			}
			op_strv_free(names, n_names);
		}
		op_strv_free(cur, n_cur);
		cur = next;
		n_cur = n_next;
		next = NULL;
		n_next = 0;
	}
	/* Keep what exists. */
	for (size_t i = 0; i < n_cur; i++) {
		struct stat st;

		if (snap_lookup(src->stack, src->n_stack, *cur[i] ? cur[i] : "/", &st) == 1 &&
		    op_add_arg(&next, &n_next, *cur[i] ? cur[i] : "/") < 0)
			goto nomem;
	}
	op_strv_free(cur, n_cur);
	*ret = next;
	*ret_n = n_next;
	return 0;
nomem:
	op_strv_free(cur, n_cur);
	op_strv_free(next, n_next);
	return kiln_err_set(err, ENOMEM, "out of memory");
}

/* What COPY --from applies to every entry it copies. */
struct copy_from {
	bool chown;
	uint32_t uid, gid;              /* names already resolved */
	const struct ignore *exclude;   /* NULL: none */
};

/* Copy the entry at spath (absolute, in src) to dpath (absolute, in the
 * image) inside upper; directories recursively. rel: spath relative to the
 * source being copied ("" for the source itself), what --exclude matches. */
static int
copy_entry(struct job *j, const struct op *op, const struct copy_from *cf, const struct job_snap *src,
	   const char *spath, const char *rel, const char *dpath, const char *upper, struct kiln_err *err)
{
	_cleanup_free_ char *real = NULL;
	_cleanup_free_ char *dst = kiln_strdupf("%s%s", upper, strcmp(dpath, "/") ? dpath : "");
	struct stat st, have;
	uint32_t uid, gid, mode;
	int r;

	if (!dst)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (snap_resolve(src->stack, src->n_stack, spath, &st, &real) != 1)
		return kiln_err_set(err, ENOENT, "COPY --from: \"%s\": not found", spath);
	if (cf->exclude && *rel) {
		bool skip = false;

		r = ignore_match(cf->exclude, rel, &skip, err);
		if (r < 0)
			return kiln_err_wrap(err, "COPY --exclude");
		if (skip)
			return 0;
	}
	uid = cf->chown ? cf->uid : st.st_uid;
	gid = cf->chown ? cf->gid : st.st_gid;
	mode = op->chmod ? op->mode :
	       op->chmod_spec ? op_mode_apply(op->chmod_spec, st.st_mode & 07777, S_ISDIR(st.st_mode)) :
	       (st.st_mode & 07777);
	if (strcmp(dpath, "/") != 0) {
		r = prepare_parents(j, upper, dpath, cf->chown ? cf->uid : 0, cf->chown ? cf->gid : 0, err);
		if (r < 0)
			return r;
	}
	if (S_ISDIR(st.st_mode)) {
		/* The destination itself (BuildKit's MkdirAll of dest): made 0755
		 * with --chown's owners, or left as it is when it exists. What
		 * goes inside an existing one makes it in upper as a parent. */
		bool root = !*rel, kept = root && dir_exists(j, upper, dpath);
		char **names = NULL;
		size_t n_names = 0;

		if (root && !kept) {
			mode = 0755;
			uid = cf->chown ? cf->uid : 0;
			gid = cf->chown ? cf->gid : 0;
		}
		if (!kept && (lstat(dst, &have) < 0 || !S_ISDIR(have.st_mode))) {
			(void) unlink(dst);
			if (mkdir(dst, 0700) < 0)
				return kiln_err_errno(err, errno, "mkdir '%s'", dpath);
		}
		r = snap_readdir(src->stack, src->n_stack, spath, &names, &n_names, err);
		for (size_t i = 0; r == 0 && i < n_names; i++) {
			_cleanup_free_ char *s2 = kiln_strdupf("%s/%s", strcmp(spath, "/") ? spath : "", names[i]);
			_cleanup_free_ char *d2 = kiln_strdupf("%s/%s", strcmp(dpath, "/") ? dpath : "", names[i]);
			_cleanup_free_ char *r2 = *rel ? kiln_strdupf("%s/%s", rel, names[i]) : strdup(names[i]);

			r = s2 && d2 && r2 ? copy_entry(j, op, cf, src, s2, r2, d2, upper, err)
					   : kiln_err_set(err, ENOMEM, "out of memory");
		}
		op_strv_free(names, n_names);
		if (r < 0 || kept)
			return r;
		/* After the children, since adding them changes the mtime. */
		return set_meta(dst, mode, uid, gid, st.st_mtim.tv_sec, false, err);
	}
	(void) unlink(dst);
	if (S_ISREG(st.st_mode)) {
		_cleanup_close_ int in = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		_cleanup_close_ int out = -1;

		if (in < 0)
			return kiln_err_errno(err, errno, "open '%s'", spath);
		out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (out < 0)
			return kiln_err_errno(err, errno, "create '%s'", dpath);
		r = copy_bytes(in, out, st.st_size, spath, err);
		if (r < 0)
			return r;
	} else if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlink(real, target, sizeof(target) - 1);

		if (n < 0)
			return kiln_err_errno(err, errno, "readlink '%s'", spath);
		target[n] = '\0';
		if (symlink(target, dst) < 0)
			return kiln_err_errno(err, errno, "symlink '%s'", dpath);
		return set_meta(dst, 0777, uid, gid, st.st_mtim.tv_sec, true, err);
	} else {
		/* Devices, fifos and sockets keep their kind. */
		if (mknod(dst, st.st_mode & S_IFMT, st.st_rdev) < 0)
			return kiln_err_errno(err, errno, "mknod '%s'", dpath);
	}
	return set_meta(dst, mode, uid, gid, st.st_mtim.tv_sec, false, err);
}

static int copy_from_srcs(struct job *j, const struct op *op, const struct copy_from *cf,
			  const struct job_snap *src, const char *upper, struct kiln_err *err);

int
apply_copy_from(struct job *j, const struct op *op, const struct job_snap *src, const char *upper,
		struct kiln_err *err)
{
	struct copy_from cf = { .chown = op->chown, .uid = op->uid, .gid = op->gid };
	struct ignore *ig = NULL;
	int r = 0;

	if (op->chown_user || op->chown_group) {
		r = job_resolve_chown(j, op, &cf.uid, &cf.gid, err);
		if (r < 0)
			return r;
		cf.chown = true;
	}
	if (op->n_excludes) {
		r = ignore_new((const char *const *) op->excludes, op->n_excludes, &ig, err);
		if (r < 0)
			return kiln_err_wrap(err, "COPY --exclude");
		cf.exclude = ig;
	}
	r = copy_from_srcs(j, op, &cf, src, upper, err);
	ignore_free(ig);
	return r;
}

static int
copy_from_srcs(struct job *j, const struct op *op, const struct copy_from *cf, const struct job_snap *src,
	       const char *upper, struct kiln_err *err)
{
	for (size_t i = 0; i < op->n_srcs; i++) {
		char **matches = NULL;
		size_t n = 0;
		int r;

		r = glob_snapshot(src, op->srcs[i], &matches, &n, err);
		if (r < 0)
			return r;
		if (n == 0)
			return kiln_err_set(err, ENOENT, "COPY --from: \"%s\": not found", op->srcs[i]);
		for (size_t k = 0; r == 0 && k < n; k++) {
			const char *base = strrchr(matches[k], '/');
			_cleanup_free_ char *spath = NULL;
			_cleanup_free_ char *to = NULL;
			struct stat st;
			bool dir;

			/* BuildKit follows a source that is a symlink, within the
			 * source's filesystem; links inside a copied directory stay */
			r = snap_follow(src->stack, src->n_stack, matches[k], &spath);
			if (r < 0) {
				r = kiln_err_errno(err, -r, "COPY --from: \"%s\"", matches[k]);
				break;
			}
			dir = snap_lookup(src->stack, src->n_stack, spath, &st) == 1 && S_ISDIR(st.st_mode);
			/* a file goes inside dest when it ends in "/" or is a directory */
			if (!dir && (op->into_dir || dir_exists(j, upper, op->dest)))
				to = kiln_strdupf("%s/%s", strcmp(op->dest, "/") ? op->dest : "",
						  base ? base + 1 : matches[k]);
			else
				to = strdup(op->dest);
			/* a wildcard's matches are excluded as paths of the source */
			if (r == 0 && to && cf->exclude && has_glob(op->srcs[i])) {
				bool skip = false;

				r = ignore_match(cf->exclude, matches[k] + 1, &skip, err);
				if (r == 0 && skip)
					continue;
			}
			if (r == 0)
				r = to ? copy_entry(j, op, cf, src, spath, "", to, upper, err)
				       : kiln_err_set(err, ENOMEM, "out of memory");
		}
		op_strv_free(matches, n);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- cache mounts that start from an op's result ---- */

/* Fill dir (new and empty) with what from has at m's source, which must be
 * a directory: its contents, and its mode, owners and time for dir. A
 * missing root (an empty result) gives an empty 0755 dir. */
int
cache_seed(struct job *j, const struct op_mount *m, const struct job_snap *from, const char *dir,
	   struct kiln_err *err)
{
	static const struct op none = { .kind = OP_COPY_FROM };
	static const struct copy_from plain = { .chown = false };
	const char *source = m->source ? m->source : "/";
	_cleanup_free_ char *spath = NULL;
	struct stat st;
	int r;

	/* BuildKit follows the source's symlinks inside from's filesystem */
	r = snap_follow(from->stack, from->n_stack, source, &spath);
	if (r < 0)
		return kiln_err_errno(err, -r, "cache mount '%s': source \"%s\"", m->id, source);
	if (snap_lookup(from->stack, from->n_stack, spath, &st) != 1) {
		if (strcmp(spath, "/") != 0)
			return kiln_err_set(err, ENOENT, "cache mount '%s': source \"%s\": not found in from",
					    m->id, source);
		return set_meta(dir, 0755, 0, 0, 0, false, err);
	}
	if (!S_ISDIR(st.st_mode))
		return kiln_err_set(err, ENOTDIR, "cache mount '%s': source \"%s\" is not a directory",
				    m->id, source);
	r = copy_entry(j, &none, &plain, from, spath, "", "/", dir, err);
	if (r < 0)
		return kiln_err_wrap(err, "cache mount '%s' from \"%s\"", m->id, source);
	return set_meta(dir, st.st_mode & 07777, st.st_uid, st.st_gid, st.st_mtim.tv_sec, false, err);
}
