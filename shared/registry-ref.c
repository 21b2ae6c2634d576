/* Image references, WWW-Authenticate challenges and platform matching:
 * the registry client's pure parts, with no I/O, so that they can be
 * tested and fuzzed on their own.
 *
 * References follow Docker's grammar and normalisation (docker.io,
 * library/, "latest"); challenges follow RFC 7235; platform ranking is
 * containerd's platforms.Only(). Everything here reads bounded input and
 * writes only into the caller's fixed-size structs. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"
#include "err.h"
#include "oci.h"
#include "platform.h"
#include "registry.h"

#define REG_NAME_MAX 255                /* Docker's NameTotalLengthMax */

static bool
lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
word_char(char c)
{
	return isascii((unsigned char) c) && (isalnum((unsigned char) c) || c == '_');
}

/* ---- references ---- */

/* [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static bool
path_component_ok(const char *s, size_t n)
{
	size_t i = 0;

	if (n == 0 || !lower_alnum(s[0]))
		return false;
	for (;;) {
		while (i < n && lower_alnum(s[i]))
			i++;
		if (i == n)
			return true;
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < n && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
		if (i == n || !lower_alnum(s[i]))
			return false;
	}
}

/* host components ([A-Za-z0-9] with inner '-') joined by '.', or an IPv6
 * literal in brackets; then an optional :port. */
static bool
domain_ok(const char *s, size_t n)
{
	size_t i, host_end;

	if (n == 0)
		return false;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', n);

		if (!rb || rb == s + 1)
			return false;
		for (const char *p = s + 1; p < rb; p++)
			if (!isxdigit((unsigned char) *p) && *p != ':' && *p != '.')
				return false;
		host_end = (size_t) (rb - s) + 1;
	} else {
		const char *colon = memchr(s, ':', n);
		size_t start = 0;

		host_end = colon ? (size_t) (colon - s) : n;
		for (i = 0; i <= host_end; i++) {
			if (i == host_end || s[i] == '.') {
				if (i == start || s[start] == '-' || s[i - 1] == '-')
					return false;
				start = i + 1;
			} else if (!isascii((unsigned char) s[i]) ||
				   (!isalnum((unsigned char) s[i]) && s[i] != '-')) {
				return false;
			}
		}
	}
	if (host_end == n)
		return true;
	if (s[host_end] != ':' || n - host_end - 1 == 0 || n - host_end - 1 > 5)
		return false;
	for (i = host_end + 1; i < n; i++)
		if (!isdigit((unsigned char) s[i]))
			return false;
	return true;
}

/* Does the first component of a name name a registry host? Docker's rule:
 * it has a '.' or ':', is "localhost", or has an uppercase letter. */
static bool
looks_like_domain(const char *s, size_t n)
{
	if (memchr(s, '.', n) || memchr(s, ':', n) || (n == 9 && memcmp(s, "localhost", 9) == 0))
		return true;
	for (size_t i = 0; i < n; i++)
		if (isupper((unsigned char) s[i]))
			return true;
	return false;
}

