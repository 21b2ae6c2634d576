/* Unit tests for the frontend planner: Dockerfile + context listing +
 * base images -> ops and image config. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "oci.h"
#include "plan.h"

static struct plan_file files[] = {
	{ .path = "a.txt", .kind = 'f', .mode = 0644, .mtime = 100 },
	{ .path = "b.txt", .kind = 'f', .mode = 0600, .mtime = 101 },
	{ .path = "docs", .kind = 'd', .mode = 0755, .mtime = 102 },
	{ .path = "docs/readme.md", .kind = 'f', .mode = 0644, .mtime = 103 },
	{ .path = "link", .kind = 'l', .mode = 0777, .mtime = 104, .link = "a.txt" },
	{ .path = "src", .kind = 'd', .mode = 0755, .mtime = 105 },
	{ .path = "src/main.c", .kind = 'f', .mode = 0644, .mtime = 106 },
	{ .path = "src/sub", .kind = 'd', .mode = 0700, .mtime = 107 },
	{ .path = "src/sub/x.c", .kind = 'f', .mode = 0644, .mtime = 108 },
};

static void
setup_files(void)
{
	for (size_t i = 0; i < sizeof(files) / sizeof(*files); i++)
		memset(files[i].digest.raw, (int) i + 1, sizeof(files[i].digest.raw));
}

static int
plan_str(const char *df, const char *target, char **args, size_t n_args, struct plan **ret,
	 struct kiln_err *err)
{
	struct plan_input in = {
		.dockerfile = df, .dockerfile_len = strlen(df), .filename = "Dockerfile",
		.build_args = args, .n_build_args = n_args, .target = target,
		.files = files, .n_files = sizeof(files) / sizeof(*files),
	};

	setup_files();
	platform_parse("linux/amd64", &in.platform);
	return plan_build(&in, ret, err);
}

static json_t *
config_of(struct plan *p)
{
	return json_object_get(p->config, "config");
}

static void
scratch_copy_env_cmd(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	json_t *env;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nCOPY a.txt /x/\nENV A=1 B=\"two words\"\nCMD [\"run\"]\n",
				  NULL, NULL, 0, &p, &err), 0);
	assert_int_equal(p->n_ops, 2);
	assert_int_equal(p->ops[0].kind, OP_IMAGE);
	assert_int_equal(p->ops[0].n_layers, 0);
	assert_int_equal(p->ops[1].kind, OP_COPY);
	assert_int_equal(p->ops[1].n_entries, 1);
	assert_string_equal(p->ops[1].entries[0].path, "/x/a.txt");
	assert_int_equal(p->ops[1].entries[0].mode, 0644);
	assert_int_equal(p->ops[1].entries[0].mtime, 100);
	assert_string_equal(p->ops[1].name, "[2/2] COPY a.txt /x/");
	/* Only the file COPY reads has to travel. */
	assert_int_equal(p->n_needed, 1);
	env = json_object_get(config_of(p), "Env");
	assert_int_equal(json_array_size(env), 2);
	assert_string_equal(json_string_value(json_array_get(env, 0)), "A=1");
	assert_string_equal(json_string_value(json_array_get(env, 1)), "B=two words");
	assert_string_equal(json_string_value(json_array_get(json_object_get(config_of(p), "Cmd"), 0)),
			    "run");
	assert_int_equal(p->n_hist, 3);
	assert_int_equal(p->hist[0].op, 1);
	assert_int_equal(p->hist[1].op, -1);
	plan_free(p);
}

