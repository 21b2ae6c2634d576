/* `kiln imagetools` (see imagetools.h), as buildx's util/imagetools does
 * it: the command dispatch, `create`, and the helpers both commands use
 * (imagetools-internal.h); `inspect` is in imagetools-inspect.c.
 *
 * create merges its sources into one index the way buildx's Combine does:
 * each source (a reference, a digest in the only repository named, or a
 * descriptor as JSON) is resolved to a descriptor and fetched; a manifest
 * without a platform gets its config's; index sources contribute their
 * entries; entries are de-duplicated by digest. One index source alone is
 * copied as it is. The result is a Docker manifest list when every entry
 * has a Docker media type, an OCI index otherwise, marshalled as Go would
 * (ocispec key order, two-space indent). Then, per tag, whatever comes from
 * another repository is copied into the tag's (manifests by digest, their
 * blobs mounted on the same registry or downloaded and uploaded) before
 * the index is put under the tag: the registry must never hold an index
 * whose entries it lacks. --dry-run prints the index and writes nothing.
 *
 * Not here: --annotation, --platform. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "imagetools.h"
#include "imagetools-internal.h"
#include "usage.h"
#include "oci.h"
#include "platform.h"
#include "progress.h"
#include "registry.h"
#include "util.h"

#define IT_SOURCES_MAX 256
#define IT_TAGS_MAX 64
#define IT_FILE_MAX (1u << 20)
#define IT_DEPTH_MAX 4

static const char imagetools_help[] =
	"Usage:  kiln imagetools COMMAND\n"
	"\n"
	"Commands to work on images in registry\n"
	"\n"
	"Commands:\n"
	"  create      Create a new image based on source images\n"
	"  inspect     Show details of an image in the registry\n"
	"\n"
	"Run 'kiln imagetools COMMAND --help' for more information on a command.\n";

static const char create_help[] =
	"Usage:  kiln imagetools create [OPTIONS] [SOURCE...]\n"
	"\n"
	"Create a new image based on source images\n"
	"\n"
	"Options:\n"
	"      --append             Append to existing manifest\n"
	"      --dry-run            Show final image instead of pushing\n"
	"  -f, --file stringArray   Read source descriptor from file\n"
	"      --prefer-index       When only a single source is specified, prefer outputting an\n"
	"                           image index or manifest list instead of performing a carbon\n"
	"                           copy (default true)\n"
	"      --progress string    Set type of progress output (auto, plain, tty, quiet,\n"
	"                           rawjson) (default \"auto\")\n"
	"  -t, --tag stringArray    Set reference for new image\n"
	"  -h, --help               Print usage\n";

int
it_print_error(const struct kiln_err *err)
{
	fprintf(stderr, "ERROR: %s\n", err->msg);
	return 1;
}

const char *
it_jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

int
it_json_digest(const json_t *o, struct digest *ret)
{
	const char *s = it_jstr(o, "digest");

	return s ? digest_parse(s, ret) : -EINVAL;
}

bool
it_is_index_mt(const char *mt)
{
	return mt && (strcmp(mt, OCI_MT_INDEX) == 0 || strcmp(mt, DOCKER_MT_LIST) == 0);
}

bool
it_is_manifest_mt(const char *mt)
{
	return mt && (strcmp(mt, OCI_MT_MANIFEST) == 0 || strcmp(mt, DOCKER_MT_MANIFEST) == 0);
}

/* ---- references ---- */

/* "domain/path": what buildx calls a reference's Name. */
static char *
ref_repo(const struct registry_ref *r, char *out, size_t size)
{
	snprintf(out, size, "%.255s/%.255s", r->domain, r->path);
	return out;
}

static bool
same_repo(const struct registry_ref *a, const struct registry_ref *b)
{
	return strcmp(a->domain, b->domain) == 0 && strcmp(a->path, b->path) == 0;
}

/* r pinned to d; its tag stays, as reference.WithDigest keeps it. */
struct registry_ref
it_ref_at(const struct registry_ref *r, const struct digest *d)
{
	struct registry_ref x = *r;

	x.has_digest = true;
	x.digest = *d;
	return x;
}

/* containerd's words for a reference the registry does not have. */
static int
not_found(const struct registry_ref *r, struct kiln_err *err)
{
	char rs[REGISTRY_REF_STR_SIZE];

	return kiln_err_set(err, ENOENT, "%s: not found", registry_ref_fmt(r, rs, sizeof(rs)));
}

