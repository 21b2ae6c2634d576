/* Encoding of build steps (struct op) as msgpack maps. Decoding treats the
 * input as untrusted: every field is type-checked, strings are copied out
 * of the msgpack zone, counts are bounded by what the frame held. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "op.h"
#include "proto.h"

static const char *const kind_names[] = { "image", "run", "copy", "mkdir", "copy_from" };
#define N_KINDS (sizeof(kind_names) / sizeof(*kind_names))

static void
pack_kstr(msgpack_packer *pk, const char *k, const char *v)
{
	proto_pack_str(pk, k);
	proto_pack_str(pk, v);
}

static void
pack_strv(msgpack_packer *pk, const char *k, char **v, size_t n)
{
	proto_pack_str(pk, k);
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		proto_pack_str(pk, v[i]);
}

static void
pack_digest(msgpack_packer *pk, const char *k, const struct digest *d)
{
	char s[DIGEST_STR_SIZE];

	pack_kstr(pk, k, digest_fmt(d, s));
}

static const char *const mount_type_names[] = { "bind", "cache", "tmpfs", "secret", "ssh" };
#define N_MOUNT_TYPES (sizeof(mount_type_names) / sizeof(*mount_type_names))

/* Only the keys a mount of its type uses, so unrelated changes to one
 * type never change another's encoding. */
static void
pack_mount(msgpack_packer *pk, const struct op_mount *m)
{
	bool bind = m->type == OP_MOUNT_BIND, cache = m->type == OP_MOUNT_CACHE;
	bool secret = m->type == OP_MOUNT_SECRET, ssh = m->type == OP_MOUNT_SSH;
	bool owned = cache || secret || ssh;
	/* a cache's from and source only when given: plain caches encode as before */
	bool cache_from = cache && m->from >= 0, cache_source = cache && m->source;

	msgpack_pack_map(pk, 1 + !!m->target + (bind ? 3 : 0) + (cache ? 3 : 0) + cache_from +
			 cache_source + (secret ? 2 + !!m->env : 0) + (ssh ? 2 : 0) + (owned ? 3 : 0) +
			 (m->type == OP_MOUNT_TMPFS));
	pack_kstr(pk, "type", mount_type_names[m->type]);
	if (m->target)
		pack_kstr(pk, "target", m->target);
	if (bind || cache) {
		proto_pack_str(pk, "ro");
		(m->ro ? msgpack_pack_true : msgpack_pack_false)(pk);
	}
	if (bind) {
		proto_pack_str(pk, "from");
		msgpack_pack_int(pk, m->from);
		pack_kstr(pk, "source", m->source ? m->source : "/");
	}
	if (cache || secret || ssh)
		pack_kstr(pk, "id", m->id ? m->id : "");
	if (cache)
		pack_kstr(pk, "sharing", m->sharing ? m->sharing : "shared");
	if (cache_from) {
		proto_pack_str(pk, "from");
		msgpack_pack_int(pk, m->from);
	}
	if (cache_source)
		pack_kstr(pk, "source", m->source);
	if (secret || ssh) {
		proto_pack_str(pk, "required");
		(m->required ? msgpack_pack_true : msgpack_pack_false)(pk);
		if (secret && m->env)
			pack_kstr(pk, "env", m->env);
	}
	if (owned) {
		proto_pack_str(pk, "mode");
		msgpack_pack_uint32(pk, m->mode);
		proto_pack_str(pk, "uid");
		msgpack_pack_uint32(pk, m->uid);
		proto_pack_str(pk, "gid");
		msgpack_pack_uint32(pk, m->gid);
	}
	if (m->type == OP_MOUNT_TMPFS) {
		proto_pack_str(pk, "size");
		msgpack_pack_uint64(pk, m->size);
	}
}

static void
pack_chown_names(const struct op *op, msgpack_packer *pk)
{
	if (op->chown_user)
		pack_kstr(pk, "chown_user", op->chown_user);
	if (op->chown_group)
		pack_kstr(pk, "chown_group", op->chown_group);
}

