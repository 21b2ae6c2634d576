/* Tests for OCI documents (oci): manifest and index parse/dump round trips,
 * validation failures naming the bad field, the image-spec fixtures of the
 * shared corpus, the image-config helpers, and image-layout resolution over
 * a layout written here with two platforms, nested indexes and manifests
 * whose platform is only in their config. What we dump is checked against
 * the "required" lists of the image-spec JSON schemas. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "err.h"
#include "oci.h"
#include "platform.h"
#include "util.h"

#define CORPUS "/work/shared/corpus/image-spec"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static const char manifest_text[] =
	"{\n"
	"  \"schemaVersion\": 2,\n"
	"  \"mediaType\": \"" OCI_MT_MANIFEST "\",\n"
	"  \"config\": {\"mediaType\": \"" OCI_MT_CONFIG "\", \"digest\": \"" D1 "\", \"size\": 7023},\n"
	"  \"layers\": [\n"
	"    {\"mediaType\": \"" OCI_MT_LAYER_GZ "\", \"digest\": \"" D2 "\", \"size\": 32654,\n"
	"     \"annotations\": {\"b\": \"2\", \"a\": \"1\"}},\n"
	"    {\"mediaType\": \"" OCI_MT_LAYER_TAR "\", \"digest\": \"" D3 "\", \"size\": 0,\n"
	"     \"urls\": [\"https://example.com/x\"]}\n"
	"  ],\n"
	"  \"annotations\": {\"org.opencontainers.image.created\": \"2024-01-02T03:04:05Z\"}\n"
	"}\n";

static void
manifest_roundtrip(void **state)
{
	struct oci_manifest m, m2;
	struct kiln_err err = { 0 };
	char ds[DIGEST_STR_SIZE], *out, *out2;
	size_t len, len2;

	(void) state;
	if (oci_manifest_parse(manifest_text, strlen(manifest_text), &m, &err) < 0)
		fail_msg("parse: %s", err.msg);
	assert_string_equal(m.media_type, OCI_MT_MANIFEST);
	assert_string_equal(m.config.media_type, OCI_MT_CONFIG);
	assert_string_equal(digest_fmt(&m.config.digest, ds), D1);
	assert_int_equal(m.config.size, 7023);
	assert_int_equal(m.n_layers, 2);
	assert_string_equal(digest_fmt(&m.layers[0].digest, ds), D2);
	assert_string_equal(json_string_value(json_object_get(m.layers[0].annotations, "a")), "1");
	assert_null(m.layers[1].annotations);
	assert_int_equal(m.layers[1].size, 0);
	assert_non_null(m.annotations);

	out = oci_manifest_dump(&m, &len);
	assert_non_null(out);
	assert_int_equal(strlen(out), len);
	/* compact, sorted keys, urls dropped */
	assert_null(strchr(out, ' '));
	assert_null(strchr(out, '\n'));
	assert_null(strstr(out, "urls"));
	assert_true(kiln_startswith(out, "{\"annotations\":{\"org.opencontainers.image.created\""));
	assert_non_null(strstr(out, "\"annotations\":{\"a\":\"1\",\"b\":\"2\"}"));
	assert_non_null(strstr(out, "\"schemaVersion\":2}"));

	assert_int_equal(oci_manifest_parse(out, len, &m2, &err), 0);
	out2 = oci_manifest_dump(&m2, &len2);
	assert_string_equal(out, out2);         /* a fixed point */
	assert_int_equal(len, len2);

	free(out);
	free(out2);
	oci_manifest_release(&m);
	oci_manifest_release(&m2);
	oci_manifest_release(&m2);              /* released twice is harmless */
}