int
registry_ref_parse(const char *s, struct registry_ref *ret_ref, struct kiln_err *err)
{
	struct registry_ref r = { 0 };
	const char *at, *end, *last_slash, *tag_from, *colon, *slash, *path;
	size_t name_len, path_len;

	if (!s || !*s)
		return kiln_err_set(err, EINVAL, "empty image reference");
	at = strchr(s, '@');
	if (at) {
		if (strncmp(at + 1, "sha256:", 7) != 0)
			return kiln_err_set(err, EINVAL,
					    "reference '%.300s': only sha256 digests are supported", s);
		if (digest_parse(at + 1, &r.digest) < 0)
			return kiln_err_set(err, EINVAL, "reference '%.300s': invalid digest", s);
		r.has_digest = true;
		end = at;
	} else {
		end = s + strlen(s);
	}

	/* A tag follows the last ':' that comes after the last '/'. */
	last_slash = memrchr(s, '/', (size_t) (end - s));
	tag_from = last_slash ? last_slash : s;
	colon = memrchr(tag_from, ':', (size_t) (end - tag_from));
	if (colon) {
		size_t tlen = (size_t) (end - colon - 1);

		if (tlen == 0 || tlen > 128 || !word_char(colon[1]))
			return kiln_err_set(err, EINVAL, "reference '%.300s': invalid tag", s);
		for (size_t i = 1; i < tlen; i++)
			if (!word_char(colon[1 + i]) && colon[1 + i] != '.' && colon[1 + i] != '-')
				return kiln_err_set(err, EINVAL, "reference '%.300s': invalid tag", s);
		memcpy(r.tag, colon + 1, tlen);
		end = colon;
	}
	name_len = (size_t) (end - s);
	if (name_len == 0)
		return kiln_err_set(err, EINVAL, "reference '%.300s': no repository name", s);
	if (name_len > REG_NAME_MAX)
		return kiln_err_set(err, EINVAL, "reference '%.40s...': repository name longer than %d",
				    s, REG_NAME_MAX);

	slash = memchr(s, '/', name_len);
	if (slash && looks_like_domain(s, (size_t) (slash - s))) {
		size_t dlen = (size_t) (slash - s);

		if (!domain_ok(s, dlen))
			return kiln_err_set(err, EINVAL, "reference '%.300s': invalid registry host", s);
		memcpy(r.domain, s, dlen);
		path = slash + 1;
	} else {
		strcpy(r.domain, "docker.io");
		path = s;
	}
	if (strcmp(r.domain, "index.docker.io") == 0)
		strcpy(r.domain, "docker.io");
	path_len = (size_t) (end - path);

	for (const char *p = path, *e; p <= end; p = e + 1) {
		e = memchr(p, '/', (size_t) (end - p));
		if (!e)
			e = end;
		if (!path_component_ok(p, (size_t) (e - p))) {
			bool upper = false;

			for (const char *q = path; q < end; q++)
				upper = upper || isupper((unsigned char) *q);
			return kiln_err_set(err, EINVAL, "reference '%.300s': %s", s,
					    upper ? "repository name must be lowercase" :
					    "invalid repository name");
		}
	}
	if (strcmp(r.domain, "docker.io") == 0 && !memchr(path, '/', path_len))
		snprintf(r.path, sizeof(r.path), "library/%.*s", (int) path_len, path);
	else
		memcpy(r.path, path, path_len);
	if (!r.tag[0] && !r.has_digest)
		strcpy(r.tag, "latest");
	*ret_ref = r;
	return 0;
}

char *
registry_ref_fmt(const struct registry_ref *r, char *out, size_t size)
{
	char ds[DIGEST_STR_SIZE];

	snprintf(out, size, "%s/%s%s%s%s%s", r->domain, r->path, r->tag[0] ? ":" : "", r->tag,
		 r->has_digest ? "@" : "", r->has_digest ? digest_fmt(&r->digest, ds) : "");
	return out;
}

/* ---- WWW-Authenticate ---- */

static bool
tchar(char c)
{
	return c && isascii((unsigned char) c) &&
	       (isalnum((unsigned char) c) || strchr("!#$%&'*+-.^_`|~", c));
}

static const char *
skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* A quoted-string or an unquoted value at *pp into out (size 0: skip). */
static int
challenge_value(const char **pp, char *out, size_t size)
{
	const char *p = *pp;
	size_t n = 0;

	if (*p == '"') {
		for (p++;; p++) {
			char c = *p;

			if (c == '\0')
				return -EINVAL;
			if (c == '"') {
				p++;
				break;
			}
			if (c == '\\') {
				c = *++p;
				if (c == '\0')
					return -EINVAL;
			}
			if (size) {
				if (n + 1 >= size)
					return -E2BIG;
				out[n++] = c;
			}
		}
	} else {
		/* Some servers leave URLs unquoted: take up to ',' or space. */
		for (; *p && *p != ',' && *p != ' ' && *p != '\t'; p++) {
			if (size) {
				if (n + 1 >= size)
					return -E2BIG;
				out[n++] = *p;
			}
		}
	}
	if (size)
		out[n] = '\0';
	*pp = p;
	return 0;
}

