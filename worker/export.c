/* OCI layout and docker-archive tar writers, and the layer rewrites an
 * output asks for before its manifest is made (force-compression,
 * rewrite-timestamp: shared/layer.c's layer_rewrite, run here on the node
 * that holds the blobs). The rootfs exporters live in shared/layer.c
 * (layer_write_rootfs_tar); this module only packs already-stored blobs. A docker archive is the OCI layout plus Docker's
 * manifest.json pointing into blobs/sha256 (what BuildKit's docker exporter
 * and docker save since 25.0 write), so one file serves both readers. */
#include <archive.h>
#include <jansson.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "export.h"
#include "log.h"
#include "util.h"

static int
put_entry(struct archive *a, const char *name, mode_t type, int64_t size, int64_t mtime,
	  struct kiln_err *err)
{
	struct archive_entry *e = archive_entry_new();
	int r;

	if (!e)
		return kiln_err_set(err, ENOMEM, "out of memory");
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
	archive_entry_set_size(e, type == AE_IFDIR ? 0 : size);
	archive_entry_set_mtime(e, mtime, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	r = archive_write_header(a, e);
	archive_entry_free(e);
	if (r != ARCHIVE_OK)
		return kiln_err_set(err, EIO, "write tar header '%s': %s", name, archive_error_string(a));
	return 0;
}

static int
put_bytes(struct archive *a, const char *name, const void *data, size_t len, int64_t mtime,
	  struct kiln_err *err)
{
	int r = put_entry(a, name, AE_IFREG, (int64_t) len, mtime, err);

	if (r < 0)
		return r;
	if (len && archive_write_data(a, data, len) != (la_ssize_t) len)
		return kiln_err_set(err, EIO, "write tar data '%s': %s", name, archive_error_string(a));
	return 0;
}

static int
put_blob(struct archive *a, struct cas *cas, const struct digest *d, int64_t mtime,
	 struct kiln_err *err)
{
	char path[4096], name[128], hex[65];
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r;

	cas_path(cas, d, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return kiln_err_errno(err, errno, "blob %s", path);
	snprintf(name, sizeof(name), "blobs/sha256/%s", digest_hex(d, hex));
	r = put_entry(a, name, AE_IFREG, st.st_size, mtime, err);
	if (r < 0)
		return r;
	for (;;) {
		char buf[65536];
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_err_errno(err, errno, "read '%s'", path);
		if (n == 0)
			break;
		if (archive_write_data(a, buf, (size_t) n) != n)
			return kiln_err_set(err, EIO, "write tar: %s", archive_error_string(a));
	}
	return 0;
}

/* Docker's manifest.json: one image, its config and layers by path. */
static char *
docker_manifest_json(const struct digest *config, const struct digest *layers, size_t n_layers,
		     const char *const *tags, size_t n_tags, size_t *ret_len)
{
	json_t *top = json_array(), *img = json_object(), *rt = json_array(), *ls = json_array();
	char path[128], hex[65];
	char *out = NULL;

	if (!top || !img || !rt || !ls)
		goto out;
	snprintf(path, sizeof(path), "blobs/sha256/%s", digest_hex(config, hex));
	json_object_set_new(img, "Config", json_string(path));
	for (size_t i = 0; i < n_tags; i++)
		json_array_append_new(rt, json_string(tags[i]));
	json_object_set(img, "RepoTags", rt);
	for (size_t i = 0; i < n_layers; i++) {
		snprintf(path, sizeof(path), "blobs/sha256/%s", digest_hex(&layers[i], hex));
		json_array_append_new(ls, json_string(path));
	}
	json_object_set(img, "Layers", ls);
	json_array_append(top, img);
	out = json_dumps(top, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (out)
		*ret_len = strlen(out);
out:
	json_decref(top);
	json_decref(img);
	json_decref(rt);
	json_decref(ls);
	return out;
}

static int
write_layout(struct cas *cas, const char *index_json, size_t index_len,
	     const char *docker_json, size_t docker_len,
	     const struct digest *blobs, size_t n_blobs, int64_t epoch, int fd,
	     struct kiln_err *err)
{
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	int64_t mtime = epoch >= 0 ? epoch : 0;
	struct archive *a = archive_write_new();
	int r;

	if (!a)
		return kiln_err_set(err, ENOMEM, "out of memory");
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	if (archive_write_open_fd(a, fd) != ARCHIVE_OK) {
		r = kiln_err_set(err, EIO, "open tar: %s", archive_error_string(a));
		goto out;
	}
	r = put_bytes(a, "oci-layout", layout, strlen(layout), mtime, err);
	if (r == 0)
		r = put_bytes(a, "index.json", index_json, index_len, mtime, err);
	if (r == 0 && docker_json)
		r = put_bytes(a, "manifest.json", docker_json, docker_len, mtime, err);
	if (r == 0)
		r = put_entry(a, "blobs", AE_IFDIR, 0, mtime, err);
	if (r == 0)
		r = put_entry(a, "blobs/sha256", AE_IFDIR, 0, mtime, err);
	for (size_t i = 0; r == 0 && i < n_blobs; i++) {
		bool dup = false;

		for (size_t k = 0; k < i; k++)
			dup = dup || digest_equal(&blobs[k], &blobs[i]);
		if (!dup)
			r = put_blob(a, cas, &blobs[i], mtime, err);
	}
	if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
		r = kiln_err_set(err, EIO, "close tar: %s", archive_error_string(a));
out:
	archive_write_free(a);
	return r;
}

int
export_oci_tar(struct cas *cas, const char *index_json, size_t index_len,
	       const struct digest *blobs, size_t n_blobs, int64_t epoch, int fd,
	       struct kiln_err *err)
{
	return write_layout(cas, index_json, index_len, NULL, 0, blobs, n_blobs, epoch, fd, err);
}

int
export_docker_tar(struct cas *cas, const char *index_json, size_t index_len,
		  const struct digest *blobs, size_t n_blobs, const char *const *tags, size_t n_tags,
		  int64_t epoch, int fd, struct kiln_err *err)
{
	_cleanup_free_ char *mj = NULL;
	size_t mj_len = 0;

	if (n_blobs < 2)
		return kiln_err_set(err, EINVAL, "docker archive needs a manifest and a config");
	mj = docker_manifest_json(&blobs[1], blobs + 2, n_blobs - 2, tags, n_tags, &mj_len);
	if (!mj)
		return kiln_err_set(err, ENOMEM, "out of memory");
	return write_layout(cas, index_json, index_len, mj, mj_len, blobs, n_blobs, epoch, fd, err);
}

int
export_rewrite_layers(struct cas *cas, struct export_rewrite *v, size_t n, struct kiln_err *err)
{
	for (size_t i = 0; i < n; i++) {
		char from[DIGEST_STR_SIZE], to[DIGEST_STR_SIZE];
		int64_t t0 = kiln_now_ms();
		int r;

		r = layer_rewrite(cas, &v[i].src, v[i].comp, v[i].level, v[i].epoch, &v[i].out, err);
		if (r < 0)
			return r;
		log_info("layer %s rewritten as %s (%s%s) in %" PRId64 " ms, %" PRIu64 " bytes",
			 digest_fmt(&v[i].src, from), digest_fmt(&v[i].out.digest, to),
			 layer_compression_name(v[i].comp), v[i].epoch >= 0 ? ", times clamped" : "",
			 kiln_now_ms() - t0, v[i].out.size);
	}
	return 0;
}
