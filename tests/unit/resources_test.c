/* Unit tests for shared/resources.c: docker's CPU lists (ParseUintList) and
 * memory sizes (go-units' RAMInBytes), what must be refused and with which
 * message, and the canonical CPU list format. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "resources.h"

/* "in" parsed, then formatted as the kernel writes Cpus_allowed_list. */
static const struct {
	const char *in;
	const char *want;
} cpu_lists[] = {
	{ "0", "0" },
	{ "1", "1" },
	{ "0-1", "0-1" },
	{ "0,2", "0,2" },
	{ "0-1,4", "0-1,4" },
	{ "3,1,2", "1-3" },             /* order and overlap do not matter */
	{ "0-3,2-5", "0-5" },
	{ "7-7", "7" },
	{ "0,0,0", "0" },
	{ "007", "7" },                 /* Go's Atoi takes leading zeros */
	{ "1023", "1023" },
	{ "0-2,5,9-10", "0-2,5,9-10" },
};

static void
cpus_parse_and_format(void **state)
{
	char buf[RESOURCES_CPUS_STR_SIZE];
	struct kiln_err err = { 0 };
	cpu_set_t s;

	(void) state;
	for (size_t i = 0; i < sizeof(cpu_lists) / sizeof(cpu_lists[0]); i++) {
		assert_int_equal(resources_parse_cpus(cpu_lists[i].in, &s, &err), 0);
		assert_non_null(resources_fmt_cpus(&s, buf, sizeof(buf)));
		assert_string_equal(buf, cpu_lists[i].want);
	}
	assert_int_equal(resources_parse_cpus("0,2", &s, &err), 0);
	assert_int_equal(CPU_COUNT(&s), 2);
	assert_true(CPU_ISSET(0, &s));
	assert_false(CPU_ISSET(1, &s));
	assert_true(CPU_ISSET(2, &s));
}

static void
cpus_refused(void **state)
{
	static const char *const bad[] = {
		"", "a", "0,", ",0", "0,,1", "-1", "1-", "0-a", "0 ", " 0", "0-1-2", "+1", "0x1",
		"1.5", "0;1", "99999999999999999999999",
	};
	struct kiln_err err = { 0 };
	cpu_set_t s;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kiln_err_clear(&err);
		if (resources_parse_cpus(bad[i], &s, &err) != -EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_non_null(strstr(err.msg, bad[i]));
	}
	assert_int_equal(resources_parse_cpus("", &s, &err), -EINVAL);
	assert_string_equal(err.msg, "empty CPU list: expected CPU numbers and ranges such as 0, 0-3 or 0,2");
	assert_int_equal(resources_parse_cpus("0,3-1", &s, &err), -EINVAL);
	assert_string_equal(err.msg, "invalid CPU list \"0,3-1\": range 3-1 ends before it starts");
	assert_int_equal(resources_parse_cpus("1024", &s, &err), -EINVAL);
	assert_string_equal(err.msg, "invalid CPU list \"1024\": CPU 1024 is out of range (at most 1023)");
	assert_int_equal(resources_parse_cpus("0-x", &s, &err), -EINVAL);
	assert_string_equal(err.msg,
			    "invalid CPU list \"0-x\": expected CPU numbers and ranges such as 0, 0-3 or 0,2");
}

static void
cpus_format_edges(void **state)
{
	char buf[RESOURCES_CPUS_STR_SIZE], small[4];
	cpu_set_t s;

	(void) state;
	CPU_ZERO(&s);
	assert_non_null(resources_fmt_cpus(&s, buf, sizeof(buf)));
	assert_string_equal(buf, "");
	CPU_SET(CPU_SETSIZE - 1, &s);
	assert_non_null(resources_fmt_cpus(&s, buf, sizeof(buf)));
	assert_string_equal(buf, "1023");
	/* Every other CPU: far longer than the buffer; cut, flagged, and
	 * still a C string. */
	CPU_ZERO(&s);
	for (int c = 0; c < CPU_SETSIZE; c += 2)
		CPU_SET(c, &s);
	assert_null(resources_fmt_cpus(&s, buf, sizeof(buf)));
	assert_true(strlen(buf) < sizeof(buf));
	assert_true(strncmp(buf, "0,2,4,6,8,10", 12) == 0);
	CPU_ZERO(&s);
	CPU_SET(100, &s);
	assert_non_null(resources_fmt_cpus(&s, small, sizeof(small)));  /* "100" just fits */
	CPU_SET(1000, &s);
	assert_null(resources_fmt_cpus(&s, small, sizeof(small)));
	assert_true(strlen(small) < sizeof(small));
}

