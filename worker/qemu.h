/* Registering Debian's qemu-user-static emulators in binfmt_misc, so that a
 * node can run steps for foreign platforms (kiln-worker --install-emulators). */
#ifndef KILN_QEMU_H
#define KILN_QEMU_H

struct kiln_err;

#define QEMU_BINFMT_DIR "/proc/sys/fs/binfmt_misc"

/* qemu_install_at(QEMU_BINFMT_DIR, err). */
int qemu_install(struct kiln_err *err);

/* Register the handlers kiln knows (aarch64, arm, riscv64, ppc64le, s390x)
 * with the F flag in the binfmt_misc instance at dir (borrowed), mounting
 * binfmt_misc there first when dir has no register file. A handler whose
 * interpreter (/usr/bin/qemu-NAME-static) is not installed, or that is
 * already registered, is skipped and logged (a warning when it lacks the F
 * flag: it is left as it is). Returns the number registered now (0 when
 * all were there) or a negative errno with err set. Needs root; not
 * thread-safe against other writers of the same register file. */
int qemu_install_at(const char *dir, struct kiln_err *err);

#endif
