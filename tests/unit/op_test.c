/* Unit tests for ops on the wire: round trips and refusal of ops that
 * would make a worker write outside the snapshot. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "op.h"

static int
roundtrip(const struct op *in, struct op *out, struct kiln_err *err)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked u;
	size_t off = 0;
	int r;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	op_pack(in, &pk);
	msgpack_unpacked_init(&u);
	assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	r = op_unpack(&u.data, out, err);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

static void
run_roundtrip(void **state)
{
	char *args[] = { "/bin/sh", "-c", "echo hi" };
	char *env[] = { "A=1" };
	struct op in = { .kind = OP_RUN, .input = 0, .name = "[2/2] RUN echo hi", .args = args, .n_args = 3,
			 .env = env, .n_env = 1, .cwd = "/w", .user = "1:2", .network = "none" };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	assert_int_equal(roundtrip(&in, &out, &err), 0);
	assert_int_equal(out.kind, OP_RUN);
	assert_int_equal(out.n_args, 3);
	assert_string_equal(out.args[2], "echo hi");
	assert_string_equal(out.env[0], "A=1");
	assert_string_equal(out.cwd, "/w");
	assert_string_equal(out.user, "1:2");
	assert_string_equal(out.network, "none");
	assert_string_equal(out.name, "[2/2] RUN echo hi");
	op_release(&out);
}

static void
run_mounts_roundtrip(void **state)
{
	char *args[] = { "true" };
	struct op_mount mounts[] = {
		{ .type = OP_MOUNT_CACHE, .target = "/root/.cache", .from = -1, .id = "go", .sharing = "locked",
		  .mode = 0700, .uid = 1, .gid = 2, .ro = true },
		{ .type = OP_MOUNT_TMPFS, .target = "/t", .from = -1, .size = 1 << 20 },
		{ .type = OP_MOUNT_BIND, .target = "/src", .from = 0, .source = "/etc" },
		{ .type = OP_MOUNT_SECRET, .target = "/run/secrets/tok", .from = -1, .id = "tok",
		  .mode = 0400, .env = "TOK", .required = true },
		{ .type = OP_MOUNT_SSH, .target = "/run/buildkit/ssh_agent.0", .from = -1, .id = "gh",
		  .mode = 0640, .uid = 3, .gid = 4, .required = true },
	};
	struct op in = { .kind = OP_RUN, .input = 0, .args = args, .n_args = 1, .cwd = "/",
			 .mounts = mounts, .n_mounts = 5 };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	assert_int_equal(roundtrip(&in, &out, &err), 0);
	assert_int_equal(out.n_mounts, 5);
	assert_int_equal(out.mounts[0].type, OP_MOUNT_CACHE);
	assert_string_equal(out.mounts[0].id, "go");
	assert_string_equal(out.mounts[0].sharing, "locked");
	assert_int_equal(out.mounts[0].mode, 0700);
	assert_int_equal(out.mounts[0].gid, 2);
	assert_true(out.mounts[0].ro);
	assert_int_equal(out.mounts[1].size, 1 << 20);
	assert_int_equal(out.mounts[2].from, 0);
	assert_string_equal(out.mounts[2].source, "/etc");
	assert_false(out.mounts[2].ro);
	assert_string_equal(out.mounts[3].env, "TOK");
	assert_true(out.mounts[3].required);
	assert_int_equal(out.mounts[4].type, OP_MOUNT_SSH);
	assert_string_equal(out.mounts[4].target, "/run/buildkit/ssh_agent.0");
	assert_string_equal(out.mounts[4].id, "gh");
	assert_int_equal(out.mounts[4].mode, 0640);
	assert_int_equal(out.mounts[4].uid, 3);
	assert_int_equal(out.mounts[4].gid, 4);
	assert_true(out.mounts[4].required);
	assert_null(out.mounts[4].env);
	op_release(&out);

	/* a target that climbs out is refused */
	mounts[1].target = "/t/../../x";
	assert_int_equal(roundtrip(&in, &out, &err), -KILN_EPROTO);
}