static void
index_roundtrip(void **state)
{
	static const char text[] =
		"{\"schemaVersion\":2,\"manifests\":["
		"{\"mediaType\":\"" OCI_MT_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":10,"
		"\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},"
		"{\"mediaType\":\"" OCI_MT_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":11,"
		"\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v6\"},"
		"\"annotations\":{\"" OCI_ANNOT_REF_NAME "\":\"v1\"}},"
		"{\"mediaType\":\"" OCI_MT_INDEX "\",\"digest\":\"" D3 "\",\"size\":12}],"
		"\"annotations\":{\"k\":\"v\"}}";
	struct oci_index ix, ix2;
	struct kiln_err err = { 0 };
	char *out, *out2, ps[PLATFORM_STR_SIZE];
	size_t len;

	(void) state;
	if (oci_index_parse(text, strlen(text), &ix, &err) < 0)
		fail_msg("parse: %s", err.msg);
	assert_string_equal(ix.media_type, OCI_MT_INDEX);    /* defaulted */
	assert_int_equal(ix.n_manifests, 3);
	assert_true(ix.manifests[0].has_platform);
	assert_string_equal(platform_fmt(&ix.manifests[0].platform, ps), "linux/arm64");
	assert_string_equal(platform_fmt(&ix.manifests[1].platform, ps), "linux/arm/v6");
	assert_false(ix.manifests[2].has_platform);

	out = oci_index_dump(&ix, &len);
	assert_non_null(out);
	assert_non_null(strstr(out, "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v6\"}"));
	assert_non_null(strstr(out, "\"mediaType\":\"" OCI_MT_INDEX "\""));
	assert_int_equal(oci_index_parse(out, len, &ix2, &err), 0);
	out2 = oci_index_dump(&ix2, NULL);
	assert_string_equal(out, out2);
	free(out);
	free(out2);
	oci_index_release(&ix);
	oci_index_release(&ix2);
}

static void
descriptor_json(void **state)
{
	struct oci_descriptor d, d2;
	struct kiln_err err = { 0 };
	json_t *j, *j2;
	json_error_t jerr;

	(void) state;
	j = json_loads("{\"mediaType\":\"" OCI_MT_CONFIG "\",\"digest\":\"" D1 "\",\"size\":3}", 0, &jerr);
	assert_int_equal(oci_descriptor_from_json(j, &d, &err), 0);
	assert_false(d.has_platform);
	j2 = oci_descriptor_to_json(&d);
	assert_true(json_equal(j, j2));
	assert_int_equal(oci_descriptor_from_json(j2, &d2, &err), 0);
	oci_descriptor_release(&d);
	oci_descriptor_release(&d2);
	json_decref(j);
	json_decref(j2);

	j = json_loads("[1]", 0, &jerr);
	assert_int_equal(oci_descriptor_from_json(j, &d, &err), -EINVAL);
	json_decref(j);
}

struct bad_case {
	const char *json;
	const char *needle;     /* must appear in the error */
};

#define CFG "\"config\":{\"mediaType\":\"" OCI_MT_CONFIG "\",\"digest\":\"" D1 "\",\"size\":1}"
#define LAYER "{\"mediaType\":\"" OCI_MT_LAYER_GZ "\",\"digest\":\"" D2 "\",\"size\":1}"

static void
manifest_validation(void **state)
{
	static const struct bad_case cases[] = {
		{ "[]", "not a JSON object" },
		{ "{\"schemaVersion\":2", "invalid JSON" },
		{ "{\"schemaVersion\":1," CFG ",\"layers\":[]}", "schemaVersion" },
		{ "{\"schemaVersion\":\"2\"," CFG ",\"layers\":[]}", "schemaVersion" },
		{ "{\"schemaVersion\":2,\"layers\":[]}", "'config' is missing" },
		{ "{\"schemaVersion\":2," CFG "}", "'layers'" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":{}}", "'layers'" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MT_INDEX "\"," CFG ",\"layers\":[]}",
		  "it is an index" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"bogus\"," CFG ",\"layers\":[]}", "mediaType" },
		{ "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"invalid\",\"digest\":\"" D1
		  "\",\"size\":1},\"layers\":[]}", "config: mediaType 'invalid'" },
		{ "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"" D1
		  "\",\"size\":\"1\"},\"layers\":[]}", "config: 'size'" },
		{ "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"" D1
		  "\",\"size\":-1},\"layers\":[]}", "config: 'size'" },
		{ "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"size\":1},\"layers\":[]}",
		  "config: 'digest'" },
		{ "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:ABCD\","
		  "\"size\":1},\"layers\":[]}", "not sha256" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER ",{\"mediaType\":\"a/b\","
		  "\"digest\":\"md5:00\",\"size\":1}]}", "layers[1]: digest" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER ",7]}", "layers[1]" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[],\"annotations\":{\"a\":1}}", "annotations" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[],\"annotations\":[]}", "annotations" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[],\"subject\":\"nope\"}", "subject" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[],\"schemaVersion\":2}", "duplicate" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[" LAYER "]} trailing", "invalid JSON" },
		{ "{\"schemaVersion\":2," CFG ",\"layers\":[{\"mediaType\":\"a/b\",\"digest\":\"" D1
		  "\",\"size\":1,\"platform\":{\"os\":\"linux\"}}]}", "platform" },
	};
	struct oci_manifest m;
	struct kiln_err err;
	char *big;

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kiln_err_clear(&err);
		if (oci_manifest_parse(cases[i].json, strlen(cases[i].json), &m, &err) != -EINVAL)
			fail_msg("case %zu accepted: %s", i, cases[i].json);
		if (!strstr(err.msg, cases[i].needle))
			fail_msg("case %zu: error '%s' does not mention '%s'", i, err.msg,
				 cases[i].needle);
	}

	/* the size bound comes before any parsing */
	big = malloc(OCI_JSON_MAX + 1);
	memset(big, ' ', OCI_JSON_MAX + 1);
	assert_int_equal(oci_manifest_parse(big, OCI_JSON_MAX + 1, &m, &err), -EFBIG);
	free(big);

	/* an empty layers array is accepted (BuildKit writes them) */
	static const char empty[] = "{\"schemaVersion\":2," CFG ",\"layers\":[]}";
	assert_int_equal(oci_manifest_parse(empty, strlen(empty), &m, &err), 0);
	assert_int_equal(m.n_layers, 0);
	oci_manifest_release(&m);
}

