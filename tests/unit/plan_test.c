/* Unit tests for the frontend planner: Dockerfile + context listing +
 * base images -> ops and image config. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "oci.h"
#include "op.h"
#include "plan.h"
#include "plan-internal.h"

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
	/* BuildKit counts no FROM step for scratch */
	assert_string_equal(p->ops[1].name, "[1/1] COPY a.txt /x/");
	/* Only the file COPY reads has to travel. */
	assert_int_equal(p->n_needed, 1);
	/* BuildKit's empty image has PATH (and WorkingDir "/") */
	env = json_object_get(config_of(p), "Env");
	assert_int_equal(json_array_size(env), 3);
	assert_string_equal(json_string_value(json_array_get(env, 0)),
			    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	assert_string_equal(json_string_value(json_array_get(env, 1)), "A=1");
	assert_string_equal(json_string_value(json_array_get(env, 2)), "B=two words");
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
	assert_string_equal(json_string_value(json_array_get(json_object_get(config_of(p), "Env"), 1)),
			    "D=opt");
	assert_string_equal(json_string_value(json_array_get(json_object_get(config_of(p), "Env"), 2)),
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
	/* Build args never reach the image config (PATH and X do). */
	assert_int_equal(json_array_size(json_object_get(config_of(p), "Env")), 2);
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
	/* BuildKit follows a source that is a symlink (FollowSymlinks): the
	 * file it names is copied under the link's name */
	assert_string_equal(p->ops[3].entries[2].path, "/w/out/link");
	assert_int_equal(p->ops[3].entries[2].kind, 'f');
	assert_null(p->ops[3].entries[2].link);
	assert_true(digest_equal(&p->ops[3].entries[2].digest, &files[0].digest));
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

/* What only the worker can decide, marked by the planner: a file copied
 * to a path without "/" goes inside when that path is a directory; the
 * destination directory of a directory copy is new 0755 (with --chown's
 * owners) or left as it is; the copy's --chown travels for the parents;
 * WORKDIR carries the USER. */
static void
copy_dest_marks_and_workdir_user(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nCOPY b.txt /tmp\nCOPY a.txt /d/\n"
				  "COPY --chown=7:8 --chmod=0640 src /s\nCOPY link /l\n"
				  "WORKDIR /root-dir\nUSER 1000:1000\nWORKDIR /u\n", NULL, NULL, 0, &p, &err), 0);
	assert_string_equal(p->ops[1].entries[0].path, "/tmp");
	assert_string_equal(p->ops[1].entries[0].path_if_dir, "/tmp/b.txt");
	assert_false(p->ops[1].chown);
	assert_string_equal(p->ops[2].entries[0].path, "/d/a.txt");
	assert_null(p->ops[2].entries[0].path_if_dir);
	assert_true(p->ops[3].chown);
	assert_int_equal(p->ops[3].uid, 7);
	assert_int_equal(p->ops[3].gid, 8);
	assert_string_equal(p->ops[3].entries[0].path, "/s");
	assert_true(p->ops[3].entries[0].is_root);
	assert_int_equal(p->ops[3].entries[0].mode, 0755);
	assert_int_equal(p->ops[3].entries[0].uid, 7);
	assert_false(p->ops[3].entries[1].is_root);
	assert_int_equal(p->ops[3].entries[1].mode, 0640);
	/* a followed link goes inside under its own name */
	assert_string_equal(p->ops[4].entries[0].path_if_dir, "/l/link");
	assert_int_equal(p->ops[5].kind, OP_MKDIR);
	assert_null(p->ops[5].user);
	assert_int_equal(p->ops[6].kind, OP_MKDIR);
	assert_string_equal(p->ops[6].user, "1000:1000");
	plan_free(p);
}

