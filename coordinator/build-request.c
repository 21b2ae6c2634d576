/* Decoding build.start and planning: the context listing, named
 * contexts, compression options, registry images resolved for the
 * planner, --call answers, and each target's keys. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build.h"
#include "cache.h"
#include "cleanup.h"
#include "digest.h"
#include "dockerfile.h"
#include "err.h"
#include "layer.h"
#include "log.h"
#include "nodes.h"
#include "oci.h"
#include "outline.h"
#include "plan.h"
#include "proto.h"
#include "registry.h"
#include "solver.h"
#include "util.h"

#include "build-internal.h"

static int
read_files(const struct proto_msg *m, struct plan_file **ret, size_t *ret_n, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "files");
	struct plan_file *files;

	*ret = NULL;
	*ret_n = 0;
	if (!a)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "build.start: files is not an array");
	files = calloc(a->via.array.size + 1, sizeof(*files));
	if (!files)
		return kiln_err_set(err, ENOMEM, "out of memory");
	*ret = files;
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *o = &a->via.array.ptr[i];
		struct plan_file *f = &files[i];
		_cleanup_free_ char *kind = proto_obj_get_strdup(o, "k");
		_cleanup_free_ char *d = proto_obj_get_strdup(o, "d");
		uint64_t mode = 0;

		f->path = proto_obj_get_strdup(o, "p");
		f->link = proto_obj_get_strdup(o, "l");
		*ret_n = i + 1;
		if (!f->path || !kind || strlen(kind) != 1 || !strchr("fdl", kind[0]))
			return kiln_err_set(err, KILN_EPROTO, "build.start: context entry %u is malformed", i);
		f->kind = kind[0];
		(void) proto_obj_get_u64(o, "m", &mode);
		f->mode = (uint32_t) mode & 07777;
		(void) proto_obj_get_i64(o, "t", &f->mtime);
		(void) proto_obj_get_u64(o, "s", &f->size);
		if (f->kind == 'f' && (!d || digest_parse(d, &f->digest) < 0))
			return kiln_err_set(err, KILN_EPROTO, "build.start: file '%s' without digest", f->path);
		if (f->kind == 'l' && !f->link)
			return kiln_err_set(err, KILN_EPROTO, "build.start: symlink '%s' without target",
					    f->path);
	}
	return 0;
}

static void
files_free(struct plan_file *files, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(files[i].path);
		free(files[i].link);
	}
	free(files);
}

static int
read_contexts(const struct proto_msg *m, struct plan_context **ret, size_t *ret_n,
	      struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "contexts");
	struct plan_context *cs;
	int r;

	*ret = NULL;
	*ret_n = 0;
	if (!a)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "build.start: contexts is not an array");
	cs = calloc(a->via.array.size + 1, sizeof(*cs));
	if (!cs)
		return kiln_err_set(err, ENOMEM, "out of memory");
	*ret = cs;
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *o = &a->via.array.ptr[i];
		const msgpack_object *cfg = proto_obj_get(o, "config");
		const msgpack_object *ls = proto_obj_get(o, "layers");
		struct plan_context *c = &cs[i];
		const json_t *diff_ids;

		c->name = proto_obj_get_strdup(o, "name");
		*ret_n = i + 1;
		if (!c->name || !cfg || (cfg->type != MSGPACK_OBJECT_BIN && cfg->type != MSGPACK_OBJECT_STR) ||
		    !ls || ls->type != MSGPACK_OBJECT_ARRAY)
			return kiln_err_set(err, KILN_EPROTO, "build.start: context %u is malformed", i);
		r = oci_config_parse(cfg->type == MSGPACK_OBJECT_BIN ? cfg->via.bin.ptr : cfg->via.str.ptr,
				     cfg->type == MSGPACK_OBJECT_BIN ? cfg->via.bin.size : cfg->via.str.size,
				     &c->config, err);
		if (r < 0)
			return kiln_err_wrap(err, "build context '%s'", c->name);
		diff_ids = json_object_get(json_object_get(c->config, "rootfs"), "diff_ids");
		if (json_array_size(diff_ids) != ls->via.array.size)
			return kiln_err_set(err, EINVAL, "build context '%s': %u layers but %zu diff_ids",
					    c->name, ls->via.array.size, json_array_size(diff_ids));
		c->layers = calloc(ls->via.array.size + 1, sizeof(*c->layers));
		if (!c->layers)
			return kiln_err_set(err, ENOMEM, "out of memory");
		for (uint32_t k = 0; k < ls->via.array.size; k++) {
			const msgpack_object *l = &ls->via.array.ptr[k];
			struct plan_layer *pl = &c->layers[k];
			_cleanup_free_ char *d = proto_obj_get_strdup(l, "digest");
			_cleanup_free_ char *mt = proto_obj_get_strdup(l, "media_type");

			if (!d || digest_parse(d, &pl->l.digest) < 0 ||
			    proto_obj_get_u64(l, "size", &pl->l.size) < 0 ||
			    digest_parse(json_string_value(json_array_get(diff_ids, k)) ?: "",
					 &pl->l.diff_id) < 0)
				return kiln_err_set(err, KILN_EPROTO, "build context '%s': layer %u is malformed",
						    c->name, k);
			snprintf(pl->media_type, sizeof(pl->media_type), "%s", mt ? mt : OCI_MT_LAYER_GZ);
			c->n_layers++;
		}
	}
	return 0;
}

static void
contexts_free(struct plan_context *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(cs[i].name);
		free(cs[i].ref);
		json_decref(cs[i].config);
		free(cs[i].layers);
	}
	free(cs);
}

/* compression, compression_level, force_compression of build.start
 * (absent: gzip at kiln's level, not forced). */
