/* Layers: turning directory trees into tar blobs (gzip, zstd or plain) and
 * back.
 *
 * Writing: a tree is walked completely before anything is written, the
 * entries are sorted bytewise by tar path and only then streamed through
 * libarchive (pax restricted: plain ustar unless a name, id or xattr needs
 * an extended header) into zlib and the blob store, hashing the tar for the
 * diff_id on the way. Everything that could differ between two machines
 * holding the same tree is left out or fixed: no atime/ctime, no user or
 * group names, whole-second mtimes (a layer keeps the tree's; the rootfs
 * writer clamps them to an epoch when given), xattrs in name order, hard links named after the first path of
 * the inode in sort order, and a gzip header without name or time and with
 * the OS byte forced to Unix. zstd output is one frame from a single-threaded
 * context with every frame flag pinned (checksum on, no dictionary id, no
 * content size), so only the level and the libzstd version decide the bytes.
 * The diff_id is the digest of the tar itself, so it does not depend on the
 * compression. libarchive reads the process locale when a
 * name is not ASCII; kiln never calls setlocale(), so that is always "C"
 * (raw bytes with hdrcharset=BINARY).
 *
 * Trees are in overlay form: a char device 0/0 is a whiteout and a
 * directory with trusted.overlay.opaque=y hides everything below it. A
 * layer carries them as OCI ".wh." files; the rootfs writer applies them
 * across a stack of trees instead and writes neither.
 *
 * Extracting: the inverse, written by hand with openat() rather than
 * archive_write_disk so that the checks are ours and whiteouts can be
 * mapped. Every parent directory is opened one component at a time with
 * O_NOFOLLOW, so an entry can never be written through a symlink, and ".."
 * and absolute names are refused outright: a hostile layer fails with
 * -EPERM naming the entry. trusted.overlay.* xattrs in a tar are dropped,
 * since they would steer the overlay mount (redirects, opacity) rather than
 * describe a file. The tree is built in a temporary sibling and renamed
 * into place only when complete; this module never leaves half a layer.
 *
 * Rewriting (for an output): a stored layer decompressed and compressed
 * again, either byte for byte (force-compression: the diff_id stays) or
 * read by libarchive and written again by the same writer with later times
 * clamped (rewrite-timestamp). Both go through the same reader (sniffing,
 * checksums) and the same blob sink as making a layer.
 *
 * Not here: knowing which layers a build stacks (worker/snapshot.c) or
 * mounting them (kiln-run). Functions are thread-safe: no static state. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>
#include <zstd.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "layer.h"
#include "oci.h"
#include "util.h"

/* Part of the blob format: changing it changes every digest. Level 1 is
 * about three times faster than the default and costs little size on the
 * binaries and text that layers hold. */
#define LAYER_GZIP_LEVEL 1
/* zstd's own default, and what BuildKit's default speed amounts to. */
#define LAYER_ZSTD_LEVEL 3
#define GZIP_OS_UNIX 3
#define COPY_CHUNK (128 * 1024)
#define ZCHUNK (64 * 1024)

#define OPAQUE_XATTR "trusted.overlay.opaque"
#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"
#define WH_META ".wh..wh."

enum ent_kind {
	ENT_FILE,               /* a real inode of the tree */
	ENT_WHITEOUT,           /* ".wh.NAME" for an overlay whiteout */
	ENT_OPAQUE,             /* "DIR/.wh..wh..opq" for an opaque directory */
};

struct ent {
	char *path;             /* tar path: no "./", no trailing '/' */
	enum ent_kind kind;
	unsigned root;          /* which tree an ENT_FILE comes from */
	ssize_t link;           /* index of the entry holding the data, or -1 */
	struct stat st;
};

struct walk {
	const char *const *roots;
	int *rootfds;
	bool apply_whiteouts;   /* rootfs: honour them; layer: write them */
	struct ent *v;
	size_t n, cap;
	struct kiln_err *err;
};

/* One name seen in one tree while merging a directory. */
struct item {
	char *name;
	unsigned order;         /* position in the contributing list (top first) */
	bool opaque;
	struct stat st;
};

static bool
is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static int64_t
clamp_mtime(const struct stat *st, int64_t epoch)
{
	int64_t t = st->st_mtim.tv_sec;

	return epoch >= 0 && t > epoch ? epoch : t;
}

static char *
join_path(const char *a, const char *b)
{
	return *a ? kiln_strdupf("%s/%s", a, b) : strdup(b);
}

static int
walk_add(struct walk *w, char *path, enum ent_kind kind, unsigned root, const struct stat *st)
{
	if (!path)
		return kiln_err_set(w->err, ENOMEM, "out of memory");
	if (w->n == w->cap) {
		size_t ncap = w->cap ? w->cap * 2 : 256;
		struct ent *nv = realloc(w->v, ncap * sizeof(*nv));

		if (!nv) {
			free(path);
			return kiln_err_set(w->err, ENOMEM, "out of memory");
		}
		w->v = nv;
		w->cap = ncap;
	}
	w->v[w->n++] = (struct ent) {
		.path = path, .kind = kind, .root = root, .link = -1, .st = *st,
	};
	return 0;
}

static void
walk_release(struct walk *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i].path);
	free(w->v);
	w->v = NULL;
	w->n = w->cap = 0;
}

static bool
dir_is_opaque(int dfd, const char *name)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	char v[2];

	if (fd < 0)
		return false;
	return fgetxattr(fd, OPAQUE_XATTR, v, sizeof(v)) == 1 && v[0] == 'y';
}

static int
item_cmp(const void *pa, const void *pb)
{
	const struct item *a = pa, *b = pb;
	int c = strcmp(a->name, b->name);

	if (c)
		return c;
	return a->order < b->order ? -1 : a->order > b->order;
}

static void
items_free(struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].name);
	free(items);
}

/* Read directory prefix of every tree in layers[] (top first) into *items. */
static int
read_dirs(struct walk *w, const unsigned *layers, unsigned nl, const char *prefix,
	  struct item **ret_items, size_t *ret_n)
{
	struct item *items = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	for (unsigned k = 0; k < nl; k++) {
		_cleanup_closedir_ DIR *d = NULL;
		struct dirent *de;
		int fd;

		fd = openat(w->rootfds[layers[k]], *prefix ? prefix : ".",
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = kiln_err_errno(w->err, errno, "open '%s/%s'", w->roots[layers[k]], prefix);
			goto out;
		}
		d = fdopendir(fd);
		if (!d) {
			r = kiln_err_errno(w->err, errno, "open '%s/%s'", w->roots[layers[k]], prefix);
			(void) close(fd);
			goto out;
		}
		for (;;) {
			struct item *it;

			errno = 0;
			de = readdir(d);
			if (!de) {
				if (errno) {
					r = kiln_err_errno(w->err, errno, "read '%s/%s'",
							   w->roots[layers[k]], prefix);
					goto out;
				}
				break;
			}
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 64;
				struct item *ni = realloc(items, ncap * sizeof(*ni));

				if (!ni) {
					r = kiln_err_set(w->err, ENOMEM, "out of memory");
					goto out;
				}
				items = ni;
				cap = ncap;
			}
			it = &items[n];
			it->name = strdup(de->d_name);
			if (!it->name) {
				r = kiln_err_set(w->err, ENOMEM, "out of memory");
				goto out;
			}
			n++;
			it->order = k;
			if (fstatat(dirfd(d), de->d_name, &it->st, AT_SYMLINK_NOFOLLOW) < 0) {
				r = kiln_err_errno(w->err, errno, "stat '%s/%s%s%s'", w->roots[layers[k]],
						   prefix, *prefix ? "/" : "", de->d_name);
				goto out;
			}
			it->opaque = S_ISDIR(it->st.st_mode) && dir_is_opaque(dirfd(d), de->d_name);
		}
	}
	if (n > 1)
		qsort(items, n, sizeof(*items), item_cmp);
	*ret_items = STEAL_PTR(items);
	*ret_n = n;
	n = 0;
out:
	items_free(items, n);
	return r;
}

