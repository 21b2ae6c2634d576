/* Small filesystem and string helpers used by every process. */
#ifndef KILN_UTIL_H
#define KILN_UTIL_H

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct kiln_err;

/* Read at most max bytes of (dfd, path) into a NUL-terminated malloc'd
 * buffer. A file larger than max fails with -EFBIG. On success the caller
 * owns *ret_buf. */
int kiln_read_file_at(int dfd, const char *path, size_t max, char **ret_buf, size_t *ret_len);
/* Write data to (dfd, path) atomically: temp file in the same directory,
 * fsync, rename. */
int kiln_write_file_atomic(int dfd, const char *path, const void *data, size_t len, mode_t mode);
/* Write this process's pid to path (atomically), for the drivers that
 * stop daemons by pidfile. */
int kiln_write_pidfile(const char *path);
/* mkdir -p; existing directories are fine. */
int kiln_mkdir_p(const char *path, mode_t mode);
/* rm -rf; a missing path is fine. Does not follow symlinks or cross mounts. */
int kiln_rm_rf(const char *path);
/* Write/read all bytes, retrying on EINTR and short writes. */
int kiln_write_all(int fd, const void *buf, size_t len);
/* Milliseconds of CLOCK_MONOTONIC. */
int64_t kiln_now_ms(void);
/* SOURCE_DATE_EPOCH if set and valid, else -1. */
int64_t kiln_source_date_epoch(void);
/* snprintf into a malloc'd string; NULL on ENOMEM. */
char *kiln_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A clean absolute path from joined (which should start with '/'):
 * "//" collapsed, "." dropped, ".." resolved without going above "/".
 * Caller owns the result; NULL on ENOMEM. */
char *kiln_path_clean(const char *joined);
/* true when s starts with prefix. */
bool kiln_startswith(const char *s, const char *prefix);
/* Path of a program next to the running executable (bin/NAME), falling back
 * to NAME on $PATH. Caller owns the result. */
char *kiln_sibling_exe(const char *name);

#endif
