/* OCI platforms ("os/arch[/variant]") parsed and normalised the way
 * containerd's platforms package does, so that "linux/aarch64" from a user,
 * "linux/arm64/v8" from an image index and uname's "aarch64" compare equal.
 * A parsed struct platform is always normalised: lowercase, known aliases
 * replaced, and every field a non-empty run of [a-z0-9_-] (variant may be
 * empty) that fits its buffer. This module matches platforms exactly; it
 * does not rank compatible ones (arm/v7 running arm/v6 images). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include "platform.h"

#define FIELD_SIZE sizeof(((struct platform *) 0)->os)

static const char *const known_os[] = {
	"aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "js",
	"linux", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos",
};

/* Go's GOARCH list plus the aliases normalise_arch() rewrites. */
static const char *const known_arch[] = {
	"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64",
	"mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
	"ppc64", "ppc64le", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64",
	"wasm", "aarch64", "x86_64", "x86-64", "i386", "i686", "armhf", "armel",
};

static bool
in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

/* Copy len bytes of s into a FIELD_SIZE buffer, lowercased, accepting only
 * the characters containerd's specifier regexp allows. */
static int
copy_field(char *out, const char *s, size_t len)
{
	if (len == 0 || len >= FIELD_SIZE)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) s[i];

		if (!isascii(c) || !(isalnum(c) || c == '_' || c == '-'))
			return -EINVAL;
		out[i] = (char) tolower(c);
	}
	out[len] = '\0';
	return 0;
}

static void
set(char *field, const char *value)
{
	/* Every literal we store is shorter than FIELD_SIZE. */
	snprintf(field, FIELD_SIZE, "%s", value);
}

static void
normalise(struct platform *p)
{
	char *arch = p->arch, *v = p->variant;

	if (strcmp(p->os, "macos") == 0)
		set(p->os, "darwin");

	if (strcmp(arch, "i386") == 0 || strcmp(arch, "i686") == 0) {
		set(arch, "386");
		v[0] = '\0';
	} else if (strcmp(arch, "x86_64") == 0 || strcmp(arch, "x86-64") == 0 ||
		   strcmp(arch, "amd64") == 0) {
		set(arch, "amd64");
		/* v1 is the baseline every amd64 machine has, i.e. no variant. */
		if (strcmp(v, "v1") == 0)
			v[0] = '\0';
	} else if (strcmp(arch, "aarch64") == 0 || strcmp(arch, "arm64") == 0) {
		set(arch, "arm64");
		if (strcmp(v, "8") == 0 || strcmp(v, "v8") == 0 || strcmp(v, "v8.0") == 0)
			v[0] = '\0';
	} else if (strcmp(arch, "armhf") == 0) {
		set(arch, "arm");
		set(v, "v7");
	} else if (strcmp(arch, "armel") == 0) {
		set(arch, "arm");
		set(v, "v6");
	} else if (strcmp(arch, "arm") == 0) {
		/* Bare "arm" means what Docker Hub's arm images mean: v7. */
		if (v[0] == '\0' || strcmp(v, "7") == 0)
			set(v, "v7");
		else if (strcmp(v, "5") == 0 || strcmp(v, "6") == 0 || strcmp(v, "8") == 0)
			set(v, (char[]){ 'v', v[0], '\0' });
	}
}

static int
parse_n(const char *s, size_t len, struct platform *ret_p)
{
	const char *part[4];
	size_t plen[4], n = 0;
	const char *p = s, *end = s + len;
	struct platform out = { 0 };

	/* Split on '/'; a fourth part is already an error. */
	for (;;) {
		const char *slash = memchr(p, '/', (size_t) (end - p));

		if (n == 3)
			return -EINVAL;
		part[n] = p;
		plen[n] = slash ? (size_t) (slash - p) : (size_t) (end - p);
		n++;
		if (!slash)
			break;
		p = slash + 1;
	}

	if (n == 1) {
		/* Containerd fills in the host for a lone OS; a build farm must
		 * not quietly pick an architecture, so only a lone arch (which
		 * implies linux) is accepted. */
		if (copy_field(out.arch, part[0], plen[0]) < 0 ||
		    !in_list(out.arch, known_arch, sizeof(known_arch) / sizeof(known_arch[0])))
			return -EINVAL;
		set(out.os, "linux");
	} else {
		if (copy_field(out.os, part[0], plen[0]) < 0)
			return -EINVAL;
		if (n == 2 && !in_list(out.os, known_os, sizeof(known_os) / sizeof(known_os[0])) &&
		    in_list(out.os, known_arch, sizeof(known_arch) / sizeof(known_arch[0]))) {
			/* "arm64/v8": an arch and variant without an os. Containerd
			 * would read it as os "arm64", which names no real system. */
			memcpy(out.arch, out.os, sizeof(out.arch));
			set(out.os, "linux");
			if (copy_field(out.variant, part[1], plen[1]) < 0)
				return -EINVAL;
		} else {
			if (copy_field(out.arch, part[1], plen[1]) < 0)
				return -EINVAL;
			if (n == 3 && copy_field(out.variant, part[2], plen[2]) < 0)
				return -EINVAL;
		}
	}
	normalise(&out);
	*ret_p = out;
	return 0;
}

