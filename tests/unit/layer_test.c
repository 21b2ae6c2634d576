/* Tests for shared/layer.c: deterministic layer blobs from overlay-form
 * trees (gzip, zstd, uncompressed), extraction back into overlay form (whiteouts, opaque directories,
 * hard links, owners, xattrs), refusal of tars that try to escape the
 * destination, and the merged rootfs tar over a stack of trees. Needs root
 * (whiteout devices, trusted.* xattrs, chown); skips otherwise. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <cmocka.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "layer.h"
#include "util.h"

struct fx {
	char dir[64];
	struct cas *cas;
};

/* ---- helpers ---- */

static char *
pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
pathf(const char *fmt, ...)
{
	static char bufs[8][4096];
	static unsigned next;
	char *b = bufs[next++ % 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b, sizeof(bufs[0]), fmt, ap);
	va_end(ap);
	return b;
}

static void
put_file(const char *path, const char *data, mode_t mode, int64_t mtime)
{
	struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, strlen(data)), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(futimens(fd, ts), 0);
	close(fd);
}

static void
put_dir(const char *path, mode_t mode)
{
	assert_int_equal(mkdir(path, mode), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void
set_time(const char *path, int64_t mtime)
{
	struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };

	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void
put_whiteout(const char *path)
{
	assert_int_equal(mknod(path, S_IFCHR | 0, makedev(0, 0)), 0);
}

static void
set_opaque(const char *path)
{
	assert_int_equal(setxattr(path, "trusted.overlay.opaque", "y", 1, 0), 0);
}

/* The sample tree in overlay form. Every name, mode, owner and time is
 * fixed so that two builds of it are the same tree. */
static void
make_tree(const char *root_arg)
{
	char root[4096];

	snprintf(root, sizeof(root), "%s", root_arg);    /* pathf() buffers are reused */
	put_dir(root, 0755);
	put_dir(pathf("%s/etc", root), 0755);
	put_file(pathf("%s/etc/passwd", root), "root:x:0:0:root:/root:/bin/sh\n", 0644, 1000);
	put_file(pathf("%s/etc/attr", root), "with xattrs\n", 0600, 1000);
	assert_int_equal(setxattr(pathf("%s/etc/attr", root), "user.test", "hello", 5, 0), 0);
	assert_int_equal(setxattr(pathf("%s/etc/attr", root), "trusted.overlay.origin", "x", 1, 0),
			 0);
	put_dir(pathf("%s/bin", root), 0755);
	put_file(pathf("%s/bin/tool", root), "#!/bin/sh\necho tool\n", 04755, 50);
	assert_int_equal(chown(pathf("%s/bin/tool", root), 1000, 1000), 0);
	assert_int_equal(chmod(pathf("%s/bin/tool", root), 04755), 0);
	assert_int_equal(link(pathf("%s/bin/tool", root), pathf("%s/bin/tool2", root)), 0);
	assert_int_equal(symlink("tool", pathf("%s/bin/sh", root)), 0);
	set_time(pathf("%s/bin/sh", root), 1000);
	put_dir(pathf("%s/var", root), 0755);
	put_dir(pathf("%s/var/cache", root), 0700);
	put_file(pathf("%s/var/cache/x", root), "x\n", 0644, 1000);
	set_opaque(pathf("%s/var/cache", root));
	put_whiteout(pathf("%s/gone", root));
	set_time(pathf("%s/gone", root), 1000);
	assert_int_equal(mkfifo(pathf("%s/fifo", root), 0640), 0);
	set_time(pathf("%s/fifo", root), 1000);
	/* "a.txt" sorts between "a" and "a/b" bytewise. */
	put_dir(pathf("%s/a", root), 0755);
	put_file(pathf("%s/a/b", root), "b\n", 0644, 1000);
	put_file(pathf("%s/a.txt", root), "a\n", 0644, 1000);
	set_time(pathf("%s/a", root), 2000);
	set_time(pathf("%s/var/cache", root), 2000);
	set_time(pathf("%s/var", root), 2000);
	set_time(pathf("%s/bin", root), 2000);
	set_time(pathf("%s/etc", root), 2000);
	set_time(root, 2000);
}

struct tent {
	char path[256];
	char link[256];         /* symlink or hard link target */
	mode_t mode;
	int64_t uid, gid, mtime, size;
	char xattrs[256];       /* "name=value;" ... */
	char data[64];
};

/* Read a (gzip, zstd or plain) tar into ents; returns the count. */
static size_t
read_tar(const char *path, struct tent *ents, size_t max)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	size_t n = 0;
	int r;

	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_empty(a);
	assert_int_equal(archive_read_open_filename(a, path, 10240), ARCHIVE_OK);
	while ((r = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
		struct tent *t = &ents[n];
		const char *xn;
		const void *xv;
		size_t xs;

		assert_true(r >= ARCHIVE_WARN);
		assert_true(n < max);
		memset(t, 0, sizeof(*t));
		snprintf(t->path, sizeof(t->path), "%s", archive_entry_pathname(e));
		if (archive_entry_symlink(e))
			snprintf(t->link, sizeof(t->link), "%s", archive_entry_symlink(e));
		if (archive_entry_hardlink(e))
			snprintf(t->link, sizeof(t->link), "%s", archive_entry_hardlink(e));
		t->mode = archive_entry_mode(e);
		t->uid = archive_entry_uid(e);
		t->gid = archive_entry_gid(e);
		t->mtime = archive_entry_mtime(e);
		t->size = archive_entry_size(e);
		assert_false(archive_entry_atime_is_set(e));
		assert_false(archive_entry_ctime_is_set(e));
		assert_true(!archive_entry_uname(e) || !*archive_entry_uname(e));
		assert_true(!archive_entry_gname(e) || !*archive_entry_gname(e));
		archive_entry_xattr_reset(e);
		while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
			size_t l = strlen(t->xattrs);

			snprintf(t->xattrs + l, sizeof(t->xattrs) - l, "%s=%.*s;", xn, (int) xs,
				 (const char *) xv);
		}
		if (t->size > 0)
			archive_read_data(a, t->data, sizeof(t->data) - 1);
		n++;
	}
	archive_read_free(a);
	return n;
}

static const struct tent *
find(const struct tent *ents, size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ents[i].path, path) == 0)
			return &ents[i];
	return NULL;
}

