/* Layers: deterministic tar blobs (gzip, zstd or uncompressed) made from
 * overlay upper directories, and extraction of layer blobs into directories
 * that overlayfs can stack.
 *
 * Making a layer: entries sorted by path (bytewise), uid/gid numeric with
 * empty user/group names, no atime/ctime, whole-second mtimes as in the
 * tree (never clamped: that is an exporter's choice, see layer_rewrite),
 * overlay whiteouts (char device 0/0) written as OCI ".wh.NAME"
 * files and opaque directories (xattr trusted.overlay.opaque=y) as
 * ".wh..wh..opq"; xattrs other than trusted.overlay.* kept. gzip through
 * zlib with a header that has no name and no time; zstd through libzstd as
 * one single-threaded frame with a checksum, no dictionary id and no
 * content size. The same tree, compression and level give the same bytes
 * on every machine (for zstd: with the same libzstd version), and the same
 * diff_id whatever the compression.
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

enum layer_compression { LAYER_GZIP, LAYER_ZSTD, LAYER_NONE };

/* Levels: gzip 0..9, zstd 0..22 (0 = libzstd's default, 3); none has no
 * level. LAYER_LEVEL_DEFAULT picks kiln's: gzip 1, zstd 3. The level is part
 * of the blob format: changing it changes the layer digests. */
#define LAYER_LEVEL_DEFAULT (-1)

struct layer_info {
	struct digest diff_id;      /* sha256 of the uncompressed tar */
	struct digest digest;       /* sha256 of the blob (stored in cas) */
	uint64_t size;              /* blob size */
};

/* Make a layer from dir (an overlay upper dir or any tree) compressed with
 * comp at level (LAYER_LEVEL_DEFAULT or in the range above; -EINVAL
 * otherwise). Returns 1 and stores nothing when dir holds no entries, else
 * 0 with *ret filled and the blob stored in cas under the OCI layer media
 * type of comp. */
int layer_make(struct cas *cas, const char *dir, enum layer_compression comp, int level,
	       struct layer_info *ret, struct kiln_err *err);
/* layer_make with gzip at the default level. */
int layer_from_dir(struct cas *cas, const char *dir, struct layer_info *ret, struct kiln_err *err);

/* The one export-time conversion of a stored layer (force-compression,
 * rewrite-timestamp): read blob src of cas (gzip, zstd or plain tar,
 * sniffed; checksums verified) and store it again as comp at level, under
 * the OCI media type of comp; *ret gets the new blob's digests and size.
 * With epoch < 0 the uncompressed bytes are kept as they are, so the
 * diff_id does not change. With epoch >= 0 the tar is read and written
 * again by layer_make's writer with every mtime, atime and ctime later than
 * epoch set to epoch (BuildKit's rewrite-timestamp): the diff_id changes
 * when a time did, and a layer layer_make wrote comes out as layer_make
 * would have written the tree with those times. Deterministic as
 * layer_make. */
int layer_rewrite(struct cas *cas, const struct digest *src, enum layer_compression comp, int level,
		  int64_t epoch, struct layer_info *ret, struct kiln_err *err);

/* "gzip", "zstd", "uncompressed" (buildx's names) <-> the enum. parse
 * returns -EINVAL for any other name. */
int layer_compression_parse(const char *name, enum layer_compression *ret);
const char *layer_compression_name(enum layer_compression comp);
/* Is level valid for comp (LAYER_LEVEL_DEFAULT always is)? */
bool layer_level_valid(enum layer_compression comp, int level);
/* The layer media type of comp: OCI's, or Docker's when oci is false (zstd
 * then gets "application/vnd.docker.image.rootfs.diff.tar.zstd", as
 * BuildKit's exporters write it). */
const char *layer_compression_media_type(enum layer_compression comp, bool oci);
/* The compression a layer media type (OCI or Docker) names; -EINVAL for
 * anything else (foreign layers, unknown types). */
int layer_compression_from_media_type(const char *mt, enum layer_compression *ret);

/* Extract the layer blob at blob_path (gzip, zstd or plain tar, sniffed) into
 * dest, which must not exist. *ret_diff_id (may be NULL) gets the digest of
 * the uncompressed stream. */
int layer_extract(const char *blob_path, const char *dest, struct digest *ret_diff_id,
		  struct kiln_err *err);

/* Write a plain tar of the union of the overlay-form directories lowers[0]
 * (top) .. lowers[n-1] (bottom) to fd: upper entries hide lower ones,
 * whiteouts delete, opaque directories hide everything below them. Same
 * determinism rules as layer_from_dir, and mtimes later than epoch are set
 * to epoch when epoch >= 0. */
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
