/* A worker confined to the CPUs and memory its node is given, so that
 * several nodes on one machine behave like several smaller machines.
 *
 * CPUs: sched_setaffinity on every thread of the process at start-up;
 * threads and children made later (ZeroMQ's, job threads, compression,
 * kiln-run and the step's processes) inherit the mask. Affinity alone can
 * be widened by any process that asks, so when cgroup v2 offers the cpuset
 * controller the worker's cgroup sets cpuset.cpus as well.
 *
 * Memory: only a cgroup can bound a process tree, so a memory limit
 * requires cgroup v2 (CONFINE_CGROUP_ROOT must be a cgroup2 mount with the
 * memory controller, and we must be allowed to create cgroups there). The
 * worker makes ROOT/kiln/NAME-PID, enables the controllers it needs down to
 * it, writes memory.max and cpuset.cpus, and moves itself in (all threads
 * move with the process). On a normal exit it moves back to the cgroup it
 * came from and removes its own; a worker that was killed leaves an empty
 * directory, which the next confined worker removes (NAME-PID with a dead
 * PID). cgroup v1 hierarchies are never touched: where they are all there
 * is, a memory limit fails with a message saying so.
 *
 * Invariants: a limit that was asked for is either enforced or the worker
 * does not start; nothing outside ROOT/kiln is created or removed; the
 * controllers enabled in ROOT's and ROOT/kiln's cgroup.subtree_control are
 * only those a limit needs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "resources.h"
#include "util.h"
#include "confine.h"

#define CGROUP_FILE_MAX 4096
#define PARENT          CONFINE_CGROUP_ROOT "/" CONFINE_CGROUP_PARENT

struct confine {
	pid_t owner;
	char dir[PATH_MAX];             /* ROOT/kiln/NAME-PID */
	char origin[PATH_MAX];          /* ROOT + the path in /proc/self/cgroup */
};

/* ---- CPUs ---------------------------------------------------------- */

static int
set_affinity_all_threads(const cpu_set_t *cpus, struct kiln_err *err)
{
	_cleanup_closedir_ DIR *d = opendir("/proc/self/task");
	struct dirent *de;

	/* Without /proc, at least this thread (and all it starts later). */
	if (!d) {
		if (sched_setaffinity(0, sizeof(*cpus), cpus) < 0)
			return kiln_err_errno(err, errno, "sched_setaffinity");
		return 0;
	}
	while ((de = readdir(d))) {
		char *end;
		long tid = strtol(de->d_name, &end, 10);

		if (de->d_name[0] == '.' || *end || tid <= 0)
			continue;
		/* A thread that ended meanwhile is not a failure. */
		if (sched_setaffinity((pid_t) tid, sizeof(*cpus), cpus) < 0 && errno != ESRCH)
			return kiln_err_errno(err, errno, "sched_setaffinity for thread %ld", tid);
	}
	return 0;
}

static int
confine_cpus(const struct confine_opts *o, struct kiln_err *err)
{
	char want[RESOURCES_CPUS_STR_SIZE], have[RESOURCES_CPUS_STR_SIZE];
	cpu_set_t avail, extra;

	if (sched_getaffinity(0, sizeof(avail), &avail) < 0)
		return kiln_err_errno(err, errno, "sched_getaffinity");
	CPU_AND(&extra, o->cpus, &avail);
	if (!CPU_EQUAL(&extra, o->cpus)) {
		(void) resources_fmt_cpus(o->cpus, want, sizeof(want));
		(void) resources_fmt_cpus(&avail, have, sizeof(have));
		return kiln_err_set(err, EINVAL,
				    "requested CPUs are not available - requested %s, available: %s",
				    o->cpus_arg ? o->cpus_arg : want, have);
	}
	return set_affinity_all_threads(o->cpus, err);
}