static const char *
blob_path(struct fx *f, const struct digest *d)
{
	static char buf[4096];

	assert_int_equal(cas_path(f->cas, d, buf, sizeof(buf)), 0);
	return buf;
}

/* The sample tree at DIR/t1, made by the first test that wants it. */
static const char *
tree(struct fx *f)
{
	const char *t1 = pathf("%s/t1", f->dir);
	struct stat st;

	if (lstat(t1, &st) < 0)
		make_tree(t1);
	return pathf("%s/t1", f->dir);
}

/* ---- fixtures ---- */

static int
setup(void **state)
{
	struct kiln_err err = { 0 };
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-layer-test-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	if (cas_open(pathf("%s/cas", f->dir), &f->cas, &err) < 0) {
		fprintf(stderr, "cas_open: %s\n", err.msg);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	cas_free(f->cas);
	(void) kiln_rm_rf(f->dir);
	free(f);
	return 0;
}

static void
need_root(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "skipped: needs root for whiteout devices and trusted xattrs\n");
		skip();
	}
}

/* ---- tests ---- */

static void
layer_is_deterministic(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info a, b, c;
	struct cas_info info;
	char da[DIGEST_STR_SIZE], db[DIGEST_STR_SIZE];

	need_root();
	assert_int_equal(layer_from_dir(f->cas, tree(f), &a, &err), 0);
	assert_int_equal(layer_from_dir(f->cas, tree(f), &b, &err), 0);
	assert_true(digest_equal(&a.digest, &b.digest));
	assert_true(digest_equal(&a.diff_id, &b.diff_id));
	assert_int_equal(a.size, b.size);
	/* The same tree built again (other inodes, other creation times). */
	make_tree(pathf("%s/t2", f->dir));
	assert_int_equal(layer_from_dir(f->cas, pathf("%s/t2", f->dir), &c, &err), 0);
	assert_string_equal(digest_fmt(&a.digest, da), digest_fmt(&c.digest, db));
	assert_true(digest_equal(&a.diff_id, &c.diff_id));
	assert_int_equal(cas_stat(f->cas, &a.digest, &info, &err), 0);
	assert_int_equal(info.size, a.size);
	assert_string_equal(info.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
	/* diff_id is the sha256 of the uncompressed tar. */
	{
		struct digest d;
		struct tent ents[64];
		size_t n = read_tar(blob_path(f, &a.digest), ents, 64);

		assert_true(n > 0);
		assert_int_equal(layer_extract(blob_path(f, &a.digest),
					       pathf("%s/x-diffid", f->dir), &d, &err), 0);
		assert_true(digest_equal(&d, &a.diff_id));
	}
	(void) kiln_rm_rf(pathf("%s/t2", f->dir));
	(void) kiln_rm_rf(pathf("%s/x-diffid", f->dir));
}

static void
layer_tar_contents(void **state)
{
	static const char *order[] = {
		"a/", "a.txt", "a/b", "bin/", "bin/sh", "bin/tool", "bin/tool2", "etc/",
		"etc/attr", "etc/passwd", "fifo", ".wh.gone", "var/", "var/cache/",
		"var/cache/.wh..wh..opq", "var/cache/x",
	};
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info li;
	struct tent ents[64];
	const struct tent *t;
	unsigned char hdr[10];
	size_t n;
	int fd;

	need_root();
	assert_int_equal(layer_from_dir(f->cas, tree(f), &li, &err), 0);
	n = read_tar(blob_path(f, &li.digest), ents, 64);
	assert_int_equal(n, 16);
	/* Sorted bytewise by path, ignoring the '/' libarchive puts after
	 * directory names (so "a.txt" comes between "a" and "a/b"). */
	for (size_t i = 0; i + 1 < n; i++) {
		char p[sizeof(ents[0].path)], q[sizeof(ents[0].path)];

		memcpy(p, ents[i].path, sizeof(p));
		memcpy(q, ents[i + 1].path, sizeof(q));
		if (p[strlen(p) - 1] == '/')
			p[strlen(p) - 1] = '\0';
		if (q[strlen(q) - 1] == '/')
			q[strlen(q) - 1] = '\0';
		assert_true(strcmp(p, q) < 0);
	}
	for (size_t i = 0; i < 16; i++)
		assert_non_null(find(ents, n, order[i]));
	t = find(ents, n, ".wh.gone");
	assert_true(S_ISREG(t->mode));
	assert_int_equal(t->size, 0);
	t = find(ents, n, "var/cache/.wh..wh..opq");
	assert_true(S_ISREG(t->mode));
	t = find(ents, n, "var/cache/");
	assert_string_equal(t->xattrs, "");     /* no trusted.overlay.* */
	assert_int_equal(t->mode & 07777, 0700);
	t = find(ents, n, "etc/attr");
	assert_string_equal(t->xattrs, "user.test=hello;");
	t = find(ents, n, "bin/tool");
	assert_int_equal(t->uid, 1000);
	assert_int_equal(t->gid, 1000);
	assert_int_equal(t->mode & 07777, 04755);
	assert_string_equal(t->data, "#!/bin/sh\necho tool\n");
	t = find(ents, n, "bin/tool2");
	assert_string_equal(t->link, "bin/tool");       /* hard link to the first name */
	assert_int_equal(t->size, 0);
	t = find(ents, n, "bin/sh");
	assert_true(S_ISLNK(t->mode));
	assert_string_equal(t->link, "tool");
	t = find(ents, n, "fifo");
	assert_true(S_ISFIFO(t->mode));
	/* gzip header: no name, mtime 0, OS Unix. */
	fd = open(blob_path(f, &li.digest), O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, hdr, sizeof(hdr)), sizeof(hdr));
	close(fd);
	assert_int_equal(hdr[0], 0x1f);
	assert_int_equal(hdr[1], 0x8b);
	assert_int_equal(hdr[3], 0);                    /* flags: no name */
	assert_int_equal(hdr[4] | hdr[5] | hdr[6] | hdr[7], 0);
	assert_int_equal(hdr[9], 3);
}

