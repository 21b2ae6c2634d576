/* Registry client for the OCI distribution spec and Docker's Registry HTTP
 * API v2, on libcurl: image references, manifest and index resolution with
 * containerd's platform matching, blob downloads into the blob store
 * (concurrent, resumable, verified, de-duplicated within the process), blob
 * and manifest uploads, and the registry auth flows (anonymous and
 * authenticated Bearer tokens, Basic) with credentials from Docker's
 * config.json.
 *
 * Thread rules: one struct registry may be used by any number of threads
 * at once; every call below is thread-safe unless it says otherwise. Calls
 * block until done. Connections, learned auth challenges and tokens are
 * shared by all callers of one struct registry.
 *
 * Errors: every failing call fills err with a message that names the
 * reference, the request (method and URL without its query) and, when the
 * registry answered, the HTTP status and the registry's error JSON
 * ("MANIFEST_UNKNOWN: manifest unknown"). err->code is ENOENT for 404,
 * KILN_EAUTH for 401, EACCES for 403, EBADMSG for content that does not
 * match its digest or size, EFBIG for a response over its bound, ENOTSUP
 * for documents we do not handle (schema 1), EPROTO for other surprising
 * answers and the errno closest to a transport failure (ECONNREFUSED,
 * ETIMEDOUT, EIO) otherwise. */
#ifndef KILN_REGISTRY_H
#define KILN_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "platform.h"

struct kiln_err;
struct cas;
struct oci_descriptor;
struct oci_index;
struct registry;                /* opaque client, thread-safe */

/* ---- references ---- */

#define REGISTRY_DOMAIN_SIZE 256
#define REGISTRY_PATH_SIZE 256
#define REGISTRY_TAG_SIZE 129
#define REGISTRY_REF_STR_SIZE (REGISTRY_DOMAIN_SIZE + REGISTRY_PATH_SIZE + REGISTRY_TAG_SIZE + \
			       DIGEST_STR_SIZE + 2)

/* A reference normalised as Docker does: "alpine" is
 * docker.io/library/alpine:latest, "index.docker.io/x/y" is docker.io/x/y,
 * "localhost:5000/a" and "127.0.0.1:5000/a" name their host. A reference
 * with a digest keeps its tag ("a:1@sha256:...") but is resolved by the
 * digest; one with neither gets the tag "latest". */
struct registry_ref {
	char domain[REGISTRY_DOMAIN_SIZE];      /* "docker.io", "127.0.0.1:5000" */
	char path[REGISTRY_PATH_SIZE];          /* "library/alpine" */
	char tag[REGISTRY_TAG_SIZE];            /* "" only when has_digest */
	bool has_digest;
	struct digest digest;
};

/* Parse s (Docker's grammar: lowercase path components, tags of
 * [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, sha256 digests only, at most 255
 * characters of name). -EINVAL with a message saying what is wrong. */
int registry_ref_parse(const char *s, struct registry_ref *ret_ref, struct kiln_err *err);
/* "domain/path[:tag][@digest]" into out (REGISTRY_REF_STR_SIZE is always
 * enough); returns out. */
char *registry_ref_fmt(const struct registry_ref *r, char *out, size_t size);

/* ---- auth challenges (exposed for tests and fuzzing) ---- */

enum registry_auth_scheme {
	REGISTRY_AUTH_NONE = 0,
	REGISTRY_AUTH_BASIC,
	REGISTRY_AUTH_BEARER,
};

struct registry_challenge {
	enum registry_auth_scheme scheme;
	char realm[1024];               /* Bearer: token endpoint; Basic: realm name */
	char service[256];
	char scope[1024];
	char error[64];                 /* "insufficient_scope", "invalid_token" or "" */
};

/* Parse a WWW-Authenticate header value (RFC 7235 challenges, quoted
 * strings with backslash escapes, several challenges separated by commas).
 * Picks the Bearer challenge if there is one, else Basic. -EINVAL when
 * neither is present or the value is malformed; -E2BIG when a parameter
 * does not fit. */
int registry_challenge_parse(const char *value, struct registry_challenge *ret);

/* ---- platform matching ---- */

/* Rank of image platform have for wanted platform want under containerd's
 * platforms.Only(): 0 for the same platform, then the compatible ones in
 * containerd's order of preference (amd64/v3 -> v2, v1, 386; arm/v7 -> v6,
 * v5; arm64 -> arm/v8, arm/v7, arm/v6, arm/v5); -1 when have cannot run
 * where want is asked for. Both must be normalised (platform_parse). */
int registry_platform_rank(const struct platform *want, const struct platform *have);
/* The entry of ix with the best rank for want (the first one on a tie);
 * entries without a platform are not considered. -ENOENT when none
 * matches. */
