/* `kiln imagetools inspect` (see imagetools.h): what a reference names,
 * printed as buildx prints it: the registry's bytes untouched (--raw, no
 * newline added, so they hash to the digest), buildx's summary (Name,
 * MediaType, Digest, and for an index its Manifests, laid out as Go's
 * tabwriter does), or a Go template over {Name, Manifest, Image}. As in
 * buildx, a format that starts with {{.Manifest gives the summary.
 *
 * Templates: kiln runs a subset of Go's text/template: text, {{.A.B}},
 * {{json X}}, {{index X "key"}}, parentheses and {{- -}} trimming. Fields
 * match the JSON keys case-insensitively (Go's field names), with the few
 * that differ by more than case mapped. A value that is an object or array
 * prints as compact JSON where Go would print map[...]; a missing field
 * prints "<no value>". Anything else (if, range, pipelines, .SBOM,
 * .Provenance) is refused with an error, before anything is printed. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "imagetools-internal.h"
#include "usage.h"
#include "oci.h"
#include "platform.h"
#include "registry.h"
#include "util.h"

static const char inspect_help[] =
	"Usage:  kiln imagetools inspect [OPTIONS] NAME\n"
	"\n"
	"Show details of an image in the registry\n"
	"\n"
	"Options:\n"
	"      --format string   Format the output using the given Go template (default\n"
	"                        \"{{.Manifest}}\"; kiln knows fields, json and index)\n"
	"      --raw             Show original, unformatted JSON manifest\n"
	"  -h, --help            Print usage\n";

/* ---- Go's tabwriter, for two columns ---- */

struct tw {
	char **cells;                   /* key, value, key, value... */
	size_t n;
	FILE *out;
};

static void
tw_row(struct tw *t, const char *key, const char *val)
{
	char **c = realloc(t->cells, (t->n + 2) * sizeof(*c));

	if (!c)
		return;
	t->cells = c;
	c[t->n] = strdup(key);
	c[t->n + 1] = strdup(val ? val : "");
	t->n += 2;
}

/* Cells padded to the widest of the block plus one, as NewWriter(out, 0,
 * 0, 1, ' ', 0) does; the block ends here. */
static void
tw_flush(struct tw *t)
{
	size_t w = 0;

	for (size_t i = 0; i < t->n; i += 2)
		if (t->cells[i] && strlen(t->cells[i]) > w)
			w = strlen(t->cells[i]);
	for (size_t i = 0; i < t->n; i += 2) {
		fprintf(t->out, "%-*s%s\n", (int) w + 1, t->cells[i] ? t->cells[i] : "",
			t->cells[i + 1] ? t->cells[i + 1] : "");
		free(t->cells[i]);
		free(t->cells[i + 1]);
	}
	free(t->cells);
	t->cells = NULL;
	t->n = 0;
}

/* containerd's platforms.Format of a descriptor's platform object. */
static void
platform_text(const json_t *p, char *out, size_t size)
{
	const char *os = it_jstr(p, "os"), *arch = it_jstr(p, "architecture");
	const char *var = it_jstr(p, "variant");

	if (!os || !*os) {
		snprintf(out, size, "unknown");
		return;
	}
	snprintf(out, size, "%s%s%s%s%s", os, arch && *arch ? "/" : "", arch ? arch : "",
		 var && *var ? "/" : "", var ? var : "");
}