/* GET what r names; ENOENT as "REF: not found". */
int
it_get_doc(struct registry *reg, const struct registry_ref *r, struct registry_doc *ret,
	   struct kiln_err *err)
{
	int rc = registry_get_manifest(reg, r, ret, err);

	if (rc == -ENOENT)
		return not_found(r, err);
	return rc;
}

/* ---- JSON the way Go marshals image-spec types ---- */

/* Go struct fields: kind 's' string, 'i' integer, 'b' bool, 'a' slice,
 * 'm' map (keys sorted), 'o' struct value (never omitted), 'p' pointer to
 * struct (omitted when absent). conv, when set, converts a present value. */
struct gofield {
	const char *key;
	char kind;
	bool omitempty;
	json_t *(*conv)(const json_t *v);
};

static json_t *go_struct(const json_t *in, const struct gofield *f, size_t n);

static bool
go_empty(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING: return json_string_length(v) == 0;
	case JSON_INTEGER: return json_integer_value(v) == 0;
	case JSON_REAL: return json_real_value(v) == 0;
	case JSON_FALSE: case JSON_NULL: return true;
	case JSON_ARRAY: return json_array_size(v) == 0;
	case JSON_OBJECT: return json_object_size(v) == 0;
	default: return false;
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* A map with its keys in Go's (sorted) order. */
json_t *
it_go_map(const json_t *in)
{
	size_t n = json_object_size(in), i = 0;
	_cleanup_free_ const char **keys = calloc(n + 1, sizeof(*keys));
	json_t *out = json_object(), *v;
	const char *k;

	if (!keys || !out) {
		json_decref(out);
		return NULL;
	}
	json_object_foreach((json_t *) in, k, v)
		keys[i++] = k;
	qsort(keys, n, sizeof(*keys), cmp_str);
	for (i = 0; i < n; i++)
		json_object_set(out, keys[i], json_object_get(in, keys[i]));
	return out;
}

static json_t *
go_platform(const json_t *in)
{
	static const struct gofield f[] = {
		{ "architecture", 's', false, NULL }, { "os", 's', false, NULL },
		{ "os.version", 's', true, NULL }, { "os.features", 'a', true, NULL },
		{ "variant", 's', true, NULL },
	};

	return go_struct(in, f, sizeof(f) / sizeof(f[0]));
}

static json_t *
go_descriptor(const json_t *in)
{
	static const struct gofield f[] = {
		{ "mediaType", 's', true, NULL }, { "digest", 's', false, NULL },
		{ "size", 'i', false, NULL }, { "urls", 'a', true, NULL },
		{ "annotations", 'm', true, it_go_map }, { "data", 's', true, NULL },
		{ "platform", 'p', true, go_platform }, { "artifactType", 's', true, NULL },
	};

	return go_struct(in, f, sizeof(f) / sizeof(f[0]));
}

json_t *
it_go_descriptors(const json_t *in)
{
	json_t *out = json_array(), *v;
	size_t i;

	json_array_foreach(in, i, v)
		json_array_append_new(out, go_descriptor(v));
	return out;
}

static json_t *
go_image_config(const json_t *in)
{
	static const struct gofield f[] = {
		{ "User", 's', true, NULL }, { "ExposedPorts", 'm', true, it_go_map },
		{ "Env", 'a', true, NULL }, { "Entrypoint", 'a', true, NULL },
		{ "Cmd", 'a', true, NULL }, { "Volumes", 'm', true, it_go_map },
		{ "WorkingDir", 's', true, NULL }, { "Labels", 'm', true, it_go_map },
		{ "StopSignal", 's', true, NULL }, { "ArgsEscaped", 'b', true, NULL },
	};

	return go_struct(in, f, sizeof(f) / sizeof(f[0]));
}

static json_t *
go_rootfs(const json_t *in)
{
	static const struct gofield f[] = {
		{ "type", 's', false, NULL }, { "diff_ids", 'a', false, NULL },
	};

	return go_struct(in, f, sizeof(f) / sizeof(f[0]));
}

static json_t *
go_history(const json_t *in)
{
	static const struct gofield f[] = {
		{ "created", 's', true, NULL }, { "created_by", 's', true, NULL },
		{ "author", 's', true, NULL }, { "comment", 's', true, NULL },
		{ "empty_layer", 'b', true, NULL },
	};
	json_t *out = json_array(), *v;
	size_t i;

	json_array_foreach(in, i, v)
		json_array_append_new(out, go_struct(v, f, sizeof(f) / sizeof(f[0])));
	return out;
}

/* ocispec.Image: what buildx's {{json .Image}} shows of a config. */
json_t *
it_go_image(const json_t *in)
{
	static const struct gofield f[] = {
		{ "created", 's', true, NULL }, { "author", 's', true, NULL },
		{ "architecture", 's', false, NULL }, { "os", 's', false, NULL },
		{ "os.version", 's', true, NULL }, { "os.features", 'a', true, NULL },
		{ "variant", 's', true, NULL }, { "config", 'o', true, go_image_config },
		{ "rootfs", 'o', false, go_rootfs }, { "history", 'a', true, go_history },
	};

	return go_struct(in, f, sizeof(f) / sizeof(f[0]));
}

static json_t *
go_struct(const json_t *in, const struct gofield *f, size_t n)
{
	json_t *out = json_object();

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const json_t *v = json_object_get(in, f[i].key);
		json_t *nv;

		if (v && json_is_null(v))
			v = NULL;
		if (!v) {
			static const json_t *none;

			switch (f[i].kind) {
			case 's': nv = f[i].omitempty ? NULL : json_string(""); break;
			case 'i': nv = f[i].omitempty ? NULL : json_integer(0); break;
			case 'b': nv = f[i].omitempty ? NULL : json_false(); break;
			case 'o': nv = f[i].conv ? f[i].conv(none) : json_object(); break;
			case 'p': nv = NULL; break;
			default: nv = f[i].omitempty ? NULL : json_null(); break;
			}
		} else if (f[i].omitempty && f[i].kind != 'o' && f[i].kind != 'p' && go_empty(v)) {
			nv = NULL;
		} else {
			nv = f[i].conv ? f[i].conv(v) : json_deep_copy(v);
		}
		if (nv)
			json_object_set_new(out, f[i].key, nv);
	}
	return out;
}