int registry_index_select(const struct oci_index *ix, const struct platform *want, size_t *ret_i);

/* ---- the client ---- */

struct registry_opts {
	/* Docker config.json with credentials under "auths" (base64 "auth"
	 * or "username"/"password"). NULL: $DOCKER_CONFIG/config.json, else
	 * ~/.docker/config.json, and a missing file means no credentials;
	 * "" : read none. A file that exists but is malformed fails
	 * registry_new. credsStore/credHelpers are not supported. */
	const char *docker_config;
	/* NULL-terminated list of "host" (any port) or "host:port" spoken to
	 * over plain http. localhost, 127.0.0.1 and [::1] always are. */
	const char *const *insecure;
	const char *user_agent;         /* NULL: "kiln/0.1" */
	unsigned max_parallel;          /* blob downloads at once per call; 0: 4 */
	unsigned retries;               /* attempts after a broken transfer; 0: 4 */
	unsigned retry_delay_ms;        /* first back-off, doubling; 0: 200 */
	long connect_timeout_ms;        /* 0: 30000 */
	long stall_timeout_s;           /* no byte for this long breaks a transfer; 0: 60 */
	size_t chunk_size;              /* chunked uploads: bytes per PATCH; 0: 8 MiB */
	size_t chunk_threshold;         /* REGISTRY_UPLOAD_AUTO chunks above this; 0: 64 MiB */
};

/* Make a client. o may be NULL for the defaults. Reads the Docker config
 * now (it is not re-read). The caller owns *ret_reg (registry_free). */
int registry_new(const struct registry_opts *o, struct registry **ret_reg, struct kiln_err *err);
/* NULL is a no-op. No other call may be running. */
void registry_free(struct registry *reg);

/* Credentials for host ("127.0.0.1:5000", "docker.io"), replacing any read
 * from the config file. Both strings are copied. */
int registry_set_credentials(struct registry *reg, const char *host, const char *username,
			     const char *password, struct kiln_err *err);

struct registry_stats {
	uint64_t requests;              /* HTTP requests sent (token requests included) */
	uint64_t token_requests;
	uint64_t blobs_fetched;         /* blobs downloaded and committed to a cas */
	uint64_t bytes_fetched;         /* blob body bytes received, retries included */
	uint64_t blobs_pushed;          /* uploaded, not mounted or found present */
	uint64_t bytes_pushed;
	uint64_t blobs_mounted;
	uint64_t resumed;               /* downloads continued with a Range request */
};

/* A snapshot of the counters since registry_new. */
void registry_get_stats(struct registry *reg, struct registry_stats *ret);

/* ---- pulling ---- */

#define REGISTRY_MANIFEST_MAX (4u << 20)

/* A small document fetched whole: a manifest, an index or a config. */
struct registry_doc {
	char media_type[128];
	struct digest digest;           /* sha256 of data, checked */
	char *data;                     /* owned, NUL-terminated; NULL when empty */
	size_t len;
};

void registry_doc_release(struct registry_doc *doc);

/* GET the manifest or index ref names (by its digest when it has one, else
 * its tag), asking for the OCI and Docker v2 manifest and index types.
 * The bytes must hash to ref's digest, or, fetched by tag, to the
 * Docker-Content-Digest the registry sent; the media type comes from the
 * document's mediaType, else the Content-Type, else its shape. At most
 * REGISTRY_MANIFEST_MAX bytes. Caller releases *ret. */
int registry_get_manifest(struct registry *reg, const struct registry_ref *ref,
			  struct registry_doc *ret, struct kiln_err *err);

/* HEAD the manifest: whether it exists and, if so, its descriptor (media
 * type, digest, size; no platform, no annotations). Returns 1 when found,
 * 0 when the registry says 404. Falls back to a GET when a registry does
 * not send Docker-Content-Digest. Caller releases *ret_desc when 1. */
int registry_head_manifest(struct registry *reg, const struct registry_ref *ref,
			   struct oci_descriptor *ret_desc, struct kiln_err *err);

/* An image resolved for one platform. */
struct registry_image {
	struct digest digest;           /* what ref names: an index or a manifest */
	char media_type[128];           /* its media type */
	struct registry_doc manifest;   /* the platform's image manifest */
	struct registry_doc config;     /* its config blob */
	struct platform platform;       /* the platform chosen */
};

void registry_image_release(struct registry_image *img);

/* Resolve ref for platform p (NULL: the host's): fetch what ref names;
 * while it is an index, pick the entry with registry_index_select (entries
 * without a platform are tried last, through their config), fetch it by
 * digest and check its size; then fetch the manifest's config. A manifest
 * reached without an index entry's platform must have a config whose
 * platform ranks for p. -ENOENT names the platforms that were available.
 * Nested indexes are followed 4 deep. Caller releases *ret. */
