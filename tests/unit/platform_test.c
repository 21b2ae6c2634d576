/* Unit tests for shared/platform.c: containerd's normalisation table,
 * inputs that must be refused, lists, the host and qemu handler names. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "platform.h"

static const struct {
	const char *in;
	const char *want;
} table[] = {
	{ "linux/amd64", "linux/amd64" },
	{ "linux/x86_64", "linux/amd64" },
	{ "linux/x86-64", "linux/amd64" },
	{ "linux/amd64/v1", "linux/amd64" },
	{ "linux/amd64/v2", "linux/amd64/v2" },
	{ "linux/amd64/v3", "linux/amd64/v3" },
	{ "LINUX/AMD64", "linux/amd64" },
	{ "linux/aarch64", "linux/arm64" },
	{ "linux/arm64", "linux/arm64" },
	{ "linux/arm64/v8", "linux/arm64" },
	{ "linux/arm64/8", "linux/arm64" },
	{ "linux/aarch64/v8", "linux/arm64" },
	{ "linux/arm64/v9", "linux/arm64/v9" },
	{ "linux/arm", "linux/arm/v7" },
	{ "linux/arm/7", "linux/arm/v7" },
	{ "linux/arm/v7", "linux/arm/v7" },
	{ "linux/arm/v6", "linux/arm/v6" },
	{ "linux/arm/6", "linux/arm/v6" },
	{ "linux/arm/5", "linux/arm/v5" },
	{ "linux/arm/8", "linux/arm/v8" },
	{ "linux/armhf", "linux/arm/v7" },
	{ "linux/armel", "linux/arm/v6" },
	{ "linux/i386", "linux/386" },
	{ "linux/i686", "linux/386" },
	{ "linux/386", "linux/386" },
	{ "linux/ppc64le", "linux/ppc64le" },
	{ "linux/s390x", "linux/s390x" },
	{ "linux/riscv64", "linux/riscv64" },
	{ "windows/amd64", "windows/amd64" },
	{ "macos/arm64", "darwin/arm64" },
	/* A bare arch implies linux; so does a bare arch/variant. */
	{ "arm64", "linux/arm64" },
	{ "aarch64", "linux/arm64" },
	{ "amd64", "linux/amd64" },
	{ "x86_64", "linux/amd64" },
	{ "armhf", "linux/arm/v7" },
	{ "arm64/v8", "linux/arm64" },
	{ "arm/v6", "linux/arm/v6" },
};

static void
platform_normalisation_table(void **state)
{
	char out[PLATFORM_STR_SIZE];
	struct platform p;

	(void) state;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		int r = platform_parse(table[i].in, &p);

		if (r != 0)
			fail_msg("platform_parse('%s') = %d", table[i].in, r);
		if (strcmp(platform_fmt(&p, out), table[i].want) != 0)
			fail_msg("'%s' -> '%s', want '%s'", table[i].in, out, table[i].want);
	}
}

static void
platform_equal_after_normalising(void **state)
{
	struct platform a, b;

	(void) state;
	assert_int_equal(platform_parse("linux/arm64/v8", &a), 0);
	assert_int_equal(platform_parse("linux/aarch64", &b), 0);
	assert_true(platform_equal(&a, &b));
	assert_int_equal(platform_parse("linux/arm", &a), 0);
	assert_int_equal(platform_parse("linux/armhf", &b), 0);
	assert_true(platform_equal(&a, &b));
	assert_int_equal(platform_parse("linux/arm/v6", &b), 0);
	assert_false(platform_equal(&a, &b));
	assert_int_equal(platform_parse("linux/amd64", &a), 0);
	assert_int_equal(platform_parse("windows/amd64", &b), 0);
	assert_false(platform_equal(&a, &b));
	assert_string_equal(a.variant, "");
}

