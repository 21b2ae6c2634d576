/* kiln-worker: one build node. Connects a DEALER to the coordinator,
 * registers its platforms (native, and emulated ones read from
 * binfmt_misc), heartbeats, receives context blobs into its blob store, runs
 * jobs on threads and streams outputs back.
 *
 * The main thread owns the ZeroMQ socket and every piece of transfer state;
 * job threads only read their own struct job and send finished messages to
 * the main thread over an inproc PUSH/PULL pair, which forwards them. A
 * step's ssh agent relay (sshfwd, a thread per step) talks to the main
 * thread over an inproc DEALER/ROUTER pair instead, since its answers
 * (ssh.resp from the client) have to find their way back to it. */
#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cas.h"
#include "cleanup.h"
#include "confine.h"
#include "curve.h"
#include "digest.h"
#include "err.h"
#include "export.h"
#include "job.h"
#include "layer.h"
#include "log.h"
#include "oci.h"
#include "peer.h"
#include "platform.h"
#include "proto.h"
#include "qemu.h"
#include "registry.h"
#include "resources.h"
#include "sshfwd.h"
#include "util.h"
#include "xfer.h"

#define JOB_OUT_EP "inproc://kiln-job-out"
#define SSH_EP "inproc://kiln-ssh"
#define MAX_PLATFORMS 16
#define CTX_BLOB_MAX (8ull << 30)
#define CAPACITY_MAX 4096

struct wjob {
	struct wjob *next;
	char build[64];
	struct job job;
	pthread_t thread;
	bool running;
	bool ran;                      /* job_execute finished successfully */
	bool drop_when_done;           /* canceled while its thread ran */
	uint64_t ctx_files, ctx_bytes; /* context blobs received */
	/* export request, read by the thread */
	int export_kind;               /* 0 = none, 1 = oci, 2 = rootfs, 3 = push, 4 = docker,
					* 5 = rewrite layers (before an export) */
	struct export_rewrite *rewrites;
	size_t n_rewrites;
	char **push_refs;              /* push: image references; docker: RepoTags */
	size_t n_push_refs;
	char *mount_from;              /* push: where base layers can be mounted from */
	char *manifest_type;
	struct digest *children;       /* push: manifests an index names, pushed by digest first */
	char (*child_types)[128];
	size_t n_children;
	char *index_json;
	size_t index_len;
	struct digest *blobs;
	size_t n_blobs;
	char *out_path;
	struct xfer_tx *out_tx;
};

struct wrx {
	struct wrx *next;
	char build[64];
	uint64_t stream;
	struct xfer_rx *rx;
};

struct worker {
	char *name;
	char *state;
	char *cpuset;
	struct cas *cas;
	struct registry *reg;
	zsock_t *sock;
	zsock_t *jobs_in;
	zsock_t *ssh;                  /* ROUTER: the steps' ssh relays */
	struct platform native[MAX_PLATFORMS];
	size_t n_native;
	struct platform emulated[MAX_PLATFORMS];
	size_t n_emulated;
	unsigned capacity;
	struct wjob *jobs;
	struct wrx *rxs;
	struct peer_server *blobs;     /* NULL: not serving blobs to peers */
	struct peer_fetcher *fetch;
};

static volatile sig_atomic_t stop_requested;
/* The cgroup confine_apply() made, left and removed at exit (whichever
 * return from main that is). */
static struct confine *confinement;

static void
release_confinement(void)
{
	confine_free(STEAL_PTR(confinement));
}

/* --cpuset-cpus and --memory: affinity and a cgroup, before any thread
 * exists, so that every thread and child inherits them. */
static int
confine_worker(const char *name, const char *cpus_arg, const char *memory_arg,
	       struct kiln_err *err)
{
	struct confine_opts co = { .name = name, .cpus_arg = cpus_arg, .memory_arg = memory_arg };
	cpu_set_t cpus;
	int r;

	if (cpus_arg) {
		r = resources_parse_cpus(cpus_arg, &cpus, err);
		if (r < 0)
			return kiln_err_wrap(err, "--cpuset-cpus");
		co.cpus = &cpus;
	}
	if (memory_arg) {
		r = resources_parse_memory(memory_arg, &co.memory, err);
		if (r < 0)
			return kiln_err_wrap(err, "--memory");
	}
	r = confine_apply(&co, &confinement, err);
	if (r < 0)
		return r;
	if (confinement)
		(void) atexit(release_confinement);
	return 0;
}

static void
on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: kiln-worker --coordinator ENDPOINT [options]\n"
		"       kiln-worker --install-emulators [--binfmt-dir DIR]\n"
		"\n"
		"Runs one kiln build node: registers with the coordinator and executes steps.\n"
		"Without --coordinator, --install-emulators registers the emulators and exits.\n"
		"\n"
		"Options:\n"
		"  --coordinator EP     coordinator endpoint (ipc://PATH or tcp://HOST:PORT)\n"
		"  --name NAME          node name (default: hostname)\n"
		"  --state DIR          state directory (blob store, layers) (default: ./kiln-worker-state)\n"
		"  --platform P,...     platforms to serve (default: native + emulated from binfmt_misc)\n"
		"  --capacity N         concurrent steps (default: number of CPUs it may use)\n"
		"  --cpuset-cpus LIST   confine the worker and its steps to these CPUs (0-3, 0,2)\n"
		"  --memory SIZE        memory limit of the worker and its steps (512m, 2g; needs\n"
		"                       cgroup v2 at " CONFINE_CGROUP_ROOT ")\n"
		"  --server-key FILE    coordinator's public certificate (tcp:// only)\n"
		"  --key FILE           this worker's certificate, created if missing (tcp:// only)\n"
		"  --blob-listen EP     serve blobs to peers here (default: ipc:// in the state dir\n"
		"                       for an ipc:// coordinator, tcp://127.0.0.1:0 for tcp://)\n"
		"  --peer-allow DIR     public certs of the nodes that may fetch blobs (tcp:// only)\n"
		"  --heartbeat MS       heartbeat interval (default: 1000)\n"
		"  --pidfile FILE       write the process id here\n"
		"  --install-emulators  register qemu-user-static's emulators in binfmt_misc\n"
		"                       (flag F; mounts binfmt_misc if needed; keeps existing ones)\n"
		"  --binfmt-dir DIR     binfmt_misc to use (default: " QEMU_BINFMT_DIR ")\n"
		"  -h, --help           show this help\n");
}

