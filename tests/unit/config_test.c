/* Builder configuration (cli/config.c): buildx's create/append/leave
 * rules, use/rm, and the resolution order --builder > $KILN_BUILDER >
 * current > embedded default, each test in a fresh $KILN_CONFIG. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "err.h"
#include "util.h"
#include "../../cli/config.h"

static char tmpdir[64];              /* short: paths built from it fit PATH_MAX */

static int
setup(void **state)
{
	(void) state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kiln-config-test.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	setenv("KILN_CONFIG", tmpdir, 1);
	unsetenv("KILN_BUILDER");
	return 0;
}

static int
teardown(void **state)
{
	(void) state;
	return kiln_rm_rf(tmpdir);
}

/* Create with the given options; assert success; return the builder. */
static struct builder *
create_ok(const struct builder_create_opts *o)
{
	struct kiln_err err = { 0 };
	struct builder *b = NULL;
	int r;

	r = config_create(o, &b, &err);
	if (r < 0)
		fail_msg("config_create: %s", err.msg);
	assert_non_null(b);
	return b;
}

static int
create_err(const struct builder_create_opts *o, struct kiln_err *err)
{
	struct builder *b = NULL;
	int r;

	r = config_create(o, &b, err);
	assert_null(b);
	return r;
}

static void
resolve_name(const char *flag, char *out, size_t size)
{
	struct kiln_err err = { 0 };
	struct builder *b = NULL;

	if (config_resolve(flag, &b, &err) < 0)
		fail_msg("config_resolve: %s", err.msg);
	snprintf(out, size, "%s", b->name);
	builder_free(b);
}

static void
default_builder_without_config(void **state)
{
	struct kiln_err err = { 0 };
	struct builder *b = NULL;
	char path[PATH_MAX], want[PATH_MAX];
	struct stat st;

	(void) state;
	assert_int_equal(config_resolve(NULL, &b, &err), 0);
	assert_true(b->is_default);
	assert_string_equal(b->name, "default");
	assert_string_equal(b->driver, "local");
	assert_int_equal(b->n_nodes, 1);
	assert_string_equal(b->nodes[0].name, "default");
	assert_null(b->endpoint);
	/* not persisted */
	snprintf(path, sizeof(path), "%s/builders/default.json", tmpdir);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(config_save(b, &err), -EINVAL);
	builder_free(b);

	assert_int_equal(config_state_dir("default", path, sizeof(path), &err), 0);
	snprintf(want, sizeof(want), "%s/state/default", tmpdir);
	assert_string_equal(path, want);
}

static void
create_generates_names(void **state)
{
	struct builder_create_opts o = { 0 };
	struct builder *b;

	(void) state;
	b = create_ok(&o);
	assert_string_equal(b->name, "kiln0");
	assert_string_equal(b->driver, "local");
	assert_int_equal(b->n_nodes, 1);
	assert_string_equal(b->nodes[0].name, "kiln00");
	builder_free(b);
	b = create_ok(&o);
	assert_string_equal(b->name, "kiln1");
	assert_string_equal(b->nodes[0].name, "kiln10");
	builder_free(b);
}

static void
create_roundtrips_through_file(void **state)
{
	const char *opts[] = { "cpuset-cpus=0-3", "memory=4g" };
	struct builder_create_opts o = {
		.name = "farm", .node = "n1", .platforms = "linux/aarch64,amd64",
		.driver_opts = opts, .n_driver_opts = 2,
	};
	struct kiln_err err = { 0 };
	struct builder *b;

	(void) state;
	builder_free(create_ok(&o));
	assert_int_equal(config_load("farm", &b, &err), 0);
	assert_false(b->is_default);
	assert_int_equal(b->n_nodes, 1);
	assert_string_equal(b->nodes[0].name, "n1");
	assert_int_equal(b->nodes[0].n_platforms, 2);
	/* normalised as containerd does */
	assert_string_equal(b->nodes[0].platforms[0], "linux/arm64");
	assert_string_equal(b->nodes[0].platforms[1], "linux/amd64");
	assert_string_equal(builder_opt(b, &b->nodes[0], "cpuset-cpus"), "0-3");
	assert_string_equal(builder_opt(b, &b->nodes[0], "memory"), "4g");
	assert_null(builder_opt(b, &b->nodes[0], "cacert"));
	builder_free(b);
}