unsigned
confine_cpu_count(void)
{
	cpu_set_t s;
	int n;

	if (sched_getaffinity(0, sizeof(s), &s) < 0)
		return 1;
	n = CPU_COUNT(&s);
	return n > 0 ? (unsigned) n : 1;
}

/* ---- cgroup v2 ----------------------------------------------------- */

static int
write_str(const char *dir, const char *file, const char *value)
{
	_cleanup_close_ int fd = -1;
	char path[PATH_MAX];
	int n;

	n = snprintf(path, sizeof(path), "%s/%s", dir, file);
	if (n < 0 || (size_t) n >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* cgroupfs takes a value in one write; a short one is an error. */
	n = (int) write(fd, value, strlen(value));
	if (n < 0)
		return -errno;
	return (size_t) n == strlen(value) ? 0 : -EIO;
}

/* true when the space-separated list in dir/file names word. */
static bool
file_has_word(const char *dir, const char *file, const char *word, char *list, size_t size)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_free_ char *path = kiln_strdupf("%s/%s", dir, file);
	char *tok, *save = NULL;
	bool found = false;

	list[0] = '\0';
	if (!path || kiln_read_file_at(AT_FDCWD, path, CGROUP_FILE_MAX, &text, NULL) < 0)
		return false;
	text[strcspn(text, "\n")] = '\0';
	snprintf(list, size, "%s", text);
	for (tok = strtok_r(text, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		found = found || strcmp(tok, word) == 0;
	return found;
}

/* Make controller ctl available to the children of dir. */
static int
enable_controller(const char *dir, const char *ctl)
{
	char list[CGROUP_FILE_MAX], cmd[32];

	if (file_has_word(dir, "cgroup.subtree_control", ctl, list, sizeof(list)))
		return 0;
	snprintf(cmd, sizeof(cmd), "+%s", ctl);
	return write_str(dir, "cgroup.subtree_control", cmd);
}

/* This process's cgroup v2 path ("0::/a/b" in /proc/self/cgroup). */
static int
own_cgroup(char *buf, size_t size)
{
	_cleanup_free_ char *text = NULL;
	char *line, *save = NULL;
	int r;

	r = kiln_read_file_at(AT_FDCWD, "/proc/self/cgroup", CGROUP_FILE_MAX, &text, NULL);
	if (r < 0)
		return r;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!kiln_startswith(line, "0::"))
			continue;
		r = snprintf(buf, size, "%s", line + 3);
		return r < 0 || (size_t) r >= size ? -ENAMETOOLONG : 0;
	}
	return -ENOENT;
}

/* Remove ROOT/kiln/NAME-PID directories of workers that are gone. rmdir
 * refuses a cgroup that still has processes or children, so this can
 * never take a live one. */
static void
sweep_stale(const char *parent)
{
	_cleanup_closedir_ DIR *d = opendir(parent);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		const char *dash = strrchr(de->d_name, '-');
		char *end;
		long pid;

		if (de->d_type != DT_DIR || !dash)
			continue;
		pid = strtol(dash + 1, &end, 10);
		if (*end || pid <= 0 || pid > INT_MAX || dash[1] == '\0')
			continue;
		if (kill((pid_t) pid, 0) == 0 || errno != ESRCH)
			continue;
		if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) == 0)
			log_info("removed the cgroup of a worker that is gone: %s/%s", parent, de->d_name);
	}
}

/* Why cgroup v2 cannot carry a memory limit here, or "" when it can. */
static void
cgroup_unusable(bool need_memory, char *why, size_t size)
{
	char list[CGROUP_FILE_MAX];
	struct statfs sf;

	why[0] = '\0';
	if (statfs(CONFINE_CGROUP_ROOT, &sf) < 0) {
		snprintf(why, size, "%s is not mounted (%s)", CONFINE_CGROUP_ROOT, strerror(errno));
		return;
	}
	if (sf.f_type != CGROUP2_SUPER_MAGIC) {
		snprintf(why, size, "%s is not a cgroup v2 mount (this host uses cgroup v1%s)",
			 CONFINE_CGROUP_ROOT, sf.f_type == TMPFS_MAGIC ? " or a hybrid layout" : "");
		return;
	}
	if (need_memory && !file_has_word(CONFINE_CGROUP_ROOT, "cgroup.controllers", "memory", list,
					  sizeof(list)))
		snprintf(why, size, "the memory controller is not available in %s (cgroup.controllers: %s)",
			 CONFINE_CGROUP_ROOT, list[0] ? list : "none");
}