/* Emulators registered in binfmt_misc that are enabled. */
static void
detect_emulated(struct worker *w)
{
	_cleanup_closedir_ DIR *d = opendir("/proc/sys/fs/binfmt_misc");
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) && w->n_emulated < MAX_PLATFORMS) {
		_cleanup_free_ char *path = NULL;
		_cleanup_free_ char *body = NULL;
		struct platform p;
		size_t len;
		bool dup = false;

		if (platform_from_qemu(de->d_name, &p) < 0)
			continue;
		path = kiln_strdupf("/proc/sys/fs/binfmt_misc/%s", de->d_name);
		if (!path || kiln_read_file_at(AT_FDCWD, path, 65536, &body, &len) < 0)
			continue;
		if (!kiln_startswith(body, "enabled"))
			continue;
		for (size_t i = 0; i < w->n_native; i++)
			dup = dup || platform_equal(&w->native[i], &p);
		for (size_t i = 0; i < w->n_emulated; i++)
			dup = dup || platform_equal(&w->emulated[i], &p);
		if (!dup)
			w->emulated[w->n_emulated++] = p;
	}
}

static int
setup_platforms(struct worker *w, const char *list, struct kiln_err *err)
{
	struct platform host, want[MAX_PLATFORMS], emu[MAX_PLATFORMS];
	size_t n_emu;
	int n;

	platform_host(&host);
	w->native[0] = host;
	w->n_native = 1;
	detect_emulated(w);
	if (!list)
		return 0;
	n = platform_parse_list(list, want, MAX_PLATFORMS);
	if (n < 0)
		return kiln_err_set(err, EINVAL, "bad --platform '%s'", list);
	/* Serve exactly what was asked, each natively when the host is that
	 * platform, else only when an emulator is registered for it. */
	memcpy(emu, w->emulated, sizeof(emu));
	n_emu = w->n_emulated;
	w->n_native = w->n_emulated = 0;
	for (int i = 0; i < n; i++) {
		bool found = false;
		char s[PLATFORM_STR_SIZE];

		if (platform_equal(&want[i], &host)) {
			w->native[w->n_native++] = want[i];
			continue;
		}
		for (size_t k = 0; k < n_emu; k++)
			found = found || platform_equal(&emu[k], &want[i]);
		if (!found)
			return kiln_err_set(err, ENOTSUP,
					    "platform %s is neither native nor emulated here "
					    "(no binfmt_misc handler)", platform_fmt(&want[i], s));
		w->emulated[w->n_emulated++] = want[i];
	}
	return 0;
}

static void
pack_platforms(struct proto_writer *pw, const char *key, const struct platform *p, size_t n)
{
	msgpack_packer *pk = proto_w_key(pw, key);
	char s[PLATFORM_STR_SIZE];

	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		proto_pack_str(pk, platform_fmt(&p[i], s));
}

static unsigned
running_jobs(const struct worker *w)
{
	unsigned n = 0;

	for (const struct wjob *j = w->jobs; j; j = j->next)
		n += j->running;
	return n;
}

static void
send_register(struct worker *w)
{
	struct proto_writer pw;

	proto_writer_init(&pw, "worker.register", 0);
	proto_w_str(&pw, "name", w->name);
	pack_platforms(&pw, "platforms", w->native, w->n_native);
	pack_platforms(&pw, "emulated", w->emulated, w->n_emulated);
	proto_w_u64(&pw, "capacity", w->capacity);
	proto_w_u64(&pw, "load", running_jobs(w));
	proto_w_str(&pw, "blob_endpoint", w->blobs ? peer_server_endpoint(w->blobs) : "");
	proto_w_str(&pw, "blob_key", w->blobs ? peer_server_key(w->blobs) : "");
	(void) proto_send(w->sock, NULL, &pw);
	proto_writer_release(&pw);
}

static void
send_heartbeat(struct worker *w)
{
	struct proto_writer pw;

	proto_writer_init(&pw, "worker.hb", 0);
	proto_w_str(&pw, "name", w->name);
	proto_w_u64(&pw, "load", running_jobs(w));
	(void) proto_send(w->sock, NULL, &pw);
	proto_writer_release(&pw);
}

static void
send_build_error(struct worker *w, const char *build, const struct kiln_err *e)
{
	struct proto_writer pw;

	proto_writer_init(&pw, "job.error", 0);
	proto_w_str(&pw, "build", build);
	proto_w_u64(&pw, "code", (uint64_t) e->code);
	proto_w_str(&pw, "msg", e->msg);
	(void) proto_send(w->sock, NULL, &pw);
	proto_writer_release(&pw);
}

static struct wjob *
job_find(struct worker *w, const char *build, bool create)
{
	struct wjob *j;

	for (j = w->jobs; j; j = j->next)
		if (strcmp(j->build, build) == 0)
			return j;
	if (!create || strlen(build) >= sizeof(j->build))
		return NULL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	snprintf(j->build, sizeof(j->build), "%s", build);
	snprintf(j->job.build, sizeof(j->job.build), "%s", build);
	j->job.state = w->state;
	j->job.cas = w->cas;
	j->job.epoch = -1;
	j->job.cpuset = w->cpuset;
	j->job.reg = w->reg;
	j->job.ssh_ep = SSH_EP;
	j->next = w->jobs;
	w->jobs = j;
	return j;
}

