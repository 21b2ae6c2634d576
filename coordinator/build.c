/* Build sessions: the builds table, messages from clients and nodes,
 * progress. See build.h for the message flow; the solver and scheduler are
 * in build-solve.c, exports in build-export.c, planning in
 * build-request.c. A build plans one graph per target platform, looks every
 * op up in the cache index by its key (solver.h), and turns what is left
 * to run into jobs: the ops of one stage (of one platform) that must run,
 * with what they read from outside the job given as images made of known
 * layers. Jobs run on nodes chosen per job; an op whose key another job is
 * already running is waited for, not run twice. Invariant: a build is in
 * the list from build.start until build.done or build.error was sent to
 * its client; after that nothing about it is relayed. */
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

struct builds *
builds_new(struct nodes *ns, const char *state)
{
	struct builds *bs = calloc(1, sizeof(*bs));
	struct registry_opts ro = { 0 };
	struct kiln_err err = { 0 };

	if (!bs)
		return NULL;
	bs->nodes = ns;
	if (registry_new(&ro, &bs->reg, &err) < 0)
		log_error_err(&err, "registry client, pulling images is off");
	if (cache_open(state, &bs->cache, &err) < 0) {
		log_error_err(&err, "cache index");
		registry_free(bs->reg);
		free(bs);
		return NULL;
	}
	return bs;
}

static void
target_release(struct target *t)
{
	for (size_t i = 0; t->plan && t->recs && i < t->plan->n_ops; i++)
		solver_rec_release(&t->recs[i]);
	plan_free(t->plan);
	free(t->keys);
	free(t->recs);
	free(t->st);
	free(t->cached);
	free(t->no_cache);
	free(t->reported);
	free(t->job_of);
	free(t->rw_idx);
	memset(t, 0, sizeof(*t));
}

void
job_free(struct sjob *j)
{
	free(j->ops);
	free(j->wire_map);
	free(j->keys);
	free(j->client_need);
	free(j);
}

void
build_free(struct build *b)
{
	if (!b)
		return;
	peer_release(&b->client);
	for (size_t i = 0; i < b->n_targets; i++)
		target_release(&b->targets[i]);
	free(b->tag);
	op_strv_free(b->push, b->n_push);
	op_strv_free(b->names, b->n_names);
	op_strv_free(b->no_cache_filter, b->n_no_cache_filter);
	op_strv_free(b->ssh_ids, b->n_ssh_ids);
	free(b->manifest_json);
	free(b->rw);
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
	while (bs->jobs) {
		struct sjob *j = bs->jobs;

		bs->jobs = j->next;
		job_free(j);
	}
	cache_close(bs->cache);
	registry_free(bs->reg);
	free(bs);
}

static struct build *
build_find(struct builds *bs, const char *id)
{
	for (struct build *b = bs->head; b; b = b->next)
		if (strcmp(b->id, id) == 0)
			return b;
	return NULL;
}

static struct sjob *
job_find(struct builds *bs, const char *id)
{
	for (struct sjob *j = bs->jobs; j; j = j->next)
		if (strcmp(j->id, id) == 0)
			return j;
	return NULL;
}