/* MarshalIndent(v, "", "  "): jansson's indented form is the same. */
char *
it_go_dump(const json_t *v)
{
	return json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
}

/* The config of manifest m (bytes doc) in ref's repository, as ocispec.Image. */
int
it_load_config(struct registry *reg, const struct registry_ref *ref,
	       const struct registry_doc *doc, json_t **ret, struct kiln_err *err)
{
	_cleanup_json_ json_t *m = json_loadb(doc->data, doc->len, 0, NULL), *cj = NULL;
	const char *cd = it_jstr(json_object_get(m, "config"), "digest");
	struct registry_doc cfg = { 0 };
	struct digest d;
	int r;

	if (!cd || digest_parse(cd, &d) < 0)
		return kiln_err_set(err, EPROTO, "manifest %s: no config descriptor", ref->path);
	r = registry_get_blob(reg, ref, &d, OCI_JSON_MAX, &cfg, err);
	if (r < 0)
		return r;
	cj = json_loadb(cfg.data ? cfg.data : "", cfg.len, 0, NULL);
	registry_doc_release(&cfg);
	if (!json_is_object(cj))
		return kiln_err_set(err, EPROTO, "config of %s is not a JSON object", ref->path);
	*ret = it_go_image(cj);
	return *ret ? 0 : kiln_err_set(err, ENOMEM, "out of memory");
}

/* ---- create ---- */

struct source {
	const char *arg;                /* as given (a -f file's content), for messages */
	bool has_ref;
	struct registry_ref ref;        /* its repository, and what to resolve */
	bool resolve;                   /* ask the registry for its descriptor */
	json_t *desc;                   /* owned: OCI descriptor keys */
	struct registry_doc doc;        /* the fetched document */
};

static void
source_release(struct source *s)
{
	json_decref(s->desc);
	registry_doc_release(&s->doc);
}