/* A cache's from and source travel only when given; a bad source is
 * refused like a bind's. */
static void
cache_from_source_roundtrip(void **state)
{
	char *args[] = { "true" };
	struct op_mount mounts[] = {
		{ .type = OP_MOUNT_CACHE, .target = "/c", .from = 0, .source = "/seed", .id = "c",
		  .sharing = "shared", .mode = 0755 },
		{ .type = OP_MOUNT_CACHE, .target = "/d", .from = -1, .source = "/sub", .id = "d",
		  .sharing = "shared", .mode = 0755 },
		{ .type = OP_MOUNT_CACHE, .target = "/e", .from = -1, .id = "e", .sharing = "private",
		  .mode = 0755 },
	};
	struct op in = { .kind = OP_RUN, .input = 0, .args = args, .n_args = 1, .cwd = "/",
			 .mounts = mounts, .n_mounts = 3 };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	assert_int_equal(roundtrip(&in, &out, &err), 0);
	assert_int_equal(out.mounts[0].from, 0);
	assert_string_equal(out.mounts[0].source, "/seed");
	assert_int_equal(out.mounts[1].from, -1);
	assert_string_equal(out.mounts[1].source, "/sub");
	assert_int_equal(out.mounts[2].from, -1);
	assert_null(out.mounts[2].source);
	op_release(&out);

	mounts[0].source = "/seed/../..";
	assert_int_equal(roundtrip(&in, &out, &err), -KILN_EPROTO);
}

static void
copy_and_image_roundtrip(void **state)
{
	struct op_entry e[2] = {
		{ .path = "/d", .kind = OP_ENTRY_DIR, .mode = 0755, .mtime = 5 },
		{ .path = "/d/l", .kind = OP_ENTRY_SYMLINK, .mode = 0777, .uid = 3, .gid = 4, .link = "x" },
	};
	struct op_layer l = { .size = 9 };
	struct op copy = { .kind = OP_COPY, .input = 0, .entries = e, .n_entries = 2 };
	struct op image = { .kind = OP_IMAGE, .layers = &l, .n_layers = 1 };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	memset(l.digest.raw, 1, sizeof(l.digest.raw));
	memset(l.diff_id.raw, 2, sizeof(l.diff_id.raw));
	assert_int_equal(roundtrip(&copy, &out, &err), 0);
	assert_int_equal(out.n_entries, 2);
	assert_int_equal(out.entries[1].kind, OP_ENTRY_SYMLINK);
	assert_string_equal(out.entries[1].link, "x");
	assert_int_equal(out.entries[1].uid, 3);
	assert_int_equal(out.entries[0].mtime, 5);
	op_release(&out);
	assert_int_equal(roundtrip(&image, &out, &err), 0);
	assert_int_equal(out.n_layers, 1);
	assert_true(digest_equal(&out.layers[0].diff_id, &l.diff_id));
	assert_int_equal(out.layers[0].size, 9);
	op_release(&out);
}

