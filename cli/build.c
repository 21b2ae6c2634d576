/* `kiln build`: reads the flags (buildx's names), scans the context,
 * resolves named contexts, connects to the builder, syncs exactly the blobs
 * the worker lacks, renders progress and writes the outputs. It never
 * builds anything itself. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build.h"
#include "cleanup.h"
#include "config.h"
#include "conn.h"
#include "context.h"
#include "debug.h"
#include "digest.h"
#include "driver.h"
#include "err.h"
#include "layer.h"
#include "oci.h"
#include "platform.h"
#include "progress.h"
#include "proto.h"
#include "secret.h"
#include "ssh.h"
#include "util.h"
#include "xfer.h"

#define MAX_LIST 64
#define MAX_STREAMS 16
#define OUTPUT_MAX (64ull << 30)
/* The coordinator cancels a build whose client is silent for 5 s: ping
 * every second, and give up after 30 s without an answer. */
#define PING_EVERY_MS 1000
#define PINGS_LOST_MAX 30

struct named_ctx {
	char *name;
	char *dir;                     /* oci layout */
	char *ref;                     /* tag or digest, NULL = latest */
	char *config;                  /* JSON */
	size_t config_len;
	struct oci_manifest man;
};

struct opts {
	const char *file;
	const char *tags[MAX_LIST];
	size_t n_tags;
	const char *platforms[MAX_LIST];       /* --platform, each may list several */
	size_t n_platforms;
	const char *no_cache_filter[MAX_LIST];
	size_t n_no_cache_filter;
	bool no_cache;
	const char *args[MAX_LIST];
	size_t n_args;
	const char *contexts[MAX_LIST];
	size_t n_contexts;
	const char *secrets[MAX_LIST];
	size_t n_secrets;
	const char *ssh[MAX_LIST];
	size_t n_ssh;
	const char *target;
	const char *output;
	const char *progress;
	const char *metadata;
	const char *path;
	bool push;
	bool graph;                    /* kiln debug graph */
	char call[16];                 /* --call: "" (build), outline, targets, graph */
	char call_format[8];           /* "" or json */
};

struct output {
	char type[16];                 /* oci, docker, local, tar, image */
	char dest[4096];
	char name[1024];               /* image, docker: comma-separated names */
	bool push;
	bool tar;                      /* oci: false = unpack the layout into dest */
	int oci_mediatypes;            /* -1 = the type's default, 0, 1 */
	char compression[16];          /* "" = gzip (the default), gzip, zstd, uncompressed */
	bool has_level;
	int compression_level;
	bool force_compression;
	bool rewrite_timestamp;        /* clamp file times in the build's layers to SOURCE_DATE_EPOCH */
};

/* "true"/"false" (and buildx's other strconv.ParseBool spellings). */
static int
parse_bool(const char *key, const char *v, bool *ret, struct kiln_err *err)
{
	if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "t") || !strcmp(v, "T") ||
	    !strcmp(v, "TRUE") || !strcmp(v, "True"))
		*ret = true;
	else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "f") || !strcmp(v, "F") ||
		 !strcmp(v, "FALSE") || !strcmp(v, "False"))
		*ret = false;
	else
		return kiln_err_set(err, EINVAL, "output option %s: invalid boolean '%s'", key, v);
	return 0;
}

/* A blob the worker lacks, on its way. */
struct send {
	struct xfer_tx *tx;
	uint64_t stream;
};

struct session {
	struct conn *conn;
	struct progress *pr;
	char id[33];
	struct ctx_list ctx;
	const struct ctx_entry **by_digest;   /* files sorted by digest */
	size_t n_by_digest;
	struct named_ctx *nctx;
	size_t n_nctx;
	struct output out;
	struct secret_src *secrets;    /* --secret, in order (the last one of an id wins) */
	size_t n_secrets;
	struct ssh_agents *ssh;        /* --ssh */
	/* context sync */
	struct digest *queue;
	size_t n_queue, next_queue;
	struct send sends[MAX_STREAMS];
	uint64_t next_stream;
	uint64_t files_sent, bytes_sent;
	bool synced;
	struct platform plats[16];     /* the platforms to build, in order */
	size_t n_plats;
	unsigned ctx_reported;
	int64_t last_ping_ms;
	int v_ctx;
	/* steps */
	int *step_v;
	size_t n_steps;
	char **step_names;
	/* output */
	struct xfer_rx *rx;
	char *out_tmp;
	int v_export;
	bool finished;
};

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: kiln build [OPTIONS] PATH\n"
		"\n"
		"Start a build of the Dockerfile in PATH (the build context).\n"
		"\n"
		"Options:\n"
		"      --build-arg K=V          set a build-time variable\n"
		"      --build-context NAME=oci-layout://DIR[:TAG|@DIGEST]\n"
		"                               an image from an OCI layout, used by FROM NAME\n"
		"      --call METHOD[,format=json]\n"
		"                               instead of building, print: outline (the build args,\n"
		"                               secrets and ssh mounts the target uses) or targets\n"
		"                               (the stages); build (the default) builds\n"
		"  -f, --file FILE              name of the Dockerfile (default: PATH/Dockerfile)\n"
		"      --metadata-file FILE     write build result metadata (digests, counters) as JSON\n"
		"  -o, --output SPEC            type=oci,dest=FILE[,tar=false] | type=docker,dest=FILE[,name=REF]\n"
		"                               | type=tar,dest=FILE | type=local,dest=DIR\n"
		"                               | type=image,name=REF[,REF...],push=true (also type=registry)\n"
		"                               (a bare DIR means type=local,dest=DIR)\n"
		"      --push                   push the image to the registry of each -t NAME\n"
"      --no-cache               do not use the cache: run every step\n"
		"      --no-cache-filter STAGE  do not use the cache for this stage (and what builds on it)\n"
		"      --platform P[,P...]      target platforms (default: this machine's); several\n"
		"                               make one image per platform and an index of them\n"
		"      --print METHOD           same as --call\n"
		"      --progress MODE          auto, plain, tty, quiet or rawjson (default: auto)\n"
		"      --secret id=ID[,src=FILE|,env=VAR][,type=file|env]\n"
		"                               a secret for RUN --mount=type=secret (default: the\n"
		"                               variable ID when it is set, else the file ID)\n"
		"      --ssh default|ID[=SOCKET]\n"
		"                               an ssh agent socket for RUN --mount=type=ssh (default:\n"
		"                               $SSH_AUTH_SOCK); repeat for several ids. The steps may\n"
		"                               list keys and ask for signatures, nothing more; key\n"
		"                               files are not supported (ssh-add them to an agent)\n"
		"  -t, --tag NAME               name (and tag) recorded in the OCI index\n"
		"      --target STAGE           build this stage\n"
		"      --builder NAME           use this builder instead of the current one\n"
		"  -h, --help                   show this help\n"
		"\n"
		"SOURCE_DATE_EPOCH, when set, fixes the image's timestamps; with -o ...,rewrite-timestamp=true\n"
		"file times in the layers the build makes are clamped to it too, for reproducible builds.\n"
		"PATH/.dockerignore, or FILE.dockerignore next to the Dockerfile FILE, leaves files\n"
		"out of the build context.\n");
}

