/* Registry client for the Docker Registry HTTP API v2 and the OCI
 * distribution spec: the client's life cycle and Docker config.json
 * credentials, resolving references to manifests for a platform, blob
 * downloads into the blob store, and uploads. HTTP, auth, redirects and
 * retries are in registry-http.c; parsing in registry-ref.c.
 *
 * Invariants: a document fetched by digest is checked against it, one
 * fetched by tag against the Docker-Content-Digest the registry sent; a
 * blob is stored only if it has its descriptor's digest and size; what we
 * upload is confirmed by the registry's Docker-Content-Digest.
 *
 * In-process de-duplication: a blob being downloaded through a struct
 * registry is registered in reg->inflight (keyed by store and digest);
 * another caller wanting it waits on reg->cond and then finds it in the
 * store, or fetches it itself if the first download failed. Across
 * processes the store's atomic renames make a second download harmless.
 *
 * Not here: credential helpers (credsStore, credHelpers), identity tokens
 * (OAuth refresh), client certificates, mirrors, schema 1 manifests,
 * resuming a broken upload. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "oci.h"
#include "registry-internal.h"
#include "util.h"

#define REG_DEFAULT_UA "kiln/0.1"
#define REG_CONFIG_MAX (1u << 20)       /* docker config.json */
#define REG_INDEX_DEPTH_MAX 4

#define ACCEPT_MANIFESTS OCI_MT_MANIFEST ", " OCI_MT_INDEX ", " DOCKER_MT_MANIFEST ", " DOCKER_MT_LIST
#define DOCKER_MT_SCHEMA1 "application/vnd.docker.distribution.manifest.v1"
#define B64_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

/* Standard base64 with optional padding; -EINVAL on anything else. The
 * output is NUL-terminated and at most 3/4 of the input. */
static int
base64_decode(const char *s, char **ret, size_t *ret_len)
{
	size_t n = strlen(s), o = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *out;

	while (n > 0 && s[n - 1] == '=')
		n--;
	out = malloc(n * 3 / 4 + 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *p = s[i] ? strchr(B64_ALPHABET, s[i]) : NULL;

		if (!p) {
			free(out);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t) (p - B64_ALPHABET);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char) ((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*ret = out;
	*ret_len = o;
	return 0;
}

/* ---- the client ---- */

/* Docker Hub goes by several names; credentials and challenges use one. */
static void
canonical_host(const char *s, size_t n, char out[REGISTRY_DOMAIN_SIZE])
{
	copy_lower(out, REGISTRY_DOMAIN_SIZE, s, n);
	if (strcmp(out, "index.docker.io") == 0 || strcmp(out, "registry-1.docker.io") == 0 ||
	    strcmp(out, "registry.hub.docker.com") == 0)
		strcpy(out, "docker.io");
}

/* A config.json "auths" key: "https://index.docker.io/v1/", "host:port",
 * "http://host:port/path". */
static void
auths_key_host(const char *key, char out[REGISTRY_DOMAIN_SIZE])
{
	const char *p = key;

	if (strncasecmp(p, "https://", 8) == 0)
		p += 8;
	else if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	canonical_host(p, strcspn(p, "/"), out);
}

static void
cred_free(struct cred *c)
{
	if (!c)
		return;
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	free(c->username);
	free(c->password);
	free(c);
}

static int
cred_add(struct registry *reg, const char *host, const char *user, const char *pass)
{
	struct cred *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	canonical_host(host, strlen(host), c->host);
	c->username = strdup(user);
	c->password = strdup(pass);
	if (!c->username || !c->password) {
		cred_free(c);
		return -ENOMEM;
	}
	for (struct cred **pp = &reg->creds; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->host, c->host) == 0) {
			struct cred *old = *pp;

			c->next = old->next;
			*pp = c;
			cred_free(old);
			return 0;
		}
	}
	c->next = reg->creds;
	reg->creds = c;
	return 0;
}

static int
load_docker_config(struct registry *reg, const char *path, bool must_exist, struct kiln_err *err)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_json_ json_t *j = NULL;
	json_error_t je;
	json_t *auths, *v;
	const char *key;
	size_t len;
	int r;

	r = kiln_read_file_at(AT_FDCWD, path, REG_CONFIG_MAX, &buf, &len);
	if (r == -ENOENT && !must_exist)
		return 0;
	if (r < 0)
		return kiln_err_errno(err, -r, "read docker config '%s'", path);
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!j || !json_is_object(j))
		return kiln_err_set(err, EINVAL, "docker config '%s': %s", path,
				    j ? "not a JSON object" : je.text);
	reg->config_path = strdup(path);
	if (!reg->config_path)
		return kiln_err_set(err, ENOMEM, "docker config '%s'", path);
	auths = json_object_get(j, "auths");
	if (!auths)
		return 0;
	if (!json_is_object(auths))
		return kiln_err_set(err, EINVAL, "docker config '%s': 'auths' is not an object", path);
	json_object_foreach(auths, key, v) {
		const char *a = json_string_value(json_object_get(v, "auth"));
		const char *u = json_string_value(json_object_get(v, "username"));
		const char *p = json_string_value(json_object_get(v, "password"));
		_cleanup_free_ char *dec = NULL;
		char host[REGISTRY_DOMAIN_SIZE];
		size_t dlen;

		if (!json_is_object(v))
			return kiln_err_set(err, EINVAL,
					    "docker config '%s': auths['%.100s'] is not an object", path,
					    key);
		auths_key_host(key, host);
		if (a && *a) {
			char *colon;

			if (base64_decode(a, &dec, &dlen) < 0 || strlen(dec) != dlen ||
			    !(colon = strchr(dec, ':')))
				return kiln_err_set(err, EINVAL, "docker config '%s': "
						    "auths['%.100s'].auth is not base64 of user:password",
						    path, key);
			*colon = '\0';
			r = cred_add(reg, host, dec, colon + 1);
			explicit_bzero(colon + 1, strlen(colon + 1));
		} else if (u && p) {
			r = cred_add(reg, host, u, p);
		} else {
			/* {} entries are what docker leaves with a credsStore */
			continue;
		}
		if (r < 0)
			return kiln_err_set(err, -r, "docker config '%s'", path);
	}
	return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void
curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int
registry_new(const struct registry_opts *o, struct registry **ret_reg, struct kiln_err *err)
{
	static const struct registry_opts defaults = { 0 };
	struct registry *reg;
	int r;

	if (!o)
		o = &defaults;
	(void) pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return kiln_err_set(err, EIO, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
	reg = calloc(1, sizeof(*reg));
	if (!reg)
		return kiln_err_set(err, ENOMEM, "new registry client");
	pthread_mutex_init(&reg->lock, NULL);
	pthread_cond_init(&reg->cond, NULL);
	reg->max_parallel = o->max_parallel ? o->max_parallel : 4;
	reg->retries = o->retries ? o->retries : 4;
	reg->retry_delay_ms = o->retry_delay_ms ? o->retry_delay_ms : 200;
	reg->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 30000;
	reg->stall_timeout_s = o->stall_timeout_s > 0 ? o->stall_timeout_s : 60;
	reg->chunk_size = o->chunk_size ? o->chunk_size : 8u << 20;
	reg->chunk_threshold = o->chunk_threshold ? o->chunk_threshold : 64u << 20;
	reg->user_agent = strdup(o->user_agent ? o->user_agent : REG_DEFAULT_UA);
	if (!reg->user_agent) {
		r = kiln_err_set(err, ENOMEM, "new registry client");
		goto out_free;
	}
	for (const char *const *p = o->insecure; p && *p; p++)
		reg->n_insecure++;
	reg->insecure = calloc(reg->n_insecure + 1, sizeof(char *));
	if (!reg->insecure) {
		r = kiln_err_set(err, ENOMEM, "new registry client");
		goto out_free;
	}
	for (size_t i = 0; i < reg->n_insecure; i++) {
		char h[REGISTRY_DOMAIN_SIZE];

		canonical_host(o->insecure[i], strlen(o->insecure[i]), h);
		reg->insecure[i] = strdup(h);
		if (!reg->insecure[i]) {
			r = kiln_err_set(err, ENOMEM, "new registry client");
			goto out_free;
		}
	}

	if (o->docker_config) {
		if (o->docker_config[0]) {
			r = load_docker_config(reg, o->docker_config, true, err);
			if (r < 0)
				goto out_free;
		}
	} else {
		_cleanup_free_ char *path = NULL;
		const char *dir = getenv("DOCKER_CONFIG"), *home = getenv("HOME");

		if (dir && *dir)
			path = kiln_strdupf("%s/config.json", dir);
		else if (home && *home)
			path = kiln_strdupf("%s/.docker/config.json", home);
		if (path) {
			r = load_docker_config(reg, path, false, err);
			if (r < 0)
				goto out_free;
		}
	}
	*ret_reg = reg;
	return 0;

out_free:
	registry_free(reg);
	return r;
}

void
registry_free(struct registry *reg)
{
	if (!reg)
		return;
	while (reg->creds) {
		struct cred *c = reg->creds;

		reg->creds = c->next;
		cred_free(c);
	}
	while (reg->auths) {
		struct host_auth *a = reg->auths;

		reg->auths = a->next;
		free(a);
	}
	while (reg->tokens) {
		struct token *t = reg->tokens;

		reg->tokens = t->next;
		explicit_bzero(t->value, strlen(t->value));
		free(t->value);
		free(t->scope);
		free(t);
	}
	/* inflight is empty unless a caller broke the no-concurrent-call rule */
	while (reg->inflight) {
		struct inflight *f = reg->inflight;

		reg->inflight = f->next;
		free(f);
	}
	for (size_t i = 0; i < reg->n_pool; i++)
		curl_multi_cleanup(reg->pool[i]);
	for (size_t i = 0; reg->insecure && i < reg->n_insecure; i++)
		free(reg->insecure[i]);
	free(reg->insecure);
	free(reg->user_agent);
	free(reg->config_path);
	pthread_cond_destroy(&reg->cond);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

int
registry_set_credentials(struct registry *reg, const char *host, const char *username,
			 const char *password, struct kiln_err *err)
{
	int r;

	if (!host || !*host || !username || !password)
		return kiln_err_set(err, EINVAL, "credentials need a host, a username and a password");
	pthread_mutex_lock(&reg->lock);
	r = cred_add(reg, host, username, password);
	pthread_mutex_unlock(&reg->lock);
	if (r < 0)
		return kiln_err_set(err, -r, "set credentials for '%s'", host);
	return 0;
}

void
registry_get_stats(struct registry *reg, struct registry_stats *ret)
{
	uint64_t *dst = (uint64_t *) ret;
	uint64_t *src = (uint64_t *) &reg->stats;

	for (size_t i = 0; i < sizeof(*ret) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---- endpoints ---- */

static int
endpoint_init(struct registry *reg, const struct registry_ref *ref, struct endpoint *ep,
	      struct kiln_err *err)
{
	const char *api;

	memset(ep, 0, sizeof(*ep));
	ep->ref = ref;
	registry_ref_fmt(ref, ep->refstr, sizeof(ep->refstr));
	canonical_host(ref->domain, strlen(ref->domain), ep->host);
	api = strcmp(ep->host, "docker.io") == 0 ? "registry-1.docker.io" : ref->domain;
	snprintf(ep->base, sizeof(ep->base), "%s://%s", reg_plain_http(reg, ep->host) ? "http" : "https",
		 api);
	snprintf(ep->repo_url, sizeof(ep->repo_url), "%s/v2/%s", ep->base, ref->path);
	if (reg_url_origin(ep->base, &ep->origin) < 0)
		return kiln_err_set(err, EINVAL, "'%s': cannot make a URL of registry host '%s'",
				    ep->refstr, ref->domain);
	return 0;
}

/* ---- in-flight blob downloads ---- */

static struct inflight **
inflight_find(struct registry *reg, const struct cas *cas, const struct digest *d)
{
	for (struct inflight **pp = &reg->inflight; *pp; pp = &(*pp)->next)
		if ((*pp)->cas == cas && digest_equal(&(*pp)->digest, d))
			return pp;
	return NULL;
}

/* Called with reg->lock held. */
static int
inflight_add(struct registry *reg, const struct cas *cas, const struct digest *d)
{
	struct inflight *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->cas = cas;
	f->digest = *d;
	f->next = reg->inflight;
	reg->inflight = f;
	return 0;
}

void
reg_inflight_remove(struct registry *reg, const struct cas *cas, const struct digest *d)
{
	struct inflight **pp, *f;

	pthread_mutex_lock(&reg->lock);
	pp = inflight_find(reg, cas, d);
	if (pp) {
		f = *pp;
		*pp = f->next;
		free(f);
	}
	pthread_cond_broadcast(&reg->cond);
	pthread_mutex_unlock(&reg->lock);
}

/* ---- pulling ---- */

void
registry_doc_release(struct registry_doc *doc)
{
	if (!doc)
		return;
	free(doc->data);
	memset(doc, 0, sizeof(*doc));
}

void
registry_image_release(struct registry_image *img)
{
	if (!img)
		return;
	registry_doc_release(&img->manifest);
	registry_doc_release(&img->config);
	memset(img, 0, sizeof(*img));
}

static bool
is_index_mt(const char *mt)
{
	return strcmp(mt, OCI_MT_INDEX) == 0 || strcmp(mt, DOCKER_MT_LIST) == 0;
}

static bool
is_manifest_mt(const char *mt)
{
	return strcmp(mt, OCI_MT_MANIFEST) == 0 || strcmp(mt, DOCKER_MT_MANIFEST) == 0;
}

static char *
repo_scope(const char *path, const char *actions)
{
	return kiln_strdupf("repository:%s:%s", path, actions);
}

/* The media type of a fetched manifest: its own mediaType field, else a
 * Content-Type we know, else its shape. */
static int
manifest_media_type(const char *data, size_t len, const char *ctype, char out[128],
		    struct kiln_err *err)
{
	_cleanup_json_ json_t *j = NULL;
	json_error_t je;
	const char *mt;

	j = json_loadb(data, len, 0, &je);
	if (!j || !json_is_object(j))
		return kiln_err_set(err, EPROTO, "manifest is not a JSON object%s%s", j ? "" : ": ",
				    j ? "" : je.text);
	mt = json_string_value(json_object_get(j, "mediaType"));
	if (json_integer_value(json_object_get(j, "schemaVersion")) == 1 ||
	    strncmp(ctype, DOCKER_MT_SCHEMA1, strlen(DOCKER_MT_SCHEMA1)) == 0)
		return kiln_err_set(err, ENOTSUP, "schema 1 manifests are not supported");
	if (!mt || !*mt) {
		if (is_index_mt(ctype) || is_manifest_mt(ctype))
			mt = ctype;
		else if (json_object_get(j, "manifests"))
			mt = OCI_MT_INDEX;
		else if (json_object_get(j, "config"))
			mt = OCI_MT_MANIFEST;
		else
			return kiln_err_set(err, EPROTO, "cannot tell what kind of document the "
					    "manifest is (Content-Type '%s')", ctype);
	}
	if (strlen(mt) >= 128)
		return kiln_err_set(err, EPROTO, "media type of %zu bytes", strlen(mt));
	snprintf(out, 128, "%s", mt);
	return 0;
}

/* GET manifests/<reference>. expect (may be NULL) is the digest the bytes
 * must have, expect_size (-1: any) their length. */
static int
manifest_get(struct registry *reg, const struct endpoint *ep, const char *reference,
	     const struct digest *expect, int64_t expect_size, struct registry_doc *ret,
	     struct kiln_err *err)
{
	_cleanup_free_ char *scope = repo_scope(ep->ref->path, "pull");
	struct registry_doc doc = { 0 };
	char ds[DIGEST_STR_SIZE], es[DIGEST_STR_SIZE];
	struct digest hd;
	struct xfer x;
	int r;

	if (expect_size > (int64_t) REGISTRY_MANIFEST_MAX)
		return kiln_err_set(err, EFBIG, "manifest %s is %lld bytes, over the limit of %u",
				    reference, (long long) expect_size, REGISTRY_MANIFEST_MAX);
	reg_xfer_init(&x, reg, ep, "GET", kiln_strdupf("%s/manifests/%s", ep->repo_url, reference));
	if (!x.url || !scope)
		return kiln_err_set(err, ENOMEM, "manifest request");
	x.accept = ACCEPT_MANIFESTS;
	x.scope = scope;
	x.sink = SINK_MEM;
	x.mem_max = expect_size >= 0 ? (size_t) expect_size : REGISTRY_MANIFEST_MAX;
	r = reg_run_one(reg, &x, err);
	if (r < 0)
		goto out;
	digest_buf(x.mem ? x.mem : "", x.mem_len, &doc.digest);
	if (expect && !digest_equal(&doc.digest, expect)) {
		r = kiln_err_set(err, EBADMSG, "manifest content has digest %s, expected %s",
				 digest_fmt(&doc.digest, ds), digest_fmt(expect, es));
		goto out;
	}
	if (!expect && x.dcd[0] && strncmp(x.dcd, "sha256:", 7) == 0 &&
	    (digest_parse(x.dcd, &hd) < 0 || !digest_equal(&hd, &doc.digest))) {
		r = kiln_err_set(err, EBADMSG, "manifest content has digest %s, the registry says %s",
				 digest_fmt(&doc.digest, ds), x.dcd);
		goto out;
	}
	if (expect_size >= 0 && x.mem_len != (size_t) expect_size) {
		r = kiln_err_set(err, EBADMSG, "manifest %s has %zu bytes, its descriptor says %lld",
				 reference, x.mem_len, (long long) expect_size);
		goto out;
	}
	r = manifest_media_type(x.mem ? x.mem : "", x.mem_len, x.ctype, doc.media_type, err);
	if (r < 0)
		goto out;
	doc.data = STEAL_PTR(x.mem);
	doc.len = x.mem_len;
	*ret = doc;
out:
	reg_xfer_release(&x);
	return r;
}

static const char *
ref_reference(const struct registry_ref *ref, char buf[DIGEST_STR_SIZE])
{
	return ref->has_digest ? digest_fmt(&ref->digest, buf) : ref->tag;
}

int
registry_get_manifest(struct registry *reg, const struct registry_ref *ref,
		      struct registry_doc *ret, struct kiln_err *err)
{
	char rs[DIGEST_STR_SIZE];
	struct endpoint ep;
	int r;

	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	r = manifest_get(reg, &ep, ref_reference(ref, rs), ref->has_digest ? &ref->digest : NULL, -1,
			 ret, err);
	if (r < 0)
		return kiln_err_wrap(err, "manifest of '%s'", ep.refstr);
	return 0;
}

int
registry_head_manifest(struct registry *reg, const struct registry_ref *ref,
		       struct oci_descriptor *ret_desc, struct kiln_err *err)
{
	_cleanup_free_ char *scope = repo_scope(ref->path, "pull");
	struct oci_descriptor d = { 0 };
	char rs[DIGEST_STR_SIZE];
	struct endpoint ep;
	struct xfer x;
	int r;

	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	reg_xfer_init(&x, reg, &ep, "HEAD",
		      kiln_strdupf("%s/manifests/%s", ep.repo_url, ref_reference(ref, rs)));
	if (!x.url || !scope)
		return kiln_err_set(err, ENOMEM, "manifest request");
	x.accept = ACCEPT_MANIFESTS;
	x.scope = scope;
	x.allow_404 = true;
	r = reg_run_one(reg, &x, err);
	if (r < 0) {
		reg_xfer_release(&x);
		return kiln_err_wrap(err, "manifest of '%s'", ep.refstr);
	}
	if (x.status == 404) {
		reg_xfer_release(&x);
		return 0;
	}
	if (digest_parse(x.dcd, &d.digest) == 0 && x.clen >= 0 &&
	    (is_index_mt(x.ctype) || is_manifest_mt(x.ctype))) {
		snprintf(d.media_type, sizeof(d.media_type), "%s", x.ctype);
		d.size = x.clen;
		reg_xfer_release(&x);
		if (ref->has_digest && !digest_equal(&d.digest, &ref->digest))
			return kiln_err_set(err, EBADMSG,
					    "manifest of '%s': the registry says digest %.80s",
					    ep.refstr, digest_fmt(&d.digest, rs));
	} else {
		struct registry_doc doc;

		/* Not enough in the headers: ask for the document itself. */
		reg_xfer_release(&x);
		r = manifest_get(reg, &ep, ref_reference(ref, rs), ref->has_digest ? &ref->digest : NULL,
				 -1, &doc, err);
		if (r < 0)
			return kiln_err_wrap(err, "manifest of '%s'", ep.refstr);
		snprintf(d.media_type, sizeof(d.media_type), "%s", doc.media_type);
		d.digest = doc.digest;
		d.size = (int64_t) doc.len;
		registry_doc_release(&doc);
	}
	*ret_desc = d;
	return 1;
}

/* GET blobs/<d> into memory; expect_size -1: any up to max. */
static int
blob_get(struct registry *reg, const struct endpoint *ep, const struct digest *d, size_t max,
	 int64_t expect_size, struct registry_doc *ret, struct kiln_err *err)
{
	_cleanup_free_ char *scope = repo_scope(ep->ref->path, "pull");
	struct registry_doc doc = { 0 };
	char ds[DIGEST_STR_SIZE], gs[DIGEST_STR_SIZE];
	struct xfer x;
	int r;

	digest_fmt(d, ds);
	if (expect_size >= 0 && (uint64_t) expect_size > max)
		return kiln_err_set(err, EFBIG, "blob %s is %lld bytes, over the limit of %zu", ds,
				    (long long) expect_size, max);
	reg_xfer_init(&x, reg, ep, "GET", kiln_strdupf("%s/blobs/%s", ep->repo_url, ds));
	if (!x.url || !scope)
		return kiln_err_set(err, ENOMEM, "blob request");
	x.scope = scope;
	x.sink = SINK_MEM;
	x.mem_max = expect_size >= 0 ? (size_t) expect_size : max;
	r = reg_run_one(reg, &x, err);
	if (r < 0)
		goto out;
	digest_buf(x.mem ? x.mem : "", x.mem_len, &doc.digest);
	if (!digest_equal(&doc.digest, d)) {
		r = kiln_err_set(err, EBADMSG, "blob content has digest %s, expected %s",
				 digest_fmt(&doc.digest, gs), ds);
		goto out;
	}
	if (expect_size >= 0 && x.mem_len != (size_t) expect_size) {
		r = kiln_err_set(err, EBADMSG, "blob %s has %zu bytes, its descriptor says %lld", ds,
				 x.mem_len, (long long) expect_size);
		goto out;
	}
	doc.data = STEAL_PTR(x.mem);
	doc.len = x.mem_len;
	*ret = doc;
out:
	reg_xfer_release(&x);
	return r;
}

int
registry_get_blob(struct registry *reg, const struct registry_ref *ref, const struct digest *d,
		  size_t max, struct registry_doc *ret, struct kiln_err *err)
{
	char ds[DIGEST_STR_SIZE];
	struct endpoint ep;
	int r;

	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	r = blob_get(reg, &ep, d, max, -1, ret, err);
	if (r < 0)
		return kiln_err_wrap(err, "blob %s of '%s'", digest_fmt(d, ds), ep.refstr);
	return 0;
}

/* The config of image manifest doc, and the platform it names. */
static int
manifest_config(struct registry *reg, const struct endpoint *ep, const struct registry_doc *doc,
		struct registry_doc *ret_cfg, struct platform *ret_p, struct kiln_err *err)
{
	struct oci_manifest m;
	struct registry_doc cfg = { 0 };
	_cleanup_json_ json_t *cj = NULL;
	const char *os, *arch, *variant;
	char ps[3 * 64];
	int r;

	r = oci_manifest_parse(doc->data, doc->len, &m, err);
	if (r < 0)
		return r;
	r = blob_get(reg, ep, &m.config.digest, OCI_JSON_MAX, m.config.size, &cfg, err);
	oci_manifest_release(&m);
	if (r < 0)
		return kiln_err_wrap(err, "config");
	r = oci_config_parse(cfg.data, cfg.len, &cj, err);
	if (r < 0) {
		registry_doc_release(&cfg);
		return kiln_err_wrap(err, "config");
	}
	os = json_string_value(json_object_get(cj, "os"));
	arch = json_string_value(json_object_get(cj, "architecture"));
	variant = json_string_value(json_object_get(cj, "variant"));
	snprintf(ps, sizeof(ps), "%.60s/%.60s%s%.60s", os ? os : "", arch ? arch : "",
		 variant && *variant ? "/" : "", variant && *variant ? variant : "");
	if (platform_parse(ps, ret_p) < 0) {
		registry_doc_release(&cfg);
		return kiln_err_set(err, EINVAL, "config: invalid platform '%s'", ps);
	}
	snprintf(cfg.media_type, sizeof(cfg.media_type), "%s",
		 strcmp(doc->media_type, DOCKER_MT_MANIFEST) == 0 ? DOCKER_MT_CONFIG : OCI_MT_CONFIG);
	*ret_cfg = cfg;
	return 0;
}

/* Index entries without a platform, tried in order through their
 * configs. 1 and *img filled when one ranks for want, 0 when none does. */
static int
resolve_unplatformed(struct registry *reg, const struct endpoint *ep, const struct oci_index *ix,
		     const struct platform *want, struct registry_image *img, struct kiln_err *err)
{
	for (size_t i = 0; i < ix->n_manifests; i++) {
		const struct oci_descriptor *d = &ix->manifests[i];
		struct registry_doc doc = { 0 }, cfg = { 0 };
		char ds[DIGEST_STR_SIZE];
		struct platform p;
		int r;

		if (d->has_platform || !is_manifest_mt(d->media_type))
			continue;
		r = manifest_get(reg, ep, digest_fmt(&d->digest, ds), &d->digest, d->size, &doc, err);
		if (r < 0)
			return r;
		r = is_manifest_mt(doc.media_type) ? manifest_config(reg, ep, &doc, &cfg, &p, err) :
			kiln_err_set(err, EPROTO, "manifest %s is a '%s'", ds, doc.media_type);
		if (r < 0) {
			registry_doc_release(&doc);
			return r;
		}
		if (registry_platform_rank(want, &p) >= 0) {
			img->manifest = doc;
			img->config = cfg;
			img->platform = p;
			return 1;
		}
		registry_doc_release(&doc);
		registry_doc_release(&cfg);
	}
	return 0;
}

static void
index_platforms(const struct oci_index *ix, char *out, size_t size)
{
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < ix->n_manifests && n + 1 < size; i++) {
		char ps[PLATFORM_STR_SIZE];

		if (!ix->manifests[i].has_platform)
			continue;
		n += (size_t) snprintf(out + n, size - n, "%s%s", n ? ", " : "",
				       platform_fmt(&ix->manifests[i].platform, ps));
	}
	if (!out[0])
		snprintf(out, size, "none named");
}

int
registry_resolve(struct registry *reg, const struct registry_ref *ref, const struct platform *p,
		 struct registry_image *ret, struct kiln_err *err)
{
	struct registry_image img = { 0 };
	struct registry_doc doc = { 0 };
	struct platform want, chosen = { 0 };
	char rs[DIGEST_STR_SIZE], ps[PLATFORM_STR_SIZE];
	bool by_index = false;
	struct endpoint ep;
	int r;

	if (p)
		want = *p;
	else
		platform_host(&want);
	platform_fmt(&want, ps);
	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	r = manifest_get(reg, &ep, ref_reference(ref, rs), ref->has_digest ? &ref->digest : NULL, -1,
			 &doc, err);
	if (r < 0)
		goto out;
	img.digest = doc.digest;
	snprintf(img.media_type, sizeof(img.media_type), "%s", doc.media_type);

	for (unsigned depth = 0;; depth++) {
		if (is_index_mt(doc.media_type)) {
			struct oci_index ix;
			struct oci_descriptor d;
			char avail[256];
			size_t i;

			if (depth >= REG_INDEX_DEPTH_MAX) {
				r = kiln_err_set(err, EPROTO, "indexes nested more than %d deep",
						 REG_INDEX_DEPTH_MAX);
				goto out;
			}
			r = oci_index_parse(doc.data, doc.len, &ix, err);
			if (r < 0)
				goto out;
			if (registry_index_select(&ix, &want, &i) < 0) {
				r = resolve_unplatformed(reg, &ep, &ix, &want, &img, err);
				if (r == 0) {
					index_platforms(&ix, avail, sizeof(avail));
					r = kiln_err_set(err, ENOENT,
							 "no manifest for platform %s (the index has %s)",
							 ps, avail);
				}
				oci_index_release(&ix);
				if (r < 0)
					goto out;
				break;
			}
			d = ix.manifests[i];
			chosen = d.platform;
			by_index = true;
			oci_index_release(&ix);
			registry_doc_release(&doc);
			r = manifest_get(reg, &ep, digest_fmt(&d.digest, rs), &d.digest, d.size, &doc,
					 err);
			if (r < 0)
				goto out;
			continue;
		}
		if (is_manifest_mt(doc.media_type)) {
			struct platform cp;

			r = manifest_config(reg, &ep, &doc, &img.config, &cp, err);
			if (r < 0)
				goto out;
			if (!by_index) {
				char cs[PLATFORM_STR_SIZE];

				if (registry_platform_rank(&want, &cp) < 0) {
					r = kiln_err_set(err, ENOENT,
							 "the image is for platform %s, not %s",
							 platform_fmt(&cp, cs), ps);
					goto out;
				}
				chosen = cp;
			}
			img.manifest = doc;
			memset(&doc, 0, sizeof(doc));
			img.platform = chosen;
			break;
		}
		r = kiln_err_set(err, ENOTSUP, "'%s' is not an image manifest or index", doc.media_type);
		goto out;
	}
	*ret = img;
	return 0;

out:
	registry_doc_release(&doc);
	registry_image_release(&img);
	return kiln_err_wrap(err, "resolve '%s' for %s", ep.refstr, ps);
}

int
registry_fetch_blobs(struct registry *reg, const struct registry_ref *ref,
		     const struct oci_descriptor *descs, size_t n, struct cas *cas,
		     struct kiln_err *err)
{
	_cleanup_free_ bool *settled = NULL;
	_cleanup_free_ struct xfer *xfers = NULL;
	_cleanup_free_ struct xfer **xs = NULL;
	_cleanup_free_ char *scope = NULL;
	struct endpoint ep;
	int r;

	if (n == 0)
		return 0;
	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	settled = calloc(n, sizeof(*settled));
	xfers = calloc(n, sizeof(*xfers));
	xs = calloc(n, sizeof(*xs));
	scope = repo_scope(ref->path, "pull");
	if (!settled || !xfers || !xs || !scope)
		return kiln_err_set(err, ENOMEM, "fetch blobs");
	for (size_t i = 0; i < n; i++) {
		if (descs[i].size < 0)
			return kiln_err_set(err, EINVAL, "blob with negative size");
		for (size_t j = 0; j < i && !settled[i]; j++)
			settled[i] = digest_equal(&descs[i].digest, &descs[j].digest);
	}

	for (;;) {
		size_t mine = 0, waiting = 0;

		/* Claim what nobody is fetching and the store lacks. The
		 * store is asked under the lock, after the in-flight table,
		 * because a fetcher commits before it leaves the table. */
		pthread_mutex_lock(&reg->lock);
		for (size_t i = 0; i < n && r == 0; i++) {
			struct xfer *x;
			char ds[DIGEST_STR_SIZE];

			if (settled[i])
				continue;
			if (inflight_find(reg, cas, &descs[i].digest)) {
				waiting++;
				continue;
			}
			if (cas_has(cas, &descs[i].digest)) {
				settled[i] = true;
				continue;
			}
			x = &xfers[mine];
			reg_xfer_init(x, reg, &ep, "GET",
				      kiln_strdupf("%s/blobs/%s", ep.repo_url,
						   digest_fmt(&descs[i].digest, ds)));
			if (!x->url || inflight_add(reg, cas, &descs[i].digest) < 0) {
				r = kiln_err_set(err, ENOMEM, "fetch blobs");
				reg_xfer_release(x);
				break;
			}
			x->claimed = true;
			x->scope = scope;
			x->sink = SINK_CAS;
			x->cas = cas;
			x->desc = &descs[i];
			xs[mine++] = x;
			settled[i] = true;      /* ours now: done or failed */
		}
		pthread_mutex_unlock(&reg->lock);

		if (r == 0 && mine > 0)
			r = reg_run_xfers(reg, xs, mine, reg->max_parallel, err);
		for (size_t k = 0; k < mine; k++)
			reg_xfer_release(xs[k]);
		if (r < 0)
			return kiln_err_wrap(err, "pull blobs of '%s'", ep.refstr);
		if (waiting == 0)
			return 0;

		/* Wait until the other fetchers are done, then look again:
		 * their blobs are in the store, or we fetch them ourselves. */
		pthread_mutex_lock(&reg->lock);
		for (;;) {
			bool busy = false;

			for (size_t i = 0; i < n && !busy; i++)
				busy = !settled[i] && inflight_find(reg, cas, &descs[i].digest);
			if (!busy)
				break;
			pthread_cond_wait(&reg->cond, &reg->lock);
		}
		pthread_mutex_unlock(&reg->lock);
	}
}

/* ---- pushing ---- */

struct body_src {
	const unsigned char *data;      /* or fd */
	int fd;
	uint64_t len;
};

static void
xfer_set_body(struct xfer *x, const struct body_src *src, uint64_t off, uint64_t len)
{
	x->has_body = true;
	x->body = src->data;
	x->body_fd = src->fd;
	x->body_off = off;
	x->body_len = len;
}

static int
blob_exists(struct registry *reg, const struct endpoint *ep, const struct digest *d,
	    const char *scope, int64_t *ret_size, struct kiln_err *err)
{
	char ds[DIGEST_STR_SIZE];
	struct xfer x;
	int r;

	reg_xfer_init(&x, reg, ep, "HEAD", kiln_strdupf("%s/blobs/%s", ep->repo_url, digest_fmt(d, ds)));
	if (!x.url)
		return kiln_err_set(err, ENOMEM, "blob request");
	x.scope = scope;
	x.allow_404 = true;
	r = reg_run_one(reg, &x, err);
	if (r == 0) {
		r = x.status == 404 ? 0 : 1;
		if (r == 1 && ret_size)
			*ret_size = x.clen;
	}
	reg_xfer_release(&x);
	return r;
}

int
registry_blob_exists(struct registry *reg, const struct registry_ref *ref, const struct digest *d,
		     int64_t *ret_size, struct kiln_err *err)
{
	_cleanup_free_ char *scope = repo_scope(ref->path, "pull");
	char ds[DIGEST_STR_SIZE];
	struct endpoint ep;
	int r;

	if (!scope)
		return kiln_err_set(err, ENOMEM, "blob request");
	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	r = blob_exists(reg, &ep, d, scope, ret_size, err);
	if (r < 0)
		return kiln_err_wrap(err, "blob %s in '%s'", digest_fmt(d, ds), ep.refstr);
	return r;
}

/* The Docker-Content-Digest of a final upload answer, when sent, must be d. */
static int
check_dcd(const struct xfer *x, const struct digest *d, struct kiln_err *err)
{
	struct digest got;
	char ds[DIGEST_STR_SIZE];

	if (!x->dcd[0] || strncmp(x->dcd, "sha256:", 7) != 0)
		return 0;
	if (digest_parse(x->dcd, &got) < 0 || !digest_equal(&got, d))
		return kiln_err_set(err, EBADMSG, "the registry stored %.80s, we sent %s", x->dcd,
				    digest_fmt(d, ds));
	return 0;
}

/* The upload URL from a 202's Location, resolved against the request. */
static char *
next_location(const struct xfer *x, struct kiln_err *err)
{
	char u[384];
	char *s;

	if (!x->location) {
		kiln_err_set(err, EPROTO, "%s %s: %ld without a Location", x->method,
			     reg_url_for_msg(x->url, u, sizeof(u)), x->status);
		return NULL;
	}
	s = reg_url_join(x->url, x->location);
	if (!s)
		kiln_err_set(err, EPROTO, "%s %s: unusable Location '%.100s'", x->method,
			     reg_url_for_msg(x->url, u, sizeof(u)), x->location);
	return s;
}

static int
expect_status(const struct xfer *x, long want, struct kiln_err *err)
{
	char u[384];

	if (x->status == want)
		return 0;
	return kiln_err_set(err, EPROTO, "%s %s: expected %ld, got %ld %s", x->method,
			    reg_url_for_msg(x->url, u, sizeof(u)), want, x->status, x->reason);
}

/* Upload src to the session at *session (owned, replaced as the registry
 * moves it), as one PUT or as PATCH chunks and a closing PUT. */
static int
upload(struct registry *reg, const struct endpoint *ep, char **session, const struct body_src *src,
       const struct digest *d, bool chunked, size_t chunk, const char *scope, struct kiln_err *err)
{
	char ds[DIGEST_STR_SIZE];
	struct xfer x;
	uint64_t off = 0;
	int r;

	digest_fmt(d, ds);
	while (chunked && off < src->len) {
		uint64_t n = src->len - off < chunk ? src->len - off : chunk;
		char want[64];

		reg_xfer_init(&x, reg, ep, "PATCH", STEAL_PTR(*session));
		x.scope = scope;
		x.content_type = "application/octet-stream";
		snprintf(x.extra_header, sizeof(x.extra_header), "Content-Range: %llu-%llu",
			 (unsigned long long) off, (unsigned long long) (off + n - 1));
		xfer_set_body(&x, src, off, n);
		r = reg_run_one(reg, &x, err);
		if (r == 0)
			r = expect_status(&x, 202, err);
		snprintf(want, sizeof(want), "0-%llu", (unsigned long long) (off + n - 1));
		if (r == 0 && x.range[0] && strcmp(x.range, want) != 0)
			r = kiln_err_set(err, EPROTO, "after bytes %s the registry has %s", want,
					 x.range);
		if (r == 0) {
			*session = next_location(&x, err);
			if (!*session)
				r = -err->code;
		}
		reg_xfer_release(&x);
		if (r < 0)
			return r;
		off += n;
	}

	reg_xfer_init(&x, reg, ep, "PUT", reg_url_add_query(*session, "digest", ds));
	if (!x.url)
		return kiln_err_set(err, ENOMEM, "upload request");
	x.scope = scope;
	x.content_type = "application/octet-stream";
	if (chunked)
		xfer_set_body(&x, src, 0, 0);
	else
		xfer_set_body(&x, src, 0, src->len);
	r = reg_run_one(reg, &x, err);
	if (r == 0)
		r = expect_status(&x, 201, err);
	if (r == 0)
		r = check_dcd(&x, d, err);
	reg_xfer_release(&x);
	return r;
}

/* Open an upload session on ep's repository, or, when mount_from is set,
 * ask for a cross-repository mount of d from there: 201 is a mount, 202 a
 * session. 1 when mounted; 0 with *ret_session (owned) the session URL. */
static int
open_upload(struct registry *reg, const struct endpoint *ep, const struct digest *d,
	    const char *mount_from, const char *scope, char **ret_session, struct kiln_err *err)
{
	char ds[DIGEST_STR_SIZE];
	struct xfer x;
	int r;

	digest_fmt(d, ds);
	if (mount_from) {
		_cleanup_free_ char *u = kiln_strdupf("%s/blobs/uploads/", ep->repo_url);
		_cleanup_free_ char *u2 = u ? reg_url_add_query(u, "mount", ds) : NULL;

		reg_xfer_init(&x, reg, ep, "POST", u2 ? reg_url_add_query(u2, "from", mount_from) : NULL);
	} else {
		reg_xfer_init(&x, reg, ep, "POST", kiln_strdupf("%s/blobs/uploads/", ep->repo_url));
	}
	if (!x.url)
		return kiln_err_set(err, ENOMEM, "push");
	x.scope = scope;
	r = reg_run_one(reg, &x, err);
	if (r == 0 && mount_from && x.status == 201) {
		r = check_dcd(&x, d, err);
		reg_xfer_release(&x);
		if (r < 0)
			return r;
		stat_add(&reg->stats.blobs_mounted, 1);
		return 1;
	}
	if (r == 0)
		r = expect_status(&x, 202, err);
	if (r == 0) {
		*ret_session = next_location(&x, err);
		if (!*ret_session)
			r = -err->code;
	}
	reg_xfer_release(&x);
	return r;
}

static int
push_blob(struct registry *reg, const struct registry_ref *ref, const struct body_src *src,
	  const struct digest *d, const struct registry_push_opts *o,
	  enum registry_push_result *ret_result, struct kiln_err *err)
{
	static const struct registry_push_opts defaults = { 0 };
	_cleanup_free_ char *scope = NULL, *session = NULL;
	char ds[DIGEST_STR_SIZE];
	enum registry_push_result res = REGISTRY_PUSH_UPLOADED;
	struct endpoint ep;
	bool mount, chunked;
	int r;

	if (!o)
		o = &defaults;
	digest_fmt(d, ds);
	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	mount = o->mount_from && *o->mount_from && strcmp(o->mount_from, ref->path) != 0;
	if (mount)
		scope = kiln_strdupf("repository:%s:pull,push repository:%s:pull", ref->path,
				     o->mount_from);
	else
		scope = repo_scope(ref->path, "pull,push");
	if (!scope)
		return kiln_err_set(err, ENOMEM, "push");

	if (!o->skip_exists_check) {
		r = blob_exists(reg, &ep, d, scope, NULL, err);
		if (r < 0)
			goto out;
		if (r == 1) {
			res = REGISTRY_PUSH_EXISTED;
			r = 0;
			goto out;
		}
	}

	r = open_upload(reg, &ep, d, mount ? o->mount_from : NULL, scope, &session, err);
	if (r < 0)
		goto out;
	if (r == 1) {
		res = REGISTRY_PUSH_MOUNTED;
		r = 0;
		goto out;
	}

	switch (o->upload) {
	case REGISTRY_UPLOAD_MONOLITHIC:
		chunked = false;
		break;
	case REGISTRY_UPLOAD_CHUNKED:
		chunked = true;
		break;
	default:
		chunked = src->len > reg->chunk_threshold;
		break;
	}
	r = upload(reg, &ep, &session, src, d, chunked, o->chunk_size ? o->chunk_size : reg->chunk_size,
		   scope, err);
	if (r == 0) {
		stat_add(&reg->stats.blobs_pushed, 1);
		stat_add(&reg->stats.bytes_pushed, src->len);
	}
out:
	if (r < 0)
		return kiln_err_wrap(err, "push blob %s to '%s'", ds, ep.refstr);
	if (ret_result)
		*ret_result = res;
	return 0;
}

int
registry_push_blob(struct registry *reg, const struct registry_ref *ref, struct cas *cas,
		   const struct digest *d, const struct registry_push_opts *o,
		   enum registry_push_result *ret_result, struct kiln_err *err)
{
	_cleanup_close_ int fd = -1;
	char path[4096], ds[DIGEST_STR_SIZE];
	struct body_src src = { 0 };
	struct stat st;
	int r;

	r = cas_path(cas, d, path, sizeof(path));
	if (r < 0)
		return kiln_err_set(err, -r, "blob %s: path in store", digest_fmt(d, ds));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return kiln_err_errno(err, errno, "push blob %s: not readable in the store",
				      digest_fmt(d, ds));
	src.fd = fd;
	src.len = (uint64_t) st.st_size;
	return push_blob(reg, ref, &src, d, o, ret_result, err);
}

int
registry_push_blob_buf(struct registry *reg, const struct registry_ref *ref, const void *data,
		       size_t len, const struct digest *d, const struct registry_push_opts *o,
		       enum registry_push_result *ret_result, struct kiln_err *err)
{
	struct body_src src = { .data = data, .fd = -1, .len = len };
	char ds[DIGEST_STR_SIZE], es[DIGEST_STR_SIZE];
	struct digest got;

	digest_buf(data, len, &got);
	if (d && !digest_equal(d, &got))
		return kiln_err_set(err, EBADMSG, "push blob: content has digest %s, expected %s",
				    digest_fmt(&got, ds), digest_fmt(d, es));
	return push_blob(reg, ref, &src, &got, o, ret_result, err);
}

int
registry_copy_blob(struct registry *reg, const struct registry_ref *src,
		   const struct registry_ref *dst, const struct oci_descriptor *desc,
		   struct cas *cas, enum registry_push_result *ret_result, struct kiln_err *err)
{
	_cleanup_free_ char *scope = NULL, *session = NULL;
	_cleanup_close_ int fd = -1;
	enum registry_push_result res = REGISTRY_PUSH_UPLOADED;
	struct endpoint sep, dep;
	char ds[DIGEST_STR_SIZE], path[4096];
	struct body_src body = { .fd = -1 };
	struct stat st;
	bool same_host;
	int r;

	digest_fmt(&desc->digest, ds);
	r = endpoint_init(reg, src, &sep, err);
	if (r < 0)
		return r;
	r = endpoint_init(reg, dst, &dep, err);
	if (r < 0)
		return r;
	same_host = strcmp(sep.base, dep.base) == 0;
	if (same_host && strcmp(src->path, dst->path) == 0) {
		if (ret_result)
			*ret_result = REGISTRY_PUSH_EXISTED;
		return 0;
	}
	if (same_host)
		scope = kiln_strdupf("repository:%s:pull,push repository:%s:pull", dst->path, src->path);
	else
		scope = repo_scope(dst->path, "pull,push");
	if (!scope)
		return kiln_err_set(err, ENOMEM, "copy blob");

	r = blob_exists(reg, &dep, &desc->digest, scope, NULL, err);
	if (r == 1) {
		res = REGISTRY_PUSH_EXISTED;
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	/* A registry that refuses the mount (no such blob there, or mounts
	 * not supported) opens a session instead, which the upload uses. */
	r = open_upload(reg, &dep, &desc->digest, same_host ? src->path : NULL, scope, &session, err);
	if (r == 1) {
		res = REGISTRY_PUSH_MOUNTED;
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	r = registry_fetch_blobs(reg, src, desc, 1, cas, err);
	if (r < 0)
		goto out;
	r = cas_path(cas, &desc->digest, path, sizeof(path));
	if (r < 0) {
		r = kiln_err_set(err, -r, "path in store");
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = kiln_err_errno(err, errno, "not readable in the store");
		goto out;
	}
	body.fd = fd;
	body.len = (uint64_t) st.st_size;
	r = upload(reg, &dep, &session, &body, &desc->digest, body.len > reg->chunk_threshold,
		   reg->chunk_size, scope, err);
	if (r == 0) {
		stat_add(&reg->stats.blobs_pushed, 1);
		stat_add(&reg->stats.bytes_pushed, body.len);
	}
out:
	if (r < 0)
		return kiln_err_wrap(err, "copy blob %s from '%s' to '%s'", ds, sep.refstr, dep.refstr);
	if (ret_result)
		*ret_result = res;
	return 0;
}

int
registry_put_manifest(struct registry *reg, const struct registry_ref *ref,
		      const char *media_type, const void *data, size_t len,
		      struct digest *ret_digest, struct kiln_err *err)
{
	_cleanup_free_ char *scope = repo_scope(ref->path, "pull,push");
	struct body_src src = { .data = data, .fd = -1, .len = len };
	char ds[DIGEST_STR_SIZE], es[DIGEST_STR_SIZE];
	struct endpoint ep;
	struct digest d;
	struct xfer x;
	int r;

	if (!scope)
		return kiln_err_set(err, ENOMEM, "push manifest");
	r = endpoint_init(reg, ref, &ep, err);
	if (r < 0)
		return r;
	if (!media_type || !*media_type)
		return kiln_err_set(err, EINVAL, "push manifest to '%s': no media type", ep.refstr);
	if (len > REGISTRY_MANIFEST_MAX)
		return kiln_err_set(err, EFBIG, "push manifest to '%s': %zu bytes, over the limit of %u",
				    ep.refstr, len, REGISTRY_MANIFEST_MAX);
	digest_buf(data, len, &d);
	if (ref->has_digest && !digest_equal(&d, &ref->digest))
		return kiln_err_set(err, EBADMSG, "push manifest to '%s': content has digest %s",
				    ep.refstr, digest_fmt(&d, ds));
	reg_xfer_init(&x, reg, &ep, "PUT",
		      kiln_strdupf("%s/manifests/%s", ep.repo_url, ref_reference(ref, es)));
	if (!x.url)
		return kiln_err_set(err, ENOMEM, "push manifest");
	x.scope = scope;
	x.content_type = media_type;
	x.idempotent = true;
	xfer_set_body(&x, &src, 0, len);
	r = reg_run_one(reg, &x, err);
	if (r == 0)
		r = expect_status(&x, 201, err);
	if (r == 0)
		r = check_dcd(&x, &d, err);
	reg_xfer_release(&x);
	if (r < 0)
		return kiln_err_wrap(err, "push manifest to '%s'", ep.refstr);
	if (ret_digest)
		*ret_digest = d;
	return 0;
}
