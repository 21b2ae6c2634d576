/* Build sessions and the farm's solver and scheduler: see build.h for the
 * message flow. A build plans one graph per target platform, looks every
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

#define DOCKERFILE_MAX (4u << 20)
#define MAX_TARGETS 16
#define CLIENT_SILENCE_MS 5000       /* clients ping every second */
#define SSH_STEP_SPAN 65536u

/* Per op of a target. */
enum op_state {
	OS_NEW,                       /* not looked at, or to be solved again */
	OS_KNOWN,                     /* rec is its result */
	OS_QUEUED,                    /* one of this build's jobs runs it */
	OS_WAIT,                      /* another build's job runs the same key */
};

struct target {
	struct plan *plan;
	struct platform platform;
	struct digest *keys;
	struct solver_rec *recs;
	unsigned char *st;            /* enum op_state */
	bool *cached;                 /* answered from the index (or another build) */
	bool *no_cache;               /* never answered from the index */
	bool *reported;               /* "cached" progress sent */
	int *job_of;                  /* OS_QUEUED: the job's serial */
	int *rw_idx;                  /* per layer of the image: its rewrite, or -1 */
	size_t n_rw_idx;
	char manifest_digest[DIGEST_STR_SIZE];
	char config_digest[DIGEST_STR_SIZE];
};

enum job_state { J_WAIT, J_SYNC, J_RUN, J_DONE };

/* A layer the output wants in another form, made by the export node
 * (job.rewrite): src recompressed to the build's compression, its file
 * times clamped to epoch when epoch >= 0 (rewrite-timestamp). */
struct rewrite {
	struct digest src;
	int64_t epoch;
};

struct sjob {
	struct sjob *next;
	struct build *b;              /* NULL: its build is gone, it runs for waiters */
	int serial;
	char id[64];
	size_t target;
	bool is_export;
	int *ops;                     /* plan op indexes, ascending */
	size_t n_ops;
	int *wire_map;                /* per op sent: plan op index, -1 for a boundary */
	size_t n_wire;
	struct digest *keys;          /* per op of ops[]: its key (for waiters once b is gone) */
	enum job_state state;
	struct node *node;
	bool emulated;
	bool fetching;                /* blob.fetch sent, no answer yet */
	bool client_round;            /* waiting for (or in) a client round */
	bool secrets;                 /* waiting for build.secrets.done */
	bool secrets_asked;
	bool holds_slot;              /* counted in node->assigned */
	struct digest *client_need;
	size_t n_client_need;
	int64_t started_ms;
};

struct build {
	struct build *next;
	struct builds *builds;        /* the table it is in (borrowed) */
	char id[48];
	struct peer client;
	struct target targets[MAX_TARGETS];
	size_t n_targets;
	bool exporting;
	bool detached;                /* its client is done with it; jobs others wait for run on */
	bool round_open;              /* build.need sent, build.synced not yet */
	int resolves;                 /* times it started over after losing blobs */
	struct sjob *export_job;
	int next_serial;
	struct sjob *round;           /* the job the client is sending blobs for */
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
	bool rewriting;               /* job.rewrite sent, job.rewritten not yet */
	bool no_cache;
	char **ssh_ids;               /* the client's --ssh ids (never its sockets) */
	size_t n_ssh_ids;
	char **no_cache_filter;       /* stage names */
	size_t n_no_cache_filter;
	int64_t epoch;
	int64_t start_ms;
	int64_t client_seen_ms;
	uint64_t ctx_files, ctx_bytes;      /* from the client */
	uint64_t peer_files, peer_bytes;    /* between nodes */
	uint64_t executed, cached;
	char nodes_used[512];
	char index_digest[DIGEST_STR_SIZE];
	char *manifest_json;          /* top manifest of the output (for build.done) */
	struct rewrite *rw;           /* job.rewrite: one per distinct request */
	size_t n_rw;
};

struct builds {
	struct build *head;
	struct sjob *jobs;
	struct nodes *nodes;
	struct cache *cache;
	struct registry *reg;       /* resolves base images; NULL when it failed to start */
};

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

static void
job_free(struct sjob *j)
{
	free(j->ops);
	free(j->wire_map);
	free(j->keys);
	free(j->client_need);
	free(j);
}

static void
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

static void
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

static void
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

static void build_reset(struct builds *bs, struct build *b);

/* ---- progress ---- */

static void
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

static void
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

/* ---- the solver ---- */

/* Whether every layer of rec that does not come from a registry is held
 * by a live node: only then can a job use it. */
static bool
rec_available(struct builds *bs, const struct solver_rec *rec)
{
	for (size_t i = rec->ref ? rec->n_base : 0; i < rec->n_layers; i++) {
		char names[CACHE_MAX_HOLDERS][CACHE_NODE_NAME_MAX];
		struct kiln_err err = { 0 };
		int n = cache_holders(bs->cache, &rec->layers[i].l.digest, names, CACHE_MAX_HOLDERS, &err);
		bool live = false;

		for (int k = 0; k < n && !live; k++) {
			struct node *nd = nodes_by_name(bs->nodes, names[k]);

			live = nd && nd->status == NODE_READY;
		}
		if (!live)
			return false;
	}
	return true;
}

/* The job (of any build) that is running key and has not finished that
 * op yet. */
static struct sjob *
inflight(struct builds *bs, const struct digest *key)
{
	for (struct sjob *j = bs->jobs; j; j = j->next) {
		const struct target *t = &j->b->targets[j->target];

		if (j->is_export || j->state == J_DONE)
			continue;
		for (size_t k = 0; k < j->n_ops; k++)
			if (t->st[j->ops[k]] == OS_QUEUED && digest_equal(&j->keys[k], key))
				return j;
	}
	return NULL;
}

static int
op_refs(const struct op *op, int refs[], size_t max)
{
	size_t n = 0;

	if (op->kind == OP_IMAGE)
		return 0;
	if (op->input >= 0 && n < max)
		refs[n++] = op->input;
	if (op->kind == OP_COPY_FROM && op->from >= 0 && n < max)
		refs[n++] = op->from;
	for (size_t k = 0; op->kind == OP_RUN && k < op->n_mounts; k++)
		if (op->mounts[k].from >= 0 && n < max)
			refs[n++] = op->mounts[k].from;
	return (int) n;
}

#define MAX_REFS 70

static bool
in_job(const struct sjob *j, int op)
{
	for (size_t k = 0; k < j->n_ops; k++)
		if (j->ops[k] == op)
			return true;
	return false;
}

static int
job_add_op(struct sjob *j, int op, const struct digest *key)
{
	int *o = realloc(j->ops, (j->n_ops + 1) * sizeof(*o));
	struct digest *k;

	if (!o)
		return -ENOMEM;
	j->ops = o;
	k = realloc(j->keys, (j->n_ops + 1) * sizeof(*k));
	if (!k)
		return -ENOMEM;
	j->keys = k;
	/* ops arrive from the last to the first: keep them ascending */
	memmove(j->ops + 1, j->ops, j->n_ops * sizeof(*o));
	memmove(j->keys + 1, j->keys, j->n_ops * sizeof(*k));
	j->ops[0] = op;
	j->keys[0] = *key;
	j->n_ops++;
	return 0;
}

static struct sjob *
job_new(struct build *b, size_t ti)
{
	struct sjob *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->b = b;
	j->target = ti;
	j->serial = b->next_serial++;
	snprintf(j->id, sizeof(j->id), "%s.%d", b->id, j->serial);
	/* append: jobs start in the order they were made */
	{
		struct sjob **p = &b->builds->jobs;

		while (*p)
			p = &(*p)->next;
		*p = j;
	}
	return j;
}