static void
copy_chown_names(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nCOPY --chown=app:staff a.txt /a\n"
				  "COPY --chown=app b.txt /b\nCOPY --chown=7:staff b.txt /c\n"
				  "COPY --chown=7:8 b.txt /d\n", NULL, NULL, 0, &p, &err), 0);
	assert_string_equal(p->ops[1].chown_user, "app");
	assert_string_equal(p->ops[1].chown_group, "staff");
	assert_string_equal(p->ops[2].chown_user, "app");
	assert_null(p->ops[2].chown_group);
	/* a number next to a name travels as a string too */
	assert_string_equal(p->ops[3].chown_user, "7");
	assert_string_equal(p->ops[3].chown_group, "staff");
	assert_null(p->ops[4].chown_user);
	assert_int_equal(p->ops[4].entries[0].uid, 7);
	assert_int_equal(p->ops[4].entries[0].gid, 8);
	plan_free(p);
	assert_true(plan_str("FROM scratch\nCOPY --chown=a:b:c a.txt /a\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "user[:group]"));
	assert_true(plan_str("FROM scratch\nCOPY --chown=:g a.txt /a\n", NULL, NULL, 0, &p, &err) < 0);
}

static void
chmod_symbolic(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;

	(void) state;
	assert_int_equal(op_mode_apply("u+x,go-w", 0666, false), 0744);
	assert_int_equal(op_mode_apply("a=r", 0755, true), 0444);
	assert_int_equal(op_mode_apply("u=rwx,g=rx", 0600, false), 0750);
	assert_int_equal(op_mode_apply("u=rwX,go=rX", 0600, true), 0755);
	assert_int_equal(op_mode_apply("u=rwX,go=rX", 0600, false), 0644);
	assert_int_equal(op_mode_apply("u=rwX,go=rX", 0700, false), 0755);
	assert_int_equal(op_mode_apply("g=u", 0740, false), 0770);
	assert_int_equal(op_mode_apply("+x", 0600, false), 0711);
	assert_int_equal(op_mode_apply("u+s,+t", 0755, false), 05755);
	assert_int_equal(op_mode_apply("o-rwx", 0777, false), 0770);
	assert_int_equal(op_mode_apply("a-x,u+x", 0777, false), 0766);
	assert_int_equal(op_mode_check("u+x"), 0);
	assert_int_equal(op_mode_check("u"), -EINVAL);
	assert_int_equal(op_mode_check("u+x,"), -EINVAL);
	assert_int_equal(op_mode_check("z+x"), -EINVAL);
	assert_int_equal(op_mode_check("u+q"), -EINVAL);
	assert_int_equal(op_mode_check(""), -EINVAL);
	/* per entry, directories too */
	assert_int_equal(plan_str("FROM scratch\nCOPY --chmod=u=rwX,go=rX src /s\n", NULL, NULL, 0, &p,
				  &err), 0);
	assert_string_equal(p->ops[1].entries[0].path, "/s");
	assert_int_equal(p->ops[1].entries[0].mode, 0755);
	assert_string_equal(p->ops[1].entries[1].path, "/s/main.c");
	assert_int_equal(p->ops[1].entries[1].mode, 0644);
	assert_string_equal(p->ops[1].entries[2].path, "/s/sub");
	assert_int_equal(p->ops[1].entries[2].mode, 0755);
	plan_free(p);
	assert_int_equal(plan_str("FROM scratch AS a\nFROM scratch\nCOPY --from=a --chmod=g=u / /x\n",
				  NULL, NULL, 0, &p, &err), 0);
	assert_string_equal(p->ops[1].chmod_spec, "g=u");
	plan_free(p);
	assert_true(plan_str("FROM scratch\nCOPY --chmod=u+y a.txt /a\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "invalid chmod parameter"));
}

static void
copy_parents_exclude(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	const struct op *o;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nCOPY --parents src/sub/x.c docs/readme.md /d/\n",
				  NULL, NULL, 0, &p, &err), 0);
	o = &p->ops[1];
	assert_int_equal(o->n_entries, 5);
	assert_string_equal(o->entries[0].path, "/d/src");
	assert_int_equal(o->entries[0].mode, 0755);
	assert_string_equal(o->entries[1].path, "/d/src/sub");
	assert_int_equal(o->entries[1].mode, 0700);
	assert_string_equal(o->entries[2].path, "/d/src/sub/x.c");
	assert_string_equal(o->entries[3].path, "/d/docs");
	assert_string_equal(o->entries[4].path, "/d/docs/readme.md");
	assert_non_null(strstr(p->hist[0].created_by, "COPY --parents src/sub/x.c"));
	plan_free(p);
	/* the pivot: only what follows "/./" is kept */
	assert_int_equal(plan_str("FROM scratch\nCOPY --parents ./src/./sub/*.c /d\n",
				  NULL, NULL, 0, &p, &err), 0);
	o = &p->ops[1];
	assert_int_equal(o->n_entries, 2);
	assert_string_equal(o->entries[0].path, "/d/sub");
	assert_string_equal(o->entries[1].path, "/d/sub/x.c");
	plan_free(p);
	/* --exclude: below a directory source, and on wildcard matches */
	assert_int_equal(plan_str("FROM scratch\nCOPY --exclude=*.c --exclude=sub src /s\n"
				  "COPY --exclude=b.* *.txt /t/\n", NULL, NULL, 0, &p, &err), 0);
	o = &p->ops[1];
	assert_int_equal(o->n_entries, 1);
	assert_string_equal(o->entries[0].path, "/s");
	o = &p->ops[2];
	assert_int_equal(o->n_entries, 1);
	assert_string_equal(o->entries[0].path, "/t/a.txt");
	plan_free(p);
	assert_int_equal(plan_str("FROM scratch AS a\nFROM scratch\nCOPY --from=a --exclude=*.o / /x\n",
				  NULL, NULL, 0, &p, &err), 0);
	assert_int_equal(p->ops[1].n_excludes, 1);
	assert_string_equal(p->ops[1].excludes[0], "*.o");
	plan_free(p);
	assert_true(plan_str("FROM scratch AS a\nFROM scratch\nCOPY --from=a --parents /x /y/\n",
			     NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "--parents"));
}

static void
add_archive_and_url(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	const struct op *o;

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nADD a.txt /x\nADD --unpack=false b.txt /y/\n"
				  "ADD --chmod=0755 https://h.example/d/tool?v=1 /bin/\n"
				  "ADD --checksum=sha256:"
				  "0000000000000000000000000000000000000000000000000000000000000000 https://h.example/ /f\n"
				  "COPY a.txt /z\n", NULL, NULL, 0, &p, &err), 0);
	assert_string_equal(p->ops[1].entries[0].unpack_dir, "/x");
	assert_null(p->ops[2].entries[0].unpack_dir);
	o = &p->ops[3];
	assert_int_equal(o->entries[0].kind, OP_ENTRY_URL);
	assert_string_equal(o->entries[0].path, "/bin/tool");
	assert_string_equal(o->entries[0].url, "https://h.example/d/tool?v=1");
	assert_int_equal(o->entries[0].mode, 0755);
	assert_false(o->entries[0].has_checksum);
	o = &p->ops[4];
	assert_string_equal(o->entries[0].path, "/f");
	assert_int_equal(o->entries[0].mode, 0600);
	assert_true(o->entries[0].has_checksum);
	assert_null(p->ops[5].entries[0].unpack_dir);
	plan_free(p);
	assert_int_equal(plan_str("FROM scratch\nADD http://h.example /d/\n", NULL, NULL, 0, &p, &err), 0);
	assert_string_equal(p->ops[1].entries[0].path, "/d/__unnamed__");
	plan_free(p);
	assert_true(plan_str("FROM scratch\nADD --checksum=sha256:00 a.txt /x\n", NULL, NULL, 0, &p,
			     &err) < 0);
	assert_true(plan_str("FROM scratch\nADD --checksum=sha256:"
			     "0000000000000000000000000000000000000000000000000000000000000000 a.txt /x\n",
			     NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "http(s)"));
	assert_true(plan_str("FROM scratch\nCOPY https://h.example/x /x\n", NULL, NULL, 0, &p, &err) < 0);
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
	assert_string_equal(p->ops[2].name, "[two 1/1] COPY b.txt /b");
	plan_free(p);
	/* BuildKit only lints a duplicate stage name; the later one wins */
	assert_int_equal(plan_str("FROM scratch AS x\nCOPY a.txt /a\nFROM scratch AS X\nCOPY b.txt /b\n"
				  "FROM scratch\nCOPY --from=x /b /c\n", NULL, NULL, 0, &p, &err), 0);
	assert_int_equal(p->ops[p->n_ops - 1].kind, OP_COPY_FROM);
	assert_string_equal(p->ops[p->ops[p->n_ops - 1].from].entries[0].path, "/b");
	plan_free(p);
	assert_true(plan_str("RUN true\nFROM scratch\n", NULL, NULL, 0, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "Dockerfile:1"));
}


