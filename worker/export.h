/* Exporters on the worker: the files a build's outputs are made of, written
 * to an fd the worker then streams to the client. */
#ifndef KILN_EXPORT_H
#define KILN_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "layer.h"

struct kiln_err;
struct cas;

/* An OCI image layout as a tar: oci-layout, index.json (given), and every
 * blob in blobs (taken from cas) under blobs/sha256/. Deterministic: entries
 * in a fixed order, mtime epoch (or 0), uid/gid 0. */
int export_oci_tar(struct cas *cas, const char *index_json, size_t index_len,
		   const struct digest *blobs, size_t n_blobs, int64_t epoch, int fd,
		   struct kiln_err *err);

/* A docker archive (what docker load, podman load and skopeo's
 * docker-archive: read): the OCI layout tar above plus manifest.json
 * [{Config, RepoTags, Layers}] whose paths point into blobs/sha256/.
 * blobs must be the manifest, the config, then the layers in order; tags
 * (may be empty) become RepoTags. Same determinism as export_oci_tar. */
int export_docker_tar(struct cas *cas, const char *index_json, size_t index_len,
		      const struct digest *blobs, size_t n_blobs, const char *const *tags,
		      size_t n_tags, int64_t epoch, int fd, struct kiln_err *err);

/* One stored layer an output wants in another form: base layers in the
 * compression force-compression asks for, or the build's layers with file
 * times clamped for rewrite-timestamp. Both are layer_rewrite. */
struct export_rewrite {
	struct digest src;
	enum layer_compression comp;
	int level;                    /* LAYER_LEVEL_DEFAULT or valid for comp */
	int64_t epoch;                /* clamp later file times to it; -1 keeps the tar */
	struct layer_info out;        /* the new blob, set by export_rewrite_layers */
};

/* Rewrite v[0..n) in order into cas, logging each one's time; stops at the
 * first failure (blobs already made stay: they are valid content). */
int export_rewrite_layers(struct cas *cas, struct export_rewrite *v, size_t n, struct kiln_err *err);

#endif
