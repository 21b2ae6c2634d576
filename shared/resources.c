/* Docker's syntax for a node's CPU list and memory size. The rules follow
 * moby's ParseUintList and go-units' RAMInBytes, so a value buildx accepts
 * for its docker-container driver means the same here, with two
 * deliberate refusals docker does not make at parse time: an empty CPU
 * list (docker reads it as "no limit"; a driver opt that says nothing is
 * a mistake) and CPUs past CPU_SETSIZE (no cpu_set_t can hold them).
 *
 * Pure functions: no allocation, no state, thread-safe. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "resources.h"

#define CPUS_HINT "expected CPU numbers and ranges such as 0, 0-3 or 0,2"

/* A decimal number at *p (digits only, as CPU ids and sizes are never
 * signed), advancing *p. false when there is no digit or it overflows. */
static bool
parse_u64(const char **p, uint64_t *ret)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t) (*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t) (*s - '0');
	}
	*p = s;
	*ret = v;
	return true;
}

int
resources_parse_cpus(const char *list, cpu_set_t *ret, struct kiln_err *err)
{
	const char *p = list;
	cpu_set_t set;

	CPU_ZERO(&set);
	if (!*list)
		return kiln_err_set(err, EINVAL, "empty CPU list: " CPUS_HINT);
	for (;;) {
		const char *entry = p;
		uint64_t lo, hi;

		if (!parse_u64(&p, &lo))
			return kiln_err_set(err, EINVAL, "invalid CPU list \"%s\": " CPUS_HINT, list);
		hi = lo;
		if (*p == '-') {
			p++;
			if (!parse_u64(&p, &hi))
				return kiln_err_set(err, EINVAL, "invalid CPU list \"%s\": " CPUS_HINT,
						    list);
			if (hi < lo)
				return kiln_err_set(err, EINVAL,
						    "invalid CPU list \"%s\": range %.*s ends before it starts",
						    list, (int) (p - entry), entry);
		}
		if (hi >= CPU_SETSIZE)
			return kiln_err_set(err, EINVAL,
					    "invalid CPU list \"%s\": CPU %llu is out of range (at most %d)",
					    list, (unsigned long long) hi, CPU_SETSIZE - 1);
		for (uint64_t c = lo; c <= hi; c++)
			CPU_SET((size_t) c, &set);
		if (*p == '\0')
			break;
		if (*p != ',')
			return kiln_err_set(err, EINVAL, "invalid CPU list \"%s\": " CPUS_HINT, list);
		p++;
	}
	*ret = set;
	return 0;
}

char *
resources_fmt_cpus(const cpu_set_t *set, char *buf, size_t size)
{
	size_t len = 0;
	bool fits = true;

	if (size == 0)
		return NULL;
	buf[0] = '\0';
	for (int c = 0; c < CPU_SETSIZE; c++) {
		int end = c, n;

		if (!CPU_ISSET(c, set))
			continue;
		while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, set))
			end++;
		if (end == c)
			n = snprintf(buf + len, size - len, "%s%d", len ? "," : "", c);
		else
			n = snprintf(buf + len, size - len, "%s%d-%d", len ? "," : "", c, end);
		if (n < 0 || (size_t) n >= size - len) {
			fits = false;
			break;
		}
		len += (size_t) n;
		c = end;
	}
	return fits ? buf : NULL;
}

int
resources_parse_memory(const char *size, uint64_t *ret, struct kiln_err *err)
{
	static const char units[] = "kmgtp";
	const char *p = size, *unit;
	uint64_t whole, frac = 0, frac_div = 1, mul = 1, bytes;
	char sfx[4];
	size_t n;

	if (!parse_u64(&p, &whole))
		goto out_invalid;
	if (*p == '.') {
		/* Go's ParseFloat also takes "1." and more digits than a
		 * double keeps; nobody means those in a memory limit. */
		p++;
		if (*p < '0' || *p > '9')
			goto out_invalid;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (frac_div <= UINT64_MAX / 100) {
				frac = frac * 10 + (uint64_t) (*p - '0');
				frac_div *= 10;
			}
		}
	}
	if (*p == ' ')
		p++;
	n = strlen(p);
	if (n > 3)
		goto out_invalid;
	for (size_t i = 0; i <= n; i++)
		sfx[i] = (char) (p[i] >= 'A' && p[i] <= 'Z' ? p[i] - 'A' + 'a' : p[i]);
	if (n > 0 && sfx[0] == 'b') {
		if (n > 1)
			goto out_invalid;
	} else if (n > 0) {
		unit = strchr(units, sfx[0]);
		if (!unit || (n == 2 && sfx[1] != 'b') || (n == 3 && strcmp(sfx + 1, "ib") != 0))
			goto out_invalid;
		mul = 1ull << (10 * (unit - units + 1));
	}
	if (whole > (uint64_t) INT64_MAX / mul)
		goto out_too_large;
	bytes = whole * mul;
	/* The fraction of a unit, truncated to whole bytes as docker's
	 * int64(float) does. frac < frac_div <= 10^18 and mul <= 2^50, so
	 * the product fits 128 bits. */
	if (frac) {
		uint64_t part = (uint64_t) ((unsigned __int128) frac * mul / frac_div);

		if (part > (uint64_t) INT64_MAX - bytes)
			goto out_too_large;
		bytes += part;
	}
	if (bytes < RESOURCES_MEMORY_MIN)
		return kiln_err_set(err, EINVAL,
				    "memory \"%s\" is below the minimum of 6MB a node can run in", size);
	*ret = bytes;
	return 0;

out_too_large:
	return kiln_err_set(err, ERANGE, "invalid size \"%s\": too large", size);
out_invalid:
	return kiln_err_set(err, EINVAL,
			    "invalid size \"%s\": expected bytes or a number with a unit b, k, m, g, t or p (e.g. 512m, 2g)",
			    size);
}