static bool
stage_filtered(const struct build *b, const struct target *t, int op)
{
	int si = t->plan->op_stage ? t->plan->op_stage[op] : -1;

	if (b->no_cache)
		return true;
	if (si < 0 || !b->n_no_cache_filter)
		return false;
	for (size_t s = 0; s < t->plan->n_stages; s++) {
		const struct plan_stage *ps = &t->plan->stages[s];

		if (ps->index != si)
			continue;
		for (size_t k = 0; k < b->n_no_cache_filter; k++)
			if ((ps->name && strcasecmp(ps->name, b->no_cache_filter[k]) == 0) ||
			    (size_t) atoi(b->no_cache_filter[k]) == (size_t) si)
				return true;
	}
	return false;
}

static int
image_rec(const struct target *t, size_t i, struct solver_rec *ret)
{
	const struct plan *p = t->plan;
	char (*mts)[128] = NULL;
	int r;

	if (p->n_chain && (size_t) p->chain[0] == i && p->n_base == p->ops[i].n_layers) {
		mts = calloc(p->n_base + 1, sizeof(*mts));
		if (!mts)
			return -ENOMEM;
		for (size_t k = 0; k < p->n_base; k++)
			snprintf(mts[k], sizeof(mts[k]), "%s", p->base[k].media_type);
	}
	r = solver_rec_image(&p->ops[i], (const char (*)[128]) mts, ret);
	free(mts);
	return r;
}

/* Walk each target from its image back: ops the index answers become
 * known, ops another job runs are waited for, and the rest go into one
 * new job per stage. */
static int
solve(struct build *b, struct kiln_err *err)
{
	struct builds *bs = b->builds;

	for (size_t ti = 0; ti < b->n_targets; ti++) {
		struct target *t = &b->targets[ti];
		size_t n = t->plan->n_ops;
		_cleanup_free_ bool *need = calloc(n + 1, sizeof(bool));
		struct sjob *by_stage[256] = { 0 };
		struct sjob *scratch_job = NULL;

		if (!need)
			return kiln_err_set(err, ENOMEM, "out of memory");
		need[n - 1] = true;
		for (size_t ii = n; ii-- > 0; ) {
			const struct op *op = &t->plan->ops[ii];
			int refs[MAX_REFS], nr;
			struct sjob *j, **slot;
			int si;

			if (!need[ii] || t->st[ii] != OS_NEW)
				continue;
			if (op->kind == OP_IMAGE) {
				if (image_rec(t, ii, &t->recs[ii]) < 0)
					return kiln_err_set(err, ENOMEM, "out of memory");
				t->st[ii] = OS_KNOWN;
				continue;
			}
			if (!t->no_cache[ii]) {
				struct solver_rec rec;
				int r = cache_get(bs->cache, &t->keys[ii], &rec, err);

				if (r < 0)
					return r;
				if (r == 1 && rec_available(bs, &rec)) {
					t->recs[ii] = rec;
					t->st[ii] = OS_KNOWN;
					t->cached[ii] = true;
					continue;
				}
				if (r == 1)
					solver_rec_release(&rec);
				if (inflight(bs, &t->keys[ii])) {
					t->st[ii] = OS_WAIT;
					continue;
				}
			}
			si = t->plan->op_stage ? t->plan->op_stage[ii] : -1;
			slot = si >= 0 && si < (int) ARRAY_SIZE(by_stage) ? &by_stage[si] : &scratch_job;
			j = *slot;
			if (!j && !(j = *slot = job_new(b, ti)))
				return kiln_err_set(err, ENOMEM, "out of memory");
			if (job_add_op(j, (int) ii, &t->keys[ii]) < 0)
				return kiln_err_set(err, ENOMEM, "out of memory");
			t->st[ii] = OS_QUEUED;
			t->job_of[ii] = j->serial;
			nr = op_refs(op, refs, MAX_REFS);
			for (int k = 0; k < nr; k++)
				need[refs[k]] = true;
		}
	}
	return 0;
}

/* "cached" once for every op answered without running it that the image
 * reaches (through inputs, COPY --from and mounts, cached or not). */
static void
report_cached(struct build *b)
{
	for (size_t ti = 0; ti < b->n_targets; ti++) {
		struct target *t = &b->targets[ti];
		size_t n = t->plan->n_ops;
		_cleanup_free_ bool *reach = calloc(n + 1, sizeof(bool));

		if (!reach)
			return;
		reach[n - 1] = true;
		for (size_t i = n; i-- > 0; ) {
			int refs[MAX_REFS], nr;

			if (!reach[i])
				continue;
			nr = op_refs(&t->plan->ops[i], refs, MAX_REFS);
			for (int k = 0; k < nr; k++)
				reach[refs[k]] = true;
			if (t->cached[i] && !t->reported[i] && t->st[i] == OS_KNOWN) {
				t->reported[i] = true;
				b->cached++;
				send_progress(b, ti, i, "cached", NULL, false, NULL, 0);
			}
		}
	}
}

/* A result is known: every op of any build waiting for key gets it. */
static void advance(struct build *b);

static void
publish(struct builds *bs, const struct digest *key, const struct solver_rec *rec)
{
	for (struct build *b = bs->head; b; b = b->next) {
		bool hit = false;

		for (size_t ti = 0; ti < b->n_targets; ti++) {
			struct target *t = &b->targets[ti];

			for (size_t i = 0; i < t->plan->n_ops; i++) {
				if (t->st[i] != OS_WAIT || !digest_equal(&t->keys[i], key))
					continue;
				if (solver_rec_copy(rec, &t->recs[i]) < 0)
					continue;
				t->st[i] = OS_KNOWN;
				t->cached[i] = true;
				hit = true;
			}
		}
		if (hit && !b->detached)
			advance(b);
	}
}

/* A job gave up key: whoever waited for it solves again. */
static void
unwait(struct builds *bs, const struct digest *key)
{
	for (struct build *b = bs->head; b; b = b->next) {
		bool hit = false;

		for (size_t ti = 0; ti < b->n_targets; ti++) {
			struct target *t = &b->targets[ti];

			for (size_t i = 0; i < t->plan->n_ops; i++)
				if (t->st[i] == OS_WAIT && digest_equal(&t->keys[i], key)) {
					t->st[i] = OS_NEW;
					hit = true;
				}
		}
		if (hit && !b->detached)
			advance(b);
	}
}

static bool
job_has_waiters(struct builds *bs, const struct sjob *j)
{
	const struct target *jt = &j->b->targets[j->target];

	for (size_t k = 0; k < j->n_ops; k++) {
		if (jt->st[j->ops[k]] != OS_QUEUED)
			continue;
		for (struct build *b = bs->head; b; b = b->next) {
			if (b == j->b || b->detached)
				continue;
			for (size_t ti = 0; ti < b->n_targets; ti++) {
				const struct target *t = &b->targets[ti];

				for (size_t i = 0; i < t->plan->n_ops; i++)
					if (t->st[i] == OS_WAIT && digest_equal(&t->keys[i], &j->keys[k]))
						return true;
			}
		}
	}
	return false;
}

/* Drop a job: its unfinished ops go back to OS_NEW, waiters for them are
 * told. Frees j. */
