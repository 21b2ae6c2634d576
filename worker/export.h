/* Exporters on the worker: the files a build's outputs are made of, written
 * to an fd the worker then streams to the client. */
#ifndef KILN_EXPORT_H
#define KILN_EXPORT_H

#include <stddef.h>
#include <stdint.h>

struct kiln_err;
struct cas;
struct digest;

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

#endif
