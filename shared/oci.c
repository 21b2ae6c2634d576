/* OCI image-spec documents on jansson: parsing with validation, canonical
 * serialisation, image-config editing and image-layout lookups.
 *
 * Parsers treat their input as hostile: the text is bounded by
 * OCI_JSON_MAX, duplicate keys are refused (two readers could otherwise
 * disagree on what a manifest says), and every field we rely on is
 * type-checked, with the error naming the field. Only sha256 digests are
 * accepted (digest.h); a layers array may be empty although the schema
 * says minItems 1, because BuildKit writes such manifests for images with
 * no filesystem changes (FROM scratch plus metadata).
 *
 * Serialisers go through oci_json_dump (compact, keys sorted), so equal
 * values give equal bytes and thus equal digests. Parsed descriptors keep
 * mediaType, digest, size, platform and annotations; fields we do not
 * model (urls, data, artifactType, subject) are validated and dropped.
 * Image configs stay json_t so that nothing is lost on a round trip.
 *
 * Layout lookups read index.json and the blobs they need, verify each
 * blob's size and digest before trusting it, and follow nested indexes to
 * a bounded depth. They never write. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "err.h"
#include "oci.h"
#include "util.h"

#define OCI_INDEX_DEPTH_MAX 4   /* nested indexes followed by oci_layout_resolve */
#define OCI_HISTORY_COMMENT "buildkit.dockerfile.v0"

static void
oci_json_decrefp(json_t **j)
{
	json_decref(*j);
}

#define _cleanup_json_ _cleanup_(oci_json_decrefp)

/* ---- validation helpers ---- */