void
job_unlink(struct builds *bs, struct sjob *j)
{
	for (struct sjob **p = &bs->jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	if (j->holds_slot && j->node && j->node->assigned)
		j->node->assigned--;
	j->holds_slot = false;
	if (j->b && j->b->round == j)
		j->b->round = NULL;
	if (j->b && j->b->export_job == j)
		j->b->export_job = NULL;
}

void
send_job_cancel(struct sjob *j)
{
	struct proto_writer w;

	if (!j->node || j->node->status != NODE_READY || j->state == J_WAIT)
		return;
	proto_writer_init(&w, "job.cancel", 0);
	proto_w_str(&w, "build", j->id);
	(void) peer_send(&j->node->peer, &w);
	proto_writer_release(&w);
}

void
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

/* ---- progress ---- */

void
send_progress(struct build *b, size_t ti, size_t step, const char *status, const struct node *n,
	      bool emulated, const void *data, size_t len)
{
	const struct target *t = &b->targets[ti];
	struct proto_writer w;
	char ps[PLATFORM_STR_SIZE];
	size_t offset = 0, total = 0;

	if (b->detached)
		return;
	/* steps of all platforms are numbered as one list */
	for (size_t i = 0; i < b->n_targets; i++) {
		if (i < ti)
			offset += b->targets[i].plan->n_ops;
		total += b->targets[i].plan->n_ops;
	}
	proto_writer_init(&w, "progress", 0);
	proto_w_str(&w, "build", b->id);
	proto_w_u64(&w, "step", offset + step);
	proto_w_u64(&w, "total", total);
	if (b->n_targets > 1) {
		_cleanup_free_ char *name = kiln_strdupf("[%s] %s", platform_fmt(&t->platform, ps),
							 t->plan->ops[step].name ? t->plan->ops[step].name : "");

		proto_w_str(&w, "name", name);
		proto_w_u64(&w, "target", ti);
		proto_w_str(&w, "platform", ps);
	} else {
		proto_w_str(&w, "name", t->plan->ops[step].name);
	}
	proto_w_str(&w, "status", status);
	if (n) {
		proto_w_str(&w, "node", n->name);
		proto_w_bool(&w, "emulated", emulated);
	}
	if (data)
		proto_w_bin(&w, "data", data, len);
	(void) peer_send(&b->client, &w);
	proto_writer_release(&w);
}

void
note_node(struct build *b, const struct node *n)
{
	size_t len = strlen(b->nodes_used), nl = strlen(n->name);
	const char *p = b->nodes_used;

	while ((p = strstr(p, n->name))) {
		if ((p == b->nodes_used || p[-1] == ',') && (p[nl] == ',' || p[nl] == '\0'))
			return;
		p += nl;
	}
	if (len + nl + 2 < sizeof(b->nodes_used))
		snprintf(b->nodes_used + len, sizeof(b->nodes_used) - len, "%s%s", len ? "," : "", n->name);
}

/* ---- messages from nodes ---- */

/* The layer of a step.done, if any: 1 with *ret filled (media type gzip
 * when the node does not say), 0 without one. */
int
read_layer_obj(const msgpack_object *l, struct solver_layer *ret)
{
	_cleanup_free_ char *d = proto_obj_get_strdup(l, "digest");
	_cleanup_free_ char *diff = proto_obj_get_strdup(l, "diff_id");
	_cleanup_free_ char *mt = proto_obj_get_strdup(l, "media_type");
	enum layer_compression c = LAYER_GZIP;

	if (!d || !diff || digest_parse(d, &ret->l.digest) < 0 || digest_parse(diff, &ret->l.diff_id) < 0 ||
	    proto_obj_get_u64(l, "size", &ret->l.size) < 0 ||
	    (mt && layer_compression_from_media_type(mt, &c) < 0))
		return -KILN_EPROTO;
	snprintf(ret->media_type, sizeof(ret->media_type), "%s", layer_compression_media_type(c, true));
	return 0;
}

static int
read_layer(const struct proto_msg *m, struct solver_layer *ret)
{
	const msgpack_object *l = proto_msg_get(m, "layer");
	int r;

	if (!l)
		return 0;
	if (l->type != MSGPACK_OBJECT_MAP)
		return -KILN_EPROTO;
	r = read_layer_obj(l, ret);
	return r < 0 ? r : 1;
}

static void
on_step(struct builds *bs, struct sjob *j, const char *t, const struct proto_msg *m)
{
	struct build *b = j->b;
	struct target *tg = &b->targets[j->target];
	struct kiln_err err = { 0 };
	uint64_t wi = 0;
	int op;

	if (proto_msg_u64(m, "step", &wi) < 0 || wi >= j->n_wire) {
		kiln_err_set(&err, KILN_EPROTO, "node '%s' sent '%s' for a step out of range", j->node->name, t);
		build_fail(bs, b, &err);
		return;
	}
	op = j->wire_map[wi];
	if (op == -1)
		return;
	if (op < -1) {
		/* the image it starts from: once per build, as its FROM step */
		op = -2 - op;
		if (tg->reported[op] && strcmp(t, "step.start") == 0)
			return;
		if (strcmp(t, "step.start") == 0)
			tg->reported[op] = true;
		if (strcmp(t, "step.done") == 0)
			t = "step.image";
	}
	if (strcmp(t, "step.start") == 0) {
		send_progress(b, j->target, (size_t) op, "start", j->node, j->emulated, NULL, 0);
	} else if (strcmp(t, "step.log") == 0) {
		const void *data;
		size_t len;

		if (proto_msg_bin(m, "data", &data, &len) == 0)
			send_progress(b, j->target, (size_t) op, "log", j->node, j->emulated, data, len);
	} else if (strcmp(t, "step.image") == 0) {
		send_progress(b, j->target, (size_t) op, "done", j->node, j->emulated, NULL, 0);
	} else if (strcmp(t, "step.done") == 0) {
		const struct op *o = &tg->plan->ops[op];
		struct solver_layer layer;
		struct solver_rec rec;
		int r = read_layer(m, &layer);

		if (r < 0 || o->input < 0 || tg->st[o->input] != OS_KNOWN) {
			kiln_err_set(&err, KILN_EPROTO, "node '%s': bad result for step %d", j->node->name, op);
			build_fail(bs, b, &err);
			return;
		}
		if (solver_rec_extend(&tg->recs[o->input], r == 1 ? &layer : NULL, &rec) < 0) {
			kiln_err_set(&err, ENOMEM, "out of memory");
			build_fail(bs, b, &err);
			return;
		}
		if (r == 1)
			(void) cache_hold(bs->cache, &layer.l.digest, j->node->name, true, &err);
		if (cache_put(bs->cache, &tg->keys[op], &rec, &err) < 0)
			log_error_err(&err, "cache index");
		solver_rec_release(&tg->recs[op]);
		tg->recs[op] = rec;
		tg->st[op] = OS_KNOWN;
		b->executed++;
		send_progress(b, j->target, (size_t) op, "done", j->node, j->emulated, NULL, 0);
		publish(bs, &tg->keys[op], &rec);
	}
}

static void
on_job_done(struct builds *bs, struct sjob *j)
{
	struct build *b = j->b;
	int bnd[MAX_REFS * 4];
	size_t nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd));
	struct kiln_err err = { 0 };

	/* it pulled or fetched what it started from */
	for (size_t k = 0; k < nb; k++) {
		const struct solver_rec *rec = boundary_rec(j, bnd[k]);
		_cleanup_free_ struct digest *ds = calloc(rec->n_layers + 1, sizeof(*ds));

		for (size_t i = 0; ds && i < rec->n_layers; i++)
			ds[i] = rec->layers[i].l.digest;
		if (ds && cache_hold_many(bs->cache, ds, rec->n_layers, j->node->name, true, &err) < 0)
			log_error_err(&err, "cache index");
		kiln_err_clear(&err);
	}
	if (j->is_export) {
		int r = start_rewrite(b, j, &err);

		if (r < 0)
			build_fail(bs, b, &err);
		else if (r == 0)
			send_export(bs, j);
		return;
	}
	send_job_cancel(j);     /* the node forgets it: nothing is exported from it */
	j->state = J_DONE;
	job_unlink(bs, j);
	job_free(j);
	if (b->detached) {
		if (!build_has_jobs(b))
			build_unlink(bs, b);
		dispatch(bs);
		return;
	}
	advance(b);
}

