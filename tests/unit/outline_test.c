/* Unit tests for `--call targets` and `--call outline`
 * (coordinator/outline.c): the JSON text byte for byte as BuildKit's
 * json.MarshalIndent writes it, descriptions from comments with the
 * parser's rules, which ARGs, secrets and ssh mounts a target uses and
 * with which values, and the errors BuildKit gives for the same files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "dockerfile.h"
#include "err.h"
#include "outline.h"
#include "platform.h"

enum call { TARGETS, OUTLINE };

/* Run a call on df; returns the JSON text (caller frees) or NULL with the
 * error in err. */
static char *
call(enum call c, const char *df, const char *target, char *const *args, size_t n_args,
     struct kiln_err *err)
{
	struct platform p;
	struct df_ast *ast = NULL;
	char *json = NULL;
	int r;

	assert_int_equal(platform_parse("linux/arm64", &p), 0);
	r = df_parse(df, strlen(df), "Dockerfile", &ast, err);
	if (r == 0) {
		struct outline_input in = {
			.ast = ast, .dockerfile = df, .dockerfile_len = strlen(df),
			.filename = "Dockerfile", .target = target,
			.build_args = args, .n_build_args = n_args, .platform = &p,
		};

		r = c == TARGETS ? outline_targets_json(&in, &json, err) : outline_json(&in, &json, err);
	}
	df_ast_free(ast);
	if (r < 0) {
		assert_null(json);
		assert_true(err->msg[0] != '\0');
		return NULL;
	}
	assert_non_null(json);
	return json;
}

static json_t *
call_ok(enum call c, const char *df, const char *target, char *const *args, size_t n_args)
{
	struct kiln_err err = { 0 };
	char *text = call(c, df, target, args, n_args, &err);
	json_error_t jerr;
	json_t *j;

	if (!text)
		fail_msg("unexpected error: %s", err.msg);
	j = json_loads(text, 0, &jerr);
	if (!j)
		fail_msg("bad JSON (%s): %s", jerr.text, text);
	free(text);
	return j;
}

static void
call_fails(enum call c, const char *df, const char *target, const char *want)
{
	struct kiln_err err = { 0 };
	char *text = call(c, df, target, NULL, 0, &err);

	if (text)
		fail_msg("expected an error, got %s", text);
	if (!strstr(err.msg, want))
		fail_msg("error '%s' does not contain '%s'", err.msg, want);
}

static const char *
str_at(json_t *arr, size_t i, const char *key)
{
	json_t *v = json_object_get(json_array_get(arr, i), key);

	return v ? json_string_value(v) : NULL;
}

static int
line_at(json_t *arr, size_t i)
{
	json_t *loc = json_object_get(json_array_get(arr, i), "location");
	json_t *r0 = json_array_get(json_object_get(loc, "ranges"), 0);

	return (int) json_integer_value(json_object_get(json_object_get(r0, "start"), "line"));
}

/* The exact text for a small file, as BuildKit prints it. */
static void
targets_exact_text(void **state)
{
	static const char df[] =
		"# base builds <things> & more\n"
		"FROM --platform=$BUILDPLATFORM alpine AS base\n"
		"FROM base\n";
	static const char want[] =
		"{\n"
		"  \"targets\": [\n"
		"    {\n"
		"      \"name\": \"base\",\n"
		"      \"description\": \"builds \\u003cthings\\u003e \\u0026 more\",\n"
		"      \"base\": \"alpine\",\n"
		"      \"platform\": \"$BUILDPLATFORM\",\n"
		"      \"location\": {\n"
		"        \"ranges\": [\n"
		"          {\n"
		"            \"start\": {\n"
		"              \"line\": 2\n"
		"            },\n"
		"            \"end\": {\n"
		"              \"line\": 2\n"
		"            }\n"
		"          }\n"
		"        ]\n"
		"      }\n"
		"    },\n"
		"    {\n"
		"      \"default\": true,\n"
		"      \"base\": \"base\",\n"
		"      \"location\": {\n"
		"        \"ranges\": [\n"
		"          {\n"
		"            \"start\": {\n"
		"              \"line\": 3\n"
		"            },\n"
		"            \"end\": {\n"
		"              \"line\": 3\n"
		"            }\n"
		"          }\n"
		"        ]\n"
		"      }\n"
		"    }\n"
		"  ],\n"
		"  \"sources\": [\n"
		"    \"IyBiYXNlIGJ1aWxkcyA8dGhpbmdzPiAmIG1vcmUKRlJPTSAtLXBsYXRmb3JtPSRCVUlMRFBMQVRG"
		"T1JNIGFscGluZSBBUyBiYXNlCkZST00gYmFzZQo=\"\n"
		"  ]\n"
		"}";
	struct kiln_err err = { 0 };
	char *text;

	(void) state;
	text = call(TARGETS, df, NULL, NULL, 0, &err);
	assert_non_null(text);
	assert_string_equal(text, want);
	free(text);
}