static void
job_drop(struct worker *w, struct wjob *j)
{
	for (struct wjob **p = &w->jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	if (j->running)
		pthread_join(j->thread, NULL);
	job_release(&j->job);
	free(j->rewrites);
	free(j->index_json);
	free(j->blobs);
	op_strv_free(j->push_refs, j->n_push_refs);
	free(j->mount_from);
	free(j->manifest_type);
	free(j->children);
	free(j->child_types);
	if (j->out_path) {
		(void) unlink(j->out_path);
		free(j->out_path);
	}
	xfer_tx_free(j->out_tx);
	free(j);
}

/* ---- job threads ---- */

static void
thread_emit(void *ctx, struct proto_writer *pw)
{
	(void) proto_send(ctx, NULL, pw);
}

/* Push the image: every blob but the manifest (blobs[0]), then the
 * manifest under each reference. Layers of a base image from the same
 * registry are mounted rather than uploaded. */
static int
push_image(struct wjob *j, struct registry *reg, struct kiln_err *err)
{
	_cleanup_free_ char *manifest = NULL;
	size_t len;
	int r;

	if (!reg)
		return kiln_err_set(err, ENOTSUP, "this node has no registry client");
	r = cas_get(j->job.cas, &j->blobs[0], OCI_JSON_MAX, &manifest, &len, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < j->n_push_refs; i++) {
		struct registry_ref ref, base;
		struct registry_push_opts po = { 0 };
		char ds[DIGEST_STR_SIZE];

		r = registry_ref_parse(j->push_refs[i], &ref, err);
		if (r < 0)
			return kiln_err_wrap(err, "push '%s'", j->push_refs[i]);
		if (j->mount_from && registry_ref_parse(j->mount_from, &base, NULL) == 0 &&
		    strcmp(base.domain, ref.domain) == 0 && strcmp(base.path, ref.path) != 0)
			po.mount_from = base.path;
		for (size_t k = 1; k < j->n_blobs; k++) {
			r = registry_push_blob(reg, &ref, j->job.cas, &j->blobs[k], &po, NULL, err);
			if (r < 0)
				return kiln_err_wrap(err, "push blob %s to '%s'", digest_fmt(&j->blobs[k], ds),
						     j->push_refs[i]);
		}
		for (size_t k = 0; k < j->n_children; k++) {
			_cleanup_free_ char *child = NULL;
			struct registry_ref cref = ref;
			size_t clen;

			r = cas_get(j->job.cas, &j->children[k], OCI_JSON_MAX, &child, &clen, err);
			if (r < 0)
				return r;
			cref.has_digest = true;
			cref.digest = j->children[k];
			cref.tag[0] = '\0';
			r = registry_put_manifest(reg, &cref, j->child_types[k], child, clen, NULL, err);
			if (r < 0)
				return kiln_err_wrap(err, "push manifest %s to '%s'",
						     digest_fmt(&j->children[k], ds), j->push_refs[i]);
		}
		r = registry_put_manifest(reg, &ref, j->manifest_type ? j->manifest_type : OCI_MT_MANIFEST,
					  manifest, len, NULL, err);
		if (r < 0)
			return kiln_err_wrap(err, "push manifest to '%s'", j->push_refs[i]);
	}
	return 0;
}

/* layers: [{digest, diff_id, size, media_type}] of the rewritten blobs,
 * in the order job.rewrite asked for them. */
static void
pack_rewritten(struct proto_writer *pw, const struct wjob *j)
{
	msgpack_packer *pk = proto_w_key(pw, "layers");
	char ds[DIGEST_STR_SIZE];

	msgpack_pack_array(pk, j->n_rewrites);
	for (size_t i = 0; i < j->n_rewrites; i++) {
		const struct export_rewrite *x = &j->rewrites[i];

		msgpack_pack_map(pk, 4);
		proto_pack_str(pk, "digest");
		proto_pack_str(pk, digest_fmt(&x->out.digest, ds));
		proto_pack_str(pk, "diff_id");
		proto_pack_str(pk, digest_fmt(&x->out.diff_id, ds));
		proto_pack_str(pk, "size");
		msgpack_pack_uint64(pk, x->out.size);
		proto_pack_str(pk, "media_type");
		proto_pack_str(pk, layer_compression_media_type(x->comp, true));
	}
}

static void *
job_thread(void *arg)
{
	struct wjob *j = arg;
	zsock_t *out = zsock_new_push(">" JOB_OUT_EP);
	struct proto_writer pw;
	struct kiln_err err = { 0 };
	int r = 0;

	if (!out)
		return NULL;
	if (j->export_kind == 0) {
		r = job_execute(&j->job, thread_emit, out, &err);
		proto_writer_init(&pw, r < 0 ? "job.error" : "job.done", 0);
		proto_w_str(&pw, "build", j->build);
		if (r < 0) {
			proto_w_u64(&pw, "code", (uint64_t) err.code);
			proto_w_str(&pw, "msg", err.msg);
		} else {
			proto_w_u64(&pw, "ctx_files", j->ctx_files);
			proto_w_u64(&pw, "ctx_bytes", j->ctx_bytes);
		}
	} else if (j->export_kind == 5) {
		r = export_rewrite_layers(j->job.cas, j->rewrites, j->n_rewrites, &err);
		proto_writer_init(&pw, r < 0 ? "job.error" : "job.rewritten", 0);
		proto_w_str(&pw, "build", j->build);
		if (r < 0) {
			proto_w_u64(&pw, "code", (uint64_t) err.code);
			proto_w_str(&pw, "msg", err.msg);
		} else {
			pack_rewritten(&pw, j);
		}
	} else if (j->export_kind == 3) {
		r = push_image(j, j->job.reg, &err);
		proto_writer_init(&pw, r < 0 ? "job.error" : "job.exported", 0);
		proto_w_str(&pw, "build", j->build);
		if (r < 0) {
			proto_w_u64(&pw, "code", (uint64_t) err.code);
			proto_w_str(&pw, "msg", err.msg);
		}
	} else {
		_cleanup_close_ int fd = open(j->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fd < 0)
			r = kiln_err_errno(&err, errno, "create '%s'", j->out_path);
		else if (j->export_kind == 1)
			r = export_oci_tar(j->job.cas, j->index_json, j->index_len, j->blobs, j->n_blobs,
					   j->job.epoch, fd, &err);
		else if (j->export_kind == 4)
			r = export_docker_tar(j->job.cas, j->index_json, j->index_len, j->blobs, j->n_blobs,
					      (const char *const *) j->push_refs, j->n_push_refs,
					      j->job.epoch, fd, &err);
		else
			r = layer_write_rootfs_tar((const char *const *) j->job.stack,
						   (unsigned) j->job.n_stack, fd, j->job.epoch, &err);
		proto_writer_init(&pw, r < 0 ? "job.error" : "out.ready", 0);
		proto_w_str(&pw, "build", j->build);
		if (r < 0) {
			proto_w_u64(&pw, "code", (uint64_t) err.code);
			proto_w_str(&pw, "msg", err.msg);
		}
	}
	(void) proto_send(out, NULL, &pw);
	proto_writer_release(&pw);
	zsock_destroy(&out);
	return NULL;
}

static int
start_thread(struct wjob *j, struct kiln_err *err)
{
	int r = pthread_create(&j->thread, NULL, job_thread, j);

	if (r != 0)
		return kiln_err_errno(err, r, "start job thread");
	j->running = true;
	return 0;
}

/* ---- messages from the coordinator ---- */

static int
on_job_have(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	const msgpack_object *ds = proto_msg_get(m, "digests");
	struct proto_writer pw;
	msgpack_packer *pk;
	uint32_t n_missing = 0;
	bool *missing;

	if (!ds || ds->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "job.have without digests");
	if (!job_find(w, build, true))
		return kiln_err_set(err, ENOMEM, "out of memory");
	missing = calloc(ds->via.array.size + 1, sizeof(bool));
	if (!missing)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < ds->via.array.size; i++) {
		const msgpack_object *o = &ds->via.array.ptr[i];
		struct digest d;

		if (o->type != MSGPACK_OBJECT_STR || digest_parse_n(o->via.str.ptr, o->via.str.size, &d) < 0) {
			free(missing);
			return kiln_err_set(err, KILN_EPROTO, "job.have: bad digest");
		}
		missing[i] = !cas_has(w->cas, &d);
		n_missing += missing[i];
	}
	proto_writer_init(&pw, "job.missing", proto_msg_id(m));
	proto_w_str(&pw, "build", build);
	pk = proto_w_key(&pw, "digests");
	msgpack_pack_array(pk, n_missing);
	for (uint32_t i = 0; i < ds->via.array.size; i++)
		if (missing[i])
			msgpack_pack_object(pk, ds->via.array.ptr[i]);
	free(missing);
	(void) proto_send(w->sock, NULL, &pw);
	proto_writer_release(&pw);
	return 0;
}

