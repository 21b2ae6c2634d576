/* The frontend's output for one build: turns a parsed Dockerfile, the build
 * context listing and the resolved base images into a graph of ops a worker
 * runs (shared/op.h) and the image config those ops lead to. Everything that
 * depends on the Dockerfile's meaning lives here: stages and their
 * dependencies, --target pruning, ARG scoping and the automatic platform
 * args, variable expansion, COPY source resolution, ONBUILD triggers, config
 * changes and history, worded as BuildKit words them.
 *
 * The graph: plan->ops is in topological order and its last op is the
 * result image. Each stage is a chain of ops (input links); COPY --from adds
 * an edge from another stage's result (OP_COPY_FROM.from). Stages that do
 * not read each other have no path between them, so they can run at once.
 * An image (scratch or a named build context) appears as one OP_IMAGE op
 * however many stages start from it.
 *
 * Thread rules: no global state; every call is independent. */
#ifndef KILN_PLAN_H
#define KILN_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "digest.h"
#include "op.h"
#include "platform.h"

struct kiln_err;

/* One entry of the build context as the client listed it. */
struct plan_file {
	char *path;                 /* relative, '/'-separated, no "./" prefix */
	char kind;                  /* 'f', 'd', 'l' */
	uint32_t mode;              /* permission bits */
	int64_t mtime;
	uint64_t size;
	struct digest digest;       /* files */
	char *link;                 /* symlinks */
};

struct plan_layer {
	struct op_layer l;
	char media_type[128];
};

/* A named build context resolved by the client to an image (for the target
 * platform). It answers FROM NAME, COPY --from=NAME, and replaces a stage
 * called NAME, as --build-context does in buildx. */
struct plan_context {
	char *name;
	char *ref;                  /* "host/repo@sha256:..." when the layers come from a
				     * registry (the worker pulls them); NULL when the
				     * client sends them */
	json_t *config;             /* owned image config */
	struct plan_layer *layers;  /* bottom first */
	size_t n_layers;
};

struct plan_input {
	const char *dockerfile;
	size_t dockerfile_len;
	const char *filename;       /* for messages: "Dockerfile" */
	char **build_args;          /* "K=V"; a later K wins */
	size_t n_build_args;
	const char *target;         /* NULL = last stage */
	struct platform platform;   /* target: TARGETPLATFORM and the image's platform */
	/* BUILDPLATFORM and friends; NULL = the host this runs on */
	const struct platform *build_platform;
	const struct plan_context *contexts;
	size_t n_contexts;
	const struct plan_file *files;   /* sorted by path */
	size_t n_files;
	/* When set, an image the Dockerfile names (FROM, COPY --from) that is
	 * neither a stage nor a context makes plan_build fail with
	 * -KILN_ENOIMAGE and *ret_missing_image (caller frees) = its name, so
	 * the caller can resolve it and plan again with it as a context. */
	char **ret_missing_image;
};

struct plan_history {
	char *created_by;
	int op;                     /* op whose layer this entry records; -1: config only */
};

/* A stage that is part of the build (reachable from the target). */
struct plan_stage {
	int index;                  /* position among the Dockerfile's FROMs, from 0 */
	char *name;                 /* lower-cased AS name; NULL when unnamed */
	char *base;                 /* "scratch", "context:NAME" or "stage:N" */
	struct platform platform;   /* what the stage runs as (FROM --platform) */
	int *deps;                  /* stage indexes it reads (base, COPY --from), sorted */
	size_t n_deps;
	/* Stages with no path to or from this one: the scheduler may run
	 * them at the same time as this one. Sorted stage indexes. */
	int *independent;
	size_t n_independent;
	int *ops;                   /* ops it planned, in order */
	size_t n_ops;
	int result;                 /* op holding the stage's filesystem */
};

struct plan {
	struct op *ops;             /* topological; the last one is the image */
	size_t n_ops;
	json_t *config;             /* base config + this build's config changes */
	struct plan_history *hist;  /* the image's own history entries, in order;
				     * every op named is in chain[] */
	size_t n_hist;
	struct plan_layer *base;    /* layers of the image chain[0] starts from */
	size_t n_base;
	struct digest *needed;      /* blobs the worker must hold: layers of every
				     * image op, context files a COPY reads */
	size_t n_needed;
	int *chain;                 /* the image's ops: chain[0] is its OP_IMAGE,
				     * then each op whose input is the previous */
	size_t n_chain;
	struct plan_stage *stages;  /* stages built, in Dockerfile order */
	size_t n_stages;
	int *op_stage;              /* per op: Dockerfile index of the stage that
				     * planned it; -1 for an image only COPY --from reads */
	char **op_source;           /* per op: OP_IMAGE "scratch" or "context:NAME", else NULL */
	struct platform platform;   /* target */
	struct platform build_platform;
	char *target;               /* the target stage's name; NULL when it has none */
};

/* The name a context must have to stand for image reference name, as
 * BuildKit matches named contexts ("docker.io/library/alpine:latest" ->
 * "alpine"). Into buf; NULL when it does not fit. */
char *plan_familiar_name(const char *name, char *buf, size_t size);

/* Plan the build. On failure err reads "FILENAME:LINE: ..." when a line is
 * to blame. The caller owns *ret (plan_free). */
int plan_build(const struct plan_input *in, struct plan **ret, struct kiln_err *err);
void plan_free(struct plan *p);  /* NULL is a no-op */

/* The final image config: history and diff_ids for the layers the ops
 * produced (layers[i] NULL when op i produced none; only ops of chain[] are
 * looked at), created time. Caller owns *ret_json (canonical bytes). */
int plan_finish_config(const struct plan *p, const struct op_layer *const *layers, int64_t created,
		       char **ret_json, size_t *ret_len, struct kiln_err *err);

/* The graph as pretty, stable JSON (keys sorted, 2-space indent, ending in
 * a newline): what `kiln debug graph` prints and the golden tests hold.
 *   {"platform", "build_platform", "target",
 *    "stages": [{"index", "name", "base", "platform", "deps", "ops", "result"}],
 *    "ops": [{"index", "kind", "name", "input", "stage", kind-specific fields:
 *             image: "source", "layers" (count); run: "args", "env", "cwd",
 *             "user", "network"; copy: "entries" [{"path", "kind", "mode"
 *             (octal string), "uid", "gid", "mtime", "digest" | "link",
 *             when set: "path_if_dir", "is_root"}], with --chown "chown",
 *             "uid", "gid"; mkdir: "path", "user" when set; copy_from:
 *             "from", "srcs", "dest", "into_dir",
 *             "chown", "uid", "gid", "chmod", "mode"}],
 *    "chain": [op indexes], "needed": [digests],
 *    "config": the final config without "created" (base history entries
 *              keep created_by, comment and empty_layer),
 *    "history": [{"created_by", "op", "empty_layer"}]}
 * Returns a malloc'd string, or NULL when out of memory. */
char *plan_dump_json(const struct plan *p);

#endif
