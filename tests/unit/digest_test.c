/* Unit tests for shared/digest.c: the FIPS 180-2 / NIST sha256 vectors
 * through every entry point (buffer, stream, fd, file), and the strict
 * text form that names blobs on disk. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "digest.h"

static const struct {
	const char *input;      /* NULL: one million 'a' */
	const char *digest;
} vectors[] = {
	{ "", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
	{ "abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
	{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	  "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
	{ NULL, "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
};

#define MILLION 1000000

/* The vector's input; the million-'a' one is built on demand. */
static char *
vector_input(size_t i, size_t *ret_len)
{
	char *s;

	if (vectors[i].input) {
		*ret_len = strlen(vectors[i].input);
		s = strdup(vectors[i].input);
	} else {
		*ret_len = MILLION;
		s = malloc(MILLION);
		if (s)
			memset(s, 'a', MILLION);
	}
	assert_non_null(s);
	return s;
}

static void
digest_buf_vectors(void **state)
{
	char out[DIGEST_STR_SIZE];
	struct digest d;

	(void) state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		size_t len;
		char *in = vector_input(i, &len);

		digest_buf(in, len, &d);
		assert_string_equal(digest_fmt(&d, out), vectors[i].digest);
		free(in);
	}
}

static void
digest_stream_odd_chunks_equal_oneshot(void **state)
{
	static const size_t chunks[] = { 1, 3, 7, 63, 64, 65, 127, 4093, 65537 };
	struct digest one, streamed;

	(void) state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		size_t len;
		char *in = vector_input(i, &len);

		digest_buf(in, len, &one);
		for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			struct digest_ctx *ctx = digest_ctx_new();
			size_t off = 0, step = chunks[c];

			assert_non_null(ctx);
			/* Vary the step a little so chunk edges land everywhere
			 * relative to sha256's 64-byte blocks. */
			while (off < len) {
				size_t n = len - off < step ? len - off : step;

				digest_ctx_update(ctx, in + off, n);
				off += n;
				step = step % 5 == 0 ? chunks[c] : step + 1;
			}
			digest_ctx_update(ctx, in, 0);
			digest_ctx_final(ctx, &streamed);
			digest_ctx_free(ctx);
			assert_true(digest_equal(&one, &streamed));
		}
		free(in);
	}
	digest_ctx_free(NULL);
}

static void
digest_fd_and_file(void **state)
{
	char path[] = "/tmp/kiln-digest-XXXXXX";
	char out[DIGEST_STR_SIZE];
	struct digest d;
	uint64_t size = 0;
	size_t len;
	char *in;
	int fd;

	(void) state;
	in = vector_input(3, &len);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, in, len), (ssize_t) len);
	free(in);

	assert_int_equal(digest_file(path, &d, &size), 0);
	assert_int_equal(size, MILLION);
	assert_string_equal(digest_fmt(&d, out), vectors[3].digest);

	/* From the current offset: skipping 999997 'a' leaves "aaa". */
	assert_int_equal(lseek(fd, MILLION - 3, SEEK_SET), MILLION - 3);
	assert_int_equal(digest_fd(fd, &d, NULL), 0);
	assert_string_equal(digest_fmt(&d, out),
			    "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0");
	close(fd);
	unlink(path);
	assert_int_equal(digest_file(path, &d, &size), -ENOENT);
}

static void
digest_parse_roundtrip(void **state)
{
	char out[DIGEST_STR_SIZE], hex[65];
	struct digest d, e;

	(void) state;
	assert_int_equal(digest_parse(vectors[1].digest, &d), 0);
	assert_string_equal(digest_fmt(&d, out), vectors[1].digest);
	assert_string_equal(digest_hex(&d, hex), vectors[1].digest + 7);
	digest_buf("abc", 3, &e);
	assert_true(digest_equal(&d, &e));
	digest_buf("abd", 3, &e);
	assert_false(digest_equal(&d, &e));

	/* parse_n stops at len: trailing bytes outside it are not looked at. */
	assert_int_equal(digest_parse_n(vectors[2].digest, DIGEST_STR_LEN, &d), 0);
	assert_int_equal(digest_parse_n(vectors[2].digest, DIGEST_STR_LEN - 1, &d), -EINVAL);
}

static void
digest_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"sha256:",
		"sha256:abc",
		/* uppercase hex */
		"sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015aD",
		"SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		/* wrong algorithm, right length otherwise */
		"sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		"sha384:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		/* short by one, long by one, trailing junk */
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad ",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n",
		" sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		/* non-hex characters */
		"sha256:ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f2001-ad",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f2001 ad",
	};
	struct digest d;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(digest_parse(bad[i], &d), -EINVAL);
	assert_int_equal(digest_parse(NULL, &d), -EINVAL);
	/* An embedded NUL inside the length is junk too. */
	assert_int_equal(digest_parse_n("sha256:\0a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
					DIGEST_STR_LEN, &d),
			 -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(digest_buf_vectors),
		cmocka_unit_test(digest_stream_odd_chunks_equal_oneshot),
		cmocka_unit_test(digest_fd_and_file),
		cmocka_unit_test(digest_parse_roundtrip),
		cmocka_unit_test(digest_parse_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