static char *
join_strings(const json_t *arr)
{
	char *s = NULL;
	size_t len = 0, i;
	json_t *v;
	FILE *f = open_memstream(&s, &len);

	if (!f)
		return NULL;
	json_array_foreach(arr, i, v)
		fprintf(f, "%s%s", i ? ", " : "", json_string_value(v) ? json_string_value(v) : "");
	if (fclose(f) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

static void
print_manifest_list(const struct registry_ref *ref, const json_t *ix, FILE *out)
{
	struct tw t = { .out = out };
	json_t *m;
	size_t i;

	tw_row(&t, "", "");
	tw_row(&t, "Manifests:", "");
	tw_flush(&t);
	json_array_foreach(json_object_get(ix, "manifests"), i, m) {
		const json_t *p = json_object_get(m, "platform");
		struct registry_ref cr = *ref;
		char rs[REGISTRY_REF_STR_SIZE], ps[128];

		if (i)
			tw_row(&t, "", "");
		cr.has_digest = it_json_digest(m, &cr.digest) == 0;
		tw_row(&t, "  Name:", registry_ref_fmt(&cr, rs, sizeof(rs)));
		tw_row(&t, "  MediaType:", it_jstr(m, "mediaType"));
		if (!json_is_object(p))
			continue;
		platform_text(p, ps, sizeof(ps));
		tw_row(&t, "  Platform:", ps);
		if (it_jstr(p, "os.version") && *it_jstr(p, "os.version"))
			tw_row(&t, "  OSVersion:", it_jstr(p, "os.version"));
		if (json_array_size(json_object_get(p, "os.features")) > 0) {
			_cleanup_free_ char *s = join_strings(json_object_get(p, "os.features"));

			tw_row(&t, "  OSFeatures:", s);
		}
		if (json_array_size(json_object_get(m, "urls")) > 0) {
			_cleanup_free_ char *s = join_strings(json_object_get(m, "urls"));

			tw_row(&t, "  URLs:", s);
		}
		if (json_object_size(json_object_get(m, "annotations")) > 0) {
			_cleanup_json_ json_t *a = it_go_map(json_object_get(m, "annotations"));
			struct tw t2 = { .out = out };
			const char *k;
			json_t *v;

			tw_row(&t, "  Annotations:", "");
			tw_flush(&t);
			json_object_foreach(a, k, v) {
				_cleanup_free_ char *key = kiln_strdupf("    %s:", k);

				tw_row(&t2, key ? key : "", json_string_value(v));
			}
			tw_flush(&t2);
		}
	}
	tw_flush(&t);
}

/* Name, MediaType, Digest; then the entries of an index. */
static int
print_human(const struct registry_ref *ref, const struct registry_doc *doc, FILE *out,
	    struct kiln_err *err)
{
	struct tw t = { .out = out };
	char rs[REGISTRY_REF_STR_SIZE], ds[DIGEST_STR_SIZE];

	tw_row(&t, "Name:", registry_ref_fmt(ref, rs, sizeof(rs)));
	tw_row(&t, "MediaType:", doc->media_type);
	tw_row(&t, "Digest:", digest_fmt(&doc->digest, ds));
	tw_flush(&t);
	if (it_is_index_mt(doc->media_type)) {
		_cleanup_json_ json_t *ix = json_loadb(doc->data, doc->len, 0, NULL);

		if (!json_is_object(ix))
			return kiln_err_set(err, EPROTO, "%s: the index is not a JSON object", rs);
		print_manifest_list(ref, ix, out);
	}
	return 0;
}

/* ---- templates ---- */

struct tpl {
	const char *s, *end;            /* the action being read */
	const json_t *root;
	struct kiln_err *err;
};

static void
tpl_ws(struct tpl *t)
{
	while (t->s < t->end && isspace((unsigned char) *t->s))
		t->s++;
}

static size_t
tpl_ident(struct tpl *t)
{
	size_t n = 0;

	while (t->s + n < t->end && (isalnum((unsigned char) t->s[n]) || t->s[n] == '_'))
		n++;
	return n;
}

/* The JSON key for a Go field name: a few differ by more than case. */
static const json_t *
field_get(const json_t *o, const char *name, size_t n)
{
	static const char *const alias[][2] = {
		{ "DiffIDs", "diff_ids" }, { "OSVersion", "os.version" },
		{ "OSFeatures", "os.features" }, { "EmptyLayer", "empty_layer" },
		{ "CreatedBy", "created_by" }, { "RootFS", "rootfs" },
	};
	const char *k;
	json_t *v;

	for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++)
		if (strlen(alias[i][0]) == n && strncmp(alias[i][0], name, n) == 0)
			return json_object_get(o, alias[i][1]);
	json_object_foreach((json_t *) o, k, v)
		if (strlen(k) == n && strncmp(k, name, n) == 0)
			return v;
	json_object_foreach((json_t *) o, k, v)
		if (strlen(k) == n && strncasecmp(k, name, n) == 0)
			return v;
	return NULL;
}

static int tpl_cmd(struct tpl *t, json_t **ret);

/* .A.B... applied to *v (a new reference, replaced). */
static int
tpl_fields(struct tpl *t, json_t **v)
{
	while (t->s < t->end && *t->s == '.' && t->s + 1 < t->end &&
	       (isalpha((unsigned char) t->s[1]) || t->s[1] == '_')) {
		const json_t *next;
		size_t n;

		t->s++;
		n = tpl_ident(t);
		if (!json_is_object(*v))
			return kiln_err_set(t->err, EINVAL, "template: can't evaluate field %.*s in %s",
					    (int) n, t->s, json_is_null(*v) ? "a missing value" :
					    "a value that is not an object");
		next = field_get(*v, t->s, n);
		t->s += n;
		json_decref(*v);
		*v = next ? json_incref((json_t *) next) : json_null();
	}
	return 0;
}

static int
tpl_operand(struct tpl *t, json_t **ret)
{
	json_t *v = NULL;
	int r;

	tpl_ws(t);
	if (t->s >= t->end)
		return kiln_err_set(t->err, EINVAL, "template: missing value");
	if (*t->s == '(') {
		t->s++;
		r = tpl_cmd(t, &v);
		if (r < 0)
			return r;
		tpl_ws(t);
		if (t->s >= t->end || *t->s != ')') {
			json_decref(v);
			return kiln_err_set(t->err, EINVAL, "template: unclosed left paren");
		}
		t->s++;
	} else if (*t->s == '"') {
		_cleanup_free_ char *buf = malloc((size_t) (t->end - t->s));
		size_t n = 0;

		if (!buf)
			return kiln_err_set(t->err, ENOMEM, "out of memory");
		for (t->s++; t->s < t->end && *t->s != '"'; t->s++) {
			if (*t->s == '\\' && t->s + 1 < t->end)
				t->s++;
			buf[n++] = *t->s;
		}
		if (t->s >= t->end)
			return kiln_err_set(t->err, EINVAL, "template: unterminated quoted string");
		t->s++;
		v = json_stringn(buf, n);
	} else if (*t->s == '.') {
		v = json_incref((json_t *) t->root);
		if (t->s + 1 >= t->end || !(isalpha((unsigned char) t->s[1]) || t->s[1] == '_'))
			t->s++;
	} else if (isdigit((unsigned char) *t->s) || *t->s == '-') {
		char *e;
		long long x = strtoll(t->s, &e, 10);

		if (e > t->end)
			e = (char *) t->end;
		t->s = e;
		v = json_integer(x);
	} else {
		size_t n = tpl_ident(t);

		return kiln_err_set(t->err, EINVAL, "template: '%.*s' is not supported (kiln's templates "
				    "have fields, json and index)", n ? (int) n : 1, t->s);
	}
	if (!v)
		return kiln_err_set(t->err, ENOMEM, "out of memory");
	r = tpl_fields(t, &v);
	if (r < 0) {
		json_decref(v);
		return r;
	}
	*ret = v;
	return 0;
}

/* json X | index X K... | X */
static int
tpl_cmd(struct tpl *t, json_t **ret)
{
	json_t *v = NULL;
	size_t n;
	int r;

	tpl_ws(t);
	n = tpl_ident(t);
	if (n == 4 && strncmp(t->s, "json", 4) == 0) {
		_cleanup_free_ char *s = NULL;

		t->s += 4;
		r = tpl_operand(t, &v);
		if (r < 0)
			return r;
		s = it_go_dump(v);
		json_decref(v);
		if (!s)
			return kiln_err_set(t->err, ENOMEM, "out of memory");
		*ret = json_string(s);
	} else if (n == 5 && strncmp(t->s, "index", 5) == 0) {
		t->s += 5;
		r = tpl_operand(t, &v);
		if (r < 0)
			return r;
		for (tpl_ws(t); t->s < t->end && *t->s != ')'; tpl_ws(t)) {
			json_t *k = NULL, *next;

			r = tpl_operand(t, &k);
			if (r < 0) {
				json_decref(v);
				return r;
			}
			if (json_is_string(k) && json_is_object(v)) {
				next = json_object_get(v, json_string_value(k));
			} else if (json_is_integer(k) && json_is_array(v)) {
				next = json_array_get(v, (size_t) json_integer_value(k));
				if (!next || json_integer_value(k) < 0) {
					json_decref(k);
					json_decref(v);
					return kiln_err_set(t->err, ERANGE, "template: index out of range");
				}
			} else {
				json_decref(k);
				json_decref(v);
				return kiln_err_set(t->err, EINVAL, "template: can't index this value");
			}
			json_decref(k);
			next = next ? json_incref(next) : json_null();
			json_decref(v);
			v = next;
		}
		*ret = v;
	} else {
		r = tpl_operand(t, ret);
		if (r < 0)
			return r;
	}
	if (!*ret)
		return kiln_err_set(t->err, ENOMEM, "out of memory");
	return 0;
}

static void
tpl_print(const json_t *v, FILE *out)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		fwrite(json_string_value(v), 1, json_string_length(v), out);
		break;
	case JSON_INTEGER:
		fprintf(out, "%lld", (long long) json_integer_value(v));
		break;
	case JSON_REAL:
		fprintf(out, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		fputs("true", out);
		break;
	case JSON_FALSE:
		fputs("false", out);
		break;
	case JSON_NULL:
		fputs("<no value>", out);
		break;
	default: {
		_cleanup_free_ char *s = json_dumps(v, JSON_COMPACT);

		if (s)
			fputs(s, out);
	}
	}
}