/* Re-address a decoded message to another build or job id. */
static void
forward_as_step(const struct peer *to, const struct proto_msg *m, const char *id, const uint64_t *step)
{
	const msgpack_object *root = proto_msg_root(m);
	struct proto_writer w;

	proto_writer_init(&w, proto_msg_type(m), proto_msg_id(m));
	proto_w_str(&w, "build", id);
	if (step)
		proto_w_u64(&w, "step", *step);
	for (uint32_t i = 0; root && root->type == MSGPACK_OBJECT_MAP && i < root->via.map.size; i++) {
		const msgpack_object_kv *kv = &root->via.map.ptr[i];

		if (kv->key.type != MSGPACK_OBJECT_STR || proto_obj_is_str(&kv->key, "build") ||
		    (step && proto_obj_is_str(&kv->key, "step")) ||
		    proto_obj_is_str(&kv->key, "v") || proto_obj_is_str(&kv->key, "t") ||
		    proto_obj_is_str(&kv->key, "id"))
			continue;
		char key[64];

		if (kv->key.via.str.size >= sizeof(key))
			continue;
		memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
		key[kv->key.via.str.size] = '\0';
		msgpack_pack_object(proto_w_key(&w, key), kv->val);
	}
	(void) peer_send(to, &w);
	proto_writer_release(&w);
}

