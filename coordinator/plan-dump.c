/* plan_dump_json: the graph as pretty, stable JSON for `kiln debug graph`
 * and the golden tests. Stable means: keys sorted, 2-space indent, no
 * timestamps, nothing that depends on the host unless the plan says so
 * (the build platform is part of the plan). The shape is documented in
 * plan.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static json_t *
str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *
strv(char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *
ints(const int *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_integer(v[i]));
	return a;
}

static json_t *
mode_str(uint32_t mode)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "0%03o", mode);
	return json_string(buf);
}

static json_t *
digest_json(const struct digest *d)
{
	char ds[DIGEST_STR_SIZE];

	return json_string(digest_fmt(d, ds));
}

static json_t *
platform_json(const struct platform *p)
{
	char ps[PLATFORM_STR_SIZE];

	return json_string(platform_fmt(p, ps));
}

/* RUN --mount: the keys each type uses (a secret's id, never a value). */
static json_t *
mounts_json(const struct op *o)
{
	static const char *const types[] = { "bind", "cache", "tmpfs", "secret", "ssh" };
	json_t *a = json_array();

	for (size_t i = 0; a && i < o->n_mounts; i++) {
		const struct op_mount *m = &o->mounts[i];
		json_t *j = json_object();

		if (!j)
			break;
		json_object_set_new(j, "type", json_string(types[m->type]));
		json_object_set_new(j, "target", str_or_null(m->target));
		if (m->type == OP_MOUNT_BIND) {
			json_object_set_new(j, "from", json_integer(m->from));
			json_object_set_new(j, "source", str_or_null(m->source));
		}
		/* a cache's start: only when given, so other graphs read as before */
		if (m->type == OP_MOUNT_CACHE && m->from >= 0)
			json_object_set_new(j, "from", json_integer(m->from));
		if (m->type == OP_MOUNT_CACHE && m->source)
			json_object_set_new(j, "source", json_string(m->source));
		if (m->type == OP_MOUNT_BIND || m->type == OP_MOUNT_CACHE)
			json_object_set_new(j, "ro", json_boolean(m->ro));
		if (m->id)
			json_object_set_new(j, "id", json_string(m->id));
		if (m->sharing)
			json_object_set_new(j, "sharing", json_string(m->sharing));
		if (m->type == OP_MOUNT_CACHE || m->type == OP_MOUNT_SECRET || m->type == OP_MOUNT_SSH) {
			json_object_set_new(j, "mode", json_integer(m->mode));
			json_object_set_new(j, "uid", json_integer(m->uid));
			json_object_set_new(j, "gid", json_integer(m->gid));
		}
		if (m->type == OP_MOUNT_TMPFS)
			json_object_set_new(j, "size", json_integer((json_int_t) m->size));
		if (m->type == OP_MOUNT_SECRET || m->type == OP_MOUNT_SSH)
			json_object_set_new(j, "required", json_boolean(m->required));
		if (m->type == OP_MOUNT_SECRET) {
			if (m->env)
				json_object_set_new(j, "env", json_string(m->env));
		}
		json_array_append_new(a, j);
	}
	return a;
}

static json_t *
entries_json(const struct op *o)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < o->n_entries; i++) {
		const struct op_entry *e = &o->entries[i];
		char kind[2] = { e->kind, '\0' };
		json_t *j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I}", "path", e->path, "kind", kind,
				      "mode", mode_str(e->mode), "uid", (json_int_t) e->uid, "gid",
				      (json_int_t) e->gid, "mtime", (json_int_t) e->mtime);

		if (j && e->kind == OP_ENTRY_FILE)
			json_object_set_new(j, "digest", digest_json(&e->digest));
		if (j && e->kind == OP_ENTRY_SYMLINK)
			json_object_set_new(j, "link", str_or_null(e->link));
		if (j && e->unpack_dir)
			json_object_set_new(j, "unpack_dir", json_string(e->unpack_dir));
		if (j && e->url)
			json_object_set_new(j, "url", json_string(e->url));
		if (j && e->has_checksum)
			json_object_set_new(j, "checksum", digest_json(&e->checksum));
		if (j && e->path_if_dir)
			json_object_set_new(j, "path_if_dir", json_string(e->path_if_dir));
		if (j && e->is_root)
			json_object_set_new(j, "is_root", json_true());
		json_array_append_new(a, j);
	}
	return a;
}

/* Only when set, so graphs of COPYs without them read as before. */
static void
copy_names_json(json_t *j, const struct op *o)
{
	if (o->chown_user)
		json_object_set_new(j, "chown_user", json_string(o->chown_user));
	if (o->chown_group)
		json_object_set_new(j, "chown_group", json_string(o->chown_group));
}

