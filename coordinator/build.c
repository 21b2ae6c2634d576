/* Build sessions: see build.h for the message flow. Invariant: a build is
 * in the list from build.start until build.done or build.error was sent to
 * its client; after that nothing about it is relayed. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build.h"
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
#include "util.h"

#define DOCKERFILE_MAX (4u << 20)

enum build_state { B_SYNC, B_RUN, B_REWRITE, B_EXPORT };

/* A layer the output wants in another form, made by the node (job.rewrite):
 * src recompressed to the build's compression, its file times clamped to
 * epoch when epoch >= 0 (rewrite-timestamp). */
struct rewrite {
	struct digest src;
	int64_t epoch;
};

struct build {
	struct build *next;
	struct builds *builds;        /* the table it is in (borrowed) */
	char id[64];
	struct peer client;
	struct node *node;
	bool emulated;
	struct plan *plan;
	enum build_state state;
	char kind[8];                 /* "oci", "docker", "rootfs" or "push" */
	char *tag;                    /* first -t, for the index annotation */
	char **push;                  /* image references to push to */
	size_t n_push;
	char **names;                 /* docker: the archive's RepoTags */
	size_t n_names;
	bool oci_mt;                  /* OCI media types (else Docker's) */
	enum layer_compression compression;   /* of the layers the build makes */
	int compression_level;        /* LAYER_LEVEL_DEFAULT or valid for compression */
	bool force_compression;
	bool rewrite_timestamp;       /* clamp file times in the build's layers at export */
	int64_t epoch;
	struct rewrite *rw;           /* job.rewrite: one per distinct request */
	size_t n_rw;
	int *base_rw;                 /* per base layer: index into rw, or -1 */
	int *op_rw;                   /* per op: index into rw, or -1 */
	struct op_layer *layers;      /* per op */
	char (*layer_mt)[128];        /* per op: the layer's OCI media type, from step.done */
	bool *has_layer;
	int64_t start_ms;
	uint64_t ctx_files, ctx_bytes;
	char manifest_digest[DIGEST_STR_SIZE];
	char config_digest[DIGEST_STR_SIZE];
};

struct builds {
	struct build *head;
	struct nodes *nodes;
	struct registry *reg;       /* resolves base images; NULL when it failed to start */
};

struct builds *
builds_new(struct nodes *ns)
{
	struct builds *bs = calloc(1, sizeof(*bs));
	struct registry_opts ro = { 0 };
	struct kiln_err err = { 0 };

	if (!bs)
		return NULL;
	bs->nodes = ns;
	if (registry_new(&ro, &bs->reg, &err) < 0)
		log_error_err(&err, "registry client, pulling images is off");
	return bs;
}

static void
build_free(struct build *b)
{
	if (!b)
		return;
	peer_release(&b->client);
	plan_free(b->plan);
	free(b->tag);
	op_strv_free(b->push, b->n_push);
	op_strv_free(b->names, b->n_names);
	free(b->layers);
	free(b->layer_mt);
	free(b->has_layer);
	free(b->rw);
	free(b->base_rw);
	free(b->op_rw);
	free(b);
}

void
builds_free(struct builds *bs)
{
	if (!bs)
		return;
	while (bs->head) {
		struct build *b = bs->head;

		bs->head = b->next;
		build_free(b);
	}
	registry_free(bs->reg);
	free(bs);
}

static void
build_remove(struct builds *bs, struct build *b)
{
	for (struct build **p = &bs->head; *p; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			break;
		}
	if (b->node && b->node->assigned)
		b->node->assigned--;
	build_free(b);
}

static struct build *
build_find(struct builds *bs, const char *id)
{
	for (struct build *b = bs->head; b; b = b->next)
		if (strcmp(b->id, id) == 0)
			return b;
	return NULL;
}

static void
send_error(const struct peer *to, const char *type, const char *build, uint64_t id,
	   const struct kiln_err *err)
{
	struct proto_writer w;

	proto_writer_init(&w, type, id);
	if (build)
		proto_w_str(&w, "build", build);
	proto_w_u64(&w, "code", (uint64_t) (err->code > 0 ? err->code : EINVAL));
	proto_w_str(&w, "msg", err->msg);
	(void) peer_send(to, &w);
	proto_writer_release(&w);
}

/* End a build with an error to its client and tell the node to forget it. */
static void
build_fail(struct builds *bs, struct build *b, const struct kiln_err *err)
{
	log_info("build=%s failed: %s", b->id, err->msg);
	send_error(&b->client, "build.error", b->id, 0, err);
	if (b->node && b->node->status == NODE_READY) {
		struct proto_writer w;

		proto_writer_init(&w, "job.cancel", 0);
		proto_w_str(&w, "build", b->id);
		(void) peer_send(&b->node->peer, &w);
		proto_writer_release(&w);
	}
	build_remove(bs, b);
}