static void
index_validation(void **state)
{
	static const struct bad_case cases[] = {
		{ "{\"schemaVersion\":2}", "'manifests'" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MT_MANIFEST "\",\"manifests\":[]}",
		  "it is a manifest" },
		{ "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"\",\"digest\":\"" D1
		  "\",\"size\":1}]}", "manifests[0]: mediaType" },
		{ "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a/b\",\"digest\":\"" D1
		  "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"a/b\"}}]}",
		  "invalid platform" },
		{ "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a/b\",\"digest\":\"" D1
		  "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\","
		  "\"variant\":8}}]}", "platform" },
	};
	struct oci_index ix;
	struct kiln_err err;

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kiln_err_clear(&err);
		if (oci_index_parse(cases[i].json, strlen(cases[i].json), &ix, &err) != -EINVAL)
			fail_msg("case %zu accepted: %s", i, cases[i].json);
		if (!strstr(err.msg, cases[i].needle))
			fail_msg("case %zu: error '%s' does not mention '%s'", i, err.msg,
				 cases[i].needle);
	}
}

/* ---- the image-spec fixtures of the shared corpus ---- */

/* Cases where we knowingly differ from the image-spec's own tests. */
static const char *const fixture_deviations[] = {
	"manifest/05-invalid.json",     /* empty layers: accepted, BuildKit writes them */
	"manifest/06-valid.json",       /* sha256+b64 etc.: only sha256 is supported */
	NULL,
};

static bool
is_deviation(const char *file)
{
	for (size_t i = 0; fixture_deviations[i]; i++)
		if (strcmp(file, fixture_deviations[i]) == 0)
			return true;
	return false;
}