/* A digest, a reference or a descriptor object, as buildx's parseSource. */
static int
source_parse(const char *in, struct source *s, struct kiln_err *err)
{
	_cleanup_free_ char *t = strdup(in);
	struct kiln_err e = { 0 };
	size_t n;
	struct digest d;

	if (!t)
		return kiln_err_set(err, ENOMEM, "out of memory");
	n = strlen(t);
	while (n > 0 && isspace((unsigned char) t[n - 1]))
		t[--n] = '\0';
	memset(s, 0, sizeof(*s));
	s->arg = in;
	if (strncmp(t, "sha256", 6) == 0) {
		if (digest_parse(t, &d) < 0) {
			kiln_err_set(&e, EINVAL, "invalid checksum digest format");
			goto bad;
		}
		s->desc = json_pack("{s:s}", "digest", t);
		return s->desc ? 0 : kiln_err_set(err, ENOMEM, "out of memory");
	}
	if (registry_ref_parse(t, &s->ref, &e) == 0) {
		s->has_ref = true;
		s->resolve = true;
		return 0;
	}
	if (t[0] == '{') {
		json_error_t je;
		json_t *j = json_loads(t, 0, &je);

		if (!json_is_object(j)) {
			json_decref(j);
			kiln_err_set(&e, EINVAL, "%s", j ? "not a JSON object" : je.text);
			goto bad;
		}
		if (!it_jstr(j, "digest") || digest_parse(it_jstr(j, "digest"), &d) < 0) {
			json_decref(j);
			kiln_err_set(&e, EINVAL, "the descriptor has no valid digest");
			goto bad;
		}
		s->desc = j;
		return 0;
	}
bad:
	return kiln_err_set(err, EINVAL, "failed to parse source \"%s\", valid sources are digests, "
			    "references and descriptors: %s", t, e.msg);
}

/* buildx's mergeDesc: the registry's descriptor d1 with what the user
 * gave (d2) laid over it. Takes neither. */
static int
merge_desc(json_t *d1, const json_t *d2, struct kiln_err *err)
{
	json_int_t s1 = json_integer_value(json_object_get(d1, "size"));
	json_int_t s2 = json_integer_value(json_object_get(d2, "size"));

	if (s2 != 0 && s1 != s2)
		return kiln_err_set(err, EINVAL, "invalid size mismatch for %s, %lld != %lld",
				    it_jstr(d1, "digest"), (long long) s2, (long long) s1);
	if (it_jstr(d2, "mediaType") && *it_jstr(d2, "mediaType"))
		json_object_set(d1, "mediaType", json_object_get(d2, "mediaType"));
	if (json_object_size(json_object_get(d2, "annotations")))
		json_object_set(d1, "annotations", json_object_get(d2, "annotations"));
	if (json_is_object(json_object_get(d2, "platform")))
		json_object_set(d1, "platform", json_object_get(d2, "platform"));
	return 0;
}

static int
source_resolve(struct registry *reg, struct source *s, struct kiln_err *err)
{
	struct oci_descriptor d = { 0 };
	_cleanup_json_ json_t *j = NULL;
	char ds[DIGEST_STR_SIZE];
	int r;

	r = registry_head_manifest(reg, &s->ref, &d, err);
	if (r < 0)
		return r;
	if (r == 0)
		return not_found(&s->ref, err);
	j = json_pack("{s:s, s:s, s:I}", "mediaType", d.media_type, "digest",
		      digest_fmt(&d.digest, ds), "size", (json_int_t) d.size);
	oci_descriptor_release(&d);
	if (!j)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (s->desc) {
		r = merge_desc(j, s->desc, err);
		if (r < 0)
			return r;
		json_decref(s->desc);
	}
	s->desc = STEAL_PTR(j);
	return 0;
}

/* Fill in a manifest's platform from its config where it lacks os or
 * architecture, normalised as containerd does. */
static int
source_platform(struct registry *reg, struct source *s, struct kiln_err *err)
{
	json_t *p = json_object_get(s->desc, "platform");
	_cleanup_json_ json_t *cfg = NULL;
	const char *os, *arch, *var;
	struct platform pl;
	char ps[3 * 64 + 3];
	int r;

	if (json_is_object(p) && it_jstr(p, "os") && *it_jstr(p, "os") && it_jstr(p, "architecture") &&
	    *it_jstr(p, "architecture"))
		return 0;
	r = it_load_config(reg, &s->ref, &s->doc, &cfg, err);
	if (r < 0)
		return r;
	os = it_jstr(cfg, "os");
	arch = it_jstr(cfg, "architecture");
	var = it_jstr(cfg, "variant");
	snprintf(ps, sizeof(ps), "%.64s/%.64s%s%.64s", os ? os : "", arch ? arch : "",
		 var && *var ? "/" : "", var && *var ? var : "");
	if (platform_parse(ps, &pl) < 0)
		return kiln_err_set(err, EINVAL, "%s: config has an invalid platform '%s'", s->arg, ps);
	if (!json_is_object(p)) {
		p = json_object();
		json_object_set_new(s->desc, "platform", p);
	}
	if (!it_jstr(p, "architecture") || !*it_jstr(p, "architecture")) {
		json_object_set_new(p, "architecture", json_string(pl.arch));
		if ((!it_jstr(p, "variant") || !*it_jstr(p, "variant")) && pl.variant[0])
			json_object_set_new(p, "variant", json_string(pl.variant));
	}
	if (!it_jstr(p, "os") || !*it_jstr(p, "os"))
		json_object_set_new(p, "os", json_string(pl.os));
	return 0;
}