static void
job_drop(struct builds *bs, struct sjob *j, bool cancel)
{
	struct target *t = &j->b->targets[j->target];
	_cleanup_free_ struct digest *gone = calloc(j->n_ops + 1, sizeof(*gone));
	size_t n_gone = 0;

	if (cancel)
		send_job_cancel(j);
	job_unlink(bs, j);
	for (size_t k = 0; k < j->n_ops; k++)
		if (t->st[j->ops[k]] == OS_QUEUED) {
			t->st[j->ops[k]] = OS_NEW;
			if (gone)
				gone[n_gone++] = j->keys[k];
		}
	job_free(j);
	for (size_t k = 0; k < n_gone; k++)
		unwait(bs, &gone[k]);
}

static bool
build_has_jobs(const struct build *b)
{
	for (const struct sjob *j = b->builds->jobs; j; j = j->next)
		if (j->b == b)
			return true;
	return false;
}

static void
build_unlink(struct builds *bs, struct build *b)
{
	for (struct build **p = &bs->head; *p; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			break;
		}
	build_free(b);
}

/* The build is over for its client (done, failed or gone). Jobs that
 * other builds wait for run on, detached; the rest stop. */
static void
build_end(struct builds *bs, struct build *b)
{
	bool again = true;

	b->detached = true;
	while (again) {
		again = false;
		for (struct sjob *j = bs->jobs; j; j = j->next) {
			if (j->b != b || (j->state == J_RUN && !j->is_export && job_has_waiters(bs, j)))
				continue;
			job_drop(bs, j, true);
			again = true;
			break;
		}
	}
	if (!build_has_jobs(b))
		build_unlink(bs, b);
}

static void
build_fail(struct builds *bs, struct build *b, const struct kiln_err *err)
{
	log_info("build=%s failed: %s", b->id, err->msg);
	if (!b->detached)
		send_error(&b->client, "build.error", b->id, 0, err);
	build_end(bs, b);
}

/* ---- scheduling ---- */

static bool
job_ready(const struct sjob *j)
{
	const struct target *t = &j->b->targets[j->target];

	if (j->is_export)
		return true;
	for (size_t k = 0; k < j->n_ops; k++) {
		int refs[MAX_REFS];
		int nr = op_refs(&t->plan->ops[j->ops[k]], refs, MAX_REFS);

		for (int r = 0; r < nr; r++)
			if (!in_job(j, refs[r]) && t->st[refs[r]] != OS_KNOWN)
				return false;
	}
	return true;
}

/* The records a job reads from outside itself, in the order they go on
 * the wire (as OP_IMAGE ops before the job's own). */
static size_t
job_boundaries(const struct sjob *j, int *out, size_t max)
{
	const struct target *t = &j->b->targets[j->target];
	size_t n = 0;

	if (j->is_export) {
		/* one image per platform, the first target last: the job's
		 * result is then its filesystem (for type=local and tar) */
		for (size_t ti = j->b->n_targets; ti-- > 0 && n < max; )
			out[n++] = (int) ti;
		return n;
	}
	for (size_t k = 0; k < j->n_ops; k++) {
		int refs[MAX_REFS];
		int nr = op_refs(&t->plan->ops[j->ops[k]], refs, MAX_REFS);

		for (int r = 0; r < nr; r++) {
			bool seen = in_job(j, refs[r]);

			for (size_t x = 0; x < n && !seen; x++)
				seen = out[x] == refs[r];
			if (!seen && n < max)
				out[n++] = refs[r];
		}
	}
	return n;
}

static const struct solver_rec *
boundary_rec(const struct sjob *j, int which)
{
	if (j->is_export) {
		const struct target *t = &j->b->targets[which];

		return &t->recs[t->plan->n_ops - 1];
	}
	return &j->b->targets[j->target].recs[which];
}

static int
digest_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct digest));
}

/* The blobs the node must hold before the job runs: layers of boundary
 * records that no registry serves, and the context files its COPYs read. */
static int
job_blobs(const struct sjob *j, struct digest **ret, size_t *ret_n)
{
	const struct target *t = &j->b->targets[j->target];
	int bnd[MAX_REFS * 4];
	size_t nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd)), n = 0, cap = 16;
	struct digest *d = malloc(cap * sizeof(*d));

	if (!d)
		return -ENOMEM;
#define PUSH_DIGEST(x) do { \
		if (n == cap) { \
			struct digest *nd_ = realloc(d, (cap *= 2) * sizeof(*d)); \
			if (!nd_) { free(d); return -ENOMEM; } \
			d = nd_; \
		} \
		d[n++] = (x); \
	} while (0)
	for (size_t k = 0; k < nb; k++) {
		const struct solver_rec *rec = boundary_rec(j, bnd[k]);

		for (size_t i = rec->ref ? rec->n_base : 0; i < rec->n_layers; i++)
			PUSH_DIGEST(rec->layers[i].l.digest);
	}
	for (size_t k = 0; k < j->n_ops; k++) {
		const struct op *op = &t->plan->ops[j->ops[k]];

		for (size_t e = 0; op->kind == OP_COPY && e < op->n_entries; e++)
			if (op->entries[e].kind == OP_ENTRY_FILE)
				PUSH_DIGEST(op->entries[e].digest);
	}
#undef PUSH_DIGEST
	qsort(d, n, sizeof(*d), digest_cmp);
	{
		size_t u = 0;

		for (size_t i = 0; i < n; i++)
			if (u == 0 || !digest_equal(&d[u - 1], &d[i]))
				d[u++] = d[i];
		n = u;
	}
	*ret = d;
	*ret_n = n;
	return 0;
}

static uint64_t
bytes_held(struct builds *bs, const struct node *nd, const struct sjob *j)
{
	int bnd[MAX_REFS * 4];
	size_t nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd));
	uint64_t sum = 0;

	for (size_t k = 0; k < nb; k++) {
		const struct solver_rec *rec = boundary_rec(j, bnd[k]);

		for (size_t i = 0; i < rec->n_layers; i++) {
			char names[CACHE_MAX_HOLDERS][CACHE_NODE_NAME_MAX];
			struct kiln_err err = { 0 };
			int n = cache_holders(bs->cache, &rec->layers[i].l.digest, names, CACHE_MAX_HOLDERS, &err);

			for (int x = 0; x < n; x++)
				if (strcmp(names[x], nd->name) == 0) {
					sum += rec->layers[i].l.size;
					break;
				}
		}
	}
	return sum;
}

/* Native before emulated; then the most bytes of the job's inputs held;
 * then the least loaded. NULL with *ret_none when no live node serves the
 * platform at all, NULL without it when they are all busy. */
static struct node *
pick_node(struct builds *bs, const struct sjob *j, bool *ret_emulated, bool *ret_none)
{
	const struct platform *p = &j->b->targets[j->target].platform;

	*ret_none = true;
	for (int pass = 0; pass < 2; pass++) {
		struct node *best = NULL;
		uint64_t best_bytes = 0;
		bool any = false;

		for (struct node *n = nodes_list(bs->nodes); n; n = n->next) {
			uint64_t held;

			if (n->status != NODE_READY || (!j->is_export && !node_serves(n, p, pass == 0)))
				continue;
			any = true;
			if (n->assigned >= (n->capacity ? n->capacity : 1))
				continue;
			held = bytes_held(bs, n, j);
			if (!best || held > best_bytes ||
			    (held == best_bytes && (uint64_t) n->assigned * best->capacity <
						   (uint64_t) best->assigned * n->capacity)) {
				best = n;
				best_bytes = held;
			}
		}
		if (any) {
			*ret_none = false;
			*ret_emulated = pass == 1;
			return best;
		}
		if (j->is_export)
			break;
	}
	return NULL;
}

static void job_try_run(struct builds *bs, struct sjob *j);

