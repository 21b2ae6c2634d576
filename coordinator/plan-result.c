/* The end of planning: the graph is cut down to what the result reads and
 * renumbered (so the image is the last op), the image's chain, base layers,
 * needed blobs, history and config are taken from the target stage; and
 * the public helpers that work on a finished plan (plan_free,
 * plan_finish_config).
 *
 * Invariant after plan_finish: every op index in the plan (inputs, froms,
 * chain, history, stages) refers to a kept op. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "oci.h"
#include "plan-internal.h"
#include "plan.h"
#include "util.h"

static int
set_result_platform(struct ctx *c, json_t *img)
{
	const char *os = json_string_value(json_object_get(img, "os"));
	const char *arch = json_string_value(json_object_get(img, "architecture"));
	bool same = os && arch && strcmp(os, c->target.os) == 0 && strcmp(arch, c->target.arch) == 0;

	if (json_object_set_new(img, "os", json_string(c->target.os)) < 0 ||
	    json_object_set_new(img, "architecture", json_string(c->target.arch)) < 0)
		return plan_nomem(c);
	if (c->target.variant[0] || !same) {
		if (c->target.variant[0])
			json_object_set_new(img, "variant", json_string(c->target.variant));
		else
			json_object_del(img, "variant");
	}
	return 0;
}

/* Keep only the ops the result reads, renumbered; the result ends last. */
static int
prune(struct ctx *c, int result, int **ret_map)
{
	struct plan *p = c->p;
	bool *keep = calloc(p->n_ops + 1, sizeof(*keep));
	int *map = calloc(p->n_ops + 1, sizeof(*map));
	size_t n = 0;

	if (!keep || !map) {
		free(keep);
		free(map);
		return plan_nomem(c);
	}
	keep[result] = true;
	for (size_t i = (size_t) result + 1; i-- > 0;) {
		if (!keep[i])
			continue;
		if (p->ops[i].kind != OP_IMAGE && p->ops[i].input >= 0)
			keep[p->ops[i].input] = true;
		if (p->ops[i].kind == OP_COPY_FROM)
			keep[p->ops[i].from] = true;
		for (size_t k = 0; k < p->ops[i].n_mounts; k++)
			if (p->ops[i].mounts[k].from >= 0)
				keep[p->ops[i].mounts[k].from] = true;
	}
	for (size_t i = 0; i < p->n_ops; i++) {
		if (!keep[i]) {
			op_release(&p->ops[i]);
			free(c->op_source[i]);
			map[i] = -1;
			continue;
		}
		map[i] = (int) n;
		p->ops[n] = p->ops[i];
		c->op_stage[n] = c->op_stage[i];
		c->op_source[n] = c->op_source[i];
		if (p->ops[n].kind != OP_IMAGE)
			p->ops[n].input = map[p->ops[n].input];
		if (p->ops[n].kind == OP_COPY_FROM)
			p->ops[n].from = map[p->ops[n].from];
		for (size_t k = 0; k < p->ops[n].n_mounts; k++)
			if (p->ops[n].mounts[k].from >= 0)
				p->ops[n].mounts[k].from = map[p->ops[n].mounts[k].from];
		n++;
	}
	p->n_ops = n;
	free(keep);
	*ret_map = map;
	return 0;
}

static int
need(struct ctx *c, const struct digest *d)
{
	struct digest *n;

	for (size_t i = 0; i < c->p->n_needed; i++)
		if (digest_equal(&c->p->needed[i], d))
			return 0;
	n = realloc(c->p->needed, (c->p->n_needed + 1) * sizeof(*n));
	if (!n)
		return plan_nomem(c);
	n[c->p->n_needed++] = *d;
	c->p->needed = n;
	return 0;
}