static void
create_existing_needs_append_or_node(void **state)
{
	struct builder_create_opts o = { .name = "x" };
	struct kiln_err err = { 0 };

	(void) state;
	builder_free(create_ok(&o));
	assert_int_equal(create_err(&o, &err), -EEXIST);
	assert_string_equal(err.msg,
			    "existing instance for \"x\" but no append mode, specify the node name to make changes for existing instances");
}

static void
append_adds_then_replaces_node(void **state)
{
	const char *mem[] = { "memory=2g" };
	const char *cpus[] = { "cpuset-cpus=1" };
	struct builder_create_opts o = { .name = "x", .platforms = "linux/amd64" };
	struct kiln_err err = { 0 };
	struct builder *b;

	(void) state;
	builder_free(create_ok(&o));

	/* --append without --node: a new generated node */
	o = (struct builder_create_opts) { .name = "x", .append = true, .driver_opts = mem,
					   .n_driver_opts = 1 };
	b = create_ok(&o);
	assert_int_equal(b->n_nodes, 2);
	assert_string_equal(b->nodes[1].name, "x1");
	builder_free(b);

	/* --append with a named new node */
	o = (struct builder_create_opts) { .name = "x", .append = true, .node = "arm",
					   .platforms = "linux/arm64" };
	b = create_ok(&o);
	assert_int_equal(b->n_nodes, 3);
	assert_string_equal(b->nodes[2].name, "arm");
	builder_free(b);

	/* --append with an existing node name replaces what is given and
	 * keeps the rest */
	o = (struct builder_create_opts) { .name = "x", .append = true, .node = "x1",
					   .platforms = "linux/arm/v7" };
	b = create_ok(&o);
	assert_int_equal(b->n_nodes, 3);
	assert_int_equal(b->nodes[1].n_platforms, 1);
	assert_string_equal(b->nodes[1].platforms[0], "linux/arm/v7");
	assert_string_equal(builder_opt(b, &b->nodes[1], "memory"), "2g");
	builder_free(b);

	/* given driver opts replace the node's set, as buildx does */
	o = (struct builder_create_opts) { .name = "x", .node = "x1", .driver_opts = cpus,
					   .n_driver_opts = 1 };
	b = create_ok(&o);
	assert_int_equal(b->n_nodes, 3);
	assert_null(builder_opt(b, &b->nodes[1], "memory"));
	assert_string_equal(builder_opt(b, &b->nodes[1], "cpuset-cpus"), "1");
	assert_string_equal(b->nodes[1].platforms[0], "linux/arm/v7");
	builder_free(b);

	/* and it all survived the file */
	assert_int_equal(config_load("x", &b, &err), 0);
	assert_int_equal(b->n_nodes, 3);
	assert_string_equal(b->nodes[0].name, "x0");
	assert_string_equal(b->nodes[0].platforms[0], "linux/amd64");
	assert_string_equal(b->nodes[2].platforms[0], "linux/arm64");
	builder_free(b);
}

static void
leave_removes_node(void **state)
{
	struct builder_create_opts o = { .name = "x", .node = "a" };
	struct kiln_err err = { 0 };
	struct builder *b;

	(void) state;
	builder_free(create_ok(&o));
	o.node = "b";
	builder_free(create_ok(&o));
	o = (struct builder_create_opts) { .name = "x", .node = "a", .leave = true };
	b = create_ok(&o);
	assert_int_equal(b->n_nodes, 1);
	assert_string_equal(b->nodes[0].name, "b");
	builder_free(b);
	/* the last node stays: removing it is `builder rm` */
	o.node = "b";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.node = "nope";
	assert_int_equal(create_err(&o, &err), -ENOENT);
}

