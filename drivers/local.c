/* The local driver: the builder's coordinator and one worker per node run
 * as processes on this machine, started on demand by whichever kiln
 * command needs them first and reached over ipc:// sockets. This is also
 * what the embedded default builder is: the same coordinator and worker as
 * a farm, only closer.
 *
 * Layout of the state directory STATE = $KILN_CONFIG/state/NAME (0700,
 * which is also what keeps other users off the ipc:// socket):
 *   coordinator.sock  coordinator.pid  coordinator.log  coordinator/
 *   nodes/NODE/{worker.pid, worker.log, ...}
 *   endpoint          the coordinator's endpoint, for humans and scripts
 *   lock              held while starting, so two commands never start
 *                     two coordinators on one socket
 * When STATE/coordinator.sock would not fit sun_path, the socket lives in
 * /tmp/kiln-UID-HASH/ (0700, owned by us), HASH naming STATE.
 *
 * Invariants: a process is only ever signalled when its pidfile names it
 * and /proc/PID/cmdline shows our binary with that very pidfile, so a
 * stale pidfile whose PID was reused can never make us kill a stranger.
 * Children are spawned with fork+setsid+exec, never through a shell, with
 * their output in the log next to their pidfile. The daemons write their
 * own pidfiles; we only read and, when stale, remove them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "util.h"
#include "../cli/config.h"
#include "../cli/conn.h"
#include "local.h"

#define STOP_TIMEOUT_MS   10000
#define PIDFILE_MAX       64
#define CMDLINE_MAX       (64u << 10)
#define MAX_ARGS          24

struct local_paths {
	char state[PATH_MAX];
	char sock_dir[64];              /* "" when the socket lives in state */
	char endpoint[sizeof(((struct sockaddr_un *) 0)->sun_path) + 8];
	char coord_state[PATH_MAX];
	char coord_pid[PATH_MAX];
	char coord_log[PATH_MAX];
};

struct node_paths {
	char state[PATH_MAX];
	char pid[PATH_MAX];
	char log[PATH_MAX];
};

/* A process this command spawned: watched while waiting, so that a daemon
 * dying at start-up is reported at once with its log, not as a timeout. */
struct child {
	pid_t pid;
	const char *what;               /* "coordinator" or a node name, borrowed */
	const char *log;                /* the coordinator's borrowed, a worker's owned */
	bool is_worker;
};

static int
fmt_path(char *buf, size_t size, struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
fmt_path(char *buf, size_t size, struct kiln_err *err, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t) n >= size)
		return kiln_err_set(err, ENAMETOOLONG, "path too long: %.64s...", buf);
	return 0;
}

static int
local_paths(const struct builder *b, struct local_paths *p, struct kiln_err *err)
{
	const size_t sun_max = sizeof(((struct sockaddr_un *) 0)->sun_path) - 1;
	char sock[PATH_MAX];
	int r;

	memset(p, 0, sizeof(*p));
	r = config_state_dir(b->name, p->state, sizeof(p->state), err);
	if (r < 0)
		return r;
	if (fmt_path(p->coord_state, sizeof(p->coord_state), err, "%s/coordinator", p->state) < 0 ||
	    fmt_path(p->coord_pid, sizeof(p->coord_pid), err, "%s/coordinator.pid", p->state) < 0 ||
	    fmt_path(p->coord_log, sizeof(p->coord_log), err, "%s/coordinator.log", p->state) < 0 ||
	    fmt_path(sock, sizeof(sock), err, "%s/coordinator.sock", p->state) < 0)
		return -ENAMETOOLONG;
	if (strlen(sock) > sun_max) {
		/* A deep $KILN_CONFIG must not make the builder unusable: the
		 * same STATE always maps to the same short directory. */
		struct digest d;
		char hex[65];

		digest_buf(p->state, strlen(p->state), &d);
		digest_hex(&d, hex);
		hex[16] = '\0';
		if (fmt_path(p->sock_dir, sizeof(p->sock_dir), err, "/tmp/kiln-%u-%s",
			     (unsigned) getuid(), hex) < 0 ||
		    fmt_path(sock, sizeof(sock), err, "%s/coordinator.sock", p->sock_dir) < 0)
			return -ENAMETOOLONG;
	}
	return fmt_path(p->endpoint, sizeof(p->endpoint), err, "ipc://%s", sock);
}