static json_t *
op_json(const struct plan *p, size_t i)
{
	static const char *const kinds[] = { "image", "run", "copy", "mkdir", "copy_from" };
	const struct op *o = &p->ops[i];
	json_t *j = json_object();

	if (!j)
		return NULL;
	json_object_set_new(j, "index", json_integer((json_int_t) i));
	json_object_set_new(j, "kind", json_string(kinds[o->kind]));
	json_object_set_new(j, "name", str_or_null(o->name));
	json_object_set_new(j, "input", json_integer(o->kind == OP_IMAGE ? -1 : o->input));
	json_object_set_new(j, "stage", json_integer(p->op_stage ? p->op_stage[i] : -1));
	switch (o->kind) {
	case OP_IMAGE:
		json_object_set_new(j, "source", str_or_null(p->op_source ? p->op_source[i] : NULL));
		json_object_set_new(j, "layers", json_integer((json_int_t) o->n_layers));
		break;
	case OP_RUN:
		json_object_set_new(j, "args", strv(o->args, o->n_args));
		json_object_set_new(j, "env", strv(o->env, o->n_env));
		json_object_set_new(j, "cwd", str_or_null(o->cwd));
		json_object_set_new(j, "user", str_or_null(o->user));
		json_object_set_new(j, "network", str_or_null(o->network));
		if (o->n_mounts)
			json_object_set_new(j, "mounts", mounts_json(o));
		break;
	case OP_COPY:
		json_object_set_new(j, "entries", entries_json(o));
		copy_names_json(j, o);
		if (o->chown) {
			json_object_set_new(j, "chown", json_true());
			json_object_set_new(j, "uid", json_integer(o->uid));
			json_object_set_new(j, "gid", json_integer(o->gid));
		}
		break;
	case OP_MKDIR:
		json_object_set_new(j, "path", str_or_null(o->path));
		if (o->user && *o->user)
			json_object_set_new(j, "user", json_string(o->user));
		break;
	case OP_COPY_FROM:
		json_object_set_new(j, "from", json_integer(o->from));
		json_object_set_new(j, "srcs", strv(o->srcs, o->n_srcs));
		json_object_set_new(j, "dest", str_or_null(o->dest));
		json_object_set_new(j, "into_dir", json_boolean(o->into_dir));
		json_object_set_new(j, "chown", json_boolean(o->chown));
		json_object_set_new(j, "uid", json_integer(o->uid));
		json_object_set_new(j, "gid", json_integer(o->gid));
		json_object_set_new(j, "chmod", json_boolean(o->chmod));
		json_object_set_new(j, "mode", mode_str(o->mode));
		copy_names_json(j, o);
		if (o->chmod_spec)
			json_object_set_new(j, "chmod_spec", json_string(o->chmod_spec));
		if (o->n_excludes)
			json_object_set_new(j, "excludes", strv(o->excludes, o->n_excludes));
		break;
	}
	return j;
}

/* The config without the timestamps of the base image's history. */
static json_t *
config_json(const json_t *config)
{
	json_t *c = json_deep_copy(config);
	json_t *h, *e;
	size_t i;

	if (!c)
		return NULL;
	json_object_del(c, "created");
	h = json_object_get(c, "history");
	json_array_foreach(h, i, e)
		json_object_del(e, "created");
	return c;
}

char *
plan_dump_json(const struct plan *p)
{
	json_t *root = json_object(), *stages = json_array(), *ops = json_array();
	json_t *hist = json_array(), *needed = json_array();
	char *out = NULL, *s;

	if (!root || !stages || !ops || !hist || !needed)
		goto out;
	for (size_t i = 0; i < p->n_stages; i++) {
		const struct plan_stage *st = &p->stages[i];

		json_array_append_new(stages,
				      json_pack("{s:I, s:o, s:s, s:o, s:o, s:o, s:o, s:I}", "index",
						(json_int_t) st->index, "name", str_or_null(st->name), "base",
						st->base ? st->base : "", "platform", platform_json(&st->platform),
						"deps", ints(st->deps, st->n_deps), "independent_of",
						ints(st->independent, st->n_independent), "ops",
						ints(st->ops, st->n_ops), "result", (json_int_t) st->result));
	}
	for (size_t i = 0; i < p->n_ops; i++)
		json_array_append_new(ops, op_json(p, i));
	for (size_t i = 0; i < p->n_hist; i++)
		json_array_append_new(hist, json_pack("{s:s, s:i, s:b}", "created_by", p->hist[i].created_by,
						      "op", p->hist[i].op, "empty_layer", p->hist[i].op < 0));
	for (size_t i = 0; i < p->n_needed; i++)
		json_array_append_new(needed, digest_json(&p->needed[i]));
	json_object_set_new(root, "platform", platform_json(&p->platform));
	json_object_set_new(root, "build_platform", platform_json(&p->build_platform));
	json_object_set_new(root, "target", str_or_null(p->target));
	json_object_set_new(root, "stages", stages);
	json_object_set_new(root, "ops", ops);
	json_object_set_new(root, "chain", ints(p->chain, p->n_chain));
	json_object_set_new(root, "needed", needed);
	json_object_set_new(root, "config", p->config ? config_json(p->config) : json_null());
	json_object_set_new(root, "history", hist);
	stages = ops = hist = needed = NULL;
	s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
	if (s) {
		out = malloc(strlen(s) + 2);
		if (out)
			sprintf(out, "%s\n", s);
		free(s);
	}
out:
	json_decref(root);
	json_decref(stages);
	json_decref(ops);
	json_decref(hist);
	json_decref(needed);
	return out;
}