static void
corpus_fixtures(void **state)
{
	char *tsv = NULL, *line, *save = NULL;
	size_t len;
	unsigned checked = 0;

	(void) state;
	if (kiln_read_file_at(AT_FDCWD, CORPUS "/derived/fixtures/index.tsv", 1 << 20, &tsv, &len) < 0)
		skip();
	for (line = strtok_r(tsv, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char file[128], mt[128], expect[16], path[512], *doc = NULL;
		struct kiln_err err = { 0 };
		size_t dlen;
		int r;

		if (line[0] == '#' || sscanf(line, "%127[^\t]\t%127[^\t]\t%15[^\t]", file, mt, expect) != 3)
			continue;
		if (is_deviation(file))
			continue;
		snprintf(path, sizeof(path), CORPUS "/derived/fixtures/%s", file);
		assert_int_equal(kiln_read_file_at(AT_FDCWD, path, 1 << 20, &doc, &dlen), 0);
		if (strcmp(mt, OCI_MT_MANIFEST) == 0) {
			struct oci_manifest m;

			r = oci_manifest_parse(doc, dlen, &m, &err);
			if (r == 0)
				oci_manifest_release(&m);
		} else if (strcmp(mt, OCI_MT_INDEX) == 0) {
			struct oci_index ix;

			r = oci_index_parse(doc, dlen, &ix, &err);
			if (r == 0)
				oci_index_release(&ix);
		} else if (strcmp(mt, OCI_MT_CONFIG) == 0) {
			json_t *cfg = NULL;

			r = oci_config_parse(doc, dlen, &cfg, &err);
			json_decref(cfg);
		} else {
			free(doc);
			continue;       /* descriptors and layouts have no parser of their own */
		}
		if ((strcmp(expect, "valid") == 0) != (r == 0))
			fail_msg("%s: expected %s, got %s", file, expect, r == 0 ? "success" : err.msg);
		free(doc);
		checked++;
	}
	free(tsv);
	assert_true(checked >= 30);
}

/* The spec examples: only sha256 digests, so every manifest and index
 * must parse as it is. */
static void
corpus_examples(void **state)
{
	static const char *const manifests[] = { "manifest-1.json", "manifest-3.json",
						 "manifest-4.json", "manifest-5.json" };
	static const char *const indexes[] = { "image-index-1.json", "image-index-2.json",
					       "image-layout-2.json" };
	struct kiln_err err = { 0 };
	char path[256], *doc;
	size_t len;

	(void) state;
	for (size_t i = 0; i < sizeof(manifests) / sizeof(manifests[0]); i++) {
		struct oci_manifest m;

		snprintf(path, sizeof(path), CORPUS "/derived/examples/%s", manifests[i]);
		if (kiln_read_file_at(AT_FDCWD, path, 1 << 20, &doc, &len) < 0)
			skip();
		if (oci_manifest_parse(doc, len, &m, &err) < 0)
			fail_msg("%s: %s", manifests[i], err.msg);
		oci_manifest_release(&m);
		free(doc);
	}
	for (size_t i = 0; i < sizeof(indexes) / sizeof(indexes[0]); i++) {
		struct oci_index ix;

		snprintf(path, sizeof(path), CORPUS "/derived/examples/%s", indexes[i]);
		if (kiln_read_file_at(AT_FDCWD, path, 1 << 20, &doc, &len) < 0)
			skip();
		if (oci_index_parse(doc, len, &ix, &err) < 0)
			fail_msg("%s: %s", indexes[i], err.msg);
		oci_index_release(&ix);
		free(doc);
	}
}

/* The keys a schema lists as required, at the object the slash-separated
 * path of member names leads to (NULL: the top). */
static void
assert_required(const json_t *doc, const char *schema_file, const char *path)
{
	char buf[256], *save = NULL;
	json_error_t jerr;
	json_t *schema, *node, *req, *k;
	size_t i;

	snprintf(buf, sizeof(buf), CORPUS "/schema/%s", schema_file);
	schema = json_load_file(buf, 0, &jerr);
	if (!schema)
		skip();
	node = schema;
	if (path) {
		snprintf(buf, sizeof(buf), "%s", path);
		for (char *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save))
			node = json_object_get(node, t);
	}
	req = json_object_get(node, "required");
	assert_true(json_array_size(req) > 0);
	json_array_foreach(req, i, k) {
		if (!json_object_get(doc, json_string_value(k)))
			fail_msg("%s: required '%s' missing", schema_file, json_string_value(k));
	}
	json_decref(schema);
}

static void
dump_has_required_fields(void **state)
{
	struct oci_manifest m;
	struct oci_index ix;
	struct kiln_err err = { 0 };
	struct platform p;
	json_error_t jerr;
	json_t *j, *cfg;
	char *out;
	size_t i;

	(void) state;
	assert_int_equal(oci_manifest_parse(manifest_text, strlen(manifest_text), &m, &err), 0);
	out = oci_manifest_dump(&m, NULL);
	j = json_loads(out, 0, &jerr);
	assert_required(j, "image-manifest-schema.json", NULL);
	assert_required(json_object_get(j, "config"), "content-descriptor.json", NULL);
	for (i = 0; i < json_array_size(json_object_get(j, "layers")); i++)
		assert_required(json_array_get(json_object_get(j, "layers"), i),
				"content-descriptor.json", NULL);
	json_decref(j);
	free(out);

	ix.media_type[0] = '\0';
	ix.n_manifests = 1;
	ix.manifests = &m.config;
	ix.annotations = NULL;
	m.config.has_platform = true;
	assert_int_equal(platform_parse("linux/arm/v7", &m.config.platform), 0);
	out = oci_index_dump(&ix, NULL);
	j = json_loads(out, 0, &jerr);
	assert_required(j, "image-index-schema.json", NULL);
	assert_required(json_array_get(json_object_get(j, "manifests"), 0),
			"image-index-schema.json", "properties/manifests/items");
	assert_required(json_object_get(json_array_get(json_object_get(j, "manifests"), 0), "platform"),
			"image-index-schema.json", "properties/manifests/items/properties/platform");
	json_decref(j);
	free(out);
	oci_manifest_release(&m);

	assert_int_equal(platform_parse("linux/amd64", &p), 0);
	cfg = oci_config_new(&p);
	out = oci_json_dump(cfg, NULL);
	j = json_loads(out, 0, &jerr);
	assert_required(j, "config-schema.json", NULL);
	assert_required(json_object_get(j, "rootfs"), "config-schema.json", "properties/rootfs");
	json_decref(j);
	json_decref(cfg);
	free(out);
}