static void
create_refuses_bad_input(void **state)
{
	const char *bogus[] = { "bogus=1" };
	const char *noeq[] = { "memory" };
	const char *badmem[] = { "memory=lots" };
	const char *cacert[] = { "cacert=/x" };
	struct builder_create_opts o = { 0 };
	struct kiln_err err = { 0 };

	(void) state;
	o.name = "default";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	assert_string_equal(err.msg, "default is a reserved name and cannot be used as builder name");
	o.name = "../etc";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.name = "ok";
	o.node = "a/b";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.node = NULL;
	o.driver = "kubernetes";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.driver = NULL;
	o.driver_opts = bogus;
	o.n_driver_opts = 1;
	assert_int_equal(create_err(&o, &err), -EINVAL);
	assert_string_equal(err.msg, "invalid driver option \"bogus\" for local driver");
	o.driver_opts = noeq;
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.driver_opts = badmem;
	assert_int_equal(create_err(&o, &err), -EINVAL);
	/* remote opts are not local ones */
	o.driver_opts = cacert;
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.driver_opts = NULL;
	o.n_driver_opts = 0;
	o.platforms = "linux";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.platforms = NULL;
	o.endpoint = "tcp://h:1";
	o.driver = "local";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	/* nothing was written by any of these */
	assert_int_equal(config_load("ok", &(struct builder *) { NULL }, &err), -ENOENT);
}

/* cpuset-cpus and memory are read at create with docker's rules; a bad one
 * names the option and says what is wrong, and nothing is written. */
static void
local_opt_values_checked(void **state)
{
	static const struct {
		const char *opt;
		const char *msg;
	} bad[] = {
		{ "cpuset-cpus=", "driver-opt cpuset-cpus: empty CPU list: expected CPU numbers and ranges such as 0, 0-3 or 0,2" },
		{ "cpuset-cpus=1-0", "driver-opt cpuset-cpus: invalid CPU list \"1-0\": range 1-0 ends before it starts" },
		{ "cpuset-cpus=0,,1", "driver-opt cpuset-cpus: invalid CPU list \"0,,1\": expected CPU numbers and ranges such as 0, 0-3 or 0,2" },
		{ "cpuset-cpus=all", "driver-opt cpuset-cpus: invalid CPU list \"all\": expected CPU numbers and ranges such as 0, 0-3 or 0,2" },
		{ "cpuset-cpus=4096", "driver-opt cpuset-cpus: invalid CPU list \"4096\": CPU 4096 is out of range (at most 1023)" },
		{ "memory=lots", "driver-opt memory: invalid size \"lots\": expected bytes or a number with a unit b, k, m, g, t or p (e.g. 512m, 2g)" },
		{ "memory=512q", "driver-opt memory: invalid size \"512q\": expected bytes or a number with a unit b, k, m, g, t or p (e.g. 512m, 2g)" },
		{ "memory=", "driver-opt memory: invalid size \"\": expected bytes or a number with a unit b, k, m, g, t or p (e.g. 512m, 2g)" },
		{ "memory=1m", "driver-opt memory: memory \"1m\" is below the minimum of 6MB a node can run in" },
		{ "memory=9000p", "driver-opt memory: invalid size \"9000p\": too large" },
	};
	static const char *const good[] = {
		"cpuset-cpus=0", "cpuset-cpus=0-1", "cpuset-cpus=0,2", "cpuset-cpus=0-1,4",
		"memory=512m", "memory=2g", "memory=1.5GiB", "memory=67108864", "memory=64MB",
	};
	struct builder_create_opts o = { .name = "v", .node = "n" };
	struct kiln_err err = { 0 };
	struct builder *b;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.driver_opts = &bad[i].opt;
		o.n_driver_opts = 1;
		kiln_err_clear(&err);
		assert_true(create_err(&o, &err) < 0);
		assert_string_equal(err.msg, bad[i].msg);
		assert_int_equal(config_load("v", &(struct builder *) { NULL }, &err), -ENOENT);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		o.driver_opts = &good[i];
		o.n_driver_opts = 1;
		o.append = i > 0;
		b = create_ok(&o);
		/* stored as written: inspect shows what the user gave */
		assert_string_equal(builder_opt(b, &b->nodes[0], good[i][0] == 'c' ? "cpuset-cpus" : "memory"),
				    strchr(good[i], '=') + 1);
		builder_free(b);
	}
}