/* The invariants every plan keeps (op.h's graph rules). */
static void
check_graph(const struct plan *p)
{
	bool *reach = calloc(p->n_ops + 1, sizeof(*reach));

	assert_non_null(reach);
	assert_true(p->n_ops > 0);
	for (size_t i = 0; i < p->n_ops; i++) {
		const struct op *o = &p->ops[i];

		if (o->kind == OP_IMAGE) {
			assert_int_equal(o->input, -1);
		} else {
			assert_true(o->input >= 0 && o->input < (int) i);
		}
		if (o->kind == OP_COPY_FROM)
			assert_true(o->from >= 0 && o->from < (int) i);
	}
	/* everything kept is read by the result, which is last */
	reach[p->n_ops - 1] = true;
	for (size_t i = p->n_ops; i-- > 0;) {
		if (!reach[i])
			continue;
		if (p->ops[i].kind != OP_IMAGE)
			reach[p->ops[i].input] = true;
		if (p->ops[i].kind == OP_COPY_FROM)
			reach[p->ops[i].from] = true;
	}
	for (size_t i = 0; i < p->n_ops; i++)
		assert_true(reach[i]);
	/* the chain: image first, each the input of the next, ends last */
	assert_true(p->n_chain > 0);
	assert_int_equal(p->ops[p->chain[0]].kind, OP_IMAGE);
	for (size_t i = 1; i < p->n_chain; i++)
		assert_int_equal(p->ops[p->chain[i]].input, p->chain[i - 1]);
	assert_int_equal(p->chain[p->n_chain - 1], (int) p->n_ops - 1);
	/* history names ops of the chain only */
	for (size_t i = 0; i < p->n_hist; i++) {
		bool in_chain = p->hist[i].op < 0;

		for (size_t k = 0; k < p->n_chain; k++)
			in_chain = in_chain || p->chain[k] == p->hist[i].op;
		assert_true(in_chain);
	}
	free(reach);
}