void
op_pack(const struct op *op, msgpack_packer *pk)
{
	switch (op->kind) {
	case OP_IMAGE:
		msgpack_pack_map(pk, 5);
		break;
	case OP_RUN:
		msgpack_pack_map(pk, 8 + !!op->n_mounts);
		break;
	case OP_COPY:
		msgpack_pack_map(pk, 4 + !!op->chown_user + !!op->chown_group + (op->chown ? 3 : 0));
		break;
	case OP_MKDIR:
		msgpack_pack_map(pk, 4 + !!(op->user && *op->user));
		break;
	case OP_COPY_FROM:
		msgpack_pack_map(pk, 12 + !!op->chown_user + !!op->chown_group + !!op->chmod_spec +
				 !!op->n_excludes);
		break;
	}
	pack_kstr(pk, "kind", kind_names[op->kind]);
	pack_kstr(pk, "name", op->name ? op->name : "");
	proto_pack_str(pk, "input");
	msgpack_pack_int(pk, op->kind == OP_IMAGE ? -1 : op->input);
	switch (op->kind) {
	case OP_IMAGE:
		pack_kstr(pk, "ref", op->ref);
		proto_pack_str(pk, "layers");
		msgpack_pack_array(pk, op->n_layers);
		for (size_t i = 0; i < op->n_layers; i++) {
			msgpack_pack_map(pk, 3);
			pack_digest(pk, "digest", &op->layers[i].digest);
			pack_digest(pk, "diff_id", &op->layers[i].diff_id);
			proto_pack_str(pk, "size");
			msgpack_pack_uint64(pk, op->layers[i].size);
		}
		break;
	case OP_RUN:
		pack_strv(pk, "args", op->args, op->n_args);
		pack_strv(pk, "env", op->env, op->n_env);
		pack_kstr(pk, "cwd", op->cwd ? op->cwd : "/");
		pack_kstr(pk, "user", op->user ? op->user : "");
		pack_kstr(pk, "network", op->network ? op->network : "default");
		/* optional: a RUN without mounts encodes as before */
		if (op->n_mounts) {
			proto_pack_str(pk, "mounts");
			msgpack_pack_array(pk, op->n_mounts);
			for (size_t i = 0; i < op->n_mounts; i++)
				pack_mount(pk, &op->mounts[i]);
		}
		break;
	case OP_COPY:
		proto_pack_str(pk, "entries");
		msgpack_pack_array(pk, op->n_entries);
		for (size_t i = 0; i < op->n_entries; i++) {
			const struct op_entry *e = &op->entries[i];
			char k[2] = { e->kind, 0 };

			msgpack_pack_map(pk, 8 + !!e->unpack_dir + !!e->url + e->has_checksum +
					 !!e->path_if_dir + e->is_root);
			pack_kstr(pk, "path", e->path);
			pack_kstr(pk, "kind", k);
			proto_pack_str(pk, "mode");
			msgpack_pack_uint32(pk, e->mode);
			proto_pack_str(pk, "uid");
			msgpack_pack_uint32(pk, e->uid);
			proto_pack_str(pk, "gid");
			msgpack_pack_uint32(pk, e->gid);
			proto_pack_str(pk, "mtime");
			msgpack_pack_int64(pk, e->mtime);
			if (e->kind == OP_ENTRY_FILE)
				pack_digest(pk, "digest", &e->digest);
			else
				pack_kstr(pk, "digest", NULL);
			pack_kstr(pk, "link", e->link);
			/* optional keys: older workers ignore them */
			if (e->unpack_dir)
				pack_kstr(pk, "unpack_dir", e->unpack_dir);
			if (e->url)
				pack_kstr(pk, "url", e->url);
			if (e->has_checksum)
				pack_digest(pk, "checksum", &e->checksum);
			if (e->path_if_dir)
				pack_kstr(pk, "path_if_dir", e->path_if_dir);
			if (e->is_root) {
				proto_pack_str(pk, "is_root");
				msgpack_pack_true(pk);
			}
		}
		pack_chown_names(op, pk);
		/* only with --chown, so the digests of other copies stay */
		if (op->chown) {
			proto_pack_str(pk, "chown");
			msgpack_pack_true(pk);
			proto_pack_str(pk, "uid");
			msgpack_pack_uint32(pk, op->uid);
			proto_pack_str(pk, "gid");
			msgpack_pack_uint32(pk, op->gid);
		}
		break;
	case OP_MKDIR:
		pack_kstr(pk, "path", op->path);
		if (op->user && *op->user)
			pack_kstr(pk, "user", op->user);
		break;
	case OP_COPY_FROM:
		proto_pack_str(pk, "from");
		msgpack_pack_int(pk, op->from);
		pack_strv(pk, "srcs", op->srcs, op->n_srcs);
		pack_kstr(pk, "dest", op->dest);
		proto_pack_str(pk, "into_dir");
		(op->into_dir ? msgpack_pack_true : msgpack_pack_false)(pk);
		proto_pack_str(pk, "chown");
		(op->chown ? msgpack_pack_true : msgpack_pack_false)(pk);
		proto_pack_str(pk, "uid");
		msgpack_pack_uint32(pk, op->uid);
		proto_pack_str(pk, "gid");
		msgpack_pack_uint32(pk, op->gid);
		proto_pack_str(pk, "chmod");
		(op->chmod ? msgpack_pack_true : msgpack_pack_false)(pk);
		proto_pack_str(pk, "mode");
		msgpack_pack_uint32(pk, op->mode);
		pack_chown_names(op, pk);
		if (op->chmod_spec)
			pack_kstr(pk, "chmod_spec", op->chmod_spec);
		if (op->n_excludes)
			pack_strv(pk, "excludes", op->excludes, op->n_excludes);
		break;
	}
}