static int
on_blob_put(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	_cleanup_free_ char *ds = proto_msg_strdup(m, "digest");
	uint64_t stream, size;
	struct digest d;
	struct wrx *x;
	int r;

	if (!ds || digest_parse(ds, &d) < 0 || proto_msg_u64(m, "stream", &stream) < 0 ||
	    proto_msg_u64(m, "size", &size) < 0)
		return kiln_err_set(err, KILN_EPROTO, "blob.put: missing digest, stream or size");
	if (size > CTX_BLOB_MAX)
		return kiln_err_set(err, EFBIG, "blob %s is too large", ds);
	x = calloc(1, sizeof(*x));
	if (!x)
		return kiln_err_set(err, ENOMEM, "out of memory");
	snprintf(x->build, sizeof(x->build), "%s", build);
	x->stream = stream;
	r = xfer_rx_new_cas(stream, w->cas, &d, size, &x->rx, err);
	if (r < 0) {
		free(x);
		return r;
	}
	x->next = w->rxs;
	w->rxs = x;
	return 0;
}

static void
rx_drop(struct worker *w, struct wrx *x)
{
	for (struct wrx **p = &w->rxs; *p; p = &(*p)->next)
		if (*p == x) {
			*p = x->next;
			break;
		}
	xfer_rx_free(x->rx);
	free(x);
}

static int
on_xfer_data(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	struct proto_writer pw;
	unsigned credit = 0;
	bool done = false;
	uint64_t stream;
	struct wrx *x;
	int r;

	if (proto_msg_u64(m, "stream", &stream) < 0)
		return kiln_err_set(err, KILN_EPROTO, "xfer.data without stream");
	for (x = w->rxs; x; x = x->next)
		if (x->stream == stream && strcmp(x->build, build) == 0)
			break;
	if (!x)
		return kiln_err_set(err, KILN_EPROTO, "xfer.data for unknown stream %" PRIu64, stream);
	r = xfer_rx_data(x->rx, m, &credit, &done, err);
	if (r < 0) {
		rx_drop(w, x);
		return r;
	}
	if (credit && !done) {
		proto_writer_init(&pw, "xfer.credit", 0);
		proto_w_str(&pw, "build", build);
		xfer_write_credit(&pw, stream, credit);
		(void) proto_send(w->sock, NULL, &pw);
		proto_writer_release(&pw);
	}
	if (done) {
		struct wjob *j = job_find(w, build, false);

		if (j) {
			j->ctx_files++;
			j->ctx_bytes += xfer_rx_received(x->rx);
		}
		rx_drop(w, x);
	}
	return 0;
}

static int
on_job_run(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	const msgpack_object *ops = proto_msg_get(m, "ops");
	struct wjob *j = job_find(w, build, true);
	_cleanup_free_ char *comp = proto_msg_strdup(m, "compression");
	int64_t epoch = -1, level = LAYER_LEVEL_DEFAULT;
	int r;

	if (!j)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (j->running || j->job.ops)
		return kiln_err_set(err, EBUSY, "build %s is already running here", build);
	if (!ops || ops->type != MSGPACK_OBJECT_ARRAY || ops->via.array.size == 0)
		return kiln_err_set(err, KILN_EPROTO, "job.run without ops");
	(void) proto_msg_i64(m, "epoch", &epoch);
	j->job.epoch = epoch;
	{
		/* the client's --ssh ids; its sockets never come here */
		const msgpack_object *ids = proto_msg_get(m, "ssh");

		for (uint32_t i = 0; ids && ids->type == MSGPACK_OBJECT_ARRAY && i < ids->via.array.size; i++) {
			_cleanup_free_ char *id = proto_obj_strdup(&ids->via.array.ptr[i]);

			if (!id || op_add_arg(&j->job.ssh_ids, &j->job.n_ssh_ids, id) < 0)
				return kiln_err_set(err, KILN_EPROTO, "job.run: bad ssh id");
		}
	}
	/* Absent: gzip at kiln's level, as before the options existed. */
	j->job.compression = LAYER_GZIP;
	if (comp && layer_compression_parse(comp, &j->job.compression) < 0)
		return kiln_err_set(err, KILN_EPROTO, "job.run: unknown compression '%s'", comp);
	(void) proto_msg_i64(m, "compression_level", &level);
	if (level < INT_MIN || level > INT_MAX || !layer_level_valid(j->job.compression, (int) level))
		return kiln_err_set(err, EINVAL, "job.run: compression level %" PRId64 " is out of range for %s",
				    level, layer_compression_name(j->job.compression));
	j->job.compression_level = (int) level;
	j->job.ops = calloc(ops->via.array.size, sizeof(struct op));
	if (!j->job.ops)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < ops->via.array.size; i++) {
		r = op_unpack(&ops->via.array.ptr[i], &j->job.ops[i], err);
		if (r < 0)
			return kiln_err_wrap(err, "step %u", i);
		j->job.n_ops++;
	}
	return start_thread(j, err);
}

/* build.secrets {secrets: [{id, value}]}: values for the job's secret
 * mounts, kept in memory for job_execute (which zeroes them when the ops
 * end). They come before job.run; never logged, never written to the state
 * dir, and errors name the id only. */
