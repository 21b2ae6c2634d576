/* Snapshots on a worker: every layer is extracted once, into
 * STATE/layers/<diff_id hex>/ in overlay form, and a snapshot is a stack of
 * such directories used as overlay lower dirs. A step's upper dir, once
 * turned into a layer, is adopted under its diff_id instead of being
 * extracted again. Safe with several jobs (threads or processes) at once:
 * directories appear by rename only. */
#ifndef KILN_SNAPSHOT_H
#define KILN_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

struct kiln_err;
struct cas;
struct op_layer;
struct digest;

/* Directory of the extracted layer, extracting it from its blob in cas when
 * missing; the blob's diff_id must match. Caller owns *ret_dir. */
int snap_ensure_layer(const char *state, struct cas *cas, const struct op_layer *l, char **ret_dir,
		      struct kiln_err *err);
/* Move upper (a finished step's changes) to the directory of diff_id, or
 * delete it when that directory already exists. Caller owns *ret_dir. */
int snap_adopt(const char *state, const char *upper, const struct digest *diff_id, char **ret_dir,
	       struct kiln_err *err);
/* The empty directory used as the bottom of a scratch snapshot. */
int snap_empty_dir(const char *state, char **ret_dir, struct kiln_err *err);
/* Look path (absolute, in the image) up through stack (top first), as
 * overlayfs would: a whiteout hides lower entries, an opaque directory hides
 * lower contents. Returns 1 and fills *ret_st when found, 0 when not. */
int snap_lookup(char *const *stack, size_t n, const char *path, struct stat *ret_st);
/* Like snap_lookup, and *ret_real (caller frees) gets the path of the
 * entry in the layer directory that provides it. */
int snap_resolve(char *const *stack, size_t n, const char *path, struct stat *ret_st, char **ret_real);
/* Resolve the symlinks in every component of path (absolute, in the
 * image) through stack, as the kernel would with the image as its root:
 * ".." stops at the root and an absolute target starts again from it, so
 * the result never leaves the image. Components that do not exist are
 * taken as plain directories. Returns 0 and *ret_path (caller frees;
 * absolute and clean), -ELOOP after SNAP_MAX_LINKS links, or -errno. */
#define SNAP_MAX_LINKS 40
int snap_follow(char *const *stack, size_t n, const char *path, char **ret_path);
/* The merged listing of directory path through stack, as overlayfs shows
 * it: names sorted bytewise, each once, whiteouts and what they hide left
 * out. *ret_names is a malloc'd array of malloc'd names (free with
 * op_strv_free from op.h). */
int snap_readdir(char *const *stack, size_t n, const char *path, char ***ret_names, size_t *ret_n,
		 struct kiln_err *err);

#endif
