/* RUN: kiln-run's command line for one step (namespaces, overlay, the
 * step's --mount: bind, cache, tmpfs, secret, ssh), its output streamed as
 * step.log, and the error BuildKit would print when it fails. Runs on a
 * job thread: posix_spawn, never fork. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <fnmatch.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cas.h"
#include "cleanup.h"
#include "err.h"
#include "ignore.h"
#include "job.h"
#include "layer.h"
#include "oci.h"
#include "proto.h"
#include "registry.h"
#include "snapshot.h"
#include "sshfwd.h"
#include "util.h"

#include "job-internal.h"

extern char **environ;

static void
tail_append(char *tail, size_t *len, const char *data, size_t n)
{
	if (n >= TAIL_SIZE) {
		memcpy(tail, data + n - TAIL_SIZE, TAIL_SIZE);
		*len = TAIL_SIZE;
		return;
	}
	if (*len + n > TAIL_SIZE) {
		size_t drop = *len + n - TAIL_SIZE;

		memmove(tail, tail + drop, *len - drop);
		*len -= drop;
	}
	memcpy(tail + *len, data, n);
	*len += n;
}

/* The last few lines of output, for the error message. */
static void
tail_lines(const char *tail, size_t len, char *out, size_t size)
{
	size_t start = len, lines = 0;

	while (len > 0 && tail[len - 1] == '\n')
		len--;
	start = len;
	while (start > 0 && lines < 5) {
		start--;
		if (tail[start] == '\n')
			lines++;
	}
	if (tail[start] == '\n')
		start++;
	snprintf(out, size, "%.*s", (int) (len - start), tail + start);
}

/* ---- RUN --mount ---- */

/* What a step's mounts hold while it runs: flocks of cache dirs. */
/* kiln-run reads secret k on fd SECRET_FD0 + k; the parent's ends are
 * moved to SECRET_FD_HIGH or above first, so no dup2 onto SECRET_FD0 + k
 * can clobber a source that is still to be duplicated. */
#define SECRET_FD0 3
#define SECRET_FDS_MAX 64
#define SECRET_FD_HIGH (SECRET_FD0 + SECRET_FDS_MAX)

struct run_mounts {
	int locks[64];
	size_t n_locks;
	int secret_fds[SECRET_FDS_MAX];   /* read ends, for kiln-run's SECRET_FD0 + k */
	size_t n_secret_fds;
	struct sshfwd *ssh;               /* the step's ssh agent sockets, NULL: none */
};

static void
run_mounts_release(struct run_mounts *rm)
{
	for (size_t i = 0; i < rm->n_locks; i++)
		close(rm->locks[i]);
	rm->n_locks = 0;
	for (size_t i = 0; i < rm->n_secret_fds; i++)
		close(rm->secret_fds[i]);
	rm->n_secret_fds = 0;
	sshfwd_free(rm->ssh);
	rm->ssh = NULL;
}

/* A pipe holding the secret's value, closed for writing: kiln-run reads it
 * to the end before it starts the step. The value never touches a file.
 * The read end (O_CLOEXEC, at SECRET_FD_HIGH or above) goes to rm. */
static int
secret_pipe(const struct op_mount *m, const struct job_secret *sec, struct run_mounts *rm,
	    struct kiln_err *err)
{
	int p[2], fd, r = 0;