int
op_add_arg(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(char *));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n] = strdup(s);
	if (!nv[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

void
op_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int
unpack_strv(const msgpack_object *map, const char *key, char ***ret, size_t *ret_n,
	    struct kiln_err *err)
{
	const msgpack_object *a = proto_obj_get(map, key);

	*ret = NULL;
	*ret_n = 0;
	if (!a)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "op field '%s' is not an array", key);
	*ret = calloc(a->via.array.size + 1, sizeof(char *));
	if (!*ret)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		char *s = proto_obj_strdup(&a->via.array.ptr[i]);

		if (!s)
			return kiln_err_set(err, KILN_EPROTO, "op field '%s[%u]' is not a string", key, i);
		(*ret)[(*ret_n)++] = s;
	}
	return 0;
}

static int
unpack_digest(const msgpack_object *map, const char *key, struct digest *ret, struct kiln_err *err)
{
	const msgpack_object *o = proto_obj_get(map, key);

	if (!o || o->type != MSGPACK_OBJECT_STR ||
	    digest_parse_n(o->via.str.ptr, o->via.str.size, ret) < 0)
		return kiln_err_set(err, KILN_EPROTO, "op field '%s' is not a digest", key);
	return 0;
}

static int
unpack_u32(const msgpack_object *map, const char *key, uint32_t *ret, struct kiln_err *err)
{
	uint64_t v;

	if (proto_obj_get_u64(map, key, &v) < 0 || v > UINT32_MAX)
		return kiln_err_set(err, KILN_EPROTO, "op field '%s' is not a uint32", key);
	*ret = (uint32_t) v;
	return 0;
}

/* Absolute, and no ".." component: a worker must never be told to write
 * outside the snapshot. */
static bool
path_is_clean_abs(const char *p)
{
	if (!p || p[0] != '/')
		return false;
	for (const char *c = p; *c; ) {
		size_t n;

		while (*c == '/')
			c++;
		n = strcspn(c, "/");
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return false;
		c += n;
	}
	return true;
}