static int
node_paths(const struct local_paths *p, const char *node, struct node_paths *n,
	   struct kiln_err *err)
{
	if (fmt_path(n->state, sizeof(n->state), err, "%s/nodes/%s", p->state, node) < 0 ||
	    fmt_path(n->pid, sizeof(n->pid), err, "%s/worker.pid", n->state) < 0 ||
	    fmt_path(n->log, sizeof(n->log), err, "%s/worker.log", n->state) < 0)
		return -ENAMETOOLONG;
	return 0;
}

/* ---- pidfiles ------------------------------------------------------- */

/* true when pid runs exe_name (basename of argv[0]) with --pidfile
 * pidfile. A zombie has an empty cmdline and so is not ours any more. */
static bool
pid_is_ours(pid_t pid, const char *exe_name, const char *pidfile)
{
	_cleanup_free_ char *cmd = NULL;
	char path[64];
	const char *arg, *end, *base;
	bool exe_ok = false;
	size_t len;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
	if (kiln_read_file_at(AT_FDCWD, path, CMDLINE_MAX, &cmd, &len) < 0 || len == 0)
		return false;
	end = cmd + len;
	base = strrchr(cmd, '/');
	base = base ? base + 1 : cmd;
	exe_ok = strcmp(base, exe_name) == 0;
	if (!exe_ok)
		return false;
	for (arg = cmd; arg < end; arg += strlen(arg) + 1) {
		const char *next = arg + strlen(arg) + 1;

		if (strcmp(arg, "--pidfile") == 0 && next < end && strcmp(next, pidfile) == 0)
			return true;
		if (kiln_startswith(arg, "--pidfile=") && strcmp(arg + 10, pidfile) == 0)
			return true;
	}
	return false;
}

/* The live PID of our daemon named by pidfile, or 0. */
static pid_t
pidfile_live(const char *pidfile, const char *exe_name)
{
	_cleanup_free_ char *text = NULL;
	char *end;
	long v;

	if (kiln_read_file_at(AT_FDCWD, pidfile, PIDFILE_MAX, &text, NULL) < 0)
		return 0;
	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || v <= 1 || v > INT_MAX || (*end && *end != '\n'))
		return 0;
	if (kill((pid_t) v, 0) < 0 && errno != EPERM)
		return 0;
	return pid_is_ours((pid_t) v, exe_name, pidfile) ? (pid_t) v : 0;
}

/* ---- spawning ------------------------------------------------------- */

/* Find name on $PATH when kiln_sibling_exe() found nothing next to us.
 * Done before fork: the child must only exec. */