	if (rm->n_secret_fds == SECRET_FDS_MAX)
		return kiln_err_set(err, E2BIG, "more than %d secret mounts in one step", SECRET_FDS_MAX);
	if (pipe2(p, O_CLOEXEC) < 0)
		return kiln_err_errno(err, errno, "pipe for secret %s", m->id);
	/* the whole value fits, so the write cannot block */
	if (sec->len > 65536 && fcntl(p[1], F_SETPIPE_SZ, (int) sec->len) < 0)
		r = kiln_err_errno(err, errno, "pipe for secret %s", m->id);
	for (size_t off = 0; r == 0 && off < sec->len; ) {
		ssize_t n = write(p[1], sec->value + off, sec->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = kiln_err_errno(err, errno, "write secret %s", m->id);
		else
			off += (size_t) n;
	}
	close(p[1]);
	fd = r == 0 ? fcntl(p[0], F_DUPFD_CLOEXEC, SECRET_FD_HIGH) : -1;
	if (r == 0 && fd < 0)
		r = kiln_err_errno(err, errno, "pipe for secret %s", m->id);
	close(p[0]);
	if (r < 0)
		return r;
	rm->secret_fds[rm->n_secret_fds++] = fd;
	return 0;
}

/* kiln-run's --mount for a secret, or NULL with *ret_skip set when the
 * client has no value and the mount is not required (BuildKit skips it). */
static char *
secret_spec(struct job *j, const struct op_mount *m, struct run_mounts *rm, bool *ret_skip,
	    struct kiln_err *err)
{
	const struct job_secret *sec = secret_find(j, m->id);
	_cleanup_free_ char *dst = NULL;
	_cleanup_free_ char *env = NULL;

	*ret_skip = false;
	if (!sec) {
		if (m->required) {
			/* BuildKit's words; the id only, there is no value */
			kiln_err_set(err, ENOENT, "secret %s: not found", m->id);
			return NULL;
		}
		*ret_skip = true;
		return NULL;
	}
	if (secret_pipe(m, sec, rm, err) < 0)
		return NULL;
	dst = m->target ? kiln_strdupf(",dst=%s", m->target) : strdup("");
	env = m->env ? kiln_strdupf(",env=%s", m->env) : strdup("");
	if (!dst || !env) {
		kiln_err_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	return kiln_strdupf("type=secret,fd=%zu%s%s,mode=%o,uid=%" PRIu32 ",gid=%" PRIu32,
			    SECRET_FD0 + rm->n_secret_fds - 1, dst, env, m->mode, m->uid, m->gid);
}

/* kiln-run's --mount for an ssh mount: a socket in the step's scratch dir,
 * served by the step's relay (sshfwd), bound on the target. NULL with
 * *ret_skip set when the client forwards no agent under that id and the
 * mount is optional: BuildKit skips it. */
static char *
ssh_spec(struct job *j, const struct op_mount *m, size_t step, const char *base, size_t k,
	 struct run_mounts *rm, bool *ret_skip, struct kiln_err *err)
{
	_cleanup_free_ char *path = NULL;
	bool have = false;