static bool
oci_ascii_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* One half of a media type: [A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126} */
static bool
oci_media_type_half_ok(const char *s, size_t n)
{
	if (n == 0 || n > 127 || !oci_ascii_alnum(s[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!oci_ascii_alnum(s[i]) && !strchr("!#$&^_.+-", s[i]))
			return false;
	return true;
}

/* The image-spec's mediaType pattern (type/subtype as above), further
 * limited to what struct oci_descriptor can hold. */
static bool
oci_media_type_ok(const char *s)
{
	const char *slash = strchr(s, '/');

	if (!slash || strlen(s) >= sizeof(((struct oci_descriptor *) 0)->media_type))
		return false;
	return oci_media_type_half_ok(s, (size_t) (slash - s)) &&
	       oci_media_type_half_ok(slash + 1, strlen(slash + 1));
}

static bool
oci_is_manifest_mt(const char *mt)
{
	return strcmp(mt, OCI_MT_MANIFEST) == 0 || strcmp(mt, DOCKER_MT_MANIFEST) == 0;
}

static bool
oci_is_index_mt(const char *mt)
{
	return strcmp(mt, OCI_MT_INDEX) == 0 || strcmp(mt, DOCKER_MT_LIST) == 0;
}

/* The string at key, NULL when absent; -EINVAL (through *ret_bad) when
 * present with another type. */
static const char *
oci_get_str(const json_t *o, const char *key, bool *ret_bad)
{
	json_t *v = json_object_get(o, key);

	*ret_bad = v && !json_is_string(v);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* o[key] must be absent, null (when null_ok) or a string. */
static int
oci_check_str(const json_t *o, const char *key, bool null_ok, const char *where,
	      struct kiln_err *err)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_string(v) || (null_ok && json_is_null(v)))
		return 0;
	return kiln_err_set(err, EINVAL, "%s: '%s' is not a string", where, key);
}

/* o[key] must be absent, null (when null_ok) or an array of strings. */
static int
oci_check_str_array(const json_t *o, const char *key, bool null_ok, const char *where,
		    struct kiln_err *err)
{
	json_t *v = json_object_get(o, key), *e;
	size_t i;

	if (!v || (null_ok && json_is_null(v)))
		return 0;
	if (!json_is_array(v))
		return kiln_err_set(err, EINVAL, "%s: '%s' is not an array of strings", where, key);
	json_array_foreach(v, i, e) {
		if (!json_is_string(e))
			return kiln_err_set(err, EINVAL, "%s: %s[%zu] is not a string", where, key, i);
	}
	return 0;
}

/* o[key] must be absent, null (when null_ok) or an object whose values are
 * strings (strings_only) or objects. */
static int
oci_check_map(const json_t *o, const char *key, bool null_ok, bool strings_only, const char *where,
	      struct kiln_err *err)
{
	json_t *v = json_object_get(o, key), *e;
	const char *k;

	if (!v || (null_ok && json_is_null(v)))
		return 0;
	if (!json_is_object(v))
		return kiln_err_set(err, EINVAL, "%s: '%s' is not an object", where, key);
	json_object_foreach(v, k, e) {
		if (strings_only ? !json_is_string(e) : !json_is_object(e))
			return kiln_err_set(err, EINVAL, "%s: %s['%.64s'] is not %s", where, key, k,
					    strings_only ? "a string" : "an object");
	}
	return 0;
}

static int
oci_check_media_type(const json_t *o, const char *key, bool required, const char *where,
		     struct kiln_err *err)
{
	bool bad;
	const char *mt = oci_get_str(o, key, &bad);

	if (bad || (!mt && required))
		return kiln_err_set(err, EINVAL, "%s: '%s' %s", where, key,
				    bad ? "is not a string" : "is missing");
	if (mt && !oci_media_type_ok(mt))
		return kiln_err_set(err, EINVAL, "%s: %s '%.64s' is not a media type", where, key, mt);
	return 0;
}

/* JSON text into *ret, bounded, with duplicate keys refused. */
static int
oci_load(const char *buf, size_t len, const char *what, json_t **ret, struct kiln_err *err)
{
	json_error_t jerr;
	json_t *j;

	if (len > OCI_JSON_MAX)
		return kiln_err_set(err, EFBIG, "%s of %zu bytes exceeds the limit of %u", what, len,
				    OCI_JSON_MAX);
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return kiln_err_set(err, EINVAL, "%s: invalid JSON at line %d: %s", what, jerr.line,
				    jerr.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_err_set(err, EINVAL, "%s is not a JSON object", what);
	}
	*ret = j;
	return 0;
}

static int
oci_check_schema_version(const json_t *j, const char *what, struct kiln_err *err)
{
	json_t *v = json_object_get(j, "schemaVersion");

	if (!json_is_integer(v) || json_integer_value(v) != 2)
		return kiln_err_set(err, EINVAL, "%s: schemaVersion is not 2", what);
	return 0;
}

/* ---- descriptors ---- */

void
oci_descriptor_release(struct oci_descriptor *d)
{
	if (!d)
		return;
	json_decref(d->annotations);
	d->annotations = NULL;
}

/* Platform object {os, architecture, variant?} into a normalised struct. */
static int
oci_platform_from_json(const json_t *j, struct platform *ret, const char *where,
		       struct kiln_err *err)
{
	const char *os, *arch, *variant;
	char s[3 * 64];
	bool bad_os, bad_arch, bad_variant;

	if (!json_is_object(j))
		return kiln_err_set(err, EINVAL, "%s: platform is not an object", where);
	os = oci_get_str(j, "os", &bad_os);
	arch = oci_get_str(j, "architecture", &bad_arch);
	variant = oci_get_str(j, "variant", &bad_variant);
	if (!os || !arch || bad_variant)
		return kiln_err_set(err, EINVAL, "%s: platform needs string 'os' and 'architecture'",
				    where);
	if (oci_check_str(j, "os.version", false, where, err) < 0 ||
	    oci_check_str_array(j, "os.features", false, where, err) < 0)
		return -EINVAL;
	/* platform_parse splits on '/', so a slash inside a field would
	 * shift the others */
	if (strchr(os, '/') || strchr(arch, '/') || (variant && strchr(variant, '/')) ||
	    strlen(os) > 63 || strlen(arch) > 63 || (variant && strlen(variant) > 63))
		goto invalid;
	if (variant && variant[0])
		snprintf(s, sizeof(s), "%s/%s/%s", os, arch, variant);
	else
		snprintf(s, sizeof(s), "%s/%s", os, arch);
	if (platform_parse(s, ret) < 0)
		goto invalid;
	return 0;

invalid:
	return kiln_err_set(err, EINVAL, "%s: invalid platform '%.32s/%.32s%s%.32s'", where, os, arch,
			    variant && variant[0] ? "/" : "", variant ? variant : "");
}

static int
oci_descriptor_parse(const json_t *j, const char *where, struct oci_descriptor *ret,
		     struct kiln_err *err)
{
	struct oci_descriptor d = { 0 };
	json_t *v;
	bool bad;
	const char *s;
	int r;

	if (!json_is_object(j))
		return kiln_err_set(err, EINVAL, "%s: descriptor is not an object", where);
	r = oci_check_media_type(j, "mediaType", true, where, err);
	if (r < 0)
		return r;
	snprintf(d.media_type, sizeof(d.media_type), "%s",
		 json_string_value(json_object_get(j, "mediaType")));

	s = oci_get_str(j, "digest", &bad);
	if (!s)
		return kiln_err_set(err, EINVAL, "%s: 'digest' is missing or not a string", where);
	if (digest_parse(s, &d.digest) < 0)
		return kiln_err_set(err, EINVAL, "%s: digest '%.80s' is not sha256:<64 hex>", where, s);

	v = json_object_get(j, "size");
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return kiln_err_set(err, EINVAL, "%s: 'size' is missing or not a non-negative integer",
				    where);
	d.size = json_integer_value(v);

	v = json_object_get(j, "platform");
	if (v) {
		r = oci_platform_from_json(v, &d.platform, where, err);
		if (r < 0)
			return r;
		d.has_platform = true;
	}
	r = oci_check_map(j, "annotations", false, true, where, err);
	if (r < 0)
		return r;
	if (oci_check_str_array(j, "urls", false, where, err) < 0 ||
	    oci_check_str(j, "data", false, where, err) < 0 ||
	    oci_check_media_type(j, "artifactType", false, where, err) < 0)
		return -EINVAL;

	v = json_object_get(j, "annotations");
	if (v) {
		d.annotations = json_deep_copy(v);
		if (!d.annotations)
			return kiln_err_set(err, ENOMEM, "%s: copy annotations", where);
	}
	*ret = d;
	return 0;
}

int
oci_descriptor_from_json(const json_t *j, struct oci_descriptor *ret, struct kiln_err *err)
{
	return oci_descriptor_parse(j, "descriptor", ret, err);
}

static int
oci_descriptor_copy(const struct oci_descriptor *src, struct oci_descriptor *ret)
{
	struct oci_descriptor d = *src;

	if (src->annotations) {
		d.annotations = json_deep_copy(src->annotations);
		if (!d.annotations)
			return -ENOMEM;
	}
	*ret = d;
	return 0;
}

/* Set o[key] = v, taking v; false when v is NULL or the set fails. */
static bool
oci_set(json_t *o, const char *key, json_t *v)
{
	return v && json_object_set_new(o, key, v) == 0;
}

json_t *
oci_descriptor_to_json(const struct oci_descriptor *d)
{
	_cleanup_json_ json_t *o = json_object();
	char ds[DIGEST_STR_SIZE];

	if (!o)
		return NULL;
	if (!oci_set(o, "mediaType", json_string(d->media_type)) ||
	    !oci_set(o, "digest", json_string(digest_fmt(&d->digest, ds))) ||
	    !oci_set(o, "size", json_integer(d->size)))
		return NULL;
	if (d->has_platform) {
		json_t *p = json_object();

		if (!oci_set(o, "platform", p) ||
		    !oci_set(p, "architecture", json_string(d->platform.arch)) ||
		    !oci_set(p, "os", json_string(d->platform.os)))
			return NULL;
		if (d->platform.variant[0] && !oci_set(p, "variant", json_string(d->platform.variant)))
			return NULL;
	}
	if (d->annotations && !oci_set(o, "annotations", json_deep_copy(d->annotations)))
		return NULL;
	return STEAL_PTR(o);
}

/* Descriptor array at j[key] into a malloc'd array. */
static int
oci_descriptors_parse(const json_t *j, const char *key, bool required, struct oci_descriptor **ret,
		      size_t *ret_n, struct kiln_err *err)
{
	json_t *arr = json_object_get(j, key), *e;
	struct oci_descriptor *ds;
	size_t i;
	int r;

	if (!arr && !required) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	if (!json_is_array(arr))
		return kiln_err_set(err, EINVAL, "'%s' is missing or not an array", key);
	ds = calloc(json_array_size(arr) + 1, sizeof(*ds));
	if (!ds)
		return kiln_err_set(err, ENOMEM, "allocate %zu descriptors", json_array_size(arr));
	json_array_foreach(arr, i, e) {
		char where[64];

		snprintf(where, sizeof(where), "%s[%zu]", key, i);
		r = oci_descriptor_parse(e, where, &ds[i], err);
		if (r < 0) {
			while (i-- > 0)
				oci_descriptor_release(&ds[i]);
			free(ds);
			return r;
		}
	}
	*ret = ds;
	*ret_n = json_array_size(arr);
	return 0;
}

static json_t *
oci_descriptors_to_json(const struct oci_descriptor *ds, size_t n)
{
	_cleanup_json_ json_t *arr = json_array();

	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(arr, oci_descriptor_to_json(&ds[i])) < 0)
			return NULL;
	return STEAL_PTR(arr);
}