static int
on_build_secrets(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	const msgpack_object *a = proto_msg_get(m, "secrets");
	struct wjob *j = job_find(w, build, true);

	if (!j)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (j->running || j->job.ops)
		return kiln_err_set(err, EBUSY, "build.secrets for build %s after job.run", build);
	if (!a || a->type != MSGPACK_OBJECT_ARRAY)
		return kiln_err_set(err, KILN_EPROTO, "build.secrets without secrets");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *e = &a->via.array.ptr[i];
		const msgpack_object *id = e->type == MSGPACK_OBJECT_MAP ? proto_obj_get(e, "id") : NULL;
		const msgpack_object *v = e->type == MSGPACK_OBJECT_MAP ? proto_obj_get(e, "value") : NULL;
		int r;

		if (!id || id->type != MSGPACK_OBJECT_STR || !v || v->type != MSGPACK_OBJECT_BIN)
			return kiln_err_set(err, KILN_EPROTO, "build.secrets: entry %u is malformed", i);
		r = job_add_secret(&j->job, id->via.str.ptr, id->via.str.size, v->via.bin.ptr,
				   v->via.bin.size, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ssh.resp {build, step, conn, data | fail}: an agent's answer from the
 * client, to the relay of that step (gone already: ZeroMQ drops it). */
static int
on_ssh_resp(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	char route[SSHFWD_ROUTE_SIZE];
	struct proto_writer pw;
	zframe_t *rid;
	uint64_t step, conn;
	const void *data = NULL;
	size_t len = 0;
	bool fail = false;

	if (proto_msg_u64(m, "step", &step) < 0 || proto_msg_u64(m, "conn", &conn) < 0)
		return kiln_err_set(err, KILN_EPROTO, "ssh.resp without step or conn");
	(void) proto_msg_bool(m, "fail", &fail);
	if (!fail && proto_msg_bin(m, "data", &data, &len) < 0)
		fail = true;
	sshfwd_route(build, step, route);
	rid = zframe_new(route, strlen(route));
	if (!rid)
		return kiln_err_set(err, ENOMEM, "out of memory");
	proto_writer_init(&pw, "ssh.resp", 0);
	proto_w_u64(&pw, "conn", conn);
	if (fail)
		proto_w_bool(&pw, "fail", true);
	else
		proto_w_bin(&pw, "data", data, len);
	/* a relay that is gone (or full) is not an error: its step ended */
	(void) proto_send(w->ssh, rid, &pw);
	proto_writer_release(&pw);
	zframe_destroy(&rid);
	return 0;
}

/* A message from a step's ssh relay (ssh.req, ssh.close): to the
 * coordinator as is. */
static void
handle_ssh(struct worker *w)
{
	zmsg_t *msg = zmsg_recv(w->ssh);
	zframe_t *rid = msg ? zmsg_pop(msg) : NULL;

	zframe_destroy(&rid);
	if (msg && zmsg_size(msg) == 1)
		(void) zmsg_send(&msg, w->sock);
	zmsg_destroy(&msg);
}

#define REWRITES_MAX 4096

/* job.rewrite {layers: [{digest, compression, level?, epoch}]}: layers the
 * coordinator wants in another form before it makes the manifest (see
 * export_rewrite). Runs on the job's thread; answered by job.rewritten. */
static int
on_job_rewrite(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	struct wjob *j = job_find(w, build, false);
	const msgpack_object *a = proto_msg_get(m, "layers");

	if (!j || !j->ran)
		return kiln_err_set(err, ENOENT, "build %s has no finished job here", build);
	if (j->running)
		return kiln_err_set(err, EBUSY, "build %s is busy", build);
	if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0 ||
	    a->via.array.size > REWRITES_MAX)
		return kiln_err_set(err, KILN_EPROTO, "job.rewrite without layers (1 to %d)", REWRITES_MAX);
	free(j->rewrites);
	j->n_rewrites = 0;
	j->rewrites = calloc(a->via.array.size, sizeof(*j->rewrites));
	if (!j->rewrites)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < a->via.array.size; i++) {
		const msgpack_object *o = &a->via.array.ptr[i];
		struct export_rewrite *x = &j->rewrites[i];
		_cleanup_free_ char *d = NULL;
		_cleanup_free_ char *comp = NULL;
		int64_t level = LAYER_LEVEL_DEFAULT, epoch = -1;

		if (o->type != MSGPACK_OBJECT_MAP)
			return kiln_err_set(err, KILN_EPROTO, "job.rewrite: layer %u is not a map", i);
		d = proto_obj_get_strdup(o, "digest");
		comp = proto_obj_get_strdup(o, "compression");
		(void) proto_obj_get_i64(o, "level", &level);
		(void) proto_obj_get_i64(o, "epoch", &epoch);
		if (!d || digest_parse(d, &x->src) < 0 || !comp ||
		    layer_compression_parse(comp, &x->comp) < 0 || level < INT_MIN || level > INT_MAX ||
		    !layer_level_valid(x->comp, (int) level))
			return kiln_err_set(err, KILN_EPROTO, "job.rewrite: layer %u is malformed", i);
		if (!cas_has(w->cas, &x->src))
			return kiln_err_set(err, ENOENT, "job.rewrite: blob %s is not here", d);
		x->level = (int) level;
		x->epoch = epoch < 0 ? -1 : epoch;
		j->n_rewrites++;
	}
	j->export_kind = 5;
	return start_thread(j, err);
}

static int
on_job_export(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	struct wjob *j = job_find(w, build, false);
	_cleanup_free_ char *kind = proto_msg_strdup(m, "kind");
	const msgpack_object *blobs = proto_msg_get(m, "put");
	const char *ix;
	size_t ix_len;
	int r;

	if (!j || !j->ran)
		return kiln_err_set(err, ENOENT, "build %s has no finished job here", build);
	if (j->running)
		return kiln_err_set(err, EBUSY, "build %s is busy", build);
	if (!kind || (strcmp(kind, "oci") != 0 && strcmp(kind, "rootfs") != 0 && strcmp(kind, "push") != 0 &&
		      strcmp(kind, "docker") != 0))
		return kiln_err_set(err, KILN_EPROTO, "job.export: unknown kind");
	j->export_kind = strcmp(kind, "oci") == 0 ? 1 : strcmp(kind, "rootfs") == 0 ? 2 :
			 strcmp(kind, "push") == 0 ? 3 : 4;
	if (j->export_kind == 4) {
		/* docker: refs are the RepoTags, possibly none */
		const msgpack_object *refs = proto_msg_get(m, "refs");

		for (uint32_t i = 0; refs && refs->type == MSGPACK_OBJECT_ARRAY && i < refs->via.array.size; i++) {
			_cleanup_free_ char *s = proto_obj_strdup(&refs->via.array.ptr[i]);

			if (!s || op_add_arg(&j->push_refs, &j->n_push_refs, s) < 0)
				return kiln_err_set(err, KILN_EPROTO, "job.export: bad ref");
		}
	}
	if (j->export_kind == 3) {
		const msgpack_object *refs = proto_msg_get(m, "refs");

		if (!refs || refs->type != MSGPACK_OBJECT_ARRAY || refs->via.array.size == 0)
			return kiln_err_set(err, KILN_EPROTO, "job.export push without refs");
		for (uint32_t i = 0; i < refs->via.array.size; i++) {
			_cleanup_free_ char *s = proto_obj_strdup(&refs->via.array.ptr[i]);

			if (!s || op_add_arg(&j->push_refs, &j->n_push_refs, s) < 0)
				return kiln_err_set(err, KILN_EPROTO, "job.export: bad ref");
		}
		j->mount_from = proto_msg_strdup(m, "mount_from");
		j->manifest_type = proto_msg_strdup(m, "manifest_media_type");
		{
			const msgpack_object *ch = proto_msg_get(m, "children");
			uint32_t nc = ch && ch->type == MSGPACK_OBJECT_ARRAY ? ch->via.array.size : 0;

			j->children = calloc(nc + 1, sizeof(*j->children));
			j->child_types = calloc(nc + 1, sizeof(*j->child_types));
			if (!j->children || !j->child_types)
				return kiln_err_set(err, ENOMEM, "out of memory");
			for (uint32_t i = 0; i < nc; i++) {
				_cleanup_free_ char *d = proto_obj_get_strdup(&ch->via.array.ptr[i], "digest");
				_cleanup_free_ char *mt = proto_obj_get_strdup(&ch->via.array.ptr[i], "media_type");

				if (!d || !mt || digest_parse(d, &j->children[i]) < 0 ||
				    strlen(mt) >= sizeof(j->child_types[i]))
					return kiln_err_set(err, KILN_EPROTO, "job.export: bad child manifest");
				snprintf(j->child_types[i], sizeof(j->child_types[i]), "%s", mt);
				j->n_children++;
			}
		}
	}
	/* Small blobs the coordinator made (config, manifest) arrive inline. */
	if (blobs && blobs->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < blobs->via.array.size; i++) {
			const msgpack_object *b = &blobs->via.array.ptr[i];

			if (b->type != MSGPACK_OBJECT_BIN)
				return kiln_err_set(err, KILN_EPROTO, "job.export: put[%u] is not bin", i);
			r = cas_put(w->cas, b->via.bin.ptr, b->via.bin.size, NULL, NULL, NULL, err);
			if (r < 0)
				return r;
		}
	}
	if (j->export_kind != 2) {
		const msgpack_object *ds = proto_msg_get(m, "blobs");

		if (proto_msg_strn(m, "index", &ix, &ix_len) < 0 || !ds || ds->type != MSGPACK_OBJECT_ARRAY)
			return kiln_err_set(err, KILN_EPROTO, "job.export oci without index or blobs");
		free(j->index_json);
		j->index_json = strndup(ix, ix_len);
		j->index_len = ix_len;
		free(j->blobs);
		j->n_blobs = 0;
		j->blobs = calloc(ds->via.array.size + 1, sizeof(struct digest));
		if (!j->index_json || !j->blobs)
			return kiln_err_set(err, ENOMEM, "out of memory");
		for (uint32_t i = 0; i < ds->via.array.size; i++) {
			const msgpack_object *o = &ds->via.array.ptr[i];

			if (o->type != MSGPACK_OBJECT_STR ||
			    digest_parse_n(o->via.str.ptr, o->via.str.size, &j->blobs[i]) < 0)
				return kiln_err_set(err, KILN_EPROTO, "job.export: bad blob digest");
			if (!cas_has(w->cas, &j->blobs[i]))
				return kiln_err_set(err, ENOENT, "job.export: blob %.*s is not here",
						    (int) o->via.str.size, o->via.str.ptr);
			j->n_blobs++;
		}
	}
	free(j->out_path);
	j->out_path = kiln_strdupf("%s/tmp/out-%s", w->state, build);
	if (!j->out_path)
		return kiln_err_set(err, ENOMEM, "out of memory");
	{
		/* a node that ran no step yet has no tmp/ */
		_cleanup_free_ char *tmp = kiln_strdupf("%s/tmp", w->state);

		if (!tmp || kiln_mkdir_p(tmp, 0700) < 0)
			return kiln_err_errno(err, tmp ? errno : ENOMEM, "create '%s/tmp'", w->state);
	}
	return start_thread(j, err);
}

