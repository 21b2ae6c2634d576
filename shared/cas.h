/* Content-addressed blob store: files under DIR/blobs/sha256/<aa>/<hex>
 * plus an LMDB index (DIR/index) of size, media type and last use.
 *
 * Invariants: a file under a digest's name always has that digest. Writes
 * go to DIR/tmp/, are hashed while written, verified against the expected
 * digest if one was given, fsync'd and renamed into place; only then is the
 * index updated. Several processes may write the same or different blobs at
 * once: the rename is atomic and identical content makes a second rename
 * harmless. A blob file without an index entry (crash between rename and
 * index update) is still served and re-indexed on the next put/stat. */
#ifndef KILN_CAS_H
#define KILN_CAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_err;
struct digest;
struct cas;                 /* opaque; one per process is enough */
struct cas_writer;          /* opaque streaming write */

struct cas_info {
	uint64_t size;
	int64_t last_use;       /* unix seconds */
	char media_type[128];   /* "" when unknown */
};

/* Open or create the store at dir. The caller owns *ret (cas_free). */
int cas_open(const char *dir, struct cas **ret_cas, struct kiln_err *err);
void cas_free(struct cas *cas);

bool cas_has(struct cas *cas, const struct digest *d);
/* -ENOENT when absent. */
int cas_stat(struct cas *cas, const struct digest *d, struct cas_info *ret_info, struct kiln_err *err);
/* Path of the blob file (whether or not it exists) into buf. */
int cas_path(struct cas *cas, const struct digest *d, char *buf, size_t size);
/* Read a whole blob of at most max bytes; caller owns *ret_buf (NUL-terminated). */
int cas_get(struct cas *cas, const struct digest *d, size_t max, char **ret_buf, size_t *ret_len,
	    struct kiln_err *err);
/* Store bytes. expect may be NULL; if given, a mismatch fails with -EBADMSG
 * and stores nothing. ret_d may be NULL. media_type may be NULL. */
int cas_put(struct cas *cas, const void *data, size_t len, const char *media_type,
	    const struct digest *expect, struct digest *ret_d, struct kiln_err *err);
/* Store a copy of the file at path (same rules). */
int cas_put_file(struct cas *cas, const char *path, const char *media_type,
		 const struct digest *expect, struct digest *ret_d, struct kiln_err *err);

/* Streaming write. expect may be NULL. The caller owns *ret_w and must end
 * it with exactly one of cas_writer_commit or cas_writer_abort (both free it). */
int cas_writer_new(struct cas *cas, const struct digest *expect, struct cas_writer **ret_w,
		   struct kiln_err *err);
int cas_writer_write(struct cas_writer *w, const void *data, size_t len, struct kiln_err *err);
uint64_t cas_writer_size(const struct cas_writer *w);
int cas_writer_commit(struct cas_writer *w, const char *media_type, struct digest *ret_d,
		      struct kiln_err *err);
void cas_writer_abort(struct cas_writer *w);

/* Call fn for every indexed blob; a non-zero return from fn stops and is returned. */
typedef int (*cas_list_fn)(const struct digest *d, const struct cas_info *info, void *ctx);
int cas_list(struct cas *cas, cas_list_fn fn, void *ctx, struct kiln_err *err);

#endif