/* Collect the merged contents of directory prefix as seen through
 * layers[0] (top) .. layers[nl-1]. With one tree and !apply_whiteouts this
 * is a plain walk that records whiteouts and opaque markers as entries. */
static int
walk_dir(struct walk *w, const unsigned *layers, unsigned nl, const char *prefix)
{
	struct item *items = NULL;
	unsigned *sub = NULL;
	size_t n = 0;
	int r;

	r = read_dirs(w, layers, nl, prefix, &items, &n);
	if (r < 0)
		return r;
	sub = malloc(sizeof(*sub) * (nl ? nl : 1));
	if (!sub) {
		r = kiln_err_set(w->err, ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0, next; i < n; i = next) {
		const struct item *top = &items[i];
		_cleanup_free_ char *child = NULL;
		unsigned nsub = 0;

		/* The group of one name across trees; the first (top) decides. */
		for (next = i + 1; next < n && strcmp(items[next].name, top->name) == 0; next++)
			;
		if (is_whiteout(&top->st)) {
			if (w->apply_whiteouts)
				continue;
			r = walk_add(w, *prefix ? kiln_strdupf("%s/" WH_PREFIX "%s", prefix, top->name)
				     : kiln_strdupf(WH_PREFIX "%s", top->name),
				     ENT_WHITEOUT, layers[top->order], &top->st);
			if (r < 0)
				goto out;
			continue;
		}
		if (S_ISSOCK(top->st.st_mode))
			continue;       /* tar cannot hold sockets; they hide lower names all the same */
		child = join_path(prefix, top->name);
		r = walk_add(w, child ? strdup(child) : NULL, ENT_FILE, layers[top->order], &top->st);
		if (r < 0)
			goto out;
		if (!S_ISDIR(top->st.st_mode))
			continue;
		if (top->opaque && !w->apply_whiteouts) {
			r = walk_add(w, kiln_strdupf("%s/" WH_OPAQUE, child), ENT_OPAQUE,
				     layers[top->order], &top->st);
			if (r < 0)
				goto out;
		}
		/* Lower directories of the same name merge in until one is
		 * opaque or something that is not a directory hides the rest. */
		sub[nsub++] = layers[top->order];
		for (size_t j = i + 1; j < next && !items[j - 1].opaque; j++) {
			if (!S_ISDIR(items[j].st.st_mode))
				break;
			sub[nsub++] = layers[items[j].order];
		}
		r = walk_dir(w, sub, nsub, child);
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	free(sub);
	items_free(items, n);
	return r;
}

static int
ent_cmp(const void *pa, const void *pb)
{
	const struct ent *a = pa, *b = pb;

	return strcmp(a->path, b->path);
}

static int
inode_cmp(const void *pa, const void *pb, void *data)
{
	const struct ent *v = data;
	const struct stat *a = &v[*(const size_t *) pa].st, *b = &v[*(const size_t *) pb].st;
	size_t ia = *(const size_t *) pa, ib = *(const size_t *) pb;

	if (a->st_dev != b->st_dev)
		return a->st_dev < b->st_dev ? -1 : 1;
	if (a->st_ino != b->st_ino)
		return a->st_ino < b->st_ino ? -1 : 1;
	return ia < ib ? -1 : ia > ib;
}

/* Sort by path, then point every further name of a multiply-linked file at
 * the first one, so the data is written once and the choice is stable. */
static int
walk_finish(struct walk *w)
{
	_cleanup_free_ size_t *idx = NULL;
	size_t m = 0;

	if (w->n > 1)
		qsort(w->v, w->n, sizeof(*w->v), ent_cmp);
	idx = malloc(sizeof(*idx) * (w->n ? w->n : 1));
	if (!idx)
		return kiln_err_set(w->err, ENOMEM, "out of memory");
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i].kind == ENT_FILE && S_ISREG(w->v[i].st.st_mode) && w->v[i].st.st_nlink > 1)
			idx[m++] = i;
	if (m > 1)
		qsort_r(idx, m, sizeof(*idx), inode_cmp, w->v);
	for (size_t i = 1; i < m; i++) {
		const struct stat *a = &w->v[idx[i - 1]].st, *b = &w->v[idx[i]].st;

		if (a->st_dev == b->st_dev && a->st_ino == b->st_ino)
			w->v[idx[i]].link = w->v[idx[i - 1]].link >= 0 ? w->v[idx[i - 1]].link
				: (ssize_t) idx[i - 1];
	}
	return 0;
}

static int
walk_trees(struct walk *w, const char *const *roots, unsigned n, bool apply_whiteouts,
	   struct kiln_err *err)
{
	_cleanup_free_ unsigned *layers = NULL;
	int r;