static void
graph_usage(FILE *f)
{
	fprintf(f,
		"Usage: kiln debug graph [OPTIONS] PATH\n"
		"\n"
		"Print, as JSON, the build graph that `kiln build [OPTIONS] PATH` would run:\n"
		"the builder's frontend plans the build and nothing runs.\n"
		"\n"
		"Options:\n"
		"      --build-arg K=V          set a build-time variable\n"
		"      --build-context NAME=oci-layout://DIR[:TAG|@DIGEST]\n"
		"                               an image from an OCI layout, used by FROM NAME\n"
		"  -f, --file FILE              name of the Dockerfile (default: PATH/Dockerfile)\n"
		"      --platform P             target platform (default: this machine's)\n"
		"      --progress MODE          auto, plain, tty, quiet or rawjson (default: auto)\n"
		"      --target STAGE           plan this stage\n"
		"      --builder NAME           use this builder instead of the current one\n"
		"  -h, --help                   show this help\n"
		"\n"
		"The other flags of kiln build (-o, -t, --metadata-file) are accepted and ignored.\n");
}

/* --call/--print as buildx reads it: comma-separated, one method name and
 * optionally format=json; "build" is a normal build. */
static int
parse_call(const char *spec, struct opts *o, struct kiln_err *err)
{
	_cleanup_free_ char *s = strdup(spec);
	char *save = NULL;
	const char *name = NULL;

	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (char *f = strtok_r(s, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(f, '=');

		if (eq) {
			*eq = '\0';
			if (strcmp(f, "format") != 0)
				return kiln_err_set(err, EINVAL, "invalid --call field '%s=%s'", f, eq + 1);
			if (strcmp(eq + 1, "json") != 0)
				return kiln_err_set(err, EINVAL, "unsupported --call format '%s' (json)", eq + 1);
			snprintf(o->call_format, sizeof(o->call_format), "json");
		} else {
			if (name)
				return kiln_err_set(err, EINVAL, "invalid --call value '%s'", spec);
			name = f;
		}
	}
	if (!name || strcmp(name, "build") == 0) {
		o->call[0] = '\0';
		return 0;
	}
	if (strcmp(name, "outline") != 0 && strcmp(name, "targets") != 0)
		return kiln_err_set(err, ENOTSUP, "--call '%s' is not supported (build, outline, targets)",
				    name);
	snprintf(o->call, sizeof(o->call), "%s", name);
	return 0;
}

static int
parse_output(const char *spec, struct output *o, struct kiln_err *err)
{
	_cleanup_free_ char *s = strdup(spec ? spec : "");
	char *save = NULL;

	if (!s)
		return kiln_err_set(err, ENOMEM, "out of memory");
	o->type[0] = o->dest[0] = '\0';
	o->tar = true;
	o->oci_mediatypes = -1;
	o->compression[0] = '\0';
	o->has_level = o->force_compression = o->rewrite_timestamp = false;
	if (!strchr(s, '=')) {
		snprintf(o->type, sizeof(o->type), "local");
		snprintf(o->dest, sizeof(o->dest), "%s", s);
	} else {
		for (char *kv = strtok_r(s, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
			char *eq = strchr(kv, '=');

			if (!eq)
				return kiln_err_set(err, EINVAL, "invalid output option '%s'", kv);
			*eq = '\0';
			if (strcmp(kv, "type") == 0)
				snprintf(o->type, sizeof(o->type), "%s", eq + 1);
			else if (strcmp(kv, "dest") == 0)
				snprintf(o->dest, sizeof(o->dest), "%s", eq + 1);
			else if (strcmp(kv, "name") == 0)
				snprintf(o->name, sizeof(o->name), "%s", eq + 1);
			else if (strcmp(kv, "push") == 0)
				o->push = strcmp(eq + 1, "true") == 0;
			else if (strcmp(kv, "tar") == 0) {
				if (parse_bool(kv, eq + 1, &o->tar, err) < 0)
					return -err->code;
			} else if (strcmp(kv, "rewrite-timestamp") == 0) {
				if (parse_bool(kv, eq + 1, &o->rewrite_timestamp, err) < 0)
					return -err->code;
			} else if (strcmp(kv, "oci-mediatypes") == 0) {
				bool b;

				if (parse_bool(kv, eq + 1, &b, err) < 0)
					return -err->code;
				o->oci_mediatypes = b;
			} else if (strcmp(kv, "compression") == 0) {
				enum layer_compression c;

				if (layer_compression_parse(eq + 1, &c) < 0)
					return kiln_err_set(err, EINVAL, "unsupported compression type '%s' "
							    "(gzip, zstd, uncompressed)", eq + 1);
				snprintf(o->compression, sizeof(o->compression), "%s", eq + 1);
			} else if (strcmp(kv, "compression-level") == 0) {
				char *end;
				long v;

				errno = 0;
				v = strtol(eq + 1, &end, 10);
				if (errno || end == eq + 1 || *end || v < 0 || v > INT_MAX)
					return kiln_err_set(err, EINVAL, "invalid compression-level '%s'", eq + 1);
				o->has_level = true;
				o->compression_level = (int) v;
			} else if (strcmp(kv, "force-compression") == 0) {
				if (parse_bool(kv, eq + 1, &o->force_compression, err) < 0)
					return -err->code;
			} else
				return kiln_err_set(err, EINVAL, "output option '%s' is not supported yet", kv);
		}
	}
	if (strcmp(o->type, "registry") == 0) {
		/* buildx: type=registry is type=image,push=true */
		snprintf(o->type, sizeof(o->type), "image");
		o->push = true;
	}
	if (o->compression[0] || o->has_level || o->force_compression) {
		enum layer_compression c = LAYER_GZIP;

		if (o->compression[0])
			(void) layer_compression_parse(o->compression, &c);
		if (strcmp(o->type, "oci") != 0 && strcmp(o->type, "docker") != 0 &&
		    strcmp(o->type, "image") != 0)
			return kiln_err_set(err, EINVAL, "output options compression, compression-level and "
					    "force-compression are only for type=oci, docker or image");
		/* uncompressed has no level; BuildKit ignores one given with it */
		if (o->has_level && c != LAYER_NONE && !layer_level_valid(c, o->compression_level))
			return kiln_err_set(err, EINVAL, "compression-level=%d is out of range for %s (%s)",
					    o->compression_level, layer_compression_name(c),
					    c == LAYER_ZSTD ? "0-22" : "0-9");
	}
	if (strcmp(o->type, "image") == 0) {
		if (!o->push)
			return kiln_err_set(err, ENOTSUP, "type=image without push=true is not supported: "
					    "kiln keeps no local image store (add push=true)");
		return 0;
	}
	if (strcmp(o->type, "oci") != 0 && strcmp(o->type, "docker") != 0 &&
	    strcmp(o->type, "tar") != 0 && strcmp(o->type, "local") != 0)
		return kiln_err_set(err, EINVAL,
				    "output type '%s' is not supported (use oci, docker, tar, local or image)",
				    o->type);
	if (!o->tar && strcmp(o->type, "oci") != 0)
		return kiln_err_set(err, EINVAL, "output option tar=false is only for type=oci");
	if (o->oci_mediatypes >= 0 && strcmp(o->type, "oci") != 0 && strcmp(o->type, "docker") != 0)
		return kiln_err_set(err, EINVAL, "output option oci-mediatypes is only for type=oci, docker or image");
	if (!o->dest[0])
		return kiln_err_set(err, EINVAL, "output type %s needs dest=", o->type);
	return 0;
}

static int
load_named_context(const char *spec, const struct platform *plat, struct named_ctx *c,
		   struct kiln_err *err)
{
	const char *eq = strchr(spec, '=');
	_cleanup_free_ char *config = NULL;
	_cleanup_free_ char *manifest = NULL;
	struct oci_descriptor desc = { 0 };
	char path[4096];
	size_t len;
	char *p;
	int r;

	if (!eq || eq == spec)
		return kiln_err_set(err, EINVAL, "invalid --build-context '%s' (want NAME=VALUE)", spec);
	if (!kiln_startswith(eq + 1, "oci-layout://"))
		return kiln_err_set(err, ENOTSUP,
				    "--build-context '%s': only oci-layout://DIR[:TAG] is supported yet", spec);
	c->name = strndup(spec, (size_t) (eq - spec));
	c->dir = strdup(eq + 1 + strlen("oci-layout://"));
	if (!c->name || !c->dir)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if ((p = strchr(c->dir, '@'))) {
		*p = '\0';
		c->ref = strdup(p + 1);
	} else if ((p = strrchr(c->dir, ':')) && !strchr(p, '/')) {
		*p = '\0';
		c->ref = strdup(p + 1);
	}
	r = oci_layout_resolve(c->dir, c->ref, plat, &desc, err);
	if (r < 0)
		return kiln_err_wrap(err, "--build-context %s", c->name);
	oci_layout_blob_path(c->dir, &desc.digest, path, sizeof(path));
	oci_descriptor_release(&desc);
	r = kiln_read_file_at(AT_FDCWD, path, OCI_JSON_MAX, &manifest, &len);
	if (r < 0)
		return kiln_err_errno(err, -r, "read manifest '%s'", path);
	r = oci_manifest_parse(manifest, len, &c->man, err);
	if (r < 0)
		return kiln_err_wrap(err, "manifest of build context %s", c->name);
	oci_layout_blob_path(c->dir, &c->man.config.digest, path, sizeof(path));
	r = kiln_read_file_at(AT_FDCWD, path, OCI_JSON_MAX, &config, &c->config_len);
	if (r < 0)
		return kiln_err_errno(err, -r, "read image config '%s'", path);
	c->config = STEAL_PTR(config);
	return 0;
}

static void
named_ctx_release(struct named_ctx *c)
{
	free(c->name);
	free(c->dir);
	free(c->ref);
	free(c->config);
	oci_manifest_release(&c->man);
}

static int
cmp_entry_digest(const void *a, const void *b)
{
	return memcmp((*(const struct ctx_entry *const *) a)->digest.raw,
		      (*(const struct ctx_entry *const *) b)->digest.raw, DIGEST_RAW_LEN);
}

/* Where the bytes of a digest the worker asked for are on this machine.
 * Context files are looked up through an index sorted by digest, built on
 * first use: a large context asks for many blobs. */
static int
blob_source(struct session *s, const struct digest *d, char *buf, size_t size)
{
	if (!s->by_digest && s->ctx.n) {
		s->by_digest = calloc(s->ctx.n, sizeof(*s->by_digest));
		if (!s->by_digest)
			return -ENOMEM;
		for (size_t i = 0; i < s->ctx.n; i++)
			if (s->ctx.v[i].kind == 'f')
				s->by_digest[s->n_by_digest++] = &s->ctx.v[i];
		qsort(s->by_digest, s->n_by_digest, sizeof(*s->by_digest), cmp_entry_digest);
	}
	{
		struct ctx_entry key = { .digest = *d };
		const struct ctx_entry *kp = &key;
		const struct ctx_entry **hit = s->n_by_digest ?
			bsearch(&kp, s->by_digest, s->n_by_digest, sizeof(*s->by_digest), cmp_entry_digest) :
			NULL;

		if (hit) {
			snprintf(buf, size, "%s", (*hit)->abs);
			return 0;
		}
	}
	for (size_t i = 0; i < s->n_nctx; i++)
		for (size_t k = 0; k < s->nctx[i].man.n_layers; k++)
			if (digest_equal(&s->nctx[i].man.layers[k].digest, d))
				return oci_layout_blob_path(s->nctx[i].dir, d, buf, size);
	return -ENOENT;
}

static int
send_start(struct session *s, const struct opts *o, const char *dockerfile, size_t df_len,
	   const struct platform *plat, struct kiln_err *err)
{
	struct proto_writer w;
	msgpack_packer *pk;
	char ps[PLATFORM_STR_SIZE], ds[DIGEST_STR_SIZE];
	int r;

	proto_writer_init(&w, "build.start", conn_next_id(s->conn));
	proto_w_str(&w, "build", s->id);
	proto_w_strn(&w, "dockerfile", dockerfile, df_len);
	proto_w_str(&w, "filename", o->file ? o->file : "Dockerfile");
	proto_w_str(&w, "platform", platform_fmt(plat, ps));
	pk = proto_w_key(&w, "platforms");
	msgpack_pack_array(pk, s->n_plats);
	for (size_t i = 0; i < s->n_plats; i++)
		proto_pack_str(pk, platform_fmt(&s->plats[i], ps));
	if (o->no_cache)
		proto_w_bool(&w, "no_cache", true);
	if (o->n_no_cache_filter) {
		pk = proto_w_key(&w, "no_cache_filter");
		msgpack_pack_array(pk, o->n_no_cache_filter);
		for (size_t i = 0; i < o->n_no_cache_filter; i++)
			proto_pack_str(pk, o->no_cache_filter[i]);
	}
	proto_w_str(&w, "target", o->target);
	proto_w_str(&w, "tag", o->n_tags ? o->tags[0] : NULL);
	proto_w_str(&w, "output", strcmp(s->out.type, "oci") == 0 ? "oci" :
				  strcmp(s->out.type, "docker") == 0 ? "docker" :
				  strcmp(s->out.type, "image") == 0 ? "push" : "rootfs");
	if (s->out.oci_mediatypes >= 0)
		proto_w_bool(&w, "oci_mediatypes", s->out.oci_mediatypes == 1);
	if (s->out.compression[0])
		proto_w_str(&w, "compression", s->out.compression);
	if (s->out.has_level)
		proto_w_i64(&w, "compression_level", s->out.compression_level);
	if (s->out.force_compression)
		proto_w_bool(&w, "force_compression", true);
	if (s->out.rewrite_timestamp)
		proto_w_bool(&w, "rewrite_timestamp", true);
	if (strcmp(s->out.type, "image") == 0 || strcmp(s->out.type, "docker") == 0) {
		/* name= wins over -t, as in buildx; several names split on ','. */
		_cleanup_free_ char *names = strdup(s->out.name);
		char *save = NULL;
		size_t count = 0;

		for (size_t i = 0; !*s->out.name && i < o->n_tags; i++)
			count++;
		for (const char *c = s->out.name; *c; c++)
			count += *c == ',';
		count += *s->out.name ? 1 : 0;
		/* type=docker: the names become the archive's RepoTags. */
		pk = proto_w_key(&w, strcmp(s->out.type, "docker") == 0 ? "names" : "push");
		msgpack_pack_array(pk, count);
		if (*s->out.name) {
			for (char *n = strtok_r(names, ",", &save); n; n = strtok_r(NULL, ",", &save))
				proto_pack_str(pk, n);
		} else {
			for (size_t i = 0; i < o->n_tags; i++)
				proto_pack_str(pk, o->tags[i]);
		}
	}
	if (o->call[0])
		proto_w_str(&w, "call", o->call);
	if (ssh_agents_count(s->ssh)) {
		/* the ids only: which agents exist decides whether a step's
		 * mount is skipped; where they are stays here */
		pk = proto_w_key(&w, "ssh");
		msgpack_pack_array(pk, ssh_agents_count(s->ssh));
		for (size_t i = 0; i < ssh_agents_count(s->ssh); i++)
			proto_pack_str(pk, ssh_agents_id(s->ssh, i));
	}
	proto_w_i64(&w, "epoch", kiln_source_date_epoch());
	pk = proto_w_key(&w, "build_args");
	msgpack_pack_array(pk, o->n_args);
	for (size_t i = 0; i < o->n_args; i++) {
		const char *v = o->args[i];

		/* --build-arg NAME without a value takes it from the environment. */
		if (!strchr(v, '=') && getenv(v)) {
			_cleanup_free_ char *kv = kiln_strdupf("%s=%s", v, getenv(v));

			proto_pack_str(pk, kv ? kv : v);
		} else {
			proto_pack_str(pk, v);
		}
	}
	pk = proto_w_key(&w, "files");
	msgpack_pack_array(pk, s->ctx.n);
	for (size_t i = 0; i < s->ctx.n; i++) {
		const struct ctx_entry *e = &s->ctx.v[i];
		char k[2] = { e->kind, 0 };

		msgpack_pack_map(pk, 7);
		proto_pack_str(pk, "p");
		proto_pack_str(pk, e->path);
		proto_pack_str(pk, "k");
		proto_pack_str(pk, k);
		proto_pack_str(pk, "m");
		msgpack_pack_uint32(pk, e->mode);
		proto_pack_str(pk, "t");
		msgpack_pack_int64(pk, e->mtime);
		proto_pack_str(pk, "s");
		msgpack_pack_uint64(pk, e->size);
		proto_pack_str(pk, "d");
		proto_pack_str(pk, e->kind == 'f' ? digest_fmt(&e->digest, ds) : NULL);
		proto_pack_str(pk, "l");
		proto_pack_str(pk, e->link);
	}
	pk = proto_w_key(&w, "contexts");
	msgpack_pack_array(pk, s->n_nctx);
	for (size_t i = 0; i < s->n_nctx; i++) {
		const struct named_ctx *c = &s->nctx[i];

		msgpack_pack_map(pk, 3);
		proto_pack_str(pk, "name");
		proto_pack_str(pk, c->name);
		proto_pack_str(pk, "config");
		msgpack_pack_bin(pk, c->config_len);
		msgpack_pack_bin_body(pk, c->config, c->config_len);
		proto_pack_str(pk, "layers");
		msgpack_pack_array(pk, c->man.n_layers);
		for (size_t k = 0; k < c->man.n_layers; k++) {
			msgpack_pack_map(pk, 3);
			proto_pack_str(pk, "digest");
			proto_pack_str(pk, digest_fmt(&c->man.layers[k].digest, ds));
			proto_pack_str(pk, "size");
			msgpack_pack_uint64(pk, (uint64_t) c->man.layers[k].size);
			proto_pack_str(pk, "media_type");
			proto_pack_str(pk, c->man.layers[k].media_type);
		}
	}
	{
		size_t len;

		/* The coordinator drops a frame over the bound without a word;
		 * say so here instead of waiting for a reply that never comes.
		 * (The file list is not chunked yet.) */
		(void) proto_writer_data(&w, &len);
		if (len > PROTO_FRAME_MAX) {
			char a[32];

			proto_writer_release(&w);
			return kiln_err_set(err, E2BIG,
					    "the build request is %s (%zu context entries), over the %u MiB "
					    "message limit: exclude files with .dockerignore",
					    progress_size(len, a), s->ctx.n, PROTO_FRAME_MAX >> 20);
		}
	}
	r = conn_send(s->conn, &w, err);
	proto_writer_release(&w);
	return r;
}

/* Keep up to MAX_STREAMS blobs in flight, each within its credit. */
static int
pump_sends(struct session *s, struct kiln_err *err)
{
	for (;;) {
		bool progress = false;

		for (size_t i = 0; i < MAX_STREAMS; i++) {
			struct send *sd = &s->sends[i];
			struct proto_writer w;
			int r;

			if (!sd->tx && s->next_queue < s->n_queue) {
				const struct digest *d = &s->queue[s->next_queue++];
				char path[4096], ds[DIGEST_STR_SIZE];
				struct stat st;

				if (blob_source(s, d, path, sizeof(path)) < 0)
					return kiln_err_set(err, ENOENT, "worker asked for unknown blob %s",
							    digest_fmt(d, ds));
				if (stat(path, &st) < 0)
					return kiln_err_errno(err, errno, "stat '%s'", path);
				sd->stream = ++s->next_stream;
				r = xfer_tx_new_file(sd->stream, path, &sd->tx, err);
				if (r < 0)
					return r;
				proto_writer_init(&w, "blob.put", 0);
				proto_w_str(&w, "build", s->id);
				proto_w_u64(&w, "stream", sd->stream);
				proto_w_str(&w, "digest", digest_fmt(d, ds));
				proto_w_u64(&w, "size", (uint64_t) st.st_size);
				r = conn_send(s->conn, &w, err);
				proto_writer_release(&w);
				if (r < 0)
					return r;
				progress = true;
			}
			while (sd->tx && xfer_tx_ready(sd->tx)) {
				proto_writer_init(&w, "xfer.data", 0);
				proto_w_str(&w, "build", s->id);
				r = xfer_tx_next(sd->tx, &w, err);
				if (r == 0)
					r = conn_send(s->conn, &w, err);
				proto_writer_release(&w);
				if (r < 0)
					return r;
				progress = true;
			}
			if (sd->tx && xfer_tx_done(sd->tx)) {
				s->files_sent++;
				s->bytes_sent += xfer_tx_sent(sd->tx);
				xfer_tx_free(sd->tx);
				sd->tx = NULL;
				progress = true;
			}
		}
		if (!progress)
			break;
	}
	if (!s->synced && s->next_queue == s->n_queue) {
		bool busy = false;
		struct proto_writer w;
		char a[32];
		int r;

		for (size_t i = 0; i < MAX_STREAMS; i++)
			busy = busy || s->sends[i].tx;
		if (busy)
			return 0;
		s->synced = true;
		proto_writer_init(&w, "build.synced", 0);
		proto_w_str(&w, "build", s->id);
		r = conn_send(s->conn, &w, err);
		proto_writer_release(&w);
		/* later rounds (nodes that run other steps) are not the context load */
		if (!s->ctx_reported++) {
			progress_status(s->pr, s->v_ctx, "transferring context: %" PRIu64 " files %s done",
					s->files_sent, progress_size(s->bytes_sent, a));
			progress_done(s->pr, s->v_ctx, NULL);
		}
		return r;
	}
	return 0;
}

static int
on_need(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "digests");

	if (!a || a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "build.need without digests");
	/* one round per node that needs context files; each ends in build.synced */
	if (s->next_queue < s->n_queue || !s->synced) {
		if (s->n_queue || s->synced)
			return kiln_err_set(err, KILN_EPROTO, "build.need before the last round ended");
	}
	free(s->queue);
	s->queue = NULL;
	s->n_queue = s->next_queue = 0;
	s->synced = false;
	s->queue = calloc(a->via.array.size + 1, sizeof(*s->queue));
	if (!s->queue)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *o = &a->via.array.ptr[i];

		if (o->type != MSGPACK_OBJECT_STR ||
		    digest_parse_n(o->via.str.ptr, o->via.str.size, &s->queue[i]) < 0)
			return kiln_err_set(err, KILN_EPROTO, "build.need: bad digest");
	}
	s->n_queue = a->via.array.size;
	return pump_sends(s, err);
}