static void
copy_add_fields_roundtrip(void **state)
{
	char *ex[] = { "*.o", "!keep.o" };
	struct op_entry e[2] = {
		{ .path = "/d/a.tgz", .kind = OP_ENTRY_FILE, .mode = 0644, .unpack_dir = "/d" },
		{ .path = "/d/tool", .kind = OP_ENTRY_URL, .mode = 0600, .url = "https://h.example/tool",
		  .has_checksum = true },
	};
	struct op copy = { .kind = OP_COPY, .input = 0, .entries = e, .n_entries = 2,
			   .chown_user = "app", .chown_group = "staff" };
	struct op from = { .kind = OP_COPY_FROM, .input = 0, .from = 0, .srcs = (char *[]) { "/x" },
			   .n_srcs = 1, .dest = "/y", .chmod_spec = "u=rwX,go=rX", .excludes = ex,
			   .n_excludes = 2, .chown_user = "app" };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	memset(e[1].checksum.raw, 7, sizeof(e[1].checksum.raw));
	assert_int_equal(roundtrip(&copy, &out, &err), 0);
	assert_string_equal(out.chown_user, "app");
	assert_string_equal(out.chown_group, "staff");
	assert_string_equal(out.entries[0].unpack_dir, "/d");
	assert_int_equal(out.entries[1].kind, OP_ENTRY_URL);
	assert_string_equal(out.entries[1].url, "https://h.example/tool");
	assert_true(out.entries[1].has_checksum);
	assert_true(digest_equal(&out.entries[1].checksum, &e[1].checksum));
	op_release(&out);
	assert_int_equal(roundtrip(&from, &out, &err), 0);
	assert_string_equal(out.chmod_spec, "u=rwX,go=rX");
	assert_int_equal(out.n_excludes, 2);
	assert_string_equal(out.excludes[1], "!keep.o");
	assert_string_equal(out.chown_user, "app");
	assert_null(out.chown_group);
	op_release(&out);
	e[1].url = "file:///etc/passwd";
	assert_int_equal(roundtrip(&copy, &out, &err), -KILN_EPROTO);
	e[1].url = "https://h.example/tool";
	e[0].unpack_dir = "/d/../..";
	assert_int_equal(roundtrip(&copy, &out, &err), -KILN_EPROTO);
}

/* The fields for copying into existing directories, the copy's --chown
 * and the WORKDIR's user; absent unless set, so older ops keep their
 * encoding (and digests). */
static void
copy_dest_fields_roundtrip(void **state)
{
	struct op_entry e[2] = {
		{ .path = "/d", .kind = OP_ENTRY_DIR, .mode = 0755, .is_root = true },
		{ .path = "/tmp", .kind = OP_ENTRY_FILE, .mode = 0644, .path_if_dir = "/tmp/b.txt" },
	};
	struct op copy = { .kind = OP_COPY, .input = 0, .entries = e, .n_entries = 2, .chown = true,
			   .uid = 42, .gid = 43 };
	struct op mkdir = { .kind = OP_MKDIR, .input = 0, .path = "/w", .user = "app:staff" };
	struct op plain = { .kind = OP_COPY, .input = 0, .entries = &e[0], .n_entries = 1 };
	struct kiln_err err = { 0 };
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct op out;

	(void) state;
	assert_int_equal(roundtrip(&copy, &out, &err), 0);
	assert_true(out.entries[0].is_root);
	assert_null(out.entries[0].path_if_dir);
	assert_false(out.entries[1].is_root);
	assert_string_equal(out.entries[1].path_if_dir, "/tmp/b.txt");
	assert_true(out.chown);
	assert_int_equal(out.uid, 42);
	assert_int_equal(out.gid, 43);
	op_release(&out);
	assert_int_equal(roundtrip(&mkdir, &out, &err), 0);
	assert_string_equal(out.user, "app:staff");
	op_release(&out);
	mkdir.user = NULL;
	assert_int_equal(roundtrip(&mkdir, &out, &err), 0);
	assert_null(out.user);
	op_release(&out);
	/* no key when unset */
	e[0].is_root = false;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	op_pack(&plain, &pk);
	assert_null(memmem(sb.data, sb.size, "is_root", 7));
	assert_null(memmem(sb.data, sb.size, "chown", 5));
	msgpack_sbuffer_destroy(&sb);
	assert_int_equal(roundtrip(&plain, &out, &err), 0);
	assert_false(out.entries[0].is_root);
	assert_false(out.chown);
	op_release(&out);
	e[1].path_if_dir = "/tmp/../../x";
	assert_int_equal(roundtrip(&copy, &out, &err), -KILN_EPROTO);
}

