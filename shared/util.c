/* Small, general filesystem and string helpers shared by every process.
 * Everything here returns 0 or a negative errno and never logs: callers
 * know what the operation meant and wrap the error themselves. Nothing here
 * knows about kiln's data model; anything that does belongs in its module. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

int
kiln_read_file_at(int dfd, const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, cap = 0;
	/* One byte past max lets us tell "exactly max" from "more". */
	size_t limit = max >= SIZE_MAX - 2 ? SIZE_MAX - 2 : max + 1;

	fd = openat(dfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	/* Grow as we read instead of trusting st_size: /proc files and pipes
	 * report 0, and a file may grow while we read it. */
	for (;;) {
		ssize_t n;

		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			char *nbuf;

			if (ncap > limit || ncap < cap)
				ncap = limit;
			if (ncap <= cap)
				return -EFBIG;
			nbuf = realloc(buf, ncap + 1);
			if (!nbuf)
				return -ENOMEM;
			buf = nbuf;
			cap = ncap;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t) n;
		if (len > max)
			return -EFBIG;
	}
	if (!buf) {
		buf = malloc(1);
		if (!buf)
			return -ENOMEM;
	}
	buf[len] = '\0';
	*ret_buf = STEAL_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

int
kiln_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		/* write() returning 0 for a non-zero length means no progress
		 * will ever be made; do not spin. */
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t) n;
	}
	return 0;
}

/* Open the directory holding path (relative to dfd) so that it can be
 * fsync'd after a rename. */
static int
open_parent_dir(int dfd, const char *path)
{
	const char *slash = strrchr(path, '/');
	_cleanup_free_ char *dir = NULL;
	int fd;

	if (!slash)
		return openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (slash == path)
		return openat(dfd, "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	dir = strndup(path, (size_t) (slash - path));
	if (!dir) {
		errno = ENOMEM;
		return -1;
	}
	fd = openat(dfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd;
}

int
kiln_write_file_atomic(int dfd, const char *path, const void *data, size_t len, mode_t mode)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	_cleanup_close_ int dirfd = -1;
	int r;

	/* The temp file is the target name plus a random suffix, which puts
	 * it in the same directory and hence on the same filesystem, so the
	 * final rename is atomic. */
	for (int tries = 0; fd < 0; tries++) {
		uint64_t rnd;

		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = (uint64_t) kiln_now_ms() ^ ((uint64_t) getpid() << 32) ^ (uint64_t) tries;
		free(tmp);
		tmp = kiln_strdupf("%s.tmp.%016llx", path, (unsigned long long) rnd);
		if (!tmp)
			return -ENOMEM;
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
		if (fd < 0 && (errno != EEXIST || tries >= 16))
			return -errno;
	}
	r = kiln_write_all(fd, data, len);
	if (r < 0)
		goto out_unlink;
	if (fsync(fd) < 0) {
		r = -errno;
		goto out_unlink;
	}
	if (renameat(dfd, tmp, dfd, path) < 0) {
		r = -errno;
		goto out_unlink;
	}
	/* Make the rename itself durable. Failing to open the directory is
	 * not a reason to report failure: the data is in place. */
	dirfd = open_parent_dir(dfd, path);
	if (dirfd >= 0 && fsync(dirfd) < 0)
		return -errno;
	return 0;

out_unlink:
	(void) unlinkat(dfd, tmp, 0);
	return r;
}

int
kiln_mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = NULL;
	struct stat st;
	char *s;

	if (!path || !*path)
		return -EINVAL;
	p = strdup(path);
	if (!p)
		return -ENOMEM;
	/* Create each component left to right; a concurrent creator (EEXIST)
	 * is as good as creating it ourselves. Doubled and trailing slashes
	 * are skipped rather than turned into mkdir("") calls. */
	for (s = p;;) {
		char c;

		s += strspn(s, "/");
		if (*s == '\0')
			break;
		s += strcspn(s, "/");
		c = *s;
		*s = '\0';
		if (mkdir(p, mode) < 0) {
			if (errno != EEXIST)
				return -errno;
			if (stat(p, &st) < 0)
				return -errno;
			if (!S_ISDIR(st.st_mode))
				return -ENOTDIR;
		}
		*s = c;
	}
	return 0;
}