/* A layer keeps the tree's file times: clamping them is the exporter's
 * business (layer_rewrite). */
static void
layer_keeps_times(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info li;
	struct tent ents[64];
	size_t n;

	need_root();
	assert_int_equal(layer_from_dir(f->cas, tree(f), &li, &err), 0);
	n = read_tar(blob_path(f, &li.digest), ents, 64);
	assert_int_equal(find(ents, n, "etc/passwd")->mtime, 1000);
	assert_int_equal(find(ents, n, "etc/")->mtime, 2000);
	assert_int_equal(find(ents, n, "bin/tool")->mtime, 50);
}

static void
layer_extract_round_trips(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info li, again;
	struct digest diff_id;
	struct stat st, st2;
	char dest[4096];
	char buf[64];
	ssize_t n;

	need_root();
	snprintf(dest, sizeof(dest), "%s/rt", f->dir);
	assert_int_equal(layer_from_dir(f->cas, tree(f), &li, &err), 0);
	assert_int_equal(layer_extract(blob_path(f, &li.digest), dest, &diff_id, &err), 0);
	assert_true(digest_equal(&diff_id, &li.diff_id));
	/* Whiteout back to a 0/0 char device, opaque back to the xattr. */
	assert_int_equal(lstat(pathf("%s/gone", dest), &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_rdev, makedev(0, 0));
	assert_int_equal(lstat(pathf("%s/.wh.gone", dest), &st), -1);
	n = getxattr(pathf("%s/var/cache", dest), "trusted.overlay.opaque", buf, sizeof(buf));
	assert_int_equal(n, 1);
	assert_int_equal(buf[0], 'y');
	assert_int_equal(lstat(pathf("%s/var/cache/.wh..wh..opq", dest), &st), -1);
	/* Hard link, owner, set-id mode, symlink, xattrs, times. */
	assert_int_equal(lstat(pathf("%s/bin/tool", dest), &st), 0);
	assert_int_equal(lstat(pathf("%s/bin/tool2", dest), &st2), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_gid, 1000);
	assert_int_equal(st.st_mode & 07777, 04755);
	assert_int_equal(st.st_mtime, 50);
	n = readlink(pathf("%s/bin/sh", dest), buf, sizeof(buf));
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "tool", 4);
	n = getxattr(pathf("%s/etc/attr", dest), "user.test", buf, sizeof(buf));
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(getxattr(pathf("%s/etc/attr", dest), "trusted.overlay.origin", buf,
				  sizeof(buf)), -1);
	assert_int_equal(lstat(pathf("%s/var", dest), &st), 0);
	assert_int_equal(st.st_mtime, 2000);    /* directory times set after children */
	assert_int_equal(lstat(pathf("%s/fifo", dest), &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(lstat(dest, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	/* Extracted tree is the same layer again. */
	assert_int_equal(layer_from_dir(f->cas, dest, &again, &err), 0);
	assert_true(digest_equal(&again.digest, &li.digest));
	/* dest must not exist. */
	assert_int_equal(layer_extract(blob_path(f, &li.digest), dest, NULL, &err), -EEXIST);
}

static void
layer_empty_dir_returns_1(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info li;

	assert_int_equal(mkdir(pathf("%s/empty", f->dir), 0755), 0);
	assert_int_equal(layer_from_dir(f->cas, pathf("%s/empty", f->dir), &li, &err), 1);
}

static void
read_head(const char *path, unsigned char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, n), (ssize_t) n);
	close(fd);
}

/* zstd and uncompressed layers: deterministic, the same diff_id as gzip,
 * readable by libarchive, extracted back to a tree that gives the same
 * layers again. */
static void
layer_compressions_round_trip(void **state)
{
	static const enum layer_compression comps[] = { LAYER_ZSTD, LAYER_NONE };
	static const char *const mts[] = { "application/vnd.oci.image.layer.v1.tar+zstd",
					   "application/vnd.oci.image.layer.v1.tar" };
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info gz;
	struct tent gz_ents[64], ents[64];
	size_t gz_n;

	need_root();
	assert_int_equal(layer_from_dir(f->cas, tree(f), &gz, &err), 0);
	gz_n = read_tar(blob_path(f, &gz.digest), gz_ents, 64);
	for (size_t i = 0; i < 2; i++) {
		struct layer_info a, b, again, back;
		struct cas_info info;
		struct digest d;
		unsigned char head[4];
		const char *dest = pathf("%s/rt-%zu", f->dir, i);
		size_t n;

		assert_int_equal(layer_make(f->cas, tree(f), comps[i], LAYER_LEVEL_DEFAULT, &a, &err), 0);
		assert_int_equal(layer_make(f->cas, tree(f), comps[i], LAYER_LEVEL_DEFAULT, &b, &err), 0);
		assert_true(digest_equal(&a.digest, &b.digest));
		assert_int_equal(a.size, b.size);
		assert_false(digest_equal(&a.digest, &gz.digest));
		/* The diff_id does not depend on the compression. */
		assert_true(digest_equal(&a.diff_id, &gz.diff_id));
		assert_int_equal(cas_stat(f->cas, &a.digest, &info, &err), 0);
		assert_string_equal(info.media_type, mts[i]);
		read_head(blob_path(f, &a.digest), head, sizeof(head));
		if (comps[i] == LAYER_ZSTD) {
			assert_memory_equal(head, "\x28\xb5\x2f\xfd", 4);
		} else {
			/* A plain tar is its own diff_id. */
			assert_true(digest_equal(&a.digest, &a.diff_id));
		}
		/* libarchive sees the same entries as in the gzip layer. */
		n = read_tar(blob_path(f, &a.digest), ents, 64);
		assert_int_equal(n, gz_n);
		for (size_t k = 0; k < n; k++) {
			assert_string_equal(ents[k].path, gz_ents[k].path);
			assert_int_equal(ents[k].size, gz_ents[k].size);
		}
		/* Extraction sniffs the format and checks the diff_id. */
		assert_int_equal(layer_extract(blob_path(f, &a.digest), dest, &d, &err), 0);
		assert_true(digest_equal(&d, &gz.diff_id));
		assert_int_equal(layer_from_dir(f->cas, dest, &again, &err), 0);
		assert_true(digest_equal(&again.digest, &gz.digest));
		assert_int_equal(layer_make(f->cas, dest, comps[i], LAYER_LEVEL_DEFAULT, &back, &err), 0);
		assert_true(digest_equal(&back.digest, &a.digest));
		(void) kiln_rm_rf(dest);
	}
}

static void
layer_levels(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info d3, z3, z19, g9, g1;

	need_root();
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_ZSTD, LAYER_LEVEL_DEFAULT, &d3, &err), 0);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_ZSTD, 3, &z3, &err), 0);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_ZSTD, 19, &z19, &err), 0);
	assert_true(digest_equal(&d3.digest, &z3.digest));
	assert_true(digest_equal(&z3.diff_id, &z19.diff_id));
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_GZIP, LAYER_LEVEL_DEFAULT, &g1, &err), 0);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_GZIP, 9, &g9, &err), 0);
	assert_true(digest_equal(&g1.diff_id, &g9.diff_id));
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_GZIP, 10, &g9, &err), -EINVAL);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_ZSTD, 23, &g9, &err), -EINVAL);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_NONE, 1, &g9, &err), -EINVAL);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_GZIP, -2, &g9, &err), -EINVAL);
}