/* Two nodes of one local builder, each with its own CPUs and memory:
 * changing or adding one never touches the other's. */
static void
nodes_keep_their_own_opts(void **state)
{
	const char *n0[] = { "cpuset-cpus=0", "memory=512m" };
	const char *n1[] = { "cpuset-cpus=1" };
	const char *n1b[] = { "cpuset-cpus=1", "memory=1g" };
	struct builder_create_opts o = { .name = "pin", .node = "n0", .driver_opts = n0,
					 .n_driver_opts = 2 };
	struct kiln_err err = { 0 };
	struct builder *b;

	(void) state;
	builder_free(create_ok(&o));
	o = (struct builder_create_opts) { .name = "pin", .append = true, .node = "n1",
					   .driver_opts = n1, .n_driver_opts = 1 };
	builder_free(create_ok(&o));
	o.driver_opts = n1b;
	o.n_driver_opts = 2;
	builder_free(create_ok(&o));
	/* an --append without opts (a third node) inherits nothing */
	o = (struct builder_create_opts) { .name = "pin", .append = true, .node = "n2" };
	builder_free(create_ok(&o));

	assert_int_equal(config_load("pin", &b, &err), 0);
	assert_int_equal(b->n_nodes, 3);
	assert_int_equal(b->n_opts, 0);
	assert_string_equal(builder_opt(b, &b->nodes[0], "cpuset-cpus"), "0");
	assert_string_equal(builder_opt(b, &b->nodes[0], "memory"), "512m");
	assert_string_equal(builder_opt(b, &b->nodes[1], "cpuset-cpus"), "1");
	assert_string_equal(builder_opt(b, &b->nodes[1], "memory"), "1g");
	assert_null(builder_opt(b, &b->nodes[2], "cpuset-cpus"));
	assert_null(builder_opt(b, &b->nodes[2], "memory"));
	builder_free(b);
}

static void
remote_rules(void **state)
{
	const char *certs[] = { "cacert=/k/server.cert", "key=/k/client.cert" };
	const char *only_ca[] = { "cacert=/k/server.cert" };
	const char *mem[] = { "memory=1g" };
	struct builder_create_opts o = { .name = "r", .driver = "remote" };
	struct kiln_err err = { 0 };
	struct builder *b;

	(void) state;
	/* an endpoint is required */
	assert_int_equal(create_err(&o, &err), -EINVAL);
	/* tcp:// means CurveZMQ: both certificates are required */
	o.endpoint = "tcp://farm:7000";
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.driver_opts = only_ca;
	o.n_driver_opts = 1;
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.endpoint = "http://farm";
	o.driver_opts = certs;
	o.n_driver_opts = 2;
	assert_int_equal(create_err(&o, &err), -EINVAL);
	o.endpoint = "tcp://farm:7000";
	o.driver_opts = mem;
	o.n_driver_opts = 1;
	assert_int_equal(create_err(&o, &err), -EINVAL);

	o.driver_opts = certs;
	o.n_driver_opts = 2;
	b = create_ok(&o);
	assert_string_equal(b->driver, "remote");
	assert_string_equal(b->endpoint, "tcp://farm:7000");
	assert_string_equal(builder_opt(b, NULL, "cacert"), "/k/server.cert");
	assert_string_equal(builder_opt(b, &b->nodes[0], "key"), "/k/client.cert");
	assert_string_equal(b->nodes[0].name, "r0");
	builder_free(b);

	/* one node per remote builder */
	o = (struct builder_create_opts) { .name = "r", .append = true };
	assert_int_equal(create_err(&o, &err), -EINVAL);
	/* but its node (and endpoint) can be changed */
	o = (struct builder_create_opts) { .name = "r", .node = "r0", .endpoint = "tcp://farm2:7001",
					   .platforms = "linux/amd64" };
	b = create_ok(&o);
	assert_string_equal(b->endpoint, "tcp://farm2:7001");
	assert_string_equal(builder_opt(b, NULL, "key"), "/k/client.cert");
	builder_free(b);

	/* an endpoint alone implies the remote driver; ipc:// needs no keys */
	o = (struct builder_create_opts) { .name = "near", .endpoint = "ipc:///run/kiln.sock" };
	b = create_ok(&o);
	assert_string_equal(b->driver, "remote");
	builder_free(b);
	assert_int_equal(config_load("near", &b, &err), 0);
	assert_string_equal(b->endpoint, "ipc:///run/kiln.sock");
	builder_free(b);
}

