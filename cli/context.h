/* The build context as the client sees it: every entry under the context
 * directory (files with their sha256), sorted by path, so that the
 * coordinator can resolve COPY sources and the worker can say which file
 * contents it lacks. */
#ifndef KILN_CLI_CONTEXT_H
#define KILN_CLI_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct kiln_err;

#define CONTEXT_MAX_ENTRIES 1000000

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
};

/* Walk root (not following symlinks; other file types skipped). */
int context_scan(const char *root, struct ctx_list *ret, struct kiln_err *err);
void context_release(struct ctx_list *l);

#endif