/* A zstd blob cut short or corrupted fails extraction and leaves nothing. */
static void
layer_extract_bad_zstd(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info z;
	struct stat st;
	const char *cut = pathf("%s/cut.zst", f->dir);
	char src[4096];
	_cleanup_free_ char *data = NULL;
	size_t len;
	int fd;

	need_root();
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_ZSTD, LAYER_LEVEL_DEFAULT, &z, &err), 0);
	snprintf(src, sizeof(src), "%s", blob_path(f, &z.digest));
	assert_int_equal(kiln_read_file_at(AT_FDCWD, src, 1 << 20, &data, &len), 0);
	assert_true(len > 8);
	fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len - 3), (ssize_t) (len - 3));
	close(fd);
	assert_int_equal(layer_extract(cut, pathf("%s/x-cut", f->dir), NULL, &err), -EBADMSG);
	assert_int_equal(lstat(pathf("%s/x-cut", f->dir), &st), -1);
	/* A flipped bit in the last byte: the frame checksum catches it. */
	data[len - 1] ^= 1;
	fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t) len);
	close(fd);
	assert_int_equal(layer_extract(cut, pathf("%s/x-cut", f->dir), NULL, &err), -EBADMSG);
	assert_int_equal(lstat(pathf("%s/x-cut", f->dir), &st), -1);
}