static void
job_start_sync(struct builds *bs, struct sjob *j)
{
	struct proto_writer w;
	msgpack_packer *pk;
	_cleanup_free_ struct digest *d = NULL;
	size_t n = 0;
	char ds[DIGEST_STR_SIZE];

	j->state = J_SYNC;
	j->node->assigned++;
	j->holds_slot = true;
	j->started_ms = kiln_now_ms();
	note_node(j->b, j->node);
	if (job_blobs(j, &d, &n) < 0) {
		struct kiln_err err = { 0 };

		kiln_err_set(&err, ENOMEM, "out of memory");
		build_fail(bs, j->b, &err);
		return;
	}
	if (n == 0) {
		job_try_run(bs, j);
		return;
	}
	j->fetching = true;   /* until job.missing is answered */
	proto_writer_init(&w, "job.have", 0);
	proto_w_str(&w, "build", j->id);
	pk = proto_w_key(&w, "digests");
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		proto_pack_str(pk, digest_fmt(&d[i], ds));
	(void) peer_send(&j->node->peer, &w);
	proto_writer_release(&w);
}

static void start_export(struct builds *bs, struct build *b);

/* Give every ready job a node, while nodes have room. */
static void
dispatch(struct builds *bs)
{
	bool again = true;

	while (again) {
		again = false;
		for (struct sjob *j = bs->jobs; j; j = j->next) {
			struct node *n;
			bool emulated, none;

			if (j->state != J_WAIT || j->b->detached || !job_ready(j))
				continue;
			n = pick_node(bs, j, &emulated, &none);
			if (!n && none) {
				struct kiln_err err = { 0 };
				char ps[PLATFORM_STR_SIZE];

				kiln_err_set(&err, ENODEV, "no node of this builder serves platform %s",
					     platform_fmt(&j->b->targets[j->target].platform, ps));
				build_fail(bs, j->b, &err);
				again = true;
				break;
			}
			if (!n)
				continue;
			j->node = n;
			j->emulated = emulated;
			log_info("build=%s job=%s node=%s%s ops=%zu", j->b->id, j->id, n->name,
				 emulated ? " (emulated)" : "", j->n_ops);
			job_start_sync(bs, j);
			again = true;
			break;
		}
	}
}

/* After any change to a build: solve what is new, say what came from the
 * cache, export once every image is known, and hand out work. */
static void
advance(struct build *b)
{
	struct builds *bs = b->builds;
	struct kiln_err err = { 0 };
	bool all = true;

	if (b->detached)
		return;
	if (solve(b, &err) < 0) {
		build_fail(bs, b, &err);
		return;
	}
	report_cached(b);
	for (size_t ti = 0; ti < b->n_targets; ti++)
		all = all && b->targets[ti].st[b->targets[ti].plan->n_ops - 1] == OS_KNOWN;
	if (all && !b->exporting)
		start_export(bs, b);
	dispatch(bs);
}

/* ---- client rounds: blobs only the client has ---- */

static void
next_round(struct build *b)
{
	struct proto_writer w;
	msgpack_packer *pk;
	char ds[DIGEST_STR_SIZE];

	if (b->round_open || b->detached)
		return;
	for (struct sjob *j = b->builds->jobs; j; j = j->next) {
		if (j->b != b || !j->client_round)
			continue;
		b->round = j;
		b->round_open = true;
		proto_writer_init(&w, "build.need", 0);
		proto_w_str(&w, "build", b->id);
		pk = proto_w_key(&w, "digests");
		msgpack_pack_array(pk, j->n_client_need);
		for (size_t i = 0; i < j->n_client_need; i++)
			proto_pack_str(pk, digest_fmt(&j->client_need[i], ds));
		(void) peer_send(&b->client, &w);
		proto_writer_release(&w);
		return;
	}
}

static void
round_done(struct builds *bs, struct build *b)
{
	struct sjob *j = b->round;

	b->round_open = false;
	b->round = NULL;
	if (j) {
		j->client_round = false;
		/* the node holds them now */
		for (size_t i = 0; i < j->n_client_need && j->node; i++) {
			struct kiln_err err = { 0 };

			(void) cache_hold(bs->cache, &j->client_need[i], j->node->name, true, &err);
		}
		job_try_run(bs, j);
	}
	next_round(b);
}

/* ---- running a job ---- */

static bool
job_mounts_secrets(const struct sjob *j, const char **ids, size_t *n, size_t max)
{
	const struct target *t = &j->b->targets[j->target];

	*n = 0;
	for (size_t k = 0; k < j->n_ops; k++) {
		const struct op *op = &t->plan->ops[j->ops[k]];

		for (size_t m = 0; op->kind == OP_RUN && m < op->n_mounts; m++) {
			bool seen = false;

			if (op->mounts[m].type != OP_MOUNT_SECRET)
				continue;
			for (size_t x = 0; x < *n && !seen; x++)
				seen = strcmp(ids[x], op->mounts[m].id) == 0;
			if (!seen && *n < max)
				ids[(*n)++] = op->mounts[m].id;
		}
	}
	return *n > 0;
}

/* Pack op with its graph positions renumbered for the wire. */
static void
pack_wire_op(const struct op *op, const int *map, msgpack_packer *pk)
{
	struct op v = *op;
	struct op_mount *mounts = NULL;

	v.input = op->kind == OP_IMAGE ? -1 : map[op->input];
	if (op->kind == OP_COPY_FROM)
		v.from = map[op->from];
	if (op->n_mounts && (mounts = calloc(op->n_mounts, sizeof(*mounts)))) {
		for (size_t k = 0; k < op->n_mounts; k++) {
			mounts[k] = op->mounts[k];
			if (mounts[k].from >= 0)
				mounts[k].from = map[mounts[k].from];
		}
		v.mounts = mounts;
	}
	op_pack(&v, pk);
	free(mounts);
}

static void
pack_image_op(const struct solver_rec *rec, const char *name, msgpack_packer *pk)
{
	struct op img = { .kind = OP_IMAGE, .input = -1, .from = -1 };
	struct op_layer *ls = calloc(rec->n_layers + 1, sizeof(*ls));

	for (size_t i = 0; ls && i < rec->n_layers; i++)
		ls[i] = rec->layers[i].l;
	img.name = (char *) name;
	img.ref = rec->ref;
	img.layers = ls;
	img.n_layers = ls ? rec->n_layers : 0;
	op_pack(&img, pk);
	free(ls);
}