/* Is there a path from op a to op b (b reads a)? */
static bool
path(const struct plan *p, int a, int b)
{
	if (a == b)
		return true;
	if (b < 0 || p->ops[b].kind == OP_IMAGE)
		return false;
	return path(p, a, p->ops[b].input) ||
	       (p->ops[b].kind == OP_COPY_FROM && path(p, a, p->ops[b].from));
}

static struct plan_context test_ctx;
static struct plan_layer test_layers[2];

static int
plan_ctx(const char *df, const char *target, struct plan **ret, struct kiln_err *err)
{
	static const char cfg[] = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"]},"
				  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":["
				  "\"sha256:1111111111111111111111111111111111111111111111111111111111111111\","
				  "\"sha256:2222222222222222222222222222222222222222222222222222222222222222\"]},"
				  "\"history\":[{\"created_by\":\"one\"},{\"created_by\":\"two\"}]}";
	struct plan_input in = {
		.dockerfile = df, .dockerfile_len = strlen(df), .filename = "Dockerfile", .target = target,
		.files = files, .n_files = sizeof(files) / sizeof(*files),
		.contexts = &test_ctx, .n_contexts = 1,
	};
	struct kiln_err e = { 0 };
	int r;

	setup_files();
	if (!test_ctx.config) {
		assert_int_equal(oci_config_parse(cfg, strlen(cfg), &test_ctx.config, &e), 0);
		test_ctx.name = "img";
		for (size_t i = 0; i < 2; i++) {
			memset(test_layers[i].l.digest.raw, 0x30 + (int) i, sizeof(test_layers[i].l.digest.raw));
			snprintf(test_layers[i].media_type, sizeof(test_layers[i].media_type), "%s", OCI_MT_LAYER_GZ);
		}
		test_ctx.layers = test_layers;
		test_ctx.n_layers = 2;
	}
	platform_parse("linux/amd64", &in.platform);
	in.build_platform = &in.platform;
	r = plan_build(&in, ret, err);
	if (r == 0)
		check_graph(*ret);
	return r;
}