/* Run template fmt over root into out (written only if it all succeeds). */
static int
tpl_run(const char *fmt, const json_t *root, FILE *out, struct kiln_err *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	const char *p = fmt;

	if (!m)
		return kiln_err_set(err, ENOMEM, "out of memory");
	while (*p) {
		const char *open = strstr(p, "{{"), *a, *close, *aend;
		struct tpl t = { .root = root, .err = err };
		size_t text;
		json_t *v = NULL;
		bool trim_right = false;

		if (!open) {
			fputs(p, m);
			break;
		}
		text = (size_t) (open - p);
		a = open + 2;
		if (a[0] == '-' && isspace((unsigned char) a[1])) {
			a++;
			while (text > 0 && isspace((unsigned char) p[text - 1]))
				text--;
		}
		fwrite(p, 1, text, m);
		close = strstr(a, "}}");
		if (!close) {
			fclose(m);
			return kiln_err_set(err, EINVAL, "template: unclosed action");
		}
		aend = close;
		if (aend - a >= 2 && aend[-1] == '-' && isspace((unsigned char) aend[-2])) {
			aend--;
			trim_right = true;
		}
		t.s = a;
		t.end = aend;
		tpl_ws(&t);
		if (t.end - t.s >= 2 && strncmp(t.s, "/*", 2) == 0) {
			/* a comment */
		} else if (tpl_cmd(&t, &v) < 0) {
			fclose(m);
			return -err->code;
		} else {
			tpl_ws(&t);
			if (t.s < t.end) {
				json_decref(v);
				fclose(m);
				return kiln_err_set(err, EINVAL, "template: unexpected '%.*s' (kiln's templates "
						    "have no pipelines or control structures)",
						    (int) (t.end - t.s), t.s);
			}
			tpl_print(v, m);
			json_decref(v);
		}
		p = close + 2;
		if (trim_right)
			while (isspace((unsigned char) *p))
				p++;
	}
	if (fclose(m) != 0)
		return kiln_err_set(err, ENOMEM, "out of memory");
	fwrite(buf ? buf : "", 1, len, out);
	return 0;
}

