/* The end of a build: one config and manifest per platform from the
 * image's result record, an index when there are several, layer rewrites
 * (force-compression, rewrite-timestamp) on the export node, and the
 * job.export that writes or pushes them. */
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
int
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
int
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

void
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
void
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