static void
send_job_run(struct builds *bs, struct sjob *j)
{
	struct build *b = j->b;
	const struct target *t = &b->targets[j->target];
	int bnd[MAX_REFS * 4];
	size_t nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd));
	_cleanup_free_ int *map = calloc(t->plan->n_ops + 1, sizeof(int));
	struct proto_writer w;
	msgpack_packer *pk;

	if (!map || !(j->wire_map = calloc(nb + j->n_ops + 1, sizeof(int)))) {
		struct kiln_err err = { 0 };

		kiln_err_set(&err, ENOMEM, "out of memory");
		build_fail(bs, b, &err);
		return;
	}
	j->state = J_RUN;
	proto_writer_init(&w, "job.run", 0);
	proto_w_str(&w, "build", j->id);
	proto_w_i64(&w, "epoch", b->epoch);
	proto_w_str(&w, "compression", layer_compression_name(b->compression));
	if (b->compression_level != LAYER_LEVEL_DEFAULT)
		proto_w_i64(&w, "compression_level", b->compression_level);
	if (b->n_ssh_ids) {
		pk = proto_w_key(&w, "ssh");
		msgpack_pack_array(pk, b->n_ssh_ids);
		for (size_t i = 0; i < b->n_ssh_ids; i++)
			proto_pack_str(pk, b->ssh_ids[i]);
	}
	pk = proto_w_key(&w, "ops");
	msgpack_pack_array(pk, nb + j->n_ops);
	for (size_t k = 0; k < nb; k++) {
		const struct solver_rec *rec = boundary_rec(j, bnd[k]);

		if (!j->is_export)
			map[bnd[k]] = (int) k;
		/* an image a job starts from shows as its FROM step (pulls log
		 * there); other boundaries are results it reuses, no steps */
		j->wire_map[j->n_wire++] = !j->is_export && t->plan->ops[bnd[k]].kind == OP_IMAGE ?
					   -2 - bnd[k] : -1;
		pack_image_op(rec, j->is_export ? "export" : t->plan->ops[bnd[k]].name, pk);
	}
	for (size_t k = 0; k < j->n_ops; k++) {
		map[j->ops[k]] = (int) (nb + k);
		j->wire_map[j->n_wire++] = j->ops[k];
		pack_wire_op(&t->plan->ops[j->ops[k]], map, pk);
	}
	(void) peer_send(&j->node->peer, &w);
	proto_writer_release(&w);
}

/* Run the job once its blobs and secrets are on its node. */
static void
job_try_run(struct builds *bs, struct sjob *j)
{
	const char *ids[256];
	size_t n_ids;

	if (j->state != J_SYNC || j->fetching || j->client_round || j->secrets)
		return;
	if (!j->secrets_asked && job_mounts_secrets(j, ids, &n_ids, ARRAY_SIZE(ids))) {
		struct proto_writer w;
		msgpack_packer *pk;

		j->secrets_asked = true;
		j->secrets = true;
		proto_writer_init(&w, "build.secrets.need", 0);
		proto_w_str(&w, "build", j->b->id);
		proto_w_str(&w, "job", j->id);
		pk = proto_w_key(&w, "ids");
		msgpack_pack_array(pk, n_ids);
		for (size_t i = 0; i < n_ids; i++)
			proto_pack_str(pk, ids[i]);
		(void) peer_send(&j->b->client, &w);
		proto_writer_release(&w);
		return;
	}
	send_job_run(bs, j);
}

/* The size of a layer the job starts from (context files: unknown). */
static bool
job_blob_size(const struct sjob *j, const struct digest *d, uint64_t *ret)
{
	int bnd[MAX_REFS * 4];
	size_t nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd));

	for (size_t k = 0; k < nb; k++) {
		const struct solver_rec *rec = boundary_rec(j, bnd[k]);

		for (size_t i = 0; i < rec->n_layers; i++)
			if (digest_equal(&rec->layers[i].l.digest, d)) {
				*ret = rec->layers[i].l.size;
				return true;
			}
	}
	return false;
}

/* job.missing: what the node lacks comes from a live peer that holds it,
 * else from the client. */
static void
on_job_missing(struct builds *bs, struct sjob *j, const struct proto_msg *m)
{
	const msgpack_object *a = proto_msg_get(m, "digests");
	struct proto_writer w;
	msgpack_packer *pk = NULL;
	size_t n_fetch = 0;
	struct kiln_err err = { 0 };

	j->fetching = false;
	free(j->client_need);
	j->client_need = NULL;
	j->n_client_need = 0;
	if (!a || a->type != MSGPACK_OBJECT_ARRAY) {
		kiln_err_set(&err, KILN_EPROTO, "node '%s': job.missing without digests", j->node->name);
		build_fail(bs, j->b, &err);
		return;
	}
	j->client_need = calloc(a->via.array.size + 1, sizeof(*j->client_need));
	if (!j->client_need) {
		kiln_err_set(&err, ENOMEM, "out of memory");
		build_fail(bs, j->b, &err);
		return;
	}
	/* first pass counts what peers serve */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			if (n_fetch == 0)
				break;
			proto_writer_init(&w, "blob.fetch", 0);
			proto_w_str(&w, "build", j->id);
			pk = proto_w_key(&w, "blobs");
			msgpack_pack_array(pk, n_fetch);
		}
		for (uint32_t i = 0; i < a->via.array.size; i++) {
			const msgpack_object *o = &a->via.array.ptr[i];
			char names[CACHE_MAX_HOLDERS][CACHE_NODE_NAME_MAX];
			struct node *peers[CACHE_MAX_HOLDERS];
			size_t np = 0;
			struct digest d;
			int nh;

			if (o->type != MSGPACK_OBJECT_STR || digest_parse_n(o->via.str.ptr, o->via.str.size, &d) < 0)
				continue;
			nh = cache_holders(bs->cache, &d, names, CACHE_MAX_HOLDERS, &err);
			for (int k = 0; k < nh; k++) {
				struct node *nd = nodes_by_name(bs->nodes, names[k]);

				if (nd && nd != j->node && nd->status == NODE_READY && nd->blob_endpoint[0])
					peers[np++] = nd;
			}
			if (nh > 0 && np == 0) {
				/* the index was wrong about this node */
				(void) cache_hold(bs->cache, &d, j->node->name, false, &err);
			}
			if (np == 0) {
				if (pass == 0)
					j->client_need[j->n_client_need++] = d;
				continue;
			}
			if (pass == 0) {
				n_fetch++;
				continue;
			}
			{
				uint64_t size;
				bool known = job_blob_size(j, &d, &size);

				msgpack_pack_map(pk, 2 + known);
				if (known) {
					proto_pack_str(pk, "size");
					msgpack_pack_uint64(pk, size);
				}
			}
			proto_pack_str(pk, "digest");
			msgpack_pack_str(pk, o->via.str.size);
			msgpack_pack_str_body(pk, o->via.str.ptr, o->via.str.size);
			proto_pack_str(pk, "peers");
			msgpack_pack_array(pk, np);
			for (size_t k = 0; k < np; k++) {
				msgpack_pack_map(pk, 3);
				proto_pack_str(pk, "node");
				proto_pack_str(pk, peers[k]->name);
				proto_pack_str(pk, "endpoint");
				proto_pack_str(pk, peers[k]->blob_endpoint);
				proto_pack_str(pk, "key");
				proto_pack_str(pk, peers[k]->blob_key);
			}
		}
	}
	if (n_fetch) {
		j->fetching = true;
		(void) peer_send(&j->node->peer, &w);
		proto_writer_release(&w);
	}
	if (j->n_client_need) {
		j->client_round = true;
		next_round(j->b);
	}
	job_try_run(bs, j);
}