/* Make controller ctl reach the children of ROOT/kiln, creating it. */
static int
enable_down(const char *ctl, struct kiln_err *err)
{
	int r;

	r = enable_controller(CONFINE_CGROUP_ROOT, ctl);
	if (r < 0)
		return kiln_err_errno(err, -r, "enable the %s controller in %s/cgroup.subtree_control%s",
				      ctl, CONFINE_CGROUP_ROOT,
				      r == -EBUSY ? " (a cgroup that holds processes cannot pass controllers down: is this a container's cgroup namespace?)" : "");
	if (mkdir(PARENT, 0755) < 0 && errno != EEXIST)
		return kiln_err_errno(err, errno, "create cgroup '%s'", PARENT);
	r = enable_controller(PARENT, ctl);
	if (r < 0)
		return kiln_err_errno(err, -r, "enable the %s controller in %s/cgroup.subtree_control",
				      ctl, PARENT);
	return 0;
}

/* Make c->dir with the limits of o and move this process into it. A
 * cpuset controller that cannot be had is a warning (affinity holds the
 * CPUs already); then, without memory, no cgroup is made and c->dir
 * stays empty. */
static int
make_cgroup(const struct confine_opts *o, bool use_cpuset, struct confine *c,
	    struct kiln_err *err)
{
	char name[80], origin[PATH_MAX - sizeof(CONFINE_CGROUP_ROOT)], value[RESOURCES_CPUS_STR_SIZE];
	struct kiln_err e = { 0 };
	size_t len = 0;
	int r;

	r = own_cgroup(origin, sizeof(origin));
	if (r < 0)
		return kiln_err_errno(err, -r, "read this process's cgroup v2 path in /proc/self/cgroup");
	snprintf(c->origin, sizeof(c->origin), "%s%s", CONFINE_CGROUP_ROOT,
		 strcmp(origin, "/") == 0 ? "" : origin);
	if (o->memory) {
		r = enable_down("memory", err);
		if (r < 0)
			return r;
	}
	if (use_cpuset && enable_down("cpuset", &e) < 0) {
		log_warn("cpuset-cpus is enforced by CPU affinity only, which a step could widen: %s, ignoring",
			 e.msg);
		use_cpuset = false;
	}
	if (!o->memory && !use_cpuset)
		return 0;
	sweep_stale(PARENT);

	/* Node names from the command line may hold anything; cgroup names
	 * must not hold '/' and are easier to read without oddities. */
	for (const char *p = o->name ? o->name : "worker"; *p && len < 63; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || (*p == '-' && len);

		name[len++] = ok ? *p : '_';
	}
	name[len] = '\0';
	r = snprintf(c->dir, sizeof(c->dir), "%s/%s-%d", PARENT, name, (int) getpid());
	if (r < 0 || (size_t) r >= sizeof(c->dir))
		return kiln_err_set(err, ENAMETOOLONG, "cgroup path too long");
	if (mkdir(c->dir, 0755) < 0) {
		r = kiln_err_errno(err, errno, "create cgroup '%s'", c->dir);
		c->dir[0] = '\0';
		return r;
	}
	if (use_cpuset) {
		(void) resources_fmt_cpus(o->cpus, value, sizeof(value));
		r = write_str(c->dir, "cpuset.cpus", value);
		if (r < 0) {
			log_warn("cannot set %s/cpuset.cpus to %s (%s): cpuset-cpus is enforced by CPU affinity only, ignoring",
				 c->dir, value, strerror(-r));
			if (!o->memory) {
				(void) rmdir(c->dir);
				c->dir[0] = '\0';
				return 0;
			}
		}
	}
	if (o->memory) {
		snprintf(value, sizeof(value), "%llu", (unsigned long long) o->memory);
		r = write_str(c->dir, "memory.max", value);
		if (r < 0) {
			kiln_err_errno(err, -r, "set %s/memory.max to %s", c->dir, value);
			goto out_rmdir;
		}
	}
	snprintf(value, sizeof(value), "%d", (int) getpid());
	r = write_str(c->dir, "cgroup.procs", value);
	if (r < 0) {
		kiln_err_errno(err, -r, "move the worker into cgroup '%s'", c->dir);
		goto out_rmdir;
	}
	return 0;

out_rmdir:
	(void) rmdir(c->dir);
	c->dir[0] = '\0';
	return -err->code;
}