/* ---- manifests and indexes ---- */

void
oci_manifest_release(struct oci_manifest *m)
{
	if (!m)
		return;
	oci_descriptor_release(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		oci_descriptor_release(&m->layers[i]);
	free(m->layers);
	json_decref(m->annotations);
	memset(m, 0, sizeof(*m));
}

void
oci_index_release(struct oci_index *ix)
{
	if (!ix)
		return;
	for (size_t i = 0; i < ix->n_manifests; i++)
		oci_descriptor_release(&ix->manifests[i]);
	free(ix->manifests);
	json_decref(ix->annotations);
	memset(ix, 0, sizeof(*ix));
}

/* Fields common to manifests and indexes that we check but do not keep. */
static int
oci_check_common(const json_t *j, const char *what, struct kiln_err *err)
{
	json_t *subject = json_object_get(j, "subject");
	struct oci_descriptor d;
	char where[64];
	int r;

	r = oci_check_media_type(j, "artifactType", false, what, err);
	if (r < 0)
		return r;
	r = oci_check_map(j, "annotations", false, true, what, err);
	if (r < 0)
		return r;
	if (subject) {
		snprintf(where, sizeof(where), "%s subject", what);
		r = oci_descriptor_parse(subject, where, &d, err);
		if (r < 0)
			return r;
		oci_descriptor_release(&d);
	}
	return 0;
}

int
oci_manifest_parse(const char *buf, size_t len, struct oci_manifest *ret, struct kiln_err *err)
{
	_cleanup_json_ json_t *j = NULL;
	struct oci_manifest m = { 0 };
	json_t *v;
	int r;

	r = oci_load(buf, len, "manifest", &j, err);
	if (r < 0)
		return r;
	r = oci_check_schema_version(j, "manifest", err);
	if (r < 0)
		return r;
	r = oci_check_media_type(j, "mediaType", false, "manifest", err);
	if (r < 0)
		return r;
	v = json_object_get(j, "mediaType");
	if (v && !oci_is_manifest_mt(json_string_value(v)))
		return kiln_err_set(err, EINVAL, "manifest: mediaType '%.64s' is not an image manifest%s",
				    json_string_value(v),
				    oci_is_index_mt(json_string_value(v)) ? " (it is an index)" : "");
	if (!v && json_object_get(j, "manifests"))
		return kiln_err_set(err, EINVAL, "manifest: document is an index");
	snprintf(m.media_type, sizeof(m.media_type), "%s", v ? json_string_value(v) : OCI_MT_MANIFEST);
	r = oci_check_common(j, "manifest", err);
	if (r < 0)
		return r;

	v = json_object_get(j, "config");
	if (!v)
		return kiln_err_set(err, EINVAL, "manifest: 'config' is missing");
	r = oci_descriptor_parse(v, "config", &m.config, err);
	if (r < 0)
		return kiln_err_wrap(err, "manifest");
	r = oci_descriptors_parse(j, "layers", true, &m.layers, &m.n_layers, err);
	if (r < 0) {
		oci_manifest_release(&m);
		return kiln_err_wrap(err, "manifest");
	}
	v = json_object_get(j, "annotations");
	if (v)
		m.annotations = json_incref(v);
	*ret = m;
	return 0;
}

int
oci_index_parse(const char *buf, size_t len, struct oci_index *ret, struct kiln_err *err)
{
	_cleanup_json_ json_t *j = NULL;
	struct oci_index ix = { 0 };
	json_t *v;
	int r;

	r = oci_load(buf, len, "index", &j, err);
	if (r < 0)
		return r;
	r = oci_check_schema_version(j, "index", err);
	if (r < 0)
		return r;
	r = oci_check_media_type(j, "mediaType", false, "index", err);
	if (r < 0)
		return r;
	v = json_object_get(j, "mediaType");
	if (v && !oci_is_index_mt(json_string_value(v)))
		return kiln_err_set(err, EINVAL, "index: mediaType '%.64s' is not an image index%s",
				    json_string_value(v),
				    oci_is_manifest_mt(json_string_value(v)) ? " (it is a manifest)" : "");
	snprintf(ix.media_type, sizeof(ix.media_type), "%s", v ? json_string_value(v) : OCI_MT_INDEX);
	r = oci_check_common(j, "index", err);
	if (r < 0)
		return r;
	r = oci_descriptors_parse(j, "manifests", true, &ix.manifests, &ix.n_manifests, err);
	if (r < 0)
		return kiln_err_wrap(err, "index");
	v = json_object_get(j, "annotations");
	if (v)
		ix.annotations = json_incref(v);
	*ret = ix;
	return 0;
}

char *
oci_json_dump(const json_t *j, size_t *ret_len)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);

	if (s && ret_len)
		*ret_len = strlen(s);
	return s;
}