/* ---- decoding build.start ---- */

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

/* compression, compression_level, force_compression, rewrite_timestamp
 * of build.start (absent: gzip at kiln's level, not forced, times kept). */
static int
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

static int
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

static int
start_plan(struct build *b, const struct proto_msg *m, struct kiln_err *err)
{
	struct plan_input in = { 0 };
	struct plan_file *files = NULL;
	struct plan_context *contexts = NULL;
	size_t n_files = 0, n_contexts = 0;
	_cleanup_free_ char *platform = proto_msg_strdup(m, "platform");
	_cleanup_free_ char *target = proto_msg_strdup(m, "target");
	_cleanup_free_ char *filename = proto_msg_strdup(m, "filename");
	char **args = NULL;
	size_t n_args = 0;
	int r;

	r = proto_msg_strn(m, "dockerfile", &in.dockerfile, &in.dockerfile_len);
	if (r < 0 || in.dockerfile_len > DOCKERFILE_MAX)
		return kiln_err_set(err, KILN_EPROTO, "build.start without a Dockerfile (or over 4 MiB)");
	if (!platform || platform_parse(platform, &in.platform) < 0)
		return kiln_err_set(err, EINVAL, "build.start: bad platform '%s'", platform ? platform : "");
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
		if (b->node && b->node->n_native)
			in.build_platform = &b->node->native[0];
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
			r = plan_build(&in, &b->plan, err);
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
static void
answer_call(struct builds *bs, struct build *b, const struct proto_msg *m, const char *call)
{
	struct kiln_err err = { 0 };
	struct proto_writer w;
	_cleanup_free_ char *json = NULL;
	int r;

	if (strcmp(call, "graph") == 0) {
		r = start_plan(b, m, &err);
		if (r == 0) {
			json = plan_dump_json(b->plan);
			r = json ? 0 : kiln_err_set(&err, ENOMEM, "out of memory");
		}
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
	build_remove(bs, b);
}

/* The ids of the secrets the planned RUNs mount, each once, to the client,
 * which answers with build.secrets holding the values it has (before
 * build.synced, on the same socket, so the node has them before job.run).
 * Nothing when no step mounts a secret: values are only ever asked for,
 * never pushed. */
static void
send_secrets_need(struct build *b)
{
	const char *ids[256];
	size_t n = 0;
	struct proto_writer w;
	msgpack_packer *pk;

	for (size_t i = 0; i < b->plan->n_ops; i++) {
		const struct op *op = &b->plan->ops[i];

		for (size_t k = 0; op->kind == OP_RUN && k < op->n_mounts; k++) {
			const struct op_mount *mt = &op->mounts[k];
			bool seen = false;

			if (mt->type != OP_MOUNT_SECRET)
				continue;
			for (size_t x = 0; x < n && !seen; x++)
				seen = strcmp(ids[x], mt->id) == 0;
			if (!seen && n < sizeof(ids) / sizeof(ids[0]))
				ids[n++] = mt->id;
		}
	}
	if (n == 0)
		return;
	proto_writer_init(&w, "build.secrets.need", 0);
	proto_w_str(&w, "build", b->id);
	pk = proto_w_key(&w, "ids");
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		proto_pack_str(pk, ids[i]);
	(void) peer_send(&b->client, &w);
	proto_writer_release(&w);
}

static void
on_build_start(struct builds *bs, const struct peer *from, const struct proto_msg *m)
{
	_cleanup_free_ char *id = proto_msg_strdup(m, "build");
	_cleanup_free_ char *kind = proto_msg_strdup(m, "output");
	struct kiln_err err = { 0 };
	struct proto_writer w;
	struct build *b;
	msgpack_packer *pk;
	char ps[PLATFORM_STR_SIZE], ds[DIGEST_STR_SIZE];

	if (!id || !*id || strlen(id) >= sizeof(b->id)) {
		kiln_err_set(&err, KILN_EPROTO, "build.start without a valid build id");
		send_error(from, "build.error", NULL, proto_msg_id(m), &err);
		return;
	}
	if (build_find(bs, id)) {
		kiln_err_set(&err, EEXIST, "build %s already exists", id);
		send_error(from, "build.error", id, proto_msg_id(m), &err);
		return;
	}
	b = calloc(1, sizeof(*b));
	if (!b || peer_copy(&b->client, from) < 0) {
		free(b);
		return;
	}
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->builds = bs;
	snprintf(b->kind, sizeof(b->kind), "%s",
		 kind && (strcmp(kind, "rootfs") == 0 || strcmp(kind, "push") == 0 ||
			  strcmp(kind, "docker") == 0) ? kind : "oci");
	/* As buildx: type=docker defaults to Docker media types, the others
	 * to OCI ones; oci-mediatypes= overrides. */
	b->oci_mt = strcmp(b->kind, "docker") != 0;
	(void) proto_msg_bool(m, "oci_mediatypes", &b->oci_mt);
	if (read_compression(b, m, &err) < 0) {
		build_fail(bs, b, &err);
		return;
	}
	b->tag = proto_msg_strdup(m, "tag");
	if (read_strv(m, "names", &b->names, &b->n_names, &err) < 0 ||
	    read_strv(m, "push", &b->push, &b->n_push, &err) < 0 ||
	    (strcmp(b->kind, "push") == 0 && b->n_push == 0)) {
		if (!err.code)
			kiln_err_set(&err, EINVAL, "push needs an image name (-t NAME or -o type=image,name=NAME)");
		build_fail(bs, b, &err);
		return;
	}
	for (size_t i = 0; i < b->n_names; i++) {
		struct registry_ref rr;

		if (registry_ref_parse(b->names[i], &rr, &err) < 0) {
			kiln_err_wrap(&err, "invalid image name");
			build_fail(bs, b, &err);
			return;
		}
	}
	b->epoch = -1;
	(void) proto_msg_i64(m, "epoch", &b->epoch);
	b->start_ms = kiln_now_ms();
	b->next = bs->head;
	bs->head = b;
	{
		_cleanup_free_ char *call = proto_msg_strdup(m, "call");

		if (call && *call && strcmp(call, "build") != 0) {
			answer_call(bs, b, m, call);
			return;
		}
	}

	{
		struct platform p;
		_cleanup_free_ char *ps_in = proto_msg_strdup(m, "platform");

		(void) platform_parse(ps_in, &p);
		b->node = nodes_pick(bs->nodes, &p, &b->emulated);
		if (!b->node) {
			kiln_err_set(&err, ENODEV, "no node of this builder serves platform %s",
				     platform_fmt(&p, ps));
			build_fail(bs, b, &err);
			return;
		}
	}
	b->node->assigned++;
	if (start_plan(b, m, &err) < 0) {
		build_fail(bs, b, &err);
		return;
	}
	b->layers = calloc(b->plan->n_ops + 1, sizeof(*b->layers));
	b->layer_mt = calloc(b->plan->n_ops + 1, sizeof(*b->layer_mt));
	b->has_layer = calloc(b->plan->n_ops + 1, sizeof(bool));
	if (!b->layers || !b->layer_mt || !b->has_layer) {
		kiln_err_set(&err, ENOMEM, "out of memory");
		build_fail(bs, b, &err);
		return;
	}

	log_info("build=%s node=%s%s steps=%zu", b->id, b->node->name,
		 b->emulated ? " (emulated)" : "", b->plan->n_ops);
	send_secrets_need(b);
	proto_writer_init(&w, "job.have", 0);
	proto_w_str(&w, "build", b->id);
	pk = proto_w_key(&w, "digests");
	msgpack_pack_array(pk, b->plan->n_needed);
	for (size_t i = 0; i < b->plan->n_needed; i++)
		proto_pack_str(pk, digest_fmt(&b->plan->needed[i], ds));
	(void) peer_send(&b->node->peer, &w);
	proto_writer_release(&w);
}

static void
send_progress(struct build *b, size_t step, const char *status, const void *data, size_t len)
{
	struct proto_writer w;

	proto_writer_init(&w, "progress", 0);
	proto_w_str(&w, "build", b->id);
	proto_w_u64(&w, "step", step);
	proto_w_u64(&w, "total", b->plan->n_ops);
	proto_w_str(&w, "name", b->plan->ops[step].name);
	proto_w_str(&w, "status", status);
	proto_w_str(&w, "node", b->node->name);
	proto_w_bool(&w, "emulated", b->emulated);
	if (data)
		proto_w_bin(&w, "data", data, len);
	(void) peer_send(&b->client, &w);
	proto_writer_release(&w);
}

static void
on_synced(struct build *b)
{
	struct proto_writer w;
	msgpack_packer *pk;

	b->state = B_RUN;
	proto_writer_init(&w, "job.run", 0);
	proto_w_str(&w, "build", b->id);
	proto_w_i64(&w, "epoch", b->epoch);
	proto_w_str(&w, "compression", layer_compression_name(b->compression));
	if (b->compression_level != LAYER_LEVEL_DEFAULT)
		proto_w_i64(&w, "compression_level", b->compression_level);
	pk = proto_w_key(&w, "ops");
	msgpack_pack_array(pk, b->plan->n_ops);
	for (size_t i = 0; i < b->plan->n_ops; i++)
		op_pack(&b->plan->ops[i], pk);
	(void) peer_send(&b->node->peer, &w);
	proto_writer_release(&w);
}

void
builds_on_client(struct builds *bs, const struct peer *from, const struct proto_msg *m,
		 zframe_t *payload)
{
	const char *t = proto_msg_type(m);
	_cleanup_free_ char *id = proto_msg_strdup(m, "build");
	struct kiln_err err = { 0 };
	struct build *b;

	if (strcmp(t, "build.start") == 0) {
		on_build_start(bs, from, m);
		return;
	}
	b = id ? build_find(bs, id) : NULL;
	if (!b || !peer_equal(&b->client, from)) {
		kiln_err_set(&err, ENOENT, "no build '%s' of this client", id ? id : "");
		send_error(from, "error", id, proto_msg_id(m), &err);
		return;
	}
	if (strcmp(t, "blob.put") == 0 || strcmp(t, "xfer.data") == 0 || strcmp(t, "xfer.credit") == 0) {
		(void) peer_forward(&b->node->peer, payload);
	} else if (strcmp(t, "build.secrets") == 0 && b->state == B_SYNC) {
		/* Relayed as is: the values are never read here, logged, kept or echoed
		 * (main.c wipes the frame and the decoded copy after this). */
		(void) peer_forward(&b->node->peer, payload);
	} else if (strcmp(t, "build.synced") == 0 && b->state == B_SYNC) {
		on_synced(b);
	} else if (strcmp(t, "build.cancel") == 0) {
		kiln_err_set(&err, ECANCELED, "build canceled by the client");
		build_fail(bs, b, &err);
	} else {
		kiln_err_set(&err, KILN_EPROTO, "unexpected '%s' for build %s", t, b->id);
		build_fail(bs, b, &err);
	}
}

/* A layer object {digest, diff_id, size, media_type?}: *ret and ret_mt
 * (its OCI media type; gzip when the node does not say). */
static int
read_layer_obj(const msgpack_object *l, struct op_layer *ret, char ret_mt[static 128])
{
	_cleanup_free_ char *d = proto_obj_get_strdup(l, "digest");
	_cleanup_free_ char *diff = proto_obj_get_strdup(l, "diff_id");
	_cleanup_free_ char *mt = proto_obj_get_strdup(l, "media_type");
	enum layer_compression c = LAYER_GZIP;

	if (!d || !diff || digest_parse(d, &ret->digest) < 0 || digest_parse(diff, &ret->diff_id) < 0 ||
	    proto_obj_get_u64(l, "size", &ret->size) < 0 ||
	    (mt && layer_compression_from_media_type(mt, &c) < 0))
		return -KILN_EPROTO;
	snprintf(ret_mt, 128, "%s", layer_compression_media_type(c, true));
	return 0;
}

/* The layer of a step.done, if any: 1 with *ret and ret_mt filled, 0
 * without one. */
static int
read_layer(const struct proto_msg *m, struct op_layer *ret, char ret_mt[static 128])
{
	const msgpack_object *l = proto_msg_get(m, "layer");
	int r;

	if (!l)
		return 0;
	if (l->type != MSGPACK_OBJECT_MAP)
		return -KILN_EPROTO;
	r = read_layer_obj(l, ret, ret_mt);
	return r < 0 ? r : 1;
}

/* A layer's media type under the manifest's media type family: the gzip,
 * zstd and plain tar types map one to one between OCI and Docker, as
 * BuildKit's ConvertAllLayerMediaTypes does (zstd under Docker types is
 * "application/vnd.docker.image.rootfs.diff.tar.zstd"); others (foreign
 * layers) stay as they are. */
static const char *
layer_media_type(const char *mt, bool oci)
{
	enum layer_compression c;

	if (layer_compression_from_media_type(mt, &c) < 0)
		return mt;
	return layer_compression_media_type(c, oci);
}

/* in_chain[i]: op i's layer is one of the image's, i.e. op i is on the
 * chain of inputs that leads to the last op (other stages only feed it).
 * NULL on ENOMEM; the caller frees. */
static bool *
image_chain(const struct build *b)
{
	bool *in_chain = calloc(b->plan->n_ops + 1, sizeof(bool));

	if (!in_chain)
		return NULL;
	for (int i = (int) b->plan->n_ops - 1; i >= 0; i = b->plan->ops[i].input) {
		in_chain[i] = true;
		if (b->plan->ops[i].kind == OP_IMAGE)
			break;
	}
	return in_chain;
}

static int
rewrite_add(struct build *b, const struct digest *src, int64_t epoch)
{
	for (size_t i = 0; i < b->n_rw; i++)
		if (b->rw[i].epoch == epoch && digest_equal(&b->rw[i].src, src))
			return (int) i;
	b->rw[b->n_rw] = (struct rewrite) { .src = *src, .epoch = epoch };
	return (int) b->n_rw++;
}

/* What the output needs rewritten before its manifest can be made, as
 * BuildKit's exporters do it: with force-compression=true, base image
 * layers in another compression than the build's are recompressed (the
 * build's own layers are made in it); with rewrite-timestamp=true and
 * SOURCE_DATE_EPOCH, the layers the build made get their file times
 * clamped (the base image's never: its diff_ids stay). The node that holds
 * the blobs does the work. Returns 1 when job.rewrite was sent, 0 when the
 * export can go on as is. */
static int
start_rewrite(struct build *b, struct kiln_err *err)
{
	const struct plan *p = b->plan;
	bool clamp = b->rewrite_timestamp && b->epoch >= 0;
	_cleanup_free_ bool *in_chain = NULL;
	struct proto_writer w;
	msgpack_packer *pk;
	char ds[DIGEST_STR_SIZE];

	if (strcmp(b->kind, "rootfs") == 0)
		return 0;
	if (b->rewrite_timestamp && b->epoch < 0)
		log_warn("build=%s rewrite-timestamp=true without SOURCE_DATE_EPOCH, ignoring", b->id);
	in_chain = image_chain(b);
	b->rw = calloc(p->n_base + p->n_ops + 1, sizeof(*b->rw));
	b->base_rw = calloc(p->n_base + 1, sizeof(int));
	b->op_rw = calloc(p->n_ops + 1, sizeof(int));
	if (!in_chain || !b->rw || !b->base_rw || !b->op_rw)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < p->n_base; i++) {
		enum layer_compression c;

		b->base_rw[i] = -1;
		/* Foreign layers (unknown types) stay, as in BuildKit. */
		if (b->force_compression && layer_compression_from_media_type(p->base[i].media_type, &c) == 0 &&
		    c != b->compression)
			b->base_rw[i] = rewrite_add(b, &p->base[i].l.digest, -1);
	}
	for (size_t i = 0; i < p->n_ops; i++) {
		b->op_rw[i] = -1;
		if (clamp && in_chain[i] && b->has_layer[i])
			b->op_rw[i] = rewrite_add(b, &b->layers[i].digest, b->epoch);
	}
	if (b->n_rw == 0)
		return 0;

	proto_writer_init(&w, "job.rewrite", 0);
	proto_w_str(&w, "build", b->id);
	pk = proto_w_key(&w, "layers");
	msgpack_pack_array(pk, b->n_rw);
	for (size_t i = 0; i < b->n_rw; i++) {
		bool level = b->compression_level != LAYER_LEVEL_DEFAULT;

		msgpack_pack_map(pk, 3 + level);
		proto_pack_str(pk, "digest");
		proto_pack_str(pk, digest_fmt(&b->rw[i].src, ds));
		proto_pack_str(pk, "compression");
		proto_pack_str(pk, layer_compression_name(b->compression));
		if (level) {
			proto_pack_str(pk, "level");
			msgpack_pack_int64(pk, b->compression_level);
		}
		proto_pack_str(pk, "epoch");
		msgpack_pack_int64(pk, b->rw[i].epoch);
	}
	(void) peer_send(&b->node->peer, &w);
	proto_writer_release(&w);
	b->state = B_REWRITE;
	log_info("build=%s node=%s rewriting %zu layer%s for the output", b->id, b->node->name, b->n_rw,
		 b->n_rw == 1 ? "" : "s");
	return 1;
}

/* job.rewritten {layers}: the new blobs, in the order asked. A recompressed
 * base layer must keep its diff_id; every blob must be in the build's
 * compression. */
static int
apply_rewritten(struct build *b, const struct proto_msg *m, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "layers");
	_cleanup_free_ struct op_layer *got = NULL;
	_cleanup_free_ char (*mt)[128] = NULL;
	struct plan *p = b->plan;

	if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != b->n_rw)
		return kiln_err_set(err, KILN_EPROTO, "node '%s' answered job.rewrite with %u layers for %zu",
				    b->node->name, a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0,
				    b->n_rw);
	got = calloc(b->n_rw, sizeof(*got));
	mt = calloc(b->n_rw, sizeof(*mt));
	if (!got || !mt)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < b->n_rw; i++) {
		enum layer_compression c;

		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP ||
		    read_layer_obj(&a->via.array.ptr[i], &got[i], mt[i]) < 0 ||
		    layer_compression_from_media_type(mt[i], &c) < 0 || c != b->compression)
			return kiln_err_set(err, KILN_EPROTO, "node '%s': bad rewritten layer %zu",
					    b->node->name, i);
	}
	for (size_t i = 0; i < p->n_base; i++) {
		const struct op_layer *g;

		if (b->base_rw[i] < 0)
			continue;
		g = &got[b->base_rw[i]];
		if (!digest_equal(&g->diff_id, &p->base[i].l.diff_id))
			return kiln_err_set(err, KILN_EPROTO,
					    "node '%s': recompressed base layer %zu has another diff_id",
					    b->node->name, i);
		p->base[i].l.digest = g->digest;
		p->base[i].l.size = g->size;
		snprintf(p->base[i].media_type, sizeof(p->base[i].media_type), "%s", mt[b->base_rw[i]]);
	}
	for (size_t i = 0; i < p->n_ops; i++) {
		if (b->op_rw[i] < 0)
			continue;
		b->layers[i] = got[b->op_rw[i]];
		snprintf(b->layer_mt[i], sizeof(b->layer_mt[i]), "%s", mt[b->op_rw[i]]);
	}
	return 0;
}

