/* The frontend's output for one build: turns a parsed Dockerfile, the build
 * context listing and the resolved base images into the ops a worker runs
 * (shared/op.h) and the image config those ops lead to. Everything that
 * depends on the Dockerfile's meaning lives here: variable expansion, stage
 * selection, COPY source resolution, config changes and history. */
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

/* A named build context resolved by the client to an image. */
struct plan_context {
	char *name;
	json_t *config;             /* owned image config */
	struct plan_layer *layers;  /* bottom first */
	size_t n_layers;
};

struct plan_input {
	const char *dockerfile;
	size_t dockerfile_len;
	const char *filename;       /* for messages: "Dockerfile" */
	char **build_args;          /* "K=V" */
	size_t n_build_args;
	const char *target;         /* NULL = last stage */
	struct platform platform;
	const struct plan_context *contexts;
	size_t n_contexts;
	const struct plan_file *files;   /* sorted by path */
	size_t n_files;
};

struct plan_history {
	char *created_by;
	int op;                     /* op whose layer this entry records; -1: config only */
};

struct plan {
	struct op *ops;
	size_t n_ops;
	json_t *config;             /* base config + this build's config changes */
	struct plan_history *hist;
	size_t n_hist;
	struct plan_layer *base;    /* the base image's layers */
	size_t n_base;
	struct digest *needed;      /* blobs the worker must hold: base layers, files read */
	size_t n_needed;
};

/* On failure err reads "FILENAME:LINE: ..." when a line is to blame. The
 * caller owns *ret (plan_free). */
int plan_build(const struct plan_input *in, struct plan **ret, struct kiln_err *err);
void plan_free(struct plan *p);

/* The final image config: history and diff_ids for the layers the ops
 * produced (layers[i] NULL when op i produced none), created time. Caller
 * owns *ret_json (canonical bytes). */
int plan_finish_config(const struct plan *p, const struct op_layer *const *layers, int64_t created,
		       char **ret_json, size_t *ret_len, struct kiln_err *err);

#endif