static void
targets_descriptions_follow_the_parser(void **state)
{
	static const char df[] =
		"# syntax=docker/dockerfile:1\n"        /* directive: not a comment */
		"# escape=\\\n"
		"# a first words\n"
		"\n"                                    /* blank lines do not separate */
		"# b not me: another stage's name\n"
		"FROM x AS a\n"
		"# b gone\n"
		"#\n"                                   /* a bare '#' forgets them */
		"# b builds b\n"
		"FROM x AS B\n"                         /* names are lower-cased */
		"# Build wrong case\n"
		"FROM x AS build\n"
		"RUN echo \\\n"
		"# build inside a continuation: never a comment of the next\n"
		"  done\n"
		"FROM x AS c\n"
		"   # d quirk: the first byte is dropped, not the blanks\n"
		"FROM x AS d\n"
		"#e needs no blank after the hash\n"
		"FROM x AS e\n";
	json_t *j = call_ok(TARGETS, df, NULL, NULL, 0);
	json_t *t = json_object_get(j, "targets");

	(void) state;
	assert_int_equal(json_array_size(t), 6);
	assert_string_equal(str_at(t, 0, "name"), "a");
	assert_string_equal(str_at(t, 0, "description"), "first words");
	assert_string_equal(str_at(t, 1, "name"), "b");
	assert_string_equal(str_at(t, 1, "description"), "builds b");
	assert_string_equal(str_at(t, 2, "name"), "build");
	assert_null(str_at(t, 2, "description"));
	assert_string_equal(str_at(t, 3, "name"), "c");
	assert_null(str_at(t, 3, "description"));
	assert_string_equal(str_at(t, 4, "name"), "d");
	assert_null(str_at(t, 4, "description"));
	assert_string_equal(str_at(t, 5, "name"), "e");
	assert_string_equal(str_at(t, 5, "description"), "needs no blank after the hash");
	assert_true(json_is_true(json_object_get(json_array_get(t, 5), "default")));
	assert_null(json_object_get(json_array_get(t, 4), "default"));
	assert_int_equal(line_at(t, 0), 6);
	assert_int_equal(line_at(t, 3), 16);
	json_decref(j);
}

static void
targets_errors(void **state)
{
	(void) state;
	call_fails(TARGETS, "RUN true\nFROM x\n", NULL, "Dockerfile:1: no build stage in current context");
	call_fails(TARGETS, "FROM x\nCOPPY a b\n", NULL, "Dockerfile:2: unknown instruction: COPPY");
	call_fails(TARGETS, "FROM x AS 1a\n", NULL, "invalid name for build stage");
	call_fails(TARGETS, "FROM x\nRUN --mount=from=$X true\n", NULL,
		   "Dockerfile:2: 'from' doesn't support variable expansion");
}

/* Only ARGs before the first FROM: a file without stages. */
static void
targets_without_stages(void **state)
{
	struct kiln_err err = { 0 };
	char *text;

	(void) state;
	text = call(TARGETS, "ARG A=1\n", NULL, NULL, 0, &err);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"targets\": null,"));
	free(text);
	call_fails(OUTLINE, "ARG A=1\n", NULL, "dockerfile contains no stages to build");
}

static const char multi[] =
	"# VERSION the release\n"
	"ARG VERSION=1.0\n"
	"ARG UNUSED=nobody\n"
	"# REGISTRY where images live\n"
	"ARG REGISTRY=docker.io\n"
	"# IMAGE the base image, from REGISTRY\n"
	"ARG IMAGE=${REGISTRY}/library/alpine\n"
	"\n"
	"# deps fetches dependencies\n"
	"FROM $IMAGE AS deps\n"
	"# TOKEN_FILE where the token goes\n"
	"ARG TOKEN_FILE=/run/token\n"
	"RUN --mount=type=secret,id=npm,required --mount=type=ssh true\n"
	"\n"
	"FROM alpine AS tools\n"
	"ARG TOOLS_ONLY\n"
	"RUN --mount=type=secret,target=/root/.netrc true\n"
	"\n"
	"# build compiles\n"
	"FROM deps AS build\n"
	"ARG VERSION\n"
	"# CGO enables cgo\n"
	"ARG CGO=0 LDFLAGS=\"-X v=${VERSION}\"\n"
	"ENV PREFIX=/opt\n"
	"ARG DEST=$PREFIX/bin\n"
	"RUN --mount=type=ssh,id=github,required=true --mount=from=tools,target=/t true\n"
	"\n"
	"FROM scratch\n"
	"ARG FINAL\n"
	"COPY --from=build /out /\n";