static void
forward_as(const struct peer *to, const struct proto_msg *m, const char *id)
{
	forward_as_step(to, m, id, NULL);
}

static void
send_done(struct build *b)
{
	struct proto_writer w;
	const struct target *t0 = &b->targets[0];
	size_t steps = 0;

	for (size_t ti = 0; ti < b->n_targets; ti++)
		steps += b->targets[ti].plan->n_ops;
	proto_writer_init(&w, "build.done", 0);
	proto_w_str(&w, "build", b->id);
	proto_w_str(&w, "manifest_digest", b->n_targets > 1 ? b->index_digest : t0->manifest_digest);
	proto_w_str(&w, "config_digest", t0->config_digest);
	proto_w_u64(&w, "ctx_files", b->ctx_files);
	proto_w_u64(&w, "ctx_bytes", b->ctx_bytes);
	proto_w_u64(&w, "peer_files", b->peer_files);
	proto_w_u64(&w, "peer_bytes", b->peer_bytes);
	proto_w_u64(&w, "steps", steps);
	proto_w_u64(&w, "executed", b->executed);
	proto_w_u64(&w, "cached", b->cached);
	proto_w_str(&w, "node", b->nodes_used);
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
	struct sjob *j = id ? job_find(bs, id) : NULL;
	struct build *b;

	if (!j) {
		/* credit for blobs the client sends in a round */
		b = id ? build_find(bs, id) : NULL;
		if (b && !b->detached && strcmp(t, "xfer.credit") == 0)
			(void) peer_forward(&b->client, payload);
		else
			log_debug("'%s' from node '%s' for unknown job %s, ignoring", t, n->name, id ? id : "-");
		return;
	}
	if (j->node != n) {
		log_debug("'%s' from node '%s' for job %s of another node, ignoring", t, n->name, j->id);
		return;
	}
	b = j->b;
	if (strcmp(t, "job.missing") == 0) {
		on_job_missing(bs, j, m);
	} else if (strcmp(t, "blob.fetch.done") == 0) {
		on_fetch_done(bs, j, m);
	} else if (strncmp(t, "step.", 5) == 0) {
		on_step(bs, j, t, m);
	} else if (strcmp(t, "job.done") == 0) {
		on_job_done(bs, j);
	} else if (strcmp(t, "job.rewritten") == 0 && j->is_export && b->rewriting) {
		if (apply_rewritten(b, j, m, &err) < 0)
			build_fail(bs, b, &err);
		else
			send_export(bs, j);
	} else if (strcmp(t, "ssh.req") == 0 || strcmp(t, "ssh.close") == 0) {
		/* a step's agent traffic: to the client, its step numbered so
		 * that the answer finds this job again (serial << 16 | step) */
		uint64_t step = 0;

		if (!b->detached && proto_msg_u64(m, "step", &step) == 0 && step < SSH_STEP_SPAN) {
			uint64_t s2 = (uint64_t) j->serial * SSH_STEP_SPAN + step;

			forward_as_step(&b->client, m, b->id, &s2);
		}
	} else if (strcmp(t, "output.begin") == 0 || strcmp(t, "xfer.data") == 0) {
		if (!b->detached)
			forward_as(&b->client, m, b->id);
	} else if (strcmp(t, "job.exported") == 0) {
		send_done(b);
		log_info("build=%s done in %" PRId64 " ms (%" PRIu64 " steps run, %" PRIu64 " cached)", b->id,
			 kiln_now_ms() - b->start_ms, b->executed, b->cached);
		build_end(bs, b);
	} else if (strcmp(t, "job.error") == 0) {
		_cleanup_free_ char *msg = proto_msg_strdup(m, "msg");
		uint64_t code = EIO;

		(void) proto_msg_u64(m, "code", &code);
		kiln_err_set(&err, (int) code, "%s", msg ? msg : "node reported an error");
		if (b->detached) {
			job_drop(bs, j, false);
			if (!build_has_jobs(b))
				build_unlink(bs, b);
			return;
		}
		build_fail(bs, b, &err);
	} else {
		log_debug("unexpected '%s' from node '%s', ignoring", t, n->name);
	}
}