static void
on_fetch_done(struct builds *bs, struct sjob *j, const struct proto_msg *m)
{
	const msgpack_object *failed = proto_msg_get(m, "failed");
	uint64_t n = 0, bytes = 0;

	j->fetching = false;
	(void) proto_msg_u64(m, "fetched", &n);
	(void) proto_msg_u64(m, "bytes", &bytes);
	j->b->peer_files += n;
	j->b->peer_bytes += bytes;
	if (failed && failed->type == MSGPACK_OBJECT_ARRAY && failed->via.array.size) {
		/* The holders were wrong or went away: solve the build again
		 * with what is left. */
		const msgpack_object *f = &failed->via.array.ptr[0];
		_cleanup_free_ char *ds = f->type == MSGPACK_OBJECT_MAP ? proto_obj_get_strdup(f, "digest") : NULL;
		_cleanup_free_ char *msg = f->type == MSGPACK_OBJECT_MAP ? proto_obj_get_strdup(f, "msg") : NULL;
		struct build *b = j->b;

		log_error("build=%s job=%s: fetching %s from peers failed: %s", b->id, j->id, ds ? ds : "?",
			  msg ? msg : "?");
		for (uint32_t i = 0; i < failed->via.array.size; i++) {
			_cleanup_free_ char *s = failed->via.array.ptr[i].type == MSGPACK_OBJECT_MAP ?
				proto_obj_get_strdup(&failed->via.array.ptr[i], "digest") : NULL;
			struct digest d;
			struct kiln_err err = { 0 };
			char names[CACHE_MAX_HOLDERS][CACHE_NODE_NAME_MAX];
			int nh;

			if (!s || digest_parse(s, &d) < 0)
				continue;
			nh = cache_holders(bs->cache, &d, names, CACHE_MAX_HOLDERS, &err);
			for (int k = 0; k < nh; k++)
				if (strcmp(names[k], j->node->name) != 0)
					(void) cache_hold(bs->cache, &d, names[k], false, &err);
		}
		if (++b->resolves > 8) {
			struct kiln_err err = { 0 };

			kiln_err_set(&err, EIO, "could not gather the blobs of a step: %s", msg ? msg : "peer fetch failed");
			build_fail(bs, b, &err);
			return;
		}
		build_reset(bs, b);
		return;
	}
	job_try_run(bs, j);
}

/* Start over from the index after losing nodes or blobs: jobs not running
 * on a live node are dropped, results whose blobs no live node holds are
 * forgotten, and the build is solved again. Steps that finished anywhere
 * still alive are not run again. */
static void
build_reset(struct builds *bs, struct build *b)
{
	bool again = true;

	while (again) {
		again = false;
		for (struct sjob *j = bs->jobs; j; j = j->next) {
			if (j->b != b || (j->state == J_RUN && j->node && j->node->status == NODE_READY))
				continue;
			job_drop(bs, j, true);
			again = true;
			break;
		}
	}
	if (b->exporting && !b->export_job)
		b->exporting = false;
	for (size_t ti = 0; ti < b->n_targets; ti++) {
		struct target *t = &b->targets[ti];

		for (size_t i = 0; i < t->plan->n_ops; i++) {
			bool used = false;

			if (t->st[i] != OS_KNOWN || t->plan->ops[i].kind == OP_IMAGE)
				continue;
			for (struct sjob *j = bs->jobs; j && !used; j = j->next) {
				int bnd[MAX_REFS * 4];
				size_t nb;

				if (j->b != b || j->target != ti || j->is_export)
					continue;
				nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd));
				for (size_t k = 0; k < nb && !used; k++)
					used = bnd[k] == (int) i;
			}
			if (used || rec_available(bs, &t->recs[i]))
				continue;
			solver_rec_release(&t->recs[i]);
			t->st[i] = OS_NEW;
			t->cached[i] = false;
		}
	}
	advance(b);
}

/* ---- messages from nodes ---- */

/* The layer of a step.done, if any: 1 with *ret filled (media type gzip
 * when the node does not say), 0 without one. */
static int
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

static void send_export(struct builds *bs, struct sjob *j);
static int start_rewrite(struct build *b, struct sjob *j, struct kiln_err *err);
static int apply_rewritten(struct build *b, struct sjob *j, const struct proto_msg *m, struct kiln_err *err);

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

		for (size_t i = 0; i < rec->n_layers; i++)
			(void) cache_hold(bs->cache, &rec->layers[i].l.digest, j->node->name, true, &err);
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

/* ---- export ---- */

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

struct made_image {
	char *config, *manifest;
	size_t config_len, manifest_len;
	struct oci_descriptor desc;   /* of the manifest, with its platform */
	struct digest config_digest;
	const struct solver_rec *rec;
};

static void
made_image_release(struct made_image *mi)
{
	free(mi->config);
	free(mi->manifest);
	json_decref(mi->desc.annotations);
	memset(mi, 0, sizeof(*mi));
}

/* Config and manifest of one platform's image from its record. */
static int
make_image(struct build *b, struct target *t, struct made_image *mi, struct kiln_err *err)
{
	const struct plan *p = t->plan;
	const struct solver_rec *rec = &t->recs[p->n_ops - 1];
	_cleanup_free_ const struct op_layer **per_op = calloc(p->n_ops + 1, sizeof(*per_op));
	struct oci_manifest man = { 0 };
	int64_t created = b->epoch >= 0 ? b->epoch : (int64_t) time(NULL);
	size_t li;
	int r;

	memset(mi, 0, sizeof(*mi));
	mi->rec = rec;
	if (!per_op)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (p->n_chain == 0 || rec->n_made != p->n_chain - 1)
		return kiln_err_set(err, EPROTO, "the image's result has %zu steps, its chain %zu",
				    rec->n_made, p->n_chain ? p->n_chain - 1 : 0);
	li = rec->n_base;
	for (size_t k = 1; k < p->n_chain; k++)
		if (rec->made[k - 1])
			per_op[p->chain[k]] = &rec->layers[li++].l;
	r = plan_finish_config(p, per_op, created, &mi->config, &mi->config_len, err);
	if (r < 0)
		return r;
	snprintf(man.media_type, sizeof(man.media_type), "%s", b->oci_mt ? OCI_MT_MANIFEST : DOCKER_MT_MANIFEST);
	snprintf(man.config.media_type, sizeof(man.config.media_type), "%s",
		 b->oci_mt ? OCI_MT_CONFIG : DOCKER_MT_CONFIG);
	digest_buf(mi->config, mi->config_len, &man.config.digest);
	mi->config_digest = man.config.digest;
	man.config.size = (int64_t) mi->config_len;
	man.layers = calloc(rec->n_layers + 1, sizeof(*man.layers));
	if (!man.layers)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < rec->n_layers; i++) {
		struct oci_descriptor *d = &man.layers[man.n_layers++];

		snprintf(d->media_type, sizeof(d->media_type), "%s",
			 layer_media_type(rec->layers[i].media_type, b->oci_mt));
		d->digest = rec->layers[i].l.digest;
		d->size = (int64_t) rec->layers[i].l.size;
		/* as BuildKit marks the layers rewrite-timestamp clamped (OCI
		 * types only: Docker's descriptors carry no annotations) */
		if (b->oci_mt && i < t->n_rw_idx && t->rw_idx[i] >= 0 && b->rw[t->rw_idx[i]].epoch >= 0) {
			char v[24];

			snprintf(v, sizeof(v), "%" PRId64, b->rw[t->rw_idx[i]].epoch);
			d->annotations = json_object();
			if (d->annotations)
				json_object_set_new(d->annotations, "buildkit/rewritten-timestamp", json_string(v));
		}
	}
	mi->manifest = oci_manifest_dump(&man, &mi->manifest_len);
	oci_manifest_release(&man);
	if (!mi->manifest)
		return kiln_err_set(err, ENOMEM, "out of memory");
	snprintf(mi->desc.media_type, sizeof(mi->desc.media_type), "%s",
		 b->oci_mt ? OCI_MT_MANIFEST : DOCKER_MT_MANIFEST);
	digest_buf(mi->manifest, mi->manifest_len, &mi->desc.digest);
	mi->desc.size = (int64_t) mi->manifest_len;
	mi->desc.has_platform = true;
	mi->desc.platform = t->platform;
	digest_fmt(&mi->desc.digest, t->manifest_digest);
	digest_fmt(&mi->config_digest, t->config_digest);
	return 0;
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