static void
outline_of_the_default_target(void **state)
{
	json_t *j = call_ok(OUTLINE, multi, NULL, NULL, 0);
	json_t *a = json_object_get(j, "args");
	json_t *s = json_object_get(j, "secrets");
	json_t *h = json_object_get(j, "ssh");

	(void) state;
	/* the last stage has no name: neither name nor description */
	assert_null(json_object_get(j, "name"));
	assert_null(json_object_get(j, "description"));
	/* sorted by line; UNUSED and the tools stage's ARG are not used */
	assert_int_equal(json_array_size(a), 9);
	assert_string_equal(str_at(a, 0, "name"), "VERSION");
	assert_string_equal(str_at(a, 0, "value"), "1.0");
	assert_string_equal(str_at(a, 0, "description"), "the release");
	assert_int_equal(line_at(a, 0), 2);
	assert_string_equal(str_at(a, 1, "name"), "REGISTRY");    /* read by IMAGE */
	assert_string_equal(str_at(a, 1, "description"), "where images live");
	assert_string_equal(str_at(a, 2, "name"), "IMAGE");
	assert_string_equal(str_at(a, 2, "value"), "docker.io/library/alpine");
	assert_string_equal(str_at(a, 3, "name"), "TOKEN_FILE");
	assert_string_equal(str_at(a, 3, "value"), "/run/token");
	assert_string_equal(str_at(a, 4, "name"), "TOOLS_ONLY");  /* mounted from tools */
	assert_null(str_at(a, 4, "value"));
	assert_int_equal(line_at(a, 4), 16);
	assert_string_equal(str_at(a, 5, "name"), "CGO");
	assert_string_equal(str_at(a, 5, "value"), "0");
	assert_string_equal(str_at(a, 5, "description"), "enables cgo");
	assert_string_equal(str_at(a, 6, "name"), "LDFLAGS");
	assert_string_equal(str_at(a, 6, "value"), "-X v=1.0");
	assert_null(str_at(a, 6, "description"));
	assert_string_equal(str_at(a, 7, "name"), "DEST");
	assert_string_equal(str_at(a, 7, "value"), "/opt/bin");
	assert_string_equal(str_at(a, 8, "name"), "FINAL");
	assert_int_equal(line_at(a, 8), 29);

	assert_int_equal(json_array_size(s), 2);
	assert_string_equal(str_at(s, 0, "name"), "npm");
	assert_true(json_is_true(json_object_get(json_array_get(s, 0), "required")));
	assert_int_equal(line_at(s, 0), 13);
	assert_string_equal(str_at(s, 1, "name"), ".netrc");    /* id from the target */
	assert_null(json_object_get(json_array_get(s, 1), "required"));

	assert_int_equal(json_array_size(h), 2);
	assert_string_equal(str_at(h, 0, "name"), "default");
	assert_int_equal(line_at(h, 0), 13);
	assert_string_equal(str_at(h, 1, "name"), "github");
	assert_true(json_is_true(json_object_get(json_array_get(h, 1), "required")));
	assert_non_null(json_object_get(j, "sources"));
	json_decref(j);
}

static void
outline_of_a_named_target_with_build_args(void **state)
{
	char *args[] = { "VERSION=2.0", "REGISTRY=quay.io", "CGO", "TOKEN_FILE=/x" };
	json_t *j = call_ok(OUTLINE, multi, "Deps", args, 4);
	json_t *a = json_object_get(j, "args");

	(void) state;
	assert_string_equal(json_string_value(json_object_get(j, "name")), "deps");
	assert_string_equal(json_string_value(json_object_get(j, "description")),
			    "fetches dependencies");
	/* deps uses IMAGE (its FROM line), REGISTRY (IMAGE's default) and
	 * its own TOKEN_FILE; VERSION is not used by deps */
	assert_int_equal(json_array_size(a), 3);
	assert_string_equal(str_at(a, 0, "name"), "REGISTRY");
	assert_string_equal(str_at(a, 0, "value"), "quay.io");
	assert_string_equal(str_at(a, 1, "name"), "IMAGE");
	assert_string_equal(str_at(a, 1, "value"), "quay.io/library/alpine");
	assert_string_equal(str_at(a, 2, "name"), "TOKEN_FILE");
	assert_string_equal(str_at(a, 2, "value"), "/x");
	assert_int_equal(json_array_size(json_object_get(j, "secrets")), 1);
	assert_int_equal(json_array_size(json_object_get(j, "ssh")), 1);
	json_decref(j);
}