static void
pump_output(struct worker *w, struct wjob *j)
{
	struct kiln_err err = { 0 };

	while (j->out_tx && xfer_tx_ready(j->out_tx)) {
		struct proto_writer pw;
		int r;

		proto_writer_init(&pw, "xfer.data", 0);
		proto_w_str(&pw, "build", j->build);
		r = xfer_tx_next(j->out_tx, &pw, &err);
		if (r == 0)
			(void) proto_send(w->sock, NULL, &pw);
		proto_writer_release(&pw);
		if (r < 0) {
			send_build_error(w, j->build, &err);
			job_drop(w, j);
			return;
		}
	}
	if (j->out_tx && xfer_tx_done(j->out_tx)) {
		struct proto_writer pw;

		proto_writer_init(&pw, "job.exported", 0);
		proto_w_str(&pw, "build", j->build);
		(void) proto_send(w->sock, NULL, &pw);
		proto_writer_release(&pw);
		job_drop(w, j);
	}
}

static int
on_xfer_credit(struct worker *w, struct proto_msg *m, const char *build, struct kiln_err *err)
{
	struct wjob *j = job_find(w, build, false);
	int r;

	if (!j || !j->out_tx)
		return 0;               /* late credit for a finished stream */
	r = xfer_tx_credit(j->out_tx, m, err);
	if (r < 0)
		return r;
	pump_output(w, j);
	return 0;
}

static void
handle_coordinator(struct worker *w)
{
	struct proto_msg *m = NULL;
	_cleanup_free_ char *build = NULL;
	struct kiln_err err = { 0 };
	const char *t;
	int r;

	r = proto_recv(w->sock, NULL, &m, &err);
	if (r < 0) {
		log_error_err(&err, "bad message from coordinator, ignoring");
		return;
	}
	t = proto_msg_type(m);
	/* A client's answer to build.secrets.need names the job it is for. */
	build = proto_msg_strdup(m, strcmp(t, "build.secrets") == 0 && proto_msg_get(m, "job") ? "job" : "build");
	if (strcmp(t, "worker.reregister") == 0) {
		log_info("coordinator does not know this node, registering again");
		send_register(w);
		r = 0;
	} else if (strcmp(t, "worker.ack") == 0 || strcmp(t, "pong") == 0) {
		r = 0;
	} else if (strcmp(t, "error") == 0) {
		_cleanup_free_ char *msg = proto_msg_strdup(m, "msg");

		log_warn("coordinator: %s", msg ? msg : "(no message)");
		r = 0;
	} else if (!build || strlen(build) >= 64) {
		r = kiln_err_set(&err, KILN_EPROTO, "message '%s' without build", t);
	} else if (strcmp(t, "job.have") == 0) {
		r = on_job_have(w, m, build, &err);
	} else if (strcmp(t, "blob.put") == 0) {
		r = on_blob_put(w, m, build, &err);
	} else if (strcmp(t, "xfer.data") == 0) {
		r = on_xfer_data(w, m, build, &err);
	} else if (strcmp(t, "xfer.credit") == 0) {
		r = on_xfer_credit(w, m, build, &err);
	} else if (strcmp(t, "build.secrets") == 0) {
		r = on_build_secrets(w, m, build, &err);
	} else if (strcmp(t, "ssh.resp") == 0) {
		r = on_ssh_resp(w, m, build, &err);
	} else if (strcmp(t, "job.run") == 0) {
		r = on_job_run(w, m, build, &err);
	} else if (strcmp(t, "job.rewrite") == 0) {
		r = on_job_rewrite(w, m, build, &err);
	} else if (strcmp(t, "job.export") == 0) {
		r = on_job_export(w, m, build, &err);
	} else if (strcmp(t, "blob.fetch") == 0) {
		r = peer_fetcher_submit(w->fetch, m, &err);
	} else if (strcmp(t, "job.cancel") == 0) {
		struct wjob *j = job_find(w, build, false);

		/* A running job is stopped (its step killed) and dropped when
		 * its thread ends; the loop never waits for a step. */
		if (j && j->running) {
			pid_t pid = atomic_load(&j->job.run_pid);

			atomic_store(&j->job.canceled, true);
			if (pid > 0)
				(void) kill(pid, SIGKILL);
			j->drop_when_done = true;
		} else if (j) {
			job_drop(w, j);
		}
		r = 0;
	} else {
		r = kiln_err_set(&err, KILN_EPROTO, "unknown message type '%s'", t);
	}
	if (r < 0) {
		log_error_err(&err, "%s build=%s", t, build ? build : "-");
		if (build && strlen(build) < 64)
			send_build_error(w, build, &err);
	}
	if (strcmp(t, "build.secrets") == 0)
		proto_msg_wipe(m);      /* job_add_secret made the only copies we keep */
	proto_msg_free(m);
}