/* Fetch the source's document and complete its descriptor. */
static int
source_fetch(struct registry *reg, struct source *s, struct kiln_err *err)
{
	struct registry_ref at;
	struct digest d;
	const char *mt;
	int r;

	if (digest_parse(it_jstr(s->desc, "digest"), &d) < 0)
		return kiln_err_set(err, EINVAL, "%s: no digest", s->arg);
	at = it_ref_at(&s->ref, &d);
	r = it_get_doc(reg, &at, &s->doc, err);
	if (r < 0)
		return r;
	mt = it_jstr(s->desc, "mediaType");
	if (!mt || !*mt)
		json_object_set_new(s->desc, "mediaType", json_string(s->doc.media_type));
	if (!json_object_get(s->desc, "size"))
		json_object_set_new(s->desc, "size", json_integer((json_int_t) s->doc.len));
	if (it_is_manifest_mt(it_jstr(s->desc, "mediaType")))
		return source_platform(reg, s, err);
	return 0;
}

/* buildx's addDesc: a digest seen again merges into the first entry. */
static int
add_desc(json_t *list, const json_t *d)
{
	json_t *e;
	size_t i;

	json_array_foreach(list, i, e) {
		json_t *ann, *na;
		const char *k;
		json_t *v;

		const char *ed = it_jstr(e, "digest"), *dd = it_jstr(d, "digest");

		if (!ed || !dd || strcmp(ed, dd) != 0)
			continue;
		if ((!it_jstr(e, "mediaType") || !*it_jstr(e, "mediaType")) && it_jstr(d, "mediaType"))
			json_object_set(e, "mediaType", json_object_get(d, "mediaType"));
		if (json_is_object(json_object_get(d, "platform")))
			json_object_set(e, "platform", json_object_get(d, "platform"));
		ann = json_object_get(e, "annotations");
		na = json_object_get(d, "annotations");
		if (json_is_object(na)) {
			if (!json_is_object(ann)) {
				ann = json_object();
				json_object_set_new(e, "annotations", ann);
			}
			json_object_foreach(na, k, v)
				json_object_set(ann, k, v);
		}
		return 0;
	}
	return json_array_append_new(list, json_deep_copy(d));
}

/* The merged index (bytes, media type) from resolved, fetched sources. */
static int
combine(struct source *srcs, size_t n, bool prefer_index, char **ret, size_t *ret_len,
	char ret_mt[128], struct kiln_err *err)
{
	_cleanup_json_ json_t *list = json_array(), *ix = NULL, *descs = NULL;
	size_t docker = 0, i;
	json_t *d;
	char *s;

	if (!list)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (n == 1 && (it_is_index_mt(it_jstr(srcs[0].desc, "mediaType")) || !prefer_index)) {
		/* a carbon copy: the very bytes */
		*ret = malloc(srcs[0].doc.len + 1);
		if (!*ret)
			return kiln_err_set(err, ENOMEM, "out of memory");
		memcpy(*ret, srcs[0].doc.data ? srcs[0].doc.data : "", srcs[0].doc.len);
		*ret_len = srcs[0].doc.len;
		snprintf(ret_mt, 128, "%s", it_jstr(srcs[0].desc, "mediaType"));
		return 0;
	}
	for (i = 0; i < n; i++) {
		const char *mt = it_jstr(srcs[i].desc, "mediaType");

		if (it_is_index_mt(mt)) {
			const struct registry_doc *sd = &srcs[i].doc;
			_cleanup_json_ json_t *sx = json_loadb(sd->data, sd->len, 0, NULL);
			json_t *m;
			size_t k;

			if (!json_is_object(sx) || !json_is_array(json_object_get(sx, "manifests")))
				return kiln_err_set(err, EPROTO, "%s: the index has no manifests array",
						    srcs[i].arg);
			json_array_foreach(json_object_get(sx, "manifests"), k, m)
				if (add_desc(list, m) < 0)
					return kiln_err_set(err, ENOMEM, "out of memory");
		} else {
			if (add_desc(list, srcs[i].desc) < 0)
				return kiln_err_set(err, ENOMEM, "out of memory");
		}
	}
	json_array_foreach(list, i, d)
		if (kiln_startswith(it_jstr(d, "mediaType") ? it_jstr(d, "mediaType") : "",
				    "application/vnd.docker."))
			docker++;
	snprintf(ret_mt, 128, "%s", docker == json_array_size(list) ? DOCKER_MT_LIST : OCI_MT_INDEX);
	descs = it_go_descriptors(list);
	ix = json_pack("{s:i, s:s, s:O}", "schemaVersion", 2, "mediaType", ret_mt, "manifests", descs);
	if (!ix)
		return kiln_err_set(err, ENOMEM, "out of memory");
	s = it_go_dump(ix);
	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	*ret = s;
	*ret_len = strlen(s);
	return 0;
}