static void
outline_values_and_platform_args(void **state)
{
	static const char df[] =
		"ARG ARCH=${TARGETARCH}\n"
		"FROM busybox:${ARCH}\n"
		"ARG A=\"quoted value\" B=${A}-x\n"
		"ARG C=$TARGETOS\n"                     /* global only: unset here */
		"ARG BUILDKIT_SBOM_SCAN_STAGE=true\n"
		"ARG D=${BUILDKIT_SBOM_SCAN_STAGE:-none}\n";
	json_t *j = call_ok(OUTLINE, df, NULL, NULL, 0);
	json_t *a = json_object_get(j, "args");

	(void) state;
	assert_int_equal(json_array_size(a), 6);
	assert_string_equal(str_at(a, 0, "name"), "ARCH");
	assert_string_equal(str_at(a, 0, "value"), "arm64");
	assert_string_equal(str_at(a, 1, "value"), "quoted value");
	assert_string_equal(str_at(a, 2, "name"), "B");
	assert_string_equal(str_at(a, 2, "value"), "quoted value-x");
	assert_string_equal(str_at(a, 3, "name"), "C");
	assert_null(str_at(a, 3, "value"));
	assert_string_equal(str_at(a, 5, "value"), "none");     /* not put in the env */
	json_decref(j);
}

/* ONBUILD triggers of a base stage are dispatched in the stages built on
 * it, at their FROM line. */
static void
outline_onbuild_of_a_base_stage(void **state)
{
	static const char df[] =
		"FROM alpine AS base\n"
		"ONBUILD ARG FROM_TRIGGER=yes\n"
		"ONBUILD RUN --mount=type=secret,id=trig true\n"
		"FROM base\n";
	json_t *j = call_ok(OUTLINE, df, NULL, NULL, 0);
	json_t *a = json_object_get(j, "args");
	json_t *s = json_object_get(j, "secrets");

	(void) state;
	assert_int_equal(json_array_size(a), 1);
	assert_string_equal(str_at(a, 0, "name"), "FROM_TRIGGER");
	assert_int_equal(line_at(a, 0), 4);
	assert_int_equal(json_array_size(s), 1);
	assert_string_equal(str_at(s, 0, "name"), "trig");
	json_decref(j);
}

static void
outline_errors(void **state)
{
	(void) state;
	call_fails(OUTLINE, "FROM a AS one\nFROM b AS two\n", "three",
		   "target stage \"three\" could not be found");
	call_fails(OUTLINE, "FROM a AS one\nCOPY --from=two / /\nFROM b AS two\nCOPY --from=one / /\n",
		   NULL, "Dockerfile:2: circular dependency detected on stage: one");
	call_fails(OUTLINE, "FROM a AS one\nCOPY --from=two / /\nFROM b AS two\n", "one",
		   "Dockerfile:2: cannot copy from stage \"two\", it needs to be defined before "
		   "current stage \"one\"");
	call_fails(OUTLINE, "FROM a\nCOPY --from=$X / /\n", NULL,
		   "variable expansion is not supported for --from");
	call_fails(OUTLINE, "FROM a\nCOPY --from=7 / /\n", NULL, "Dockerfile:2: invalid stage index 7");
	call_fails(OUTLINE, "FROM a\nARG X=${Y:?needY}\n", NULL,
		   "Dockerfile:2: failed to process \"${Y:?needY}\": Y: needY");
	call_fails(OUTLINE, "FROM ${NOTHING}\n", NULL,
		   "Dockerfile:1: base name (${NOTHING}) should not be blank");
	call_fails(OUTLINE, "FROM a\nRUN --mount=type=secret,from=x,id=a true\n", NULL,
		   "Dockerfile:2: secret mount should not have a from");
	call_fails(OUTLINE, "FROM a\nRUN --mount=type=secret true\n", NULL,
		   "invalid secret mount. one of source, target required");
	call_fails(OUTLINE, "FROM a\nRUN --mount=required,type=secret,id=x true\n", NULL,
		   "unexpected key 'required' for mount type 'bind'");
	call_fails(OUTLINE, "FROM a\nRUN --mount=type=nfs true\n", NULL, "unsupported mount type \"nfs\"");
	call_fails(OUTLINE, "FROM a\nRUN --mount=type=ssh,source=x true\n", NULL,
		   "ssh does not support source");
	call_fails(OUTLINE, "FROM a\nRUN --mount=type=cache,bogus=1 true\n", NULL,
		   "unexpected key 'bogus' in 'bogus=1'");
	call_fails(OUTLINE, "FROM a\nRUN --mount=type=bind,ro,x true\n", NULL,
		   "invalid field 'x' must be a key=value pair");
}

