/* kiln-run: run one build command in a throwaway container whose root is an
 * overlay of image layers, so that afterwards the upper directory holds
 * exactly what the command changed (plus /proc and /dev mountpoints when the
 * image had none, as with BuildKit's runc).
 *
 * The parent only unshares a PID namespace, forks and waits. The child is
 * PID 1 of that namespace; it takes its own mount, UTS, IPC and (unless
 * --network host) network namespaces, mounts the overlay, proc and a small
 * /dev, pivots into the overlay and execs the command, which stays PID 1 as
 * under runc. Nothing is unmounted by hand: when the command exits, the
 * kernel kills whatever it left running in the PID namespace and drops the
 * mount namespace, and with it every mount. The parent never enters the new
 * mount namespace, so its view of the host (and of the upper directory)
 * never changes.
 *
 * Setup errors are written by the child to a close-on-exec pipe: EOF
 * without data means the exec happened, so the parent can tell a setup
 * failure (exit 125, "kiln-run: <what>: <why>") from a command that itself
 * exits 125. Single-threaded on purpose: it forks after unshare().
 *
 * Not here: capabilities, seccomp, cgroups and user namespaces. The command
 * runs as real root unless --user says otherwise; kiln-run trusts the
 * Dockerfile as much as `docker build` does. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <linux/close_range.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_SETUP 125
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DEFAULT_HOSTNAME "kiln"
/* Legacy mount(2) data is one page; longer lowerdir lists go through fsconfig. */
#define MOUNT_DATA_MAX 4000

struct opts {
	const char *lower, *upper, *work, *mnt;
	const char *cwd, *user, *hostname;
	bool net_none;
	bool check;
	char **env;
	size_t n_env;
	char **cmd;
};

static pid_t child_pid = -1;

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fputs("kiln-run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_SETUP);
}

/* In the child: report "<what>: <strerror(e)>" (or just what when e == 0)
 * to the parent and end. */
static void __attribute__((noreturn, format(printf, 3, 4)))
child_fail(int errfd, int e, const char *fmt, ...)
{
	char msg[1024];
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = strlen(msg);
	if (e)
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(e));
	/* One write below PIPE_BUF: atomic, and nothing else writes there. */
	if (write(errfd, msg, strlen(msg)) < 0)
		_exit(EXIT_SETUP);
	_exit(EXIT_SETUP);
}

static void
usage(FILE *f)
{
	fputs("usage: kiln-run --lower DIR[:DIR...] --upper DIR --work DIR --mnt DIR\n"
	      "                [--env K=V]... [--cwd DIR] [--user USER[:GROUP]]\n"
	      "                [--hostname NAME] [--network host|none] -- CMD [ARG...]\n"
	      "       kiln-run --check\n", f);
}

static void
parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "lower", required_argument, NULL, 'l' },
		{ "upper", required_argument, NULL, 'u' },
		{ "work", required_argument, NULL, 'w' },
		{ "mnt", required_argument, NULL, 'm' },
		{ "env", required_argument, NULL, 'e' },
		{ "cwd", required_argument, NULL, 'c' },
		{ "user", required_argument, NULL, 'U' },
		{ "hostname", required_argument, NULL, 'h' },
		{ "network", required_argument, NULL, 'n' },
		{ "check", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct opts) { .net_none = true };
	o->env = calloc((size_t) argc, sizeof(*o->env));
	if (!o->env)
		die("out of memory");
	/* "+": stop at the first non-option so the command's own flags stay its own. */
	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		switch (c) {
		case 'l': o->lower = optarg; break;
		case 'u': o->upper = optarg; break;
		case 'w': o->work = optarg; break;
		case 'm': o->mnt = optarg; break;
		case 'c': o->cwd = optarg; break;
		case 'U': o->user = optarg; break;
		case 'h': o->hostname = optarg; break;
		case 'C': o->check = true; break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				die("--env '%s': expected KEY=VALUE", optarg);
			o->env[o->n_env++] = optarg;
			break;
		case 'n':
			if (strcmp(optarg, "none") == 0)
				o->net_none = true;
			else if (strcmp(optarg, "host") == 0)
				o->net_none = false;
			else
				die("--network '%s': expected host or none", optarg);
			break;
		case 'H':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(EXIT_SETUP);
		}
	}
	if (o->check)
		return;
	if (!o->lower || !o->upper || !o->work || !o->mnt) {
		usage(stderr);
		die("--lower, --upper, --work and --mnt are required");
	}
	if (optind >= argc)
		die("no command given");
	o->cmd = argv + optind;
}