void
builds_node_gone(struct builds *bs, struct node *n)
{
	bool again = true;

	/* every build with work there starts over from the index */
	while (again) {
		again = false;
		for (struct build *b = bs->head; b; b = b->next) {
			bool hit = false;

			for (struct sjob *j = bs->jobs; j && !hit; j = j->next)
				hit = j->b == b && j->node == n && j->state != J_WAIT;
			if (!hit)
				continue;
			log_info("build=%s: node '%s' was lost, solving again", b->id, n->name);
			if (b->detached) {
				for (struct sjob *j = bs->jobs; j; ) {
					struct sjob *next = j->next;

					if (j->b == b && j->node == n)
						job_drop(bs, j, false);
					j = next;
				}
				if (!build_has_jobs(b))
					build_unlink(bs, b);
			} else {
				build_reset(bs, b);
			}
			again = true;
			break;
		}
	}
	dispatch(bs);
}


static void
on_build_start(struct builds *bs, const struct peer *from, const struct proto_msg *m)
{
	_cleanup_free_ char *id = proto_msg_strdup(m, "build");
	_cleanup_free_ char *kind = proto_msg_strdup(m, "output");
	struct kiln_err err = { 0 };
	struct build *b;
	char ps[PLATFORM_STR_SIZE];
	char **platforms = NULL;
	size_t n_platforms = 0;

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
	b->epoch = -1;
	(void) proto_msg_i64(m, "epoch", &b->epoch);
	(void) proto_msg_bool(m, "no_cache", &b->no_cache);
	b->start_ms = b->client_seen_ms = kiln_now_ms();
	b->next = bs->head;
	bs->head = b;
	if (read_compression(b, m, &err) < 0) {
		build_fail(bs, b, &err);
		return;
	}
	b->tag = proto_msg_strdup(m, "tag");
	if (read_strv(m, "names", &b->names, &b->n_names, &err) < 0 ||
	    read_strv(m, "push", &b->push, &b->n_push, &err) < 0 ||
	    read_strv(m, "no_cache_filter", &b->no_cache_filter, &b->n_no_cache_filter, &err) < 0 ||
	    read_strv(m, "ssh", &b->ssh_ids, &b->n_ssh_ids, &err) < 0 ||
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
	{
		_cleanup_free_ char *call = proto_msg_strdup(m, "call");

		if (call && *call && strcmp(call, "build") != 0) {
			answer_call(bs, b, m, call);
			return;
		}
	}
	if (read_strv(m, "platforms", &platforms, &n_platforms, &err) < 0) {
		build_fail(bs, b, &err);
		return;
	}
	if (n_platforms == 0) {
		_cleanup_free_ char *one = proto_msg_strdup(m, "platform");

		if (!one || op_add_arg(&platforms, &n_platforms, one) < 0) {
			kiln_err_set(&err, EINVAL, "build.start without a platform");
			build_fail(bs, b, &err);
			return;
		}
	}
	if (n_platforms > MAX_TARGETS) {
		op_strv_free(platforms, n_platforms);
		kiln_err_set(&err, E2BIG, "at most %d platforms in one build", MAX_TARGETS);
		build_fail(bs, b, &err);
		return;
	}
	for (size_t i = 0; i < n_platforms; i++) {
		struct target *t = &b->targets[b->n_targets];
		int r;

		if (platform_parse(platforms[i], &t->platform) < 0) {
			kiln_err_set(&err, EINVAL, "invalid platform '%s'", platforms[i]);
			break;
		}
		b->n_targets++;
		r = start_plan(b, m, &t->platform, build_platform_for(bs, &t->platform), &t->plan, &err);
		if (r == 0)
			r = target_init(b, t, &err);
		if (r < 0) {
			if (n_platforms > 1)
				kiln_err_wrap(&err, "%s", platform_fmt(&t->platform, ps));
			break;
		}
	}
	op_strv_free(platforms, n_platforms);
	if (err.code) {
		build_fail(bs, b, &err);
		return;
	}
	log_info("build=%s platforms=%zu steps=%zu", b->id, b->n_targets, b->targets[0].plan->n_ops);
	advance(b);
}

/* ---- messages from clients ---- */

static struct sjob *
client_job(struct build *b, const struct proto_msg *m)
{
	_cleanup_free_ char *jid = proto_msg_strdup(m, "job");
	struct sjob *j = jid ? job_find(b->builds, jid) : NULL;

	return j && j->b == b ? j : NULL;
}

void
builds_on_client(struct builds *bs, const struct peer *from, const struct proto_msg *m,
		 zframe_t *payload)
{
	const char *t = proto_msg_type(m);
	_cleanup_free_ char *id = proto_msg_strdup(m, "build");
	struct kiln_err err = { 0 };
	struct build *b;
	struct sjob *j;

	if (strcmp(t, "build.start") == 0) {
		on_build_start(bs, from, m);
		return;
	}
	b = id ? build_find(bs, id) : NULL;
	if (!b || b->detached || !peer_equal(&b->client, from)) {
		kiln_err_set(&err, ENOENT, "no build '%s' of this client", id ? id : "");
		send_error(from, "error", id, proto_msg_id(m), &err);
		return;
	}
	b->client_seen_ms = kiln_now_ms();
	if (strcmp(t, "blob.put") == 0 || strcmp(t, "xfer.data") == 0) {
		struct node *n = b->round ? b->round->node : NULL;

		if (strcmp(t, "blob.put") == 0) {
			uint64_t size = 0;

			(void) proto_msg_u64(m, "size", &size);
			b->ctx_files++;
			b->ctx_bytes += size;
		}
		/* a round whose node went away: the blobs have nowhere to go */
		if (n && n->status == NODE_READY)
			(void) peer_forward(&n->peer, payload);
	} else if (strcmp(t, "xfer.credit") == 0) {
		if (b->export_job && b->export_job->node)
			forward_as(&b->export_job->node->peer, m, b->export_job->id);
	} else if (strcmp(t, "build.secrets") == 0) {
		/* Relayed as is: the values are never read here, logged, kept or echoed
		 * (main.c wipes the frame and the decoded copy after this). */
		if ((j = client_job(b, m)) && j->node && j->state == J_SYNC)
			(void) peer_forward(&j->node->peer, payload);
	} else if (strcmp(t, "build.secrets.done") == 0) {
		if ((j = client_job(b, m)) && j->secrets) {
			j->secrets = false;
			job_try_run(bs, j);
		}
	} else if (strcmp(t, "ssh.resp") == 0) {
		/* an agent's answer for a step; one that comes after the step
		 * ended has no one left to read it */
		uint64_t step = 0;

		if (proto_msg_u64(m, "step", &step) == 0) {
			for (j = bs->jobs; j; j = j->next) {
				if (j->b == b && (uint64_t) j->serial == step / SSH_STEP_SPAN && j->state == J_RUN) {
					uint64_t s2 = step % SSH_STEP_SPAN;

					forward_as_step(&j->node->peer, m, j->id, &s2);
					break;
				}
			}
		}
	} else if (strcmp(t, "build.synced") == 0 && b->round_open) {
		round_done(bs, b);
	} else if (strcmp(t, "build.cancel") == 0) {
		kiln_err_set(&err, ECANCELED, "build canceled by the client");
		build_fail(bs, b, &err);
	} else {
		kiln_err_set(&err, KILN_EPROTO, "unexpected '%s' for build %s", t, b->id);
		build_fail(bs, b, &err);
	}
}

void
builds_client_seen(struct builds *bs, const struct peer *from)
{
	for (struct build *b = bs->head; b; b = b->next)
		if (!b->detached && peer_equal(&b->client, from))
			b->client_seen_ms = kiln_now_ms();
}

void
builds_tick(struct builds *bs, int64_t now_ms)
{
	bool again = true;

	while (again) {
		again = false;
		for (struct build *b = bs->head; b; b = b->next) {
			struct kiln_err err = { 0 };

			if (b->detached || now_ms - b->client_seen_ms < CLIENT_SILENCE_MS)
				continue;
			log_info("build=%s: client silent for %d s, canceling", b->id, CLIENT_SILENCE_MS / 1000);
			kiln_err_set(&err, ECANCELED, "client went away");
			build_fail(bs, b, &err);
			again = true;
			break;
		}
	}
	dispatch(bs);
}