static void
layer_compression_names(void **state)
{
	enum layer_compression c;

	(void) state;
	assert_int_equal(layer_compression_parse("zstd", &c), 0);
	assert_int_equal(c, LAYER_ZSTD);
	assert_int_equal(layer_compression_parse("uncompressed", &c), 0);
	assert_int_equal(c, LAYER_NONE);
	assert_int_equal(layer_compression_parse("gzip", &c), 0);
	assert_int_equal(c, LAYER_GZIP);
	assert_int_equal(layer_compression_parse("estargz", &c), -EINVAL);
	assert_string_equal(layer_compression_name(LAYER_NONE), "uncompressed");
	assert_string_equal(layer_compression_media_type(LAYER_GZIP, false),
			    "application/vnd.docker.image.rootfs.diff.tar.gzip");
	assert_string_equal(layer_compression_media_type(LAYER_NONE, false),
			    "application/vnd.docker.image.rootfs.diff.tar");
	assert_string_equal(layer_compression_media_type(LAYER_ZSTD, false),
			    "application/vnd.docker.image.rootfs.diff.tar.zstd");
	assert_int_equal(layer_compression_from_media_type("application/vnd.docker.image.rootfs.diff.tar.zstd",
							   &c), 0);
	assert_int_equal(c, LAYER_ZSTD);
	assert_int_equal(layer_compression_from_media_type("application/vnd.oci.image.layer.v1.tar", &c), 0);
	assert_int_equal(c, LAYER_NONE);
	assert_int_equal(layer_compression_from_media_type(
				 "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", &c), -EINVAL);
	assert_true(layer_level_valid(LAYER_NONE, LAYER_LEVEL_DEFAULT));
	assert_false(layer_level_valid(LAYER_GZIP, 10));
	assert_true(layer_level_valid(LAYER_ZSTD, 22));
}

/* One hostile tar entry: type, name, link target (symlink or hard link). */
struct hent {
	mode_t type;
	const char *path;
	const char *link;
	bool hard;
};

static void
write_hostile(const char *path, const struct hent *hs, size_t n, bool gz)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();

	archive_write_set_format_pax_restricted(a);
	if (gz)
		archive_write_add_filter_gzip(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		archive_entry_clear(e);
		archive_entry_copy_pathname(e, hs[i].path);
		archive_entry_set_mode(e, hs[i].type | 0644);
		if (hs[i].hard)
			archive_entry_copy_hardlink(e, hs[i].link);
		else if (hs[i].link)
			archive_entry_copy_symlink(e, hs[i].link);
		archive_entry_set_size(e, hs[i].type == AE_IFREG && !hs[i].hard ? 4 : 0);
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (hs[i].type == AE_IFREG && !hs[i].hard)
			assert_int_equal(archive_write_data(a, "evil", 4), 4);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	archive_entry_free(e);
}

/* Nothing but the tar and (for the symlink cases) the target dir may be
 * left in the case's directory: no dest, no dest.tmp-*. */
static void
assert_clean(const char *dir, const char *keep1, const char *keep2)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strcmp(de->d_name, keep1) == 0 || (keep2 && strcmp(de->d_name, keep2) == 0))
			continue;
		fail_msg("left behind: %s/%s", dir, de->d_name);
	}
	closedir(d);
}

