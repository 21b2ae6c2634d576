/* Executing one build job on a worker: a list of ops applied one on top of
 * the other (see shared/op.h). Runs on its own thread; everything it has to
 * say (step start, logs, results, errors) goes out through emit, which the
 * caller routes to the coordinator. RUN steps execute through kiln-run. */
#ifndef KILN_JOB_H
#define KILN_JOB_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "layer.h"
#include "op.h"

struct kiln_err;
struct cas;
struct proto_writer;
struct registry;

/* Called with a finished message; the callee sends it and releases nothing. */
typedef void (*job_emit_fn)(void *ctx, struct proto_writer *w);

struct job {
	char build[64];
	const char *state;            /* borrowed: the worker's state dir */
	struct cas *cas;              /* borrowed */
	int64_t epoch;                /* SOURCE_DATE_EPOCH or -1 */
	enum layer_compression compression;   /* of the layers the job makes */
	int compression_level;        /* LAYER_LEVEL_DEFAULT or a valid level */
	char *cpuset;                 /* borrowed; NULL = no pinning */
	struct registry *reg;         /* borrowed; pulls layers of OP_IMAGE with a ref */
	struct op *ops;               /* owned */
	size_t n_ops;
	/* The snapshot being built: stack of layer dirs (top first) and the
	 * layers of the image (bottom first, base layers included). After
	 * job_execute: the result of the last op, i.e. the image. */
	char **stack;
	size_t n_stack;
	struct op_layer *layers;
	size_t n_layers;
	/* The result of every op, for ops that build on or copy from it. */
	struct job_snap *snaps;
	/* Secret values from the client (build.secrets), in memory only:
	 * a RUN that mounts one gets it through a pipe. Zeroed and freed
	 * when job_execute returns. */
	struct job_secret *secrets;
	size_t n_secrets;
	/* The client's --ssh ids (job.run "ssh"): which ssh mounts can be
	 * served. A step that mounts one relays its agent traffic through
	 * the worker's main thread at ssh_ep (borrowed; see sshfwd.h). */
	char **ssh_ids;
	size_t n_ssh_ids;
	const char *ssh_ep;
	/* job.cancel from another thread: no op starts after canceled is
	 * set, and the running step's kiln-run (run_pid) is killed */
	atomic_bool canceled;
	atomic_int run_pid;
};

struct job_secret {
	char *id;
	char *value;
	size_t len;
};

#define JOB_SECRET_MAX (500u << 10)     /* BuildKit's limit on a secret's size */
#define JOB_SECRETS_MAX 256

struct job_snap {
	char **stack;
	size_t n_stack;
	struct op_layer *layers;
	size_t n_layers;
};

/* Run every op. Emits "step.start", "step.log", "step.done" per op; a
 * failing op emits nothing more and returns its error. */
int job_execute(struct job *j, job_emit_fn emit, void *ctx, struct kiln_err *err);
/* Keep a copy of a secret's value for the job (a later one with the same
 * id replaces it). -E2BIG past JOB_SECRETS_MAX secrets or JOB_SECRET_MAX
 * bytes; errors never contain the value. */
int job_add_secret(struct job *j, const char *id, size_t id_len, const void *value, size_t len,
		   struct kiln_err *err);
/* Zero and free the secrets (job_execute and job_release do this). */
void job_secrets_wipe(struct job *j);
/* Free what job_execute and the caller put into j (not j itself). */
void job_release(struct job *j);

#endif