static bool
obj_bool(const msgpack_object *map, const char *key)
{
	const msgpack_object *b = proto_obj_get(map, key);

	return b && b->type == MSGPACK_OBJECT_BOOLEAN && b->via.boolean;
}

static int
unpack_mount(const msgpack_object *m, struct op_mount *ret, struct kiln_err *err)
{
	const msgpack_object *t = proto_obj_get(m, "type");
	size_t k;
	int64_t v;
	int r;

	ret->from = -1;
	for (k = 0; k < N_MOUNT_TYPES; k++)
		if (t && proto_obj_is_str(t, mount_type_names[k]))
			break;
	if (k == N_MOUNT_TYPES)
		return kiln_err_set(err, KILN_EPROTO, "mount without a known type");
	ret->type = (enum op_mount_type) k;
	if (proto_obj_get(m, "target")) {
		ret->target = proto_obj_get_strdup(m, "target");
		if (!path_is_clean_abs(ret->target))
			return kiln_err_set(err, KILN_EPROTO, "mount with a bad target");
	} else if (ret->type != OP_MOUNT_SECRET) {
		return kiln_err_set(err, KILN_EPROTO, "mount without a target");
	}
	ret->ro = obj_bool(m, "ro");
	ret->required = obj_bool(m, "required");
	if (ret->type == OP_MOUNT_BIND) {
		if (proto_obj_get_i64(m, "from", &v) < 0 || v < 0 || v > INT32_MAX)
			return kiln_err_set(err, KILN_EPROTO, "bind mount without an earlier source op");
		ret->from = (int) v;
		ret->source = proto_obj_get_strdup(m, "source");
		if (!path_is_clean_abs(ret->source))
			return kiln_err_set(err, KILN_EPROTO, "bind mount with a bad source");
	}
	if (ret->type == OP_MOUNT_CACHE || ret->type == OP_MOUNT_SECRET || ret->type == OP_MOUNT_SSH) {
		ret->id = proto_obj_get_strdup(m, "id");
		if (!ret->id || !*ret->id)
			return kiln_err_set(err, KILN_EPROTO, "mount without an id");
	}
	if (ret->type == OP_MOUNT_CACHE) {
		ret->sharing = proto_obj_get_strdup(m, "sharing");
		if (!ret->sharing || (strcmp(ret->sharing, "shared") != 0 &&
				      strcmp(ret->sharing, "private") != 0 &&
				      strcmp(ret->sharing, "locked") != 0))
			return kiln_err_set(err, KILN_EPROTO, "cache mount with bad sharing");
		if (proto_obj_get(m, "from")) {
			if (proto_obj_get_i64(m, "from", &v) < 0 || v < 0 || v > INT32_MAX)
				return kiln_err_set(err, KILN_EPROTO, "cache mount with a bad from");
			ret->from = (int) v;
		}
		if (proto_obj_get(m, "source")) {
			ret->source = proto_obj_get_strdup(m, "source");
			if (!path_is_clean_abs(ret->source))
				return kiln_err_set(err, KILN_EPROTO, "cache mount with a bad source");
		}
	}
	if (ret->type == OP_MOUNT_CACHE || ret->type == OP_MOUNT_SECRET || ret->type == OP_MOUNT_SSH) {
		if ((r = unpack_u32(m, "mode", &ret->mode, err)) < 0 ||
		    (r = unpack_u32(m, "uid", &ret->uid, err)) < 0 ||
		    (r = unpack_u32(m, "gid", &ret->gid, err)) < 0)
			return r;
		ret->mode &= 07777;
	}
	if (ret->type == OP_MOUNT_SECRET && proto_obj_get(m, "env")) {
		ret->env = proto_obj_get_strdup(m, "env");
		if (!ret->env || !*ret->env || strchr(ret->env, '='))
			return kiln_err_set(err, KILN_EPROTO, "secret mount with a bad env");
	}
	if (ret->type == OP_MOUNT_SECRET && !ret->target && !ret->env)
		return kiln_err_set(err, KILN_EPROTO, "secret mount without target or env");
	if (ret->type == OP_MOUNT_TMPFS && proto_obj_get_u64(m, "size", &ret->size) < 0)
		return kiln_err_set(err, KILN_EPROTO, "tmpfs mount without size");
	return 0;
}