static char *
resolve_exe(const char *name)
{
	_cleanup_free_ char *sib = kiln_sibling_exe(name);
	_cleanup_free_ char *dirs = NULL;
	char *save = NULL, *dir;

	if (!sib)
		return NULL;
	if (strchr(sib, '/'))
		return STEAL_PTR(sib);
	dirs = strdup(getenv("PATH") ? getenv("PATH") : "/usr/local/bin:/usr/bin:/bin");
	if (!dirs)
		return NULL;
	for (dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char *p = kiln_strdupf("%s/%s", dir, name);

		if (p && access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

static int
spawn(const char *exe, char *const argv[], const char *log_path, pid_t *ret_pid,
      struct kiln_err *err)
{
	_cleanup_close_ int logfd = -1, nullfd = -1, rd = -1, wr = -1;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	int pipefd[2], child_errno = 0;
	char stamp[64];
	time_t now = time(NULL);
	struct tm tm;
	ssize_t n;
	pid_t pid;

	logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
	if (logfd < 0)
		return kiln_err_errno(err, errno, "open '%s'", log_path);
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nullfd < 0)
		return kiln_err_errno(err, errno, "open /dev/null");
	/* The child reports a failed exec through this pipe; a successful
	 * exec closes it (O_CLOEXEC) and the parent reads EOF. */
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return kiln_err_errno(err, errno, "pipe");
	rd = pipefd[0];
	wr = pipefd[1];
	if (localtime_r(&now, &tm) && strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S%z", &tm))
		dprintf(logfd, "--- kiln: starting %s at %s\n", exe, stamp);

	pid = fork();
	if (pid < 0)
		return kiln_err_errno(err, errno, "fork");
	if (pid == 0) {
		/* Only async-signal-safe calls from here to exec: the parent
		 * may have ZeroMQ threads. */
		sigset_t none;

		(void) setsid();
		/* Our paths are absolute; holding the caller's cwd would pin
		 * whatever filesystem it happens to be on. */
		(void) !chdir("/");
		(void) sigemptyset(&none);
		(void) sigprocmask(SIG_SETMASK, &none, NULL);
		(void) sigaction(SIGINT, &dfl, NULL);
		(void) sigaction(SIGTERM, &dfl, NULL);
		(void) sigaction(SIGPIPE, &dfl, NULL);
		if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
			goto out_child;
		execv(exe, argv);
out_child:
		child_errno = errno;
		(void) !write(wr, &child_errno, sizeof(child_errno));
		_exit(127);
	}
	(void) close(STEAL_FD(wr));
	do {
		n = read(rd, &child_errno, sizeof(child_errno));
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		(void) waitpid(pid, NULL, 0);
		return kiln_err_errno(err, child_errno ? child_errno : EIO, "exec '%s'", exe);
	}
	*ret_pid = pid;
	return 0;
}

/* The last non-empty line of a log, to put in an error message. */
static void
log_tail(const char *path, char *out, size_t size)
{
	_cleanup_close_ int fd = -1;
	char buf[4096];
	struct stat st;
	char *end, *start;
	size_t len;
	ssize_t n;

	out[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return;
	n = pread(fd, buf, sizeof(buf) - 1,
		  st.st_size > (off_t) sizeof(buf) - 1 ? st.st_size - (off_t) sizeof(buf) + 1 : 0);
	if (n <= 0)
		return;
	buf[n] = '\0';
	end = buf + n;
	while (end > buf && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
		*--end = '\0';
	start = strrchr(buf, '\n');
	start = start ? start + 1 : buf;
	len = strlen(start);
	if (len >= size)
		len = size - 1;
	memcpy(out, start, len);
	out[len] = '\0';
}

static int
start_coordinator(const struct local_paths *p, pid_t *ret_pid, struct kiln_err *err)
{
	_cleanup_free_ char *exe = resolve_exe("kiln-coordinator");
	char *argv[] = {
		exe, "--listen", (char *) p->endpoint, "--state", (char *) p->coord_state,
		"--pidfile", (char *) p->coord_pid, NULL,
	};
	int r;

	if (!exe)
		return kiln_err_set(err, ENOENT, "kiln-coordinator not found next to kiln nor on $PATH");
	r = kiln_mkdir_p(p->coord_state, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "create '%s'", p->coord_state);
	(void) unlink(p->coord_pid);            /* stale: pidfile_live() said so */
	r = spawn(exe, argv, p->coord_log, ret_pid, err);
	if (r < 0)
		return kiln_err_wrap(err, "start coordinator");
	return 0;
}

static int
start_worker(const struct local_paths *p, const struct builder *b, const struct builder_node *n,
	     const struct node_paths *np, pid_t *ret_pid, struct kiln_err *err)
{
	_cleanup_free_ char *exe = resolve_exe("kiln-worker");
	_cleanup_free_ char *plats = NULL;
	const char *cpuset = builder_opt(b, n, "cpuset-cpus");
	const char *memory = builder_opt(b, n, "memory");
	char *argv[MAX_ARGS];
	size_t argc = 0;
	int r;

	if (!exe)
		return kiln_err_set(err, ENOENT, "kiln-worker not found next to kiln nor on $PATH");
	r = kiln_mkdir_p(np->state, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "create '%s'", np->state);
	for (size_t i = 0; i < n->n_platforms; i++) {
		char *joined = kiln_strdupf("%s%s%s", plats ? plats : "", plats ? "," : "",
					    n->platforms[i]);

		if (!joined)
			return kiln_err_set(err, ENOMEM, "out of memory");
		free(plats);
		plats = joined;
	}
	argv[argc++] = exe;
	argv[argc++] = "--coordinator";
	argv[argc++] = (char *) p->endpoint;
	argv[argc++] = "--name";
	argv[argc++] = n->name;
	argv[argc++] = "--state";
	argv[argc++] = (char *) np->state;
	argv[argc++] = "--pidfile";
	argv[argc++] = (char *) np->pid;
	if (plats) {
		argv[argc++] = "--platform";
		argv[argc++] = plats;
	}
	/* The worker confines itself (and so every step it runs): the
	 * same flags serve a worker someone starts by hand on another
	 * machine. */
	if (cpuset) {
		argv[argc++] = "--cpuset-cpus";
		argv[argc++] = (char *) cpuset;
	}
	if (memory) {
		argv[argc++] = "--memory";
		argv[argc++] = (char *) memory;
	}
	argv[argc] = NULL;
	(void) unlink(np->pid);
	r = spawn(exe, argv, np->log, ret_pid, err);
	if (r < 0)
		return kiln_err_wrap(err, "start worker for node \"%s\"", n->name);
	return 0;
}

/* The short socket directory must be ours alone: anyone can create names
 * in /tmp, and a directory someone else prepared could hand our clients
 * to their socket. */
static int
prepare_sock_dir(const struct local_paths *p, struct kiln_err *err)
{
	struct stat st;

	if (!p->sock_dir[0])
		return 0;
	if (mkdir(p->sock_dir, 0700) < 0 && errno != EEXIST)
		return kiln_err_errno(err, errno, "create '%s'", p->sock_dir);
	if (lstat(p->sock_dir, &st) < 0)
		return kiln_err_errno(err, errno, "stat '%s'", p->sock_dir);
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 0077))
		return kiln_err_set(err, EPERM, "'%s' is not a private directory of ours; remove it",
				    p->sock_dir);
	return 0;
}

/* ---- waiting -------------------------------------------------------- */

static int
check_children(struct child *kids, size_t n, struct kiln_err *err)
{
	for (size_t i = 0; i < n; i++) {
		char tail[256];
		int st;

		if (kids[i].pid <= 0 || waitpid(kids[i].pid, &st, WNOHANG) != kids[i].pid)
			continue;
		kids[i].pid = 0;
		/* A daemon that forks itself away exits 0 here: its
		 * pidfile and the coordinator's answer decide, not this. */
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			continue;
		log_tail(kids[i].log, tail, sizeof(tail));
		return kiln_err_set(err, ECHILD, "%s%s%s exited (%s %d) at start-up: %s (see %s)",
				    kids[i].is_worker ? "worker of node \"" : "", kids[i].what,
				    kids[i].is_worker ? "\"" : "", WIFSIGNALED(st) ? "signal" : "status",
				    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
				    tail[0] ? tail : "no output", kids[i].log);
	}
	return 0;
}

/* 0 when every node of b is listed ready; else -EAGAIN with why in why. */
static int
nodes_ready(const struct builder *b, const struct conn_node *live, size_t n_live, char *why,
	    size_t size)
{
	for (size_t i = 0; i < b->n_nodes; i++) {
		const struct conn_node *ln = NULL;

		for (size_t k = 0; k < n_live; k++)
			if (strcmp(live[k].name, b->nodes[i].name) == 0)
				ln = &live[k];
		if (!ln) {
			snprintf(why, size, "node \"%s\" has not registered", b->nodes[i].name);
			return -EAGAIN;
		}
		if (strcmp(ln->status, "ready") != 0) {
			snprintf(why, size, "node \"%s\" is %s", b->nodes[i].name, ln->status);
			return -EAGAIN;
		}
	}
	return 0;
}

static int
wait_ready(const struct builder *b, const struct local_paths *p, struct child *kids,
	   size_t n_kids, struct kiln_err *err)
{
	int64_t deadline = kiln_now_ms() + DRIVER_START_TIMEOUT_MS;
	struct conn *c = NULL;
	struct conn_opts o = { 0 };
	char why[300] = "coordinator does not answer";
	int r;

	snprintf(o.endpoint, sizeof(o.endpoint), "%s", p->endpoint);
	r = conn_open(&o, &c, err);
	if (r < 0)
		return r;
	for (;;) {
		struct kiln_err e = { 0 };
		struct conn_node *live = NULL;
		size_t n_live = 0;
		int64_t left;

		r = check_children(kids, n_kids, err);
		if (r < 0)
			break;
		left = deadline - kiln_now_ms();
		if (left <= 0) {
			r = kiln_err_set(err, ETIMEDOUT,
					 "builder \"%s\" not ready within %ds: %s (logs in %s)", b->name,
					 DRIVER_START_TIMEOUT_MS / 1000, why, p->state);
			break;
		}
		r = conn_ping(c, (int) (left < 250 ? left : 250), NULL, 0, &e);
		if (r == 0)
			r = conn_nodes_list(c, (int) (left < 1000 ? left : 1000), &live, &n_live, &e);
		if (r == 0) {
			r = nodes_ready(b, live, n_live, why, sizeof(why));
			conn_nodes_free(live, n_live);
			if (r == 0)
				break;
		} else if (r != -ETIMEDOUT) {
			/* The coordinator answered, but with an error: waiting
			 * will not change its mind. */
			*err = e;
			break;
		}
		(void) usleep(DRIVER_POLL_MS * 1000);
	}
	conn_free(c);
	return r;
}

/* ---- the driver ----------------------------------------------------- */

static int
lock_state(const struct local_paths *p, int *ret_fd, struct kiln_err *err)
{
	char path[PATH_MAX];
	int fd;

	if (fmt_path(path, sizeof(path), err, "%s/lock", p->state) < 0)
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kiln_err_errno(err, errno, "open '%s'", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;

			(void) close(fd);
			return kiln_err_errno(err, e, "lock '%s'", path);
		}
	}
	*ret_fd = fd;
	return 0;
}

static int
local_start(struct builder *b, struct kiln_err *err)
{
	_cleanup_close_ int lockfd = -1;
	struct child kids[1 + 256];
	struct node_paths np;
	struct local_paths p;
	size_t n_kids = 0;
	char path[PATH_MAX];
	char *line;
	pid_t pid;
	int r;

	r = local_paths(b, &p, err);
	if (r < 0)
		return r;
	r = kiln_mkdir_p(p.state, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "create '%s'", p.state);
	r = prepare_sock_dir(&p, err);
	if (r < 0)
		return r;
	r = lock_state(&p, &lockfd, err);
	if (r < 0)
		return r;

	if (!pidfile_live(p.coord_pid, "kiln-coordinator")) {
		r = start_coordinator(&p, &pid, err);
		if (r < 0)
			return r;
		kids[n_kids++] = (struct child) { pid, "coordinator", p.coord_log, false };
	}
	for (size_t i = 0; i < b->n_nodes && n_kids < sizeof(kids) / sizeof(kids[0]); i++) {
		r = node_paths(&p, b->nodes[i].name, &np, err);
		if (r < 0)
			goto out_free_logs;
		if (pidfile_live(np.pid, "kiln-worker"))
			continue;
		r = start_worker(&p, b, &b->nodes[i], &np, &pid, err);
		if (r < 0)
			goto out_free_logs;
		/* np is reused per node: the log path must outlive it. */
		line = strdup(np.log);
		if (!line) {
			r = kiln_err_set(err, ENOMEM, "out of memory");
			goto out_free_logs;
		}
		kids[n_kids++] = (struct child) { pid, b->nodes[i].name, line, true };
	}
	if (fmt_path(path, sizeof(path), NULL, "%s/endpoint", p.state) == 0) {
		line = kiln_strdupf("%s\n", p.endpoint);
		if (line)
			(void) kiln_write_file_atomic(AT_FDCWD, path, line, strlen(line), 0644);
		free(line);
	}
	r = wait_ready(b, &p, kids, n_kids, err);

out_free_logs:
	for (size_t i = 0; i < n_kids; i++)
		if (kids[i].is_worker)
			free((char *) kids[i].log);
	return r;
}

/* Every node directory under STATE/nodes, configured or not: a node
 * dropped with `create --leave` may still have a worker running. */
static int
collect_node_pidfiles(const struct local_paths *p, char ***ret, size_t *ret_n)
{
	_cleanup_closedir_ DIR *d = NULL;
	char dir[PATH_MAX];
	struct dirent *de;
	char **v = NULL;
	size_t n = 0;

	*ret = NULL;
	*ret_n = 0;
	if (fmt_path(dir, sizeof(dir), NULL, "%s/nodes", p->state) < 0)
		return -ENAMETOOLONG;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		char **grown;

		if (de->d_name[0] == '.')
			continue;
		grown = realloc(v, (n + 1) * sizeof(*v));
		if (!grown)
			goto out_nomem;
		v = grown;
		v[n] = kiln_strdupf("%s/%s/worker.pid", dir, de->d_name);
		if (!v[n])
			goto out_nomem;
		n++;
	}
	*ret = v;
	*ret_n = n;
	return 0;

out_nomem:
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return -ENOMEM;
}

static int
local_stop(struct builder *b, struct kiln_err *err)
{
	struct {
		pid_t pid;
		char *pidfile;
		const char *exe;
	} procs[1 + 1024];
	char **pidfiles = NULL;
	size_t n_pidfiles = 0, n = 0;
	struct local_paths p;
	int64_t deadline;
	bool killed = false;
	int r;

	r = local_paths(b, &p, err);
	if (r < 0)
		return r;
	r = collect_node_pidfiles(&p, &pidfiles, &n_pidfiles);
	if (r < 0)
		return kiln_err_errno(err, -r, "list nodes of '%s'", p.state);
	/* Workers first in the list, so they get TERM before the coordinator
	 * they would otherwise try to reconnect to. */
	for (size_t i = 0; i < n_pidfiles && n < sizeof(procs) / sizeof(procs[0]) - 1; i++) {
		pid_t pid = pidfile_live(pidfiles[i], "kiln-worker");

		if (pid > 0)
			procs[n++] = (typeof(procs[0])) { pid, pidfiles[i], "kiln-worker" };
		else
			(void) unlink(pidfiles[i]);
	}
	{
		pid_t pid = pidfile_live(p.coord_pid, "kiln-coordinator");

		if (pid > 0)
			procs[n++] = (typeof(procs[0])) { pid, p.coord_pid, "kiln-coordinator" };
		else
			(void) unlink(p.coord_pid);
	}
	for (size_t i = 0; i < n; i++)
		(void) kill(procs[i].pid, SIGTERM);

	r = 0;
	deadline = kiln_now_ms() + STOP_TIMEOUT_MS;
	for (;;) {
		size_t alive = 0;

		for (size_t i = 0; i < n; i++) {
			if (procs[i].pid <= 0)
				continue;
			/* Reaps it if it happens to be our own child. */
			(void) waitpid(procs[i].pid, NULL, WNOHANG);
			if ((kill(procs[i].pid, 0) < 0 && errno == ESRCH) ||
			    !pid_is_ours(procs[i].pid, procs[i].exe, procs[i].pidfile)) {
				procs[i].pid = 0;
				(void) unlink(procs[i].pidfile);
				continue;
			}
			alive++;
		}
		if (alive == 0)
			break;
		if (kiln_now_ms() >= deadline) {
			if (killed) {
				r = kiln_err_set(err, ETIMEDOUT,
						 "%zu process(es) of builder \"%s\" survived SIGKILL",
						 alive, b->name);
				break;
			}
			/* Still ours (checked just above): force it. */
			for (size_t i = 0; i < n; i++)
				if (procs[i].pid > 0)
					(void) kill(procs[i].pid, SIGKILL);
			killed = true;
			deadline = kiln_now_ms() + 2000;
		}
		(void) usleep(DRIVER_POLL_MS * 1000);
	}
	for (size_t i = 0; i < n_pidfiles; i++)
		free(pidfiles[i]);
	free(pidfiles);
	return r;
}

static int
local_endpoint(const struct builder *b, struct conn_opts *ret, struct kiln_err *err)
{
	struct local_paths p;
	int r;

	r = local_paths(b, &p, err);
	if (r < 0)
		return r;
	memset(ret, 0, sizeof(*ret));
	snprintf(ret->endpoint, sizeof(ret->endpoint), "%s", p.endpoint);
	return 0;
}

static int
local_status(const struct builder *b, struct kiln_err *err)
{
	struct local_paths p;
	int r;

	r = local_paths(b, &p, err);
	if (r < 0)
		return r;
	return pidfile_live(p.coord_pid, "kiln-coordinator") ? DRIVER_RUNNING : DRIVER_INACTIVE;
}

static int
local_remove(struct builder *b, struct kiln_err *err)
{
	struct local_paths p;
	int r;

	r = local_stop(b, err);
	if (r < 0)
		return r;
	r = local_paths(b, &p, err);
	if (r < 0)
		return r;
	r = kiln_rm_rf(p.state);
	if (r < 0)
		return kiln_err_errno(err, -r, "remove '%s'", p.state);
	if (p.sock_dir[0]) {
		r = kiln_rm_rf(p.sock_dir);
		if (r < 0)
			return kiln_err_errno(err, -r, "remove '%s'", p.sock_dir);
	}
	return 0;
}

const struct driver_ops local_driver_ops = {
	.name = "local",
	.start = local_start,
	.stop = local_stop,
	.endpoint = local_endpoint,
	.status = local_status,
	.remove = local_remove,
};
