/* Layers: deterministic tar+gzip blobs made from overlay upper directories,
 * and extraction of layer blobs into directories that overlayfs can stack.
 *
 * Making a layer: entries sorted by path (bytewise), uid/gid numeric with
 * empty user/group names, no atime/ctime, mtimes clamped to epoch when
 * epoch >= 0, overlay whiteouts (char device 0/0) written as OCI ".wh.NAME"
 * files and opaque directories (xattr trusted.overlay.opaque=y) as
 * ".wh..wh..opq"; xattrs other than trusted.overlay.* kept. gzip through
 * zlib with a header that has no name and no time. The same tree gives the
 * same bytes on every machine.
 *
 * Extracting: the inverse mapping into overlay form; hard links, symlinks,
 * devices and xattrs kept; entries that would escape the destination
 * ("..", absolute paths, writing through a symlink) fail with -EPERM and a
 * message naming the entry. Extraction goes to a temporary sibling
 * directory that is renamed into place only on success. */
#ifndef KILN_LAYER_H
#define KILN_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "digest.h"

struct kiln_err;
struct cas;

struct layer_info {
	struct digest diff_id;      /* sha256 of the uncompressed tar */
	struct digest digest;       /* sha256 of the gzip blob (stored in cas) */
	uint64_t size;              /* blob size */
};

/* Make a layer from dir (an overlay upper dir or any tree). Returns 1 and
 * stores nothing when dir holds no entries, else 0 with *ret filled and the
 * blob stored in cas under media type OCI layer gzip. */
int layer_from_dir(struct cas *cas, const char *dir, int64_t epoch, struct layer_info *ret,
		   struct kiln_err *err);

/* Extract the layer blob at blob_path (gzip or plain tar, sniffed) into
 * dest, which must not exist. *ret_diff_id (may be NULL) gets the digest of
 * the uncompressed stream. */
int layer_extract(const char *blob_path, const char *dest, struct digest *ret_diff_id,
		  struct kiln_err *err);

/* Write a plain tar of the union of the overlay-form directories lowers[0]
 * (top) .. lowers[n-1] (bottom) to fd: upper entries hide lower ones,
 * whiteouts delete, opaque directories hide everything below them. Same
 * determinism rules as layer_from_dir. */
int layer_write_rootfs_tar(const char *const *lowers, unsigned n, int fd, int64_t epoch,
			   struct kiln_err *err);

/* ADD of a local archive: when path holds a tar (plain, or compressed in any
 * way libarchive reads: gzip, bzip2, xz, zstd, ...; sniffed by content),
 * extract it into the existing directory dest, merging, with owners and
 * modes from the archive (uid, gid >= 0 override them) and the same escape
 * protections as layer_extract. OCI whiteout names are refused. Returns 1
 * without touching dest when path is not a tar archive, 0 when extracted. */
int layer_unpack_archive(const char *path, const char *dest, int64_t uid, int64_t gid,
			 struct kiln_err *err);

#endif
