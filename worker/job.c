/* Op execution. Each op gets a fresh upper directory under STATE/tmp; its
 * changes become a layer (deterministic tar+gzip in the blob store) and the
 * directory is adopted as that layer's extracted form, so the next op stacks
 * it as an overlay lower dir without extracting anything.
 *
 * This runs on a job thread of the threaded worker, so processes are started
 * with posix_spawn (no fork of a threaded process); namespaces and mounts
 * happen in kiln-run. */
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

#define TAIL_SIZE 2048                   /* output kept for the error message */

extern char **environ;

static void
emit_step(struct job *j, job_emit_fn emit, void *ctx, const char *type, size_t step,
	  const struct op_layer *layer)
{
	struct proto_writer w;
	char s[DIGEST_STR_SIZE];

	proto_writer_init(&w, type, 0);
	proto_w_str(&w, "build", j->build);
	proto_w_u64(&w, "step", step);
	if (layer) {
		msgpack_packer *pk = proto_w_key(&w, "layer");

		msgpack_pack_map(pk, 4);
		proto_pack_str(pk, "digest");
		proto_pack_str(pk, digest_fmt(&layer->digest, s));
		proto_pack_str(pk, "diff_id");
		proto_pack_str(pk, digest_fmt(&layer->diff_id, s));
		proto_pack_str(pk, "size");
		msgpack_pack_uint64(pk, layer->size);
		/* Every layer a job makes has the job's compression. */
		proto_pack_str(pk, "media_type");
		proto_pack_str(pk, layer_compression_media_type(j->compression, true));
	}
	emit(ctx, &w);
	proto_writer_release(&w);
}

static int
stack_push(struct job *j, char *dir)
{
	char **n = realloc(j->stack, (j->n_stack + 1) * sizeof(char *));

	if (!n) {
		free(dir);
		return -ENOMEM;
	}
	memmove(n + 1, n, j->n_stack * sizeof(char *));
	n[0] = dir;
	j->stack = n;
	j->n_stack++;
	return 0;
}

