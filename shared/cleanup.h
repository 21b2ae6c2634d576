/* Scope-bound cleanup helpers (GCC/clang cleanup attribute), as in crun and
 * systemd. Each helper tolerates NULL / negative fds so that a variable can
 * be declared early and filled later. */
#ifndef KILN_CLEANUP_H
#define KILN_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>

#define _cleanup_(f)     __attribute__((cleanup(f)))
#define _cleanup_free_   _cleanup_(kiln_freep)
#define _cleanup_close_  _cleanup_(kiln_closep)
#define _cleanup_fclose_ _cleanup_(kiln_fclosep)
#define _cleanup_closedir_ _cleanup_(kiln_closedirp)
#define STEAL_PTR(p)     ({ __typeof__(p) t_ = (p); (p) = NULL; t_; })
#define STEAL_FD(fd)     ({ int t_ = (fd); (fd) = -1; t_; })

static inline void
kiln_freep(void *p)
{
	free(*(void **) p);
}

static inline void
kiln_closep(int *fd)
{
	if (*fd >= 0)
		(void) close(*fd);
}

static inline void
kiln_fclosep(FILE **f)
{
	if (*f)
		(void) fclose(*f);
}

static inline void
kiln_closedirp(DIR **d)
{
	if (*d)
		(void) closedir(*d);
}

#endif
