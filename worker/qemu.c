/* qemu: registers Debian's qemu-user-static interpreters in binfmt_misc
 * with the F ("fix binary") flag, which makes the kernel open the
 * interpreter at registration time: a step that runs an arm64 binary
 * inside an arm64 rootfs then needs no /usr/bin/qemu-aarch64-static in
 * that rootfs. The magic and mask values are those of Debian's
 * /usr/share/binfmts/qemu-* files (qemu-user-static), so a handler kiln
 * registers and one Debian registered match the same binaries under the
 * same name, and each is registered once whoever came first.
 *
 * Not here: replacing an existing handler (one without F is reported and
 * kept), the C/O/P flags (Debian's P wrappers live in /usr/libexec, and the
 * plain static interpreters do not take the extra argv[0]), and binfmt_misc
 * instances of user namespaces. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "qemu.h"
#include "util.h"

struct handler {
	const char *name;       /* qemu-NAME in binfmt_misc, /usr/bin/qemu-NAME-static */
	const char *magic;      /* as the register file takes it: \xNN escapes */
	const char *mask;
};

#define ELF_HDR "\\x7f\\x45\\x4c\\x46"
static const struct handler handlers[] = {
	{ "aarch64",
	  ELF_HDR "\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00",
	  "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff"
	  "\\xfe\\xff\\xff\\xff" },
	{ "arm",
	  ELF_HDR "\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x28\\x00",
	  "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff"
	  "\\xfe\\xff\\xff\\xff" },
	{ "riscv64",
	  ELF_HDR "\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xf3\\x00",
	  "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff"
	  "\\xfe\\xff\\xff\\xff" },
	{ "ppc64le",
	  ELF_HDR "\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x15\\x00",
	  "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff"
	  "\\xfe\\xff\\xff\\x00" },
	{ "s390x",
	  ELF_HDR "\\x02\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x16",
	  "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff"
	  "\\xff\\xfe\\xff\\xff" },
};

/* The "flags: ..." value of a registered handler's status file. */
static bool
status_has_flag(const char *body, char flag)
{
	const char *f = strstr(body, "\nflags:");

	if (!f)
		return false;
	f += strlen("\nflags:");
	for (; *f && *f != '\n'; f++)
		if (*f == flag)
			return true;
	return false;
}

static int
register_one(const char *dir, const char *line, struct kiln_err *err)
{
	_cleanup_free_ char *path = kiln_strdupf("%s/register", dir);
	_cleanup_close_ int fd = -1;
	struct stat st;
	size_t len = strlen(line);

	if (!path)
		return kiln_err_set(err, ENOMEM, "out of memory");
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_errno(err, errno, "open '%s'", path);
	/* A plain file stands in for register in tests: keep every line. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lseek(fd, 0, SEEK_END) < 0)
		return kiln_err_errno(err, errno, "seek '%s'", path);
	/* The kernel takes one registration per write(2), whole. */
	if (write(fd, line, len) != (ssize_t) len)
		return kiln_err_errno(err, errno, "write '%s'", path);
	return 0;
}

int
qemu_install_at(const char *dir, struct kiln_err *err)
{
	_cleanup_free_ char *reg = kiln_strdupf("%s/register", dir);
	int n = 0, r;

	if (!reg)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (access(reg, F_OK) < 0) {
		if (mount("binfmt_misc", dir, "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
			return kiln_err_errno(err, errno, "mount binfmt_misc on '%s'", dir);
		log_info("mounted binfmt_misc on '%s'", dir);
	}
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
		const struct handler *h = &handlers[i];
		_cleanup_free_ char *interp = kiln_strdupf("/usr/bin/qemu-%s-static", h->name);
		_cleanup_free_ char *status = kiln_strdupf("%s/qemu-%s", dir, h->name);
		_cleanup_free_ char *body = NULL;
		_cleanup_free_ char *line = NULL;
		size_t len;

		if (!interp || !status)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = kiln_read_file_at(AT_FDCWD, status, 65536, &body, &len);
		if (r == 0) {
			if (status_has_flag(body, 'F'))
				log_info("emulator 'qemu-%s' is already registered", h->name);
			else
				log_warn("emulator 'qemu-%s' is registered without the F flag, "
					 "so it cannot run in a build's root; leaving it, ignoring",
					 h->name);
			continue;
		}
		if (access(interp, X_OK) < 0) {
			log_warn("emulator '%s' is not installed (package qemu-user-static), ignoring",
				 interp);
			continue;
		}
		line = kiln_strdupf(":qemu-%s:M:0:%s:%s:%s:F", h->name, h->magic, h->mask, interp);
		if (!line)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = register_one(dir, line, err);
		if (r < 0)
			return kiln_err_wrap(err, "register emulator 'qemu-%s'", h->name);
		log_info("registered emulator 'qemu-%s' (%s, flags F)", h->name, interp);
		n++;
	}
	return n;
}

int
qemu_install(struct kiln_err *err)
{
	return qemu_install_at(QEMU_BINFMT_DIR, err);
}