static void
graph_copy_from_chain_base_needed(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	const struct op_layer *per_op[16] = { NULL };
	struct op_layer made[16];
	char *json;
	size_t len;
	json_t *out, *ids;

	(void) state;
	assert_int_equal(plan_ctx("FROM img AS build\nRUN make\n"
				  "FROM scratch AS other\nCOPY a.txt /\n"
				  "FROM img\nCOPY --from=build /out /out\nRUN true\n", NULL, &p, &err), 0);
	/* "other" is not needed */
	assert_int_equal(p->n_stages, 2);
	assert_int_equal(p->stages[0].index, 0);
	assert_int_equal(p->stages[1].index, 2);
	/* one image op for both stages; the final chain starts there */
	assert_int_equal(p->ops[0].kind, OP_IMAGE);
	assert_int_equal(p->n_chain, 3);
	assert_int_equal(p->chain[0], 0);
	assert_int_equal(p->ops[p->chain[1]].kind, OP_COPY_FROM);
	assert_int_equal(p->ops[p->chain[1]].from, 1);
	assert_int_equal(p->n_base, 2);
	assert_string_equal(p->base[0].media_type, OCI_MT_LAYER_GZ);
	/* the image's layers travel; no context file is read */
	assert_int_equal(p->n_needed, 2);
	/* history: the final stage's own entries */
	assert_int_equal(p->n_hist, 2);
	assert_int_equal(p->hist[0].op, p->chain[1]);
	assert_string_equal(p->hist[0].created_by, "COPY /out /out # buildkit");
	assert_string_equal(p->hist[1].created_by, "RUN /bin/sh -c true # buildkit");
	/* the config gets diff_ids of the chain's layers, after the base's */
	for (size_t i = 0; i < p->n_ops; i++) {
		memset(&made[i], 0, sizeof(made[i]));
		memset(made[i].diff_id.raw, 0x40 + (int) i, sizeof(made[i].diff_id.raw));
		per_op[i] = &made[i];
	}
	assert_int_equal(plan_finish_config(p, per_op, 0, &json, &len, &err), 0);
	out = json_loadb(json, len, 0, NULL);
	ids = json_object_get(json_object_get(out, "rootfs"), "diff_ids");
	assert_int_equal(json_array_size(ids), 4);
	assert_int_equal(json_array_size(json_object_get(out, "history")), 4);
	json_decref(out);
	free(json);
	plan_free(p);
}

static void
graph_independent_stages(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	int a, b;

	(void) state;
	assert_int_equal(plan_ctx("FROM img AS a\nRUN one\nRUN two\n"
				  "FROM scratch AS b\nCOPY docs /d\n"
				  "FROM scratch\nCOPY --from=a /x /x\nCOPY --from=b /d /d\n", NULL, &p, &err), 0);
	a = p->stages[0].result;
	b = p->stages[1].result;
	assert_false(path(p, a, b));
	assert_false(path(p, b, a));
	assert_true(path(p, a, (int) p->n_ops - 1));
	assert_true(path(p, b, (int) p->n_ops - 1));
	assert_int_equal(p->stages[2].n_deps, 2);
	plan_free(p);
}

/* Reference model: random multi-stage Dockerfiles; the stages planned must
 * be exactly those the target reaches through FROM and COPY --from. */