/* What the output needs rewritten before its manifests can be made, as
 * BuildKit's exporters do it: with force-compression=true, base image
 * layers in another compression than the build's are recompressed (the
 * build's own layers are made in it); with rewrite-timestamp=true and
 * SOURCE_DATE_EPOCH, the layers the build made get their file times
 * clamped (the base image's never: its diff_ids stay). The export node,
 * which holds every blob, does the work. 1 when job.rewrite was sent. */
static int
start_rewrite(struct build *b, struct sjob *j, struct kiln_err *err)
{
	bool clamp = b->rewrite_timestamp && b->epoch >= 0;
	size_t total = 0;
	struct proto_writer w;
	msgpack_packer *pk;
	char ds[DIGEST_STR_SIZE];

	if (strcmp(b->kind, "rootfs") == 0)
		return 0;
	if (b->rewrite_timestamp && b->epoch < 0)
		log_warn("build=%s rewrite-timestamp=true without SOURCE_DATE_EPOCH, ignoring", b->id);
	for (size_t ti = 0; ti < b->n_targets; ti++)
		total += b->targets[ti].recs[b->targets[ti].plan->n_ops - 1].n_layers;
	free(b->rw);
	b->n_rw = 0;
	b->rw = calloc(total + 1, sizeof(*b->rw));
	if (!b->rw)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t ti = 0; ti < b->n_targets; ti++) {
		struct target *t = &b->targets[ti];
		const struct solver_rec *rec = &t->recs[t->plan->n_ops - 1];

		free(t->rw_idx);
		t->rw_idx = calloc(rec->n_layers + 1, sizeof(int));
		if (!t->rw_idx)
			return kiln_err_set(err, ENOMEM, "out of memory");
		t->n_rw_idx = rec->n_layers;
		for (size_t i = 0; i < rec->n_layers; i++) {
			enum layer_compression c;

			t->rw_idx[i] = -1;
			/* foreign layers (unknown types) stay, as in BuildKit */
			if (i < rec->n_base && b->force_compression &&
			    layer_compression_from_media_type(rec->layers[i].media_type, &c) == 0 &&
			    c != b->compression)
				t->rw_idx[i] = rewrite_add(b, &rec->layers[i].l.digest, -1);
			else if (i >= rec->n_base && clamp)
				t->rw_idx[i] = rewrite_add(b, &rec->layers[i].l.digest, b->epoch);
		}
	}
	if (b->n_rw == 0)
		return 0;
	proto_writer_init(&w, "job.rewrite", 0);
	proto_w_str(&w, "build", j->id);
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
	(void) peer_send(&j->node->peer, &w);
	proto_writer_release(&w);
	b->rewriting = true;
	log_info("build=%s node=%s rewriting %zu layer%s for the output", b->id, j->node->name, b->n_rw,
		 b->n_rw == 1 ? "" : "s");
	return 1;
}

/* job.rewritten {layers}: the new blobs, in the order asked. A recompressed
 * base layer must keep its diff_id; every blob must be in the build's
 * compression. */
static int
apply_rewritten(struct build *b, struct sjob *j, const struct proto_msg *m, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "layers");
	_cleanup_free_ struct solver_layer *got = NULL;

	b->rewriting = false;
	if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != b->n_rw)
		return kiln_err_set(err, KILN_EPROTO, "node '%s' answered job.rewrite with %u layers for %zu",
				    j->node->name, a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0,
				    b->n_rw);
	got = calloc(b->n_rw + 1, sizeof(*got));
	if (!got)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < b->n_rw; i++) {
		enum layer_compression c;

		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP ||
		    read_layer_obj(&a->via.array.ptr[i], &got[i]) < 0 ||
		    layer_compression_from_media_type(got[i].media_type, &c) < 0 || c != b->compression)
			return kiln_err_set(err, KILN_EPROTO, "node '%s': bad rewritten layer %zu", j->node->name, i);
	}
	for (size_t ti = 0; ti < b->n_targets; ti++) {
		struct target *t = &b->targets[ti];
		struct solver_rec *rec = &t->recs[t->plan->n_ops - 1];

		for (size_t i = 0; i < rec->n_layers && i < t->n_rw_idx; i++) {
			const struct solver_layer *g;

			if (t->rw_idx[i] < 0)
				continue;
			g = &got[t->rw_idx[i]];
			if (b->rw[t->rw_idx[i]].epoch < 0 && !digest_equal(&g->l.diff_id, &rec->layers[i].l.diff_id))
				return kiln_err_set(err, KILN_EPROTO,
						    "node '%s': recompressed base layer %zu has another diff_id",
						    j->node->name, i);
			rec->layers[i] = *g;
		}
	}
	return 0;
}

static void
start_export(struct builds *bs, struct build *b)
{
	struct kiln_err err = { 0 };
	struct sjob *j;

	b->exporting = true;
	if (b->n_targets > 1 && strcmp(b->kind, "docker") == 0) {
		kiln_err_set(&err, ENOTSUP, "docker exporter does not currently support exporting manifest lists");
		build_fail(bs, b, &err);
		return;
	}
	if (b->n_targets > 1 && strcmp(b->kind, "rootfs") == 0) {
		kiln_err_set(&err, ENOTSUP, "type=local and type=tar outputs of several platforms are not "
			     "supported yet: use type=oci or type=image");
		build_fail(bs, b, &err);
		return;
	}
	/* images no job had to start from: nothing was pulled for them */
	for (size_t ti = 0; ti < b->n_targets; ti++) {
		struct target *t = &b->targets[ti];

		for (size_t i = 0; i < t->plan->n_ops; i++)
			if (t->plan->ops[i].kind == OP_IMAGE && t->st[i] == OS_KNOWN && !t->reported[i]) {
				t->reported[i] = true;
				send_progress(b, ti, i, "cached", NULL, false, NULL, 0);
			}
	}
	j = job_new(b, 0);
	if (!j) {
		kiln_err_set(&err, ENOMEM, "out of memory");
		build_fail(bs, b, &err);
		return;
	}
	j->is_export = true;
	b->export_job = j;
}

static void
pack_bin(msgpack_packer *pk, const char *data, size_t len)
{
	msgpack_pack_bin(pk, len);
	msgpack_pack_bin_body(pk, data, len);
}

/* Configs, manifests (and the index of several platforms) for the
 * finished images; the export job's node writes or pushes them. */