/* buildx prints its summary for any format that starts with .Manifest. */
static bool
format_is_summary(const char *fmt)
{
	const char *p = fmt;

	if (strncmp(p, "{{", 2) != 0)
		return false;
	p += 2;
	if (*p == '-')
		p++;
	while (isspace((unsigned char) *p))
		p++;
	return strncmp(p, ".Manifest", 9) == 0;
}

/* The platform key of an image in an index, normalised, or "" for the
 * entries the loader skips (attestations, nested indexes). */
static void
image_platform_key(const json_t *m, char *out, size_t size)
{
	const json_t *ann = json_object_get(m, "annotations");
	const json_t *p = json_object_get(m, "platform");
	char ps[128];
	struct platform pl;

	out[0] = '\0';
	if (!it_is_manifest_mt(it_jstr(m, "mediaType")) || it_jstr(ann, "vnd.docker.reference.digest") ||
	    it_jstr(ann, "com.docker.reference.digest") || !json_is_object(p))
		return;
	platform_text(p, ps, sizeof(ps));
	if (platform_parse(ps, &pl) == 0)
		platform_fmt(&pl, ps);
	snprintf(out, size, "%s", ps);
}

/* {name, manifest, image}: what buildx's templates see. */
static int
template_input(struct registry *reg, const char *name, const struct registry_ref *ref,
	       const struct registry_doc *doc, json_t **ret, struct kiln_err *err)
{
	_cleanup_json_ json_t *root = json_object(), *mfst = NULL, *images = json_object();
	_cleanup_json_ json_t *ix = NULL;
	char ds[DIGEST_STR_SIZE];
	int r;

	if (!root || !images)
		return kiln_err_set(err, ENOMEM, "out of memory");
	digest_fmt(&doc->digest, ds);
	if (it_is_index_mt(doc->media_type)) {
		json_t *m;
		size_t i;

		ix = json_loadb(doc->data, doc->len, 0, NULL);
		if (!json_is_object(ix))
			return kiln_err_set(err, EPROTO, "the index is not a JSON object");
		mfst = json_object();
		json_int_t sv = json_integer_value(json_object_get(ix, "schemaVersion"));

		json_object_set_new(mfst, "schemaVersion", json_integer(sv));
		if (it_jstr(ix, "mediaType") && *it_jstr(ix, "mediaType"))
			json_object_set_new(mfst, "mediaType", json_string(it_jstr(ix, "mediaType")));
		json_object_set_new(mfst, "digest", json_string(ds));
		json_object_set_new(mfst, "size", json_integer((json_int_t) doc->len));
		json_object_set_new(mfst, "manifests",
				    it_go_descriptors(json_object_get(ix, "manifests")));
		if (json_object_size(json_object_get(ix, "annotations")))
			json_object_set_new(mfst, "annotations",
					    it_go_map(json_object_get(ix, "annotations")));
		json_array_foreach(json_object_get(ix, "manifests"), i, m) {
			struct registry_doc md = { 0 };
			struct registry_ref mr;
			json_t *cfg = NULL;
			char key[128];
			struct digest d;

			image_platform_key(m, key, sizeof(key));
			if (!key[0] || json_object_get(images, key) || it_json_digest(m, &d) < 0)
				continue;
			mr = it_ref_at(ref, &d);
			r = it_get_doc(reg, &mr, &md, err);
			if (r == 0)
				r = it_load_config(reg, ref, &md, &cfg, err);
			registry_doc_release(&md);
			if (r < 0)
				return r;
			json_object_set_new(images, key, cfg);
		}
	} else {
		json_t *cfg = NULL;

		mfst = json_pack("{s:s, s:s, s:I}", "mediaType", doc->media_type, "digest", ds, "size",
				 (json_int_t) doc->len);
		if (it_is_manifest_mt(doc->media_type)) {
			r = it_load_config(reg, ref, doc, &cfg, err);
			if (r < 0)
				return r;
			json_object_set_new(images, "", cfg);
		}
	}
	if (!mfst)
		return kiln_err_set(err, ENOMEM, "out of memory");
	json_object_set_new(root, "name", json_string(name));
	json_object_set(root, "manifest", mfst);
	if (json_object_size(images) > 1) {
		json_object_set_new(root, "image", it_go_map(images));
	} else if (json_object_size(images) == 1) {
		const char *k;
		json_t *v;

		json_object_foreach(images, k, v)
			json_object_set(root, "image", v);
	}
	*ret = STEAL_PTR(root);
	return 0;
}

