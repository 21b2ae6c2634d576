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

#include "job-internal.h"

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

/* The overlay lowerdir option for a stack of layer dirs (top first).
 * The same layer can sit twice in a stack (two steps that made identical
 * changes have one diff_id), which overlayfs refuses (ELOOP); only its
 * topmost place counts, since it covers everything the lower one does. */
char *
stack_lowerdirs(const char *state, char *const *stack, size_t n, struct kiln_err *err)
{
	size_t len = 1;
	char *s, *p;

	if (n == 0) {
		char *empty;

		if (snap_empty_dir(state, &empty, err) < 0)
			return NULL;
		return empty;
	}
	for (size_t i = 0; i < n; i++)
		len += strlen(stack[i]) + 1;
	s = p = malloc(len);
	if (!s) {
		kiln_err_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		bool seen = false;

		for (size_t k = 0; k < i && !seen; k++)
			seen = strcmp(stack[k], stack[i]) == 0;
		if (!seen)
			p += sprintf(p, "%s%s", p != s ? ":" : "", stack[i]);
	}
	return s;
}

char *
lowerdirs(struct job *j, struct kiln_err *err)
{
	return stack_lowerdirs(j->state, j->stack, j->n_stack, err);
}

const struct job_secret *
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