static int
unpack_mounts(const msgpack_object *o, struct op *op, struct kiln_err *err)
{
	const msgpack_object *a = proto_obj_get(o, "mounts");
	int r;

	if (!a)
		return 0;
	if (a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "op field 'mounts' is not an array");
	op->mounts = calloc(a->via.array.size + 1, sizeof(*op->mounts));
	if (!op->mounts)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		op->n_mounts++;
		r = unpack_mount(&a->via.array.ptr[i], &op->mounts[i], err);
		if (r < 0)
			return kiln_err_wrap(err, "mount %u", i);
	}
	return 0;
}

static int
unpack_chown_names(const msgpack_object *o, struct op *op, struct kiln_err *err)
{
	if (proto_obj_get(o, "chown_user")) {
		op->chown_user = proto_obj_get_strdup(o, "chown_user");
		if (!op->chown_user || !*op->chown_user)
			return kiln_err_set(err, KILN_EPROTO, "op field 'chown_user' is not a name");
	}
	if (proto_obj_get(o, "chown_group")) {
		op->chown_group = proto_obj_get_strdup(o, "chown_group");
		if (!op->chown_group || !*op->chown_group)
			return kiln_err_set(err, KILN_EPROTO, "op field 'chown_group' is not a name");
	}
	return 0;
}