	*w = (struct walk) { .roots = roots, .apply_whiteouts = apply_whiteouts, .err = err };
	w->rootfds = malloc(sizeof(int) * (n ? n : 1));
	layers = malloc(sizeof(unsigned) * (n ? n : 1));
	if (!w->rootfds || !layers)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (unsigned i = 0; i < n; i++)
		w->rootfds[i] = -1;
	for (unsigned i = 0; i < n; i++) {
		w->rootfds[i] = open(roots[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (w->rootfds[i] < 0)
			return kiln_err_errno(err, errno, "open '%s'", roots[i]);
		layers[i] = i;
	}
	if (n == 0)
		return 0;
	r = walk_dir(w, layers, n, "");
	if (r < 0)
		return r;
	return walk_finish(w);
}

static void
walk_close(struct walk *w, unsigned n)
{
	for (unsigned i = 0; w->rootfds && i < n; i++)
		if (w->rootfds[i] >= 0)
			(void) close(w->rootfds[i]);
	free(w->rootfds);
	w->rootfds = NULL;
	walk_release(w);
}

/* Where the tar goes: compressed (or not) into a blob-store writer, or a
 * plain fd. */
struct sink {
	struct kiln_err *err;
	int failed;             /* negative errno once a write failed */
	struct digest_ctx *tar_dc;
	struct cas_writer *cw;
	enum layer_compression comp;
	ZSTD_CCtx *zc;
	bool z_ready;
	z_stream z;
	gz_header gzh;
	unsigned char zbuf[ZCHUNK];
	int fd;
};

static int
sink_deflate(struct sink *s, const void *buf, size_t len, int flush)
{
	int zr;

	s->z.next_in = (Bytef *) buf;
	s->z.avail_in = (uInt) len;
	do {
		size_t have;

		s->z.next_out = s->zbuf;
		s->z.avail_out = sizeof(s->zbuf);
		zr = deflate(&s->z, flush);
		if (zr == Z_STREAM_ERROR)
			return kiln_err_set(s->err, EIO, "gzip: deflate failed");
		have = sizeof(s->zbuf) - s->z.avail_out;
		if (have > 0) {
			int r = cas_writer_write(s->cw, s->zbuf, have, s->err);

			if (r < 0)
				return r;
		}
	} while (s->z.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
	return 0;
}

static int
sink_zstd(struct sink *s, const void *buf, size_t len, ZSTD_EndDirective end)
{
	ZSTD_inBuffer in = { buf, len, 0 };
	size_t left;

	do {
		ZSTD_outBuffer out = { s->zbuf, sizeof(s->zbuf), 0 };

		left = ZSTD_compressStream2(s->zc, &out, &in, end);
		if (ZSTD_isError(left))
			return kiln_err_set(s->err, EIO, "zstd: %s", ZSTD_getErrorName(left));
		if (out.pos > 0) {
			int r = cas_writer_write(s->cw, s->zbuf, out.pos, s->err);

			if (r < 0)
				return r;
		}
	} while (end == ZSTD_e_end ? left != 0 : in.pos < in.size);
	return 0;
}

/* Send len bytes of tar through s (hashed for the diff_id when asked). On
 * failure s->failed holds the error too. */
static int
sink_put(struct sink *s, const void *buf, size_t len)
{
	int r = 0;

	if (s->tar_dc)
		digest_ctx_update(s->tar_dc, buf, len);
	if (s->cw && s->comp == LAYER_ZSTD) {
		r = sink_zstd(s, buf, len, ZSTD_e_continue);
	} else if (s->cw && s->comp == LAYER_NONE) {
		r = cas_writer_write(s->cw, buf, len, s->err);
	} else if (s->cw) {
		/* zlib takes uInt lengths; libarchive blocks are far smaller. */
		for (size_t off = 0; r == 0 && off < len; off += UINT_MAX) {
			size_t chunk = len - off > UINT_MAX ? UINT_MAX : len - off;

			r = sink_deflate(s, (const char *) buf + off, chunk, Z_NO_FLUSH);
		}
	} else {
		r = kiln_write_all(s->fd, buf, len);
		if (r < 0)
			kiln_err_errno(s->err, -r, "write tar");
	}
	if (r < 0)
		s->failed = r;
	return r;
}

static la_ssize_t
sink_write(struct archive *a, void *data, const void *buf, size_t len)
{
	struct sink *s = data;
	int r = sink_put(s, buf, len);

	if (r < 0) {
		archive_set_error(a, -r, "%s", s->err ? s->err->msg : "write failed");
		return -1;
	}
	return (la_ssize_t) len;
}

/* The error of a failed archive call: ours if the sink failed, else libarchive's. */
static int
archive_fail(struct archive *a, struct sink *s, struct kiln_err *err, const char *what)
{
	int code;

	if (s && s->failed < 0)
		return kiln_err_wrap(err, "%s", what);
	code = archive_errno(a) > 0 ? archive_errno(a) : EIO;
	return kiln_err_set(err, code, "%s: %s", what,
			    archive_error_string(a) ? archive_error_string(a) : "tar error");
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Copy the xattrs of full (not following symlinks) into e, in name order,
 * leaving out the overlay's own bookkeeping. */
static int
add_xattrs(struct archive_entry *e, const char *full, struct kiln_err *err)
{
	_cleanup_free_ char *list = NULL;
	_cleanup_free_ const char **names = NULL;
	size_t nnames = 0;
	ssize_t len;

	for (;;) {
		len = llistxattr(full, NULL, 0);
		if (len < 0 && (errno == ENOTSUP || errno == ENODATA))
			return 0;
		if (len < 0)
			return kiln_err_errno(err, errno, "list xattrs of '%s'", full);
		if (len == 0)
			return 0;
		free(list);
		list = malloc((size_t) len);
		if (!list)
			return kiln_err_set(err, ENOMEM, "out of memory");
		len = llistxattr(full, list, (size_t) len);
		if (len >= 0)
			break;
		if (errno != ERANGE)
			return kiln_err_errno(err, errno, "list xattrs of '%s'", full);
	}
	names = calloc((size_t) len, sizeof(*names));
	if (!names)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (const char *p = list; p < list + len; p += strlen(p) + 1)
		if (*p && !kiln_startswith(p, "trusted.overlay."))
			names[nnames++] = p;
	if (nnames > 1)
		qsort(names, nnames, sizeof(*names), name_cmp);
	for (size_t i = 0; i < nnames; i++) {
		_cleanup_free_ char *val = NULL;
		ssize_t vlen;

		for (;;) {
			vlen = lgetxattr(full, names[i], NULL, 0);
			if (vlen < 0 && errno == ENODATA)
				break;
			if (vlen < 0)
				return kiln_err_errno(err, errno, "read xattr '%s' of '%s'", names[i], full);
			free(val);
			val = malloc(vlen ? (size_t) vlen : 1);
			if (!val)
				return kiln_err_set(err, ENOMEM, "out of memory");
			vlen = lgetxattr(full, names[i], val, (size_t) vlen);
			if (vlen >= 0 || errno != ERANGE)
				break;
		}
		if (vlen < 0 && errno == ENODATA)
			continue;       /* removed while we looked */
		if (vlen < 0)
			return kiln_err_errno(err, errno, "read xattr '%s' of '%s'", names[i], full);
		archive_entry_xattr_add_entry(e, names[i], val, (size_t) vlen);
	}
	return 0;
}

static int
copy_file(struct archive *a, struct sink *s, int rootfd, const char *root, const struct ent *en,
	  unsigned char *buf, struct kiln_err *err)
{
	_cleanup_close_ int fd = -1;
	uint64_t left = (uint64_t) en->st.st_size;

	fd = openat(rootfd, en->path, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_errno(err, errno, "open '%s/%s'", root, en->path);
	(void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	while (left > 0) {
		ssize_t n = read(fd, buf, left > COPY_CHUNK ? COPY_CHUNK : left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_err_errno(err, errno, "read '%s/%s'", root, en->path);
		/* The header already promised st_size bytes. */
		if (n == 0)
			return kiln_err_set(err, EIO, "'%s/%s' shrank while being read", root,
					    en->path);
		if (archive_write_data(a, buf, (size_t) n) != n)
			return archive_fail(a, s, err, "write tar");
		left -= (uint64_t) n;
	}
	return 0;
}

static int
write_one(struct walk *w, struct archive *a, struct archive_entry *e, struct sink *s,
	  const struct ent *en, int64_t epoch, unsigned char *buf, struct kiln_err *err)
{
	const char *root = w->roots[en->root];
	const struct stat *st = &en->st;
	bool data = false;
	int r;

	archive_entry_clear(e);
	archive_entry_copy_pathname(e, en->path);
	archive_entry_set_mtime(e, clamp_mtime(st, epoch), 0);
	if (en->kind != ENT_FILE) {
		/* Markers say only "gone" or "opaque": no owner or mode to keep. */
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0);
		archive_entry_set_size(e, 0);
		goto write;
	}
	archive_entry_set_mode(e, st->st_mode);
	archive_entry_set_uid(e, st->st_uid);
	archive_entry_set_gid(e, st->st_gid);
	if (S_ISREG(st->st_mode)) {
		if (en->link >= 0) {
			archive_entry_copy_hardlink(e, w->v[en->link].path);
			archive_entry_set_size(e, 0);
			goto write;  /* the first name carries the xattrs */
		}
		archive_entry_set_size(e, st->st_size);
		data = st->st_size > 0;
	} else if (S_ISLNK(st->st_mode)) {
		_cleanup_free_ char *target = NULL;
		size_t cap = (size_t) st->st_size + 1;
		ssize_t n;

		if (cap < 2 || cap > PATH_MAX + 1)
			cap = PATH_MAX + 1;
		target = malloc(cap);
		if (!target)
			return kiln_err_set(err, ENOMEM, "out of memory");
		n = readlinkat(w->rootfds[en->root], en->path, target, cap);
		if (n < 0)
			return kiln_err_errno(err, errno, "readlink '%s/%s'", root, en->path);
		if ((size_t) n >= cap)
			return kiln_err_set(err, ENAMETOOLONG, "symlink '%s/%s' is too long", root,
					    en->path);
		target[n] = '\0';
		archive_entry_copy_symlink(e, target);
	} else if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
		archive_entry_set_rdevmajor(e, major(st->st_rdev));
		archive_entry_set_rdevminor(e, minor(st->st_rdev));
	}
	{
		_cleanup_free_ char *full = kiln_strdupf("%s/%s", root, en->path);

		if (!full)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = add_xattrs(e, full, err);
		if (r < 0)
			return r;
	}
write:
	/* ARCHIVE_WARN: a name that is not ASCII, written as raw bytes. */
	if (archive_write_header(a, e) < ARCHIVE_WARN)
		return archive_fail(a, s, err, "write tar");
	if (data)
		return copy_file(a, s, w->rootfds[en->root], root, en, buf, err);
	return 0;
}

static struct archive *
tar_writer_new(struct sink *s, struct kiln_err *err)
{
	struct archive *a = archive_write_new();

	if (!a) {
		kiln_err_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	/* Only SCHILY.xattr headers, as Docker and Go write them. */
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_set_options(a, "xattrheader=SCHILY") < ARCHIVE_WARN ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open(a, s, NULL, sink_write, NULL) != ARCHIVE_OK) {
		archive_fail(a, s, err, "set up tar writer");
		archive_write_free(a);
		return NULL;
	}
	return a;
}

static int
write_tar(struct walk *w, struct sink *s, int64_t epoch, struct kiln_err *err)
{
	_cleanup_free_ unsigned char *buf = malloc(COPY_CHUNK);
	struct archive_entry *e = archive_entry_new();
	struct archive *a = NULL;
	int r = 0;

	if (!buf || !e) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	a = tar_writer_new(s, err);
	if (!a) {
		r = -err->code;
		goto out;
	}
	for (size_t i = 0; i < w->n; i++) {
		r = write_one(w, a, e, s, &w->v[i], epoch, buf, err);
		if (r < 0)
			goto out;
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		r = archive_fail(a, s, err, "finish tar");
out:
	if (a)
		archive_write_free(a);
	archive_entry_free(e);
	return r;
}

/* Set up s's compressor for comp at level (already checked). */
static int
sink_start(struct sink *s, enum layer_compression comp, int level, struct kiln_err *err)
{
	size_t zr;

	s->comp = comp;
	switch (comp) {
	case LAYER_NONE:
		return 0;
	case LAYER_ZSTD:
		s->zc = ZSTD_createCCtx();
		if (!s->zc)
			return kiln_err_set(err, ENOMEM, "zstd: init failed");
		/* Every parameter that shapes the frame is set, so a change of
		 * libzstd's defaults cannot change the bytes; nbWorkers 0 keeps
		 * the block split independent of timing. */
		zr = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_compressionLevel,
					    level == LAYER_LEVEL_DEFAULT ? LAYER_ZSTD_LEVEL : level);
		if (!ZSTD_isError(zr))
			zr = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_checksumFlag, 1);
		if (!ZSTD_isError(zr))
			zr = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_contentSizeFlag, 0);
		if (!ZSTD_isError(zr))
			zr = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_dictIDFlag, 0);
		if (!ZSTD_isError(zr))
			zr = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_nbWorkers, 0);
		if (ZSTD_isError(zr))
			return kiln_err_set(err, EINVAL, "zstd: %s", ZSTD_getErrorName(zr));
		return 0;
	case LAYER_GZIP:
		break;
	}
	/* windowBits 16+15: a gzip wrapper. The explicit header pins the OS
	 * byte, which zlib otherwise takes from the build host. */
	if (deflateInit2(&s->z, level == LAYER_LEVEL_DEFAULT ? LAYER_GZIP_LEVEL : level, Z_DEFLATED,
			 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return kiln_err_set(err, ENOMEM, "gzip: init failed");
	s->z_ready = true;
	s->gzh.os = GZIP_OS_UNIX;
	if (deflateSetHeader(&s->z, &s->gzh) != Z_OK)
		return kiln_err_set(err, EIO, "gzip: set header failed");
	return 0;
}

static int
sink_finish(struct sink *s)
{
	switch (s->comp) {
	case LAYER_NONE:
		return 0;
	case LAYER_ZSTD:
		return sink_zstd(s, NULL, 0, ZSTD_e_end);
	case LAYER_GZIP:
		break;
	}
	return sink_deflate(s, NULL, 0, Z_FINISH);
}

static void
sink_stop(struct sink *s)
{
	if (s->z_ready)
		deflateEnd(&s->z);
	s->z_ready = false;
	ZSTD_freeCCtx(s->zc);
	s->zc = NULL;
}

int
layer_compression_parse(const char *name, enum layer_compression *ret)
{
	if (strcmp(name, "gzip") == 0)
		*ret = LAYER_GZIP;
	else if (strcmp(name, "zstd") == 0)
		*ret = LAYER_ZSTD;
	else if (strcmp(name, "uncompressed") == 0)
		*ret = LAYER_NONE;
	else
		return -EINVAL;
	return 0;
}

const char *
layer_compression_name(enum layer_compression comp)
{
	switch (comp) {
	case LAYER_ZSTD:
		return "zstd";
	case LAYER_NONE:
		return "uncompressed";
	case LAYER_GZIP:
		break;
	}
	return "gzip";
}

bool
layer_level_valid(enum layer_compression comp, int level)
{
	if (level == LAYER_LEVEL_DEFAULT)
		return true;
	switch (comp) {
	case LAYER_ZSTD:
		return level >= 0 && level <= 22;
	case LAYER_NONE:
		return false;
	case LAYER_GZIP:
		break;
	}
	return level >= 0 && level <= 9;
}

const char *
layer_compression_media_type(enum layer_compression comp, bool oci)
{
	switch (comp) {
	case LAYER_ZSTD:
		return oci ? OCI_MT_LAYER_ZSTD : DOCKER_MT_LAYER_ZSTD;
	case LAYER_NONE:
		return oci ? OCI_MT_LAYER_TAR : DOCKER_MT_LAYER_TAR;
	case LAYER_GZIP:
		break;
	}
	return oci ? OCI_MT_LAYER_GZ : DOCKER_MT_LAYER_GZ;
}

int
layer_compression_from_media_type(const char *mt, enum layer_compression *ret)
{
	static const enum layer_compression all[] = { LAYER_GZIP, LAYER_ZSTD, LAYER_NONE };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(mt, layer_compression_media_type(all[i], true)) == 0 ||
		    strcmp(mt, layer_compression_media_type(all[i], false)) == 0) {
			*ret = all[i];
			return 0;
		}
	}
	return -EINVAL;
}

static int
check_level(enum layer_compression comp, int level, struct kiln_err *err)
{
	if ((comp != LAYER_GZIP && comp != LAYER_ZSTD && comp != LAYER_NONE) ||
	    !layer_level_valid(comp, level))
		return kiln_err_set(err, EINVAL, "compression level %d is out of range for %s", level,
				    layer_compression_name(comp));
	return 0;
}

static void
sink_free(struct sink *s)
{
	if (!s)
		return;
	if (s->cw)
		cas_writer_abort(s->cw);
	sink_stop(s);
	digest_ctx_free(s->tar_dc);
	free(s);
}

/* A sink into a new blob of cas: the tar compressed as comp at level
 * (checked), hashed for the diff_id on the way. */
static int
sink_open_blob(struct cas *cas, enum layer_compression comp, int level, struct sink **ret,
	       struct kiln_err *err)
{
	struct sink *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	s->err = err;
	s->fd = -1;
	s->tar_dc = digest_ctx_new();
	if (!s->tar_dc) {
		sink_free(s);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	r = sink_start(s, comp, level, err);
	if (r == 0)
		r = cas_writer_new(cas, NULL, &s->cw, err);
	if (r < 0) {
		sink_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

/* Flush the compressor and store the blob under the OCI media type of its
 * compression; *ret gets its digests and size. */
static int
sink_commit_blob(struct sink *s, struct layer_info *ret, struct kiln_err *err)
{
	struct digest diff_id, digest;
	uint64_t size;
	int r;

	r = sink_finish(s);
	if (r < 0)
		return r;
	digest_ctx_final(s->tar_dc, &diff_id);
	size = cas_writer_size(s->cw);
	r = cas_writer_commit(STEAL_PTR(s->cw), layer_compression_media_type(s->comp, true), &digest,
			      err);
	if (r < 0)
		return r;
	ret->diff_id = diff_id;
	ret->digest = digest;
	ret->size = size;
	return 0;
}

int
layer_make(struct cas *cas, const char *dir, enum layer_compression comp, int level,
	   struct layer_info *ret, struct kiln_err *err)
{
	const char *roots[1] = { dir };
	struct sink *s = NULL;
	struct walk w;
	int r;

	r = check_level(comp, level, err);
	if (r < 0)
		return r;
	r = walk_trees(&w, roots, 1, false, err);
	if (r < 0)
		goto out;
	if (w.n == 0) {
		r = 1;
		goto out;
	}
	r = sink_open_blob(cas, comp, level, &s, err);
	if (r < 0)
		goto out;
	/* No epoch: file times stay as they are; clamping them is an
	 * exporter's choice (layer_rewrite), so a step's layer never depends
	 * on how the image is exported. */
	r = write_tar(&w, s, -1, err);
	if (r < 0) {
		kiln_err_wrap(err, "make layer of '%s'", dir);
		goto out;
	}
	r = sink_commit_blob(s, ret, err);
	if (r < 0)
		kiln_err_wrap(err, "store layer of '%s'", dir);
out:
	sink_free(s);
	walk_close(&w, 1);
	return r;
}

int
layer_from_dir(struct cas *cas, const char *dir, struct layer_info *ret, struct kiln_err *err)
{
	return layer_make(cas, dir, LAYER_GZIP, LAYER_LEVEL_DEFAULT, ret, err);
}

int
layer_write_rootfs_tar(const char *const *lowers, unsigned n, int fd, int64_t epoch,
		       struct kiln_err *err)
{
	struct sink s = { .err = err, .fd = fd };
	struct walk w;
	int r;

	r = walk_trees(&w, lowers, n, true, err);
	if (r >= 0)
		r = write_tar(&w, &s, epoch, err);
	walk_close(&w, n);
	return r;
}

/* ---- extraction ---- */

#define IN_CHUNK (64 * 1024)
#define OUT_CHUNK (128 * 1024)

/* The uncompressed byte stream handed to libarchive, hashed as it passes. */
struct xin {
	int fd;
	enum layer_compression comp;    /* sniffed from the first bytes */
	bool eof, member_done;
	bool z_ready;
	z_stream z;
	ZSTD_DCtx *zd;
	ZSTD_inBuffer zin;
	size_t zleft;                   /* 0 between zstd frames */
	struct digest_ctx *dc;
	struct kiln_err *err;
	int failed;
	unsigned char in[IN_CHUNK];
	unsigned char out[OUT_CHUNK];
};

static ssize_t
xin_fill(struct xin *x)
{
	ssize_t n;

	do
		n = read(x->fd, x->in, sizeof(x->in));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return kiln_err_errno(x->err, errno, "read layer blob");
	return n;
}

/* Next chunk of zstd-decompressed bytes into x->out; 0 at the end. Frames
 * may follow each other (as from concatenation). */
static ssize_t
xin_next_zstd(struct xin *x)
{
	for (;;) {
		ZSTD_outBuffer out = { x->out, sizeof(x->out), 0 };
		ssize_t n;

		if (x->zin.pos == x->zin.size && !x->eof) {
			n = xin_fill(x);
			if (n < 0)
				return n;
			x->eof = n == 0;
			x->zin.src = x->in;
			x->zin.size = (size_t) n;
			x->zin.pos = 0;
		}
		if (x->zin.pos == x->zin.size && x->eof) {
			/* zleft is 0 exactly when the last frame was complete
			 * (and its checksum verified). */
			if (x->zleft != 0)
				return kiln_err_set(x->err, EBADMSG, "zstd: unexpected end of data");
			return 0;
		}
		x->zleft = ZSTD_decompressStream(x->zd, &out, &x->zin);
		if (ZSTD_isError(x->zleft))
			return kiln_err_set(x->err, EBADMSG, "zstd: %s", ZSTD_getErrorName(x->zleft));
		if (out.pos > 0)
			return (ssize_t) out.pos;
	}
}

/* Next chunk of uncompressed bytes into x->out; 0 at the end. */
static ssize_t
xin_next(struct xin *x)
{
	ssize_t n;

	if (x->comp == LAYER_ZSTD) {
		n = xin_next_zstd(x);
		if (n < 0)
			return n;
		goto out;
	}
	if (x->comp == LAYER_NONE) {
		do
			n = read(x->fd, x->out, sizeof(x->out));
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return kiln_err_errno(x->err, errno, "read layer blob");
		goto out;
	}
	for (;;) {
		int zr;

		if (x->z.avail_in == 0 && !x->eof) {
			n = xin_fill(x);
			if (n < 0)
				return n;
			x->eof = n == 0;
			x->z.next_in = x->in;
			x->z.avail_in = (uInt) n;
		}
		if (x->member_done) {
			if (x->z.avail_in == 0 && x->eof)
				return 0;
			if (x->z.avail_in == 0)
				continue;
			/* Another gzip member follows (as from concatenation). */
			if (inflateReset(&x->z) != Z_OK)
				return kiln_err_set(x->err, EIO, "gzip: reset failed");
			x->member_done = false;
		}
		x->z.next_out = x->out;
		x->z.avail_out = sizeof(x->out);
		zr = inflate(&x->z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END)
			x->member_done = true;
		else if (zr == Z_BUF_ERROR && x->eof && x->z.avail_in == 0)
			return kiln_err_set(x->err, EBADMSG, "gzip: unexpected end of data");
		else if (zr != Z_OK && zr != Z_BUF_ERROR)
			return kiln_err_set(x->err, EBADMSG, "gzip: %s",
					    x->z.msg ? x->z.msg : "corrupt data");
		n = (ssize_t) (sizeof(x->out) - x->z.avail_out);
		if (n > 0)
			break;
		if (!x->member_done && x->eof && x->z.avail_in == 0)
			return kiln_err_set(x->err, EBADMSG, "gzip: unexpected end of data");
	}
out:
	if (x->dc && n > 0)
		digest_ctx_update(x->dc, x->out, (size_t) n);
	return n;
}

/* Read in's stream to its end: whatever follows the end-of-archive blocks
 * still counts for the diff_id, and the gzip trailer (CRC) is checked on
 * the way. 0 or a negative error. */
static int
xin_drain(struct xin *x)
{
	ssize_t n;

	while ((n = xin_next(x)) > 0)
		;
	return (int) n;
}

static la_ssize_t
xin_read(struct archive *a, void *data, const void **buf)
{
	struct xin *x = data;
	ssize_t n = xin_next(x);

	if (n < 0) {
		x->failed = (int) n;
		archive_set_error(a, (int) -n, "%s", x->err->msg);
		return -1;
	}
	*buf = x->out;
	return n;
}

struct dirtime {
	char *path;
	struct timespec ts[2];
};

struct xctx {
	int root;               /* the temporary tree */
	const char *entry;      /* name as in the tar, for messages */
	struct kiln_err *err;
	char *cpath;            /* cached parent directory ... */
	int cfd;                /* ... and its fd */
	struct dirtime *dirs;   /* directory mtimes, set once all children exist */
	size_t ndirs, capdirs;
};

/* Normalise a tar name: strip "./" prefixes, drop "." and empty
 * components. *ret_path is "" for the root. Refuses ".." and absolute names. */
static int
clean_path(struct xctx *x, const char *raw, const char *what, char **ret_path)
{
	_cleanup_free_ char *out = NULL;
	const char *p = raw;
	size_t len = 0;

	while (p[0] == '.' && p[1] == '/')
		p += 2;
	if (*p == '/')
		return kiln_err_set(x->err, EPERM, "layer entry '%s': %s is an absolute path",
				    x->entry, what);
	out = malloc(strlen(p) + 1);
	if (!out)
		return kiln_err_set(x->err, ENOMEM, "out of memory");
	while (*p) {
		const char *end = strchrnul(p, '/');
		size_t n = (size_t) (end - p);

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return kiln_err_set(x->err, EPERM,
					    "layer entry '%s': %s has a '..' component", x->entry, what);
		if (n > 0 && !(n == 1 && p[0] == '.')) {
			if (len)
				out[len++] = '/';
			memcpy(out + len, p, n);
			len += n;
		}
		p = *end ? end + 1 : end;
	}
	out[len] = '\0';
	*ret_path = STEAL_PTR(out);
	return 0;
}

/* Open directory path (relative to the root, already clean) one component
 * at a time, never following a symlink; create missing ones when asked. */
static int
open_dir(struct xctx *x, const char *path, bool create, int *ret_fd)
{
	_cleanup_free_ char *copy = strdup(path);
	_cleanup_close_ int fd = -1;
	char *save = NULL;

	if (!copy)
		return kiln_err_set(x->err, ENOMEM, "out of memory");
	fd = fcntl(x->root, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return kiln_err_errno(x->err, errno, "dup");
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;

		if (nfd < 0 && errno == ENOENT && create) {
			if (mkdirat(fd, c, 0755) < 0 && errno != EEXIST)
				return kiln_err_errno(x->err, errno, "layer entry '%s': mkdir '%s'",
						      x->entry, c);
			nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (nfd < 0) {
			int e = errno;

			if (fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
				return kiln_err_set(x->err, EPERM,
						    "layer entry '%s': parent '%s' is a symlink",
						    x->entry, c);
			return kiln_err_errno(x->err, e, "layer entry '%s': open parent '%s'",
					      x->entry, c);
		}
		(void) close(fd);
		fd = nfd;
	}
	*ret_fd = STEAL_FD(fd);
	return 0;
}

static void
cache_drop(struct xctx *x)
{
	free(x->cpath);
	x->cpath = NULL;
	if (x->cfd >= 0)
		(void) close(x->cfd);
	x->cfd = -1;
}

/* The parent directory of path, created as needed. Borrowed fd: valid
 * until the next call or cache_drop(). *ret_name points into path. */
static int
parent_dir(struct xctx *x, char *path, int *ret_fd, const char **ret_name)
{
	char *slash = strrchr(path, '/');
	int fd, r;

	if (!slash) {
		*ret_fd = x->root;
		*ret_name = path;
		return 0;
	}
	*slash = '\0';
	if (!x->cpath || strcmp(x->cpath, path) != 0) {
		cache_drop(x);
		r = open_dir(x, path, true, &fd);
		if (r < 0) {
			*slash = '/';
			return r;
		}
		x->cpath = strdup(path);
		if (!x->cpath) {
			(void) close(fd);
			*slash = '/';
			return kiln_err_set(x->err, ENOMEM, "out of memory");
		}
		x->cfd = fd;
	}
	*slash = '/';
	*ret_fd = x->cfd;
	*ret_name = slash + 1;
	return 0;
}

static int
rm_rf_at(int dfd, const char *name)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode)) {
		_cleanup_closedir_ DIR *d = NULL;
		struct dirent *de;
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0)
			return -errno;
		d = fdopendir(fd);
		if (!d) {
			(void) close(fd);
			return -errno;
		}
		while ((de = readdir(d))) {
			int r;

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			r = rm_rf_at(dirfd(d), de->d_name);
			if (r < 0)
				return r;
		}
		return unlinkat(dfd, name, AT_REMOVEDIR) < 0 ? -errno : 0;
	}
	return unlinkat(dfd, name, 0) < 0 ? -errno : 0;
}

/* Make room for a new entry: a later entry of the same name wins, except
 * that a directory over a directory merges. Returns 1 if a directory stays. */
static int
clear_name(struct xctx *x, int pfd, const char *name, bool keep_dir)
{
	struct stat st;
	int r;

	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return kiln_err_errno(x->err, errno, "layer entry '%s': stat", x->entry);
	}
	if (S_ISDIR(st.st_mode)) {
		if (keep_dir)
			return 1;
		/* The cached directory may lie below what goes away, unless it
		 * is pfd itself (then it is the parent, and pfd must stay open). */
		if (pfd != x->cfd)
			cache_drop(x);
		r = rm_rf_at(pfd, name);
	} else {
		r = unlinkat(pfd, name, 0) < 0 ? -errno : 0;
	}
	if (r < 0)
		return kiln_err_errno(x->err, -r, "layer entry '%s': remove old entry", x->entry);
	return 0;
}

static bool
xattr_allowed(const char *name)
{
	return !kiln_startswith(name, "trusted.overlay.") && !kiln_startswith(name, "user.overlay.");
}

/* Owner, mode and xattrs, in that order: chown clears set-id bits and
 * security.capability. fd >= 0 for directories and regular files; others
 * go by name (a fifo or device cannot be opened safely). */
static int
set_meta(struct xctx *x, struct archive_entry *e, int fd, int pfd, const char *name, bool symlink)
{
	const char *xn;
	const void *xv;
	size_t xs;
	char proc[64];

	if (fd >= 0) {
		if (fchown(fd, archive_entry_uid(e), archive_entry_gid(e)) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': chown", x->entry);
		if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': chmod", x->entry);
	} else {
		if (fchownat(pfd, name, archive_entry_uid(e), archive_entry_gid(e),
			     AT_SYMLINK_NOFOLLOW) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': chown", x->entry);
		if (!symlink && fchmodat(pfd, name, archive_entry_perm(e) & 07777, 0) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': chmod", x->entry);
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d/", pfd);
	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
		int r;

		if (!xn || !xattr_allowed(xn))
			continue;
		if (fd >= 0) {
			r = fsetxattr(fd, xn, xv, xs, 0);
		} else {
			_cleanup_free_ char *p = kiln_strdupf("%s%s", proc, name);

			if (!p)
				return kiln_err_set(x->err, ENOMEM, "out of memory");
			r = lsetxattr(p, xn, xv, xs, 0);
		}
		if (r < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': set xattr '%s'",
					      x->entry, xn);
	}
	return 0;
}

static void
entry_times(struct archive_entry *e, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime(e);
	ts[1].tv_nsec = archive_entry_mtime_is_set(e) ? archive_entry_mtime_nsec(e) : 0;
	ts[0] = ts[1];
}

static int
defer_dir_time(struct xctx *x, const char *path, struct archive_entry *e)
{
	if (x->ndirs == x->capdirs) {
		size_t ncap = x->capdirs ? x->capdirs * 2 : 64;
		struct dirtime *nd = realloc(x->dirs, ncap * sizeof(*nd));

		if (!nd)
			return kiln_err_set(x->err, ENOMEM, "out of memory");
		x->dirs = nd;
		x->capdirs = ncap;
	}
	x->dirs[x->ndirs].path = strdup(path);
	if (!x->dirs[x->ndirs].path)
		return kiln_err_set(x->err, ENOMEM, "out of memory");
	entry_times(e, x->dirs[x->ndirs].ts);
	x->ndirs++;
	return 0;
}

/* Set directory mtimes last: creating children moved them. A directory
 * that a later entry replaced is skipped (open_dir never follows links). */
static void
apply_dir_times(struct xctx *x)
{
	for (size_t i = 0; i < x->ndirs; i++) {
		struct kiln_err ignored;
		struct xctx probe = {
			.root = x->root, .cfd = -1, .err = &ignored, .entry = x->dirs[i].path,
		};
		_cleanup_close_ int fd = -1;

		if (open_dir(&probe, x->dirs[i].path, false, &fd) == 0)
			(void) futimens(fd, x->dirs[i].ts);
	}
}

static int
write_data(struct xctx *x, struct archive *a, struct xin *in, int fd)
{
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(a, &buf, &size, &off);

		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN) {
			if (in->failed < 0)
				return kiln_err_wrap(x->err, "layer entry '%s'", x->entry);
			return kiln_err_set(x->err, archive_errno(a) > 0 ? archive_errno(a) : EBADMSG,
					    "layer entry '%s': %s", x->entry, archive_error_string(a));
		}
		while (size > 0) {
			ssize_t n = pwrite(fd, buf, size, off);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return kiln_err_errno(x->err, n < 0 ? errno : EIO,
						      "layer entry '%s': write", x->entry);
			buf = (const char *) buf + n;
			size -= (size_t) n;
			off += n;
		}
	}
}

static int
extract_hardlink(struct xctx *x, const char *raw_target, int pfd, const char *name,
		 const char *path)
{
	_cleanup_free_ char *target = NULL;
	_cleanup_close_ int tfd = -1;
	const char *tname;
	char *slash;
	int r;

	r = clean_path(x, raw_target, "its link target", &target);
	if (r < 0)
		return r;
	if (!*target)
		return kiln_err_set(x->err, EPERM, "layer entry '%s': link to the root", x->entry);
	if (strcmp(target, path) == 0)
		return 0;
	slash = strrchr(target, '/');
	if (slash) {
		*slash = '\0';
		r = open_dir(x, target, false, &tfd);
		if (r < 0)
			return r;
		tname = slash + 1;
	} else {
		tname = target;
	}
	r = clear_name(x, pfd, name, false);
	if (r < 0)
		return r;
	/* flags 0: link the target itself even when it is a symlink. */
	if (linkat(slash ? tfd : x->root, tname, pfd, name, 0) < 0)
		return kiln_err_errno(x->err, errno, "layer entry '%s': link to '%s'", x->entry,
				      raw_target);
	return 0;
}

static int
extract_whiteout(struct xctx *x, struct archive_entry *e, int pfd, const char *name)
{
	struct timespec ts[2];
	const char *victim = name + strlen(WH_PREFIX);
	int r;

	if (strcmp(name, WH_OPAQUE) == 0) {
		if (fsetxattr(pfd, OPAQUE_XATTR, "y", 1, 0) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': mark opaque",
					      x->entry);
		return 0;
	}
	if (kiln_startswith(name, WH_META))
		return 0;       /* aufs bookkeeping (.wh..wh.plnk and the like) */
	if (!*victim || strcmp(victim, ".") == 0 || strcmp(victim, "..") == 0)
		return kiln_err_set(x->err, EPERM, "layer entry '%s': bad whiteout", x->entry);
	r = clear_name(x, pfd, victim, false);
	if (r < 0)
		return r;
	if (mknodat(pfd, victim, S_IFCHR | 0, makedev(0, 0)) < 0)
		return kiln_err_errno(x->err, errno, "layer entry '%s': make whiteout", x->entry);
	/* Keep the time so that the tree gives back the same layer. */
	entry_times(e, ts);
	if (utimensat(pfd, victim, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_errno(x->err, errno, "layer entry '%s': set times", x->entry);
	return 0;
}

static int
extract_entry(struct xctx *x, struct archive *a, struct xin *in, struct archive_entry *e)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -1;
	struct timespec ts[2];
	const char *name = NULL, *raw = archive_entry_pathname(e);
	mode_t type = archive_entry_filetype(e);
	int pfd = -1, r;

	if (!raw)
		return kiln_err_set(x->err, EBADMSG, "layer entry without a name");
	x->entry = raw;
	r = clean_path(x, raw, "its name", &path);
	if (r < 0)
		return r;
	if (!*path) {
		/* "./": the root's own metadata. */
		if (type != AE_IFDIR)
			return kiln_err_set(x->err, EPERM, "layer entry '%s': root is not a directory",
					    raw);
		r = set_meta(x, e, x->root, -1, NULL, false);
		if (r < 0)
			return r;
		return defer_dir_time(x, "", e);
	}
	r = parent_dir(x, path, &pfd, &name);
	if (r < 0)
		return r;
	if (kiln_startswith(name, WH_PREFIX))
		return extract_whiteout(x, e, pfd, name);
	if (archive_entry_hardlink(e))
		return extract_hardlink(x, archive_entry_hardlink(e), pfd, name, path);

	entry_times(e, ts);
	switch (type) {
	case AE_IFDIR:
		r = clear_name(x, pfd, name, true);
		if (r < 0)
			return r;
		if (r == 0 && mkdirat(pfd, name, 0700) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': mkdir", raw);
		fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': open", raw);
		r = set_meta(x, e, fd, pfd, name, false);
		if (r < 0)
			return r;
		return defer_dir_time(x, path, e);
	case AE_IFREG:
		r = clear_name(x, pfd, name, false);
		if (r < 0)
			return r;
		fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': create", raw);
		r = write_data(x, a, in, fd);
		if (r < 0)
			return r;
		/* A sparse file may end in a hole. */
		if (archive_entry_size_is_set(e) && ftruncate(fd, archive_entry_size(e)) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': truncate", raw);
		r = set_meta(x, e, fd, pfd, name, false);
		if (r < 0)
			return r;
		if (futimens(fd, ts) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': set times", raw);
		return 0;
	case AE_IFLNK:
		if (!archive_entry_symlink(e))
			return kiln_err_set(x->err, EBADMSG, "layer entry '%s': symlink without target",
					    raw);
		r = clear_name(x, pfd, name, false);
		if (r < 0)
			return r;
		if (symlinkat(archive_entry_symlink(e), pfd, name) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': symlink", raw);
		break;
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO:
		r = clear_name(x, pfd, name, false);
		if (r < 0)
			return r;
		if (mknodat(pfd, name, type | 0600,
			    makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e))) < 0)
			return kiln_err_errno(x->err, errno, "layer entry '%s': mknod", raw);
		break;
	default:
		return 0;       /* sockets and unknown types have no place in a layer */
	}
	r = set_meta(x, e, -1, pfd, name, type == AE_IFLNK);
	if (r < 0)
		return r;
	if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_errno(x->err, errno, "layer entry '%s': set times", raw);
	return 0;
}

static int
extract_all(struct xctx *x, struct xin *in)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int r = 0;

	if (!a)
		return kiln_err_set(x->err, ENOMEM, "out of memory");
	archive_read_support_format_tar(a);
	archive_read_support_format_empty(a);
	if (archive_read_open(a, in, NULL, xin_read, NULL) != ARCHIVE_OK) {
		r = in->failed < 0 ? in->failed : archive_fail(a, NULL, x->err, "read layer");
		goto out;
	}
	for (;;) {
		int ar = archive_read_next_header(a, &e);

		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = in->failed < 0 ? in->failed : archive_fail(a, NULL, x->err, "read layer");
			goto out;
		}
		r = extract_entry(x, a, in, e);
		if (r < 0)
			goto out;
	}
	r = xin_drain(in);
	if (r < 0)
		goto out;
out:
	archive_read_free(a);
	return r;
}

static void
xin_close(struct xin *in)
{
	if (!in)
		return;
	if (in->z_ready)
		inflateEnd(&in->z);
	ZSTD_freeDCtx(in->zd);
	digest_ctx_free(in->dc);
	if (in->fd >= 0)
		(void) close(in->fd);
	free(in);
}

/* Open the layer blob at path for reading its tar: the compression is
 * sniffed from the first bytes (gzip, zstd, else a plain tar). With hash,
 * the uncompressed stream is hashed as it is read. */
static int
xin_open(const char *path, bool hash, struct xin **ret, struct kiln_err *err)
{
	struct xin *in = calloc(1, sizeof(*in));
	unsigned char magic[4];
	ssize_t n;
	int r;

	if (!in)
		return kiln_err_set(err, ENOMEM, "out of memory");
	in->err = err;
	in->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (in->fd < 0) {
		r = kiln_err_errno(err, errno, "open layer blob '%s'", path);
		goto fail;
	}
	n = pread(in->fd, magic, sizeof(magic), 0);
	if (n < 0) {
		r = kiln_err_errno(err, errno, "read layer blob '%s'", path);
		goto fail;
	}
	in->comp = LAYER_NONE;
	if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
		in->comp = LAYER_GZIP;
		if (inflateInit2(&in->z, 16 + 15) != Z_OK) {
			r = kiln_err_set(err, ENOMEM, "gzip: init failed");
			goto fail;
		}
		in->z_ready = true;
	} else if (n == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) {
		in->comp = LAYER_ZSTD;
		in->zd = ZSTD_createDCtx();
		if (!in->zd) {
			r = kiln_err_set(err, ENOMEM, "zstd: init failed");
			goto fail;
		}
	}
	if (hash) {
		in->dc = digest_ctx_new();
		if (!in->dc) {
			r = kiln_err_set(err, ENOMEM, "out of memory");
			goto fail;
		}
	}
	*ret = in;
	return 0;
fail:
	xin_close(in);
	return r;
}

int
layer_extract(const char *blob_path, const char *dest, struct digest *ret_diff_id,
	      struct kiln_err *err)
{
	struct xin *in = NULL;
	_cleanup_free_ char *tmp = NULL;
	struct xctx x = { .root = -1, .cfd = -1, .err = err, .entry = "" };
	struct stat st;
	int r;

	if (lstat(dest, &st) == 0)
		return kiln_err_set(err, EEXIST, "extract layer: '%s' exists", dest);
	if (errno != ENOENT)
		return kiln_err_errno(err, errno, "extract layer: stat '%s'", dest);
	r = xin_open(blob_path, ret_diff_id != NULL, &in, err);
	if (r < 0)
		return r;
	tmp = kiln_strdupf("%s.tmp-XXXXXX", dest);
	if (!tmp) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out_close;
	}
	if (!mkdtemp(tmp)) {
		r = kiln_err_errno(err, errno, "create '%s'", tmp);
		goto out_close;
	}
	x.root = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (x.root < 0) {
		r = kiln_err_errno(err, errno, "open '%s'", tmp);
		goto out_rm_tmp;
	}
	/* mkdtemp made it 0700; the root of an image is 0755 unless the tar says. */
	if (fchmod(x.root, 0755) < 0) {
		r = kiln_err_errno(err, errno, "chmod '%s'", tmp);
		goto out_rm_tmp;
	}
	r = extract_all(&x, in);
	if (r < 0) {
		kiln_err_wrap(err, "extract '%s'", blob_path);
		goto out_rm_tmp;
	}
	cache_drop(&x);
	x.entry = "";
	apply_dir_times(&x);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE) < 0) {
		r = kiln_err_errno(err, errno, "rename '%s' to '%s'", tmp, dest);
		goto out_rm_tmp;
	}
	if (ret_diff_id)
		digest_ctx_final(in->dc, ret_diff_id);
	r = 0;
	goto out_close;
