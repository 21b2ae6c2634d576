/* The solver and the scheduler: which ops of a build are answered by
 * the cache index, waited for (another build runs them) or run; jobs of
 * one stage each, placed on nodes (platform, locality, load, capacity),
 * their blobs gathered from peers or the client, and starting over from
 * the index when a node is lost. See docs/architecture.md. */
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

int
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

struct sjob *
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

bool
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

void
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
void
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

bool
build_has_jobs(const struct build *b)
{
	for (const struct sjob *j = b->builds->jobs; j; j = j->next)
		if (j->b == b)
			return true;
	return false;
}

void
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
void
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

void
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
size_t
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

const struct solver_rec *
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

/* Give every ready job a node, while nodes have room. */
void
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

				const struct platform *p = &j->b->targets[j->target].platform;
				const struct node *lost = NULL;

				for (const struct node *x = nodes_list(bs->nodes); x && !lost; x = x->next)
					if (x->status != NODE_READY &&
					    (node_serves(x, p, true) || node_serves(x, p, false)))
						lost = x;
				if (lost)
					kiln_err_set(&err, ENODEV, "no live node of this builder serves platform %s "
						     "(node '%s', which did, was lost)", platform_fmt(p, ps), lost->name);
				else
					kiln_err_set(&err, ENODEV, "no node of this builder serves platform %s",
						     platform_fmt(p, ps));
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
void
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

void
round_done(struct builds *bs, struct build *b)
{
	struct sjob *j = b->round;

	b->round_open = false;
	b->round = NULL;
	if (j) {
		j->client_round = false;
		/* the node holds them now (one index transaction: a round can
		 * be 20,000 files) */
		if (j->node) {
			struct kiln_err err = { 0 };

			if (cache_hold_many(bs->cache, j->client_need, j->n_client_need, j->node->name, true,
					    &err) < 0)
				log_error_err(&err, "cache index");
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
void
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

/* Whether d is a layer a step made (not an image's own: those come from
 * a registry or the client) among what the job starts from. */
static bool
job_built_layer(const struct sjob *j, const struct digest *d)
{
	int bnd[MAX_REFS * 4];
	size_t nb = job_boundaries(j, bnd, ARRAY_SIZE(bnd));

	for (size_t k = 0; k < nb; k++) {
		const struct solver_rec *rec = boundary_rec(j, bnd[k]);

		for (size_t i = rec->n_base; i < rec->n_layers; i++)
			if (digest_equal(&rec->layers[i].l.digest, d))
				return true;
	}
	return false;
}

/* job.missing: what the node lacks comes from a live peer that holds it,
 * else from the client. */
void
on_job_missing(struct builds *bs, struct sjob *j, const struct proto_msg *m)
{
	const msgpack_object *a = proto_msg_get(m, "digests");
	struct proto_writer w;
	msgpack_packer *pk = NULL;
	size_t n_fetch = 0;
	struct kiln_err err = { 0 };
	bool lost = false, pass_started = false;

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
			if (n_fetch == 0 || lost)
				break;
			pass_started = true;
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
			if (np == 0 && pass == 0 && job_built_layer(j, &d)) {
				/* a layer a step made that no live node has any more
				 * (a store wiped under its node's name): forget who
				 * was said to hold it, and run what made it again */
				char ds[DIGEST_STR_SIZE];

				log_info("build=%s: layer %s is on no live node, its step runs again",
					 j->b->id, digest_fmt(&d, ds));
				for (int k = 0; k < nh; k++)
					(void) cache_hold(bs->cache, &d, names[k], false, &err);
				lost = true;
				continue;
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
	if (lost) {
		struct build *b = j->b;

		if (pass_started)
			proto_writer_release(&w);
		if (++b->resolves > 8) {
			kiln_err_set(&err, EIO, "the layers of a step are lost on every node, again and again");
			build_fail(bs, b, &err);
			return;
		}
		build_reset(bs, b);
		return;
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

void
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
void
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