/* A finished message from a job thread: note what it means for the job,
 * then pass it on. */
static void
handle_job_output(struct worker *w)
{
	zmsg_t *msg = zmsg_recv(w->jobs_in);
	struct proto_msg *m = NULL;
	_cleanup_free_ char *build = NULL;
	struct kiln_err err = { 0 };
	zframe_t *f;
	struct wjob *j;
	const char *t;

	if (!msg)
		return;
	f = zmsg_first(msg);
	if (!f || proto_decode(zframe_data(f), zframe_size(f), &m, &err) < 0) {
		zmsg_destroy(&msg);
		return;
	}
	t = proto_msg_type(m);
	build = proto_msg_strdup(m, "build");
	j = build ? job_find(w, build, false) : NULL;
	if (j && (strcmp(t, "job.done") == 0 || strcmp(t, "job.error") == 0 ||
		  strcmp(t, "out.ready") == 0 || strcmp(t, "job.exported") == 0 ||
		  strcmp(t, "job.rewritten") == 0)) {
		pthread_join(j->thread, NULL);
		j->running = false;
		if (strcmp(t, "job.done") == 0)
			j->ran = true;
		if (j->drop_when_done) {
			/* canceled: the coordinator forgot it already */
			job_drop(w, j);
			zmsg_destroy(&msg);
			proto_msg_free(m);
			return;
		}
	}
	if (j && strcmp(t, "out.ready") == 0) {
		struct proto_writer pw;
		struct stat st;

		if (stat(j->out_path, &st) < 0 || xfer_tx_new_file(1, j->out_path, &j->out_tx, &err) < 0) {
			if (!err.code)
				kiln_err_errno(&err, errno, "stat '%s'", j->out_path);
			send_build_error(w, j->build, &err);
			job_drop(w, j);
		} else {
			proto_writer_init(&pw, "output.begin", 0);
			proto_w_str(&pw, "build", j->build);
			proto_w_u64(&pw, "stream", 1);
			proto_w_u64(&pw, "size", (uint64_t) st.st_size);
			(void) proto_send(w->sock, NULL, &pw);
			proto_writer_release(&pw);
			pump_output(w, j);
		}
		zmsg_destroy(&msg);
		proto_msg_free(m);
		return;
	}
	if (j && (strcmp(t, "job.error") == 0 || strcmp(t, "job.exported") == 0))
		job_drop(w, j);
	(void) zmsg_send(&msg, w->sock);
	proto_msg_free(m);
}

/* A blob.fetch.done from the fetch thread, passed on as it is. */
static void
forward_fetch_done(struct worker *w)
{
	zmsg_t *msg = zmsg_recv(peer_fetcher_sock(w->fetch));

	if (msg)
		(void) zmsg_send(&msg, w->sock);
	zmsg_destroy(&msg);
}

/* The blob server for peers and the fetcher, each on its own thread (see
 * peer.h). On tcp:// the server needs the allow-list: without --peer-allow
 * a node serves no blobs (and says so) unless --blob-listen asked for it,
 * which is then an error. */