/* Config, manifest and index for the finished build; sends job.export. */
static int
export_build(struct build *b, struct kiln_err *err)
{
	const struct op_layer **per_op = calloc(b->plan->n_ops + 1, sizeof(*per_op));
	_cleanup_free_ char *config = NULL;
	_cleanup_free_ char *manifest = NULL;
	_cleanup_free_ char *index = NULL;
	struct oci_manifest man = { 0 };
	struct oci_index ix = { 0 };
	struct oci_descriptor md = { 0 };
	size_t config_len, man_len, ix_len, n_layers = 0;
	struct proto_writer w;
	msgpack_packer *pk;
	char ds[DIGEST_STR_SIZE];
	int64_t created = b->epoch >= 0 ? b->epoch : (int64_t) time(NULL);
	int r;

	if (!per_op)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < b->plan->n_ops; i++)
		per_op[i] = b->has_layer[i] ? &b->layers[i] : NULL;
	r = plan_finish_config(b->plan, per_op, created, &config, &config_len, err);
	free(per_op);
	if (r < 0)
		return r;

	snprintf(man.media_type, sizeof(man.media_type), "%s", b->oci_mt ? OCI_MT_MANIFEST : DOCKER_MT_MANIFEST);
	snprintf(man.config.media_type, sizeof(man.config.media_type), "%s",
		 b->oci_mt ? OCI_MT_CONFIG : DOCKER_MT_CONFIG);
	digest_buf(config, config_len, &man.config.digest);
	man.config.size = (int64_t) config_len;
	man.layers = calloc(b->plan->n_base + b->plan->n_ops + 1, sizeof(*man.layers));
	if (!man.layers)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < b->plan->n_base; i++) {
		struct oci_descriptor *d = &man.layers[n_layers++];

		snprintf(d->media_type, sizeof(d->media_type), "%s",
			 layer_media_type(b->plan->base[i].media_type, b->oci_mt));
		d->digest = b->plan->base[i].l.digest;
		d->size = (int64_t) b->plan->base[i].l.size;
	}
	/* The image's layers: those of the chain of inputs that leads to the
	 * last op. rewrite-timestamp marks the ones it clamped as BuildKit
	 * does (OCI types only: Docker's descriptors carry no annotations). */
	{
		bool *in_chain = image_chain(b);

		if (!in_chain) {
			oci_manifest_release(&man);
			return kiln_err_set(err, ENOMEM, "out of memory");
		}
		for (size_t i = 0; i < b->plan->n_ops; i++) {
			struct oci_descriptor *d;

			if (!in_chain[i] || !b->has_layer[i])
				continue;
			d = &man.layers[n_layers++];
			snprintf(d->media_type, sizeof(d->media_type), "%s",
				 layer_media_type(b->layer_mt[i], b->oci_mt));
			d->digest = b->layers[i].digest;
			d->size = (int64_t) b->layers[i].size;
			if (b->oci_mt && b->op_rw && b->op_rw[i] >= 0 && b->rw[b->op_rw[i]].epoch >= 0) {
				char v[24];

				snprintf(v, sizeof(v), "%" PRId64, b->rw[b->op_rw[i]].epoch);
				d->annotations = json_object();
				if (!d->annotations ||
				    json_object_set_new(d->annotations, "buildkit/rewritten-timestamp",
							json_string(v)) < 0) {
					free(in_chain);
					oci_manifest_release(&man);
					return kiln_err_set(err, ENOMEM, "out of memory");
				}
			}
		}
		free(in_chain);
	}
	man.n_layers = n_layers;
	manifest = oci_manifest_dump(&man, &man_len);
	if (!manifest) {
		oci_manifest_release(&man);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}

	snprintf(md.media_type, sizeof(md.media_type), "%s", man.media_type);
	digest_buf(manifest, man_len, &md.digest);
	md.size = (int64_t) man_len;
	md.annotations = json_object();
	{
		const char *tag = b->tag && *b->tag ? b->tag : NULL;
		const char *colon = tag ? strrchr(tag, ':') : NULL;
		const char *ref = colon && !strchr(colon, '/') ? colon + 1 : "latest";

		if (tag)
			json_object_set_new(md.annotations, "io.containerd.image.name", json_string(tag));
		json_object_set_new(md.annotations, OCI_ANNOT_REF_NAME, json_string(ref));
	}
	snprintf(ix.media_type, sizeof(ix.media_type), "%s", OCI_MT_INDEX);
	ix.manifests = &md;
	ix.n_manifests = 1;
	if (strcmp(b->kind, "docker") == 0 && b->n_names > 0) {
		/* As containerd's archive exporter under BuildKit's docker
		 * exporter: one entry per name, with the full name, which is
		 * what podman load and containerd import name the image after. */
		ix.manifests = calloc(b->n_names, sizeof(*ix.manifests));
		if (!ix.manifests) {
			json_decref(md.annotations);
			oci_manifest_release(&man);
			return kiln_err_set(err, ENOMEM, "out of memory");
		}
		ix.n_manifests = b->n_names;
		for (size_t i = 0; i < b->n_names; i++) {
			struct oci_descriptor *d = &ix.manifests[i];
			struct registry_ref rr;
			char full[REGISTRY_REF_STR_SIZE], dgs[DIGEST_STR_SIZE];

			*d = md;
			d->annotations = json_object();
			if (registry_ref_parse(b->names[i], &rr, NULL) < 0 || !d->annotations)
				continue;       /* names were checked at build.start */
			json_object_set_new(d->annotations, "io.containerd.image.name",
					    json_string(registry_ref_fmt(&rr, full, sizeof(full))));
			json_object_set_new(d->annotations, OCI_ANNOT_REF_NAME,
					    json_string(rr.tag[0] ? rr.tag : digest_fmt(&rr.digest, dgs)));
		}
	}
	index = oci_index_dump(&ix, &ix_len);
	if (ix.manifests != &md) {
		for (size_t i = 0; i < ix.n_manifests; i++)
			json_decref(ix.manifests[i].annotations);
		free(ix.manifests);
	}
	json_decref(md.annotations);
	if (!index) {
		oci_manifest_release(&man);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	digest_fmt(&md.digest, b->manifest_digest);
	digest_fmt(&man.config.digest, b->config_digest);

	proto_writer_init(&w, "job.export", 0);
	proto_w_str(&w, "build", b->id);
	proto_w_str(&w, "kind", b->kind);
	pk = proto_w_key(&w, "put");
	msgpack_pack_array(pk, 2);
	msgpack_pack_bin(pk, config_len);
	msgpack_pack_bin_body(pk, config, config_len);
	msgpack_pack_bin(pk, man_len);
	msgpack_pack_bin_body(pk, manifest, man_len);
	proto_w_strn(&w, "index", index, ix_len);
	if (strcmp(b->kind, "push") == 0) {
		/* A base image pulled from the same registry lets the node mount
		 * its layers instead of uploading them. */
		const struct op *base = &b->plan->ops[b->plan->chain ? b->plan->chain[0] : 0];

		pk = proto_w_key(&w, "refs");
		msgpack_pack_array(pk, b->n_push);
		for (size_t i = 0; i < b->n_push; i++)
			proto_pack_str(pk, b->push[i]);
		proto_w_str(&w, "manifest_media_type", man.media_type);
		proto_w_str(&w, "mount_from", base->kind == OP_IMAGE ? base->ref : NULL);
	} else if (strcmp(b->kind, "docker") == 0) {
		/* RepoTags: name= (or -t) with ":latest" added when untagged,
		 * as docker load expects. */
		pk = proto_w_key(&w, "refs");
		msgpack_pack_array(pk, b->n_names);
		for (size_t i = 0; i < b->n_names; i++) {
			const char *n = b->names[i];
			const char *slash = strrchr(n, '/');
			bool tagged = strchr(slash ? slash : n, ':') || strchr(n, '@');
			_cleanup_free_ char *t = tagged ? strdup(n) : kiln_strdupf("%s:latest", n);

			proto_pack_str(pk, t ? t : n);
		}
	}
	pk = proto_w_key(&w, "blobs");
	msgpack_pack_array(pk, 2 + n_layers);
	proto_pack_str(pk, b->manifest_digest);
	proto_pack_str(pk, b->config_digest);
	for (size_t i = 0; i < n_layers; i++)
		proto_pack_str(pk, digest_fmt(&man.layers[i].digest, ds));
	(void) peer_send(&b->node->peer, &w);
	proto_writer_release(&w);
	oci_manifest_release(&man);
	b->state = B_EXPORT;
	return 0;
}