/* ---- inspect ---- */

int
it_cmd_inspect(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "raw", no_argument, NULL, 'r' },
		{ "format", required_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct registry *reg = NULL;
	struct registry_doc doc = { 0 };
	struct registry_ref ref;
	struct kiln_err err = { 0 };
	const char *format = NULL;
	bool raw = false;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': raw = true; break;
		case 'F': format = optarg; break;
		case 'h': fputs(inspect_help, stdout); return 0;
		default: return cli_bad_flag("imagetools", "inspect", argv, c);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("imagetools", "inspect",
				      "\"kiln imagetools inspect\" requires exactly 1 argument.");
	if (format && *format && raw)
		return cli_usage_error("imagetools", "inspect", "format and raw cannot be used together");
	if (registry_ref_parse(argv[optind], &ref, &err) < 0)
		return it_print_error(&err);
	if (registry_new(NULL, &reg, &err) < 0)
		return it_print_error(&err);
	r = it_get_doc(reg, &ref, &doc, &err);
	if (r == 0 && raw) {
		if (fwrite(doc.data ? doc.data : "", 1, doc.len, stdout) != doc.len || fflush(stdout) != 0)
			r = kiln_err_errno(&err, errno, "write the manifest");
	} else if (r == 0 && (!format || !*format || format_is_summary(format))) {
		r = print_human(&ref, &doc, stdout, &err);
	} else if (r == 0) {
		_cleanup_json_ json_t *in = NULL;

		r = template_input(reg, argv[optind], &ref, &doc, &in, &err);
		if (r == 0)
			r = tpl_run(format, in, stdout, &err);
	}
	registry_doc_release(&doc);
	registry_free(reg);
	return r < 0 ? it_print_error(&err) : 0;
}