/* ---- the child: namespaces, mounts, identity, exec ---- */

/* Overlay takes ',' ':' and '\' as syntax in its options; our paths never
 * need them, so refuse rather than escape. */
static void
check_ovl_path(int errfd, const char *what, const char *p)
{
	if (!*p || strpbrk(p, ",\\") || (strcmp(what, "lowerdir") != 0 && strchr(p, ':')))
		child_fail(errfd, 0, "%s '%s': empty or contains ',', ':' or '\\'", what, p);
}

static void
mount_overlay_fsconfig(int errfd, const struct opts *o)
{
	char *lowers = strdup(o->lower), *save = NULL;
	int fd, mfd;

	if (!lowers)
		child_fail(errfd, ENOMEM, "mount overlay");
	fd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fd < 0)
		child_fail(errfd, errno, "mount overlay: fsopen");
	/* "lowerdir+" (Linux 6.8) takes one directory at a time: no length limit. */
	for (char *l = strtok_r(lowers, ":", &save); l; l = strtok_r(NULL, ":", &save))
		if (fsconfig(fd, FSCONFIG_SET_STRING, "lowerdir+", l, 0) < 0)
			child_fail(errfd, errno, "mount overlay: too many lower dirs for this kernel");
	if (fsconfig(fd, FSCONFIG_SET_STRING, "upperdir", o->upper, 0) < 0 ||
	    fsconfig(fd, FSCONFIG_SET_STRING, "workdir", o->work, 0) < 0 ||
	    fsconfig(fd, FSCONFIG_SET_STRING, "redirect_dir", "off", 0) < 0 ||
	    fsconfig(fd, FSCONFIG_SET_STRING, "metacopy", "off", 0) < 0 ||
	    fsconfig(fd, FSCONFIG_SET_STRING, "index", "off", 0) < 0 ||
	    fsconfig(fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		child_fail(errfd, errno, "mount overlay on '%s'", o->mnt);
	mfd = fsmount(fd, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0)
		child_fail(errfd, errno, "mount overlay on '%s'", o->mnt);
	if (move_mount(mfd, "", AT_FDCWD, o->mnt, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		child_fail(errfd, errno, "mount overlay on '%s'", o->mnt);
	close(mfd);
	close(fd);
	free(lowers);
}

static void
mount_overlay(int errfd, const struct opts *o)
{
	char data[MOUNT_DATA_MAX + 1];
	int n;

	check_ovl_path(errfd, "lowerdir", o->lower);
	check_ovl_path(errfd, "upperdir", o->upper);
	check_ovl_path(errfd, "workdir", o->work);
	/* The upper dir becomes a layer as it is: no redirects or metacopy-only
	 * files (they would need the lower dirs to make sense), no index. */
	n = snprintf(data, sizeof(data),
		     "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off,index=off",
		     o->lower, o->upper, o->work);
	if (n < 0 || (size_t) n >= sizeof(data)) {
		mount_overlay_fsconfig(errfd, o);
		return;
	}
	if (mount("overlay", o->mnt, "overlay", 0, data) < 0)
		child_fail(errfd, errno, "mount overlay on '%s'", o->mnt);
}

/* mkdir name (relative to the merged root, our cwd) only when missing: an
 * existing directory must not be touched, or it would be copied up into
 * the layer. */
static void
ensure_dir(int errfd, const char *name, mode_t mode)
{
	struct stat st;

	if (lstat(name, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			child_fail(errfd, ENOTDIR, "mountpoint '/%s'", name);
		return;
	}
	if (mkdir(name, mode) < 0 && errno != EEXIST)
		child_fail(errfd, errno, "mkdir '/%s'", name);
	/* umask is 022 here, but be explicit: this ends up in the layer. */
	if (chmod(name, mode) < 0)
		child_fail(errfd, errno, "chmod '/%s'", name);
}

/* /dev as runc makes it: a tmpfs with the harmless devices bound in from
 * the host, a private devpts and a tmpfs /dev/shm. Paths are relative to
 * the merged root (our cwd). */
static void
mount_dev(int errfd)
{
	static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
	static const char *const links[][2] = {
		{ "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" },
		{ "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" },
		{ "ptmx", "pts/ptmx" },
	};
	char p[64], src[64];

	if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME,
		  "mode=755,size=65536k") < 0)
		child_fail(errfd, errno, "mount tmpfs on /dev");
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		struct stat st;
		int fd;

		snprintf(src, sizeof(src), "/dev/%s", nodes[i]);
		if (stat(src, &st) < 0 && errno == ENOENT && strcmp(nodes[i], "tty") == 0)
			continue;       /* no controlling-terminal device on this host */
		snprintf(p, sizeof(p), "dev/%s", nodes[i]);
		fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd < 0)
			child_fail(errfd, errno, "create /dev/%s", nodes[i]);
		close(fd);
		if (mount(src, p, NULL, MS_BIND, NULL) < 0)
			child_fail(errfd, errno, "bind %s", src);
	}
	if (mkdir("dev/pts", 0755) < 0)
		child_fail(errfd, errno, "mkdir /dev/pts");
	if (mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=0620") < 0)
		child_fail(errfd, errno, "mount devpts on /dev/pts");
	if (mkdir("dev/shm", 01777) < 0)
		child_fail(errfd, errno, "mkdir /dev/shm");
	if (mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "mode=1777,size=65536k") < 0)
		child_fail(errfd, errno, "mount tmpfs on /dev/shm");
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		snprintf(p, sizeof(p), "dev/%s", links[i][0]);
		if (symlink(links[i][1], p) < 0)
			child_fail(errfd, errno, "symlink /dev/%s", links[i][0]);
	}
}