/* ---- configs ---- */

static void
config_helpers(void **state)
{
	struct platform p;
	struct digest d;
	struct kiln_err err = { 0 };
	json_t *cfg, *cfg2, *env, *h;
	char *out, ts[32];
	size_t len;

	(void) state;
	assert_int_equal(platform_parse("linux/arm/v7", &p), 0);
	cfg = oci_config_new(&p);
	assert_non_null(cfg);
	out = oci_json_dump(cfg, &len);
	assert_string_equal(out, "{\"architecture\":\"arm\",\"config\":{},\"history\":[],"
				 "\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[],\"type\":\"layers\"},"
				 "\"variant\":\"v7\"}");
	free(out);

	/* env: append, replace in place, order kept */
	assert_null(oci_config_get_env(cfg, "PATH"));
	assert_int_equal(oci_config_set_env(cfg, "PATH", "/bin"), 0);
	assert_int_equal(oci_config_set_env(cfg, "A", "1"), 0);
	assert_int_equal(oci_config_set_env(cfg, "B", "x=y"), 0);
	assert_int_equal(oci_config_set_env(cfg, "A", "2"), 0);
	assert_int_equal(oci_config_set_env(cfg, "AB", ""), 0);
	assert_int_equal(oci_config_set_env(cfg, "", "x"), -EINVAL);
	assert_int_equal(oci_config_set_env(cfg, "X=Y", "x"), -EINVAL);
	env = json_object_get(json_object_get(cfg, "config"), "Env");
	assert_int_equal(json_array_size(env), 4);
	assert_string_equal(json_string_value(json_array_get(env, 0)), "PATH=/bin");
	assert_string_equal(json_string_value(json_array_get(env, 1)), "A=2");
	assert_string_equal(json_string_value(json_array_get(env, 2)), "B=x=y");
	assert_string_equal(json_string_value(json_array_get(env, 3)), "AB=");
	assert_string_equal(oci_config_get_env(cfg, "A"), "2");
	assert_string_equal(oci_config_get_env(cfg, "B"), "x=y");
	assert_string_equal(oci_config_get_env(cfg, "AB"), "");
	assert_null(oci_config_get_env(cfg, "PAT"));

	/* history and diff_ids */
	digest_buf("layer", 5, &d);
	assert_int_equal(oci_config_add_history(cfg, "RUN make", 1704164645, false, &d), 0);
	assert_int_equal(oci_config_add_history(cfg, "ENV A=2", 1704164646, true, NULL), 0);
	assert_int_equal(oci_config_add_history(cfg, "RUN x", 0, false, NULL), -EINVAL);
	h = json_object_get(cfg, "history");
	assert_int_equal(json_array_size(h), 2);
	out = oci_json_dump(json_array_get(h, 0), NULL);
	assert_string_equal(out, "{\"comment\":\"buildkit.dockerfile.v0\","
				 "\"created\":\"2024-01-02T03:04:05Z\",\"created_by\":\"RUN make\"}");
	free(out);
	out = oci_json_dump(json_array_get(h, 1), NULL);
	assert_string_equal(out, "{\"comment\":\"buildkit.dockerfile.v0\","
				 "\"created\":\"2024-01-02T03:04:06Z\",\"created_by\":\"ENV A=2\","
				 "\"empty_layer\":true}");
	free(out);
	assert_int_equal(json_array_size(json_object_get(json_object_get(cfg, "rootfs"), "diff_ids")), 1);

	/* set / delete fields */
	assert_int_equal(oci_config_set(cfg, "WorkingDir", json_string("/src")), 0);
	assert_int_equal(oci_config_set(cfg, "Cmd", json_pack("[s,s]", "sh", "-c")), 0);
	assert_int_equal(oci_config_set(cfg, "User", json_string("1000")), 0);
	assert_int_equal(oci_config_set(cfg, "User", NULL), 0);
	assert_int_equal(oci_config_set(cfg, "Nope", NULL), 0);
	assert_null(json_object_get(json_object_get(cfg, "config"), "User"));

	/* what we build parses back, and survives a round trip */
	out = oci_json_dump(cfg, &len);
	if (oci_config_parse(out, len, &cfg2, &err) < 0)
		fail_msg("config_parse: %s", err.msg);
	assert_true(json_equal(cfg, cfg2));
	free(out);
	json_decref(cfg2);
	json_decref(cfg);

	assert_string_equal(oci_time_fmt(0, ts), "1970-01-01T00:00:00Z");
	assert_string_equal(oci_time_fmt(1704164645, ts), "2024-01-02T03:04:05Z");
}