/* Copy the manifest or index desc names, and everything it references,
 * from src's repository to dst's. */
static int
copy_chain(struct registry *reg, struct cas *cas, const struct registry_ref *src,
	   const struct registry_ref *dst, const struct digest *d, unsigned depth,
	   struct kiln_err *err)
{
	struct registry_ref from = it_ref_at(src, d), to = it_ref_at(dst, d);
	struct registry_doc doc = { 0 };
	struct oci_descriptor have = { 0 };
	_cleanup_json_ json_t *j = NULL;
	char ds[DIGEST_STR_SIZE];
	int r;

	if (depth > IT_DEPTH_MAX)
		return kiln_err_set(err, EPROTO, "indexes nested more than %d deep", IT_DEPTH_MAX);
	to.tag[0] = '\0';
	r = registry_head_manifest(reg, &to, &have, err);
	if (r < 0)
		return r;
	if (r == 1) {
		oci_descriptor_release(&have);
		return 0;
	}
	r = it_get_doc(reg, &from, &doc, err);
	if (r < 0)
		return r;
	j = json_loadb(doc.data, doc.len, 0, NULL);
	if (!json_is_object(j)) {
		registry_doc_release(&doc);
		return kiln_err_set(err, EPROTO, "manifest %s is not a JSON object", digest_fmt(d, ds));
	}
	if (it_is_index_mt(doc.media_type)) {
		json_t *m;
		size_t i;

		json_array_foreach(json_object_get(j, "manifests"), i, m) {
			struct digest md;

			if (it_json_digest(m, &md) < 0)
				r = kiln_err_set(err, EPROTO, "index %s: an entry without a valid digest",
						 digest_fmt(d, ds));
			else
				r = copy_chain(reg, cas, src, dst, &md, depth + 1, err);
			if (r < 0)
				break;
		}
	} else {
		json_t *blobs = json_array(), *b;
		size_t i;

		json_array_append(blobs, json_object_get(j, "config"));
		json_array_extend(blobs, json_object_get(j, "layers"));
		json_array_foreach(blobs, i, b) {
			struct oci_descriptor bd = { 0 };
			const char *mt = it_jstr(b, "mediaType") ? it_jstr(b, "mediaType") : "";

			/* foreign layers live at their URLs, not in the registry */
			if (!json_is_object(b) || strstr(mt, ".foreign.") ||
			    strstr(mt, "nondistributable"))
				continue;
			snprintf(bd.media_type, sizeof(bd.media_type), "%s", mt);
			bd.size = json_integer_value(json_object_get(b, "size"));
			if (it_json_digest(b, &bd.digest) < 0) {
				r = kiln_err_set(err, EPROTO, "manifest %s: a blob without a valid digest",
						 digest_fmt(d, ds));
				break;
			}
			r = registry_copy_blob(reg, src, dst, &bd, cas, NULL, err);
			if (r < 0)
				break;
		}
		json_decref(blobs);
	}
	if (r == 0)
		r = registry_put_manifest(reg, &to, doc.media_type, doc.data, doc.len, NULL, err);
	registry_doc_release(&doc);
	return r;
}

struct create_opts {
	const char *tags[IT_TAGS_MAX];
	size_t n_tags;
	const char *files[IT_SOURCES_MAX];
	size_t n_files;
	bool dry_run, append, prefer_index;
	const char *progress;
};

static int
push_tag(struct registry *reg, struct cas *cas, struct progress *pr, struct source *srcs, size_t n,
	 const struct registry_ref *tag, const char *data, size_t len, const char *mt,
	 struct kiln_err *err)
{
	char ts[REGISTRY_REF_STR_SIZE], ds[DIGEST_STR_SIZE];
	_cleanup_free_ char *name = NULL;
	struct digest d;
	int v, r = 0;

	registry_ref_fmt(tag, ts, sizeof(ts));
	name = kiln_strdupf("[internal] pushing %s", ts);
	v = progress_start(pr, name ? name : ts);
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_free_ char *line = NULL;
		char ss[REGISTRY_REF_STR_SIZE];
		struct digest sd;