/* A fresh network namespace has lo down; builds that talk to 127.0.0.1
 * expect it up, as Docker sets it. */
static void
loopback_up(int errfd)
{
	struct ifreq ifr = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		child_fail(errfd, errno, "socket for loopback");
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		child_fail(errfd, errno, "get flags of lo");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		child_fail(errfd, errno, "bring up lo");
	close(s);
}

/* Called with the merged root as cwd. */
static void
enter_root(int errfd, const char *mnt)
{
	/* pivot_root(".", "."): the old root ends up stacked on the new one and
	 * is detached at once, so no put_old directory is ever created in the
	 * image (it would land in the upper dir). */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		child_fail(errfd, errno, "pivot_root into '%s'", mnt);
	if (umount2(".", MNT_DETACH) < 0)
		child_fail(errfd, errno, "detach old root");
	if (chdir("/") < 0)
		child_fail(errfd, errno, "chdir /");
}

static bool
parse_id(const char *s, unsigned long *ret)
{
	char *end;
	unsigned long v;

	if (!*s || !isdigit((unsigned char) *s))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v >= UINT32_MAX)
		return false;
	*ret = v;
	return true;
}

/* Find a line of an /etc/passwd-style file whose field 0 equals name or,
 * when name is NULL, whose field 2 equals id. Fields go to f[] (pointing
 * into *line, which the caller frees). Returns the field count or 0. */
static int
db_find(const char *file, const char *name, unsigned long id, char **line, char *f[7])
{
	FILE *fp = fopen(file, "re");
	size_t cap = 0;

	*line = NULL;
	if (!fp)
		return 0;
	while (getline(line, &cap, fp) >= 0) {
		char *p = *line, *tok;
		unsigned long v;
		int n = 0;

		p[strcspn(p, "\n")] = '\0';
		if (*p == '#' || !*p)
			continue;
		while (n < 7 && (tok = strsep(&p, ":")))
			f[n++] = tok;
		if (n < 3)
			continue;
		if (name ? strcmp(f[0], name) == 0 : (parse_id(f[2], &v) && v == id)) {
			fclose(fp);
			return n;
		}
	}
	fclose(fp);
	free(*line);
	*line = NULL;
	return 0;
}

/* USER[:GROUP] as Docker reads it: names from the image's /etc/passwd and
 * /etc/group; a numeric uid need not exist (gid 0 then); without a group
 * the user's primary group. No supplementary groups, as in BuildKit. */
static void
resolve_user(int errfd, const char *spec, uid_t *ret_uid, gid_t *ret_gid, char **ret_home)
{
	char *copy = strdup(spec ? spec : ""), *group, *line = NULL, *f[7];
	unsigned long uid = 0, gid = 0;
	bool have_gid = false;
	int n;

	if (!copy)
		child_fail(errfd, ENOMEM, "user");
	group = strchr(copy, ':');
	if (group)
		*group++ = '\0';
	*ret_home = NULL;
	if (!*copy) {
		uid = 0;
		n = db_find("/etc/passwd", NULL, 0, &line, f);
	} else if (parse_id(copy, &uid)) {
		n = db_find("/etc/passwd", NULL, uid, &line, f);
	} else {
		n = db_find("/etc/passwd", copy, 0, &line, f);
		if (n < 3 || !parse_id(f[2], &uid))
			child_fail(errfd, 0, "user '%s': no such user in /etc/passwd", copy);
	}
	if (n >= 4 && parse_id(f[3], &gid))
		have_gid = true;
	if (n >= 6 && *f[5])
		*ret_home = strdup(f[5]);
	free(line);
	if (group && *group) {
		if (!parse_id(group, &gid)) {
			n = db_find("/etc/group", group, 0, &line, f);
			if (n < 3 || !parse_id(f[2], &gid))
				child_fail(errfd, 0, "group '%s': no such group in /etc/group", group);
			free(line);
		}
		have_gid = true;
	}
	*ret_uid = (uid_t) uid;
	*ret_gid = have_gid ? (gid_t) gid : 0;
	free(copy);
}