char *
oci_manifest_dump(const struct oci_manifest *m, size_t *ret_len)
{
	_cleanup_json_ json_t *o = json_object();

	if (!o)
		return NULL;
	if (!oci_set(o, "schemaVersion", json_integer(2)) ||
	    !oci_set(o, "mediaType", json_string(m->media_type[0] ? m->media_type : OCI_MT_MANIFEST)) ||
	    !oci_set(o, "config", oci_descriptor_to_json(&m->config)) ||
	    !oci_set(o, "layers", oci_descriptors_to_json(m->layers, m->n_layers)))
		return NULL;
	if (m->annotations && !oci_set(o, "annotations", json_deep_copy(m->annotations)))
		return NULL;
	return oci_json_dump(o, ret_len);
}

char *
oci_index_dump(const struct oci_index *ix, size_t *ret_len)
{
	_cleanup_json_ json_t *o = json_object();

	if (!o)
		return NULL;
	if (!oci_set(o, "schemaVersion", json_integer(2)) ||
	    !oci_set(o, "mediaType", json_string(ix->media_type[0] ? ix->media_type : OCI_MT_INDEX)) ||
	    !oci_set(o, "manifests", oci_descriptors_to_json(ix->manifests, ix->n_manifests)))
		return NULL;
	if (ix->annotations && !oci_set(o, "annotations", json_deep_copy(ix->annotations)))
		return NULL;
	return oci_json_dump(o, ret_len);
}

/* ---- image configs ---- */

static int
oci_check_env(const json_t *cfg, struct kiln_err *err)
{
	json_t *env = json_object_get(cfg, "Env"), *e;
	size_t i;
	int r;

	r = oci_check_str_array(cfg, "Env", true, "config", err);
	if (r < 0 || !env)
		return r;
	json_array_foreach(env, i, e) {
		const char *s = json_string_value(e);

		if (s[0] == '=' || !strchr(s, '='))
			return kiln_err_set(err, EINVAL, "config: Env[%zu] '%.64s' is not KEY=VALUE", i, s);
	}
	return 0;
}

