/* OCI image types on jansson: descriptors, manifests, indexes, image
 * configs and image layouts (image-spec v1.1). Parsers validate what they
 * read (media types, digests, sizes, required fields) and are bounded by
 * OCI_JSON_MAX. Serialisers emit compact JSON with keys in a fixed order so
 * the same value always gives the same bytes (digests depend on it). */
#ifndef KILN_OCI_H
#define KILN_OCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "digest.h"
#include "platform.h"

struct kiln_err;

#define OCI_JSON_MAX (4u << 20)

#define OCI_MT_MANIFEST  "application/vnd.oci.image.manifest.v1+json"
#define OCI_MT_INDEX     "application/vnd.oci.image.index.v1+json"
#define OCI_MT_CONFIG    "application/vnd.oci.image.config.v1+json"
#define OCI_MT_LAYER_GZ  "application/vnd.oci.image.layer.v1.tar+gzip"
#define OCI_MT_LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
#define OCI_MT_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define DOCKER_MT_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define DOCKER_MT_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define DOCKER_MT_CONFIG   "application/vnd.docker.container.image.v1+json"
#define DOCKER_MT_LAYER_GZ "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define DOCKER_MT_LAYER_TAR "application/vnd.docker.image.rootfs.diff.tar"
#define DOCKER_MT_LAYER_ZSTD "application/vnd.docker.image.rootfs.diff.tar.zstd"
#define OCI_ANNOT_REF_NAME "org.opencontainers.image.ref.name"

struct oci_descriptor {
	char media_type[128];
	struct digest digest;
	int64_t size;
	bool has_platform;
	struct platform platform;
	json_t *annotations;            /* owned; NULL or an object of strings */
};

struct oci_manifest {
	char media_type[128];           /* OCI or Docker v2 */
	struct oci_descriptor config;
	struct oci_descriptor *layers;  /* owned array */
	size_t n_layers;
	json_t *annotations;            /* owned; may be NULL */
};

struct oci_index {
	char media_type[128];
	struct oci_descriptor *manifests;
	size_t n_manifests;
	json_t *annotations;
};

void oci_descriptor_release(struct oci_descriptor *d);
void oci_manifest_release(struct oci_manifest *m);
void oci_index_release(struct oci_index *ix);

/* Parse from JSON text (len bytes, not necessarily NUL-terminated). On
 * failure nothing is left allocated and err names the bad field. */
int oci_descriptor_from_json(const json_t *j, struct oci_descriptor *ret, struct kiln_err *err);
int oci_manifest_parse(const char *buf, size_t len, struct oci_manifest *ret, struct kiln_err *err);
int oci_index_parse(const char *buf, size_t len, struct oci_index *ret, struct kiln_err *err);

/* Serialise. The caller owns the returned json_t (json_decref) / string (free). */
json_t *oci_descriptor_to_json(const struct oci_descriptor *d);
char *oci_manifest_dump(const struct oci_manifest *m, size_t *ret_len);
char *oci_index_dump(const struct oci_index *ix, size_t *ret_len);
/* Canonical compact dump of any JSON value with sorted keys (what we hash). */
char *oci_json_dump(const json_t *j, size_t *ret_len);

/* Image config, kept as a json_t so fields we do not model survive a round
 * trip. oci_config_parse validates the shape (object, os, architecture,
 * rootfs.type == "layers", diff_ids are digests, config.* types). */
int oci_config_parse(const char *buf, size_t len, json_t **ret, struct kiln_err *err);
/* A new empty config for the platform (rootfs {type: layers, diff_ids: []},
 * config {}, history []). */
json_t *oci_config_new(const struct platform *p);
/* Set/replace "KEY=VALUE" in config.Env, keeping order (a new key appends). */
int oci_config_set_env(json_t *cfg, const char *key, const char *value);
/* Look up KEY in config.Env; borrowed, NULL when absent. */
const char *oci_config_get_env(const json_t *cfg, const char *key);
/* Append a diff_id and a history entry. empty_layer entries add no diff_id. */
int oci_config_add_history(json_t *cfg, const char *created_by, int64_t created, bool empty_layer,
			   const struct digest *diff_id);
/* config.<field> = value (value taken); value NULL deletes the field. */
int oci_config_set(json_t *cfg, const char *field, json_t *value);
/* RFC 3339 UTC ("2024-01-02T03:04:05Z") of unix seconds into out. */
char *oci_time_fmt(int64_t t, char out[32]);

/* Image layout (a directory with oci-layout, index.json and blobs/). Reads
 * index.json of the layout at dir and resolves ref (a tag matched against
 * org.opencontainers.image.ref.name, NULL = "latest", or a "sha256:" digest)
 * for platform p: descriptors of manifests whose platform differs are
 * skipped, a nested index is followed. ret_manifest gets the manifest's
 * descriptor (caller releases it).
 * Details: when no entry of index.json carries a ref name and there is
 * exactly one, any tag means that one. A manifest without a platform field
 * is matched through its config blob's os/architecture/variant. A digest
 * naming a manifest is taken whatever its platform; one naming an index is
 * resolved for p. p NULL means the host platform. Blobs read are checked
 * against their size and digest. Errors name the layout and the ref. */
int oci_layout_resolve(const char *dir, const char *ref, const struct platform *p,
		       struct oci_descriptor *ret_manifest, struct kiln_err *err);
/* Path of a blob inside a layout into buf. */
int oci_layout_blob_path(const char *dir, const struct digest *d, char *buf, size_t size);

#endif