static void
set_env(int errfd, const struct opts *o, const char *home)
{
	bool have_path = false, have_home = false;

	if (clearenv() != 0)
		child_fail(errfd, 0, "clearenv failed");
	for (size_t i = 0; i < o->n_env; i++) {
		const char *eq = strchr(o->env[i], '=');
		char key[256];

		if ((size_t) (eq - o->env[i]) >= sizeof(key))
			child_fail(errfd, 0, "env '%s': name too long", o->env[i]);
		snprintf(key, sizeof(key), "%.*s", (int) (eq - o->env[i]), o->env[i]);
		if (setenv(key, eq + 1, 1) < 0)
			child_fail(errfd, errno, "setenv '%s'", key);
		have_path |= strcmp(key, "PATH") == 0;
		have_home |= strcmp(key, "HOME") == 0;
	}
	if (!have_path && setenv("PATH", DEFAULT_PATH, 1) < 0)
		child_fail(errfd, errno, "setenv PATH");
	/* runc (and so BuildKit) sets HOME from the user's passwd entry. */
	if (!have_home && setenv("HOME", home ? home : "/", 1) < 0)
		child_fail(errfd, errno, "setenv HOME");
}

static void
reset_signals(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t all;

	for (int s = 1; s < NSIG; s++)
		(void) sigaction(s, &sa, NULL);
	sigemptyset(&all);
	(void) sigprocmask(SIG_SETMASK, &all, NULL);
}

static const char *
path_in(int errfd, char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);

	if (n < 0 || (size_t) n >= size)
		child_fail(errfd, ENAMETOOLONG, "'%s/%s'", dir, name);
	return buf;
}

/* In --check mode, lower/upper/work/mnt are made on a tmpfs mounted over
 * base inside the child's own mount namespace: the host sees nothing. The
 * lower dir has an /etc/passwd so that the user lookup runs too. */
static void
check_layout(int errfd, const char *base, struct opts *o)
{
	static char lower[PATH_MAX], upper[PATH_MAX], work[PATH_MAX], mnt[PATH_MAX];
	static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
	char p[PATH_MAX];
	int fd;

	if (mount("tmpfs", base, "tmpfs", 0, "mode=700,size=1m") < 0)
		child_fail(errfd, errno, "mount tmpfs on '%s'", base);
	o->lower = path_in(errfd, lower, sizeof(lower), base, "lower");
	o->upper = path_in(errfd, upper, sizeof(upper), base, "upper");
	o->work = path_in(errfd, work, sizeof(work), base, "work");
	o->mnt = path_in(errfd, mnt, sizeof(mnt), base, "mnt");
	if (mkdir(lower, 0755) < 0 || mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0 ||
	    mkdir(mnt, 0755) < 0 || mkdir(path_in(errfd, p, sizeof(p), lower, "etc"), 0755) < 0)
		child_fail(errfd, errno, "mkdir in '%s'", base);
	fd = open(path_in(errfd, p, sizeof(p), lower, "etc/passwd"),
		  O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, passwd, sizeof(passwd) - 1) != (ssize_t) sizeof(passwd) - 1)
		child_fail(errfd, errno, "write '%s'", p);
	close(fd);
}