static void
send_export(struct builds *bs, struct sjob *j)
{
	struct build *b = j->b;
	struct made_image mis[MAX_TARGETS];
	_cleanup_free_ char *top = NULL;
	_cleanup_free_ char *layout = NULL;
	struct oci_descriptor top_desc = { 0 };
	struct oci_index ix = { 0 };
	size_t top_len = 0, layout_len = 0, n_blobs = 0;
	struct kiln_err err = { 0 };
	struct proto_writer w;
	msgpack_packer *pk;
	char ds[DIGEST_STR_SIZE];
	int r = 0;

	memset(mis, 0, sizeof(mis));
	for (size_t ti = 0; ti < b->n_targets && r == 0; ti++)
		r = make_image(b, &b->targets[ti], &mis[ti], &err);
	if (r < 0)
		goto out;
	if (b->n_targets == 1) {
		top_desc = mis[0].desc;
		top_desc.has_platform = false;
		top_desc.annotations = NULL;
	} else {
		struct oci_descriptor ds_[MAX_TARGETS];

		for (size_t ti = 0; ti < b->n_targets; ti++) {
			ds_[ti] = mis[ti].desc;
			ds_[ti].annotations = NULL;
		}
		snprintf(ix.media_type, sizeof(ix.media_type), "%s", b->oci_mt ? OCI_MT_INDEX : DOCKER_MT_LIST);
		ix.manifests = ds_;
		ix.n_manifests = b->n_targets;
		top = oci_index_dump(&ix, &top_len);
		if (!top) {
			r = kiln_err_set(&err, ENOMEM, "out of memory");
			goto out;
		}
		snprintf(top_desc.media_type, sizeof(top_desc.media_type), "%s", ix.media_type);
		digest_buf(top, top_len, &top_desc.digest);
		top_desc.size = (int64_t) top_len;
		digest_fmt(&top_desc.digest, b->index_digest);
	}
	/* index.json of an OCI layout (and the docker archive's source) */
	top_desc.annotations = json_object();
	{
		const char *tag = b->tag && *b->tag ? b->tag : NULL;
		const char *colon = tag ? strrchr(tag, ':') : NULL;
		const char *ref = colon && !strchr(colon, '/') ? colon + 1 : "latest";

		if (tag)
			json_object_set_new(top_desc.annotations, "io.containerd.image.name", json_string(tag));
		json_object_set_new(top_desc.annotations, OCI_ANNOT_REF_NAME, json_string(ref));
	}
	memset(&ix, 0, sizeof(ix));
	snprintf(ix.media_type, sizeof(ix.media_type), "%s", OCI_MT_INDEX);
	ix.manifests = &top_desc;
	ix.n_manifests = 1;
	if (strcmp(b->kind, "docker") == 0 && b->n_names > 0 &&
	    (ix.manifests = calloc(b->n_names, sizeof(*ix.manifests)))) {
		/* As containerd's archive exporter under BuildKit's docker
		 * exporter: one entry per name, with the full name, which is
		 * what podman load and containerd import name the image after. */
		ix.n_manifests = b->n_names;
		for (size_t i = 0; i < b->n_names; i++) {
			struct oci_descriptor *d = &ix.manifests[i];
			struct registry_ref rr;
			char full[REGISTRY_REF_STR_SIZE], dgs[DIGEST_STR_SIZE];

			*d = top_desc;
			d->annotations = json_object();
			if (registry_ref_parse(b->names[i], &rr, NULL) < 0 || !d->annotations)
				continue;       /* names were checked at build.start */
			json_object_set_new(d->annotations, "io.containerd.image.name",
					    json_string(registry_ref_fmt(&rr, full, sizeof(full))));
			json_object_set_new(d->annotations, OCI_ANNOT_REF_NAME,
					    json_string(rr.tag[0] ? rr.tag : digest_fmt(&rr.digest, dgs)));
		}
	} else if (!ix.manifests) {
		ix.manifests = &top_desc;
	}
	layout = oci_index_dump(&ix, &layout_len);
	if (ix.manifests != &top_desc) {
		for (size_t i = 0; i < ix.n_manifests; i++)
			json_decref(ix.manifests[i].annotations);
		free(ix.manifests);
	}
	json_decref(top_desc.annotations);
	if (!layout) {
		r = kiln_err_set(&err, ENOMEM, "out of memory");
		goto out;
	}

	proto_writer_init(&w, "job.export", 0);
	proto_w_str(&w, "build", j->id);
	proto_w_str(&w, "kind", b->kind);
	pk = proto_w_key(&w, "put");
	msgpack_pack_array(pk, 2 * b->n_targets + (top ? 1 : 0));
	for (size_t ti = 0; ti < b->n_targets; ti++) {
		pack_bin(pk, mis[ti].config, mis[ti].config_len);
		pack_bin(pk, mis[ti].manifest, mis[ti].manifest_len);
	}
	if (top)
		pack_bin(pk, top, top_len);
	proto_w_strn(&w, "index", layout, layout_len);
	if (strcmp(b->kind, "push") == 0) {
		/* A base image pulled from the same registry lets the node mount
		 * its layers instead of uploading them. */
		pk = proto_w_key(&w, "refs");
		msgpack_pack_array(pk, b->n_push);
		for (size_t i = 0; i < b->n_push; i++)
			proto_pack_str(pk, b->push[i]);
		proto_w_str(&w, "manifest_media_type", top_desc.media_type);
		proto_w_str(&w, "mount_from", mis[0].rec->ref);
		if (top) {
			/* pushed by digest before the index that names them */
			pk = proto_w_key(&w, "children");
			msgpack_pack_array(pk, b->n_targets);
			for (size_t ti = 0; ti < b->n_targets; ti++) {
				msgpack_pack_map(pk, 2);
				proto_pack_str(pk, "digest");
				proto_pack_str(pk, digest_fmt(&mis[ti].desc.digest, ds));
				proto_pack_str(pk, "media_type");
				proto_pack_str(pk, mis[ti].desc.media_type);
			}
		}
	} else if (strcmp(b->kind, "docker") == 0) {
		/* RepoTags: name= (or -t) with ":latest" added when untagged,
		 * as docker load expects. */
		pk = proto_w_key(&w, "refs");
		msgpack_pack_array(pk, b->n_names);
		for (size_t i = 0; i < b->n_names; i++) {
			const char *nm = b->names[i];
			const char *slash = strrchr(nm, '/');
			bool tagged = strchr(slash ? slash : nm, ':') || strchr(nm, '@');
			_cleanup_free_ char *tg = tagged ? strdup(nm) : kiln_strdupf("%s:latest", nm);

			proto_pack_str(pk, tg ? tg : nm);
		}
	}
	/* the top first, then (for a layout) the manifests, configs, layers */
	for (size_t ti = 0; ti < b->n_targets; ti++)
		n_blobs += 2 + mis[ti].rec->n_layers;
	pk = proto_w_key(&w, "blobs");
	{
		bool push = strcmp(b->kind, "push") == 0;
		size_t n = 1 + n_blobs;
		_cleanup_free_ struct digest *seen = calloc(n + 1, sizeof(*seen));
		size_t ns = 0;

		/* a layer two platforms share goes once */
		if (!seen) {
			proto_writer_release(&w);
			r = kiln_err_set(&err, ENOMEM, "out of memory");
			goto out;
		}
#define ADD_BLOB(dg) do { \
			bool dup_ = false; \
			for (size_t x_ = 0; x_ < ns && !dup_; x_++) dup_ = digest_equal(&seen[x_], (dg)); \
			if (!dup_ && ns < n) seen[ns++] = *(dg); \
		} while (0)
		if (top)
			ADD_BLOB(&top_desc.digest);
		for (size_t ti = 0; ti < b->n_targets; ti++) {
			if (!top || !push)
				ADD_BLOB(&mis[ti].desc.digest);
			ADD_BLOB(&mis[ti].config_digest);
			for (size_t i = 0; i < mis[ti].rec->n_layers; i++)
				ADD_BLOB(&mis[ti].rec->layers[i].l.digest);
		}
#undef ADD_BLOB
		msgpack_pack_array(pk, ns);
		for (size_t i = 0; i < ns; i++)
			proto_pack_str(pk, digest_fmt(&seen[i], ds));
	}
	(void) peer_send(&j->node->peer, &w);
	proto_writer_release(&w);
out:
	for (size_t ti = 0; ti < b->n_targets; ti++)
		made_image_release(&mis[ti]);
	if (r < 0)
		build_fail(bs, b, &err);
}
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
static const struct platform *
build_platform_for(struct builds *bs, const struct platform *p)
{
	bool emulated;
	struct node *n = nodes_pick(bs->nodes, p, &emulated);

	return n && n->n_native ? &n->native[0] : NULL;
}

static void
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

static int
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