/* build.secrets.need: the secret ids the build's RUN steps mount. Each one
 * this client has goes back in a build.secrets message of its own (a value
 * is at most 500 KiB, a frame 4 MiB); ids it lacks are left out, and the
 * node decides (required or not). Nothing about a value is printed. */
static int
on_secrets_need(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "ids");
	_cleanup_free_ char *job = proto_msg_strdup(m, "job");

	if (!a || a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "build.secrets.need without ids");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *o = &a->via.array.ptr[i];
		const struct secret_src *src = NULL;
		struct proto_writer w;
		msgpack_packer *pk;
		char *value = NULL;
		size_t len = 0;
		int r;

		if (o->type != MSGPACK_OBJECT_STR)
			return kiln_err_set(err, KILN_EPROTO, "build.secrets.need: bad id");
		for (size_t k = s->n_secrets; k-- > 0 && !src; )
			if (strlen(s->secrets[k].id) == o->via.str.size &&
			    memcmp(s->secrets[k].id, o->via.str.ptr, o->via.str.size) == 0)
				src = &s->secrets[k];
		if (!src)
			continue;
		r = secret_src_read(src, &value, &len, err);
		if (r < 0)
			return r;
		proto_writer_init(&w, "build.secrets", 0);
		proto_w_str(&w, "build", s->id);
		if (job)
			proto_w_str(&w, "job", job);
		pk = proto_w_key(&w, "secrets");
		msgpack_pack_array(pk, 1);
		msgpack_pack_map(pk, 2);
		proto_pack_str(pk, "id");
		proto_pack_str(pk, src->id);
		proto_pack_str(pk, "value");
		msgpack_pack_bin(pk, len);
		msgpack_pack_bin_body(pk, value, len);
		secret_value_free(value, len);
		r = conn_send(s->conn, &w, err);
		proto_writer_wipe(&w);
		if (r < 0)
			return r;
	}
	/* the values for one job all went before this */
	{
		struct proto_writer w;
		int r;

		proto_writer_init(&w, "build.secrets.done", 0);
		proto_w_str(&w, "build", s->id);
		if (job)
			proto_w_str(&w, "job", job);
		r = conn_send(s->conn, &w, err);
		proto_writer_release(&w);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ssh.req {step, conn, ssh, data}: one agent request of a RUN step,
 * answered with ssh.resp {step, conn, data}, or {fail} when the agent
 * cannot be used; the step then sees its connection closed, and only
 * this terminal learns why (the reason names the socket). */
static int
on_ssh_req(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	_cleanup_free_ char *id = proto_msg_strdup(m, "ssh");
	_cleanup_free_ void *resp = NULL;
	struct kiln_err why = { 0 };
	struct proto_writer w;
	uint64_t step, conn;
	const void *data;
	size_t len, resp_len = 0;
	int r;

	if (!id || proto_msg_u64(m, "step", &step) < 0 || proto_msg_u64(m, "conn", &conn) < 0 ||
	    proto_msg_bin(m, "data", &data, &len) < 0)
		return kiln_err_set(err, KILN_EPROTO, "ssh.req without step, conn, ssh or data");
	r = ssh_agents_request(s->ssh, step, conn, id, data, len, &resp, &resp_len, &why);
	if (r < 0)
		fprintf(stderr, "WARNING: %s\n", why.msg);
	proto_writer_init(&w, "ssh.resp", 0);
	proto_w_str(&w, "build", s->id);
	proto_w_u64(&w, "step", step);
	proto_w_u64(&w, "conn", conn);
	if (r < 0)
		proto_w_bool(&w, "fail", true);
	else
		proto_w_bin(&w, "data", resp, resp_len);
	r = conn_send(s->conn, &w, err);
	proto_writer_release(&w);
	return r;
}

/* ssh.close {step[, conn]}: the step closed that connection, or ended. */
static int
on_ssh_close(struct session *s, const struct proto_msg *m)
{
	uint64_t step, conn = 0;
	bool all = proto_msg_u64(m, "conn", &conn) < 0;

	if (proto_msg_u64(m, "step", &step) == 0)
		ssh_agents_close(s->ssh, step, conn, all);
	return 0;
}

static int
on_credit(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	uint64_t stream;
	int r;

	if (proto_msg_u64(m, "stream", &stream) < 0)
		return kiln_err_set(err, KILN_EPROTO, "xfer.credit without stream");
	for (size_t i = 0; i < MAX_STREAMS; i++)
		if (s->sends[i].tx && s->sends[i].stream == stream) {
			r = xfer_tx_credit(s->sends[i].tx, m, err);
			if (r < 0)
				return r;
			return pump_sends(s, err);
		}
	return 0;                       /* credit for a finished stream */
}

static int
on_progress(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	_cleanup_free_ char *status = proto_msg_strdup(m, "status");
	_cleanup_free_ char *name = proto_msg_strdup(m, "name");
	uint64_t step, total;

	if (!status || proto_msg_u64(m, "step", &step) < 0 || proto_msg_u64(m, "total", &total) < 0 ||
	    total > 100000 || step >= total)
		return kiln_err_set(err, KILN_EPROTO, "malformed progress message");
	if (!s->step_v) {
		s->step_v = calloc(total, sizeof(int));
		s->step_names = calloc(total, sizeof(char *));
		if (!s->step_v || !s->step_names)
			return kiln_err_set(err, ENOMEM, "out of memory");
		s->n_steps = total;
	}
	if (total != s->n_steps)
		return kiln_err_set(err, KILN_EPROTO, "progress: step count changed");
	if ((strcmp(status, "start") == 0 || strcmp(status, "cached") == 0) && !s->step_v[step]) {
		_cleanup_free_ char *node = proto_msg_strdup(m, "node");
		bool emulated = false;

		(void) proto_msg_bool(m, "emulated", &emulated);
		s->step_v[step] = progress_start(s->pr, name ? name : "");
		if (node)
			progress_node(s->pr, s->step_v[step], node, emulated);
		free(s->step_names[step]);
		s->step_names[step] = STEAL_PTR(name);
		if (strcmp(status, "cached") == 0)
			progress_cached(s->pr, s->step_v[step]);
	} else if (strcmp(status, "start") == 0) {
		/* the step starts again elsewhere (its node was lost) */
		_cleanup_free_ char *node = proto_msg_strdup(m, "node");
		bool emulated = false;

		(void) proto_msg_bool(m, "emulated", &emulated);
		if (node)
			progress_node(s->pr, s->step_v[step], node, emulated);
	} else if (strcmp(status, "log") == 0) {
		const void *data;
		size_t len;

		if (proto_msg_bin(m, "data", &data, &len) == 0)
			progress_log(s->pr, s->step_v[step], data, len);
	} else if (strcmp(status, "done") == 0) {
		bool cached = false;

		(void) proto_msg_bool(m, "cached", &cached);
		if (cached)
			progress_cached(s->pr, s->step_v[step]);
		else
			progress_done(s->pr, s->step_v[step], NULL);
	}
	return 0;
}

/* The received tar is unpacked into dest (type=local, type=oci,tar=false)
 * rather than renamed to it. */
static bool
out_unpacks(const struct output *o)
{
	return strcmp(o->type, "local") == 0 || (strcmp(o->type, "oci") == 0 && !o->tar);
}

static int
on_output_begin(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	uint64_t stream, size;
	int fd;

	if (proto_msg_u64(m, "stream", &stream) < 0 || proto_msg_u64(m, "size", &size) < 0)
		return kiln_err_set(err, KILN_EPROTO, "output.begin without stream or size");
	if (s->rx)
		return kiln_err_set(err, KILN_EPROTO, "second output stream");
	if (out_unpacks(&s->out))
		s->out_tmp = kiln_strdupf("%s.kiln-tmp-XXXXXX", s->out.dest[0] ? s->out.dest : ".");
	else
		s->out_tmp = kiln_strdupf("%s.kiln-tmp-XXXXXX", s->out.dest);
	if (!s->out_tmp)
		return kiln_err_set(err, ENOMEM, "out of memory");
	fd = mkostemp(s->out_tmp, O_CLOEXEC);
	if (fd < 0)
		return kiln_err_errno(err, errno, "create output next to '%s'", s->out.dest);
	s->v_export = progress_start(s->pr, strcmp(s->out.type, "oci") == 0 ?
				     "exporting to oci image format" :
				     strcmp(s->out.type, "docker") == 0 ?
				     "exporting to docker image format" : "exporting to client");
	return xfer_rx_new_fd(stream, fd, size > OUTPUT_MAX ? OUTPUT_MAX : size, &s->rx, err);
}

static int
extract_local(const char *tar, const char *dest_in, struct kiln_err *err)
{
	/* Absolute and without "..": libarchive refuses ".." in any path. */
	_cleanup_free_ char *dest = NULL;
	struct archive *a = archive_read_new();
	struct archive *w = archive_write_disk_new();
	struct archive_entry *e;
	int r = 0;

	if (!a || !w) {
		archive_read_free(a);
		archive_write_free(w);
		return kiln_err_set(err, ENOMEM, "out of memory");
	}
	if (kiln_mkdir_p(dest_in, 0755) < 0 || !(dest = realpath(dest_in, NULL))) {
		r = kiln_err_errno(err, errno, "mkdir '%s'", dest_in);
		goto out;
	}
	archive_read_support_format_tar(a);
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
				       ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
				       (geteuid() == 0 ? ARCHIVE_EXTRACT_OWNER : 0));
	if (archive_read_open_filename(a, tar, 65536) != ARCHIVE_OK) {
		r = kiln_err_set(err, EIO, "read '%s': %s", tar, archive_error_string(a));
		goto out;
	}
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(e);
		_cleanup_free_ char *path = NULL;
		const char *hl = archive_entry_hardlink(e);
		_cleanup_free_ char *hpath = hl ? kiln_strdupf("%s/%s", dest, hl) : NULL;

		/* Entry names are joined to dest below, so libarchive's own
		 * absolute-path check cannot be used: refuse them here. */
		if (!name || name[0] == '/' || (hl && hl[0] == '/')) {
			r = kiln_err_set(err, EPERM, "output entry '%s' has an absolute path", name ? name : "");
			goto out;
		}
		path = kiln_strdupf("%s/%s", dest, name);
		if (!path || (hl && !hpath)) {
			r = kiln_err_set(err, ENOMEM, "out of memory");
			goto out;
		}
		archive_entry_set_pathname(e, path);
		if (hpath)
			archive_entry_set_hardlink(e, hpath);
		if (archive_write_header(w, e) != ARCHIVE_OK) {
			r = kiln_err_set(err, EIO, "extract '%s': %s", path, archive_error_string(w));
			goto out;
		}
		for (;;) {
			const void *buf;
			size_t len;
			la_int64_t off;
			int rr = archive_read_data_block(a, &buf, &len, &off);

			if (rr == ARCHIVE_EOF)
				break;
			if (rr != ARCHIVE_OK || archive_write_data_block(w, buf, len, off) != ARCHIVE_OK) {
				r = kiln_err_set(err, EIO, "extract '%s': %s", path, archive_error_string(w));
				goto out;
			}
		}
		archive_write_finish_entry(w);
	}
	r = r == ARCHIVE_EOF ? 0 : kiln_err_set(err, EIO, "read '%s': %s", tar, archive_error_string(a));
	if (r == 0 && archive_write_close(w) != ARCHIVE_OK)
		r = kiln_err_set(err, EIO, "finish '%s': %s", dest, archive_error_string(w));