static int
unpack_body(const msgpack_object *o, struct op *op, struct kiln_err *err)
{
	const msgpack_object *a;
	int64_t v;
	int r;

	switch (op->kind) {
	case OP_IMAGE:
		a = proto_obj_get(o, "layers");
		if (!a || a->type != MSGPACK_OBJECT_ARRAY)
			return kiln_err_set(err, KILN_EPROTO, "image op without layers");
		op->layers = calloc(a->via.array.size + 1, sizeof(*op->layers));
		if (!op->layers)
			return kiln_err_set(err, ENOMEM, "out of memory");
		op->ref = proto_obj_get_strdup(o, "ref");
		for (uint32_t i = 0; i < a->via.array.size; i++) {
			const msgpack_object *l = &a->via.array.ptr[i];
			struct op_layer *ol = &op->layers[i];

			r = unpack_digest(l, "digest", &ol->digest, err);
			if (r < 0)
				return r;
			r = unpack_digest(l, "diff_id", &ol->diff_id, err);
			if (r < 0)
				return r;
			if (proto_obj_get_u64(l, "size", &ol->size) < 0)
				return kiln_err_set(err, KILN_EPROTO, "layer without size");
			op->n_layers++;
		}
		return 0;
	case OP_RUN:
		r = unpack_strv(o, "args", &op->args, &op->n_args, err);
		if (r < 0)
			return r;
		if (op->n_args == 0)
			return kiln_err_set(err, KILN_EPROTO, "run op without args");
		r = unpack_strv(o, "env", &op->env, &op->n_env, err);
		if (r < 0)
			return r;
		op->cwd = proto_obj_get_strdup(o, "cwd");
		op->user = proto_obj_get_strdup(o, "user");
		op->network = proto_obj_get_strdup(o, "network");
		if (!op->cwd || op->cwd[0] != '/')
			return kiln_err_set(err, KILN_EPROTO, "run op without absolute cwd");
		return unpack_mounts(o, op, err);
	case OP_COPY:
		a = proto_obj_get(o, "entries");
		if (!a || a->type != MSGPACK_OBJECT_ARRAY)
			return kiln_err_set(err, KILN_EPROTO, "copy op without entries");
		op->entries = calloc(a->via.array.size + 1, sizeof(*op->entries));
		if (!op->entries)
			return kiln_err_set(err, ENOMEM, "out of memory");
		for (uint32_t i = 0; i < a->via.array.size; i++) {
			const msgpack_object *m = &a->via.array.ptr[i];
			struct op_entry *e = &op->entries[op->n_entries];
			char *k;

			e->path = proto_obj_get_strdup(m, "path");
			op->n_entries++;
			if (!path_is_clean_abs(e->path))
				return kiln_err_set(err, KILN_EPROTO, "copy entry %u: bad path", i);
			k = proto_obj_get_strdup(m, "kind");
			e->kind = k && strlen(k) == 1 ? k[0] : 0;
			free(k);
			if (e->kind != OP_ENTRY_FILE && e->kind != OP_ENTRY_DIR && e->kind != OP_ENTRY_SYMLINK &&
			    e->kind != OP_ENTRY_URL)
				return kiln_err_set(err, KILN_EPROTO, "copy entry '%s': bad kind", e->path);
			if ((r = unpack_u32(m, "mode", &e->mode, err)) < 0 ||
			    (r = unpack_u32(m, "uid", &e->uid, err)) < 0 ||
			    (r = unpack_u32(m, "gid", &e->gid, err)) < 0)
				return r;
			e->mode &= 07777;
			if (proto_obj_get_i64(m, "mtime", &e->mtime) < 0)
				return kiln_err_set(err, KILN_EPROTO, "copy entry '%s': bad mtime", e->path);
			if (e->kind == OP_ENTRY_FILE) {
				r = unpack_digest(m, "digest", &e->digest, err);
				if (r < 0)
					return r;
			}
			if (e->kind == OP_ENTRY_SYMLINK) {
				e->link = proto_obj_get_strdup(m, "link");
				if (!e->link)
					return kiln_err_set(err, KILN_EPROTO, "symlink '%s' without target", e->path);
			}
			if (e->kind == OP_ENTRY_FILE && proto_obj_get(m, "unpack_dir")) {
				e->unpack_dir = proto_obj_get_strdup(m, "unpack_dir");
				if (!path_is_clean_abs(e->unpack_dir))
					return kiln_err_set(err, KILN_EPROTO, "copy entry '%s': bad unpack_dir",
							    e->path);
			}
			if (e->kind == OP_ENTRY_URL) {
				e->url = proto_obj_get_strdup(m, "url");
				if (!e->url || !(strncmp(e->url, "http://", 7) == 0 ||
						 strncmp(e->url, "https://", 8) == 0))
					return kiln_err_set(err, KILN_EPROTO, "copy entry '%s': bad url", e->path);
				if (proto_obj_get(m, "checksum")) {
					r = unpack_digest(m, "checksum", &e->checksum, err);
					if (r < 0)
						return r;
					e->has_checksum = true;
				}
			}
			if ((e->kind == OP_ENTRY_FILE || e->kind == OP_ENTRY_URL) &&
			    proto_obj_get(m, "path_if_dir")) {
				e->path_if_dir = proto_obj_get_strdup(m, "path_if_dir");
				if (!path_is_clean_abs(e->path_if_dir))
					return kiln_err_set(err, KILN_EPROTO, "copy entry '%s': bad path_if_dir",
							    e->path);
			}
			e->is_root = e->kind == OP_ENTRY_DIR && obj_bool(m, "is_root");
		}
		op->chown = obj_bool(o, "chown");
		if (op->chown && ((r = unpack_u32(o, "uid", &op->uid, err)) < 0 ||
				  (r = unpack_u32(o, "gid", &op->gid, err)) < 0))
			return r;
		return unpack_chown_names(o, op, err);
	case OP_MKDIR:
		op->path = proto_obj_get_strdup(o, "path");
		if (!path_is_clean_abs(op->path))
			return kiln_err_set(err, KILN_EPROTO, "mkdir op without absolute path");
		if (proto_obj_get(o, "user")) {
			op->user = proto_obj_get_strdup(o, "user");
			if (!op->user)
				return kiln_err_set(err, KILN_EPROTO, "op field 'user' is not a string");
		}
		return 0;
	case OP_COPY_FROM:
		if (proto_obj_get_i64(o, "from", &v) < 0 || v < 0 || v > INT32_MAX)
			return kiln_err_set(err, KILN_EPROTO, "copy_from op without a source op");
		op->from = (int) v;
		r = unpack_strv(o, "srcs", &op->srcs, &op->n_srcs, err);
		if (r < 0)
			return r;
		for (size_t i = 0; i < op->n_srcs; i++)
			if (op->srcs[i][0] != '/')
				return kiln_err_set(err, KILN_EPROTO, "copy_from source '%s' is not absolute",
						    op->srcs[i]);
		op->dest = proto_obj_get_strdup(o, "dest");
		if (op->n_srcs == 0 || !path_is_clean_abs(op->dest))
			return kiln_err_set(err, KILN_EPROTO, "copy_from op without sources or absolute dest");
		op->into_dir = obj_bool(o, "into_dir");
		op->chown = obj_bool(o, "chown");
		op->chmod = obj_bool(o, "chmod");
		if ((r = unpack_u32(o, "uid", &op->uid, err)) < 0 ||
		    (r = unpack_u32(o, "gid", &op->gid, err)) < 0 ||
		    (r = unpack_u32(o, "mode", &op->mode, err)) < 0)
			return r;
		op->mode &= 07777;
		if (proto_obj_get(o, "chmod_spec")) {
			op->chmod_spec = proto_obj_get_strdup(o, "chmod_spec");
			if (!op->chmod_spec || op_mode_check(op->chmod_spec) < 0)
				return kiln_err_set(err, KILN_EPROTO, "copy_from op with a bad chmod_spec");
		}
		r = unpack_strv(o, "excludes", &op->excludes, &op->n_excludes, err);
		if (r < 0)
			return r;
		return unpack_chown_names(o, op, err);
	}
	return kiln_err_set(err, KILN_EPROTO, "unknown op kind");
}