int registry_resolve(struct registry *reg, const struct registry_ref *ref, const struct platform *p,
		     struct registry_image *ret, struct kiln_err *err);

/* GET blob d of ref's repository into memory, at most max bytes, checked
 * against d. Caller releases *ret (media_type is ""). */
int registry_get_blob(struct registry *reg, const struct registry_ref *ref, const struct digest *d,
		      size_t max, struct registry_doc *ret, struct kiln_err *err);

/* Download the blobs descs[0..n) of ref's repository into cas, up to
 * max_parallel at once over one curl multi handle. A blob cas already has
 * is skipped; a blob another thread of this process is fetching through
 * the same struct registry is waited for rather than fetched again (and
 * fetched here if that fetch fails). Each download is written through a
 * cas_writer that checks the descriptor's digest, and must have exactly
 * the descriptor's size; a broken transfer is continued with a Range
 * request (or restarted when the server ignores the range), up to
 * `retries` times. Nothing that fails verification is stored. The media
 * type of each descriptor is recorded in cas. On the first failure the
 * other downloads of this call are abandoned and the error names the blob.
 * Blobs committed before a failure stay in cas. */
int registry_fetch_blobs(struct registry *reg, const struct registry_ref *ref,
			 const struct oci_descriptor *descs, size_t n, struct cas *cas,
			 struct kiln_err *err);

/* ---- pushing ---- */

enum registry_upload {
	REGISTRY_UPLOAD_AUTO = 0,       /* monolithic up to chunk_threshold, then chunked */
	REGISTRY_UPLOAD_MONOLITHIC,     /* POST, then one PUT ?digest= with the bytes */
	REGISTRY_UPLOAD_CHUNKED,        /* POST, PATCH per chunk, PUT ?digest= */
};

enum registry_push_result {
	REGISTRY_PUSH_UPLOADED = 1,
	REGISTRY_PUSH_EXISTED,          /* HEAD found it: nothing sent */
	REGISTRY_PUSH_MOUNTED,          /* cross-repository mount from mount_from */
};

struct registry_push_opts {
	enum registry_upload upload;
	size_t chunk_size;              /* 0: the client's chunk_size */
	/* A repository path on the same registry that holds the blob
	 * ("library/busybox"): try POST ?mount=&from= first. NULL: none. */
	const char *mount_from;
	bool skip_exists_check;         /* do not HEAD first */
};

/* Whether ref's repository has blob d: 1 (and *ret_size if not NULL) or 0. */
int registry_blob_exists(struct registry *reg, const struct registry_ref *ref, const struct digest *d,
			 int64_t *ret_size, struct kiln_err *err);

/* Push blob d from cas to ref's repository: HEAD (unless skipped), then a
 * mount if mount_from is set, then an upload as o->upload says. The
 * registry's Docker-Content-Digest must confirm d. o may be NULL.
 * *ret_result (may be NULL) says which path was taken. */
int registry_push_blob(struct registry *reg, const struct registry_ref *ref, struct cas *cas,
		       const struct digest *d, const struct registry_push_opts *o,
		       enum registry_push_result *ret_result, struct kiln_err *err);
/* The same for len bytes at data (borrowed). d may be NULL: it is
 * computed; if given, it must match (-EBADMSG). */
int registry_push_blob_buf(struct registry *reg, const struct registry_ref *ref, const void *data,
			   size_t len, const struct digest *d, const struct registry_push_opts *o,
			   enum registry_push_result *ret_result, struct kiln_err *err);

/* Make blob desc of src's repository present in dst's repository, as
 * `imagetools create` does for sources from other repositories: nothing
 * when dst has it (or is the same repository); else, on the same registry
 * host, a cross-repository mount; else (another registry, or a mount the
 * registry refused) a download into cas (verified, kept there) and an
 * upload to dst. *ret_result (may be NULL) says which: EXISTED, MOUNTED or
 * UPLOADED. Errors name the blob and both references. */
int registry_copy_blob(struct registry *reg, const struct registry_ref *src,
		       const struct registry_ref *dst, const struct oci_descriptor *desc,
		       struct cas *cas, enum registry_push_result *ret_result, struct kiln_err *err);

/* PUT a manifest or index (len bytes of media_type at data) under ref's
 * digest when it has one (which must be the data's) and under its tag
 * otherwise. The registry's Docker-Content-Digest, when sent, must agree.
 * *ret_digest (may be NULL) gets the data's digest. */
int registry_put_manifest(struct registry *reg, const struct registry_ref *ref,
			  const char *media_type, const void *data, size_t len,
			  struct digest *ret_digest, struct kiln_err *err);

#endif