out:
	archive_read_free(a);
	archive_write_free(w);
	return r;
}

static int
on_output_data(struct session *s, const struct proto_msg *m, struct kiln_err *err)
{
	struct proto_writer w;
	unsigned credit = 0;
	bool done = false;
	uint64_t stream = 0;
	int r;

	if (!s->rx)
		return kiln_err_set(err, KILN_EPROTO, "output data before output.begin");
	(void) proto_msg_u64(m, "stream", &stream);
	r = xfer_rx_data(s->rx, m, &credit, &done, err);
	if (r < 0)
		return r;
	if (credit && !done) {
		proto_writer_init(&w, "xfer.credit", 0);
		proto_w_str(&w, "build", s->id);
		xfer_write_credit(&w, stream, credit);
		r = conn_send(s->conn, &w, err);
		proto_writer_release(&w);
		if (r < 0)
			return r;
	}
	if (!done)
		return 0;
	xfer_rx_free(s->rx);            /* closes the fd */
	s->rx = NULL;
	if (out_unpacks(&s->out)) {
		r = extract_local(s->out_tmp, s->out.dest, err);
		(void) unlink(s->out_tmp);
		if (r < 0)
			return r;
	} else if (rename(s->out_tmp, s->out.dest) < 0) {
		return kiln_err_errno(err, errno, "rename to '%s'", s->out.dest);
	}
	free(s->out_tmp);
	s->out_tmp = NULL;
	return 0;
}