		if (same_repo(&srcs[i].ref, tag))
			continue;
		(void) digest_parse(it_jstr(srcs[i].desc, "digest"), &sd);
		line = kiln_strdupf("copying %s from %s to %s\n", it_jstr(srcs[i].desc, "digest"),
				    registry_ref_fmt(&srcs[i].ref, ss, sizeof(ss)), ts);
		if (line)
			progress_log(pr, v, line, strlen(line));
		r = copy_chain(reg, cas, &srcs[i].ref, tag, &sd, 0, err);
	}
	if (r == 0) {
		_cleanup_free_ char *line = NULL;

		digest_buf(data, len, &d);
		line = kiln_strdupf("pushing %s to %s\n", digest_fmt(&d, ds), ts);
		if (line)
			progress_log(pr, v, line, strlen(line));
		r = registry_put_manifest(reg, tag, mt, data, len, NULL, err);
	}
	progress_done(pr, v, r < 0 ? err->msg : NULL);
	return r;
}

static int
run_create(const struct create_opts *o, char **args, size_t n_args, struct kiln_err *err)
{
	struct registry_ref tags[IT_TAGS_MAX];
	_cleanup_free_ struct source *srcs = NULL;
	_cleanup_free_ char *data = NULL, *tmp = NULL;
	char *file_args[IT_SOURCES_MAX] = { 0 };
	char mt[128], rs[REGISTRY_REF_STR_SIZE], only[REGISTRY_REF_STR_SIZE] = "";
	struct registry *reg = NULL;
	struct progress *pr = NULL;
	struct cas *cas = NULL;
	size_t n = 0, len = 0, n_repos = 0;
	int r = 0;

	if (n_args == 0 && o->n_files == 0)
		return kiln_err_set(err, EINVAL, "no sources specified");
	if (!o->dry_run && o->n_tags == 0)
		return kiln_err_set(err, EINVAL, "can't push with no tags specified, please set --tag "
				    "or --dry-run");
	if (n_args + o->n_files + 1 > IT_SOURCES_MAX)
		return kiln_err_set(err, E2BIG, "more than %d sources", IT_SOURCES_MAX - 1);
	srcs = calloc(n_args + o->n_files + 1, sizeof(*srcs));
	if (!srcs)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < o->n_tags; i++)
		if (registry_ref_parse(o->tags[i], &tags[i], err) < 0)
			return -err->code;

	/* sources: files, then --append's tag, then the arguments */
	for (size_t i = 0; i < o->n_files; i++) {
		size_t flen;

		r = kiln_read_file_at(AT_FDCWD, o->files[i], IT_FILE_MAX, &file_args[i], &flen);
		if (r < 0) {
			r = kiln_err_errno(err, -r, "open %s", o->files[i]);
			goto out;
		}
	}
	if (o->append && o->n_tags > 0) {
		r = source_parse(o->tags[0], &srcs[n++], err);
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; i < o->n_files; i++) {
		r = source_parse(file_args[i], &srcs[n++], err);
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; i < n_args; i++) {
		r = source_parse(args[i], &srcs[n++], err);
		if (r < 0)
			goto out;
	}

	/* a source without a repository takes the only one named */
	for (size_t i = 0; i < o->n_tags + n; i++) {
		const struct registry_ref *x = i < o->n_tags ? &tags[i] : &srcs[i - o->n_tags].ref;

		if (i >= o->n_tags && !srcs[i - o->n_tags].has_ref)
			continue;
		ref_repo(x, rs, sizeof(rs));
		if (n_repos == 0)
			snprintf(only, sizeof(only), "%s", rs);
		if (n_repos == 0 || (n_repos == 1 && strcmp(rs, only) != 0))
			n_repos++;
	}
	if (n_repos == 0) {
		r = kiln_err_set(err, EINVAL, "no repositories specified, please set a reference in tag "
				 "or source");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct source *s = &srcs[i];

		if (s->has_ref)
			continue;
		if (n_repos != 1) {
			r = kiln_err_set(err, EINVAL, "multiple repositories specified, cannot infer "
					 "repository for \"%s\"", s->arg);
			goto out;
		}
		r = registry_ref_parse(only, &s->ref, err);
		if (r < 0)
			goto out;
		s->has_ref = true;
		if (!it_jstr(s->desc, "mediaType") || !*it_jstr(s->desc, "mediaType")) {
			s->ref.tag[0] = '\0';
			s->ref.has_digest = digest_parse(it_jstr(s->desc, "digest"), &s->ref.digest) == 0;
			s->resolve = true;
		}
	}

	r = registry_new(NULL, &reg, err);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n && r == 0; i++)
		if (srcs[i].resolve)
			r = source_resolve(reg, &srcs[i], err);
	for (size_t i = 0; i < n && r == 0; i++)
		r = source_fetch(reg, &srcs[i], err);
	if (r == 0)
		r = combine(srcs, n, o->prefer_index, &data, &len, mt, err);
	if (r < 0)
		goto out;
	if (o->dry_run) {
		fwrite(data, 1, len, stdout);
		fputc('\n', stdout);
		if (fflush(stdout) != 0)
			r = kiln_err_errno(err, errno, "write the index");
		goto out;
	}

	pr = progress_new(o->progress, stderr);
	if (!pr) {
		r = kiln_err_set(err, EINVAL, "invalid progress mode '%s' (auto, plain, tty, quiet, "
				 "rawjson)", o->progress);
		goto out;
	}
	/* blobs that cannot be mounted pass through a store of our own */
	tmp = kiln_strdupf("%s/kiln-imagetools-XXXXXX", getenv("TMPDIR") && *getenv("TMPDIR") ?
			   getenv("TMPDIR") : "/tmp");
	if (!tmp || !mkdtemp(tmp)) {
		r = kiln_err_errno(err, tmp ? errno : ENOMEM, "make a temporary directory");
		free(STEAL_PTR(tmp));
		goto out;
	}
	r = cas_open(tmp, &cas, err);
	for (size_t t = 0; t < o->n_tags && r == 0; t++)
		r = push_tag(reg, cas, pr, srcs, n, &tags[t], data, len, mt, err);