static void
send_done(struct build *b)
{
	struct proto_writer w;

	proto_writer_init(&w, "build.done", 0);
	proto_w_str(&w, "build", b->id);
	proto_w_str(&w, "manifest_digest", b->manifest_digest);
	proto_w_str(&w, "config_digest", b->config_digest);
	proto_w_u64(&w, "ctx_files", b->ctx_files);
	proto_w_u64(&w, "ctx_bytes", b->ctx_bytes);
	proto_w_u64(&w, "steps", b->plan->n_ops);
	proto_w_str(&w, "node", b->node->name);
	proto_w_u64(&w, "duration_ms", (uint64_t) (kiln_now_ms() - b->start_ms));
	(void) peer_send(&b->client, &w);
	proto_writer_release(&w);
}

void
builds_on_node(struct builds *bs, struct node *n, const struct proto_msg *m, zframe_t *payload)
{
	const char *t = proto_msg_type(m);
	_cleanup_free_ char *id = proto_msg_strdup(m, "build");
	struct kiln_err err = { 0 };
	struct build *b = id ? build_find(bs, id) : NULL;
	uint64_t step = 0;

	if (!b || b->node != n) {
		log_debug("'%s' from node '%s' for unknown build %s, ignoring", t, n->name, id ? id : "-");
		return;
	}
	if (strcmp(t, "job.missing") == 0 || strcmp(t, "output.begin") == 0 ||
	    strcmp(t, "xfer.data") == 0 || strcmp(t, "xfer.credit") == 0) {
		if (strcmp(t, "job.missing") == 0) {
			/* Same body, the client's name for it. */
			struct proto_writer w;
			const msgpack_object *ds = proto_msg_get(m, "digests");

			proto_writer_init(&w, "build.need", 0);
			proto_w_str(&w, "build", b->id);
			msgpack_pack_object(proto_w_key(&w, "digests"),
					    ds ? *ds : (msgpack_object) { .type = MSGPACK_OBJECT_NIL });
			(void) peer_send(&b->client, &w);
			proto_writer_release(&w);
			return;
		}
		(void) peer_forward(&b->client, payload);
		return;
	}
	if (strncmp(t, "step.", 5) == 0) {
		if (proto_msg_u64(m, "step", &step) < 0 || step >= b->plan->n_ops) {
			kiln_err_set(&err, KILN_EPROTO, "node '%s' sent '%s' for a step out of range",
				     n->name, t);
			build_fail(bs, b, &err);
			return;
		}
		if (strcmp(t, "step.start") == 0) {
			send_progress(b, step, "start", NULL, 0);
		} else if (strcmp(t, "step.log") == 0) {
			const void *data;
			size_t len;

			if (proto_msg_bin(m, "data", &data, &len) == 0)
				send_progress(b, step, "log", data, len);
		} else if (strcmp(t, "step.done") == 0) {
			int r = read_layer(m, &b->layers[step], b->layer_mt[step]);

			if (r < 0) {
				kiln_err_set(&err, KILN_EPROTO, "node '%s': bad layer for step %" PRIu64,
					     n->name, step);
				build_fail(bs, b, &err);
				return;
			}
			b->has_layer[step] = r == 1;
			send_progress(b, step, "done", NULL, 0);
		}
		return;
	}
	if (strcmp(t, "job.done") == 0 && b->state == B_RUN) {
		int r;

		(void) proto_msg_u64(m, "ctx_files", &b->ctx_files);
		(void) proto_msg_u64(m, "ctx_bytes", &b->ctx_bytes);
		r = start_rewrite(b, &err);
		if (r == 0)
			r = export_build(b, &err);
		if (r < 0)
			build_fail(bs, b, &err);
	} else if (strcmp(t, "job.rewritten") == 0 && b->state == B_REWRITE) {
		if (apply_rewritten(b, m, &err) < 0 || export_build(b, &err) < 0)
			build_fail(bs, b, &err);
	} else if (strcmp(t, "job.exported") == 0) {
		send_done(b);
		log_info("build=%s done in %" PRId64 " ms", b->id, kiln_now_ms() - b->start_ms);
		build_remove(bs, b);
	} else if (strcmp(t, "job.error") == 0) {
		_cleanup_free_ char *msg = proto_msg_strdup(m, "msg");
		uint64_t code = EIO;

		(void) proto_msg_u64(m, "code", &code);
		kiln_err_set(&err, (int) code, "%s", msg ? msg : "node reported an error");
		build_fail(bs, b, &err);
	} else {
		log_debug("unexpected '%s' from node '%s', ignoring", t, n->name);
	}
}

void
builds_node_gone(struct builds *bs, struct node *n)
{
	struct build *b = bs->head;

	while (b) {
		struct build *next = b->next;

		if (b->node == n) {
			struct kiln_err err = { 0 };

			kiln_err_set(&err, EHOSTDOWN, "node '%s' was lost while running this build", n->name);
			b->node = NULL;
			build_fail(bs, b, &err);
		}
		b = next;
	}
}