static int
layers_push(struct job *j, const struct op_layer *l)
{
	struct op_layer *n = realloc(j->layers, (j->n_layers + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	n[j->n_layers++] = *l;
	j->layers = n;
	return 0;
}

/* Layers of a registry image that this node does not hold yet come from
 * the registry, verified into the blob store. */
static int
pull_layers(struct job *j, size_t step, const struct op *op, job_emit_fn emit, void *ctx,
	    struct kiln_err *err)
{
	struct oci_descriptor *descs = calloc(op->n_layers + 1, sizeof(*descs));
	struct registry_ref ref;
	uint64_t bytes = 0;
	size_t n = 0;
	int r;

	if (!descs)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < op->n_layers; i++) {
		if (cas_has(j->cas, &op->layers[i].digest))
			continue;
		snprintf(descs[n].media_type, sizeof(descs[n].media_type), "%s", OCI_MT_LAYER_GZ);
		descs[n].digest = op->layers[i].digest;
		descs[n].size = (int64_t) op->layers[i].size;
		bytes += op->layers[i].size;
		n++;
	}
	r = 0;
	if (n) {
		char line[REGISTRY_REF_STR_SIZE + 96], sz[32];
		struct proto_writer w;

		if (!j->reg) {
			free(descs);
			return kiln_err_set(err, ENOTSUP, "this node has no registry client to pull '%s'", op->ref);
		}
		snprintf(sz, sizeof(sz), "%.1f MB", (double) bytes / 1e6);
		snprintf(line, sizeof(line), "pulling %zu layer%s (%s) from %s\n", n, n == 1 ? "" : "s", sz,
			 op->ref);
		proto_writer_init(&w, "step.log", 0);
		proto_w_str(&w, "build", j->build);
		proto_w_u64(&w, "step", step);
		proto_w_bin(&w, "data", line, strlen(line));
		emit(ctx, &w);
		proto_writer_release(&w);
		r = registry_ref_parse(op->ref, &ref, err);
		if (r == 0)
			r = registry_fetch_blobs(j->reg, &ref, descs, n, j->cas, err);
		if (r < 0)
			kiln_err_wrap(err, "pull '%s'", op->ref);
	}
	free(descs);
	return r;
}

static int
run_image(struct job *j, const struct op *op, struct kiln_err *err)
{
	for (size_t i = 0; i < op->n_layers; i++) {
		char *dir;
		int r = snap_ensure_layer(j->state, j->cas, &op->layers[i], &dir, err);

		if (r < 0)
			return r;
		if (stack_push(j, dir) < 0 || layers_push(j, &op->layers[i]) < 0)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

/* A fresh STATE/tmp/<build>-<step>-XXXXXX with upper/ (and work/, mnt/ for
 * overlay). Caller owns *ret_base and removes it. */
static int
make_scratch(struct job *j, size_t step, char **ret_base, struct kiln_err *err)
{
	_cleanup_free_ char *tmp = kiln_strdupf("%s/tmp", j->state);
	_cleanup_free_ char *base = NULL;
	char *sub;
	int r;

	if (!tmp)
		return kiln_err_set(err, ENOMEM, "out of memory");
	r = kiln_mkdir_p(tmp, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "mkdir '%s'", tmp);
	base = kiln_strdupf("%s/%s-%zu-XXXXXX", tmp, j->build, step);
	if (!base || !mkdtemp(base))
		return kiln_err_errno(err, errno ? errno : ENOMEM, "mkdtemp in '%s'", tmp);
	for (const char *d = "upper\0work\0mnt\0"; *d; d += strlen(d) + 1) {
		sub = kiln_strdupf("%s/%s", base, d);
		if (!sub || mkdir(sub, 0755) < 0) {
			free(sub);
			return kiln_err_errno(err, errno ? errno : ENOMEM, "mkdir in '%s'", base);
		}
		free(sub);
	}
	*ret_base = STEAL_PTR(base);
	return 0;
}

/* Turn upper into a layer (unless it is empty) and stack it. */
static int
finish_layer(struct job *j, const char *upper, struct op_layer *ret, bool *ret_has,
	     struct kiln_err *err)
{
	struct layer_info li;
	char *dir;
	int r;

	*ret_has = false;
	r = layer_make(j->cas, upper, j->compression, j->compression_level, &li, err);
	if (r < 0)
		return r;
	if (r == 1)
		return 0;
	ret->digest = li.digest;
	ret->diff_id = li.diff_id;
	ret->size = li.size;
	r = snap_adopt(j->state, upper, &li.diff_id, &dir, err);
	if (r < 0)
		return r;
	if (stack_push(j, dir) < 0 || layers_push(j, ret) < 0)
		return kiln_err_set(err, ENOMEM, "out of memory");
	*ret_has = true;
	return 0;
}

static char *
lowerdirs(struct job *j, struct kiln_err *err)
{
	size_t len = 1;
	char *s, *p;

	if (j->n_stack == 0) {
		char *empty;

		if (snap_empty_dir(j->state, &empty, err) < 0)
			return NULL;
		return empty;
	}
	for (size_t i = 0; i < j->n_stack; i++)
		len += strlen(j->stack[i]) + 1;
	s = p = malloc(len);
	if (!s) {
		kiln_err_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < j->n_stack; i++)
		p += sprintf(p, "%s%s", i ? ":" : "", j->stack[i]);
	return s;
}

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

static const struct job_secret *
secret_find(const struct job *j, const char *id)
{
	for (size_t i = 0; i < j->n_secrets; i++)
		if (strcmp(j->secrets[i].id, id) == 0)
			return &j->secrets[i];
	return NULL;
}

int
job_add_secret(struct job *j, const char *id, size_t id_len, const void *value, size_t len,
	       struct kiln_err *err)
{
	struct job_secret *sec = NULL, *v;
	char *copy;

	if (len > JOB_SECRET_MAX)
		return kiln_err_set(err, E2BIG, "secret %.*s is larger than %u bytes", (int) id_len, id,
				    JOB_SECRET_MAX);
	if (id_len == 0 || memchr(id, '\0', id_len))
		return kiln_err_set(err, KILN_EPROTO, "secret with a bad id");
	for (size_t i = 0; i < j->n_secrets && !sec; i++)
		if (strlen(j->secrets[i].id) == id_len && memcmp(j->secrets[i].id, id, id_len) == 0)
			sec = &j->secrets[i];
	copy = malloc(len + 1);
	if (!copy)
		return kiln_err_set(err, ENOMEM, "out of memory");
	memcpy(copy, value, len);
	copy[len] = '\0';
	if (sec) {
		explicit_bzero(sec->value, sec->len);
		free(sec->value);
		sec->value = copy;
		sec->len = len;
		return 0;
	}
	if (j->n_secrets == JOB_SECRETS_MAX) {
		explicit_bzero(copy, len);
		free(copy);
		return kiln_err_set(err, E2BIG, "more than %d secrets", JOB_SECRETS_MAX);
	}
	/* grown one by one into a fresh array: realloc moves only pointers */
	v = realloc(j->secrets, (j->n_secrets + 1) * sizeof(*v));
	if (!v || !(v[j->n_secrets].id = strndup(id, id_len))) {
		if (v)
			j->secrets = v;
		explicit_bzero(copy, len);
		free(copy);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	j->secrets = v;
	v[j->n_secrets].value = copy;
	v[j->n_secrets].len = len;
	j->n_secrets++;
	return 0;
}

void
job_secrets_wipe(struct job *j)
{
	for (size_t i = 0; i < j->n_secrets; i++) {
		explicit_bzero(j->secrets[i].value, j->secrets[i].len);
		free(j->secrets[i].value);
		free(j->secrets[i].id);
	}
	free(j->secrets);
	j->secrets = NULL;
	j->n_secrets = 0;
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

static int cache_seed(struct job *j, const struct op_mount *m, const struct job_snap *from,
		      const char *dir, struct kiln_err *err);

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
	size_t len = 1;

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
	if (snap->n_stack == 0) {
		if (snap_empty_dir(j->state, &lower, err) < 0)
			return NULL;
	} else {
		char *p;

		for (size_t i = 0; i < snap->n_stack; i++)
			len += strlen(snap->stack[i]) + 1;
		lower = p = malloc(len);
		if (!lower)
			goto nomem;
		for (size_t i = 0; i < snap->n_stack; i++)
			p += sprintf(p, "%s%s", i ? ":" : "", snap->stack[i]);
	}
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

static int
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

/* Copy size bytes from in to out (in the kernel where it can); what names
 * the file in an error. */
static int
copy_bytes(int in, int out, off_t size, const char *what, struct kiln_err *err)
{
	for (off_t left = size; left > 0; ) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t) left, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return kiln_err_errno(err, n < 0 ? errno : EIO, "copy '%s'", what);
		left -= n;
	}
	return 0;
}

static int
copy_blob(struct job *j, const struct op_entry *e, const char *dst, struct kiln_err *err)
{
	char src[4096], s[DIGEST_STR_SIZE];
	_cleanup_close_ int in = -1;
	_cleanup_close_ int out = -1;
	struct stat st;

	cas_path(j->cas, &e->digest, src, sizeof(src));
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return kiln_err_errno(err, errno, "context file %s for '%s'", digest_fmt(&e->digest, s),
				      e->path);
	if (fstat(in, &st) < 0)
		return kiln_err_errno(err, errno, "stat '%s'", src);
	(void) unlink(dst);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
		return kiln_err_errno(err, errno, "create '%s'", e->path);
	return copy_bytes(in, out, st.st_size, e->path, err);
}

static int
set_meta(const char *path, uint32_t mode, uint32_t uid, uint32_t gid, int64_t mtime, bool link,
	 struct kiln_err *err)
{
	struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };

	if (lchown(path, uid, gid) < 0)
		return kiln_err_errno(err, errno, "chown '%s'", path);
	if (!link && chmod(path, mode) < 0)
		return kiln_err_errno(err, errno, "chmod '%s'", path);
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_errno(err, errno, "set times of '%s'", path);
	return 0;
}

/* Create the parents of path (absolute, in the image) inside upper with the
 * metadata they have in the snapshot below, so that the layer carries the
 * same directory modes and owners as the image already had. Parents that
 * do not exist below are made 0755 and owned by uid:gid (BuildKit's
 * MkdirAll with the copy's --chown or the WORKDIR's user). */
static int
prepare_parents(struct job *j, const char *upper, const char *path, uint32_t uid, uint32_t gid,
		struct kiln_err *err)
{
	_cleanup_free_ char *p = strdup(path);
	int64_t now = j->epoch >= 0 ? j->epoch : (int64_t) time(NULL);
	char *c;

	if (!p)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (c = p + 1; (c = strchr(c, '/')); c++) {
		_cleanup_free_ char *full = NULL;
		struct stat st, below;

		*c = '\0';
		full = kiln_strdupf("%s%s", upper, p);
		if (!full)
			return kiln_err_set(err, ENOMEM, "out of memory");
		if (lstat(full, &st) == 0) {
			*c = '/';
			if (!S_ISDIR(st.st_mode))
				return kiln_err_set(err, ENOTDIR, "'%s' is not a directory", p);
			continue;
		}
		if (snap_lookup(j->stack, j->n_stack, p, &below) == 1) {
			if (!S_ISDIR(below.st_mode)) {
				*c = '/';
				return kiln_err_set(err, ENOTDIR, "cannot copy to '%s': a parent is not a directory",
						    path);
			}
		} else {
			memset(&below, 0, sizeof(below));
			below.st_mode = S_IFDIR | 0755;
			below.st_uid = uid;
			below.st_gid = gid;
			below.st_mtim.tv_sec = now;
		}
		if (mkdir(full, 0700) < 0)
			return kiln_err_errno(err, errno, "mkdir '%s'", p);
		if (set_meta(full, below.st_mode & 07777, below.st_uid, below.st_gid,
			     below.st_mtim.tv_sec, false, err) < 0)
			return -err->code;
		*c = '/';
	}
	return 0;
}

/* ADD of a local file: when its content is a tar archive, extract it into
 * e->unpack_dir and return 0; 1 when it is not an archive. */
static int
unpack_entry(struct job *j, const struct op_entry *e, const char *upper, int64_t uid, int64_t gid,
	     struct kiln_err *err)
{
	_cleanup_free_ char *dir = kiln_strdupf("%s%s", upper, strcmp(e->unpack_dir, "/") ? e->unpack_dir : "");
	_cleanup_free_ char *probe = kiln_strdupf("%s/.", e->unpack_dir);
	char src[4096];
	struct stat st;
	bool made;
	int r;

	if (!dir || !probe)
		return kiln_err_set(err, ENOMEM, "out of memory");
	cas_path(j->cas, &e->digest, src, sizeof(src));
	made = lstat(dir, &st) < 0;
	/* dest and its parents, with the metadata they have below */
	r = prepare_parents(j, upper, probe, uid >= 0 ? (uint32_t) uid : 0, gid >= 0 ? (uint32_t) gid : 0,
			    err);
	if (r < 0)
		return r;
	r = layer_unpack_archive(src, dir, uid, gid, err);
	if (r < 0)
		return kiln_err_wrap(err, "ADD: extract '%s'", e->path);
	if (r == 1 && made)
		(void) rmdir(dir);      /* not an archive: the file goes to e->path */
	return r;
}

/* ---- --chown names, resolved in the destination's /etc/passwd and
 * /etc/group (BuildKit reads them from the snapshot the copy goes into) ---- */

#define DB_MAX (4 << 20)

/* Field 2 (uid or gid) and, for passwd, field 3 (primary gid) of the line
 * of db (relative to the image root, e.g. "etc/passwd") naming name. */
static int
db_lookup(struct job *j, const char *db, const char *name, uint32_t *ret_id, uint32_t *ret_gid,
	  bool *ret_found, struct kiln_err *err)
{
	_cleanup_free_ char *real = NULL;
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0;
	int r;

	*ret_found = false;
	if (snap_resolve(j->stack, j->n_stack, db, &st, &real) != 1 || !S_ISREG(st.st_mode))
		return 0;
	r = kiln_read_file_at(AT_FDCWD, real, DB_MAX, &buf, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "read '%s'", db);
	for (char *line = buf, *next; line && line < buf + len; line = next) {
		char *f[4] = { 0 };
		char *nl = memchr(line, '\n', (size_t) (buf + len - line));
		char *p = line;
		size_t n = 0;

		next = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		while (n < 4 && p) {
			f[n++] = p;
			p = strchr(p, ':');
			if (p)
				*p++ = '\0';
		}
		if (n < 3 || strcmp(f[0], name) != 0)
			continue;
		*ret_id = (uint32_t) strtoul(f[2], NULL, 10);
		if (ret_gid && n >= 4)
			*ret_gid = (uint32_t) strtoul(f[3], NULL, 10);
		*ret_found = true;
		return 0;
	}
	return 0;
}

static bool
is_number(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long v;

	if (!*s || strspn(s, "0123456789") != strlen(s))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || v > UINT32_MAX)
		return false;
	*ret = (uint32_t) v;
	return true;
}

/* uid and gid of user[:group] (names or numbers; NULL keeps uid or gid)
 * as BuildKit's readUser: a user name gives its uid and primary group, a
 * number gives itself for both, and group overrides the gid. */
static int
resolve_ids(struct job *j, const char *user, const char *group, uint32_t uid, uint32_t gid,
	    uint32_t *ret_uid, uint32_t *ret_gid, struct kiln_err *err)
{
	bool found;
	int r;

	if (user && !is_number(user, &uid)) {
		r = db_lookup(j, "/etc/passwd", user, &uid, &gid, &found, err);
		if (r < 0)
			return r;
		if (!found)
			return kiln_err_set(err, ENOENT, "unable to find user %s: no matching entries in "
					    "passwd file", user);
	} else if (user) {
		gid = uid;
	}
	if (group && !is_number(group, &gid)) {
		r = db_lookup(j, "/etc/group", group, &gid, NULL, &found, err);
		if (r < 0)
			return r;
		if (!found)
			return kiln_err_set(err, ENOENT, "unable to find group %s: no matching entries in "
					    "group file", group);
	}
	*ret_uid = uid;
	*ret_gid = gid;
	return 0;
}

/* uid and gid for op's --chown: the numbers the planner put in op->uid and
 * op->gid, overridden by what the names resolve to. */
static int
job_resolve_chown(struct job *j, const struct op *op, uint32_t *ret_uid, uint32_t *ret_gid,
		  struct kiln_err *err)
{
	return resolve_ids(j, op->chown_user, op->chown_group, op->uid, op->gid, ret_uid, ret_gid, err);
}

/* Is path (absolute, in the image) a directory, in upper or below it? */
static bool
dir_exists(struct job *j, const char *upper, const char *path)
{
	_cleanup_free_ char *full = kiln_strdupf("%s%s", upper, strcmp(path, "/") ? path : "");
	struct stat st;

	if (full && lstat(full, &st) == 0)
		return S_ISDIR(st.st_mode);
	return snap_lookup(j->stack, j->n_stack, path, &st) == 1 && S_ISDIR(st.st_mode);
}

/* A copy's destination directory that the snapshot below already has: it
 * keeps its metadata (BuildKit copies into it without touching it). */
static bool
root_kept(struct job *j, const struct op_entry *e)
{
	struct stat st;

	return e->is_root && snap_lookup(j->stack, j->n_stack, e->path, &st) == 1 && S_ISDIR(st.st_mode);
}

/* ---- ADD https://... ---- */

#define URL_MAX ((curl_off_t) 16 << 30)    /* bytes of one download */

struct dl {
	int fd;
	struct digest_ctx *dc;
	int werr;
};

static size_t
dl_write(char *data, size_t size, size_t nmemb, void *p)
{
	struct dl *d = p;
	size_t n = size * nmemb;

	if (kiln_write_all(d->fd, data, n) < 0) {
		d->werr = errno ? errno : EIO;
		return 0;
	}
	digest_ctx_update(d->dc, data, n);
	return n;
}

/* Download e->url to dst (created 0600), verify the checksum, and return
 * the Last-Modified time (or -1). */
static int
download(const struct op_entry *e, const char *dst, int64_t *ret_mtime, struct kiln_err *err)
{
	struct dl d = { .fd = -1 };
	char ebuf[CURL_ERROR_SIZE] = "";
	curl_off_t ft = -1;
	struct digest got;
	long status = 0;
	CURL *c;
	CURLcode cr;
	int r = 0;

	(void) unlink(dst);
	d.fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (d.fd < 0)
		return kiln_err_errno(err, errno, "create '%s'", e->path);
	d.dc = digest_ctx_new();
	c = curl_easy_init();
	if (!c || !d.dc) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, e->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(c, CURLOPT_FILETIME, 1L);
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, URL_MAX);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "kiln");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
	cr = curl_easy_perform(c);
	if (cr != CURLE_OK) {
		r = d.werr ? kiln_err_errno(err, d.werr, "write '%s'", e->path)
			   : kiln_err_set(err, EIO, "ADD %s: %s", e->url, *ebuf ? ebuf : curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		r = kiln_err_set(err, EIO, "ADD %s: invalid response status %ld", e->url, status);
		goto out;
	}
	digest_ctx_final(d.dc, &got);
	if (e->has_checksum && !digest_equal(&got, &e->checksum)) {
		char a[DIGEST_STR_SIZE], b[DIGEST_STR_SIZE];

		r = kiln_err_set(err, EBADMSG, "ADD %s: digest mismatch %s: %s", e->url,
				 digest_fmt(&e->checksum, a), digest_fmt(&got, b));
		goto out;
	}
	if (curl_easy_getinfo(c, CURLINFO_FILETIME_T, &ft) != CURLE_OK)
		ft = -1;
	*ret_mtime = ft;
out:
	if (c)
		curl_easy_cleanup(c);
	digest_ctx_free(d.dc);
	(void) close(d.fd);
	return r;
}

