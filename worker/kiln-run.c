/* kiln-run: run one build command in a throwaway container whose root is an
 * overlay of image layers, so that afterwards the upper directory holds
 * exactly what the command changed (plus /proc and /dev mountpoints when the
 * image had none, as with BuildKit's runc, which this keeps as it is).
 *
 * /etc/hosts (localhost and the hostname, default "buildkitsandbox") and
 * /etc/resolv.conf (the host's, without localhost nameservers unless
 * --network host) are written to a temp dir and bind-mounted read-write
 * over the image's, as BuildKit does: writes to them never reach the
 * layer, and mountpoints made for them (and /etc) where the image had none
 * are removed from the upper dir by the parent after the command ends.
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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <linux/close_range.h>
#include <linux/openat2.h>
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
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define EXIT_SETUP 125
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* BuildKit's default for a build step (executor/oci/hosts.go). */
#define DEFAULT_HOSTNAME "buildkitsandbox"
/* Legacy mount(2) data is one page; longer lowerdir lists go through fsconfig. */
#define MOUNT_DATA_MAX 4000

/* --mount: made as a detached mount before pivot_root (host paths still
 * resolve), moved onto its target after it (the target resolves inside
 * the container, symlinks included, and is created when missing: BuildKit
 * leaves such a mountpoint in the layer). */
enum mnt_type { MNT_BIND, MNT_TMPFS, MNT_OVERLAY, MNT_SECRET };

struct mnt {
	enum mnt_type type;
	char *dst;
	char *src;                      /* bind: host path; overlay: path inside (default /) */
	char *sub;                      /* bind: path inside src to mount instead (default /) */
	bool file;                      /* what is mounted is not a directory */
	char *lower, *upper, *work;     /* overlay */
	bool ro;
	unsigned long long size;        /* tmpfs; 0: no limit */
	int fd;                         /* secret: where the value is read from */
	char *env;                      /* secret: also put it in this variable */
	unsigned mode, uid, gid;        /* secret */
	char *value;                    /* secret, read by the parent before the fork */
	size_t value_len;
	int mfd;                        /* the detached mount, in the child */
};

#define MAX_MOUNTS 64
#define SECRET_MAX (500 << 10)          /* BuildKit's limit on a secret's size */

struct opts {
	const char *lower, *upper, *work, *mnt;
	struct mnt mounts[MAX_MOUNTS];
	size_t n_mounts;
	const char *cwd, *user, *hostname;
	bool net_none;
	bool check;
	char **env;
	size_t n_env;
	char **cmd;
};

static pid_t child_pid = -1;

/* /etc/hosts and /etc/resolv.conf are bind-mounted from files kiln-run
 * writes in a temp dir of its own, so nothing the command writes to them
 * reaches the layer. When the image lacks them, the child creates empty
 * mountpoints (and /etc) in the overlay and records that here, in memory
 * shared with the parent, which removes them from the upper dir after the
 * command ends, as BuildKit's MountStubsCleaner does. */
enum { ETC_HOSTS, ETC_RESOLV, N_ETC_FILES };
static const char *const etc_names[N_ETC_FILES] = { "hosts", "resolv.conf" };

struct stubs {
	bool created[N_ETC_FILES];
	bool created_etc;               /* /etc itself was missing */
	bool upper_had_etc;             /* etc/ was in the upper dir before the run */
	bool have_etc_st;               /* etc_st: /etc as it was before a stub went in */
	struct stat etc_st;
	/* per --mount: the child made an empty file for a bind mount's target
	 * (Docker 20.10's BuildKit leaves no such file in the layer; the
	 * directories it makes for targets stay) */
	bool file_stub[MAX_MOUNTS];
};

static struct stubs *stubs_shared;      /* the parent's mmap, seen by the child */