/* The answer to --call or kiln debug graph: printed on stdout. */
static int
on_call(struct session *s, const struct opts *o, const struct proto_msg *m, struct kiln_err *err)
{
	_cleanup_free_ char *call = proto_msg_strdup(m, "call");
	const char *data;
	size_t len;

	if (!call || strcmp(call, o->call) != 0 || proto_msg_strn(m, "data", &data, &len) < 0)
		return kiln_err_set(err, KILN_EPROTO, "malformed build.call answer");
	if (s->v_ctx && !s->synced)
		progress_done(s->pr, s->v_ctx, NULL);
	if (debug_render_call(stdout, call, o->call_format, data, len, err) < 0)
		return -err->code;
	if (fflush(stdout) != 0)
		return kiln_err_errno(err, errno, "write the %s", call);
	return 0;
}

static void
print_failure(struct session *s, const char *msg)
{
	const char *nl = strchr(msg, '\n');
	size_t failed = s->n_steps;

	for (size_t i = 0; i < s->n_steps; i++)
		if (s->step_v[i])
			failed = i;
	if (failed < s->n_steps && s->step_v[failed]) {
		progress_done(s->pr, s->step_v[failed], nl ? strndupa(msg, (size_t) (nl - msg)) : msg);
		if (nl && !progress_is_json(s->pr))
			fprintf(stderr, "------\n > %s:\n%s\n------\n", s->step_names[failed] ?
				s->step_names[failed] : "", nl + 1);
	}
	fprintf(stderr, "ERROR: failed to solve: %.*s\n", nl ? (int) (nl - msg) : (int) strlen(msg), msg);
}