int
op_unpack(const msgpack_object *o, struct op *ret, struct kiln_err *err)
{
	const msgpack_object *k;
	int r;

	memset(ret, 0, sizeof(*ret));
	if (o->type != MSGPACK_OBJECT_MAP)
		return kiln_err_set(err, KILN_EPROTO, "op is not a map");
	k = proto_obj_get(o, "kind");
	r = -1;
	for (size_t i = 0; i < N_KINDS; i++)
		if (k && proto_obj_is_str(k, kind_names[i]))
			r = (int) i;
	if (r < 0)
		return kiln_err_set(err, KILN_EPROTO, "op has no known kind");
	ret->kind = (enum op_kind) r;
	ret->name = proto_obj_get_strdup(o, "name");
	{
		int64_t in = -1;

		if (proto_obj_get_i64(o, "input", &in) < 0 || in < -1 || in > INT32_MAX ||
		    (ret->kind != OP_IMAGE && in < 0)) {
			op_release(ret);
			return kiln_err_set(err, KILN_EPROTO, "op without a valid input");
		}
		ret->input = (int) in;
	}
	r = unpack_body(o, ret, err);
	if (r < 0)
		op_release(ret);
	return r;
}

void
op_release(struct op *op)
{
	free(op->name);
	free(op->ref);
	free(op->layers);
	op_strv_free(op->args, op->n_args);
	op_strv_free(op->env, op->n_env);
	free(op->cwd);
	free(op->user);
	free(op->network);
	for (size_t i = 0; i < op->n_mounts; i++) {
		free(op->mounts[i].target);
		free(op->mounts[i].source);
		free(op->mounts[i].id);
		free(op->mounts[i].sharing);
		free(op->mounts[i].env);
	}
	free(op->mounts);
	for (size_t i = 0; i < op->n_entries; i++) {
		free(op->entries[i].path);
		free(op->entries[i].link);
		free(op->entries[i].unpack_dir);
		free(op->entries[i].url);
		free(op->entries[i].path_if_dir);
	}
	free(op->entries);
	free(op->path);
	op_strv_free(op->srcs, op->n_srcs);
	free(op->dest);
	free(op->chmod_spec);
	op_strv_free(op->excludes, op->n_excludes);
	free(op->chown_user);
	free(op->chown_group);
	memset(op, 0, sizeof(*op));
}