static int
oci_check_config_section(const json_t *c, struct kiln_err *err)
{
	static const char *const strs[] = { "User", "WorkingDir", "StopSignal" };
	static const char *const arrays[] = { "Entrypoint", "Cmd", "Shell", "OnBuild" };
	int r;

	if (!json_is_object(c))
		return kiln_err_set(err, EINVAL, "config: 'config' is not an object");
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		r = oci_check_str(c, strs[i], false, "config", err);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
		r = oci_check_str_array(c, arrays[i], true, "config", err);
		if (r < 0)
			return r;
	}
	r = oci_check_env(c, err);
	if (r < 0)
		return r;
	r = oci_check_map(c, "ExposedPorts", true, false, "config", err);
	if (r < 0)
		return r;
	r = oci_check_map(c, "Volumes", true, false, "config", err);
	if (r < 0)
		return r;
	r = oci_check_map(c, "Labels", true, true, "config", err);
	if (r < 0)
		return r;
	if (json_object_get(c, "ArgsEscaped") && !json_is_boolean(json_object_get(c, "ArgsEscaped")))
		return kiln_err_set(err, EINVAL, "config: 'ArgsEscaped' is not a boolean");
	return 0;
}

static int
oci_check_history(const json_t *cfg, struct kiln_err *err)
{
	json_t *h = json_object_get(cfg, "history"), *e;
	size_t i;

	if (!h || json_is_null(h))
		return 0;
	if (!json_is_array(h))
		return kiln_err_set(err, EINVAL, "config: 'history' is not an array");
	json_array_foreach(h, i, e) {
		char where[48];
		json_t *el;

		snprintf(where, sizeof(where), "config: history[%zu]", i);
		if (!json_is_object(e))
			return kiln_err_set(err, EINVAL, "%s is not an object", where);
		if (oci_check_str(e, "created", false, where, err) < 0 ||
		    oci_check_str(e, "created_by", false, where, err) < 0 ||
		    oci_check_str(e, "author", false, where, err) < 0 ||
		    oci_check_str(e, "comment", false, where, err) < 0)
			return -EINVAL;
		el = json_object_get(e, "empty_layer");
		if (el && !json_is_boolean(el))
			return kiln_err_set(err, EINVAL, "%s: 'empty_layer' is not a boolean", where);
	}
	return 0;
}

int
oci_config_parse(const char *buf, size_t len, json_t **ret, struct kiln_err *err)
{
	_cleanup_json_ json_t *j = NULL;
	struct platform p;
	json_t *rootfs, *ids, *e, *c;
	bool bad;
	size_t i;
	int r;

	r = oci_load(buf, len, "config", &j, err);
	if (r < 0)
		return r;
	if (!oci_get_str(j, "os", &bad) || !oci_get_str(j, "architecture", &bad))
		return kiln_err_set(err, EINVAL, "config: 'os' and 'architecture' must be strings");
	r = oci_platform_from_json(j, &p, "config", err);
	if (r < 0)
		return r;
	if (oci_check_str(j, "created", false, "config", err) < 0 ||
	    oci_check_str(j, "author", false, "config", err) < 0)
		return -EINVAL;

	rootfs = json_object_get(j, "rootfs");
	if (!json_is_object(rootfs))
		return kiln_err_set(err, EINVAL, "config: 'rootfs' is missing or not an object");
	e = json_object_get(rootfs, "type");
	if (!json_is_string(e) || strcmp(json_string_value(e), "layers") != 0)
		return kiln_err_set(err, EINVAL, "config: rootfs.type is not \"layers\"");
	ids = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(ids))
		return kiln_err_set(err, EINVAL, "config: rootfs.diff_ids is missing or not an array");
	json_array_foreach(ids, i, e) {
		struct digest d;

		if (!json_is_string(e) || digest_parse(json_string_value(e), &d) < 0)
			return kiln_err_set(err, EINVAL, "config: rootfs.diff_ids[%zu] is not a digest", i);
	}

	c = json_object_get(j, "config");
	if (c && !json_is_null(c)) {
		r = oci_check_config_section(c, err);
		if (r < 0)
			return r;
	}
	r = oci_check_history(j, err);
	if (r < 0)
		return r;
	*ret = STEAL_PTR(j);
	return 0;
}

json_t *
oci_config_new(const struct platform *p)
{
	json_t *cfg;

	cfg = json_pack("{s:s, s:s, s:{s:s, s:[]}, s:{}, s:[]}",
			"architecture", p->arch, "os", p->os,
			"rootfs", "type", "layers", "diff_ids",
			"config", "history");
	if (cfg && p->variant[0] && !oci_set(cfg, "variant", json_string(p->variant))) {
		json_decref(cfg);
		return NULL;
	}
	return cfg;
}

/* cfg.config, created when absent or null; NULL when it is something else
 * or on ENOMEM. */
static json_t *
oci_config_section(json_t *cfg)
{
	json_t *c = json_object_get(cfg, "config");

	if (json_is_object(c))
		return c;
	if (c && !json_is_null(c))
		return NULL;
	c = json_object();
	if (!oci_set(cfg, "config", c))
		return NULL;
	return c;
}

/* o[key] as an array, created when absent or null. */
static json_t *
oci_array_member(json_t *o, const char *key)
{
	json_t *a = json_object_get(o, key);

	if (json_is_array(a))
		return a;
	if (a && !json_is_null(a))
		return NULL;
	a = json_array();
	if (!oci_set(o, key, a))
		return NULL;
	return a;
}

/* Does "KEY=..." entry s belong to key? */
static bool
oci_env_is(const char *s, const char *key, size_t klen)
{
	return strncmp(s, key, klen) == 0 && s[klen] == '=';
}

