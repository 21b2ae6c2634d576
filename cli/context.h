/* The build context as the client sees it: every entry under the context
 * directory that the .dockerignore does not exclude (files with their
 * sha256), sorted by path, so that the coordinator can resolve COPY
 * sources and the worker can say which file contents it lacks. What the
 * .dockerignore excludes is never listed, hashed or sent. */
#ifndef KILN_CLI_CONTEXT_H
#define KILN_CLI_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct ignore;
struct kiln_err;

#define CONTEXT_MAX_ENTRIES 1000000
#define CONTEXT_IGNORE_MAX (4u << 20)   /* largest .dockerignore read */

struct ctx_entry {
	char *path;            /* relative, '/'-separated */
	char *abs;             /* path to read the content from */
	char kind;             /* 'f', 'd', 'l' */
	uint32_t mode;         /* permission bits */
	uint64_t size;
	int64_t mtime;
	struct digest digest;  /* files */
	char *link;            /* symlinks */
};

struct ctx_list {
	struct ctx_entry *v;
	size_t n;
	uint64_t bytes;        /* sum of file sizes */
	char *ignore_path;     /* the .dockerignore applied, NULL when none */
	uint64_t ignore_size;  /* its size in bytes */
};

/* Where the .dockerignore for a build is, as buildx looks for it:
 * DOCKERFILE.dockerignore next to the Dockerfile when that exists
 * (dockerfile is the -f path; NULL means root/Dockerfile), else
 * root/.dockerignore. Returns 1 and a malloc'd *ret_path when one
 * exists, 0 when there is none. */
int context_find_ignore(const char *root, const char *dockerfile, char **ret_path,
			struct kiln_err *err);

/* Walk root (not following symlinks; sockets, fifos and devices skipped),
 * leaving out the entries ig (borrowed; NULL: none) excludes, with the
 * semantics of BuildKit's file sync (fsutil with moby/patternmatcher): a
 * path is excluded when the last pattern matching it or one of its parent
 * directories is not a '!' pattern; an excluded directory is not entered
 * unless a '!' pattern could re-include something below it, and it is
 * listed only when something below it is. On success *ret is filled and
 * the caller releases it with context_release(); on failure it is
 * untouched. */
int context_scan_with(const char *root, const struct ignore *ig, struct ctx_list *ret,
		      struct kiln_err *err);

/* context_find_ignore(), read and compile that file, context_scan_with().
 * A malformed .dockerignore is an error naming the file. */
int context_scan(const char *root, const char *dockerfile, struct ctx_list *ret,
		 struct kiln_err *err);
void context_release(struct ctx_list *l);

#endif