int
plan_finish(struct ctx *c, struct stage *t)
{
	struct plan *p = c->p;
	_cleanup_free_ int *map = NULL;
	int result = t->op, r, op;

	r = prune(c, result, &map);
	if (r < 0)
		return r;
	result = map[result];
	if (result != (int) p->n_ops - 1)
		return kiln_err_set(c->err, EINVAL, "internal error: the result is not the last step");
	p->op_stage = STEAL_PTR(c->op_stage);
	p->op_source = STEAL_PTR(c->op_source);

	/* the chain of the image, and its base layers */
	for (op = result; op >= 0; op = p->ops[op].kind == OP_IMAGE ? -1 : p->ops[op].input)
		if (plan_int_append(&p->chain, &p->n_chain, op) < 0)
			return plan_nomem(c);
	for (size_t i = 0; i < p->n_chain / 2; i++) {
		int tmp = p->chain[i];

		p->chain[i] = p->chain[p->n_chain - 1 - i];
		p->chain[p->n_chain - 1 - i] = tmp;
	}
	for (size_t i = 0; i < c->in->n_contexts; i++)
		if ((c->context_ops[2 * i] >= 0 && map[c->context_ops[2 * i]] == p->chain[0]) ||
		    (c->context_ops[2 * i + 1] >= 0 && map[c->context_ops[2 * i + 1]] == p->chain[0])) {
			const struct plan_context *pc = &c->in->contexts[i];

			p->base = calloc(pc->n_layers + 1, sizeof(*p->base));
			if (!p->base)
				return plan_nomem(c);
			memcpy(p->base, pc->layers, pc->n_layers * sizeof(*pc->layers));
			p->n_base = pc->n_layers;
		}

	/* blobs the worker must hold */
	for (size_t i = 0; i < p->n_ops; i++) {
		const struct op *o = &p->ops[i];

		/* Layers of pulled images come from the registry, not the client. */
		for (size_t k = 0; o->kind == OP_IMAGE && !o->ref && k < o->n_layers; k++)
			if ((r = need(c, &o->layers[k].digest)) < 0)
				return r;
		for (size_t k = 0; o->kind == OP_COPY && k < o->n_entries; k++)
			if (o->entries[k].kind == OP_ENTRY_FILE && (r = need(c, &o->entries[k].digest)) < 0)
				return r;
	}

	/* history and config of the target */
	p->hist = STEAL_PTR(t->hist);
	p->n_hist = t->n_hist;
	t->n_hist = 0;
	for (size_t i = 0; i < p->n_hist; i++)
		if (p->hist[i].op >= 0)
			p->hist[i].op = map[p->hist[i].op];
	p->config = STEAL_PTR(t->img);
	plan_normalize_config(p->config);
	r = set_result_platform(c, p->config);
	if (r < 0)
		return r;

	/* the stages built */
	p->stages = calloc(c->n_stages + 1, sizeof(*p->stages));
	if (!p->stages)
		return plan_nomem(c);
	for (size_t i = 0; i < c->n_stages; i++) {
		struct stage *s = &c->stages[i];
		struct plan_stage *ps;

		if (s->state != STAGE_DISPATCHED)
			continue;
		ps = &p->stages[p->n_stages++];
		ps->index = s->index;
		ps->platform = s->platform;
		ps->result = map[s->op];
		if (s->name && !(ps->name = strdup(s->name)))
			return plan_nomem(c);
		ps->base = s->replaced ? kiln_strdupf("context:%s (replaces the stage)", s->replaced->name) :
			   s->base ? kiln_strdupf("stage:%d", s->base->index) :
			   s->image ? kiln_strdupf("context:%s", s->image->name) : strdup("scratch");
		if (!ps->base)
			return plan_nomem(c);
		if (s->base && plan_int_append(&ps->deps, &ps->n_deps, s->base->index) < 0)
			return plan_nomem(c);
		for (size_t k = 0; k < s->n_deps; k++) {
			bool dup = false;

			for (size_t j = 0; j < ps->n_deps; j++)
				dup = dup || ps->deps[j] == s->deps[k];
			if (!dup && plan_int_append(&ps->deps, &ps->n_deps, s->deps[k]) < 0)
				return plan_nomem(c);
		}
		for (size_t a = 1; a < ps->n_deps; a++)
			for (size_t b = a; b > 0 && ps->deps[b - 1] > ps->deps[b]; b--) {
				int tmp = ps->deps[b];

				ps->deps[b] = ps->deps[b - 1];
				ps->deps[b - 1] = tmp;
			}
		for (size_t k = 0; k < s->n_own_ops; k++)
			if (map[s->own_ops[k]] >= 0 &&
			    plan_int_append(&ps->ops, &ps->n_ops, map[s->own_ops[k]]) < 0)
				return plan_nomem(c);
	}
	/* Independence: no path between two stages in either direction. */
	{
		size_t n = p->n_stages;
		bool *reach = calloc(n * n + 1, sizeof(bool));

		if (!reach)
			return plan_nomem(c);
		for (size_t a = 0; a < n; a++)
			for (size_t k = 0; k < p->stages[a].n_deps; k++)
				for (size_t b = 0; b < n; b++)
					if (p->stages[b].index == p->stages[a].deps[k])
						reach[a * n + b] = true;
		for (size_t m = 0; m < n; m++)          /* transitive closure */
			for (size_t a = 0; a < n; a++)
				for (size_t b = 0; reach[a * n + m] && b < n; b++)
					reach[a * n + b] = reach[a * n + b] || reach[m * n + b];
		for (size_t a = 0; a < n; a++)
			for (size_t b = 0; b < n; b++)
				if (a != b && !reach[a * n + b] && !reach[b * n + a] &&
				    plan_int_append(&p->stages[a].independent, &p->stages[a].n_independent,
						    p->stages[b].index) < 0) {
					free(reach);
					return plan_nomem(c);
				}
		free(reach);
	}
	if (t->name && !(p->target = strdup(t->name)))
		return plan_nomem(c);
	return 0;
}

void
plan_free(struct plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_ops; i++) {
		op_release(&p->ops[i]);
		if (p->op_source)
			free(p->op_source[i]);
	}
	free(p->ops);
	free(p->op_source);
	free(p->op_stage);
	for (size_t i = 0; i < p->n_hist; i++)
		free(p->hist[i].created_by);
	free(p->hist);
	json_decref(p->config);
	free(p->base);
	free(p->needed);
	free(p->chain);
	for (size_t i = 0; i < p->n_stages; i++) {
		free(p->stages[i].name);
		free(p->stages[i].base);
		free(p->stages[i].deps);
		free(p->stages[i].independent);
		free(p->stages[i].ops);
	}
	free(p->stages);
	free(p->target);
	free(p);
}

int
plan_finish_config(const struct plan *p, const struct op_layer *const *layers, int64_t created,
		   char **ret_json, size_t *ret_len, struct kiln_err *err)
{
	json_t *cfgj = json_deep_copy(p->config);
	char ts[32];
	char *s;
	int r = 0;

	if (!cfgj)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < p->n_hist && r == 0; i++) {
		const struct plan_history *h = &p->hist[i];
		const struct op_layer *l = h->op >= 0 ? layers[h->op] : NULL;

		r = oci_config_add_history(cfgj, h->created_by, created, l == NULL, l ? &l->diff_id : NULL);
	}
	if (r == 0)
		r = json_object_set_new(cfgj, "created", json_string(oci_time_fmt(created, ts)));
	if (r < 0) {
		json_decref(cfgj);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	s = oci_json_dump(cfgj, ret_len);
	json_decref(cfgj);
	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	*ret_json = s;
	return 0;
}