static void
graph_random_against_model(void **state)
{
	unsigned seed = 12345;

	(void) state;
	for (int round = 0; round < 300; round++) {
		int n = 1 + (int) ((seed = seed * 1103515245u + 12345u) >> 16) % 7;
		bool dep[8][8] = { { false } }, want[8] = { false };
		char df[4096];
		size_t w = 0;
		int target, changed;
		char tname[8];
		struct kiln_err err = { 0 };
		struct plan *p = NULL;

		for (int i = 0; i < n; i++) {
			unsigned r = (seed = seed * 1103515245u + 12345u) >> 16;
			int base = i > 0 && r % 3 == 0 ? (int) (r / 3) % i : -1;

			if (base >= 0) {
				w += (size_t) snprintf(df + w, sizeof(df) - w, "FROM s%d AS s%d\n", base, i);
				dep[i][base] = true;
			} else {
				w += (size_t) snprintf(df + w, sizeof(df) - w, "FROM %s AS s%d\n",
						       r % 2 ? "img" : "scratch", i);
			}
			w += (size_t) snprintf(df + w, sizeof(df) - w, "COPY a.txt /f%d\n", i);
			for (int k = 0; k < i; k++) {
				r = (seed = seed * 1103515245u + 12345u) >> 16;
				if (r % 4 == 0) {
					w += (size_t) snprintf(df + w, sizeof(df) - w, "COPY --from=%s /f%d /g%d\n",
							       r % 8 == 0 ? "" : "s", k, k);
					/* "--from=N" (an index) or "--from=sN" (a name) */
					if (r % 8 == 0) {
						char *last = strrchr(df, '=');

						memmove(last + 2, last + 1, strlen(last + 1) + 1);
						last[1] = (char) ('0' + k);
						w++;
					} else {
						char *last = strrchr(df, '=');

						memmove(last + 3, last + 2, strlen(last + 2) + 1);
						last[2] = (char) ('0' + k);
						w++;
					}
					dep[i][k] = true;
				}
			}
		}
		target = (int) ((seed = seed * 1103515245u + 12345u) >> 16) % n;
		snprintf(tname, sizeof(tname), "s%d", target);
		want[target] = true;
		do {
			changed = 0;
			for (int i = 0; i < n; i++)
				for (int k = 0; k < n; k++)
					if (want[i] && dep[i][k] && !want[k])
						want[k] = true, changed = 1;
		} while (changed);
		if (plan_ctx(df, tname, &p, &err) != 0) {
			print_error("round %d: %s\n%s", round, err.msg, df);
			fail();
		}
		for (int i = 0, k = 0; i < n; i++) {
			bool got = k < (int) p->n_stages && p->stages[k].index == i;

			if (got != want[i]) {
				print_error("round %d stage %d: want %d got %d\n%s", round, i, want[i], got, df);
				fail();
			}
			k += got;
		}
		assert_string_equal(p->target, tname);
		plan_free(p);
	}
}

static void
go_durations(void **state)
{
	static const struct {
		int64_t ns;
		const char *s;
	} cases[] = {
		{ 0, "0s" }, { 1, "1ns" }, { 1500, "1.5\xc2\xb5s" }, { 1000000, "1ms" },
		{ 1500000000, "1.5s" }, { 90000000000, "1m30s" }, { 3600000000000, "1h0m0s" },
		{ 90061000000001, "25h1m1.000000001s" }, { -5000000000, "-5s" },
	};
	char buf[40];

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		plan_go_duration(cases[i].ns, buf);
		assert_string_equal(buf, cases[i].s);
	}
}

static void
errors_name_the_line(void **state)
{
	static const struct {
		const char *df;
		const char *target;
		const char *msg;
	} cases[] = {
		{ "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n", NULL,
		  "Dockerfile:2: circular dependency detected on stage: a" },
		{ "FROM scratch\nCOPY --from=nowhere /x /x\n", NULL,
		  "Dockerfile:2: COPY --from=nowhere: stage or image 'nowhere' not found" },
		{ "FROM scratch AS build\nCOPY a.txt /\n", "buidl",
		  "target stage \"buidl\" could not be found (did you mean build?)" },
		{ "FROM scratch\nARG V\nENV X=\"${V:?is required}\"\n", NULL,
		  "Dockerfile:3: failed to process \"\\\"${V:?is required}\\\"\": V: is required" },
		{ "# syntax=example/frontend\nFROM scratch\n", NULL,
		  "Dockerfile:1: syntax=example/frontend: custom frontend images are not supported yet" },
		{ "FROM scratch\nRUN --netwrok=none true\n", NULL,
		  "Dockerfile:2: unknown flag: --netwrok (did you mean --network?)" },
	};

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct kiln_err err = { 0 };
		struct plan *p = NULL;

		assert_true(plan_ctx(cases[i].df, cases[i].target, &p, &err) < 0);
		assert_null(p);
		if (strncmp(err.msg, cases[i].msg, strlen(cases[i].msg)) != 0) {
			print_error("case %zu: got '%s'\n", i, err.msg);
			fail();
		}
	}
}