static int
write_metadata(const char *path, const struct session *s, const struct proto_msg *m,
	       struct kiln_err *err)
{
	_cleanup_free_ char *md = proto_msg_strdup(m, "manifest_digest");
	_cleanup_free_ char *cd = proto_msg_strdup(m, "config_digest");
	_cleanup_free_ char *node = proto_msg_strdup(m, "node");
	uint64_t files = 0, bytes = 0, steps = 0, executed = 0, cached = 0, peer_files = 0, peer_bytes = 0;
	json_t *j;
	char *text;
	int r;

	(void) proto_msg_u64(m, "ctx_files", &files);
	(void) proto_msg_u64(m, "ctx_bytes", &bytes);
	(void) proto_msg_u64(m, "steps", &steps);
	(void) proto_msg_u64(m, "executed", &executed);
	(void) proto_msg_u64(m, "cached", &cached);
	(void) proto_msg_u64(m, "peer_files", &peer_files);
	(void) proto_msg_u64(m, "peer_bytes", &peer_bytes);
	j = json_pack("{s:s?, s:s?, s:s, s:s?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		      "containerimage.digest", md, "containerimage.config.digest", cd,
		      "kiln.build.ref", s->id, "kiln.node", node,
		      "kiln.context.files_received", (json_int_t) files,
		      "kiln.context.bytes_received", (json_int_t) bytes,
		      "kiln.context.files_sent", (json_int_t) s->files_sent,
		      "kiln.context.bytes_sent", (json_int_t) s->bytes_sent,
		      "kiln.steps", (json_int_t) steps,
		      "kiln.steps.executed", (json_int_t) executed,
		      "kiln.steps.cached", (json_int_t) cached,
		      "kiln.peers.files_moved", (json_int_t) peer_files,
		      "kiln.peers.bytes_moved", (json_int_t) peer_bytes);
	text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text)
		return kiln_err_set(err, ENOMEM, "out of memory");
	r = kiln_write_file_atomic(AT_FDCWD, path, text, strlen(text), 0644);
	free(text);
	if (r < 0)
		return kiln_err_errno(err, -r, "write metadata file '%s'", path);
	return 0;
}