int
registry_challenge_parse(const char *value, struct registry_challenge *ret)
{
	struct registry_challenge found[2] = { 0 }, cur = { 0 };     /* [0] bearer, [1] basic */
	bool have[2] = { false, false }, in_challenge = false;
	const char *p = value;

	if (!value)
		return -EINVAL;
	for (;;) {
		const char *q;
		size_t n;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		for (n = 0; tchar(p[n]); n++)
			;
		if (n == 0)
			return -EINVAL;
		q = skip_ws(p + n);
		if (in_challenge && *q == '=') {
			char *dst = NULL;
			size_t size = 0;
			int r;

			q = skip_ws(q + 1);
			if (*q == '=' || *q == ',' || *q == '\0') {
				/* token68 ("abc=="): not an auth-param */
				while (*q && *q != ',')
					q++;
				p = q;
				continue;
			}
			if (n == 5 && strncasecmp(p, "realm", 5) == 0)
				dst = cur.realm, size = sizeof(cur.realm);
			else if (n == 7 && strncasecmp(p, "service", 7) == 0)
				dst = cur.service, size = sizeof(cur.service);
			else if (n == 5 && strncasecmp(p, "scope", 5) == 0)
				dst = cur.scope, size = sizeof(cur.scope);
			else if (n == 5 && strncasecmp(p, "error", 5) == 0)
				dst = cur.error, size = sizeof(cur.error);
			r = challenge_value(&q, dst, cur.scheme == REGISTRY_AUTH_NONE ? 0 : size);
			if (r < 0)
				return r;
			q = skip_ws(q);
			if (*q && *q != ',')
				return -EINVAL;
			p = q;
			continue;
		}
		/* A new challenge starts with its scheme. */
		if (in_challenge && cur.scheme != REGISTRY_AUTH_NONE &&
		    !have[cur.scheme == REGISTRY_AUTH_BASIC]) {
			found[cur.scheme == REGISTRY_AUTH_BASIC] = cur;
			have[cur.scheme == REGISTRY_AUTH_BASIC] = true;
		}
		memset(&cur, 0, sizeof(cur));
		if (n == 6 && strncasecmp(p, "bearer", 6) == 0)
			cur.scheme = REGISTRY_AUTH_BEARER;
		else if (n == 5 && strncasecmp(p, "basic", 5) == 0)
			cur.scheme = REGISTRY_AUTH_BASIC;
		in_challenge = true;
		p = q;
	}
	if (in_challenge && cur.scheme != REGISTRY_AUTH_NONE &&
	    !have[cur.scheme == REGISTRY_AUTH_BASIC]) {
		found[cur.scheme == REGISTRY_AUTH_BASIC] = cur;
		have[cur.scheme == REGISTRY_AUTH_BASIC] = true;
	}
	if (have[0] && found[0].realm[0]) {
		*ret = found[0];
		return 0;
	}
	if (have[1]) {
		*ret = found[1];
		return 0;
	}
	return -EINVAL;
}

/* ---- platforms ---- */

#define PLATFORM_VECTOR_MAX 24

static int
variant_number(const char *v)
{
	char *end;
	long n;

	if (v[0] != 'v' || !isdigit((unsigned char) v[1]))
		return -1;
	n = strtol(v + 1, &end, 10);
	return *end || n > 64 ? -1 : (int) n;
}

static void
vector_add(struct platform *out, size_t *n, const char *os, const char *arch, const char *variant)
{
	if (*n == PLATFORM_VECTOR_MAX)
		return;
	memset(&out[*n], 0, sizeof(out[*n]));
	snprintf(out[*n].os, sizeof(out[*n].os), "%s", os);
	snprintf(out[*n].arch, sizeof(out[*n].arch), "%s", arch);
	snprintf(out[*n].variant, sizeof(out[*n].variant), "%s", variant);
	(*n)++;
}

/* containerd's platformVector(): the platform itself, then what it can run
 * in order of preference. Entries are normalised as platform_parse would
 * (amd64/v1 and arm64/v8 have no variant). */
static size_t
platform_vector(const struct platform *p, struct platform *out)
{
	size_t n = 0;
	char v[16];
	int ver;

	vector_add(out, &n, p->os, p->arch, p->variant);
	if (strcmp(p->arch, "amd64") == 0) {
		ver = variant_number(p->variant);
		for (ver--; ver >= 1; ver--) {
			snprintf(v, sizeof(v), "v%d", ver);
			vector_add(out, &n, p->os, "amd64", ver == 1 ? "" : v);
		}
		vector_add(out, &n, p->os, "386", "");
	} else if (strcmp(p->arch, "arm") == 0) {
		ver = variant_number(p->variant);
		for (ver--; ver >= 5; ver--) {
			snprintf(v, sizeof(v), "v%d", ver);
			vector_add(out, &n, p->os, "arm", v);
		}
	} else if (strcmp(p->arch, "arm64") == 0) {
		ver = p->variant[0] ? variant_number(p->variant) : 8;
		for (; ver >= 5; ver--) {
			snprintf(v, sizeof(v), "v%d", ver);
			vector_add(out, &n, p->os, "arm", v);
		}
	}
	return n;
}

int
registry_platform_rank(const struct platform *want, const struct platform *have)
{
	struct platform vec[PLATFORM_VECTOR_MAX];
	size_t n = platform_vector(want, vec);

	for (size_t i = 0; i < n; i++)
		if (platform_equal(&vec[i], have))
			return (int) i;
	return -1;
}

int
registry_index_select(const struct oci_index *ix, const struct platform *want, size_t *ret_i)
{
	int best = -1;
	size_t best_i = 0;

	for (size_t i = 0; i < ix->n_manifests; i++) {
		int rank;

		if (!ix->manifests[i].has_platform)
			continue;
		rank = registry_platform_rank(want, &ix->manifests[i].platform);
		if (rank >= 0 && (best < 0 || rank < best)) {
			best = rank;
			best_i = i;
		}
	}
	if (best < 0)
		return -ENOENT;
	*ret_i = best_i;
	return 0;
}