int
oci_config_set_env(json_t *cfg, const char *key, const char *value)
{
	_cleanup_free_ char *entry = NULL;
	size_t klen = strlen(key), i;
	json_t *c, *env, *e, *s;
	bool replaced = false;

	if (klen == 0 || strchr(key, '='))
		return -EINVAL;
	c = oci_config_section(cfg);
	if (!c)
		return -EINVAL;
	env = oci_array_member(c, "Env");
	if (!env)
		return -EINVAL;
	if (asprintf(&entry, "%s=%s", key, value) < 0) {
		entry = NULL;
		return -ENOMEM;
	}
	s = json_string(entry);
	if (!s)
		return -EINVAL;         /* not UTF-8 */

	/* Replace the first entry for key in place (order is visible in the
	 * image), drop any later duplicates a base image may carry. */
	for (i = 0; i < json_array_size(env);) {
		e = json_array_get(env, i);
		if (!json_is_string(e) || !oci_env_is(json_string_value(e), key, klen)) {
			i++;
			continue;
		}
		if (!replaced) {
			if (json_array_set(env, i, s) < 0)
				goto out_nomem;
			replaced = true;
			i++;
		} else {
			json_array_remove(env, i);
		}
	}
	if (!replaced && json_array_append(env, s) < 0)
		goto out_nomem;
	json_decref(s);
	return 0;

out_nomem:
	json_decref(s);
	return -ENOMEM;
}

const char *
oci_config_get_env(const json_t *cfg, const char *key)
{
	json_t *env = json_object_get(json_object_get(cfg, "config"), "Env"), *e;
	size_t klen = strlen(key), i;

	if (!json_is_array(env) || klen == 0)
		return NULL;
	json_array_foreach(env, i, e) {
		const char *s = json_string_value(e);

		if (s && oci_env_is(s, key, klen))
			return s + klen + 1;
	}
	return NULL;
}

int
oci_config_add_history(json_t *cfg, const char *created_by, int64_t created, bool empty_layer,
		       const struct digest *diff_id)
{
	_cleanup_json_ json_t *entry = NULL;
	_cleanup_json_ json_t *id = NULL;
	json_t *history, *rootfs, *ids = NULL;
	char ts[32], ds[DIGEST_STR_SIZE];

	if (!empty_layer && !diff_id)
		return -EINVAL;
	/* Everything that can fail happens before cfg changes. */
	history = oci_array_member(cfg, "history");
	if (!history)
		return -EINVAL;
	if (!empty_layer) {
		rootfs = json_object_get(cfg, "rootfs");
		if (!rootfs) {
			rootfs = json_pack("{s:s}", "type", "layers");
			if (!oci_set(cfg, "rootfs", rootfs))
				return -ENOMEM;
		}
		if (!json_is_object(rootfs))
			return -EINVAL;
		ids = oci_array_member(rootfs, "diff_ids");
		if (!ids)
			return -EINVAL;
		id = json_string(digest_fmt(diff_id, ds));
		if (!id)
			return -ENOMEM;
	}
	entry = json_object();
	if (!entry || !oci_set(entry, "created", json_string(oci_time_fmt(created, ts))) ||
	    !oci_set(entry, "comment", json_string(OCI_HISTORY_COMMENT)))
		return -ENOMEM;
	if (created_by && !oci_set(entry, "created_by", json_string(created_by)))
		return -EINVAL;         /* not UTF-8, or ENOMEM */
	if (empty_layer && !oci_set(entry, "empty_layer", json_true()))
		return -ENOMEM;

	if (json_array_append(history, entry) < 0)
		return -ENOMEM;
	if (ids && json_array_append(ids, id) < 0) {
		json_array_remove(history, json_array_size(history) - 1);
		return -ENOMEM;
	}
	return 0;
}

int
oci_config_set(json_t *cfg, const char *field, json_t *value)
{
	json_t *c = oci_config_section(cfg);

	if (!c) {
		json_decref(value);
		return -EINVAL;
	}
	if (!value) {
		(void) json_object_del(c, field);
		return 0;
	}
	return json_object_set_new(c, field, value) < 0 ? -ENOMEM : 0;
}

char *
oci_time_fmt(int64_t t, char out[32])
{
	time_t tt = (time_t) t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, 32, "1970-01-01T00:00:00Z");
	return out;
}

/* ---- image layouts ---- */

