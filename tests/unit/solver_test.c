/* Unit tests for coordinator/solver.c (cache keys, result records) and
 * coordinator/cache.c (the LMDB cache index): what a key depends on and
 * what it must not, records surviving their encoding and refusing bad
 * bytes, and the index surviving a reopen. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"
#include "err.h"
#include "op.h"
#include "solver.h"
#include "util.h"

static struct digest
dg(const char *s)
{
	struct digest d;

	digest_buf(s, strlen(s), &d);
	return d;
}

/* ops: 0 image, 1 COPY of one file (digest of content, mtime), 2 RUN */
static void
make_ops(struct op ops[3], struct op_entry *e, const char *content, int64_t mtime, const char *name)
{
	static struct op_layer base;
	static char *args[] = { "/bin/sh", "-c", "make" };

	memset(ops, 0, 3 * sizeof(*ops));
	base.digest = dg("base");
	base.diff_id = dg("base-diff");
	base.size = 10;
	ops[0] = (struct op) { .kind = OP_IMAGE, .input = -1, .from = -1, .layers = &base, .n_layers = 1,
			       .ref = "registry.example/one@sha256:x" };
	memset(e, 0, sizeof(*e));
	e->path = "/src/a.c";
	e->kind = OP_ENTRY_FILE;
	e->mode = 0644;
	e->mtime = mtime;
	e->digest = dg(content);
	ops[1] = (struct op) { .kind = OP_COPY, .name = (char *) name, .input = 0, .from = -1,
			       .entries = e, .n_entries = 1 };
	ops[2] = (struct op) { .kind = OP_RUN, .name = "RUN make", .input = 1, .from = -1, .args = args,
			       .n_args = 3, .cwd = "/", .network = "default" };
}

static void
keys_of(struct op ops[3], const char *salt, struct digest keys[3])
{
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(solver_key(ops, i, keys, salt, &keys[i]), 0);
}

static void
test_key_depends_on_content_not_names(void **state)
{
	struct op a[3], b[3];
	struct op_entry ea, eb;
	struct digest ka[3], kb[3];

	(void) state;
	make_ops(a, &ea, "int main;", 100, "COPY src/ /src/");
	keys_of(a, "linux/amd64 gzip -1", ka);
	/* another progress name, another mtime: the same keys */
	make_ops(b, &eb, "int main;", 999, "[2/3] COPY . /");
	keys_of(b, "linux/amd64 gzip -1", kb);
	for (size_t i = 0; i < 3; i++)
		assert_true(digest_equal(&ka[i], &kb[i]));
	/* the image's registry name does not count, its layers do */
	b[0].ref = "elsewhere.example/two@sha256:y";
	keys_of(b, "linux/amd64 gzip -1", kb);
	assert_true(digest_equal(&ka[0], &kb[0]));
	/* other content: the COPY and what builds on it change, the image not */
	make_ops(b, &eb, "int main(void);", 100, "COPY src/ /src/");
	keys_of(b, "linux/amd64 gzip -1", kb);
	assert_true(digest_equal(&ka[0], &kb[0]));
	assert_false(digest_equal(&ka[1], &kb[1]));
	assert_false(digest_equal(&ka[2], &kb[2]));
	/* another platform or compression: every key changes */
	keys_of(a, "linux/arm64 gzip -1", kb);
	for (size_t i = 0; i < 3; i++)
		assert_false(digest_equal(&ka[i], &kb[i]));
	keys_of(a, "linux/amd64 zstd -1", kb);
	assert_false(digest_equal(&ka[2], &kb[2]));
}

static void
test_key_follows_inputs(void **state)
{
	struct op a[3];
	struct op_entry ea;
	struct digest k1[3], k2[3];
	char *other[] = { "/bin/sh", "-c", "make all" };

	(void) state;
	make_ops(a, &ea, "x", 1, "c");
	keys_of(a, "s", k1);
	/* a different RUN command changes only the RUN */
	a[2].args = other;
	keys_of(a, "s", k2);
	assert_true(digest_equal(&k1[1], &k2[1]));
	assert_false(digest_equal(&k1[2], &k2[2]));
	/* the RUN built straight on the image: another key although the op
	 * itself is the same */
	a[2].args = (char *[]) { "/bin/sh", "-c", "make" };
	a[2].input = 0;
	keys_of(a, "s", k2);
	assert_false(digest_equal(&k1[2], &k2[2]));
}

static void
fill_rec(struct solver_rec *r)
{
	struct op img = { .kind = OP_IMAGE, .input = -1, .from = -1, .ref = "r@sha256:1" };
	struct op_layer l[2] = { { dg("l0"), dg("d0"), 5 }, { dg("l1"), dg("d1"), 7 } };
	struct solver_rec base, mid;
	struct solver_layer own = { { dg("own"), dg("own-d"), 3 }, "application/vnd.oci.image.layer.v1.tar+zstd" };

	img.layers = l;
	img.n_layers = 2;
	assert_int_equal(solver_rec_image(&img, NULL, &base), 0);
	assert_int_equal(solver_rec_extend(&base, NULL, &mid), 0);   /* e.g. WORKDIR of an existing dir */
	assert_int_equal(solver_rec_extend(&mid, &own, r), 0);
	solver_rec_release(&base);
	solver_rec_release(&mid);
}

