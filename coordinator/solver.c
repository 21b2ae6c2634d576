#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <msgpack.h>

#include "err.h"
#include "layer.h"
#include "proto.h"
#include "solver.h"

/* The op as its key sees it: no name, no graph positions (the keys of
 * what it reads stand for them), no image name, no mtimes of copied
 * files (BuildKit's content checksums leave them out too). The copy
 * borrows every string of op; free the two arrays it allocates. */
static int
key_view(const struct op *op, struct op *v)
{
	*v = *op;
	v->name = NULL;
	v->input = -1;
	v->from = -1;
	v->ref = NULL;
	v->mounts = NULL;
	v->entries = NULL;
	if (op->n_mounts) {
		v->mounts = calloc(op->n_mounts, sizeof(*v->mounts));
		if (!v->mounts)
			return -ENOMEM;
		for (size_t i = 0; i < op->n_mounts; i++) {
			v->mounts[i] = op->mounts[i];
			v->mounts[i].from = -1;
		}
	}
	if (op->n_entries) {
		v->entries = calloc(op->n_entries, sizeof(*v->entries));
		if (!v->entries) {
			free(v->mounts);
			return -ENOMEM;
		}
		for (size_t i = 0; i < op->n_entries; i++) {
			v->entries[i] = op->entries[i];
			v->entries[i].mtime = 0;
		}
	}
	return 0;
}

static void
pack_key_of(msgpack_packer *pk, const struct digest *keys, size_t i, int ref)
{
	char ds[DIGEST_STR_SIZE];

	if (ref < 0 || (size_t) ref >= i)
		msgpack_pack_nil(pk);
	else
		proto_pack_str(pk, digest_fmt(&keys[ref], ds));
}

int
solver_key(const struct op *ops, size_t i, const struct digest *keys, const char *salt,
	   struct digest *ret)
{
	const struct op *op = &ops[i];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct op v;

	if (key_view(op, &v) < 0)
		return -ENOMEM;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 6);
	proto_pack_str(&pk, "kiln-key-v1");
	proto_pack_str(&pk, salt ? salt : "");
	op_pack(&v, &pk);
	pack_key_of(&pk, keys, i, op->kind == OP_IMAGE ? -1 : op->input);
	pack_key_of(&pk, keys, i, op->kind == OP_COPY_FROM ? op->from : -1);
	msgpack_pack_array(&pk, op->kind == OP_RUN ? op->n_mounts : 0);
	for (size_t k = 0; op->kind == OP_RUN && k < op->n_mounts; k++)
		pack_key_of(&pk, keys, i, op->mounts[k].from);
	free(v.mounts);
	free(v.entries);
	if (!sb.data) {
		msgpack_sbuffer_destroy(&sb);
		return -ENOMEM;
	}
	digest_buf(sb.data, sb.size, ret);
	msgpack_sbuffer_destroy(&sb);
	return 0;
}

void
solver_rec_release(struct solver_rec *r)
{
	free(r->ref);
	free(r->layers);
	free(r->made);
	memset(r, 0, sizeof(*r));
}

int
solver_rec_image(const struct op *op, const char (*mts)[128], struct solver_rec *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->layers = calloc(op->n_layers + 1, sizeof(*ret->layers));
	ret->made = calloc(1, sizeof(bool));
	if (!ret->layers || !ret->made || (op->ref && !(ret->ref = strdup(op->ref)))) {
		solver_rec_release(ret);
		return -ENOMEM;
	}
	for (size_t i = 0; i < op->n_layers; i++) {
		ret->layers[i].l = op->layers[i];
		snprintf(ret->layers[i].media_type, sizeof(ret->layers[i].media_type), "%s",
			 mts && mts[i][0] ? mts[i] : layer_compression_media_type(LAYER_GZIP, true));
	}
	ret->n_layers = ret->n_base = op->n_layers;
	return 0;
}

int
solver_rec_extend(const struct solver_rec *in, const struct solver_layer *layer, struct solver_rec *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->layers = calloc(in->n_layers + 2, sizeof(*ret->layers));
	ret->made = calloc(in->n_made + 2, sizeof(bool));
	if (!ret->layers || !ret->made || (in->ref && !(ret->ref = strdup(in->ref)))) {
		solver_rec_release(ret);
		return -ENOMEM;
	}
	if (in->n_layers)
		memcpy(ret->layers, in->layers, in->n_layers * sizeof(*ret->layers));
	if (in->n_made)
		memcpy(ret->made, in->made, in->n_made * sizeof(bool));
	ret->n_layers = in->n_layers;
	ret->n_base = in->n_base;
	ret->n_made = in->n_made;
	if (layer)
		ret->layers[ret->n_layers++] = *layer;
	ret->made[ret->n_made++] = layer != NULL;
	return 0;
}