static void
use_and_resolution_order(void **state)
{
	struct builder_create_opts o = { 0 };
	struct kiln_err err = { 0 };
	struct builder *b = NULL;
	char name[64], cur[64];

	(void) state;
	o.name = "a";
	builder_free(create_ok(&o));
	o.name = "b";
	builder_free(create_ok(&o));
	o.name = "c";
	builder_free(create_ok(&o));

	resolve_name(NULL, name, sizeof(name));
	assert_string_equal(name, "default");

	assert_int_equal(config_use("nope", &err), -ENOENT);
	assert_string_equal(err.msg, "no builder \"nope\" found");
	assert_int_equal(config_use("a", &err), 0);
	assert_int_equal(config_current(cur, sizeof(cur), &err), 0);
	assert_string_equal(cur, "a");
	resolve_name(NULL, name, sizeof(name));
	assert_string_equal(name, "a");

	setenv("KILN_BUILDER", "b", 1);
	resolve_name(NULL, name, sizeof(name));
	assert_string_equal(name, "b");
	resolve_name("c", name, sizeof(name));
	assert_string_equal(name, "c");
	resolve_name("default", name, sizeof(name));
	assert_string_equal(name, "default");

	/* a flag or $KILN_BUILDER naming nothing is an error, not a fallback */
	assert_int_equal(config_resolve("nope", &b, &err), -ENOENT);
	assert_null(b);
	setenv("KILN_BUILDER", "nope", 1);
	assert_int_equal(config_resolve(NULL, &b, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "KILN_BUILDER"));
	unsetenv("KILN_BUILDER");

	/* `use default` is allowed */
	assert_int_equal(config_use("default", &err), 0);
	resolve_name(NULL, name, sizeof(name));
	assert_string_equal(name, "default");
}