/* ---- symbolic modes ---- */

enum { WHO_U = 1, WHO_G = 2, WHO_O = 4, WHO_A = 7 };

/* The rwx bits of class who (one of u, g, o) moved to the low 3 bits. */
static uint32_t
class_bits(uint32_t mode, int who)
{
	return who == WHO_U ? (mode >> 6) & 7 : who == WHO_G ? (mode >> 3) & 7 : mode & 7;
}

/* Spread 3 rwx bits to every class in who. */
static uint32_t
spread(uint32_t rwx, int who)
{
	return ((who & WHO_U) ? rwx << 6 : 0) | ((who & WHO_G) ? rwx << 3 : 0) | ((who & WHO_O) ? rwx : 0);
}

/* Walk spec; with ret_mode NULL only check it. */
static int
mode_walk(const char *spec, uint32_t mode, bool dir, uint32_t *ret_mode)
{
	const char *p = spec;

	if (!*p)
		return -EINVAL;
	for (;;) {
		int who = 0;

		for (; *p && strchr("ugoa", *p); p++)
			who |= *p == 'u' ? WHO_U : *p == 'g' ? WHO_G : *p == 'o' ? WHO_O : WHO_A;
		if (!*p || !strchr("+-=", *p))
			return -EINVAL;
		while (*p && strchr("+-=", *p)) {
			char op = *p++;
			int eff = who ? who : WHO_A;    /* umask 0: no who is "a" */
			uint32_t bits = 0, special = 0;

			if (*p && strchr("ugo", *p) && (!p[1] || strchr(",+-=", p[1]))) {
				/* copy another class: g=u */
				bits = spread(class_bits(mode, *p == 'u' ? WHO_U : *p == 'g' ? WHO_G : WHO_O), eff);
				p++;
			} else {
				for (; *p && strchr("rwxXst", *p); p++) {
					switch (*p) {
					case 'r': bits |= spread(4, eff); break;
					case 'w': bits |= spread(2, eff); break;
					case 'x': bits |= spread(1, eff); break;
					case 'X':
						if (dir || (mode & 0111))
							bits |= spread(1, eff);
						break;
					case 's':
						special |= ((eff & WHO_U) ? 04000 : 0) | ((eff & WHO_G) ? 02000 : 0);
						break;
					case 't':
						if (!who || (who & WHO_O))
							special |= 01000;
						break;
					}
				}
			}
			bits |= special;
			switch (op) {
			case '+':
				mode |= bits;
				break;
			case '-':
				mode &= ~bits;
				break;
			case '=':
				mode &= ~(spread(7, eff) | ((eff & WHO_U) ? 04000u : 0) |
					  ((eff & WHO_G) ? 02000u : 0) | ((eff & WHO_O) ? 01000u : 0));
				mode |= bits;
				break;
			}
		}
		if (!*p)
			break;
		if (*p != ',' || !p[1])
			return -EINVAL;
		p++;
	}
	if (ret_mode)
		*ret_mode = mode & 07777;
	return 0;
}

int
op_mode_check(const char *spec)
{
	return mode_walk(spec, 0, false, NULL);
}

uint32_t
op_mode_apply(const char *spec, uint32_t mode, bool dir)
{
	uint32_t out = mode & 07777;

	(void) mode_walk(spec, mode & 07777, dir, &out);
	return out;
}