int
read_compression(struct build *b, const struct proto_msg *m, struct kiln_err *err)
{
	_cleanup_free_ char *comp = proto_msg_strdup(m, "compression");
	int64_t level = LAYER_LEVEL_DEFAULT;

	b->compression = LAYER_GZIP;
	if (comp && layer_compression_parse(comp, &b->compression) < 0)
		return kiln_err_set(err, EINVAL, "unsupported compression type '%s' (gzip, zstd, uncompressed)",
				    comp);
	(void) proto_msg_i64(m, "compression_level", &level);
	/* uncompressed has no level; BuildKit ignores one given with it */
	if (b->compression == LAYER_NONE)
		level = LAYER_LEVEL_DEFAULT;
	if (level < INT_MIN || level > INT_MAX || !layer_level_valid(b->compression, (int) level))
		return kiln_err_set(err, EINVAL, "compression-level=%lld is out of range for %s (%s)",
				    (long long) level, layer_compression_name(b->compression),
				    b->compression == LAYER_ZSTD ? "0-22" : "0-9");
	b->compression_level = (int) level;
	b->force_compression = false;
	(void) proto_msg_bool(m, "force_compression", &b->force_compression);
	b->rewrite_timestamp = false;
	(void) proto_msg_bool(m, "rewrite_timestamp", &b->rewrite_timestamp);
	return 0;
}


int
read_strv(const struct proto_msg *m, const char *key, char ***ret, size_t *ret_n, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, key);

	*ret = NULL;
	*ret_n = 0;
	if (!a)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "'%s' is not an array", key);
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		_cleanup_free_ char *s = proto_obj_strdup(&a->via.array.ptr[i]);

		if (!s)
			return kiln_err_set(err, KILN_EPROTO, "'%s[%u]' is not a string", key, i);
		if (op_add_arg(ret, ret_n, s) < 0)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

/* An image the Dockerfile names, resolved through the registry into a
 * context for the planner. The worker pulls its layers by digest. */
static int
resolve_image(struct builds *bs, const char *name, const struct platform *p, struct plan_context *ret,
	      struct kiln_err *err)
{
	struct registry_ref ref, pinned;
	struct registry_image img = { 0 };
	struct oci_manifest man = { 0 };
	char refs[REGISTRY_REF_STR_SIZE];
	const json_t *diff_ids;
	int r;

	if (!bs->reg)
		return kiln_err_set(err, ENOTSUP, "base image '%s': the registry client is not available",
				    name);
	r = registry_ref_parse(name, &ref, err);
	if (r < 0)
		return kiln_err_wrap(err, "base image '%s'", name);
	r = registry_resolve(bs->reg, &ref, p, &img, err);
	if (r < 0)
		return r;
	r = oci_manifest_parse(img.manifest.data, img.manifest.len, &man, err);
	if (r == 0)
		r = oci_config_parse(img.config.data, img.config.len, &ret->config, err);
	if (r < 0)
		goto out;
	diff_ids = json_object_get(json_object_get(ret->config, "rootfs"), "diff_ids");
	if (json_array_size(diff_ids) != man.n_layers) {
		r = kiln_err_set(err, EBADMSG, "image '%s': %zu layers but %zu diff_ids", name,
				 man.n_layers, json_array_size(diff_ids));
		goto out;
	}
	ret->layers = calloc(man.n_layers + 1, sizeof(*ret->layers));
	pinned = ref;
	pinned.has_digest = true;
	pinned.digest = img.manifest.digest;
	pinned.tag[0] = '\0';
	{
		char fam[512];

		ret->name = plan_familiar_name(name, fam, sizeof(fam)) ? strdup(fam) : NULL;
	}
	ret->ref = strdup(registry_ref_fmt(&pinned, refs, sizeof(refs)));
	if (!ret->layers || !ret->name || !ret->ref) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < man.n_layers; i++) {
		struct plan_layer *pl = &ret->layers[i];

		pl->l.digest = man.layers[i].digest;
		pl->l.size = (uint64_t) man.layers[i].size;
		snprintf(pl->media_type, sizeof(pl->media_type), "%s", man.layers[i].media_type);
		if (digest_parse(json_string_value(json_array_get(diff_ids, i)) ?: "", &pl->l.diff_id) < 0) {
			r = kiln_err_set(err, EBADMSG, "image '%s': bad diff_id %zu", name, i);
			goto out;
		}
		ret->n_layers++;
	}
	log_info("resolved '%s' to %s (%zu layers)", name, ret->ref, ret->n_layers);