out:
	cas_free(cas);
	if (tmp)
		(void) kiln_rm_rf(tmp);
	progress_free(pr);
	registry_free(reg);
	for (size_t i = 0; i < n; i++)
		source_release(&srcs[i]);
	for (size_t i = 0; i < o->n_files; i++)
		free(file_args[i]);
	return r;
}

static int
cmd_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "tag", required_argument, NULL, 't' },
		{ "file", required_argument, NULL, 'f' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "append", no_argument, NULL, 'a' },
		{ "prefer-index", optional_argument, NULL, 'i' },
		{ "progress", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct create_opts o = { .prefer_index = true, .progress = "auto" };
	struct kiln_err err = { 0 };
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":t:f:h", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (o.n_tags == IT_TAGS_MAX)
				return cli_usage_error("imagetools", "create", "more than %d tags", IT_TAGS_MAX);
			o.tags[o.n_tags++] = optarg;
			break;
		case 'f':
			if (o.n_files == IT_SOURCES_MAX / 2)
				return cli_usage_error("imagetools", "create", "more than %d files", IT_SOURCES_MAX / 2);
			o.files[o.n_files++] = optarg;
			break;
		case 'n': o.dry_run = true; break;
		case 'a': o.append = true; break;
		case 'i':
			if (!optarg || strcmp(optarg, "true") == 0 || strcmp(optarg, "1") == 0)
				o.prefer_index = true;
			else if (strcmp(optarg, "false") == 0 || strcmp(optarg, "0") == 0)
				o.prefer_index = false;
			else
				return cli_usage_error("imagetools", "create", "invalid argument \"%s\" for "
						      "\"--prefer-index\" flag: strconv.ParseBool: "
						      "parsing \"%s\": invalid syntax", optarg, optarg);
			break;
		case 'P': o.progress = optarg; break;
		case 'h': fputs(create_help, stdout); return 0;
		default: return cli_bad_flag("imagetools", "create", argv, c);
		}
	}
	if (run_create(&o, argv + optind, (size_t) (argc - optind), &err) < 0)
		return it_print_error(&err);
	return 0;
}

int
imagetools_main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(imagetools_help, stdout);
		return 0;
	}
	cmd = argv[1];
	/* getopt reports errors against argv[0]: make it the subcommand. */
	argc--;
	argv++;
	if (strcmp(cmd, "inspect") == 0)
		return it_cmd_inspect(argc, argv);
	if (strcmp(cmd, "create") == 0)
		return cmd_create(argc, argv);
	fprintf(stderr, "ERROR: unknown command \"%s\" for \"kiln imagetools\"\n"
		"See 'kiln imagetools --help'.\n", cmd);
	return 1;
}