/* A secret id from the environment, csv quoting, the first mount of an id
 * wins. */
static void
outline_mount_values_are_expanded(void **state)
{
	static const char df[] =
		"FROM a\n"
		"ARG SECRET_ID=api\n"
		"ENV KEYS=/keys\n"
		"RUN --mount=type=secret,id=$SECRET_ID \\\n"
		"    --mount=\"type=secret,target=${KEYS}/id_rsa,required\" true\n"
		"RUN --mount=type=secret,id=api,required true\n";
	json_t *j = call_ok(OUTLINE, df, NULL, NULL, 0);
	json_t *s = json_object_get(j, "secrets");

	(void) state;
	assert_int_equal(json_array_size(s), 2);
	assert_string_equal(str_at(s, 0, "name"), "api");
	assert_null(json_object_get(json_array_get(s, 0), "required"));
	assert_int_equal(line_at(s, 0), 4);
	assert_string_equal(str_at(s, 1, "name"), "id_rsa");
	assert_true(json_is_true(json_object_get(json_array_get(s, 1), "required")));
	json_decref(j);
}

/* Go's encoding/json: HTML-safe, invalid UTF-8 replaced, U+2028 escaped;
 * base64 with padding. */
static void
outline_json_strings(void **state)
{
	static const char df[] =
		"FROM a AS x\n"
		"# V <b>\"quoted\"</b>\ttab\\ \xe2\x80\xa8 \xff caf\xc3\xa9\n"
		"ARG V=1\n";
	struct kiln_err err = { 0 };
	char *text;

	(void) state;
	text = call(OUTLINE, df, NULL, NULL, 0, &err);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"description\": \"\\u003cb\\u003e\\\"quoted\\\"\\u003c/b\\u003e"
				     "\\ttab\\\\ \\u2028 \\ufffd caf\xc3\xa9\""));
	free(text);
	text = call(TARGETS, "FROM a\n", NULL, NULL, 0, &err);    /* 7 bytes: one '=' */
	assert_non_null(strstr(text, "\"RlJPTSBhCg==\""));
	free(text);
	text = call(TARGETS, "FROM ab\n", NULL, NULL, 0, &err);
	assert_non_null(strstr(text, "\"RlJPTSBhYgo=\""));
	free(text);
	text = call(TARGETS, "FROM abc\n", NULL, NULL, 0, &err);
	assert_non_null(strstr(text, "\"RlJPTSBhYmMK\""));
	free(text);
}

/* Exactly the text of a minimal outline. */
static void
outline_exact_text(void **state)
{
	static const char df[] = "FROM a\nARG X\n";
	static const char want[] =
		"{\n"
		"  \"args\": [\n"
		"    {\n"
		"      \"name\": \"X\",\n"
		"      \"location\": {\n"
		"        \"ranges\": [\n"
		"          {\n"
		"            \"start\": {\n"
		"              \"line\": 2\n"
		"            },\n"
		"            \"end\": {\n"
		"              \"line\": 2\n"
		"            }\n"
		"          }\n"
		"        ]\n"
		"      }\n"
		"    }\n"
		"  ],\n"
		"  \"sources\": [\n"
		"    \"RlJPTSBhCkFSRyBYCg==\"\n"
		"  ]\n"
		"}";
	struct kiln_err err = { 0 };
	char *text;

	(void) state;
	text = call(OUTLINE, df, NULL, NULL, 0, &err);
	assert_non_null(text);
	assert_string_equal(text, want);
	free(text);
	text = call(OUTLINE, "FROM a\n", NULL, NULL, 0, &err);
	assert_string_equal(text, "{\n  \"sources\": [\n    \"RlJPTSBhCg==\"\n  ]\n}");
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(targets_exact_text),
		cmocka_unit_test(targets_descriptions_follow_the_parser),
		cmocka_unit_test(targets_errors),
		cmocka_unit_test(targets_without_stages),
		cmocka_unit_test(outline_of_the_default_target),
		cmocka_unit_test(outline_of_a_named_target_with_build_args),
		cmocka_unit_test(outline_values_and_platform_args),
		cmocka_unit_test(outline_onbuild_of_a_base_stage),
		cmocka_unit_test(outline_errors),
		cmocka_unit_test(outline_mount_values_are_expanded),
		cmocka_unit_test(outline_json_strings),
		cmocka_unit_test(outline_exact_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