out:
	oci_manifest_release(&man);
	registry_image_release(&img);
	return r;
}

int
start_plan(struct build *b, const struct proto_msg *m, const struct platform *platform,
	   const struct platform *build_platform, struct plan **ret, struct kiln_err *err)
{
	struct plan_input in = { 0 };
	struct plan_file *files = NULL;
	struct plan_context *contexts = NULL;
	size_t n_files = 0, n_contexts = 0;
	_cleanup_free_ char *target = proto_msg_strdup(m, "target");
	_cleanup_free_ char *filename = proto_msg_strdup(m, "filename");
	char **args = NULL;
	size_t n_args = 0;
	int r;

	r = proto_msg_strn(m, "dockerfile", &in.dockerfile, &in.dockerfile_len);
	if (r < 0 || in.dockerfile_len > DOCKERFILE_MAX)
		return kiln_err_set(err, KILN_EPROTO, "build.start without a Dockerfile (or over 4 MiB)");
	in.platform = *platform;
	r = read_files(m, &files, &n_files, err);
	if (r == 0)
		r = read_contexts(m, &contexts, &n_contexts, err);
	if (r == 0)
		r = read_strv(m, "build_args", &args, &n_args, err);
	if (r == 0) {
		in.filename = filename ? filename : "Dockerfile";
		in.build_args = args;
		in.n_build_args = n_args;
		in.target = target && *target ? target : NULL;
		/* BUILDPLATFORM is the platform of the node that builds. */
		in.build_platform = build_platform;
		in.files = files;
		in.n_files = n_files;
		/* Plan; each image the Dockerfile names that the client did not
		 * send is resolved through the registry and planning starts over
		 * with it (plans are cheap, and this keeps the planner free of
		 * network I/O). */
		for (int round = 0; ; round++) {
			char *missing = NULL;
			struct plan_context *nc;

			in.contexts = contexts;
			in.n_contexts = n_contexts;
			in.ret_missing_image = round < 16 ? &missing : NULL;
			r = plan_build(&in, ret, err);
			if (r != -KILN_ENOIMAGE || !missing) {
				free(missing);
				break;
			}
			nc = realloc(contexts, (n_contexts + 2) * sizeof(*contexts));
			if (!nc) {
				free(missing);
				r = kiln_err_set(err, ENOMEM, "out of memory");
				break;
			}
			contexts = nc;
			memset(&contexts[n_contexts], 0, 2 * sizeof(*contexts));
			kiln_err_clear(err);
			r = resolve_image(b->builds, missing, &in.platform, &contexts[n_contexts], err);
			n_contexts++;
			free(missing);
			if (r < 0)
				break;
		}
	}
	files_free(files, n_files);
	contexts_free(contexts, n_contexts);
	op_strv_free(args, n_args);
	return r;
}

/* `kiln build --call outline|targets` and `kiln debug graph`: answered by
 * the frontend alone; nothing runs and no node is involved. */
/* BUILDPLATFORM: the native platform of a node that would build p. */
const struct platform *
build_platform_for(struct builds *bs, const struct platform *p)
{
	bool emulated;
	struct node *n = nodes_pick(bs->nodes, p, &emulated);

	return n && n->n_native ? &n->native[0] : NULL;
}