static const struct {
	const char *in;
	uint64_t want;
} sizes[] = {
	{ "6291456", 6291456 },
	{ "6291456b", 6291456 },
	{ "6291456B", 6291456 },
	{ "8192k", 8u << 20 },
	{ "512m", 512ull << 20 },
	{ "512M", 512ull << 20 },
	{ "512mb", 512ull << 20 },
	{ "512MiB", 512ull << 20 },
	{ "512 m", 512ull << 20 },      /* one space, as go-units allows */
	{ "2g", 2ull << 30 },
	{ "2G", 2ull << 30 },
	{ "1.5g", 3ull << 29 },
	{ "0.5g", 1ull << 29 },
	{ "7.25m", (7ull << 20) + (1ull << 18) },
	{ "1t", 1ull << 40 },
	{ "1p", 1ull << 50 },
	{ "8191p", 8191ull << 50 },     /* just below INT64_MAX */
	{ "9223372036854775807", INT64_MAX },
};

static void
memory_parse(void **state)
{
	struct kiln_err err = { 0 };
	uint64_t v;

	(void) state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		v = 0;
		if (resources_parse_memory(sizes[i].in, &v, &err) != 0)
			fail_msg("\"%s\" refused: %s", sizes[i].in, err.msg);
		if (v != sizes[i].want)
			fail_msg("\"%s\" gave %llu, want %llu", sizes[i].in, (unsigned long long) v,
				 (unsigned long long) sizes[i].want);
	}
}

static void
memory_refused(void **state)
{
	static const char *const bad[] = {
		"", "m", "abc", "-1", "-512m", "512x", "512mm", "512mib ", "512m ", "512  m", " 512m",
		"512kb2", "512bb", "512bi", "512mbb", "512mi", "1.g", ".5g", "1,5g", "1e9", "0x10m",
		"512m\n",
	};
	struct kiln_err err = { 0 };
	uint64_t v;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kiln_err_clear(&err);
		if (resources_parse_memory(bad[i], &v, &err) != -EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
	}
	assert_int_equal(resources_parse_memory("4x", &v, &err), -EINVAL);
	assert_string_equal(err.msg,
			    "invalid size \"4x\": expected bytes or a number with a unit b, k, m, g, t or p (e.g. 512m, 2g)");
	/* docker's floor */
	assert_int_equal(resources_parse_memory("6291455", &v, &err), -EINVAL);
	assert_string_equal(err.msg, "memory \"6291455\" is below the minimum of 6MB a node can run in");
	assert_int_equal(resources_parse_memory("1m", &v, &err), -EINVAL);
	assert_int_equal(resources_parse_memory("0", &v, &err), -EINVAL);
	/* past INT64_MAX, as docker's int64 */
	assert_int_equal(resources_parse_memory("8192p", &v, &err), -ERANGE);
	assert_string_equal(err.msg, "invalid size \"8192p\": too large");
	assert_int_equal(resources_parse_memory("9223372036854775808", &v, &err), -ERANGE);
	assert_int_equal(resources_parse_memory("99999999999999999999999", &v, &err), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(cpus_parse_and_format),
		cmocka_unit_test(cpus_refused),
		cmocka_unit_test(cpus_format_edges),
		cmocka_unit_test(memory_parse),
		cmocka_unit_test(memory_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