static void
config_validation(void **state)
{
	static const char *const bad[] = {
		"{\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\"}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"x\",\"diff_ids\":[]}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[\"sha256:x\"]}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[]},\"config\":{\"Env\":[\"NOEQUALS\"]}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[]},\"config\":{\"Cmd\":\"sh\"}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[]},\"config\":{\"Labels\":{\"a\":1}}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[]},\"history\":[{\"empty_layer\":\"yes\"}]}",
	};
	static const char good[] =
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[]},\"config\":{\"Cmd\":null,\"Entrypoint\":null,\"Volumes\":null,"
		"\"Labels\":{},\"OnBuild\":[]},\"x-unknown\":{\"kept\":true}}";
	struct kiln_err err = { 0 };
	json_t *cfg = NULL;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (oci_config_parse(bad[i], strlen(bad[i]), &cfg, &err) != -EINVAL)
			fail_msg("case %zu accepted", i);
		assert_true(err.msg[0] != '\0');
	}
	assert_int_equal(oci_config_parse(good, strlen(good), &cfg, &err), 0);
	assert_non_null(json_object_get(cfg, "x-unknown"));
	/* Env appears inside an existing config section */
	assert_int_equal(oci_config_set_env(cfg, "K", "v"), 0);
	assert_string_equal(oci_config_get_env(cfg, "K"), "v");
	json_decref(cfg);
}

/* ---- image layouts ---- */

static void
write_file(const char *dir, const char *name, const char *text)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, text, strlen(text), 0644), 0);
}

/* Store text as a blob; returns its descriptor JSON (caller frees) with
 * the given media type and extra members (may be ""). */
static char *
put_blob(const char *dir, const char *text, const char *mt, const char *extra, struct digest *ret_d)
{
	char path[256], ds[DIGEST_STR_SIZE], *desc;
	struct digest d;

	digest_buf(text, strlen(text), &d);
	assert_int_equal(oci_layout_blob_path(dir, &d, path, sizeof(path)), 0);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, text, strlen(text), 0644), 0);
	if (ret_d)
		*ret_d = d;
	desc = kiln_strdupf("{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu%s%s}", mt,
			    digest_fmt(&d, ds), strlen(text), extra[0] ? "," : "", extra);
	assert_non_null(desc);
	return desc;
}

/* An image for platform os/arch[/variant]: config + manifest blobs;
 * returns the manifest's descriptor JSON. */
static char *
put_image(const char *dir, const char *os, const char *arch, const char *variant, const char *extra,
	  struct digest *ret_d)
{
	char cfg[512], *cdesc, *mtext, *mdesc;

	snprintf(cfg, sizeof(cfg),
		 "{\"architecture\":\"%s\",\"os\":\"%s\"%s%s%s,\"rootfs\":{\"type\":\"layers\","
		 "\"diff_ids\":[]}}", arch, os, variant ? ",\"variant\":\"" : "",
		 variant ? variant : "", variant ? "\"" : "");
	cdesc = put_blob(dir, cfg, OCI_MT_CONFIG, "", NULL);
	mtext = kiln_strdupf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":%s,\"layers\":[]}",
			     OCI_MT_MANIFEST, cdesc);
	mdesc = put_blob(dir, mtext, OCI_MT_MANIFEST, extra, ret_d);
	free(cdesc);
	free(mtext);
	return mdesc;
}

struct layout_fx {
	char dir[64];
	struct digest amd64, arm64, armv7, nested_amd64, nested_arm64, nested_index;
};