	*ret_skip = false;
	for (size_t i = 0; i < j->n_ssh_ids && !have; i++)
		have = strcmp(j->ssh_ids[i], m->id) == 0;
	if (!have) {
		if (!m->required) {
			*ret_skip = true;
			return NULL;
		}
		/* BuildKit's words, for no --ssh at all and for another id */
		if (j->n_ssh_ids == 0)
			kiln_err_set(err, ENOENT, "no SSH key \"%s\" forwarded from the client "
				     "(kiln build --ssh %s[=SOCKET])", m->id, m->id);
		else
			kiln_err_set(err, ENOENT, "unset ssh forward key %s", m->id);
		return NULL;
	}
	if (!rm->ssh && sshfwd_new(j->ssh_ep, j->build, step, &rm->ssh, err) < 0)
		return NULL;
	path = kiln_strdupf("%s/ssh-%zu.sock", base, k);
	if (!path) {
		kiln_err_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	if (sshfwd_listen(rm->ssh, m->id, path, m->mode, m->uid, m->gid, err) < 0)
		return NULL;
	return kiln_strdupf("type=bind,src=%s,dst=%s,ro", path, m->target);
}

/* STATE/cache-mounts/<id made safe>-<12 hex of sha256(id[\nseed])>:
 * readable, and ids that sanitise alike stay apart. seed (NULL: none)
 * names what a cache started from, which makes it another cache. */
static char *
cache_dir(struct job *j, const char *id, const char *seed)
{
	_cleanup_free_ char *key = seed ? kiln_strdupf("%s\n%s", id, seed) : strdup(id);
	char safe[64], hex[DIGEST_STR_SIZE];
	struct digest d;
	size_t n = 0;

	if (!key)
		return NULL;
	for (const char *c = id; *c && n < 40; c++)
		safe[n++] = (isalnum((unsigned char) *c) || *c == '.' || *c == '-' || *c == '_') ? *c : '_';
	safe[n] = '\0';
	digest_buf(key, strlen(key), &d);
	digest_fmt(&d, hex);
	return kiln_strdupf("%s/cache-mounts/%s-%.12s", j->state, safe, strchr(hex, ':') + 1);
}

/* ds[i]: a name for op i's result that stays the same from build to build
 * while the ops it is made of do: the digest of op i without its progress
 * name and with its references to other ops replaced by their names
 * (ds[0..i) filled already). Its layers would not do: a RUN's files get
 * the time they were written. */
static int
op_digest(const struct job *j, size_t i, struct digest *ds, struct kiln_err *err)
{
	const struct op *op = &j->ops[i];
	struct op o = *op;
	_cleanup_free_ struct op_mount *mounts = malloc((op->n_mounts + 1) * sizeof(*mounts));
	_cleanup_free_ int *refs = malloc((op->n_mounts + 2) * sizeof(*refs));
	struct digest_ctx *dc = digest_ctx_new();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n_refs = 0;

	if (!dc || !mounts || !refs) {
		digest_ctx_free(dc);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	o.name = NULL;
	if (op->kind != OP_IMAGE)
		refs[n_refs++] = op->input;
	if (op->kind == OP_COPY_FROM)
		refs[n_refs++] = op->from;
	o.input = o.from = -1;
	for (size_t k = 0; k < op->n_mounts; k++) {
		mounts[k] = op->mounts[k];
		if (mounts[k].from >= 0)
			refs[n_refs++] = mounts[k].from;
		mounts[k].from = -1;
	}
	o.mounts = mounts;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	op_pack(&o, &pk);
	digest_ctx_update(dc, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	for (size_t k = 0; k < n_refs; k++) {
		if (refs[k] < 0 || (size_t) refs[k] >= i) {
			digest_ctx_free(dc);
			return kiln_err_set(err, KILN_EPROTO, "step %zu reads step %d, which does not come before it",
					    i, refs[k]);
		}
		digest_ctx_update(dc, ds[refs[k]].raw, sizeof(ds[refs[k]].raw));
	}
	digest_ctx_final(dc, &ds[i]);
	digest_ctx_free(dc);
	return 0;
}

/* What a cache with from= starts from: from's ops (so a changed stage
 * gives a new cache, as BuildKit keys it by from's result, which its
 * step cache keeps while the stage is unchanged) and the path taken. */
static char *
cache_seed_name(const struct job *j, int from, const char *source, struct kiln_err *err)
{
	_cleanup_free_ struct digest *ds = calloc((size_t) from + 1, sizeof(*ds));
	char hex[65];
	char *s;

	if (!ds) {
		kiln_err_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i <= (size_t) from; i++)
		if (op_digest(j, i, ds, err) < 0)
			return NULL;
	s = kiln_strdupf("from %s\nsource %s", digest_hex(&ds[from], hex), source);
	if (!s)
		kiln_err_set(err, ENOMEM, "out of memory");
	return s;
}


/* The persistent dir of a cache with from=, filled from it when it does
 * not exist yet: filled in the step's scratch dir, then renamed into
 * place, so no step ever sees a half-filled cache and of two steps that
 * fill it at once, the first one's stays. */
static int
cache_create_seeded(struct job *j, const struct op_mount *m, const struct job_snap *from,
		    const char *base, size_t k, const char *dir, struct kiln_err *err)
{
	_cleanup_free_ char *tmp = kiln_strdupf("%s/cache-seed-%zu", base, k);
	struct stat st;
	int r;

	if (!tmp)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (lstat(dir, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return kiln_err_errno(err, errno, "cache mount '%s'", m->id);
	if (mkdir(tmp, 0700) < 0)
		return kiln_err_errno(err, errno, "mkdir '%s'", tmp);
	r = cache_seed(j, m, from, tmp, err);
	if (r == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE) < 0 && errno != EEXIST)
		r = kiln_err_errno(err, errno, "cache mount '%s'", m->id);
	(void) kiln_rm_rf(tmp);
	return r;
}

/* The cache dir for m, created with its mode and owners the first time
 * (or, with from=, as a copy of from's source); sharing=locked holds an
 * flock on it for the step, sharing=private too unless another step holds
 * it, when the step gets a fresh dir of its own in its scratch dir (thrown
 * away with it), as BuildKit does. */
static int
cache_prepare(struct job *j, const struct op_mount *m, size_t step, const char *base, size_t k,
	      struct run_mounts *rm, char **ret_dir, struct kiln_err *err)
{
	const struct job_snap *from = NULL;
	_cleanup_free_ char *seed = NULL;
	_cleanup_free_ char *dir = NULL;
	_cleanup_free_ char *parent = kiln_strdupf("%s/cache-mounts", j->state);
	_cleanup_close_ int fd = -1;
	int r;

	if (m->from >= 0) {
		if ((size_t) m->from >= step)
			return kiln_err_set(err, KILN_EPROTO,
					    "step %zu mounts a cache from step %d, which does not come before it",
					    step, m->from);
		from = &j->snaps[m->from];
		seed = cache_seed_name(j, m->from, m->source ? m->source : "/", err);
		if (!seed)
			return -err->code;
	}
	dir = cache_dir(j, m->id, seed);
	if (!dir || !parent)
		return kiln_err_set(err, ENOMEM, "out of memory");
	r = kiln_mkdir_p(parent, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "mkdir '%s'", parent);
	if (from) {
		r = cache_create_seeded(j, m, from, base, k, dir, err);
		if (r < 0)
			return r;
	} else if (mkdir(dir, 0700) == 0) {
		if (chown(dir, m->uid, m->gid) < 0 || chmod(dir, m->mode) < 0)
			return kiln_err_errno(err, errno, "cache mount '%s'", m->id);
	} else if (errno != EEXIST) {
		return kiln_err_errno(err, errno, "mkdir '%s'", dir);
	}
	if (strcmp(m->sharing, "shared") != 0) {
		bool priv = strcmp(m->sharing, "private") == 0;

		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return kiln_err_errno(err, errno, "open '%s'", dir);
		while ((r = flock(fd, LOCK_EX | (priv ? LOCK_NB : 0))) < 0 && errno == EINTR)
			;
		if (r < 0 && priv && errno == EWOULDBLOCK) {
			free(dir);
			dir = kiln_strdupf("%s/cache-%zu", base, k);
			if (!dir)
				return kiln_err_set(err, ENOMEM, "out of memory");
			if (mkdir(dir, 0700) < 0)
				return kiln_err_errno(err, errno, "cache mount '%s'", m->id);
			if (from) {
				r = cache_seed(j, m, from, dir, err);
				if (r < 0)
					return r;
			} else if (chown(dir, m->uid, m->gid) < 0 || chmod(dir, m->mode) < 0) {
				return kiln_err_errno(err, errno, "cache mount '%s'", m->id);
			}
		} else if (r < 0) {
			return kiln_err_errno(err, errno, "lock cache mount '%s'", m->id);
		} else {
			if (rm->n_locks == sizeof(rm->locks) / sizeof(rm->locks[0]))
				return kiln_err_set(err, E2BIG, "too many locked cache mounts");
			rm->locks[rm->n_locks++] = STEAL_FD(fd);
		}
	}
	*ret_dir = STEAL_PTR(dir);
	return 0;
}

/* The source op's layers for a bind mount, as overlay lower dirs, with an
 * upper and work dir in the step's scratch dir: writes (rw) land there and
 * go with it; ro mounts are made read-only by kiln-run. */
static char *
bind_spec(struct job *j, const struct op_mount *m, size_t step, const char *base, size_t k,
	  struct kiln_err *err)
{
	const struct job_snap *snap;
	_cleanup_free_ char *lower = NULL;
	_cleanup_free_ char *upper = kiln_strdupf("%s/mount-%zu-upper", base, k);
	_cleanup_free_ char *work = kiln_strdupf("%s/mount-%zu-work", base, k);

	if (m->from < 0 || (size_t) m->from >= step) {
		kiln_err_set(err, KILN_EPROTO, "step %zu mounts step %d, which does not come before it",
			     step, m->from);
		return NULL;
	}
	snap = &j->snaps[m->from];
	if (!upper || !work)
		goto nomem;
	if (mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0) {
		kiln_err_errno(err, errno, "mkdir in '%s'", base);
		return NULL;
	}
	lower = stack_lowerdirs(j->state, snap->stack, snap->n_stack, err);
	if (!lower)
		return NULL;
	return kiln_strdupf("type=overlay,lower=%s,upper=%s,work=%s,src=%s,dst=%s%s", lower, upper, work,
			    m->source, m->target, m->ro ? ",ro" : "");
nomem:
	kiln_err_set(err, ENOMEM, "out of memory");
	return NULL;
}

/* Append kiln-run's --mount options for op's mounts to argv. */
static int
mount_args(struct job *j, size_t step, const struct op *op, const char *base, char ***argv,
	   size_t *argc, struct run_mounts *rm, struct kiln_err *err)
{
	for (size_t k = 0; k < op->n_mounts; k++) {
		const struct op_mount *m = &op->mounts[k];
		_cleanup_free_ char *spec = NULL;
		_cleanup_free_ char *dir = NULL;
		int r;

		switch (m->type) {
		case OP_MOUNT_CACHE: {
			/* without from=, source is a path inside the cache, which
			 * kiln-run resolves there (it may hold any symlink) */
			bool sub = m->from < 0 && m->source;

			r = cache_prepare(j, m, step, base, k, rm, &dir, err);
			if (r < 0)
				return r;
			spec = kiln_strdupf("type=bind,src=%s,dst=%s%s%s%s", dir, m->target, sub ? ",sub=" : "",
					    sub ? m->source : "", m->ro ? ",ro" : "");
			break;
		}
		case OP_MOUNT_TMPFS:
			spec = kiln_strdupf("type=tmpfs,dst=%s,size=%" PRIu64, m->target, m->size);
			break;
		case OP_MOUNT_BIND:
			spec = bind_spec(j, m, step, base, k, err);
			if (!spec)
				return -err->code;
			break;
		case OP_MOUNT_SECRET: {
			bool skip;

			spec = secret_spec(j, m, rm, &skip, err);
			if (skip)
				continue;
			if (!spec)
				return -err->code;
			break;
		}
		case OP_MOUNT_SSH: {
			bool skip;

			spec = ssh_spec(j, m, step, base, k, rm, &skip, err);
			if (skip)
				continue;
			if (!spec)
				return -err->code;
			break;
		}
		}
		if (!spec || op_add_arg(argv, argc, "--mount") < 0 || op_add_arg(argv, argc, spec) < 0)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

int
spawn_run(struct job *j, size_t step, const struct op *op, const char *base, job_emit_fn emit,
	  void *ctx, struct kiln_err *err)
{
	_cleanup_free_ char *lower = lowerdirs(j, err);
	_cleanup_free_ char *exe = kiln_sibling_exe("kiln-run");
	_cleanup_free_ char *upper = kiln_strdupf("%s/upper", base);
	_cleanup_free_ char *work = kiln_strdupf("%s/work", base);
	_cleanup_free_ char *mnt = kiln_strdupf("%s/mnt", base);
	char **argv = NULL, tail[TAIL_SIZE], last[TAIL_SIZE];
	size_t argc = 0, tail_len = 0;
	struct run_mounts rm = { .n_locks = 0 };
	posix_spawn_file_actions_t fa;
	int pipefd[2], status, r;
	pid_t pid;

	if (!lower)
		return -err->code;
	if (!exe || !upper || !work || !mnt)
		return kiln_err_set(err, ENOMEM, "out of memory");
#define ARG(s) do { if (op_add_arg(&argv, &argc, (s)) < 0) goto out_nomem; } while (0)
	ARG(exe);
	ARG("--lower");
	ARG(lower);
	ARG("--upper");
	ARG(upper);
	ARG("--work");
	ARG(work);
	ARG("--mnt");
	ARG(mnt);
	ARG("--cwd");
	ARG(op->cwd);
	ARG("--network");
	ARG(op->network && strcmp(op->network, "host") == 0 ? "host" : "none");
	if (op->user && *op->user) {
		ARG("--user");
		ARG(op->user);
	}
	for (size_t i = 0; i < op->n_env; i++) {
		ARG("--env");
		ARG(op->env[i]);
	}
	r = mount_args(j, step, op, base, &argv, &argc, &rm, err);
	if (r == 0 && rm.ssh)
		r = sshfwd_start(rm.ssh, err);
	if (r < 0)
		goto out;
	ARG("--");
	for (size_t i = 0; i < op->n_args; i++)
		ARG(op->args[i]);
	if (op_add_arg(&argv, &argc, "") < 0)
		goto out_nomem;
	free(argv[argc - 1]);
	argv[argc - 1] = NULL;
#undef ARG

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		r = kiln_err_errno(err, errno, "pipe");
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	for (size_t k = 0; k < rm.n_secret_fds; k++)
		posix_spawn_file_actions_adddup2(&fa, rm.secret_fds[k], SECRET_FD0 + (int) k);
	r = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r == 0) {
		atomic_store(&j->run_pid, (int) pid);
		if (atomic_load(&j->canceled))
			(void) kill(pid, SIGKILL);
	}
	close(pipefd[1]);
	/* kiln-run has its copies; ours go now, not when the step ends */
	for (size_t k = 0; k < rm.n_secret_fds; k++)
		close(rm.secret_fds[k]);
	rm.n_secret_fds = 0;
	if (r != 0) {
		close(pipefd[0]);
		r = kiln_err_errno(err, r, "spawn '%s'", exe);
		goto out;
	}
	for (;;) {
		char buf[16384];
		ssize_t n = read(pipefd[0], buf, sizeof(buf));
		struct proto_writer w;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		tail_append(tail, &tail_len, buf, (size_t) n);
		proto_writer_init(&w, "step.log", 0);
		proto_w_str(&w, "build", j->build);
		proto_w_u64(&w, "step", step);
		proto_w_bin(&w, "data", buf, (size_t) n);
		emit(ctx, &w);
		proto_writer_release(&w);
	}
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	atomic_store(&j->run_pid, 0);
	r = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		_cleanup_free_ char *cmd = NULL;
		size_t len = 0;

		for (size_t i = 0; i < op->n_args; i++)
			len += strlen(op->args[i]) + 1;
		/* Quoted as Go's %q does, so the message reads as BuildKit's. */
		cmd = calloc(1, 2 * len + 1);
		for (size_t i = 0, o = 0; cmd && i < op->n_args; i++) {
			if (i)
				cmd[o++] = ' ';
			for (const char *c = op->args[i]; *c; c++) {
				if (*c == '"' || *c == '\\')
					cmd[o++] = '\\';
				cmd[o++] = *c == '\n' ? ' ' : *c;
			}
		}
		tail_lines(tail, tail_len, last, sizeof(last));
		r = kiln_err_set(err, KILN_EBUILD,
				 "process \"%s\" did not complete successfully: exit code: %d%s%s",
				 cmd ? cmd : "", code, *last ? "\n" : "", last);
	}
	goto out;
out_nomem:
	r = kiln_err_set(err, ENOMEM, "out of memory");
out:
	run_mounts_release(&rm);
	op_strv_free(argv, argc);
	return r;
}