static int
apply_copy(struct job *j, const struct op *op, const char *upper, struct kiln_err *err)
{
	uint32_t uid = op->uid, gid = op->gid;
	bool names = op->chown_user || op->chown_group;
	uint32_t new_uid, new_gid;              /* owners of the directories the copy makes */
	int r;

	if (names) {
		r = job_resolve_chown(j, op, &uid, &gid, err);
		if (r < 0)
			return r;
	}
	new_uid = names || op->chown ? uid : 0;
	new_gid = names || op->chown ? gid : 0;

	for (size_t i = 0; i < op->n_entries; i++) {
		const struct op_entry *e = &op->entries[i];
		const char *path = e->path;
		_cleanup_free_ char *dst = NULL;
		struct stat st;

		/* COPY file /dir (no slash) where /dir is a directory: inside it */
		if (e->path_if_dir && dir_exists(j, upper, e->path))
			path = e->path_if_dir;
		dst = kiln_strdupf("%s%s", upper, path);
		if (!dst)
			return kiln_err_set(err, ENOMEM, "out of memory");
		if (root_kept(j, e))
			continue;       /* what goes inside makes it in upper, as a parent */
		r = prepare_parents(j, upper, path, new_uid, new_gid, err);
		if (r < 0)
			return r;
		switch (e->kind) {
		case OP_ENTRY_DIR:
			if (lstat(dst, &st) == 0 && S_ISDIR(st.st_mode))
				break;
			(void) unlink(dst);
			if (mkdir(dst, 0700) < 0)
				return kiln_err_errno(err, errno, "mkdir '%s'", path);
			break;
		case OP_ENTRY_FILE:
			if (e->unpack_dir) {
				r = unpack_entry(j, e, upper, names ? (int64_t) uid : -1,
						 names ? (int64_t) gid : -1, err);
				if (r < 0)
					return r;
				if (r == 0)
					continue;
			}
			r = copy_blob(j, e, dst, err);
			if (r < 0)
				return r;
			break;
		case OP_ENTRY_URL: {
			int64_t mtime = -1;

			r = download(e, dst, &mtime, err);
			if (r < 0)
				return r;
			if (mtime < 0)
				mtime = j->epoch >= 0 ? j->epoch : (int64_t) time(NULL);
			r = set_meta(dst, e->mode, names ? uid : e->uid, names ? gid : e->gid, mtime, false,
				     err);
			if (r < 0)
				return r;
			continue;
		}
		case OP_ENTRY_SYMLINK:
			(void) unlink(dst);
			if (symlink(e->link, dst) < 0)
				return kiln_err_errno(err, errno, "symlink '%s'", path);
			break;
		}
		if (e->kind != OP_ENTRY_DIR) {
			r = set_meta(dst, e->mode, names ? uid : e->uid, names ? gid : e->gid, e->mtime,
				     e->kind == OP_ENTRY_SYMLINK, err);
			if (r < 0)
				return r;
		}
	}
	/* Directory times last, children first, since filling a directory
	 * changes its mtime. */
	for (size_t i = op->n_entries; i-- > 0; ) {
		const struct op_entry *e = &op->entries[i];
		_cleanup_free_ char *dst = NULL;

		if (e->kind != OP_ENTRY_DIR || root_kept(j, e))
			continue;
		dst = kiln_strdupf("%s%s", upper, e->path);
		if (!dst)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = set_meta(dst, e->mode, names ? uid : e->uid, names ? gid : e->gid, e->mtime, false, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int
apply_mkdir(struct job *j, const struct op *op, const char *upper, struct kiln_err *err)
{
	_cleanup_free_ char *dst = kiln_strdupf("%s%s", upper, op->path);
	int64_t now = j->epoch >= 0 ? j->epoch : (int64_t) time(NULL);
	uint32_t uid = 0, gid = 0;
	struct stat st;
	int r;

	if (!dst)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (snap_lookup(j->stack, j->n_stack, op->path, &st) == 1) {
		if (!S_ISDIR(st.st_mode))
			return kiln_err_set(err, ENOTDIR, "WORKDIR '%s' exists and is not a directory",
					    op->path);
		return 0;
	}
	if (op->user && *op->user) {
		/* USER's uid[:gid] or names, in this image's passwd and group */
		const char *colon = strchr(op->user, ':');
		_cleanup_free_ char *user = colon ? strndup(op->user, (size_t) (colon - op->user))
						  : strdup(op->user);

		if (!user)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = resolve_ids(j, user, colon ? colon + 1 : NULL, 0, 0, &uid, &gid, err);
		if (r < 0)
			return kiln_err_wrap(err, "WORKDIR %s", op->path);
	}
	r = prepare_parents(j, upper, op->path, uid, gid, err);
	if (r < 0)
		return r;
	if (mkdir(dst, 0755) < 0)
		return kiln_err_errno(err, errno, "mkdir '%s'", op->path);
	return set_meta(dst, 0755, uid, gid, now, false, err);
}

/* ---- COPY --from: sources resolved in another op's result ---- */

static bool
has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* Expand pattern (absolute, globs in any component) against the snapshot
 * src into matching absolute paths, sorted. */
static int
glob_snapshot(const struct job_snap *src, const char *pattern, char ***ret, size_t *ret_n,
	      struct kiln_err *err)
{
	char **cur = NULL, **next = NULL;
	size_t n_cur = 0, n_next = 0;
	_cleanup_free_ char *pat = strdup(pattern);
	char *save = NULL;
	int r;

	if (!pat || op_add_arg(&cur, &n_cur, "") < 0)
		goto nomem;
	for (char *comp = strtok_r(pat, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		for (size_t i = 0; i < n_cur; i++) {
			char **names = NULL;
			size_t n_names = 0;

			if (!has_glob(comp)) {
				_cleanup_free_ char *p = kiln_strdupf("%s/%s", cur[i], comp);

				if (!p || op_add_arg(&next, &n_next, p) < 0)
					goto nomem;
				continue;
			}
			r = snap_readdir(src->stack, src->n_stack, *cur[i] ? cur[i] : "/", &names, &n_names, err);
			if (r < 0) {
				op_strv_free(cur, n_cur);
				op_strv_free(next, n_next);
				return r;
			}
			for (size_t k = 0; k < n_names; k++) {
				_cleanup_free_ char *p = NULL;

				if (fnmatch(comp, names[k], FNM_PERIOD) != 0)
					continue;
				p = kiln_strdupf("%s/%s", cur[i], names[k]);
				if (!p || op_add_arg(&next, &n_next, p) < 0) {
					op_strv_free(names, n_names);
					goto nomem;
				}
			}
			op_strv_free(names, n_names);
		}
		op_strv_free(cur, n_cur);
		cur = next;
		n_cur = n_next;
		next = NULL;
		n_next = 0;
	}
	/* Keep what exists. */
	for (size_t i = 0; i < n_cur; i++) {
		struct stat st;

		if (snap_lookup(src->stack, src->n_stack, *cur[i] ? cur[i] : "/", &st) == 1 &&
		    op_add_arg(&next, &n_next, *cur[i] ? cur[i] : "/") < 0)
			goto nomem;
	}
	op_strv_free(cur, n_cur);
	*ret = next;
	*ret_n = n_next;
	return 0;
nomem:
	op_strv_free(cur, n_cur);
	op_strv_free(next, n_next);
	return kiln_err_set(err, ENOMEM, "out of memory");
}

/* What COPY --from applies to every entry it copies. */
struct copy_from {
	bool chown;
	uint32_t uid, gid;              /* names already resolved */
	const struct ignore *exclude;   /* NULL: none */
};

/* Copy the entry at spath (absolute, in src) to dpath (absolute, in the
 * image) inside upper; directories recursively. rel: spath relative to the
 * source being copied ("" for the source itself), what --exclude matches. */
static int
copy_entry(struct job *j, const struct op *op, const struct copy_from *cf, const struct job_snap *src,
	   const char *spath, const char *rel, const char *dpath, const char *upper, struct kiln_err *err)
{
	_cleanup_free_ char *real = NULL;
	_cleanup_free_ char *dst = kiln_strdupf("%s%s", upper, strcmp(dpath, "/") ? dpath : "");
	struct stat st, have;
	uint32_t uid, gid, mode;
	int r;

	if (!dst)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (snap_resolve(src->stack, src->n_stack, spath, &st, &real) != 1)
		return kiln_err_set(err, ENOENT, "COPY --from: \"%s\": not found", spath);
	if (cf->exclude && *rel) {
		bool skip = false;

		r = ignore_match(cf->exclude, rel, &skip, err);
		if (r < 0)
			return kiln_err_wrap(err, "COPY --exclude");
		if (skip)
			return 0;
	}
	uid = cf->chown ? cf->uid : st.st_uid;
	gid = cf->chown ? cf->gid : st.st_gid;
	mode = op->chmod ? op->mode :
	       op->chmod_spec ? op_mode_apply(op->chmod_spec, st.st_mode & 07777, S_ISDIR(st.st_mode)) :
	       (st.st_mode & 07777);
	if (strcmp(dpath, "/") != 0) {
		r = prepare_parents(j, upper, dpath, cf->chown ? cf->uid : 0, cf->chown ? cf->gid : 0, err);
		if (r < 0)
			return r;
	}
	if (S_ISDIR(st.st_mode)) {
		/* The destination itself (BuildKit's MkdirAll of dest): made 0755
		 * with --chown's owners, or left as it is when it exists. What
		 * goes inside an existing one makes it in upper as a parent. */
		bool root = !*rel, kept = root && dir_exists(j, upper, dpath);
		char **names = NULL;
		size_t n_names = 0;

		if (root && !kept) {
			mode = 0755;
			uid = cf->chown ? cf->uid : 0;
			gid = cf->chown ? cf->gid : 0;
		}
		if (!kept && (lstat(dst, &have) < 0 || !S_ISDIR(have.st_mode))) {
			(void) unlink(dst);
			if (mkdir(dst, 0700) < 0)
				return kiln_err_errno(err, errno, "mkdir '%s'", dpath);
		}
		r = snap_readdir(src->stack, src->n_stack, spath, &names, &n_names, err);
		for (size_t i = 0; r == 0 && i < n_names; i++) {
			_cleanup_free_ char *s2 = kiln_strdupf("%s/%s", strcmp(spath, "/") ? spath : "", names[i]);
			_cleanup_free_ char *d2 = kiln_strdupf("%s/%s", strcmp(dpath, "/") ? dpath : "", names[i]);
			_cleanup_free_ char *r2 = *rel ? kiln_strdupf("%s/%s", rel, names[i]) : strdup(names[i]);

			r = s2 && d2 && r2 ? copy_entry(j, op, cf, src, s2, r2, d2, upper, err)
					   : kiln_err_set(err, ENOMEM, "out of memory");
		}
		op_strv_free(names, n_names);
		if (r < 0 || kept)
			return r;
		/* After the children, since adding them changes the mtime. */
		return set_meta(dst, mode, uid, gid, st.st_mtim.tv_sec, false, err);
	}
	(void) unlink(dst);
	if (S_ISREG(st.st_mode)) {
		_cleanup_close_ int in = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		_cleanup_close_ int out = -1;

		if (in < 0)
			return kiln_err_errno(err, errno, "open '%s'", spath);
		out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (out < 0)
			return kiln_err_errno(err, errno, "create '%s'", dpath);
		r = copy_bytes(in, out, st.st_size, spath, err);
		if (r < 0)
			return r;
	} else if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlink(real, target, sizeof(target) - 1);

		if (n < 0)
			return kiln_err_errno(err, errno, "readlink '%s'", spath);
		target[n] = '\0';
		if (symlink(target, dst) < 0)
			return kiln_err_errno(err, errno, "symlink '%s'", dpath);
		return set_meta(dst, 0777, uid, gid, st.st_mtim.tv_sec, true, err);
	} else {
		/* Devices, fifos and sockets keep their kind. */
		if (mknod(dst, st.st_mode & S_IFMT, st.st_rdev) < 0)
			return kiln_err_errno(err, errno, "mknod '%s'", dpath);
	}
	return set_meta(dst, mode, uid, gid, st.st_mtim.tv_sec, false, err);
}

static int copy_from_srcs(struct job *j, const struct op *op, const struct copy_from *cf,
			  const struct job_snap *src, const char *upper, struct kiln_err *err);

static int
apply_copy_from(struct job *j, const struct op *op, const struct job_snap *src, const char *upper,
		struct kiln_err *err)
{
	struct copy_from cf = { .chown = op->chown, .uid = op->uid, .gid = op->gid };
	struct ignore *ig = NULL;
	int r = 0;

	if (op->chown_user || op->chown_group) {
		r = job_resolve_chown(j, op, &cf.uid, &cf.gid, err);
		if (r < 0)
			return r;
		cf.chown = true;
	}
	if (op->n_excludes) {
		r = ignore_new((const char *const *) op->excludes, op->n_excludes, &ig, err);
		if (r < 0)
			return kiln_err_wrap(err, "COPY --exclude");
		cf.exclude = ig;
	}
	r = copy_from_srcs(j, op, &cf, src, upper, err);
	ignore_free(ig);
	return r;
}

static int
copy_from_srcs(struct job *j, const struct op *op, const struct copy_from *cf, const struct job_snap *src,
	       const char *upper, struct kiln_err *err)
{
	for (size_t i = 0; i < op->n_srcs; i++) {
		char **matches = NULL;
		size_t n = 0;
		int r;

		r = glob_snapshot(src, op->srcs[i], &matches, &n, err);
		if (r < 0)
			return r;
		if (n == 0)
			return kiln_err_set(err, ENOENT, "COPY --from: \"%s\": not found", op->srcs[i]);
		for (size_t k = 0; r == 0 && k < n; k++) {
			const char *base = strrchr(matches[k], '/');
			_cleanup_free_ char *spath = NULL;
			_cleanup_free_ char *to = NULL;
			struct stat st;
			bool dir;

			/* BuildKit follows a source that is a symlink, within the
			 * source's filesystem; links inside a copied directory stay */
			r = snap_follow(src->stack, src->n_stack, matches[k], &spath);
			if (r < 0) {
				r = kiln_err_errno(err, -r, "COPY --from: \"%s\"", matches[k]);
				break;
			}
			dir = snap_lookup(src->stack, src->n_stack, spath, &st) == 1 && S_ISDIR(st.st_mode);
			/* a file goes inside dest when it ends in "/" or is a directory */
			if (!dir && (op->into_dir || dir_exists(j, upper, op->dest)))
				to = kiln_strdupf("%s/%s", strcmp(op->dest, "/") ? op->dest : "",
						  base ? base + 1 : matches[k]);
			else
				to = strdup(op->dest);
			/* a wildcard's matches are excluded as paths of the source */
			if (r == 0 && to && cf->exclude && has_glob(op->srcs[i])) {
				bool skip = false;

				r = ignore_match(cf->exclude, matches[k] + 1, &skip, err);
				if (r == 0 && skip)
					continue;
			}
			if (r == 0)
				r = to ? copy_entry(j, op, cf, src, spath, "", to, upper, err)
				       : kiln_err_set(err, ENOMEM, "out of memory");
		}
		op_strv_free(matches, n);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- cache mounts that start from an op's result ---- */

/* Fill dir (new and empty) with what from has at m's source, which must be
 * a directory: its contents, and its mode, owners and time for dir. A
 * missing root (an empty result) gives an empty 0755 dir. */
static int
cache_seed(struct job *j, const struct op_mount *m, const struct job_snap *from, const char *dir,
	   struct kiln_err *err)
{
	static const struct op none = { .kind = OP_COPY_FROM };
	static const struct copy_from plain = { .chown = false };
	const char *source = m->source ? m->source : "/";
	_cleanup_free_ char *spath = NULL;
	struct stat st;
	int r;

	/* BuildKit follows the source's symlinks inside from's filesystem */
	r = snap_follow(from->stack, from->n_stack, source, &spath);
	if (r < 0)
		return kiln_err_errno(err, -r, "cache mount '%s': source \"%s\"", m->id, source);
	if (snap_lookup(from->stack, from->n_stack, spath, &st) != 1) {
		if (strcmp(spath, "/") != 0)
			return kiln_err_set(err, ENOENT, "cache mount '%s': source \"%s\": not found in from",
					    m->id, source);
		return set_meta(dir, 0755, 0, 0, 0, false, err);
	}
	if (!S_ISDIR(st.st_mode))
		return kiln_err_set(err, ENOTDIR, "cache mount '%s': source \"%s\" is not a directory",
				    m->id, source);
	r = copy_entry(j, &none, &plain, from, spath, "", "/", dir, err);
	if (r < 0)
		return kiln_err_wrap(err, "cache mount '%s' from \"%s\"", m->id, source);
	return set_meta(dir, st.st_mode & 07777, st.st_uid, st.st_gid, st.st_mtim.tv_sec, false, err);
}

/* ---- snapshots of op results ---- */

static int
snap_copy_into(struct job_snap *dst, const struct job_snap *src)
{
	memset(dst, 0, sizeof(*dst));
	for (size_t i = 0; i < src->n_stack; i++)
		if (op_add_arg(&dst->stack, &dst->n_stack, src->stack[i]) < 0)
			return -ENOMEM;
	if (src->n_layers) {
		dst->layers = malloc(src->n_layers * sizeof(*dst->layers));
		if (!dst->layers)
			return -ENOMEM;
		memcpy(dst->layers, src->layers, src->n_layers * sizeof(*dst->layers));
		dst->n_layers = src->n_layers;
	}
	return 0;
}

static void
snap_release(struct job_snap *s)
{
	op_strv_free(s->stack, s->n_stack);
	free(s->layers);
	memset(s, 0, sizeof(*s));
}

/* Make the job's working snapshot a copy of op i's input. */
static int
start_from(struct job *j, const struct op *op, size_t i, struct kiln_err *err)
{
	struct job_snap cur = { 0 };

	op_strv_free(j->stack, j->n_stack);
	free(j->layers);
	j->stack = NULL;
	j->layers = NULL;
	j->n_stack = j->n_layers = 0;
	if (op->kind == OP_IMAGE)
		return 0;
	if (op->input < 0 || (size_t) op->input >= i)
		return kiln_err_set(err, KILN_EPROTO, "step %zu builds on step %d, which does not come before it",
				    i, op->input);
	if (op->kind == OP_COPY_FROM && (op->from < 0 || (size_t) op->from >= i))
		return kiln_err_set(err, KILN_EPROTO, "step %zu copies from step %d, which does not come before it",
				    i, op->from);
	if (snap_copy_into(&cur, &j->snaps[op->input]) < 0) {
		snap_release(&cur);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	j->stack = cur.stack;
	j->n_stack = cur.n_stack;
	j->layers = cur.layers;
	j->n_layers = cur.n_layers;
	return 0;
}

static int
execute_ops(struct job *j, job_emit_fn emit, void *ctx, struct kiln_err *err)
{
	if (!j->snaps) {
		j->snaps = calloc(j->n_ops + 1, sizeof(*j->snaps));
		if (!j->snaps)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < j->n_ops; i++) {
		const struct op *op = &j->ops[i];
		_cleanup_free_ char *base = NULL;
		_cleanup_free_ char *upper = NULL;
		struct op_layer layer;
		bool has = false;
		int r = 0;

		if (atomic_load(&j->canceled))
			return kiln_err_set(err, ECANCELED, "canceled");
		emit_step(j, emit, ctx, "step.start", i, NULL);
		r = start_from(j, op, i, err);
		if (r < 0)
			return r;
		if (op->kind == OP_IMAGE) {
			r = op->ref ? pull_layers(j, i, op, emit, ctx, err) : 0;
			if (r == 0)
				r = run_image(j, op, err);
			if (r < 0)
				return r;
			if (snap_copy_into(&j->snaps[i], &(struct job_snap) { j->stack, j->n_stack, j->layers,
									     j->n_layers }) < 0)
				return kiln_err_set(err, ENOMEM, "out of memory");
			emit_step(j, emit, ctx, "step.done", i, NULL);
			continue;
		}
		r = make_scratch(j, i, &base, err);
		if (r < 0)
			return r;
		upper = kiln_strdupf("%s/upper", base);
		if (!upper) {
			(void) kiln_rm_rf(base);
			return kiln_err_set(err, ENOMEM, "out of memory");
		}
		switch (op->kind) {
		case OP_RUN:
			r = spawn_run(j, i, op, base, emit, ctx, err);
			break;
		case OP_COPY:
			r = apply_copy(j, op, upper, err);
			break;
		case OP_MKDIR:
			r = apply_mkdir(j, op, upper, err);
			break;
		case OP_COPY_FROM:
			r = apply_copy_from(j, op, &j->snaps[op->from], upper, err);
			break;
		case OP_IMAGE:
			break;
		}
		if (r == 0)
			r = finish_layer(j, upper, &layer, &has, err);
		(void) kiln_rm_rf(base);
		if (r < 0)
			return r;
		if (snap_copy_into(&j->snaps[i], &(struct job_snap) { j->stack, j->n_stack, j->layers,
								     j->n_layers }) < 0)
			return kiln_err_set(err, ENOMEM, "out of memory");
		emit_step(j, emit, ctx, "step.done", i, has ? &layer : NULL);
	}
	/* j->stack and j->layers now hold the last op's result: the image. */
	return 0;
}

int
job_execute(struct job *j, job_emit_fn emit, void *ctx, struct kiln_err *err)
{
	int r = execute_ops(j, emit, ctx, err);

	/* no step needs them any more: secrets live no longer than the ops */
	job_secrets_wipe(j);
	return r;
}

void
job_release(struct job *j)
{
	job_secrets_wipe(j);
	op_strv_free(j->ssh_ids, j->n_ssh_ids);
	j->ssh_ids = NULL;
	j->n_ssh_ids = 0;
	for (size_t i = 0; i < j->n_ops; i++)
		op_release(&j->ops[i]);
	free(j->ops);
	for (size_t i = 0; j->snaps && i < j->n_ops; i++)
		snap_release(&j->snaps[i]);
	free(j->snaps);
	j->snaps = NULL;
	op_strv_free(j->stack, j->n_stack);
	free(j->layers);
	j->ops = NULL;
	j->stack = NULL;
	j->layers = NULL;
	j->n_ops = j->n_stack = j->n_layers = 0;
}