int
oci_layout_blob_path(const char *dir, const struct digest *d, char *buf, size_t size)
{
	char hex[65];
	int n;

	n = snprintf(buf, size, "%s/blobs/sha256/%s", dir, digest_hex(d, hex));
	if (n < 0 || (size_t) n >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* Read a blob named by d (size and digest verified) of at most max bytes. */
static int
oci_layout_read_blob(const char *dir, const struct digest *d, int64_t size, char **ret_buf,
		     size_t *ret_len, struct kiln_err *err)
{
	_cleanup_free_ char *buf = NULL;
	char path[4096], ds[DIGEST_STR_SIZE];
	struct digest got;
	size_t len;
	int r;

	digest_fmt(d, ds);
	if (oci_layout_blob_path(dir, d, path, sizeof(path)) < 0)
		return kiln_err_set(err, ENAMETOOLONG, "oci layout '%s': path too long", dir);
	r = kiln_read_file_at(AT_FDCWD, path, OCI_JSON_MAX, &buf, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "oci layout '%s': read blob %s", dir, ds);
	if (size >= 0 && (uint64_t) size != len)
		return kiln_err_set(err, EBADMSG, "oci layout '%s': blob %s has %zu bytes, expected %lld",
				    dir, ds, len, (long long) size);
	digest_buf(buf, len, &got);
	if (!digest_equal(&got, d))
		return kiln_err_set(err, EBADMSG, "oci layout '%s': blob %s does not match its digest",
				    dir, ds);
	*ret_buf = STEAL_PTR(buf);
	*ret_len = len;
	return 0;
}

/* The platform of an image manifest without a platform field, from its
 * config blob. -ENOENT when the config names none. */
static int
oci_layout_manifest_platform(const char *dir, const struct oci_descriptor *d, struct platform *ret,
			     struct kiln_err *err)
{
	_cleanup_free_ char *mbuf = NULL;
	_cleanup_free_ char *cbuf = NULL;
	_cleanup_json_ json_t *cfg = NULL;
	struct oci_manifest m;
	size_t mlen, clen;
	json_error_t jerr;
	int r;

	r = oci_layout_read_blob(dir, &d->digest, d->size, &mbuf, &mlen, err);
	if (r < 0)
		return r;
	r = oci_manifest_parse(mbuf, mlen, &m, err);
	if (r < 0)
		return kiln_err_wrap(err, "oci layout '%s'", dir);
	r = oci_layout_read_blob(dir, &m.config.digest, m.config.size, &cbuf, &clen, err);
	oci_manifest_release(&m);
	if (r < 0)
		return r;
	cfg = json_loadb(cbuf, clen, 0, &jerr);
	if (!json_is_object(cfg) || !json_is_string(json_object_get(cfg, "os")) ||
	    !json_is_string(json_object_get(cfg, "architecture")))
		return -ENOENT;
	r = oci_platform_from_json(cfg, ret, "config", err);
	return r < 0 ? -ENOENT : 0;
}

static const char *
oci_ref_name(const struct oci_descriptor *d)
{
	json_t *v = json_object_get(d->annotations, OCI_ANNOT_REF_NAME);

	return json_string_value(v);
}

/* Pick from ix the image manifest for p, following nested indexes. Only
 * descriptors whose ref name equals tag are considered when tag is
 * non-NULL. 0 with *ret filled, -ENOENT when nothing matches. */
static int
oci_layout_pick(const char *dir, const struct oci_index *ix, const char *tag,
		const struct platform *p, unsigned depth, struct oci_descriptor *ret,
		struct kiln_err *err)
{
	for (size_t i = 0; i < ix->n_manifests; i++) {
		const struct oci_descriptor *d = &ix->manifests[i];
		const char *name = oci_ref_name(d);
		struct platform mp;
		int r;

		if (tag && (!name || strcmp(name, tag) != 0))
			continue;
		if (oci_is_index_mt(d->media_type)) {
			_cleanup_free_ char *buf = NULL;
			struct oci_index sub;
			size_t len;

			if (depth >= OCI_INDEX_DEPTH_MAX)
				return kiln_err_set(err, ELOOP,
						    "oci layout '%s': indexes nested deeper than %d",
						    dir, OCI_INDEX_DEPTH_MAX);
			r = oci_layout_read_blob(dir, &d->digest, d->size, &buf, &len, err);
			if (r < 0)
				return r;
			r = oci_index_parse(buf, len, &sub, err);
			if (r < 0)
				return kiln_err_wrap(err, "oci layout '%s'", dir);
			r = oci_layout_pick(dir, &sub, NULL, p, depth + 1, ret, err);
			oci_index_release(&sub);
			if (r != -ENOENT)
				return r;
			continue;
		}
		if (!oci_is_manifest_mt(d->media_type))
			continue;
		if (d->has_platform) {
			mp = d->platform;
		} else {
			r = oci_layout_manifest_platform(dir, d, &mp, err);
			if (r == -ENOENT)
				continue;
			if (r < 0)
				return r;
		}
		if (!platform_equal(&mp, p))
			continue;
		if (oci_descriptor_copy(d, ret) < 0)
			return kiln_err_set(err, ENOMEM, "copy descriptor");
		return 0;
	}
	return -ENOENT;
}

/* A descriptor for a blob of the layout named only by digest: from
 * index.json when listed there, else from the blob itself. */
static int
oci_layout_by_digest(const char *dir, const struct oci_index *ix, const struct digest *dg,
		     struct oci_descriptor *ret, struct kiln_err *err)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_json_ json_t *j = NULL;
	struct oci_descriptor d = { 0 };
	const char *mt;
	size_t len;
	int r;

	for (size_t i = 0; i < ix->n_manifests; i++)
		if (digest_equal(&ix->manifests[i].digest, dg))
			return oci_descriptor_copy(&ix->manifests[i], ret) < 0 ?
			       kiln_err_set(err, ENOMEM, "copy descriptor") : 0;

	r = oci_layout_read_blob(dir, dg, -1, &buf, &len, err);
	if (r < 0)
		return r;
	r = oci_load(buf, len, "blob", &j, err);
	if (r < 0)
		return kiln_err_wrap(err, "oci layout '%s'", dir);
	mt = json_string_value(json_object_get(j, "mediaType"));
	if (!mt)
		mt = json_object_get(j, "manifests") ? OCI_MT_INDEX : OCI_MT_MANIFEST;
	if (!oci_is_index_mt(mt) && !oci_is_manifest_mt(mt))
		return kiln_err_set(err, EINVAL, "oci layout '%s': blob has media type '%.64s'", dir, mt);
	snprintf(d.media_type, sizeof(d.media_type), "%s", mt);
	d.digest = *dg;
	d.size = (int64_t) len;
	*ret = d;
	return 0;
}

/* "available: a, b" list of the ref names in ix, for error messages. */
static void
oci_ref_names(const struct oci_index *ix, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ix->n_manifests && n < size; i++) {
		const char *name = oci_ref_name(&ix->manifests[i]);
		int w;

		if (!name)
			continue;
		w = snprintf(buf + n, size - n, "%s'%.64s'", n ? ", " : "", name);
		if (w < 0)
			break;
		n += (size_t) w;
	}
}

