/* The coordinator's cache index (LMDB): cache key -> result record (see
 * solver.h), and blob digest -> the names of the nodes that hold it. It is
 * a file in the coordinator's state directory, so it survives a restart;
 * a node that registers again under its name finds its blobs counted. A
 * coordinator without a state directory keeps it in a temporary one. */
#ifndef KILN_CACHE_H
#define KILN_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "digest.h"
#include "solver.h"

struct kiln_err;
struct cache;

#define CACHE_MAX_HOLDERS 64
#define CACHE_NODE_NAME_MAX 128

int cache_open(const char *dir, struct cache **ret, struct kiln_err *err);
void cache_close(struct cache *c);      /* NULL is a no-op */

/* 1 and *ret filled when key has a record, 0 when not. A record that does
 * not decode counts as none (and is logged), never as an error. */
int cache_get(struct cache *c, const struct digest *key, struct solver_rec *ret, struct kiln_err *err);
int cache_put(struct cache *c, const struct digest *key, const struct solver_rec *rec,
	      struct kiln_err *err);
/* The nodes that hold blob, into names (at most max); returns how many. */
int cache_holders(struct cache *c, const struct digest *blob, char names[][CACHE_NODE_NAME_MAX],
		  size_t max, struct kiln_err *err);
/* Record that node holds (held) or no longer holds blob; _many does n
 * blobs in one transaction. */
int cache_hold(struct cache *c, const struct digest *blob, const char *node, bool held,
	       struct kiln_err *err);
int cache_hold_many(struct cache *c, const struct digest *blobs, size_t n, const char *node, bool held,
		    struct kiln_err *err);

#endif