static void
test_rec_roundtrip(void **state)
{
	struct solver_rec r, back;
	struct kiln_err err = { 0 };
	char *data;
	size_t len;

	(void) state;
	fill_rec(&r);
	assert_int_equal(r.n_layers, 3);
	assert_int_equal(r.n_base, 2);
	assert_int_equal(r.n_made, 2);
	assert_false(r.made[0]);
	assert_true(r.made[1]);
	assert_non_null(solver_rec_own_layer(&r));
	assert_int_equal(solver_rec_encode(&r, &data, &len), 0);
	assert_int_equal(solver_rec_decode(data, len, &back, &err), 0);
	assert_string_equal(back.ref, "r@sha256:1");
	assert_int_equal(back.n_layers, 3);
	assert_int_equal(back.n_base, 2);
	assert_int_equal(back.n_made, 2);
	assert_true(back.made[1] && !back.made[0]);
	for (size_t i = 0; i < 3; i++) {
		assert_true(digest_equal(&back.layers[i].l.digest, &r.layers[i].l.digest));
		assert_true(digest_equal(&back.layers[i].l.diff_id, &r.layers[i].l.diff_id));
		assert_int_equal(back.layers[i].l.size, r.layers[i].l.size);
		assert_string_equal(back.layers[i].media_type, r.layers[i].media_type);
	}
	{
		struct digest own = dg("own");

		assert_true(digest_equal(&solver_rec_own_layer(&back)->l.digest, &own));
	}
	/* every truncation is refused, never read past */
	for (size_t cut = 0; cut < len; cut++) {
		struct solver_rec bad;

		assert_int_not_equal(solver_rec_decode(data, cut, &bad, &err), 0);
	}
	/* a count of base layers above the layers is refused */
	{
		char *copy = malloc(len);

		memcpy(copy, data, len);
		/* fixarray(4), fixstr ref, then n_base as a positive fixint */
		size_t at = 2 + strlen("r@sha256:1");

		assert_int_equal((unsigned char) copy[at], 0x02);
		copy[at] = 0x09;
		{
			struct solver_rec bad;

			assert_int_not_equal(solver_rec_decode(copy, len, &bad, &err), 0);
		}
		free(copy);
	}
	free(data);
	solver_rec_release(&r);
	solver_rec_release(&back);
}

static void
test_cache_index_persists(void **state)
{
	char dir[] = "/tmp/kiln-solver-test-XXXXXX";
	struct cache *c = NULL;
	struct kiln_err err = { 0 };
	struct solver_rec r, got;
	struct digest key = dg("key"), other = dg("other"), blob = dg("blob");
	char names[CACHE_MAX_HOLDERS][CACHE_NODE_NAME_MAX];

	(void) state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(cache_open(dir, &c, &err), 0);
	fill_rec(&r);
	assert_int_equal(cache_get(c, &key, &got, &err), 0);
	assert_int_equal(cache_put(c, &key, &r, &err), 0);
	assert_int_equal(cache_hold(c, &blob, "node-a", true, &err), 0);
	assert_int_equal(cache_hold(c, &blob, "node-b", true, &err), 0);
	assert_int_equal(cache_hold(c, &blob, "node-a", true, &err), 0);   /* once */
	assert_int_equal(cache_holders(c, &blob, names, CACHE_MAX_HOLDERS, &err), 2);
	cache_close(c);

	/* a restart keeps it all */
	assert_int_equal(cache_open(dir, &c, &err), 0);
	assert_int_equal(cache_get(c, &key, &got, &err), 1);
	assert_int_equal(got.n_layers, r.n_layers);
	assert_true(digest_equal(&got.layers[2].l.digest, &r.layers[2].l.digest));
	solver_rec_release(&got);
	assert_int_equal(cache_get(c, &other, &got, &err), 0);
	assert_int_equal(cache_holders(c, &blob, names, CACHE_MAX_HOLDERS, &err), 2);
	assert_string_equal(names[0], "node-a");
	assert_string_equal(names[1], "node-b");
	assert_int_equal(cache_hold(c, &blob, "node-a", false, &err), 0);
	assert_int_equal(cache_holders(c, &blob, names, CACHE_MAX_HOLDERS, &err), 1);
	assert_string_equal(names[0], "node-b");
	assert_int_equal(cache_hold(c, &blob, "node-b", false, &err), 0);
	assert_int_equal(cache_holders(c, &blob, names, CACHE_MAX_HOLDERS, &err), 0);
	cache_close(c);
	solver_rec_release(&r);
	assert_int_equal(kiln_rm_rf(dir), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_depends_on_content_not_names),
		cmocka_unit_test(test_key_follows_inputs),
		cmocka_unit_test(test_rec_roundtrip),
		cmocka_unit_test(test_cache_index_persists),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