int
confine_apply(const struct confine_opts *o, struct confine **ret, struct kiln_err *err)
{
	_cleanup_free_ struct confine *c = NULL;
	char why[CGROUP_FILE_MAX + 128], list[CGROUP_FILE_MAX];
	bool use_cpuset = false;
	int r;

	*ret = NULL;
	if (o->cpus) {
		r = confine_cpus(o, err);
		if (r < 0)
			return r;
	}
	if (!o->cpus && !o->memory)
		return 0;
	cgroup_unusable(o->memory > 0, why, sizeof(why));
	if (why[0] && o->memory)
		return kiln_err_set(err, ENOTSUP,
				    "memory=%s cannot be enforced: it needs cgroup v2 with the memory controller, and %s",
				    o->memory_arg ? o->memory_arg : "", why);
	if (o->cpus) {
		use_cpuset = !why[0] && file_has_word(CONFINE_CGROUP_ROOT, "cgroup.controllers",
						      "cpuset", list, sizeof(list));
		if (!use_cpuset)
			log_warn("cpuset-cpus is enforced by CPU affinity only, which a step could widen: %s, ignoring",
				 why[0] ? why : "the cpuset controller is not available in " CONFINE_CGROUP_ROOT);
	}
	if (!o->memory && !use_cpuset)
		return 0;
	c = calloc(1, sizeof(*c));
	if (!c)
		return kiln_err_set(err, ENOMEM, "out of memory");
	c->owner = getpid();
	r = make_cgroup(o, use_cpuset, c, err);
	if (r < 0) {
		/* Without memory this was only a second fence around CPUs
		 * that affinity already keeps. */
		if (o->memory)
			return kiln_err_wrap(err, "memory=%s", o->memory_arg ? o->memory_arg : "");
		log_warn("%s: cpuset-cpus is enforced by CPU affinity only, ignoring", err->msg);
		kiln_err_clear(err);
		return 0;
	}
	if (!c->dir[0])
		return 0;
	log_info("confined to cgroup %s", c->dir);
	*ret = STEAL_PTR(c);
	return 0;
}

void
confine_free(struct confine *c)
{
	char pid[24];
	int r;

	if (!c)
		return;
	if (c->owner != getpid() || !c->dir[0]) {
		free(c);
		return;
	}
	/* A cgroup with a process in it cannot go: leave it first. */
	snprintf(pid, sizeof(pid), "%d", (int) getpid());
	r = write_str(c->origin, "cgroup.procs", pid);
	if (r < 0)
		r = write_str(CONFINE_CGROUP_ROOT, "cgroup.procs", pid);
	if (r < 0)
		log_warn("cannot leave cgroup %s: %s, ignoring", c->dir, strerror(-r));
	else if (rmdir(c->dir) < 0)
		log_warn("cannot remove cgroup %s: %s, ignoring", c->dir, strerror(errno));
	free(c);
}