static int
layout_setup(void **state)
{
	struct layout_fx *fx = calloc(1, sizeof(*fx));
	char path[128], *a, *b, *c, *na, *nb, *ix_text, *ix_desc, *top;

	snprintf(fx->dir, sizeof(fx->dir), "/tmp/kiln-oci-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(path, sizeof(path), "%s/blobs/sha256", fx->dir);
	if (kiln_mkdir_p(path, 0755) < 0)
		return -1;
	write_file(fx->dir, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");

	/* "latest": three manifests without platform fields (found through
	 * their configs), one of them with a variant spelled the long way */
	a = put_image(fx->dir, "linux", "amd64", NULL,
		      "\"annotations\":{\"" OCI_ANNOT_REF_NAME "\":\"latest\"}", &fx->amd64);
	b = put_image(fx->dir, "linux", "aarch64", "v8",
		      "\"annotations\":{\"" OCI_ANNOT_REF_NAME "\":\"latest\"}", &fx->arm64);
	c = put_image(fx->dir, "linux", "arm", "v7",
		      "\"annotations\":{\"" OCI_ANNOT_REF_NAME "\":\"latest\"}", &fx->armv7);
	/* "multi": a nested index whose entries carry platform fields; their
	 * configs deliberately lie, to prove the descriptor's platform wins */
	na = put_image(fx->dir, "linux", "s390x", NULL,
		       "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}", &fx->nested_amd64);
	nb = put_image(fx->dir, "linux", "s390x", NULL,
		       "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}", &fx->nested_arm64);
	ix_text = kiln_strdupf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[%s,%s]}",
			       OCI_MT_INDEX, na, nb);
	ix_desc = put_blob(fx->dir, ix_text, OCI_MT_INDEX,
			   "\"annotations\":{\"" OCI_ANNOT_REF_NAME "\":\"multi\"}", &fx->nested_index);
	top = kiln_strdupf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[%s,%s,%s,%s,"
			   "{\"mediaType\":\"application/xml\",\"digest\":\"" D1 "\",\"size\":1}]}",
			   OCI_MT_INDEX, ix_desc, a, b, c);
	write_file(fx->dir, "index.json", top);
	free(a);
	free(b);
	free(c);
	free(na);
	free(nb);
	free(ix_text);
	free(ix_desc);
	free(top);
	*state = fx;
	return 0;
}

static int
layout_teardown(void **state)
{
	struct layout_fx *fx = *state;

	(void) kiln_rm_rf(fx->dir);
	free(fx);
	return 0;
}

static void
expect_resolve(const char *dir, const char *ref, const char *plat, const struct digest *want)
{
	struct oci_descriptor d;
	struct kiln_err err = { 0 };
	struct platform p;
	char a[DIGEST_STR_SIZE], b[DIGEST_STR_SIZE];

	assert_int_equal(platform_parse(plat, &p), 0);
	if (oci_layout_resolve(dir, ref, &p, &d, &err) < 0)
		fail_msg("resolve '%s' for %s: %s", ref ? ref : "(null)", plat, err.msg);
	if (!digest_equal(&d.digest, want))
		fail_msg("resolve '%s' for %s: got %s, want %s", ref ? ref : "(null)", plat,
			 digest_fmt(&d.digest, a), digest_fmt(want, b));
	assert_string_equal(d.media_type, OCI_MT_MANIFEST);
	oci_descriptor_release(&d);
}