int
platform_parse(const char *s, struct platform *ret_p)
{
	if (!s || !*s)
		return -EINVAL;
	return parse_n(s, strlen(s), ret_p);
}

char *
platform_fmt(const struct platform *p, char out[PLATFORM_STR_SIZE])
{
	if (p->variant[0])
		snprintf(out, PLATFORM_STR_SIZE, "%s/%s/%s", p->os, p->arch, p->variant);
	else
		snprintf(out, PLATFORM_STR_SIZE, "%s/%s", p->os, p->arch);
	return out;
}

bool
platform_equal(const struct platform *a, const struct platform *b)
{
	return strcmp(a->os, b->os) == 0 && strcmp(a->arch, b->arch) == 0 &&
	       strcmp(a->variant, b->variant) == 0;
}

/* uname machine names that are not already something parse_n() knows. */
static const struct {
	const char *machine;
	const char *platform;
} uname_map[] = {
	{ "armv5l", "linux/arm/v5" },	{ "armv5tel", "linux/arm/v5" },
	{ "armv6l", "linux/arm/v6" },	{ "armv7l", "linux/arm/v7" },
	{ "armv8l", "linux/arm/v8" },	{ "i486", "linux/386" },
	{ "i586", "linux/386" },	{ "loongarch64", "linux/loong64" },
};

static const char *
compiled_platform(void)
{
#if defined(__x86_64__)
	return "linux/amd64";
#elif defined(__aarch64__)
	return "linux/arm64";
#elif defined(__arm__)
	return "linux/arm/v7";
#elif defined(__i386__)
	return "linux/386";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return "linux/ppc64le";
#elif defined(__s390x__)
	return "linux/s390x";
#elif defined(__riscv) && __riscv_xlen == 64
	return "linux/riscv64";
#else
	return "linux/unknown";
#endif
}

void
platform_host(struct platform *ret_p)
{
	struct utsname u;
	char buf[PLATFORM_STR_SIZE + sizeof(u.machine)];

	if (uname(&u) == 0) {
		for (size_t i = 0; i < sizeof(uname_map) / sizeof(uname_map[0]); i++)
			if (strcmp(u.machine, uname_map[i].machine) == 0 &&
			    platform_parse(uname_map[i].platform, ret_p) == 0)
				return;
		snprintf(buf, sizeof(buf), "linux/%s", u.machine);
		if (platform_parse(buf, ret_p) == 0)
			return;
	}
	/* uname cannot really fail; the compile-time answer is right unless
	 * we run under a personality or emulator, which uname would report. */
	if (platform_parse(compiled_platform(), ret_p) < 0) {
		memset(ret_p, 0, sizeof(*ret_p));
		set(ret_p->os, "linux");
	}
}

int
platform_parse_list(const char *s, struct platform *out, size_t max)
{
	size_t count = 0;

	if (!s || !*s)
		return -EINVAL;
	for (;;) {
		const char *comma = strchr(s, ',');
		const char *end = comma ? comma : s + strlen(s);
		const char *b = s, *e = end;
		struct platform p;

		/* "linux/amd64, linux/arm64" as typed on a command line. */
		while (b < e && isspace((unsigned char) *b))
			b++;
		while (e > b && isspace((unsigned char) e[-1]))
			e--;
		if (b == e || parse_n(b, (size_t) (e - b), &p) < 0)
			return -EINVAL;
		if (count == max)
			return -E2BIG;
		out[count++] = p;
		if (!comma)
			break;
		s = comma + 1;
	}
	return (int) count;
}

/* binfmt_misc handler names as registered by qemu-user-static and
 * tonistiigi/binfmt, without the "qemu-" prefix. */
static const struct {
	const char *qemu;
	const char *platform;
} qemu_map[] = {
	{ "aarch64", "linux/arm64" },	 { "arm", "linux/arm/v7" },
	{ "x86_64", "linux/amd64" },	 { "i386", "linux/386" },
	{ "riscv64", "linux/riscv64" },	 { "ppc64le", "linux/ppc64le" },
	{ "ppc64", "linux/ppc64" },	 { "s390x", "linux/s390x" },
	{ "mips64el", "linux/mips64le" }, { "mips64", "linux/mips64" },
	{ "mipsel", "linux/mipsle" },	 { "mips", "linux/mips" },
	{ "loongarch64", "linux/loong64" },
};

int
platform_from_qemu(const char *handler, struct platform *ret_p)
{
	if (!handler || strncmp(handler, "qemu-", 5) != 0)
		return -ENOENT;
	for (size_t i = 0; i < sizeof(qemu_map) / sizeof(qemu_map[0]); i++)
		if (strcmp(handler + 5, qemu_map[i].qemu) == 0)
			return platform_parse(qemu_map[i].platform, ret_p);
	return -ENOENT;
}