out_rm_tmp:
	cache_drop(&x);
	(void) rm_rf_at(AT_FDCWD, tmp);
out_close:
	cache_drop(&x);
	if (x.root >= 0)
		(void) close(x.root);
	for (size_t i = 0; i < x.ndirs; i++)
		free(x.dirs[i].path);
	free(x.dirs);
	xin_close(in);
	return r;
}

/* ---- rewriting a layer for an output ---- */

/* Is t (seconds, nanoseconds) later than epoch? */
static bool
after_epoch(time_t sec, long nsec, int64_t epoch)
{
	return (int64_t) sec > epoch || ((int64_t) sec == epoch && nsec > 0);
}

/* Read every entry of in's tar and write it again to s, with times later
 * than epoch set to epoch, then hash what follows the end of the archive
 * (which also checks the gzip CRC or zstd checksum of in). */
static int
rewrite_entries(struct xin *in, struct sink *s, int64_t epoch, struct kiln_err *err)
{
	_cleanup_free_ char *buf = malloc(COPY_CHUNK);
	struct archive *ra = archive_read_new();
	struct archive *wa = NULL;
	struct archive_entry *e;
	int r = 0;

	if (!buf || !ra) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	archive_read_support_format_tar(ra);
	archive_read_support_format_empty(ra);
	if (archive_read_open(ra, in, NULL, xin_read, NULL) != ARCHIVE_OK) {
		r = in->failed < 0 ? in->failed : archive_fail(ra, NULL, err, "read layer");
		goto out;
	}
	wa = tar_writer_new(s, err);
	if (!wa) {
		r = -err->code;
		goto out;
	}
	for (;;) {
		int ar = archive_read_next_header(ra, &e);

		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = in->failed < 0 ? in->failed : archive_fail(ra, NULL, err, "read layer");
			goto out;
		}
		/* As BuildKit's rewrite-timestamp: mtime, atime and ctime
		 * clamped; older times stay. */
		if (archive_entry_mtime_is_set(e) &&
		    after_epoch(archive_entry_mtime(e), archive_entry_mtime_nsec(e), epoch))
			archive_entry_set_mtime(e, (time_t) epoch, 0);
		if (archive_entry_atime_is_set(e) &&
		    after_epoch(archive_entry_atime(e), archive_entry_atime_nsec(e), epoch))
			archive_entry_set_atime(e, (time_t) epoch, 0);
		if (archive_entry_ctime_is_set(e) &&
		    after_epoch(archive_entry_ctime(e), archive_entry_ctime_nsec(e), epoch))
			archive_entry_set_ctime(e, (time_t) epoch, 0);
		if (archive_write_header(wa, e) < ARCHIVE_WARN) {
			r = archive_fail(wa, s, err, "write tar");
			goto out;
		}
		for (;;) {
			la_ssize_t n = archive_read_data(ra, buf, COPY_CHUNK);

			if (n == 0)
				break;
			if (n < 0) {
				r = in->failed < 0 ? in->failed : archive_fail(ra, NULL, err, "read layer");
				goto out;
			}
			if (archive_write_data(wa, buf, (size_t) n) != n) {
				r = archive_fail(wa, s, err, "write tar");
				goto out;
			}
		}
	}
	r = xin_drain(in);
	if (r < 0)
		goto out;
	if (archive_write_close(wa) != ARCHIVE_OK)
		r = archive_fail(wa, s, err, "finish tar");
