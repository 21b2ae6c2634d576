/* Private to the coordinator's build modules: build.c (sessions and
 * messages), build-solve.c (solver, jobs, scheduling, failure),
 * build-export.c (configs, manifests, indexes, layer rewrites) and
 * build-request.c (decoding build.start, planning). See build.h for the
 * message flow. */
#ifndef KILN_BUILD_INTERNAL_H
#define KILN_BUILD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <czmq.h>
#include <msgpack.h>

#include "cache.h"
#include "digest.h"
#include "layer.h"
#include "nodes.h"
#include "plan.h"
#include "platform.h"
#include "solver.h"

struct kiln_err;
struct proto_msg;
struct registry;

#define DOCKERFILE_MAX (4u << 20)
#define MAX_TARGETS 16
#define CLIENT_SILENCE_MS 5000       /* clients ping every second */
#define SSH_STEP_SPAN 65536u
#define MAX_REFS 70                  /* what one op reads: input, from, mounts */

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

/* build-solve.c */
int op_refs(const struct op *op, int refs[], size_t max);
struct sjob * job_new(struct build *b, size_t ti);
bool stage_filtered(const struct build *b, const struct target *t, int op);
void publish(struct builds *bs, const struct digest *key, const struct solver_rec *rec);
void job_drop(struct builds *bs, struct sjob *j, bool cancel);
bool build_has_jobs(const struct build *b);
void build_unlink(struct builds *bs, struct build *b);
void build_end(struct builds *bs, struct build *b);
void build_fail(struct builds *bs, struct build *b, const struct kiln_err *err);
size_t job_boundaries(const struct sjob *j, int *out, size_t max);
const struct solver_rec * boundary_rec(const struct sjob *j, int which);
void dispatch(struct builds *bs);
void advance(struct build *b);
void round_done(struct builds *bs, struct build *b);
void job_try_run(struct builds *bs, struct sjob *j);
void on_job_missing(struct builds *bs, struct sjob *j, const struct proto_msg *m);
void on_fetch_done(struct builds *bs, struct sjob *j, const struct proto_msg *m);
void build_reset(struct builds *bs, struct build *b);

/* build-export.c */
int start_rewrite(struct build *b, struct sjob *j, struct kiln_err *err);
int apply_rewritten(struct build *b, struct sjob *j, const struct proto_msg *m, struct kiln_err *err);
void start_export(struct builds *bs, struct build *b);
void send_export(struct builds *bs, struct sjob *j);

/* build-request.c */
int read_compression(struct build *b, const struct proto_msg *m, struct kiln_err *err);
int read_strv(const struct proto_msg *m, const char *key, char ***ret, size_t *ret_n, struct kiln_err *err);
int start_plan(struct build *b, const struct proto_msg *m, const struct platform *platform,
	   const struct platform *build_platform, struct plan **ret, struct kiln_err *err);
const struct platform * build_platform_for(struct builds *bs, const struct platform *p);
void answer_call(struct builds *bs, struct build *b, const struct proto_msg *m, const char *call);
int target_init(struct build *b, struct target *t, struct kiln_err *err);

/* build.c */
void job_free(struct sjob *j);
void build_free(struct build *b);
void job_unlink(struct builds *bs, struct sjob *j);
void send_job_cancel(struct sjob *j);
void send_error(const struct peer *to, const char *type, const char *build, uint64_t id,
	   const struct kiln_err *err);
void send_progress(struct build *b, size_t ti, size_t step, const char *status, const struct node *n,
	      bool emulated, const void *data, size_t len);
void note_node(struct build *b, const struct node *n);
int read_layer_obj(const msgpack_object *l, struct solver_layer *ret);

#endif