static void
expect_resolve_fails(const char *dir, const char *ref, const char *plat, const char *needle)
{
	struct oci_descriptor d;
	struct kiln_err err = { 0 };
	struct platform p;

	assert_int_equal(platform_parse(plat, &p), 0);
	if (oci_layout_resolve(dir, ref, &p, &d, &err) == 0)
		fail_msg("resolve '%s' for %s succeeded", ref ? ref : "(null)", plat);
	if (!strstr(err.msg, needle))
		fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void
layout_resolve_platforms(void **state)
{
	struct layout_fx *fx = *state;
	char msg[256], ds[DIGEST_STR_SIZE];

	expect_resolve(fx->dir, NULL, "linux/amd64", &fx->amd64);
	expect_resolve(fx->dir, "latest", "linux/amd64", &fx->amd64);
	expect_resolve(fx->dir, NULL, "linux/arm64", &fx->arm64);
	expect_resolve(fx->dir, NULL, "linux/arm64/v8", &fx->arm64);
	expect_resolve(fx->dir, NULL, "linux/arm", &fx->armv7);
	expect_resolve(fx->dir, "multi", "linux/amd64", &fx->nested_amd64);
	expect_resolve(fx->dir, "multi", "linux/arm64", &fx->nested_arm64);

	snprintf(msg, sizeof(msg), "oci layout '%s': no manifest for 'latest' and platform linux/s390x",
		 fx->dir);
	expect_resolve_fails(fx->dir, NULL, "linux/s390x", msg);
	/* the lying config of the nested entries is not consulted */
	snprintf(msg, sizeof(msg), "oci layout '%s': no manifest for 'multi' and platform linux/s390x",
		 fx->dir);
	expect_resolve_fails(fx->dir, "multi", "linux/s390x", msg);
	snprintf(msg, sizeof(msg), "oci layout '%s': no manifest for 'v2'", fx->dir);
	expect_resolve_fails(fx->dir, "v2", "linux/amd64", msg);
	expect_resolve_fails(fx->dir, "v2", "linux/amd64", "'multi', 'latest'");

	/* by digest: a manifest is taken as pinned, an index is resolved */
	expect_resolve(fx->dir, digest_fmt(&fx->armv7, ds), "linux/amd64", &fx->armv7);
	expect_resolve(fx->dir, digest_fmt(&fx->nested_index, ds), "linux/arm64", &fx->nested_arm64);
	expect_resolve_fails(fx->dir, "sha256:zz", "linux/amd64", "invalid digest");
	expect_resolve_fails(fx->dir, D2, "linux/amd64", "read blob");
}

static void
layout_single_unnamed(void **state)
{
	struct layout_fx *fx = *state;
	char dir[128], path[160], *a, *top;
	struct digest d;

	snprintf(dir, sizeof(dir), "%s/single", fx->dir);
	snprintf(path, sizeof(path), "%s/blobs/sha256", dir);
	assert_int_equal(kiln_mkdir_p(path, 0755), 0);
	write_file(dir, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
	a = put_image(dir, "linux", "riscv64", NULL, "", &d);
	top = kiln_strdupf("{\"schemaVersion\":2,\"manifests\":[%s]}", a);
	write_file(dir, "index.json", top);
	expect_resolve(dir, NULL, "linux/riscv64", &d);
	expect_resolve(dir, "anything", "linux/riscv64", &d);
	expect_resolve_fails(dir, NULL, "linux/amd64", "and platform linux/amd64");
	free(top);

	/* two unnamed entries: ambiguous */
	top = kiln_strdupf("{\"schemaVersion\":2,\"manifests\":[%s,%s]}", a, a);
	write_file(dir, "index.json", top);
	expect_resolve_fails(dir, NULL, "linux/riscv64", "names none");
	free(top);
	free(a);
}

static void
layout_damage(void **state)
{
	struct layout_fx *fx = *state;
	char path[256], msg[160];

	/* a blob that does not match its digest is not trusted */
	assert_int_equal(oci_layout_blob_path(fx->dir, &fx->arm64, path, sizeof(path)), 0);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, "{}", 2, 0644), 0);
	expect_resolve_fails(fx->dir, NULL, "linux/arm64", "has 2 bytes");

	/* no oci-layout file: not a layout */
	snprintf(path, sizeof(path), "%s/oci-layout", fx->dir);
	assert_int_equal(unlink(path), 0);
	snprintf(msg, sizeof(msg), "oci layout '%s'", fx->dir);
	expect_resolve_fails(fx->dir, NULL, "linux/amd64", msg);
	expect_resolve_fails("/nonexistent/kiln", NULL, "linux/amd64", "/nonexistent/kiln");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(manifest_roundtrip),
		cmocka_unit_test(index_roundtrip),
		cmocka_unit_test(descriptor_json),
		cmocka_unit_test(manifest_validation),
		cmocka_unit_test(index_validation),
		cmocka_unit_test(corpus_fixtures),
		cmocka_unit_test(corpus_examples),
		cmocka_unit_test(dump_has_required_fields),
		cmocka_unit_test(config_helpers),
		cmocka_unit_test(config_validation),
		cmocka_unit_test_setup_teardown(layout_resolve_platforms, layout_setup, layout_teardown),
		cmocka_unit_test_setup_teardown(layout_single_unnamed, layout_setup, layout_teardown),
		cmocka_unit_test_setup_teardown(layout_damage, layout_setup, layout_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