out:
	if (wa)
		archive_write_free(wa);
	if (ra)
		archive_read_free(ra);
	return r;
}

/* Copy in's uncompressed stream to s unchanged. */
static int
copy_stream(struct xin *in, struct sink *s)
{
	for (;;) {
		ssize_t n = xin_next(in);
		int r;

		if (n <= 0)
			return (int) n;
		r = sink_put(s, in->out, (size_t) n);
		if (r < 0)
			return r;
	}
}

int
layer_rewrite(struct cas *cas, const struct digest *src, enum layer_compression comp, int level,
	      int64_t epoch, struct layer_info *ret, struct kiln_err *err)
{
	char path[PATH_MAX], ds[DIGEST_STR_SIZE];
	struct sink *s = NULL;
	struct xin *in = NULL;
	int r;

	r = check_level(comp, level, err);
	if (r < 0)
		return r;
	if (cas_path(cas, src, path, sizeof(path)) < 0)
		return kiln_err_set(err, ENAMETOOLONG, "blob path too long");
	r = xin_open(path, false, &in, err);
	if (r < 0)
		goto out;
	r = sink_open_blob(cas, comp, level, &s, err);
	if (r < 0)
		goto out;
	r = epoch >= 0 ? rewrite_entries(in, s, epoch, err) : copy_stream(in, s);
	if (r == 0)
		r = sink_commit_blob(s, ret, err);
out:
	if (r < 0)
		kiln_err_wrap(err, "rewrite layer %s", digest_fmt(src, ds));
	sink_free(s);
	xin_close(in);
	return r;
}