void
answer_call(struct builds *bs, struct build *b, const struct proto_msg *m, const char *call)
{
	struct kiln_err err = { 0 };
	struct proto_writer w;
	_cleanup_free_ char *json = NULL;
	int r;

	if (strcmp(call, "graph") == 0) {
		_cleanup_free_ char *ps = proto_msg_strdup(m, "platform");
		struct plan *plan = NULL;
		struct platform p;

		if (!ps || platform_parse(ps, &p) < 0)
			r = kiln_err_set(&err, EINVAL, "build.start: bad platform '%s'", ps ? ps : "");
		else
			r = start_plan(b, m, &p, build_platform_for(bs, &p), &plan, &err);
		if (r == 0) {
			json = plan_dump_json(plan);
			r = json ? 0 : kiln_err_set(&err, ENOMEM, "out of memory");
		}
		plan_free(plan);
	} else if (strcmp(call, "outline") == 0 || strcmp(call, "targets") == 0) {
		_cleanup_free_ char *filename = proto_msg_strdup(m, "filename");
		_cleanup_free_ char *target = proto_msg_strdup(m, "target");
		_cleanup_free_ char *platform = proto_msg_strdup(m, "platform");
		struct outline_input in = { 0 };
		struct df_ast *ast = NULL;
		struct platform p;
		char **args = NULL;
		size_t n_args = 0;

		r = proto_msg_strn(m, "dockerfile", &in.dockerfile, &in.dockerfile_len);
		if (r < 0 || in.dockerfile_len > DOCKERFILE_MAX)
			r = kiln_err_set(&err, KILN_EPROTO, "build.start without a Dockerfile (or over 4 MiB)");
		in.filename = filename ? filename : "Dockerfile";
		if (r == 0)
			r = df_parse(in.dockerfile, in.dockerfile_len, in.filename, &ast, &err);
		if (r == 0)
			r = read_strv(m, "build_args", &args, &n_args, &err);
		if (r == 0) {
			in.ast = ast;
			in.target = target && *target ? target : NULL;
			in.build_args = args;
			in.n_build_args = n_args;
			in.platform = platform && platform_parse(platform, &p) == 0 ? &p : NULL;
			r = strcmp(call, "targets") == 0 ? outline_targets_json(&in, &json, &err) :
							   outline_json(&in, &json, &err);
		}
		df_ast_free(ast);
		op_strv_free(args, n_args);
	} else {
		r = kiln_err_set(&err, EINVAL, "unknown --call '%s' (build, outline, targets)", call);
	}
	if (r < 0) {
		build_fail(bs, b, &err);
		return;
	}
	proto_writer_init(&w, "build.call", proto_msg_id(m));
	proto_w_str(&w, "build", b->id);
	proto_w_str(&w, "call", call);
	proto_w_str(&w, "data", json);
	(void) peer_send(&b->client, &w);
	proto_writer_release(&w);
	build_end(bs, b);
}

/* The ids of the secrets the planned RUNs mount, each once, to the client,
 * which answers with build.secrets holding the values it has (before
 * build.synced, on the same socket, so the node has them before job.run).
 * Nothing when no step mounts a secret: values are only ever asked for,
 * never pushed. */

/* ---- build.start ---- */

int
target_init(struct build *b, struct target *t, struct kiln_err *err)
{
	size_t n = t->plan->n_ops;
	char salt[PLATFORM_STR_SIZE + 64], ps[PLATFORM_STR_SIZE];

	t->keys = calloc(n + 1, sizeof(*t->keys));
	t->recs = calloc(n + 1, sizeof(*t->recs));
	t->st = calloc(n + 1, 1);
	t->cached = calloc(n + 1, sizeof(bool));
	t->no_cache = calloc(n + 1, sizeof(bool));
	t->reported = calloc(n + 1, sizeof(bool));
	t->job_of = calloc(n + 1, sizeof(int));
	if (!t->keys || !t->recs || !t->st || !t->cached || !t->no_cache || !t->reported || !t->job_of)
		return kiln_err_set(err, ENOMEM, "out of memory");
	/* what shapes a layer's bytes besides the op: the platform it runs
	 * for, and the compression it is stored with */
	snprintf(salt, sizeof(salt), "%s %s %d", platform_fmt(&t->platform, ps),
		 layer_compression_name(b->compression), b->compression_level);
	for (size_t i = 0; i < n; i++) {
		if (solver_key(t->plan->ops, i, t->keys, salt, &t->keys[i]) < 0)
			return kiln_err_set(err, ENOMEM, "out of memory");
		/* --no-cache-filter: the stage runs again, and so does what
		 * builds on it */
		t->no_cache[i] = stage_filtered(b, t, (int) i);
		if (!t->no_cache[i]) {
			int refs[MAX_REFS];
			int nr = op_refs(&t->plan->ops[i], refs, MAX_REFS);

			for (int k = 0; k < nr && !t->no_cache[i]; k++)
				t->no_cache[i] = t->no_cache[refs[k]] && t->plan->ops[refs[k]].kind != OP_IMAGE;
		}
	}
	return 0;
}
