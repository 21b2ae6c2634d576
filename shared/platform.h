/* Platform strings "os/arch[/variant]" normalised as containerd does:
 * aarch64 -> arm64, arm64/v8 == arm64, bare arm -> arm/v7, amd64/v1 -> amd64,
 * x86_64/x86-64 -> amd64, i386/i686 -> 386, armhf -> arm/v7, armel -> arm/v6.
 * An os without arch ("linux") is refused; a bare arch ("arm64") gets os linux. */
#ifndef KILN_PLATFORM_H
#define KILN_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>

struct platform {
	char os[16];
	char arch[16];
	char variant[16];       /* "" when none */
};

#define PLATFORM_STR_SIZE 50

/* -EINVAL on malformed or empty input. */
int platform_parse(const char *s, struct platform *ret_p);
/* "os/arch[/variant]" into out; returns out. */
char *platform_fmt(const struct platform *p, char out[PLATFORM_STR_SIZE]);
bool platform_equal(const struct platform *a, const struct platform *b);
/* The platform this process runs on (uname), normalised. */
void platform_host(struct platform *ret_p);
/* Parse a comma-separated list into out (at most max); returns the count or
 * -EINVAL / -E2BIG. */
int platform_parse_list(const char *s, struct platform *out, size_t max);
/* Map a binfmt_misc handler name ("qemu-aarch64") to a platform; -ENOENT if
 * it is not an emulator we know. */
int platform_from_qemu(const char *handler, struct platform *ret_p);

#endif