/* True when the directory open at fd is on another filesystem than dev or
 * is the root of a mount. The second test catches bind mounts of the same
 * filesystem (a build's bind-mounted cache, say), which st_dev cannot. */
static bool
is_other_mount(int fd, dev_t dev)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_INO, &stx) < 0)
		return true;    /* cannot tell: do not descend */
	if (makedev(stx.stx_dev_major, stx.stx_dev_minor) != dev)
		return true;
#ifdef STATX_ATTR_MOUNT_ROOT
	if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
		return true;
#endif
	return false;
}

/* Remove the contents of the directory open at dfd (taking the fd), which
 * lives on device dev. Mount points below it are left alone and reported
 * as -EXDEV rather than descended into: they are someone else's data. */
static int
rm_rf_children(int dfd, dev_t dev)
{
	_cleanup_closedir_ DIR *d = NULL;
	struct dirent *de;
	int r = 0;

	d = fdopendir(dfd);
	if (!d) {
		r = -errno;
		(void) close(dfd);
		return r;
	}
	while ((errno = 0, de = readdir(d))) {
		struct stat st;
		int q = 0;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT && r == 0)
				r = -errno;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			int cfd;

			/* Checked on the opened fd, so a directory swapped for a
			 * symlink or a mount after the fstatat is still caught. */
			cfd = openat(dirfd(d), de->d_name,
				     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				if (errno != ENOENT && r == 0)
					r = -errno;
				continue;
			}
			if (is_other_mount(cfd, dev)) {
				(void) close(cfd);
				if (r == 0)
					r = -EXDEV;
				continue;
			}
			q = rm_rf_children(cfd, dev);
			if (q == 0 && unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0 &&
			    errno != ENOENT)
				q = -errno;
		} else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
			q = -errno;
		}
		if (q < 0 && r == 0)
			r = q;
	}
	if (errno != 0 && r == 0)
		r = -errno;
	return r;
}

int
kiln_rm_rf(const char *path)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = rm_rf_children(fd, st.st_dev);
	if (r < 0)
		return r;
	if (rmdir(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int64_t
kiln_now_ms(void)
{
	struct timespec ts;

	(void) clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
kiln_source_date_epoch(void)
{
	const char *s = getenv("SOURCE_DATE_EPOCH");
	char *end;
	long long v;

	/* The reproducible-builds spec asks for a plain decimal integer;
	 * anything else (sign, spaces, overflow) is ignored, not guessed at. */
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return -1;
	return v;
}

char *
kiln_strdupf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

bool
kiln_startswith(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

char *
kiln_sibling_exe(const char *name)
{
	char self[PATH_MAX];
	char *slash, *path;
	ssize_t n;

	/* Installed binaries live side by side (bin/kiln-worker next to
	 * bin/kiln-run), so a build tree works without being on $PATH. */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			path = kiln_strdupf("%s/%s", self, name);
			if (!path)
				return NULL;
			if (access(path, X_OK) == 0)
				return path;
			free(path);
		}
	}
	return strdup(name);
}

int
kiln_write_pidfile(const char *path)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());

	return kiln_write_file_atomic(AT_FDCWD, path, buf, (size_t) n, 0644);
}

char *
kiln_path_clean(const char *joined)
{
	char *out = calloc(1, strlen(joined) + 2), *w;
	const char *r;

	if (!out)
		return NULL;
	w = out;
	for (r = joined; *r;) {
		size_t len;

		while (*r == '/')
			r++;
		len = strcspn(r, "/");
		if (len == 0)
			break;
		if (len == 1 && r[0] == '.') {
			/* nothing */
		} else if (len == 2 && r[0] == '.' && r[1] == '.') {
			while (w > out && *--w != '/')
				;
			*w = '\0';
		} else {
			*w++ = '/';
			memcpy(w, r, len);
			w += len;
			*w = '\0';
		}
		r += len;
	}
	if (w == out)
		strcpy(out, "/");
	return out;
}