static void
unknown_instruction_suggests(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_true(plan_str("FROM scratch\nCOPPY a.txt /\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "Dockerfile:2"));
	assert_non_null(strstr(err.msg, "unknown instruction: COPPY (did you mean COPY?)"));
	assert_null(p);
}

static void
missing_source_names_line(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_true(plan_str("FROM scratch\n\nCOPY nope.txt /\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "Dockerfile:3:"));
	assert_non_null(strstr(err.msg, "\"/nope.txt\": not found"));
}

static void
unknown_target(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_true(plan_str("FROM scratch AS a\nCOPY a.txt /\n", "b", NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "target stage \"b\" could not be found"));
}

static void
args_expand_and_workdir_relative(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	char *args[] = { "DIR=opt" };

	(void) state;
	assert_int_equal(plan_str("ARG BASE=scratch\nFROM $BASE\nARG DIR=usr\nARG OTHER=o\n"
				  "WORKDIR /${DIR}\nWORKDIR app/../srv\nENV D=$DIR O=${OTHER:-x}\n"
				  "RUN echo $DIR\n", NULL, args, 1, &p, &err), 0);
	assert_int_equal(p->n_ops, 4);
	assert_int_equal(p->ops[1].kind, OP_MKDIR);
	assert_string_equal(p->ops[1].path, "/opt");
	assert_string_equal(p->ops[2].path, "/opt/srv");
	assert_string_equal(json_string_value(json_object_get(config_of(p), "WorkingDir")), "/opt/srv");
	assert_string_equal(json_string_value(json_array_get(json_object_get(config_of(p), "Env"), 0)),
			    "D=opt");
	assert_string_equal(json_string_value(json_array_get(json_object_get(config_of(p), "Env"), 1)),
			    "O=o");
	/* RUN's command is not expanded by the frontend; the shell does it. */
	assert_int_equal(p->ops[3].n_args, 3);
	assert_string_equal(p->ops[3].args[0], "/bin/sh");
	assert_string_equal(p->ops[3].args[2], "echo $DIR");
	assert_string_equal(p->ops[3].cwd, "/opt/srv");
	plan_free(p);
}

static void
run_env_args_and_env_wins(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	char *args[] = { "X=from-arg", "Y=y" };
	bool saw_x = false, saw_y = false, saw_path = false;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nARG X\nARG Y\nENV X=from-env\nRUN [\"/bin/true\", \"a b\"]\n",
				  NULL, args, 2, &p, &err), 0);
	assert_int_equal(p->ops[1].kind, OP_RUN);
	assert_int_equal(p->ops[1].n_args, 2);
	assert_string_equal(p->ops[1].args[1], "a b");
	for (size_t i = 0; i < p->ops[1].n_env; i++) {
		saw_x |= strcmp(p->ops[1].env[i], "X=from-env") == 0;
		saw_y |= strcmp(p->ops[1].env[i], "Y=y") == 0;
		saw_path |= strncmp(p->ops[1].env[i], "PATH=", 5) == 0;
		assert_string_not_equal(p->ops[1].env[i], "X=from-arg");
	}
	assert_true(saw_x && saw_y && saw_path);
	/* Build args never reach the image config. */
	assert_int_equal(json_array_size(json_object_get(config_of(p), "Env")), 1);
	plan_free(p);
}

static void
entrypoint_resets_inherited_cmd(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(plan_str("FROM scratch AS base\nCMD [\"a\"]\nFROM base\nENTRYPOINT [\"e\"]\n",
				  NULL, NULL, 0, &p, &err), 0);
	assert_null(json_object_get(config_of(p), "Cmd"));
	assert_non_null(json_object_get(config_of(p), "Entrypoint"));
	plan_free(p);
	assert_int_equal(plan_str("FROM scratch\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\n", NULL, NULL, 0, &p, &err), 0);
	assert_non_null(json_object_get(config_of(p), "Cmd"));
	plan_free(p);
}

static void
copy_directory_and_glob(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nWORKDIR /w\nCOPY src dst\nCOPY *.txt link out/\n",
				  NULL, NULL, 0, &p, &err), 0);
	assert_int_equal(p->ops[2].n_entries, 4);
	assert_string_equal(p->ops[2].entries[0].path, "/w/dst");
	assert_int_equal(p->ops[2].entries[0].kind, 'd');
	assert_string_equal(p->ops[2].entries[1].path, "/w/dst/main.c");
	assert_string_equal(p->ops[2].entries[2].path, "/w/dst/sub");
	assert_int_equal(p->ops[2].entries[2].mode, 0700);
	assert_string_equal(p->ops[2].entries[3].path, "/w/dst/sub/x.c");
	assert_int_equal(p->ops[3].n_entries, 3);
	assert_string_equal(p->ops[3].entries[0].path, "/w/out/a.txt");
	assert_string_equal(p->ops[3].entries[1].path, "/w/out/b.txt");
	assert_string_equal(p->ops[3].entries[2].path, "/w/out/link");
	assert_string_equal(p->ops[3].entries[2].link, "a.txt");
	plan_free(p);
}

static void
copy_chown_chmod(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nCOPY --chown=10:20 --chmod=751 a.txt /a\n",
				  NULL, NULL, 0, &p, &err), 0);
	assert_int_equal(p->ops[1].entries[0].uid, 10);
	assert_int_equal(p->ops[1].entries[0].gid, 20);
	assert_int_equal(p->ops[1].entries[0].mode, 0751);
	plan_free(p);
	assert_true(plan_str("FROM scratch\nCOPY --chmod=9z a.txt /a\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "Dockerfile:2"));
}

static void
named_context_base(void **state)
{
	static const char cfg[] = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"],"
				  "\"Cmd\":[\"sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":"
				  "[\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"]},"
				  "\"history\":[{\"created_by\":\"base\"}]}";
	struct plan_context pc = { .name = "base" };
	struct plan_layer layer = { .l.size = 42 };
	struct kiln_err err = { 0 };
	struct plan_input in = { 0 };
	struct plan *p = NULL;
	const char *df = "FROM base\nRUN true\n";
	const struct op_layer *per_op[2] = { NULL, NULL };
	char *json;
	size_t len;
	json_t *out;

	(void) state;
	memset(layer.l.digest.raw, 0xab, sizeof(layer.l.digest.raw));
	assert_int_equal(oci_config_parse(cfg, strlen(cfg), &pc.config, &err), 0);
	pc.layers = &layer;
	pc.n_layers = 1;
	in.dockerfile = df;
	in.dockerfile_len = strlen(df);
	in.filename = "Dockerfile";
	in.contexts = &pc;
	in.n_contexts = 1;
	platform_parse("linux/amd64", &in.platform);
	assert_int_equal(plan_build(&in, &p, &err), 0);
	assert_int_equal(p->ops[0].kind, OP_IMAGE);
	assert_int_equal(p->ops[0].n_layers, 1);
	assert_string_equal(p->ops[0].name, "[1/2] FROM base");
	assert_int_equal(p->n_base, 1);
	assert_int_equal(p->n_needed, 1);
	assert_true(digest_equal(&p->needed[0], &layer.l.digest));
	/* The RUN produced no layer: its history entry is empty_layer. */
	assert_int_equal(plan_finish_config(p, per_op, 1700000000, &json, &len, &err), 0);
	out = json_loadb(json, len, 0, NULL);
	assert_non_null(out);
	assert_int_equal(json_array_size(json_object_get(out, "history")), 2);
	assert_true(json_is_true(json_object_get(json_array_get(json_object_get(out, "history"), 1),
						 "empty_layer")));
	assert_string_equal(json_string_value(json_object_get(out, "created")), "2023-11-14T22:13:20Z");
	assert_int_equal(json_array_size(json_object_get(json_object_get(out, "rootfs"), "diff_ids")), 1);
	json_decref(out);
	free(json);
	plan_free(p);
	json_decref(pc.config);
	/* A base that is neither scratch, a stage nor a context is refused. */
	assert_true(plan_str("FROM alpine\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "--build-context alpine=oci-layout://DIR"));
}

static void
stages_and_target(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(plan_str("FROM scratch AS one\nCOPY a.txt /a\nFROM one AS two\nCOPY b.txt /b\n"
				  "FROM scratch\nCOPY docs /d\n", "TWO", NULL, 0, &p, &err), 0);
	assert_int_equal(p->n_ops, 3);
	assert_string_equal(p->ops[1].entries[0].path, "/a");
	assert_string_equal(p->ops[2].entries[0].path, "/b");
	assert_string_equal(p->ops[2].name, "[two 2/2] COPY b.txt /b");
	plan_free(p);
	assert_true(plan_str("FROM scratch\nFROM scratch AS x\nFROM scratch AS X\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "duplicate stage name"));
	assert_true(plan_str("RUN true\nFROM scratch\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "Dockerfile:1"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(scratch_copy_env_cmd),
		cmocka_unit_test(unknown_instruction_suggests),
		cmocka_unit_test(missing_source_names_line),
		cmocka_unit_test(unknown_target),
		cmocka_unit_test(args_expand_and_workdir_relative),
		cmocka_unit_test(run_env_args_and_env_wins),
		cmocka_unit_test(entrypoint_resets_inherited_cmd),
		cmocka_unit_test(copy_directory_and_glob),
		cmocka_unit_test(copy_chown_chmod),
		cmocka_unit_test(named_context_base),
		cmocka_unit_test(stages_and_target),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