static void
platform_rejects_bad_input(void **state)
{
	static const char *const bad[] = {
		"",
		"linux",                /* os without arch */
		"windows",
		"linux/",
		"/amd64",
		"/",
		"//",
		"linux//v7",
		"linux/arm/",
		"a/b/c/d",
		"linux/arm/v7/extra",
		"notanarch",
		"linux/amd 64",
		"linux/amd64 ",
		"linux/amd64\n",
		"linux/am.d64",
		"linux/amd64,linux/arm64",
		/* each field holds at most 15 characters */
		"linuxlinuxlinuxl/amd64",
		"linux/amd64amd64amd64am",
		"linux/arm/v7v7v7v7v7v7v7v7",
	};
	struct platform p;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (platform_parse(bad[i], &p) != -EINVAL)
			fail_msg("platform_parse('%s') accepted", bad[i]);
	assert_int_equal(platform_parse(NULL, &p), -EINVAL);
	/* Exactly 15 characters still fit. */
	assert_int_equal(platform_parse("linux/arm/v7v7v7v7v7v7v7v", &p), 0);
	assert_string_equal(p.variant, "v7v7v7v7v7v7v7v");
	assert_int_equal(platform_parse("abcdefghijklmno/amd64", &p), 0);
	assert_string_equal(p.os, "abcdefghijklmno");
}

static void
platform_list(void **state)
{
	struct platform out[3];
	char s[PLATFORM_STR_SIZE];

	(void) state;
	assert_int_equal(platform_parse_list("linux/amd64,linux/arm64", out, 3), 2);
	assert_string_equal(platform_fmt(&out[0], s), "linux/amd64");
	assert_string_equal(platform_fmt(&out[1], s), "linux/arm64");
	assert_int_equal(platform_parse_list(" linux/amd64 , aarch64,linux/arm ", out, 3), 3);
	assert_string_equal(platform_fmt(&out[1], s), "linux/arm64");
	assert_string_equal(platform_fmt(&out[2], s), "linux/arm/v7");
	assert_int_equal(platform_parse_list("linux/amd64", out, 1), 1);
	assert_int_equal(platform_parse_list("linux/amd64,linux/arm64", out, 1), -E2BIG);
	assert_int_equal(platform_parse_list("", out, 3), -EINVAL);
	assert_int_equal(platform_parse_list(",", out, 3), -EINVAL);
	assert_int_equal(platform_parse_list("linux/amd64,", out, 3), -EINVAL);
	assert_int_equal(platform_parse_list("linux/amd64,,linux/arm64", out, 3), -EINVAL);
	assert_int_equal(platform_parse_list("linux/amd64,linux", out, 3), -EINVAL);
}

static void
platform_host_is_normalised(void **state)
{
	char s[PLATFORM_STR_SIZE];
	struct platform host, again;

	(void) state;
	platform_host(&host);
	assert_string_equal(host.os, "linux");
	assert_true(host.arch[0] != '\0');
	/* Parsing what we print must give the same platform back. */
	assert_int_equal(platform_parse(platform_fmt(&host, s), &again), 0);
	assert_true(platform_equal(&host, &again));
#if defined(__x86_64__)
	assert_string_equal(s, "linux/amd64");
#elif defined(__aarch64__)
	assert_string_equal(s, "linux/arm64");
#endif
}

static void
platform_qemu_handlers(void **state)
{
	static const struct {
		const char *handler;
		const char *want;
	} q[] = {
		{ "qemu-aarch64", "linux/arm64" },   { "qemu-arm", "linux/arm/v7" },
		{ "qemu-x86_64", "linux/amd64" },    { "qemu-i386", "linux/386" },
		{ "qemu-riscv64", "linux/riscv64" }, { "qemu-ppc64le", "linux/ppc64le" },
		{ "qemu-s390x", "linux/s390x" },     { "qemu-mips64el", "linux/mips64le" },
		{ "qemu-mips64", "linux/mips64" },   { "qemu-mipsel", "linux/mipsle" },
		{ "qemu-loongarch64", "linux/loong64" },
	};
	static const char *const unknown[] = {
		"", "qemu-", "qemu-pdp11", "aarch64", "qemu-aarch64-static", "Qemu-aarch64",
		"python3.11", "qemu-aarch64 ",
	};
	char s[PLATFORM_STR_SIZE];
	struct platform p;

	(void) state;
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		assert_int_equal(platform_from_qemu(q[i].handler, &p), 0);
		assert_string_equal(platform_fmt(&p, s), q[i].want);
	}
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		assert_int_equal(platform_from_qemu(unknown[i], &p), -ENOENT);
	assert_int_equal(platform_from_qemu(NULL, &p), -ENOENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(platform_normalisation_table),
		cmocka_unit_test(platform_equal_after_normalising),
		cmocka_unit_test(platform_rejects_bad_input),
		cmocka_unit_test(platform_list),
		cmocka_unit_test(platform_host_is_normalised),
		cmocka_unit_test(platform_qemu_handlers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