static void
syntax_builtin_accepted(void **state)
{
	static const char *const ok[] = {
		"# syntax=docker/dockerfile:1\n", "# syntax=docker/dockerfile:1.7\n",
		"# syntax=docker/dockerfile:1.7.1-labs\n", "# syntax=docker/dockerfile:1-labs\n",
		"# syntax=docker.io/docker/dockerfile:1.7\n", "# syntax=docker/dockerfile\n",
		"#syntax=docker/dockerfile:1@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021\n",
	};
	static const char *const bad[] = {
		"# syntax=docker/dockerfile:2\n", "# syntax=ghcr.io/docker/dockerfile:1\n",
		"# syntax=docker/dockerfile-upstream:master\n", "# syntax=docker/dockerfile:1.x\n",
	};
	char df[256];

	(void) state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(*ok); i++) {
		struct kiln_err err = { 0 };
		struct plan *p = NULL;

		snprintf(df, sizeof(df), "%sFROM scratch\n", ok[i]);
		assert_int_equal(plan_ctx(df, NULL, &p, &err), 0);
		plan_free(p);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct kiln_err err = { 0 };
		struct plan *p = NULL;

		snprintf(df, sizeof(df), "%sFROM scratch\n", bad[i]);
		assert_true(plan_ctx(df, NULL, &p, &err) < 0);
		assert_non_null(strstr(err.msg, "custom frontend images are not supported yet"));
	}
}

static void
dump_json_is_stable(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL, *q = NULL;
	char *a, *b;
	json_t *j;

	(void) state;
	assert_int_equal(plan_ctx("FROM img AS x\nRUN a\nFROM scratch\nCOPY --from=x /a /a\n", NULL, &p, &err), 0);
	assert_int_equal(plan_ctx("FROM img AS x\nRUN a\nFROM scratch\nCOPY --from=x /a /a\n", NULL, &q, &err), 0);
	a = plan_dump_json(p);
	b = plan_dump_json(q);
	assert_non_null(a);
	assert_string_equal(a, b);
	j = json_loads(a, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "ops")), p->n_ops);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(j, "ops"), 3), "from")), 1);
	assert_null(json_object_get(json_object_get(j, "config"), "created"));
	json_decref(j);
	free(a);
	free(b);
	plan_free(p);
	plan_free(q);
}

/* History text as Docker 20.10's BuildKit (v0.8) writes it. */
static void
history_wording_buildkit_20_10(void **state)
{
	struct kiln_err err = { 0 };
	struct plan *p = NULL;
	char *args[] = { "W=given", "X=2" };

	(void) state;
	assert_int_equal(plan_str("FROM scratch\nARG W\nARG X=1\nARG X\nRUN true\n"
				  "EXPOSE 80 53/udp 443 80/tcp\n"
				  "HEALTHCHECK --interval=90s --retries=10 CMD [\"/bin/true\"]\n"
				  "COPY --chown=1:2 --chmod=600 a.txt /a\n",
				  NULL, args, 2, &p, &err), 0);
	assert_int_equal(p->n_hist, 7);
	/* ARG as declared, never the --build-arg value */
	assert_string_equal(p->hist[0].created_by, "ARG W");
	assert_string_equal(p->hist[1].created_by, "ARG X=1");
	/* every ARG instruction counted, a repeated name too */
	assert_string_equal(p->hist[3].created_by,
			    "RUN |3 W=given X=2 X=2 /bin/sh -c true # buildkit");
	assert_string_equal(p->hist[4].created_by, "EXPOSE map[443/tcp:{} 53/udp:{} 80/tcp:{}]");
	assert_string_equal(p->hist[5].created_by,
			    "HEALTHCHECK &{[\"CMD\" \"/bin/true\"] \"1m30s\" \"0s\" \"0s\" '\\n'}");
	assert_string_equal(p->hist[6].created_by, "COPY a.txt /a # buildkit");
	plan_free(p);
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
		cmocka_unit_test(copy_dest_marks_and_workdir_user),
		cmocka_unit_test(copy_chown_names),
		cmocka_unit_test(chmod_symbolic),
		cmocka_unit_test(copy_parents_exclude),
		cmocka_unit_test(add_archive_and_url),
		cmocka_unit_test(named_context_base),
		cmocka_unit_test(stages_and_target),
		cmocka_unit_test(graph_copy_from_chain_base_needed),
		cmocka_unit_test(graph_independent_stages),
		cmocka_unit_test(graph_random_against_model),
		cmocka_unit_test(go_durations),
		cmocka_unit_test(errors_name_the_line),
		cmocka_unit_test(syntax_builtin_accepted),
		cmocka_unit_test(dump_json_is_stable),
		cmocka_unit_test(history_wording_buildkit_20_10),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);

	json_decref(test_ctx.config);
	return r;
}