int
solver_rec_copy(const struct solver_rec *src, struct solver_rec *ret)
{
	int r = solver_rec_extend(src, NULL, ret);

	if (r == 0)
		ret->n_made--;
	return r;
}

const struct solver_layer *
solver_rec_own_layer(const struct solver_rec *r)
{
	if (r->n_made == 0 || !r->made[r->n_made - 1] || r->n_layers == 0)
		return NULL;
	return &r->layers[r->n_layers - 1];
}

int
solver_rec_encode(const struct solver_rec *r, char **ret, size_t *ret_len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char ds[DIGEST_STR_SIZE];

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	if (r->ref)
		proto_pack_str(&pk, r->ref);
	else
		msgpack_pack_nil(&pk);
	msgpack_pack_uint64(&pk, r->n_base);
	msgpack_pack_array(&pk, r->n_layers);
	for (size_t i = 0; i < r->n_layers; i++) {
		msgpack_pack_array(&pk, 4);
		proto_pack_str(&pk, digest_fmt(&r->layers[i].l.digest, ds));
		proto_pack_str(&pk, digest_fmt(&r->layers[i].l.diff_id, ds));
		msgpack_pack_uint64(&pk, r->layers[i].l.size);
		proto_pack_str(&pk, r->layers[i].media_type);
	}
	msgpack_pack_bin(&pk, r->n_made);
	for (size_t i = 0; i < r->n_made; i++) {
		char c = r->made[i] ? 1 : 0;

		msgpack_pack_bin_body(&pk, &c, 1);
	}
	if (!sb.data) {
		msgpack_sbuffer_destroy(&sb);
		return -ENOMEM;
	}
	*ret = sb.data;          /* msgpack_sbuffer's buffer is malloc'd */
	*ret_len = sb.size;
	return 0;
}

static bool
obj_str(const msgpack_object *o, char *buf, size_t size)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size)
		return false;
	memcpy(buf, o->via.str.ptr, o->via.str.size);
	buf[o->via.str.size] = '\0';
	return true;
}

int
solver_rec_decode(const void *data, size_t len, struct solver_rec *ret, struct kiln_err *err)
{
	msgpack_unpacked u;
	size_t off = 0;
	const msgpack_object *a, *ls, *mk;
	int r = 0;

	memset(ret, 0, sizeof(*ret));
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
		msgpack_unpacked_destroy(&u);
		return kiln_err_set(err, EBADMSG, "cache record is not msgpack");
	}
	a = &u.data;
	if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != 4 ||
	    a->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    (ls = &a->via.array.ptr[2])->type != MSGPACK_OBJECT_ARRAY ||
	    (mk = &a->via.array.ptr[3])->type != MSGPACK_OBJECT_BIN ||
	    ls->via.array.size > SOLVER_REC_MAX_LAYERS || mk->via.bin.size > SOLVER_REC_MAX_LAYERS * 4 ||
	    a->via.array.ptr[1].via.u64 > ls->via.array.size) {
		r = kiln_err_set(err, EBADMSG, "cache record is malformed");
		goto out;
	}
	if (a->via.array.ptr[0].type == MSGPACK_OBJECT_STR) {
		ret->ref = strndup(a->via.array.ptr[0].via.str.ptr, a->via.array.ptr[0].via.str.size);
		if (!ret->ref) {
			r = kiln_err_set(err, ENOMEM, "out of memory");
			goto out;
		}
	}
	ret->n_base = a->via.array.ptr[1].via.u64;
	ret->layers = calloc(ls->via.array.size + 1, sizeof(*ret->layers));
	ret->made = calloc(mk->via.bin.size + 1, sizeof(bool));
	if (!ret->layers || !ret->made) {
		r = kiln_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < ls->via.array.size; i++) {
		const msgpack_object *e = &ls->via.array.ptr[i];
		struct solver_layer *l = &ret->layers[i];
		char ds[DIGEST_STR_SIZE];

		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4 ||
		    !obj_str(&e->via.array.ptr[0], ds, sizeof(ds)) || digest_parse(ds, &l->l.digest) < 0 ||
		    !obj_str(&e->via.array.ptr[1], ds, sizeof(ds)) || digest_parse(ds, &l->l.diff_id) < 0 ||
		    e->via.array.ptr[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    !obj_str(&e->via.array.ptr[3], l->media_type, sizeof(l->media_type))) {
			r = kiln_err_set(err, EBADMSG, "cache record: layer %u is malformed", i);
			goto out;
		}
		l->l.size = e->via.array.ptr[2].via.u64;
		ret->n_layers++;
	}
	for (uint32_t i = 0; i < mk->via.bin.size; i++)
		ret->made[i] = mk->via.bin.ptr[i] != 0;
	ret->n_made = mk->via.bin.size;
out:
	msgpack_unpacked_destroy(&u);
	if (r < 0)
		solver_rec_release(ret);
	return r;
}