struct net_files {
	char dir[PATH_MAX - 32];
	char path[N_ETC_FILES][PATH_MAX];
};

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
	      "                [--hostname NAME] [--network host|none]\n"
	      "                [--mount type=bind,src=HOSTPATH,dst=TARGET[,sub=PATH][,ro]]...\n"
	      "                [--mount type=tmpfs,dst=TARGET[,size=BYTES]]...\n"
	      "                [--mount type=overlay,lower=A[:B...],upper=U,work=W,dst=TARGET[,src=PATH][,ro]]...\n"
	      "                [--mount type=secret,fd=N[,dst=TARGET][,env=VAR][,mode=OCT,uid=N,gid=N]]...\n"
	      "                -- CMD [ARG...]\n"
	      "       kiln-run --check\n", f);
}

/* "type=...,k=v,...,ro" into m (strings point into spec, which is split). */
static void
parse_mount(char *spec, struct mnt *m)
{
	char *save = NULL;

	*m = (struct mnt) { .fd = -1, .mfd = -1, .mode = 0400 };
	m->type = (enum mnt_type) -1;
	for (char *f = strtok_r(spec, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
		char *v = strchr(f, '=');
		char *end;

		if (v)
			*v++ = '\0';
		if (strcmp(f, "ro") == 0 && !v) {
			m->ro = true;
		} else if (!v) {
			die("--mount: '%s' is not KEY=VALUE", f);
		} else if (strcmp(f, "type") == 0) {
			m->type = strcmp(v, "bind") == 0 ? MNT_BIND : strcmp(v, "tmpfs") == 0 ? MNT_TMPFS :
				  strcmp(v, "overlay") == 0 ? MNT_OVERLAY :
				  strcmp(v, "secret") == 0 ? MNT_SECRET : (enum mnt_type) -1;
			if ((int) m->type < 0)
				die("--mount: unknown type '%s'", v);
		} else if (strcmp(f, "dst") == 0) {
			m->dst = v;
		} else if (strcmp(f, "src") == 0) {
			m->src = v;
		} else if (strcmp(f, "sub") == 0) {
			m->sub = v;
		} else if (strcmp(f, "lower") == 0) {
			m->lower = v;
		} else if (strcmp(f, "upper") == 0) {
			m->upper = v;
		} else if (strcmp(f, "work") == 0) {
			m->work = v;
		} else if (strcmp(f, "env") == 0) {
			m->env = v;
		} else if (strcmp(f, "size") == 0 || strcmp(f, "fd") == 0 || strcmp(f, "mode") == 0 ||
			   strcmp(f, "uid") == 0 || strcmp(f, "gid") == 0) {
			unsigned long long x;

			errno = 0;
			x = strtoull(v, &end, f[0] == 'm' ? 8 : 10);
			if (!*v || *end || errno || (f[0] != 's' && x > UINT32_MAX) ||
			    (f[0] == 'f' && x > INT32_MAX))
				die("--mount: bad %s '%s'", f, v);
			if (f[0] == 's' && f[1] == 'i')
				m->size = x;
			else if (f[0] == 'f')
				m->fd = (int) x;
			else if (f[0] == 'm')
				m->mode = (unsigned) x & 07777;
			else if (f[0] == 'u')
				m->uid = (unsigned) x;
			else
				m->gid = (unsigned) x;
		} else {
			die("--mount: unknown key '%s'", f);
		}
	}
	if ((int) m->type < 0)
		die("--mount: no type");
	if (m->type != MNT_SECRET && (!m->dst || m->dst[0] != '/'))
		die("--mount: dst must be an absolute path");
	if (m->type == MNT_SECRET && ((!m->dst && !m->env) || m->fd < 0 || (m->dst && m->dst[0] != '/')))
		die("--mount: a secret needs fd and an absolute dst or env");
	if (m->type == MNT_BIND && !m->src)
		die("--mount: a bind needs src");
	if (m->type == MNT_OVERLAY && (!m->lower || !m->upper || !m->work))
		die("--mount: an overlay needs lower, upper and work");
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
		{ "mount", required_argument, NULL, 'M' },
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
		case 'M':
			if (o->n_mounts == MAX_MOUNTS)
				die("--mount: more than %d", MAX_MOUNTS);
			parse_mount(optarg, &o->mounts[o->n_mounts++]);
			break;
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

/* After pivot_root: bind the files kiln-run wrote (cloned with open_tree
 * before the pivot) over /etc/hosts and /etc/resolv.conf, creating empty
 * mountpoints (and /etc) where the image has none. Paths resolve inside
 * the container, symlinks included; a symlink that leads nowhere (a
 * resolv.conf pointing at systemd-resolved's runtime file) is left alone,
 * since making its target would put a file the command did not make into
 * the layer. */
static void
mount_etc_files(int errfd, const int src_fd[N_ETC_FILES], struct stubs *st)
{
	for (size_t i = 0; i < N_ETC_FILES; i++) {
		char target[64];
		struct stat sb;

		snprintf(target, sizeof(target), "/etc/%s", etc_names[i]);
		if (stat(target, &sb) < 0) {
			int fd;

			if (errno != ENOENT)
				child_fail(errfd, errno, "stat '%s'", target);
			if (lstat(target, &sb) == 0)
				continue;       /* dangling symlink */
			if (lstat("/etc", &sb) < 0) {
				if (errno != ENOENT)
					child_fail(errfd, errno, "stat '/etc'");
				if (mkdir("/etc", 0755) < 0)
					child_fail(errfd, errno, "mkdir '/etc'");
				st->created_etc = true;
			} else if (!st->have_etc_st && !st->created_etc) {
				st->etc_st = sb;
				st->have_etc_st = true;
			}
			fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
			if (fd < 0)
				child_fail(errfd, errno, "create mountpoint '%s'", target);
			close(fd);
			st->created[i] = true;
		} else if (S_ISDIR(sb.st_mode)) {
			child_fail(errfd, EISDIR, "mountpoint '%s'", target);
		}
		if (move_mount(src_fd[i], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			child_fail(errfd, errno, "bind mount '%s'", target);
		close(src_fd[i]);
	}
}

static void
set_rdonly(int errfd, int fd, const char *dst)
{
	struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY };

	if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
		child_fail(errfd, errno, "make mount on '%s' read-only", dst);
}

/* A new detached filesystem: fsopen, the given options, fsmount. */
static int
detached_fs(int errfd, const char *type, const char *const *kv, const char *dst)
{
	int fd = fsopen(type, FSOPEN_CLOEXEC), mfd;

	if (fd < 0)
		child_fail(errfd, errno, "mount %s on '%s': fsopen", type, dst);
	for (; kv && kv[0]; kv += 2) {
		if (strcmp(kv[0], "lowerdir") == 0) {
			char *lowers = strdup(kv[1]), *save = NULL;

			if (!lowers)
				child_fail(errfd, ENOMEM, "mount on '%s'", dst);
			for (char *l = strtok_r(lowers, ":", &save); l; l = strtok_r(NULL, ":", &save))
				if (fsconfig(fd, FSCONFIG_SET_STRING, "lowerdir+", l, 0) < 0)
					child_fail(errfd, errno, "mount %s on '%s': lower dir '%s'", type, dst, l);
			free(lowers);
		} else if (fsconfig(fd, FSCONFIG_SET_STRING, kv[0], kv[1], 0) < 0) {
			child_fail(errfd, errno, "mount %s on '%s': %s=%s", type, dst, kv[0], kv[1]);
		}
	}
	if (fsconfig(fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		child_fail(errfd, errno, "mount %s on '%s'", type, dst);
	mfd = fsmount(fd, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0)
		child_fail(errfd, errno, "mount %s on '%s'", type, dst);
	close(fd);
	return mfd;
}

/* A detached clone of path inside the tree at root, its symlinks resolved
 * with root as "/" (RESOLVE_IN_ROOT): a source path is one of the image's
 * (or the cache's) own, so a link to /etc there must not reach the host's. */
static int
clone_inside(int errfd, int root, const char *path, const struct mnt *m)
{
	struct open_how how = { .flags = O_PATH | O_CLOEXEC,
				.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
	const char *rel = path;
	int fd, mfd;

	while (*rel == '/')
		rel++;
	fd = (int) syscall(SYS_openat2, root, *rel ? rel : ".", &how, sizeof(how));
	if (fd < 0)
		child_fail(errfd, errno, "mount source '%s' on '%s'", path, m->dst);
	mfd = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
	if (mfd < 0)
		child_fail(errfd, errno, "mount source '%s' on '%s'", path, m->dst);
	close(fd);
	return mfd;
}

/* Before pivot_root: every --mount as a detached mount in m->mfd. */
static void
prepare_mounts(int errfd, struct opts *o)
{
	for (size_t i = 0; i < o->n_mounts; i++) {
		struct mnt *m = &o->mounts[i];
		const char *what = m->dst ? m->dst : m->env;
		char size[32];

		switch (m->type) {
		case MNT_BIND:
			if (m->sub) {
				int root = open(m->src, O_PATH | O_DIRECTORY | O_CLOEXEC);

				if (root < 0)
					child_fail(errfd, errno, "bind '%s' on '%s'", m->src, m->dst);
				m->mfd = clone_inside(errfd, root, m->sub, m);
				close(root);
				break;
			}
			m->mfd = open_tree(AT_FDCWD, m->src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
			if (m->mfd < 0)
				child_fail(errfd, errno, "bind '%s' on '%s'", m->src, m->dst);
			break;
		case MNT_TMPFS: {
			const char *kv[] = { "mode", "1777", m->size ? "size" : NULL, size, NULL };

			snprintf(size, sizeof(size), "%llu", m->size);
			m->mfd = detached_fs(errfd, "tmpfs", kv, m->dst);
			break;
		}
		case MNT_OVERLAY: {
			const char *kv[] = { "lowerdir", m->lower, "upperdir", m->upper, "workdir", m->work,
					     "redirect_dir", "off", "metacopy", "off", "index", "off", NULL };
			int whole = detached_fs(errfd, "overlay", kv, m->dst);
			const char *sub = m->src ? m->src : "/";

			if (!sub[strspn(sub, "/")]) {
				m->mfd = whole;
				break;
			}
			m->mfd = clone_inside(errfd, whole, sub, m);
			close(whole);
			break;
		}
		case MNT_SECRET: {
			const char *kv[] = { "mode", "0700", "size", "1m", NULL };
			int tfd, fd;

			if (!m->dst)
				break;
			/* its own tmpfs, gone with the mount namespace: the value
			 * never touches a disk */
			tfd = detached_fs(errfd, "tmpfs", kv, what);
			fd = openat(tfd, "secret", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			if (fd < 0 || write(fd, m->value, m->value_len) != (ssize_t) m->value_len ||
			    fchown(fd, m->uid, m->gid) < 0 || fchmod(fd, m->mode) < 0)
				child_fail(errfd, errno, "secret for '%s'", what);
			close(fd);
			m->mfd = open_tree(tfd, "secret", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
			if (m->mfd < 0)
				child_fail(errfd, errno, "secret for '%s'", what);
			close(tfd);
			break;
		}
		}
		if (m->mfd >= 0 && m->type != MNT_SECRET) {
			struct stat st;

			/* a file source gets a file as its mountpoint */
			if (fstat(m->mfd, &st) < 0)
				child_fail(errfd, errno, "mount on '%s'", m->dst);
			m->file = !S_ISDIR(st.st_mode);
		}
		if (m->ro && m->mfd >= 0)
			set_rdonly(errfd, m->mfd, m->dst);
		if (m->type == MNT_SECRET && m->dst)
			set_rdonly(errfd, m->mfd, m->dst);
	}
}

/* mkdir -p path inside the container (after pivot_root); the last
 * component is a file when file is set. */
static bool
make_target(int errfd, const char *path, bool file)
{
	bool made_file = false;

	char buf[PATH_MAX];
	struct stat sb;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int) sizeof(buf))
		child_fail(errfd, ENAMETOOLONG, "mount target '%s'", path);
	for (char *p = buf + 1;; p++) {
		bool last = !*p;

		if (*p && *p != '/')
			continue;
		*p = '\0';
		if (stat(buf, &sb) < 0) {
			int fd;

			if (errno != ENOENT)
				child_fail(errfd, errno, "mount target '%s'", buf);
			if (last && file) {
				fd = open(buf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
				if (fd < 0)
					child_fail(errfd, errno, "create mount target '%s'", buf);
				close(fd);
				made_file = true;
			} else if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
				child_fail(errfd, errno, "create mount target '%s'", buf);
			}
		}
		if (last)
			break;
		*p = '/';
	}
	return made_file;
}

/* After pivot_root: each detached mount onto its target, in order (a
 * later target may be inside an earlier one). */
static void
attach_mounts(int errfd, struct opts *o)
{
	for (size_t i = 0; i < o->n_mounts; i++) {
		struct mnt *m = &o->mounts[i];
		struct stat st;

		if (m->mfd < 0)
			continue;
		/* a bind of a file (an ssh agent's socket too) goes on a file */
		if (make_target(errfd, m->dst, m->type == MNT_SECRET || m->file ||
				(fstat(m->mfd, &st) == 0 && !S_ISDIR(st.st_mode))) &&
		    (m->type == MNT_BIND || m->type == MNT_OVERLAY) && stubs_shared)
			stubs_shared->file_stub[i] = true;
		if (move_mount(m->mfd, "", AT_FDCWD, m->dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			child_fail(errfd, errno, "mount on '%s'", m->dst);
		close(m->mfd);
		m->mfd = -1;
	}
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
	for (size_t i = 0; i < o->n_mounts; i++) {
		const struct mnt *m = &o->mounts[i];

		if (m->type == MNT_SECRET && m->env && setenv(m->env, m->value, 1) < 0)
			child_fail(errfd, errno, "setenv '%s'", m->env);
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
child_main(struct opts *o, int errfd, const char *check_base, const struct net_files *nf,
	   struct stubs *st)
{
	int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | (o->net_none ? CLONE_NEWNET : 0);
	const char *hostname = o->hostname ? o->hostname : DEFAULT_HOSTNAME;
	char *home = NULL, p[PATH_MAX];
	int etc_fd[N_ETC_FILES];
	struct stat sb;
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
	st->upper_had_etc = lstat(path_in(errfd, p, sizeof(p), o->upper, "etc"), &sb) == 0;
	for (size_t i = 0; i < N_ETC_FILES; i++) {
		/* A detached copy of the bind: the host's mounts are gone
		 * after the pivot, and a plain fd into them cannot be bound. */
		etc_fd[i] = open_tree(AT_FDCWD, nf->path[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (etc_fd[i] < 0)
			child_fail(errfd, errno, "open '%s'", nf->path[i]);
	}
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
	prepare_mounts(errfd, o);
	enter_root(errfd, o->mnt);
	mount_etc_files(errfd, etc_fd, st);
	attach_mounts(errfd, o);

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

/* ---- the parent: /etc/hosts, /etc/resolv.conf and their mountpoints ---- */

#define RESOLV_MAX (64 << 10)

/* Whole file, NUL-terminated, at most RESOLV_MAX bytes; "" when missing. */
static char *
read_small(const char *path, size_t *ret_len)
{
	char *buf = malloc(RESOLV_MAX + 1);
	size_t len = 0;
	int fd;

	if (!buf)
		die("out of memory");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT)
		die("open '%s': %s", path, strerror(errno));
	while (fd >= 0 && len < RESOLV_MAX) {
		ssize_t n = read(fd, buf + len, RESOLV_MAX - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read '%s': %s", path, strerror(errno));
		if (n == 0)
			break;
		len += (size_t) n;
	}
	if (fd >= 0)
		close(fd);
	buf[len] = '\0';
	*ret_len = len;
	return buf;
}

/* The nameserver lines of a resolv.conf, as libnetwork's GetNameservers
 * reads them: comments ('#' or ';' to the end of the line) dropped, first
 * field "nameserver", a second field present. With first != NULL, the
 * first address is copied there. */
static size_t
count_nameservers(const char *buf, char *first, size_t first_size)
{
	size_t n = 0;

	for (const char *l = buf; *l; ) {
		size_t len = strcspn(l, "\n"), cut = strcspn(l, "#;");
		const char *p = l, *end = l + (cut < len ? cut : len);

		while (p < end && isspace((unsigned char) *p))
			p++;
		if ((size_t) (end - p) > 10 && strncmp(p, "nameserver", 10) == 0 &&
		    isspace((unsigned char) p[10])) {
			const char *a = p + 10, *ae;

			while (a < end && isspace((unsigned char) *a))
				a++;
			for (ae = a; ae < end && !isspace((unsigned char) *ae); ae++)
				;
			if (ae > a) {
				if (n == 0 && first)
					snprintf(first, first_size, "%.*s", (int) (ae - a), a);
				n++;
			}
		}
		l += len + (l[len] == '\n');
	}
	return n;
}

static bool
is_re_space(char c)                     /* Go regexp's \s */
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* Length of a match of "[0-9]{1,3}" at p (greedy), or 0. */
static size_t
match_octet(const char *p)
{
	size_t n = 0;

	while (n < 3 && isdigit((unsigned char) p[n]))
		n++;
	return n;
}

/* libnetwork's localhostNSRegexp at p, a line start:
 *   ^nameserver\s+((127\.([0-9]{1,3}\.){2}[0-9]{1,3})|(::1)$)\s*\n*
 * Returns the match length or 0. */
static size_t
match_localhost_ns(const char *p)
{
	const char *q = p;
	size_t k;

	if (strncmp(q, "nameserver", 10) != 0 || !is_re_space(q[10]))
		return 0;
	q += 10;
	while (is_re_space(*q))
		q++;
	if (strncmp(q, "127.", 4) == 0) {
		const char *r = q + 4;
		bool ok = true;

		for (int i = 0; i < 2 && ok; i++) {
			k = match_octet(r);
			ok = k > 0 && r[k] == '.';
			r += k + 1;
		}
		if (ok && (k = match_octet(r)) > 0) {
			q = r + k;
			goto tail;
		}
	}
	if (strncmp(q, "::1", 3) == 0 && (q[3] == '\n' || q[3] == '\0')) {
		q += 3;
		goto tail;
	}
	return 0;
tail:
	while (is_re_space(*q))
		q++;
	return (size_t) (q - p);
}

/* libnetwork's FilterResolvDNS(resolvConf, ipv6Enabled=true): drop
 * localhost nameservers, which mean nothing in another network namespace,
 * and when no nameserver is left add Google's public ones. In place. */
static void
filter_resolv(char **buf, size_t *len)
{
	static const char defaults[] = "\nnameserver 8.8.8.8\nnameserver 8.8.4.4"
		"\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844";
	char *in = *buf, *out = malloc(*len + sizeof(defaults));
	size_t o = 0;

	if (!out)
		die("out of memory");
	for (size_t i = 0; i < *len; ) {
		size_t m = (i == 0 || in[i - 1] == '\n') ? match_localhost_ns(in + i) : 0;

		if (m) {
			i += m;
			continue;
		}
		out[o++] = in[i++];
	}
	out[o] = '\0';
	if (count_nameservers(out, NULL, 0) == 0) {
		memcpy(out + o, defaults, sizeof(defaults));
		o += sizeof(defaults) - 1;
	}
	free(in);
	*buf = out;
	*len = o;
}

/* The host file BuildKit starts from: /etc/resolv.conf, or for a network
 * of its own systemd-resolved's upstream list when the host only names the
 * local stub resolver (libnetwork's resolvconf.Path). */
static const char *
resolv_source(bool host_net)
{
	static const char alt[] = "/run/systemd/resolve/resolv.conf";
	char first[64] = "";
	char *buf;
	size_t len;
	bool stub;

	if (host_net)
		return "/etc/resolv.conf";
	buf = read_small("/etc/resolv.conf", &len);
	stub = count_nameservers(buf, first, sizeof(first)) == 1 && strcmp(first, "127.0.0.53") == 0;
	free(buf);
	return stub && access(alt, R_OK) == 0 ? alt : "/etc/resolv.conf";
}

static void
write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0)
		die("create '%s': %s", path, strerror(errno));
	if (fchmod(fd, 0644) < 0 || write(fd, data, len) != (ssize_t) len)
		die("write '%s': %s", path, strerror(errno));
	close(fd);
}

/* Write hosts and resolv.conf into a fresh temp dir, as BuildKit's
 * executor/oci GetHostsFile and GetResolvConf make them: for a network
 * of its own the host's resolv.conf without localhost nameservers; with
 * the host's network the host's file as it is (filtered only when it
 * names no nameserver at all). */
static void
net_files_make(struct net_files *nf, const struct opts *o, const char *hostname)
{
	const char *tmp = getenv("TMPDIR");
	char hosts[512];
	char *resolv;
	size_t len;
	int n;

	if (!tmp || !*tmp)
		tmp = "/tmp";
	if ((size_t) snprintf(nf->dir, sizeof(nf->dir), "%s/kiln-run-etc-XXXXXX", tmp) >=
	    sizeof(nf->dir))
		die("TMPDIR is too long");
	if (!mkdtemp(nf->dir))
		die("mkdtemp in '%s': %s", tmp, strerror(errno));
	for (size_t i = 0; i < N_ETC_FILES; i++)
		snprintf(nf->path[i], sizeof(nf->path[i]), "%s/%s", nf->dir, etc_names[i]);
	n = snprintf(hosts, sizeof(hosts),
		     "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", hostname);
	if (n < 0 || (size_t) n >= sizeof(hosts))
		die("--hostname '%s': too long", hostname);
	write_file(nf->path[ETC_HOSTS], hosts, (size_t) n);
	resolv = read_small(resolv_source(!o->net_none), &len);
	if (o->net_none || count_nameservers(resolv, NULL, 0) == 0)
		filter_resolv(&resolv, &len);
	write_file(nf->path[ETC_RESOLV], resolv, len);
	free(resolv);
}

static void
net_files_remove(struct net_files *nf)
{
	for (size_t i = 0; i < N_ETC_FILES; i++)
		(void) unlink(nf->path[i]);
	(void) rmdir(nf->dir);
}

static bool
dir_is_empty(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	bool empty = true;
	DIR *d;

	if (fd < 0)
		return false;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return false;
	}
	while (empty && (de = readdir(d)))
		empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
	closedir(d);
	return empty;
}

/* Take the mountpoints the child made back out of the upper dir: the empty
 * files, /etc when the child made it, and when the image had /etc the
 * copy of it that overlay made in the upper dir: its times are put back,
 * and if the command left nothing in it and did not change it, it goes,
 * so a RUN that never touched /etc leaves no etc/ in its layer. */
static void
stubs_remove(const char *upper, const struct stubs *st)
{
	int dfd = open(upper, O_PATH | O_DIRECTORY | O_CLOEXEC);
	bool removed = false;
	struct stat sb;

	if (dfd < 0)
		return;
	for (size_t i = 0; i < N_ETC_FILES; i++) {
		char name[32];

		if (!st->created[i])
			continue;
		snprintf(name, sizeof(name), "etc/%s", etc_names[i]);
		if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode) &&
		    sb.st_size == 0 && unlinkat(dfd, name, 0) == 0)
			removed = true;
	}
	if (st->created_etc) {
		(void) unlinkat(dfd, "etc", AT_REMOVEDIR);
	} else if (removed && st->have_etc_st) {
		struct timespec ts[2] = { st->etc_st.st_atim, st->etc_st.st_mtim };
		char xa[8];
		int fd;

		(void) utimensat(dfd, "etc", ts, AT_SYMLINK_NOFOLLOW);
		fd = openat(dfd, "etc", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && !st->upper_had_etc && fstat(fd, &sb) == 0 &&
		    sb.st_mode == st->etc_st.st_mode && sb.st_uid == st->etc_st.st_uid &&
		    sb.st_gid == st->etc_st.st_gid &&
		    fgetxattr(fd, "trusted.overlay.opaque", xa, sizeof(xa)) < 0 &&
		    dir_is_empty(dfd, "etc"))
			(void) unlinkat(dfd, "etc", AT_REMOVEDIR);
		if (fd >= 0)
			close(fd);
	}
	close(dfd);
}

/* The empty files the child made as bind mount targets, out of the upper
 * dir again (only while still empty regular files: a command that wrote
 * through the path after unmounting keeps its file). */
static void
file_stubs_remove(const char *upper, const struct opts *o, const struct stubs *st)
{
	int dfd = open(upper, O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct stat sb;

	if (dfd < 0)
		return;
	for (size_t i = 0; i < o->n_mounts; i++) {
		const char *rel = o->mounts[i].dst;

		if (!st->file_stub[i] || !rel)
			continue;
		while (*rel == '/')
			rel++;
		if (*rel && fstatat(dfd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode) &&
		    sb.st_size == 0)
			(void) unlinkat(dfd, rel, 0);
	}
	close(dfd);
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

/* Each secret's value from its fd (a pipe the worker fills), into memory
 * only; the fd is closed so nothing in the container inherits it. */
static void
read_secrets(struct opts *o)
{
	for (size_t i = 0; i < o->n_mounts; i++) {
		struct mnt *m = &o->mounts[i];

		if (m->type != MNT_SECRET)
			continue;
		m->value = malloc(SECRET_MAX + 1);
		if (!m->value)
			die("out of memory");
		for (;;) {
			ssize_t n = read(m->fd, m->value + m->value_len, SECRET_MAX + 1 - m->value_len);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				die("read secret from fd %d: %s", m->fd, strerror(errno));
			if (n == 0)
				break;
			m->value_len += (size_t) n;
			if (m->value_len > SECRET_MAX)
				die("secret for '%s' is larger than %d bytes", m->dst ? m->dst : m->env,
				    SECRET_MAX);
		}
		m->value[m->value_len] = '\0';
		close(m->fd);
		m->fd = -1;
	}
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
	struct net_files nf;
	struct stubs *st;
	size_t len = 0;
	struct opts o;
	int errpipe[2], status;
	pid_t pid;

	parse_args(argc, argv, &o);
	read_secrets(&o);
	if (o.check)
		make_check_dir(check_dir, sizeof(check_dir));
	if (pipe2(errpipe, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	if (unshare(CLONE_NEWPID) < 0)
		die("unshare pid namespace: %s", strerror(errno));
	st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (st == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	*st = (struct stubs) { 0 };
	stubs_shared = st;
	net_files_make(&nf, &o, o.hostname ? o.hostname : DEFAULT_HOSTNAME);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		net_files_remove(&nf);
		die("fork: %s", strerror(errno));
	}
	if (pid == 0) {
		close(errpipe[0]);
		child_main(&o, errpipe[1], o.check ? check_dir : NULL, &nf, st);
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
	/* The child's mount namespace is gone with it: the upper dir is plain
	 * files again, and the bind sources are no longer in use. */
	if (!o.check) {
		stubs_remove(o.upper, st);
		file_stubs_remove(o.upper, &o, st);
	}
	net_files_remove(&nf);
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