static void
hostile_case(struct fx *f, const char *name, const struct hent *hs, size_t n, bool gz,
	     const char *want_entry)
{
	const char *cdir = pathf("%s/%s", f->dir, name);
	const char *inner = pathf("%s/inner", cdir);
	const char *tar = pathf("%s/layer.tar", cdir);
	const char *dest = pathf("%s/dest", inner);
	struct kiln_err err = { 0 };
	struct stat st;
	char cdir_copy[4096], inner_copy[4096];

	snprintf(cdir_copy, sizeof(cdir_copy), "%s", cdir);
	snprintf(inner_copy, sizeof(inner_copy), "%s", inner);
	assert_int_equal(mkdir(cdir_copy, 0755), 0);
	assert_int_equal(mkdir(inner_copy, 0755), 0);
	write_hostile(tar, hs, n, gz);
	assert_int_equal(layer_extract(tar, dest, NULL, &err), -EPERM);
	assert_int_equal(err.code, EPERM);
	if (!strstr(err.msg, want_entry))
		fail_msg("message does not name '%s': %s", want_entry, err.msg);
	assert_int_equal(lstat(pathf("%s/dest", inner_copy), &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_clean(inner_copy, "\x01", NULL);          /* nothing at all */
	assert_clean(cdir_copy, "layer.tar", "inner");  /* no "evil" next to dest's parent */
	assert_int_equal(lstat(pathf("%s/evil", cdir_copy), &st), -1);
}

static void
layer_extract_refuses_escapes(void **state)
{
	struct fx *f = *state;
	char outside[4096], abs_name[256], abs_evil[4096];
	struct stat st;

	need_root();
	snprintf(outside, sizeof(outside), "%s/outside", f->dir);
	assert_int_equal(mkdir(outside, 0755), 0);
	snprintf(abs_name, sizeof(abs_name), "/kiln-layer-test-abs-%d", (int) getpid());
	{
		const struct hent hs[] = { { AE_IFREG, "ok", NULL, false },
					   { AE_IFREG, "../evil", NULL, false } };

		hostile_case(f, "dotdot", hs, 2, false, "../evil");
	}
	{
		const struct hent hs[] = { { AE_IFREG, "a/../../evil", NULL, false } };

		hostile_case(f, "dotdot-mid", hs, 1, true, "a/../../evil");
	}
	{
		const struct hent hs[] = { { AE_IFREG, abs_name, NULL, false } };

		hostile_case(f, "absolute", hs, 1, false, abs_name);
		assert_int_equal(lstat(abs_name, &st), -1);
	}
	snprintf(abs_evil, sizeof(abs_evil), ".//%s", abs_name + 1);
	{
		const struct hent hs[] = { { AE_IFREG, abs_evil, NULL, false } };

		hostile_case(f, "absolute-dot", hs, 1, false, abs_evil);
		assert_int_equal(lstat(abs_name, &st), -1);
	}
	{
		const struct hent hs[] = { { AE_IFLNK, "link", outside, false },
					   { AE_IFREG, "link/evil", NULL, false } };

		hostile_case(f, "symlink-abs", hs, 2, true, "link/evil");
		assert_int_equal(lstat(pathf("%s/evil", outside), &st), -1);
	}
	{
		const struct hent hs[] = { { AE_IFLNK, "up", "..", false },
					   { AE_IFREG, "up/evil", NULL, false } };

		hostile_case(f, "symlink-dotdot", hs, 2, false, "up/evil");
	}
	{
		/* Through a symlink deeper down, with a directory over it later. */
		const struct hent hs[] = { { AE_IFDIR, "d", NULL, false },
					   { AE_IFLNK, "d/l", outside, false },
					   { AE_IFREG, "d/l/x/evil", NULL, false } };

		hostile_case(f, "symlink-deep", hs, 3, false, "d/l/x/evil");
		assert_int_equal(lstat(pathf("%s/x", outside), &st), -1);
	}
	{
		/* A directory replaced by a symlink, then written through. */
		const struct hent hs[] = { { AE_IFDIR, "s", NULL, false },
					   { AE_IFREG, "s/t", NULL, false },
					   { AE_IFLNK, "s", outside, false },
					   { AE_IFREG, "s/evil", NULL, false } };

		hostile_case(f, "symlink-replaces-dir", hs, 4, false, "s/evil");
		assert_int_equal(lstat(pathf("%s/evil", outside), &st), -1);
	}
	{
		const struct hent hs[] = { { AE_IFREG, "h", "../outside/f", true } };

		hostile_case(f, "hardlink-dotdot", hs, 1, false, "'h'");
	}
	{
		const struct hent hs[] = { { AE_IFLNK, "l", outside, false },
					   { AE_IFREG, "h", "l/f", true } };

		hostile_case(f, "hardlink-symlink", hs, 2, false, "'h'");
	}
	{
		const struct hent hs[] = { { AE_IFREG, "sub/.wh...", NULL, false } };

		hostile_case(f, "whiteout-dotdot", hs, 1, false, "sub/.wh...");
	}
	assert_clean(outside, "\x01", NULL);
}

/* Later entries of the same name win; a directory over a directory merges. */
static void
layer_extract_later_entries_win(void **state)
{
	const struct hent hs[] = {
		{ AE_IFDIR, "a", NULL, false },
		{ AE_IFREG, "a/b/c", NULL, false },
		{ AE_IFREG, "a/b", NULL, false },       /* file replaces directory */
		{ AE_IFREG, "a/b2/x", NULL, false },
		{ AE_IFREG, "d/e/f", NULL, false },
		{ AE_IFREG, "d/.wh.e", NULL, false },   /* whiteout replaces directory */
		{ AE_IFREG, "x/y/z", NULL, false },
		{ AE_IFREG, "x", NULL, false },
		{ AE_IFREG, "m/1", NULL, false },
		{ AE_IFDIR, "m", NULL, false },         /* merges, keeps m/1 */
		{ AE_IFREG, "./m/./2", NULL, false },
		{ AE_IFREG, "l", NULL, false },
		{ AE_IFREG, "hl", "./l", true },
	};
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	char tar[4096], dest[4096];
	struct stat st, st2;

	need_root();
	snprintf(tar, sizeof(tar), "%s/later.tar", f->dir);
	snprintf(dest, sizeof(dest), "%s/later", f->dir);
	write_hostile(tar, hs, sizeof(hs) / sizeof(hs[0]), true);
	if (layer_extract(tar, dest, NULL, &err) < 0)
		fail_msg("extract: %s", err.msg);
	assert_int_equal(lstat(pathf("%s/a/b", dest), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 4);
	assert_int_equal(lstat(pathf("%s/a/b2/x", dest), &st), 0);
	assert_int_equal(lstat(pathf("%s/d/e", dest), &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(lstat(pathf("%s/x", dest), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(lstat(pathf("%s/m/1", dest), &st), 0);
	assert_int_equal(lstat(pathf("%s/m/2", dest), &st), 0);
	assert_int_equal(lstat(pathf("%s/l", dest), &st), 0);
	assert_int_equal(lstat(pathf("%s/hl", dest), &st2), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
}

static void
rootfs_tar_honours_whiteouts(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	const char *lower = pathf("%s/lower", f->dir), *upper = pathf("%s/upper", f->dir);
	const char *out = pathf("%s/rootfs.tar", f->dir);
	const char *stack[2];
	char lower_c[4096], upper_c[4096], out_c[4096];
	struct tent ents[64];
	const struct tent *t;
	size_t n;
	int fd;

	need_root();
	snprintf(lower_c, sizeof(lower_c), "%s", lower);
	snprintf(upper_c, sizeof(upper_c), "%s", upper);
	snprintf(out_c, sizeof(out_c), "%s", out);
	put_dir(lower_c, 0755);
	put_dir(pathf("%s/etc", lower_c), 0755);
	put_file(pathf("%s/etc/passwd", lower_c), "old\n", 0644, 1000);
	put_file(pathf("%s/etc/group", lower_c), "group\n", 0644, 1000);
	put_dir(pathf("%s/data", lower_c), 0755);
	put_file(pathf("%s/data/a", lower_c), "a\n", 0644, 1000);
	put_dir(pathf("%s/data/deep", lower_c), 0755);
	put_dir(pathf("%s/keep", lower_c), 0755);
	put_file(pathf("%s/keep/x", lower_c), "x\n", 0644, 1000);
	put_file(pathf("%s/file-then-dir", lower_c), "f\n", 0644, 1000);
	put_dir(upper_c, 0755);
	put_dir(pathf("%s/etc", upper_c), 0750);
	put_file(pathf("%s/etc/passwd", upper_c), "new\n", 0644, 1000);
	put_whiteout(pathf("%s/etc/group", upper_c));
	put_dir(pathf("%s/data", upper_c), 0755);
	set_opaque(pathf("%s/data", upper_c));
	put_file(pathf("%s/data/c", upper_c), "c\n", 0644, 1000);
	put_file(pathf("%s/new", upper_c), "n\n", 0644, 1000);
	put_dir(pathf("%s/file-then-dir", upper_c), 0755);
	put_file(pathf("%s/file-then-dir/y", upper_c), "y\n", 0644, 1000);

	stack[0] = upper_c;
	stack[1] = lower_c;
	fd = open(out_c, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(layer_write_rootfs_tar(stack, 2, fd, 500, &err), 0);
	close(fd);
	n = read_tar(out_c, ents, 64);
	assert_int_equal(n, 9);
	assert_non_null(find(ents, n, "etc/"));
	assert_int_equal(find(ents, n, "etc/")->mode & 07777, 0750);    /* upper's metadata */
	t = find(ents, n, "etc/passwd");
	assert_string_equal(t->data, "new\n");
	assert_int_equal(t->mtime, 500);
	assert_null(find(ents, n, "etc/group"));
	assert_non_null(find(ents, n, "data/"));
	assert_non_null(find(ents, n, "data/c"));
	assert_null(find(ents, n, "data/a"));           /* opaque hides the lower dir */
	assert_null(find(ents, n, "data/deep/"));
	assert_non_null(find(ents, n, "keep/"));
	assert_non_null(find(ents, n, "keep/x"));
	assert_non_null(find(ents, n, "new"));
	assert_non_null(find(ents, n, "file-then-dir/"));
	assert_non_null(find(ents, n, "file-then-dir/y"));
	for (size_t i = 0; i < n; i++)
		assert_null(strstr(ents[i].path, ".wh."));
	/* And one layer alone is just that tree with whiteouts dropped. */
	fd = open(out_c, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_int_equal(layer_write_rootfs_tar(stack, 1, fd, -1, &err), 0);
	close(fd);
	n = read_tar(out_c, ents, 64);
	assert_int_equal(n, 7);
	assert_null(find(ents, n, "etc/group"));
}

static int
clamp_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	struct timespec ts[2] = { { 100, 0 }, { 100, 0 } };

	(void) flag;
	(void) ftw;
	if (st->st_mtime > 100 && utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	return 0;
}

/* rewrite-timestamp: a stored layer rewritten with epoch 100 is, byte for
 * byte, the layer of the same tree whose later times were set to 100, in
 * every compression; older times stay, and a second rewrite changes
 * nothing. */
static void
layer_rewrite_clamps_like_the_tree(void **state)
{
	static const enum layer_compression comps[] = { LAYER_GZIP, LAYER_ZSTD, LAYER_NONE };
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	const char *t3 = pathf("%s/t3", f->dir);
	char t3c[4096];

	need_root();
	snprintf(t3c, sizeof(t3c), "%s", t3);
	make_tree(t3c);
	assert_int_equal(nftw(t3c, clamp_one, 16, FTW_PHYS | FTW_DEPTH), 0);
	for (size_t i = 0; i < 3; i++) {
		struct layer_info li, rw, want, again;
		struct cas_info info;
		struct tent ents[64];
		size_t n;

		assert_int_equal(layer_make(f->cas, tree(f), comps[i], LAYER_LEVEL_DEFAULT, &li, &err), 0);
		assert_int_equal(layer_make(f->cas, t3c, comps[i], LAYER_LEVEL_DEFAULT, &want, &err), 0);
		assert_int_equal(layer_rewrite(f->cas, &li.digest, comps[i], LAYER_LEVEL_DEFAULT, 100, &rw,
					       &err), 0);
		assert_false(digest_equal(&rw.diff_id, &li.diff_id));
		assert_true(digest_equal(&rw.diff_id, &want.diff_id));
		assert_true(digest_equal(&rw.digest, &want.digest));
		assert_int_equal(rw.size, want.size);
		assert_int_equal(cas_stat(f->cas, &rw.digest, &info, &err), 0);
		assert_string_equal(info.media_type, layer_compression_media_type(comps[i], true));
		n = read_tar(blob_path(f, &rw.digest), ents, 64);
		assert_int_equal(n, 16);
		for (size_t k = 0; k < n; k++)
			assert_true(ents[k].mtime <= 100);
		assert_int_equal(find(ents, n, "bin/tool")->mtime, 50);
		assert_int_equal(find(ents, n, "etc/passwd")->mtime, 100);
		assert_string_equal(find(ents, n, "etc/attr")->xattrs, "user.test=hello;");
		assert_string_equal(find(ents, n, "bin/tool2")->link, "bin/tool");
		assert_int_equal(layer_rewrite(f->cas, &rw.digest, comps[i], LAYER_LEVEL_DEFAULT, 100,
					       &again, &err), 0);
		assert_true(digest_equal(&again.digest, &rw.digest));
	}
	(void) kiln_rm_rf(t3c);
}

/* force-compression: without an epoch the tar is kept byte for byte, so
 * the diff_id stays and the blob is the one layer_make writes in the
 * target compression; a tar kiln did not write keeps its diff_id too. */
static void
layer_rewrite_recompresses(void **state)
{
	static const struct hent foreign[] = {
		{ AE_IFDIR, "dir", NULL, false },
		{ AE_IFREG, "dir/file", NULL, false },
		{ AE_IFLNK, "dir/link", "file", false },
	};
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info gz, zs, none, z9, back, made, fz, fn;
	struct digest d;
	const char *ftar = pathf("%s/foreign.tar.gz", f->dir);
	char ftar_copy[4096];

	need_root();
	assert_int_equal(layer_from_dir(f->cas, tree(f), &gz, &err), 0);
	assert_int_equal(layer_rewrite(f->cas, &gz.digest, LAYER_ZSTD, LAYER_LEVEL_DEFAULT, -1, &zs, &err), 0);
	assert_int_equal(layer_make(f->cas, tree(f), LAYER_ZSTD, LAYER_LEVEL_DEFAULT, &made, &err), 0);
	assert_true(digest_equal(&zs.diff_id, &gz.diff_id));
	assert_true(digest_equal(&zs.digest, &made.digest));
	assert_int_equal(layer_rewrite(f->cas, &zs.digest, LAYER_NONE, LAYER_LEVEL_DEFAULT, -1, &none, &err), 0);
	assert_true(digest_equal(&none.digest, &gz.diff_id));   /* a plain tar is its diff_id */
	assert_int_equal(layer_rewrite(f->cas, &none.digest, LAYER_GZIP, LAYER_LEVEL_DEFAULT, -1, &back,
				       &err), 0);
	assert_true(digest_equal(&back.digest, &gz.digest));
	assert_int_equal(layer_rewrite(f->cas, &gz.digest, LAYER_ZSTD, 9, -1, &z9, &err), 0);
	assert_false(digest_equal(&z9.digest, &zs.digest));
	assert_true(digest_equal(&z9.diff_id, &gz.diff_id));
	assert_int_equal(layer_rewrite(f->cas, &gz.digest, LAYER_GZIP, 10, -1, &z9, &err), -EINVAL);

	/* A gzip tar written by someone else (libarchive's own gzip). */
	snprintf(ftar_copy, sizeof(ftar_copy), "%s", ftar);
	write_hostile(ftar_copy, foreign, 3, true);
	assert_int_equal(cas_put_file(f->cas, ftar_copy, NULL, NULL, &d, &err), 0);
	assert_int_equal(layer_rewrite(f->cas, &d, LAYER_ZSTD, LAYER_LEVEL_DEFAULT, -1, &fz, &err), 0);
	assert_int_equal(layer_rewrite(f->cas, &fz.digest, LAYER_NONE, LAYER_LEVEL_DEFAULT, -1, &fn, &err), 0);
	assert_true(digest_equal(&fn.digest, &fz.diff_id));
	{
		struct digest x;

		assert_int_equal(layer_extract(ftar_copy, pathf("%s/x-foreign", f->dir), &x, &err), 0);
		assert_true(digest_equal(&x, &fz.diff_id));
		(void) kiln_rm_rf(pathf("%s/x-foreign", f->dir));
	}
}

/* A blob that is not a whole layer fails with a message naming it, and a
 * missing one with -ENOENT. */
static void
layer_rewrite_refuses_bad_blobs(void **state)
{
	struct fx *f = *state;
	struct kiln_err err = { 0 };
	struct layer_info gz, out;
	struct digest cut, missing;
	_cleanup_free_ char *data = NULL;
	char ds[DIGEST_STR_SIZE];
	size_t len;

	need_root();
	assert_int_equal(layer_from_dir(f->cas, tree(f), &gz, &err), 0);
	assert_int_equal(kiln_read_file_at(AT_FDCWD, blob_path(f, &gz.digest), 1 << 20, &data, &len), 0);
	assert_int_equal(cas_put(f->cas, data, len - 5, NULL, NULL, &cut, &err), 0);
	assert_int_equal(layer_rewrite(f->cas, &cut, LAYER_ZSTD, LAYER_LEVEL_DEFAULT, -1, &out, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.msg, digest_fmt(&cut, ds)));
	assert_int_equal(layer_rewrite(f->cas, &cut, LAYER_ZSTD, LAYER_LEVEL_DEFAULT, 100, &out, &err),
			 -EBADMSG);
	digest_buf("nothing", 7, &missing);
	assert_int_equal(layer_rewrite(f->cas, &missing, LAYER_GZIP, LAYER_LEVEL_DEFAULT, -1, &out, &err),
			 -ENOENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(layer_is_deterministic),
		cmocka_unit_test(layer_tar_contents),
		cmocka_unit_test(layer_keeps_times),
		cmocka_unit_test(layer_extract_round_trips),
		cmocka_unit_test(layer_empty_dir_returns_1),
		cmocka_unit_test(layer_compressions_round_trip),
		cmocka_unit_test(layer_levels),
		cmocka_unit_test(layer_extract_bad_zstd),
		cmocka_unit_test(layer_compression_names),
		cmocka_unit_test(layer_extract_refuses_escapes),
		cmocka_unit_test(layer_extract_later_entries_win),
		cmocka_unit_test(rootfs_tar_honours_whiteouts),
		cmocka_unit_test(layer_rewrite_clamps_like_the_tree),
		cmocka_unit_test(layer_rewrite_recompresses),
		cmocka_unit_test(layer_rewrite_refuses_bad_blobs),
	};

	return cmocka_run_group_tests_name("layer", tests, setup, teardown);
}