static int
run_session(struct session *s, const struct opts *o, struct kiln_err *err)
{
	int lost = 0;

	for (;;) {
		struct proto_msg *m = NULL;
		const char *t;
		int r = conn_recv(s->conn, PING_EVERY_MS, &m, err);

		if (r == -ETIMEDOUT) {
			struct proto_writer w;

			if (++lost > PINGS_LOST_MAX)
				return kiln_err_set(err, ETIMEDOUT, "lost the connection to the coordinator at %s",
						    conn_endpoint(s->conn));
			kiln_err_clear(err);
			proto_writer_init(&w, "ping", conn_next_id(s->conn));
			r = conn_send(s->conn, &w, err);
			proto_writer_release(&w);
			if (r < 0)
				return r;
			continue;
		}
		if (r < 0)
			return r;
		lost = 0;
		/* the coordinator cancels builds whose client goes silent */
		if (kiln_now_ms() - s->last_ping_ms >= PING_EVERY_MS) {
			struct proto_writer w;

			s->last_ping_ms = kiln_now_ms();
			proto_writer_init(&w, "ping", conn_next_id(s->conn));
			r = conn_send(s->conn, &w, err);
			proto_writer_release(&w);
			if (r < 0) {
				proto_msg_free(m);
				return r;
			}
		}
		t = proto_msg_type(m);
		if (strcmp(t, "pong") == 0)
			r = 0;
		else if (strcmp(t, "build.secrets.need") == 0)
			r = on_secrets_need(s, m, err);
		else if (strcmp(t, "build.need") == 0)
			r = on_need(s, m, err);
		else if (strcmp(t, "ssh.req") == 0)
			r = on_ssh_req(s, m, err);
		else if (strcmp(t, "ssh.close") == 0)
			r = on_ssh_close(s, m);
		else if (strcmp(t, "xfer.credit") == 0)
			r = on_credit(s, m, err);
		else if (strcmp(t, "progress") == 0)
			r = on_progress(s, m, err);
		else if (strcmp(t, "output.begin") == 0)
			r = on_output_begin(s, m, err);
		else if (strcmp(t, "xfer.data") == 0)
			r = on_output_data(s, m, err);
		else if (strcmp(t, "build.error") == 0 || strcmp(t, "error") == 0) {
			_cleanup_free_ char *msg = proto_msg_strdup(m, "msg");
			uint64_t code = EIO;

			(void) proto_msg_u64(m, "code", &code);
			if (s->v_ctx && !s->synced)
				progress_done(s->pr, s->v_ctx, NULL);
			print_failure(s, msg ? msg : "build failed");
			kiln_err_set(err, (int) code, "%s", msg ? msg : "build failed");
			proto_msg_free(m);
			return -KILN_EBUILD;
		} else if (strcmp(t, "build.call") == 0) {
			r = on_call(s, o, m, err);
			s->finished = r == 0;
		} else if (strcmp(t, "build.done") == 0) {
			char ds[32];

			if (s->rx) {
				r = kiln_err_set(err, KILN_EPROTO, "build finished before its output arrived");
			} else {
				_cleanup_free_ char *md = proto_msg_strdup(m, "manifest_digest");

				if (strcmp(s->out.type, "image") == 0) {
					s->v_export = progress_start(s->pr, "exporting to image");
					progress_status(s->pr, s->v_export, "pushing layers done");
					progress_status(s->pr, s->v_export, "pushing manifest for %s@%s done",
							*s->out.name ? s->out.name : o->tags[0], md ? md : "");
					progress_done(s->pr, s->v_export, NULL);
					r = o->metadata ? write_metadata(o->metadata, s, m, err) : 0;
					s->finished = true;
					proto_msg_free(m);
					return r;
				}
				progress_status(s->pr, s->v_export, "exporting manifest %s done", md ? md : "");
				progress_status(s->pr, s->v_export, "sending output to %s done", s->out.dest);
				progress_done(s->pr, s->v_export, NULL);
				(void) ds;
				r = o->metadata ? write_metadata(o->metadata, s, m, err) : 0;
				s->finished = true;
			}
		} else
			r = 0;          /* newer message types are ignored */
		proto_msg_free(m);
		if (r < 0 || s->finished)
			return r;
	}
}

static void
session_release(struct session *s)
{
	for (size_t i = 0; i < MAX_STREAMS; i++)
		xfer_tx_free(s->sends[i].tx);
	xfer_rx_free(s->rx);
	if (s->out_tmp) {
		(void) unlink(s->out_tmp);
		free(s->out_tmp);
	}
	for (size_t i = 0; i < s->n_nctx; i++)
		named_ctx_release(&s->nctx[i]);
	free(s->nctx);
	for (size_t i = 0; i < s->n_secrets; i++)
		secret_src_release(&s->secrets[i]);
	free(s->secrets);
	ssh_agents_free(s->ssh);
	free(s->queue);
	free(s->step_v);
	for (size_t i = 0; i < s->n_steps && s->step_names; i++)
		free(s->step_names[i]);
	free(s->step_names);
	free(s->by_digest);
	context_release(&s->ctx);
	progress_free(s->pr);
	conn_free(s->conn);
}

static void
random_id(char out[33])
{
	unsigned char raw[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, raw, sizeof(raw)) != (ssize_t) sizeof(raw))
		memset(raw, (int) getpid(), sizeof(raw));
	if (fd >= 0)
		close(fd);
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", raw[i]);
}