int
oci_layout_resolve(const char *dir, const char *ref, const struct platform *p,
		   struct oci_descriptor *ret_manifest, struct kiln_err *err)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_json_ json_t *layout = NULL;
	struct oci_index ix;
	struct platform host;
	char path[4096], ps[PLATFORM_STR_SIZE];
	const char *tag = ref ? ref : "latest";
	bool any_named = false;
	size_t len;
	int r;

	if (!p) {
		platform_host(&host);
		p = &host;
	}
	platform_fmt(p, ps);

	snprintf(path, sizeof(path), "%s/oci-layout", dir);
	r = kiln_read_file_at(AT_FDCWD, path, 4096, &buf, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "oci layout '%s': read oci-layout", dir);
	r = oci_load(buf, len, "oci-layout", &layout, err);
	if (r < 0)
		return kiln_err_wrap(err, "oci layout '%s'", dir);
	if (!json_is_string(json_object_get(layout, "imageLayoutVersion")))
		return kiln_err_set(err, EINVAL, "oci layout '%s': oci-layout has no imageLayoutVersion",
				    dir);
	free(STEAL_PTR(buf));

	snprintf(path, sizeof(path), "%s/index.json", dir);
	r = kiln_read_file_at(AT_FDCWD, path, OCI_JSON_MAX, &buf, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "oci layout '%s': read index.json", dir);
	r = oci_index_parse(buf, len, &ix, err);
	if (r < 0)
		return kiln_err_wrap(err, "oci layout '%s': index.json", dir);

	if (kiln_startswith(tag, "sha256:")) {
		struct oci_descriptor d;
		struct digest dg;

		if (digest_parse(tag, &dg) < 0) {
			r = kiln_err_set(err, EINVAL, "oci layout '%s': invalid digest '%s'", dir, tag);
			goto out;
		}
		r = oci_layout_by_digest(dir, &ix, &dg, &d, err);
		if (r < 0)
			goto out;
		if (!oci_is_index_mt(d.media_type)) {
			/* a pinned manifest is taken as it is, whatever its platform */
			*ret_manifest = d;
			goto out;
		}
		oci_index_release(&ix);
		free(STEAL_PTR(buf));
		r = oci_layout_read_blob(dir, &d.digest, d.size, &buf, &len, err);
		oci_descriptor_release(&d);
		if (r < 0)
			return r;
		r = oci_index_parse(buf, len, &ix, err);
		if (r < 0)
			return kiln_err_wrap(err, "oci layout '%s': index %s", dir, tag);
		r = oci_layout_pick(dir, &ix, NULL, p, 1, ret_manifest, err);
		if (r == -ENOENT)
			r = kiln_err_set(err, ENOENT, "oci layout '%s': no manifest for '%s' and platform %s",
					 dir, tag, ps);
		goto out;
	}

	for (size_t i = 0; i < ix.n_manifests; i++)
		if (oci_ref_name(&ix.manifests[i]))
			any_named = true;
	if (!any_named && ix.n_manifests != 1) {
		r = kiln_err_set(err, ENOENT,
				 "oci layout '%s': no manifest for '%s' (index.json names none of its %zu entries)",
				 dir, tag, ix.n_manifests);
		goto out;
	}
	/* A layout with a single unnamed image: any tag means that image. */
	r = oci_layout_pick(dir, &ix, any_named ? tag : NULL, p, 0, ret_manifest, err);
	if (r == -ENOENT) {
		char names[256];
		bool tagged = !any_named;

		for (size_t i = 0; i < ix.n_manifests && !tagged; i++) {
			const char *name = oci_ref_name(&ix.manifests[i]);

			tagged = name && strcmp(name, tag) == 0;
		}
		if (tagged) {
			r = kiln_err_set(err, ENOENT, "oci layout '%s': no manifest for '%s' and platform %s",
					 dir, tag, ps);
		} else {
			oci_ref_names(&ix, names, sizeof(names));
			r = kiln_err_set(err, ENOENT, "oci layout '%s': no manifest for '%s' (available: %s)",
					 dir, tag, names);
		}
	}
out:
	oci_index_release(&ix);
	return r;
}