static void
rm_removes_and_clears_current(void **state)
{
	struct builder_create_opts o = { .name = "a" };
	struct kiln_err err = { 0 };
	char name[64], cur[64], path[PATH_MAX];
	char **names = NULL;
	size_t n = 0;

	(void) state;
	builder_free(create_ok(&o));
	o.name = "b";
	builder_free(create_ok(&o));
	assert_int_equal(config_list(&names, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "a");
	assert_string_equal(names[1], "b");
	config_names_free(names, n);

	assert_int_equal(config_use("b", &err), 0);
	/* removing another builder keeps current */
	assert_int_equal(config_remove("a", &err), 0);
	assert_int_equal(config_current(cur, sizeof(cur), &err), 0);
	assert_string_equal(cur, "b");
	assert_int_equal(config_remove("a", &err), -ENOENT);
	/* removing the current one clears it */
	assert_int_equal(config_remove("b", &err), 0);
	assert_int_equal(config_current(cur, sizeof(cur), &err), 0);
	assert_string_equal(cur, "");
	snprintf(path, sizeof(path), "%s/current", tmpdir);
	assert_int_equal(access(path, F_OK), -1);
	resolve_name(NULL, name, sizeof(name));
	assert_string_equal(name, "default");

	assert_int_equal(config_remove("default", &err), -EINVAL);
	assert_int_equal(config_list(&names, &n, &err), 0);
	assert_int_equal(n, 0);
	config_names_free(names, n);
}

static void
stale_current_falls_back_to_default(void **state)
{
	struct builder_create_opts o = { .name = "gone" };
	struct kiln_err err = { 0 };
	char name[64], path[PATH_MAX];

	(void) state;
	builder_free(create_ok(&o));
	assert_int_equal(config_use("gone", &err), 0);
	/* removed behind our back, not through config_remove */
	snprintf(path, sizeof(path), "%s/builders/gone.json", tmpdir);
	assert_int_equal(unlink(path), 0);
	resolve_name(NULL, name, sizeof(name));
	assert_string_equal(name, "default");
}

static void
bad_file_is_reported(void **state)
{
	struct kiln_err err = { 0 };
	struct builder *b = NULL;
	char path[PATH_MAX];
	static const char *const bad[] = {
		"{ not json",
		"{\"name\": \"bad\", \"driver\": \"local\"}",
		"{\"name\": \"other\", \"driver\": \"local\", \"nodes\": []}",
		"{\"name\": \"bad\", \"driver\": \"docker\", \"nodes\": []}",
		"{\"name\": \"bad\", \"driver\": \"local\", \"nodes\": [{\"name\": \"../x\"}]}",
		"{\"name\": \"bad\", \"driver\": \"local\", \"nodes\": [{\"name\": \"a\", \"platforms\": [1]}]}",
	};

	(void) state;
	snprintf(path, sizeof(path), "%s/builders", tmpdir);
	assert_int_equal(kiln_mkdir_p(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/builders/bad.json", tmpdir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, bad[i], strlen(bad[i]), 0644), 0);
		assert_int_equal(config_load("bad", &b, &err), -KILN_EPARSE);
		assert_null(b);
		assert_non_null(strstr(err.msg, "bad.json"));
	}
}

static void
relative_config_dir_is_made_absolute(void **state)
{
	struct kiln_err err = { 0 };
	char dir[PATH_MAX], cwd[PATH_MAX], want[PATH_MAX * 2];

	(void) state;
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	setenv("KILN_CONFIG", "rel/cfg/", 1);
	assert_int_equal(config_dir(dir, sizeof(dir), &err), 0);
	snprintf(want, sizeof(want), "%s/rel/cfg", cwd);
	assert_string_equal(dir, want);
	unsetenv("KILN_CONFIG");
	setenv("HOME", "/home/someone", 1);
	assert_int_equal(config_dir(dir, sizeof(dir), &err), 0);
	assert_string_equal(dir, "/home/someone/.kiln");
	setenv("KILN_CONFIG", tmpdir, 1);
}

static void
names(void **state)
{
	(void) state;
	assert_true(config_name_valid("kiln0"));
	assert_true(config_name_valid("a.b_c-d"));
	assert_false(config_name_valid(""));
	assert_false(config_name_valid(".hidden"));
	assert_false(config_name_valid("-x"));
	assert_false(config_name_valid("a/b"));
	assert_false(config_name_valid("a b"));
	assert_false(config_name_valid(NULL));
	assert_false(config_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(default_builder_without_config, setup, teardown),
		cmocka_unit_test_setup_teardown(create_generates_names, setup, teardown),
		cmocka_unit_test_setup_teardown(create_roundtrips_through_file, setup, teardown),
		cmocka_unit_test_setup_teardown(create_existing_needs_append_or_node, setup, teardown),
		cmocka_unit_test_setup_teardown(append_adds_then_replaces_node, setup, teardown),
		cmocka_unit_test_setup_teardown(leave_removes_node, setup, teardown),
		cmocka_unit_test_setup_teardown(create_refuses_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(local_opt_values_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(nodes_keep_their_own_opts, setup, teardown),
		cmocka_unit_test_setup_teardown(remote_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(use_and_resolution_order, setup, teardown),
		cmocka_unit_test_setup_teardown(rm_removes_and_clears_current, setup, teardown),
		cmocka_unit_test_setup_teardown(stale_current_falls_back_to_default, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_file_is_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(relative_config_dir_is_made_absolute, setup, teardown),
		cmocka_unit_test(names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