static int
start_blob_service(struct worker *w, const char *coordinator, const char *listen, const char *allow,
		   const char *key, struct kiln_err *err)
{
	struct peer_server_opts so = { .endpoint = listen, .key = key, .allow_dir = allow };
	struct peer_fetcher_opts fo = { .key = key };
	char ep[PEER_ENDPOINT_MAX];
	int r;

	if (!listen) {
		r = peer_default_endpoint(coordinator, w->state, ep, sizeof(ep), err);
		if (r < 0)
			return r;
		so.endpoint = ep;
	}
	if (key) {
		r = curve_ensure_cert(key, err);
		if (r < 0)
			return r;
	}
	if (kiln_startswith(so.endpoint, "tcp://") && !allow && !listen) {
		log_warn("not serving blobs to peers: tcp:// needs --peer-allow DIR");
	} else {
		r = peer_server_start(w->cas, &so, &w->blobs, err);
		if (r < 0)
			return r;
		log_info("serving blobs to peers on %s", peer_server_endpoint(w->blobs));
	}
	r = peer_fetcher_new(w->cas, &fo, &w->fetch, err);
	if (r < 0) {
		peer_server_free(w->blobs);
		w->blobs = NULL;
	}
	return r;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "coordinator", required_argument, NULL, 'c' },
		{ "name", required_argument, NULL, 'n' },
		{ "state", required_argument, NULL, 's' },
		{ "platform", required_argument, NULL, 'p' },
		{ "capacity", required_argument, NULL, 'C' },
		{ "cpuset-cpus", required_argument, NULL, 'U' },
		{ "memory", required_argument, NULL, 'M' },
		{ "server-key", required_argument, NULL, 'S' },
		{ "key", required_argument, NULL, 'k' },
		{ "heartbeat", required_argument, NULL, 'H' },
		{ "pidfile", required_argument, NULL, 'P' },
		{ "blob-listen", required_argument, NULL, 'L' },
		{ "peer-allow", required_argument, NULL, 'A' },
		{ "install-emulators", no_argument, NULL, 'E' },
		{ "binfmt-dir", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *endpoint = NULL, *platforms = NULL, *server_key = NULL, *key = NULL;
	const char *pidfile = NULL, *binfmt_dir = QEMU_BINFMT_DIR;
	const char *capacity = NULL, *memory = NULL;
	const char *blob_listen = NULL, *peer_allow = NULL;
	bool install_emulators = false;
	struct worker w = { 0 };
	struct kiln_err err = { 0 };
	char host[256] = "worker";
	int64_t hb_ms = 1000, next_hb;
	zpoller_t *poller;
	zactor_t *monitor = NULL;
	bool auth_logged = false;
	_cleanup_free_ char *cas_dir = NULL;
	int c, r;

	kiln_log_init("kiln-worker");
	w.state = "kiln-worker-state";
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': endpoint = optarg; break;
		case 'n': w.name = optarg; break;
		case 's': w.state = optarg; break;
		case 'p': platforms = optarg; break;
		case 'C': capacity = optarg; break;
		case 'U': w.cpuset = optarg; break;
		case 'M': memory = optarg; break;
		case 'S': server_key = optarg; break;
		case 'k': key = optarg; break;
		case 'H': hb_ms = strtoll(optarg, NULL, 10); break;
		case 'P': pidfile = optarg; break;
		case 'L': blob_listen = optarg; break;
		case 'A': peer_allow = optarg; break;
		case 'E': install_emulators = true; break;
		case 'B': binfmt_dir = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if ((!endpoint && !install_emulators) || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (capacity) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(capacity, &end, 10);
		if (errno || end == capacity || *end || capacity[0] < '0' || capacity[0] > '9' ||
		    v == 0 || v > CAPACITY_MAX) {
			log_error("--capacity: invalid value '%s': expected a number of steps from 1 to %d",
				  capacity, CAPACITY_MAX);
			return 2;
		}
		w.capacity = (unsigned) v;
	}
	if (install_emulators) {
		/* Before the platforms are detected, so that a node started
		 * with the flag serves what it just registered. */
		r = qemu_install_at(binfmt_dir, &err);
		if (r < 0)
			return log_error_err(&err, "install emulators"), 1;
		log_info("%d emulator(s) registered", r);
		if (!endpoint)
			return 0;
	}
	if (!w.name) {
		(void) gethostname(host, sizeof(host) - 1);
		w.name = host;
	}
	r = confine_worker(w.name, w.cpuset, memory, &err);
	if (r < 0)
		return log_error_err(&err, "node '%s'", w.name), 1;
	/* A node stands for a machine of the size it is given: by default it
	 * runs as many steps at once as it has CPUs. */
	if (w.capacity == 0)
		w.capacity = confine_cpu_count();
	if (hb_ms < 50)
		hb_ms = 50;
	r = setup_platforms(&w, platforms, &err);
	if (r < 0)
		return log_error_err(&err, "platforms"), 1;
	r = kiln_mkdir_p(w.state, 0700);
	cas_dir = kiln_strdupf("%s/cas", w.state);
	if (r < 0 || !cas_dir) {
		log_error("cannot create state directory '%s'", w.state);
		return 1;
	}
	r = cas_open(cas_dir, &w.cas, &err);
	if (r < 0)
		return log_error_err(&err, "open blob store"), 1;
	{
		struct registry_opts ro = { 0 };

		if (registry_new(&ro, &w.reg, &err) < 0)
			log_error_err(&err, "registry client, pulling images is off");
	}
	if (pidfile && kiln_write_pidfile(pidfile) < 0) {
		log_error("cannot write pidfile '%s'", pidfile);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	zsys_handler_set(NULL);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	w.sock = zsock_new(ZMQ_DEALER);
	w.jobs_in = zsock_new_pull("@" JOB_OUT_EP);
	w.ssh = zsock_new(ZMQ_ROUTER);
	if (w.ssh) {
		/* a relay's answers must not block the main thread */
		zsock_set_sndtimeo(w.ssh, 0);
		if (zsock_bind(w.ssh, SSH_EP) < 0)
			zsock_destroy(&w.ssh);
	}
	if (!w.sock || !w.jobs_in || !w.ssh) {
		log_error("cannot create sockets");
		return 1;
	}
	zsock_set_sndhwm(w.sock, 0);
	zsock_set_rcvhwm(w.sock, 0);
	zsock_set_maxmsgsize(w.sock, PROTO_FRAME_MAX + 1024);
	/* While the coordinator is unreachable (or refuses our key) a DEALER
	 * has no pipe and a send would block forever; drop the message
	 * instead: heartbeats repeat and a build fails on its own. */
	zsock_set_sndtimeo(w.sock, 2000);
	if (kiln_startswith(endpoint, "tcp://")) {
		if (!server_key || !key) {
			log_error("tcp:// needs --server-key and --key (CurveZMQ)");
			return 2;
		}
		r = curve_ensure_cert(key, &err);
		if (r == 0)
			r = curve_client_apply(w.sock, server_key, key, &err);
		if (r < 0)
			return log_error_err(&err, "curve"), 1;
	}
	if (kiln_startswith(endpoint, "tcp://")) {
		/* Tell the operator why nothing happens when the coordinator
		 * refuses this node's key. Attached before connecting: libzmq
		 * does not retry a handshake the server refused, so the one
		 * event must not be missed. */
		monitor = zactor_new(zmonitor, w.sock);
		if (monitor) {
			/* czmq only knows the handshake events under ALL. */
			zstr_sendx(monitor, "LISTEN", "ALL", NULL);
			zstr_send(monitor, "START");
			zsock_wait(monitor);
		}
	}
	/* Returning from main with an actor still running aborts in czmq's
	 * shutdown: stop them on the way out. */
	r = start_blob_service(&w, endpoint, blob_listen, peer_allow, key, &err);
	if (r < 0) {
		zactor_destroy(&monitor);
		return log_error_err(&err, "blob service"), 1;
	}
	if (zsock_connect(w.sock, "%s", endpoint) < 0) {
		log_error("cannot connect to '%s'", endpoint);
		peer_fetcher_free(w.fetch);
		peer_server_free(w.blobs);
		zactor_destroy(&monitor);
		return 1;
	}
	send_register(&w);
	log_info("node '%s' connecting to %s", w.name, endpoint);
	next_hb = kiln_now_ms() + hb_ms;
	poller = zpoller_new(w.sock, w.jobs_in, w.ssh, NULL);
	if (monitor)
		zpoller_add(poller, monitor);
	zpoller_add(poller, peer_fetcher_sock(w.fetch));
	while (!stop_requested) {
		int64_t now = kiln_now_ms();
		void *which = zpoller_wait(poller, (int) (next_hb > now ? next_hb - now : 0));

		if (which == w.sock)
			handle_coordinator(&w);
		else if (which == w.jobs_in)
			handle_job_output(&w);
		else if (which == peer_fetcher_sock(w.fetch))
			forward_fetch_done(&w);
		else if (which == w.ssh)
			handle_ssh(&w);
		else if (monitor && which == monitor) {
			zmsg_t *ev = zmsg_recv(monitor);
			char *name = ev ? zmsg_popstr(ev) : NULL;

			if (name && strcmp(name, "HANDSHAKE_FAILED_AUTH") == 0 && !auth_logged) {
				log_error("coordinator %s refused this node's key (%s): add it to the "
					  "coordinator's allow-list with kiln-coordinator --keys DIR --allow CERT",
					  endpoint, key);
				auth_logged = true;
			}
			free(name);
			zmsg_destroy(&ev);
		} else if (zpoller_terminated(poller))
			break;
		if (kiln_now_ms() >= next_hb) {
			send_heartbeat(&w);
			next_hb = kiln_now_ms() + hb_ms;
		}
	}
	log_info("stopping");
	zpoller_destroy(&poller);
	zactor_destroy(&monitor);
	while (w.jobs)
		job_drop(&w, w.jobs);
	while (w.rxs)
		rx_drop(&w, w.rxs);
	peer_fetcher_free(w.fetch);
	peer_server_free(w.blobs);
	zsock_destroy(&w.jobs_in);
	zsock_destroy(&w.ssh);
	zsock_destroy(&w.sock);
	registry_free(w.reg);
	cas_free(w.cas);
	if (pidfile)
		(void) unlink(pidfile);
	return 0;
}