/* ---- archives of ADD ---- */

/* Is the next header of a readable? Opens path with every compression
 * filter libarchive has and the tar format only, as BuildKit sniffs by
 * content (DecompressStream, then one tar header). */
static struct archive *
archive_open_tar(const char *path, struct archive_entry **ret_e)
{
	struct archive *a = archive_read_new();

	if (!a)
		return NULL;
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, path, 64 * 1024) != ARCHIVE_OK ||
	    archive_read_next_header(a, ret_e) < ARCHIVE_WARN) {
		archive_read_free(a);
		return NULL;
	}
	return a;
}

int
layer_unpack_archive(const char *path, const char *dest, int64_t uid, int64_t gid,
		     struct kiln_err *err)
{
	_cleanup_free_ struct xin *in = calloc(1, sizeof(*in));
	struct xctx x = { .root = -1, .cfd = -1, .err = err, .entry = "" };
	struct archive_entry *e = NULL;
	struct archive *a;
	int r = 0;

	if (!in)
		return kiln_err_set(err, ENOMEM, "out of memory");
	a = archive_open_tar(path, &e);
	if (!a)
		return 1;
	in->fd = -1;
	in->err = err;
	x.root = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (x.root < 0) {
		r = kiln_err_errno(err, errno, "open '%s'", dest);
		goto out;
	}
	for (;;) {
		const char *name = archive_entry_pathname(e);
		const char *base = name ? strrchr(name, '/') : NULL;
		int ar;

		base = base ? base + 1 : name;
		if (base && kiln_startswith(base, WH_PREFIX)) {
			r = kiln_err_set(err, ENOTSUP, "archive entry '%s': whiteout names are not supported",
					 name);
			goto out;
		}
		if (uid >= 0)
			archive_entry_set_uid(e, uid);
		if (gid >= 0)
			archive_entry_set_gid(e, gid);
		r = extract_entry(&x, a, in, e);
		if (r < 0)
			goto out;
		ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = archive_fail(a, NULL, err, "read archive");
			goto out;
		}
	}
	cache_drop(&x);
	x.entry = "";
	apply_dir_times(&x);
out:
	cache_drop(&x);
	if (x.root >= 0)
		(void) close(x.root);
	for (size_t i = 0; i < x.ndirs; i++)
		free(x.dirs[i].path);
	free(x.dirs);
	archive_read_free(a);
	return r;
}