static int
parse_opts(int argc, char **argv, struct opts *o, struct kiln_err *err)
{
	static const struct option lopts[] = {
		{ "file", required_argument, NULL, 'f' },
		{ "tag", required_argument, NULL, 't' },
		{ "platform", required_argument, NULL, 'p' },
		{ "build-arg", required_argument, NULL, 'a' },
		{ "build-context", required_argument, NULL, 'c' },
		{ "secret", required_argument, NULL, 'S' },
		{ "ssh", required_argument, NULL, 'K' },
		{ "target", required_argument, NULL, 'T' },
		{ "output", required_argument, NULL, 'o' },
		{ "progress", required_argument, NULL, 'P' },
		{ "metadata-file", required_argument, NULL, 'm' },
		{ "push", no_argument, NULL, 'U' },
		{ "no-cache", no_argument, NULL, 'N' },
		{ "no-cache-filter", required_argument, NULL, 'F' },
		{ "call", required_argument, NULL, 'C' },
		{ "print", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:t:o:h", lopts, NULL)) != -1) {
		const char **list = NULL;
		size_t *n = NULL;

		switch (c) {
		case 'f': o->file = optarg; break;
		case 't': list = o->tags; n = &o->n_tags; break;
		case 'p': list = o->platforms; n = &o->n_platforms; break;
		case 'N': o->no_cache = true; break;
		case 'F': list = o->no_cache_filter; n = &o->n_no_cache_filter; break;
		case 'a': list = o->args; n = &o->n_args; break;
		case 'c': list = o->contexts; n = &o->n_contexts; break;
		case 'S': list = o->secrets; n = &o->n_secrets; break;
		case 'K': list = o->ssh; n = &o->n_ssh; break;
		case 'T': o->target = optarg; break;
		case 'o': o->output = optarg; break;
		case 'P': o->progress = optarg; break;
		case 'm': o->metadata = optarg; break;
		case 'U': o->push = true; break;
		case 'C':
		case 'R':
			if (o->graph) {
				graph_usage(stderr);
				return kiln_err_set(err, EINVAL, "kiln debug graph has no --%s",
						    c == 'C' ? "call" : "print");
			}
			if (parse_call(optarg, o, err) < 0)
				return -EINVAL;
			break;
		case 'h': o->graph ? graph_usage(stdout) : usage(stdout); return 1;
		default:
			o->graph ? graph_usage(stderr) : usage(stderr);
			return kiln_err_set(err, EINVAL, "invalid arguments");
		}
		if (list) {
			if (*n == MAX_LIST)
				return kiln_err_set(err, E2BIG, "too many values for one flag");
			list[(*n)++] = optarg;
		}
	}
	if (optind != argc - 1) {
		o->graph ? graph_usage(stderr) : usage(stderr);
		return kiln_err_set(err, EINVAL, "\"kiln %s\" requires exactly 1 argument (the context PATH)",
				    o->graph ? "debug graph" : "build");
	}
	o->path = argv[optind];
	return 0;
}

static int
run(int argc, char **argv, struct builder *b, bool graph)
{
	struct opts o = { .graph = graph };
	struct session s = { 0 };
	struct kiln_err err = { 0 };
	struct platform plat;
	_cleanup_free_ char *df_path = NULL;
	_cleanup_free_ char *dockerfile = NULL;
	size_t df_len;
	int v, r;

	r = parse_opts(argc, argv, &o, &err);
	if (r != 0)
		return r > 0 ? 0 : (fprintf(stderr, "ERROR: %s\n", err.msg), 1);
	if (o.push) {
		if (o.output) {
			kiln_err_set(&err, EINVAL, "--push is short for -o type=image,push=true: give one of them");
			goto fail;
		}
		if (o.n_tags == 0) {
			kiln_err_set(&err, EINVAL, "--push needs a name to push to (-t NAME)");
			goto fail;
		}
		o.output = "type=image,push=true";
	}
	if (graph)
		snprintf(o.call, sizeof(o.call), "graph");
	if (o.call[0]) {
		/* nothing is built, so there is no output */
	} else if (!o.output) {
		fprintf(stderr, "WARNING: no output specified; the result stays on the builder's node "
			"(use -o type=oci,dest=FILE, type=tar,dest=FILE or type=local,dest=DIR)\n");
		o.output = "type=oci,dest=/dev/null";
	}
	if (!o.call[0] && parse_output(o.output, &s.out, &err) < 0)
		goto fail;
	if (o.n_platforms) {
		/* --platform a,b and --platform a --platform b, as buildx */
		for (size_t i = 0; i < o.n_platforms; i++) {
			_cleanup_free_ char *list = strdup(o.platforms[i]);
			char *save = NULL;

			if (!list) {
				kiln_err_set(&err, ENOMEM, "out of memory");
				goto fail;
			}
			for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				struct platform p;
				bool dup = false;

				if (platform_parse(t, &p) < 0) {
					kiln_err_set(&err, EINVAL, "invalid platform '%s'", t);
					goto fail;
				}
				for (size_t k = 0; k < s.n_plats && !dup; k++)
					dup = platform_equal(&s.plats[k], &p);
				if (!dup && s.n_plats < ARRAY_SIZE(s.plats))
					s.plats[s.n_plats++] = p;
			}
		}
		if (s.n_plats == 0) {
			kiln_err_set(&err, EINVAL, "--platform names no platform");
			goto fail;
		}
		plat = s.plats[0];
		if (s.n_plats > 1 && o.n_contexts) {
			kiln_err_set(&err, ENOTSUP, "--build-context with several platforms is not supported yet");
			goto fail;
		}
	} else {
		platform_host(&plat);
		s.plats[s.n_plats++] = plat;
	}
	s.pr = progress_new(o.progress, stderr);
	if (!s.pr) {
		kiln_err_set(&err, EINVAL, "invalid progress mode '%s' (auto, plain, tty, quiet, rawjson)", o.progress);
		goto fail;
	}
	df_path = o.file ? strdup(o.file) : kiln_strdupf("%s/Dockerfile", o.path);
	if (!df_path) {
		kiln_err_set(&err, ENOMEM, "out of memory");
		goto fail;
	}
	if (!progress_is_json(s.pr))
		fprintf(stderr, "#0 building with \"%s\" instance using %s driver\n\n", b->name,
			b->driver);
	v = progress_start(s.pr, "[internal] load build definition from Dockerfile");
	r = kiln_read_file_at(AT_FDCWD, df_path, 4u << 20, &dockerfile, &df_len);
	if (r < 0) {
		kiln_err_errno(&err, -r, "failed to read dockerfile '%s'", df_path);
		progress_done(s.pr, v, err.msg);
		goto fail;
	}
	{
		char a[32];

		progress_status(s.pr, v, "transferring dockerfile: %s done", progress_size(df_len, a));
	}
	progress_done(s.pr, v, NULL);
	s.nctx = calloc(o.n_contexts + 1, sizeof(*s.nctx));
	if (!s.nctx) {
		kiln_err_set(&err, ENOMEM, "out of memory");
		goto fail;
	}
	s.secrets = calloc(o.n_secrets + 1, sizeof(*s.secrets));
	if (!s.secrets) {
		kiln_err_set(&err, ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < o.n_secrets; i++) {
		if (secret_src_parse(o.secrets[i], &s.secrets[i], &err) < 0) {
			kiln_err_wrap(&err, "could not parse secrets: %s", o.secrets[i]);
			goto fail;
		}
		s.n_secrets++;
	}
	if (ssh_agents_new(o.ssh, o.n_ssh, &s.ssh, &err) < 0)
		goto fail;
	/* outline and targets read the Dockerfile alone */
	for (size_t i = 0; i < o.n_contexts && (!o.call[0] || graph); i++) {
		s.n_nctx++;
		if (load_named_context(o.contexts[i], &plat, &s.nctx[i], &err) < 0)
			goto fail;
	}
	if (!o.call[0] || graph) {
		r = context_scan(o.path, o.file, &s.ctx, &err);
		if (r == 0 && s.ctx.ignore_path) {
			char a[32];

			v = progress_start(s.pr, "[internal] load .dockerignore");
			progress_status(s.pr, v, "transferring context: %s done",
					progress_size(s.ctx.ignore_size, a));
			progress_done(s.pr, v, NULL);
		}
		s.v_ctx = progress_start(s.pr, "[internal] load build context");
		if (r < 0) {
			progress_done(s.pr, s.v_ctx, err.msg);
			goto fail;
		}
	}
	if (driver_connect(b, true, &s.conn, &err) < 0)
		goto fail;
	random_id(s.id);
	if (send_start(&s, &o, dockerfile, df_len, &plat, &err) < 0)
		goto fail;
	r = run_session(&s, &o, &err);
	if (r == -KILN_EBUILD) {
		session_release(&s);
		return 1;
	}
	if (r < 0)
		goto fail;
	session_release(&s);
	return 0;
fail:
	fprintf(stderr, "ERROR: %s\n", err.msg);
	session_release(&s);
	return 1;
}

int
build_main(int argc, char **argv, struct builder *b)
{
	return run(argc, argv, b, false);
}

int
build_graph_main(int argc, char **argv, struct builder *b)
{
	return run(argc, argv, b, true);
}