static void
refuses_escaping_paths(void **state)
{
	const char *bad[] = { "relative", "/a/../../etc", "/..", "/a/..", "" };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct op_entry e = { .path = (char *) bad[i], .kind = OP_ENTRY_DIR, .mode = 0755 };
		struct op copy = { .kind = OP_COPY, .entries = &e, .n_entries = 1 };
		struct op mk = { .kind = OP_MKDIR, .path = (char *) bad[i] };

		copy.input = mk.input = 0;

		assert_int_equal(roundtrip(&copy, &out, &err), -KILN_EPROTO);
		assert_int_equal(roundtrip(&mk, &out, &err), -KILN_EPROTO);
	}
	/* ".." inside a name is fine. */
	{
		struct op mk = { .kind = OP_MKDIR, .input = 0, .path = "/a..b/..c" };

		assert_int_equal(roundtrip(&mk, &out, &err), 0);
		op_release(&out);
	}
}

static void
copy_from_roundtrip(void **state)
{
	char *srcs[] = { "/out/*.bin", "/etc/passwd" };
	struct op in = { .kind = OP_COPY_FROM, .input = 3, .from = 1, .srcs = srcs, .n_srcs = 2,
			 .dest = "/app", .into_dir = true, .chown = true, .uid = 5, .gid = 6 };
	struct kiln_err err = { 0 };
	struct op out;

	(void) state;
	assert_int_equal(roundtrip(&in, &out, &err), 0);
	assert_int_equal(out.kind, OP_COPY_FROM);
	assert_int_equal(out.input, 3);
	assert_int_equal(out.from, 1);
	assert_int_equal(out.n_srcs, 2);
	assert_string_equal(out.srcs[0], "/out/*.bin");
	assert_string_equal(out.dest, "/app");
	assert_true(out.into_dir && out.chown && !out.chmod);
	assert_int_equal(out.uid, 5);
	assert_int_equal(out.gid, 6);
	op_release(&out);
	in.dest = "/a/../..";
	assert_int_equal(roundtrip(&in, &out, &err), -KILN_EPROTO);
}

static void
refuses_malformed(void **state)
{
	static const unsigned char not_map[] = { 0x91, 0x01 };                /* [1] */
	static const unsigned char no_kind[] = { 0x81, 0xa1, 'x', 0x01 };     /* {x:1} */
	struct kiln_err err = { 0 };
	msgpack_unpacked u;
	struct op out;
	size_t off = 0;

	(void) state;
	msgpack_unpacked_init(&u);
	assert_int_equal(msgpack_unpack_next(&u, (const char *) not_map, sizeof(not_map), &off),
			 MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(op_unpack(&u.data, &out, &err), -KILN_EPROTO);
	off = 0;
	assert_int_equal(msgpack_unpack_next(&u, (const char *) no_kind, sizeof(no_kind), &off),
			 MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(op_unpack(&u.data, &out, &err), -KILN_EPROTO);
	msgpack_unpacked_destroy(&u);
	{
		char *args[] = { "true" };
		struct op run = { .kind = OP_RUN, .cwd = "/" };      /* no args */
		struct op orphan = { .kind = OP_RUN, .input = -1, .cwd = "/", .args = args, .n_args = 1 };

		assert_int_equal(roundtrip(&run, &out, &err), -KILN_EPROTO);
		/* Every op but an image builds on an earlier one. */
		assert_int_equal(roundtrip(&orphan, &out, &err), -KILN_EPROTO);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(run_roundtrip),
		cmocka_unit_test(run_mounts_roundtrip),
		cmocka_unit_test(cache_from_source_roundtrip),
		cmocka_unit_test(copy_and_image_roundtrip),
		cmocka_unit_test(copy_add_fields_roundtrip),
		cmocka_unit_test(copy_dest_fields_roundtrip),
		cmocka_unit_test(refuses_escaping_paths),
		cmocka_unit_test(copy_from_roundtrip),
		cmocka_unit_test(refuses_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
