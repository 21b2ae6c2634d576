/* Confining a worker to the CPUs and memory of the machine its node stands
 * for (--cpuset-cpus, --memory): CPU affinity for the whole process, and
 * a cgroup v2 of its own with cpuset.cpus and memory.max. Everything the
 * worker starts afterwards (job threads, kiln-run, a step's processes)
 * inherits both. */
#ifndef KILN_WORKER_CONFINE_H
#define KILN_WORKER_CONFINE_H

#include <sched.h>
#include <stdint.h>

struct kiln_err;
struct confine;                 /* opaque */

/* Where the cgroup v2 hierarchy must be mounted, and the directory kiln
 * owns in it: each confined worker gets CONFINE_CGROUP_ROOT/kiln/NAME-PID. */
#define CONFINE_CGROUP_ROOT   "/sys/fs/cgroup"
#define CONFINE_CGROUP_PARENT "kiln"

struct confine_opts {
	const char *name;               /* node name, part of the cgroup's name */
	const cpu_set_t *cpus;          /* NULL: every CPU this process may use */
	const char *cpus_arg;           /* cpus as the user wrote it, for messages */
	uint64_t memory;                /* bytes; 0: no limit */
	const char *memory_arg;         /* memory as the user wrote it */
};

/* Confine this process. Call it before the process starts threads that
 * must stay confined: affinity is applied to every thread that exists now,
 * and later ones inherit it.
 *
 * CPUs must all be available to the process now ("requested CPUs are not
 * available - requested 0-3, available: 0-1", as docker says); they are
 * enforced by affinity and, when cgroup v2 with the cpuset controller is
 * there, by cpuset.cpus too (else a warning is logged: a step could widen
 * its own affinity). A memory limit needs cgroup v2 with the memory
 * controller and the right to create cgroups; without them this fails with
 * a message that says what is missing, never leaving the limit unenforced.
 *
 * On success *ret is set (NULL when no cgroup was made); the caller frees
 * it with confine_free() before exiting. */
int confine_apply(const struct confine_opts *o, struct confine **ret, struct kiln_err *err);

/* Move this process back to the cgroup it came from and remove the one
 * confine_apply() made. Only acts in the process that applied it. NULL is
 * a no-op. */
void confine_free(struct confine *c);

/* How many CPUs this process may run on now (at least 1). */
unsigned confine_cpu_count(void);

#endif