static void __attribute__((noreturn))
child_main(struct opts *o, int errfd, const char *check_base)
{
	int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | (o->net_none ? CLONE_NEWNET : 0);
	const char *hostname = o->hostname ? o->hostname : DEFAULT_HOSTNAME;
	char *home = NULL;
	uid_t uid;
	gid_t gid;
	int fd;

	/* If kiln-run is killed, take the command with it. */
	(void) prctl(PR_SET_PDEATHSIG, SIGKILL);
	reset_signals();
	umask(022);
	/* fds the caller leaked stay out of the container. Best effort: Linux
	 * before 5.11 lacks the flag, and kiln's own fds are O_CLOEXEC anyway. */
	(void) close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	if (unshare(flags) < 0)
		child_fail(errfd, errno, "unshare");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_fail(errfd, errno, "make / private");
	if (check_base)
		check_layout(errfd, check_base, o);
	mount_overlay(errfd, o);
	/* From here on the merged root is the cwd and paths are relative. */
	if (chdir(o->mnt) < 0)
		child_fail(errfd, errno, "chdir '%s'", o->mnt);
	ensure_dir(errfd, "proc", 0555);
	ensure_dir(errfd, "dev", 0755);
	if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		child_fail(errfd, errno, "mount proc");
	mount_dev(errfd);
	if (sethostname(hostname, strlen(hostname)) < 0)
		child_fail(errfd, errno, "sethostname '%s'", hostname);
	if (o->net_none)
		loopback_up(errfd);
	enter_root(errfd, o->mnt);

	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || dup2(fd, 0) < 0)
		child_fail(errfd, errno, "open /dev/null");
	if (fd != 0)
		close(fd);
	if (o->cwd && chdir(o->cwd) < 0)
		child_fail(errfd, errno, "working directory '%s'", o->cwd);
	resolve_user(errfd, o->user, &uid, &gid, &home);
	if (setgroups(0, NULL) < 0)
		child_fail(errfd, errno, "setgroups");
	if (setgid(gid) < 0)
		child_fail(errfd, errno, "setgid %u", (unsigned) gid);
	if (setuid(uid) < 0)
		child_fail(errfd, errno, "setuid %u", (unsigned) uid);
	set_env(errfd, o, home);
	if (check_base)
		_exit(0);
	execvp(o->cmd[0], o->cmd);
	child_fail(errfd, errno, "exec '%s'", o->cmd[0]);
}

/* ---- the parent ---- */

static void
forward_signal(int sig)
{
	(void) sig;
	/* PID 1 of a namespace ignores signals it has no handler for when
	 * they come from outside; SIGKILL always lands. */
	if (child_pid > 0)
		(void) kill(child_pid, SIGKILL);
}

/* --check works in an empty directory of its own; the tmpfs the child
 * mounts there is gone with its namespace, leaving the directory empty. */
static void
make_check_dir(char *buf, size_t size)
{
	const char *tmp = getenv("TMPDIR");

	if (!tmp || !*tmp)
		tmp = "/tmp";
	if ((size_t) snprintf(buf, size, "%s/kiln-run-check-XXXXXX", tmp) >= size)
		die("TMPDIR is too long");
	if (!mkdtemp(buf))
		die("mkdtemp in '%s': %s", tmp, strerror(errno));
}

#if !defined(__SANITIZE_ADDRESS__) && defined(__has_feature)
#if __has_feature(address_sanitizer)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif
#ifdef __SANITIZE_ADDRESS__
/* LeakSanitizer cannot run in a process that unshared its pid namespace
 * (it ptraces itself at exit), so sanitizer builds of kiln-run only check
 * memory errors. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
	return "detect_leaks=0";
}
#endif

int
main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = forward_signal };
	char check_dir[PATH_MAX], msg[1024];
	size_t len = 0;
	struct opts o;
	int errpipe[2], status;
	pid_t pid;

	parse_args(argc, argv, &o);
	if (o.check)
		make_check_dir(check_dir, sizeof(check_dir));
	if (pipe2(errpipe, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	if (unshare(CLONE_NEWPID) < 0)
		die("unshare pid namespace: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(errpipe[0]);
		child_main(&o, errpipe[1], o.check ? check_dir : NULL);
	}
	child_pid = pid;
	close(errpipe[1]);
	sigemptyset(&sa.sa_mask);
	(void) sigaction(SIGTERM, &sa, NULL);
	(void) sigaction(SIGINT, &sa, NULL);
	(void) sigaction(SIGHUP, &sa, NULL);
	(void) sigaction(SIGQUIT, &sa, NULL);

	/* EOF comes with the exec (close-on-exec) or the child's end. */
	for (;;) {
		ssize_t n = read(errpipe[0], msg + len, sizeof(msg) - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t) n;
		if (len == sizeof(msg) - 1)
			break;
	}
	msg[len] = '\0';
	close(errpipe[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	if (o.check)
		(void) rmdir(check_dir);
	if (len > 0)
		die("%s", msg);
	if (o.check) {
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			die("check failed (wait status %#x)", (unsigned) status);
		puts("ok");
		return 0;
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
