/* Internals shared by the planner's files: plan.c (stages, arguments, the
 * graph, the public API), plan-instr.c (what each instruction does to a
 * stage), plan-copy.c (COPY and ADD), plan-dump.c (the JSON dump). Nothing
 * here is used outside coordinator/plan*.c. plan-result.c finishes the
 * plan. */
#ifndef KILN_PLAN_INTERNAL_H
#define KILN_PLAN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "plan.h"

struct df_ast;
struct df_node;
struct kiln_err;

#define PLAN_MAX_STAGES 256
#define PLAN_MAX_OPS    8192
#define PLAN_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* A list of malloc'd strings. */
struct strv {
	char **v;
	size_t n;
};

/* ARG as a stage knows it: value NULL when declared without one. */
struct plan_arg {
	char *key;
	char *value;
};

/* One instruction a stage runs: its own, or an ONBUILD trigger of its base. */
struct plan_cmd {
	const struct df_node *n;
	bool onbuild;
	int line;                       /* for messages (triggers: the FROM line) */
};

enum stage_state { STAGE_NEW, STAGE_DISPATCHED };

struct stage {
	/* From the Dockerfile. */
	const struct df_node *from;
	size_t first, end;              /* its instructions: ast nodes [first, end) */
	char *name;                     /* lower-cased AS name, NULL */
	char *display;                  /* for progress and messages: name, "stage-N" or "" */
	int index;
	char *base_name;                /* FROM's image word, expanded */
	bool has_platform;              /* FROM --platform given */
	struct platform platform;       /* FROM --platform, else (later) the base's/target */
	struct stage *base;             /* FROM an earlier stage */
	const struct plan_context *replaced;  /* --build-context NAME replaces this stage */
	const struct plan_context *image;     /* base image when it is a named context */
	struct plan_cmd *cmds;          /* ONBUILD triggers first, then its own */
	size_t n_cmds;
	int *deps;                      /* stage indexes read through COPY --from */
	size_t n_deps;
	bool reachable, visiting, triggers_done;
	enum stage_state state;

	/* While and after dispatching. */
	json_t *img;                    /* the stage's image config */
	int op;                         /* op holding the stage's filesystem */
	struct strv env;                /* the build-time environment (ENV and ARG) */
	struct plan_arg *args;          /* ARGs declared, in order */
	size_t n_args;
	char *user;
	char *cwd;
	struct plan_history *hist;      /* history of this stage's image, own entries */
	size_t n_hist;
	bool cmd_set;                   /* a CMD of this stage (ENTRYPOINT keeps it) */
	int step, total;                /* progress: "[name step/total]" */
	bool onbuild_now;               /* the command being run is a trigger */
	int *own_ops;
	size_t n_own_ops;
};

struct ctx {
	const struct plan_input *in;
	struct df_ast *ast;
	struct df_ast **trigger_asts;   /* parsed ONBUILD triggers (kept for their nodes) */
	size_t n_trigger_asts;
	char escape;
	struct stage *stages;
	size_t n_stages;
	struct strv global;             /* platform args and ARGs before the first FROM */
	struct platform target, build;
	int scratch_op;                 /* -1 until needed */
	/* RUN --mount=type=bind without from=: the OP_COPY holding the
	 * context below each path mounted (relative, "" for the root), so
	 * RUNs mounting the same path share it */
	struct strv ctx_mounts;
	int *ctx_mount_ops;
	int *context_ops;               /* per input context and platform (2 slots:
					 * target, build): its OP_IMAGE or -1 */
	int *op_stage;                  /* grows with p->ops */
	char **op_source;
	struct plan *p;
	struct kiln_err *err;
};

/* ---- plan.c ---- */
void strv_free(struct strv *s);
int strv_add(struct strv *s, const char *str);
/* KEY=VALUE: drop an earlier KEY, append (BuildKit's EnvList order). */
int strv_setkv(struct strv *s, const char *key, const char *val);
const char *strv_get(const struct strv *s, const char *key);
char *strv_join(const struct strv *s, const char *sep);

int plan_nomem(struct ctx *c);
/* "FILE:LINE: msg" with the line of n (or line when n is NULL and line > 0). */
int plan_line_err(struct ctx *c, int line, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* ProcessWord of word under env; errors get the line. */
int plan_expand(struct ctx *c, int line, const char *word, const struct strv *env, char **ret);
/* ProcessWords (split on blanks). */
int plan_expand_words(struct ctx *c, int line, const char *word, const struct strv *env,
		      struct strv *ret);
/* Append op (taken, also on failure) for stage s (NULL: no stage); sets
 * op->input to s->op unless it is an image. Returns the new index. */
int plan_push_op(struct ctx *c, struct stage *s, struct op *op);
int plan_push_hist(struct ctx *c, struct stage *s, int op, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The stage's config section (created when missing). */
json_t *plan_cfg(struct stage *s);
/* "[name step/total] " + text, advancing the step. */
char *plan_step_name(struct ctx *c, struct stage *s, const char *text);
/* The OP_IMAGE for a context on platform pl (NULL: the target), made on
 * first use (*ret_new, may be NULL, says so) for stage s (NULL: none). */
int plan_context_op(struct ctx *c, const struct plan_context *pc, const struct platform *pl,
		    struct stage *s, bool *ret_new);
const struct plan_context *plan_find_context(struct ctx *c, const char *name);
/* The empty OP_IMAGE ("FROM scratch"), made on first use for stage s
 * (NULL: none). */
int plan_scratch_op(struct ctx *c, struct stage *s);
/* The --build-arg value of key (the last one given), or NULL. */
const char *plan_build_arg(struct ctx *c, const char *key);
/* Stage by name (case-insensitive; the last definition wins) or NULL. */
struct stage *plan_find_stage(struct ctx *c, const char *name);
/* The closest of options[0..n) to word (edit distance < 3), or NULL. */
const char *plan_suggest(const char *word, const char *const *options, size_t n);
/* Levenshtein distance, case-insensitive (for suggestions). */
int plan_distance(const char *a, const char *b);

int plan_int_append(int **v, size_t *n, int x);
/* Keep the config fields BuildKit's image type has, without empty ones
 * (Go's omitempty) and without "created". */
void plan_normalize_config(json_t *img);

/* ---- plan-result.c ---- */
/* Prune, renumber and fill c->p from target stage t. */
int plan_finish(struct ctx *c, struct stage *t);

/* ---- plan-instr.c ---- */
/* Run one instruction of stage s. */
int plan_dispatch(struct ctx *c, struct stage *s, const struct plan_cmd *cmd);
/* ONBUILD's stored expression: the line without "ONBUILD", with the
 * bodies of its heredocs. malloc'd, NULL on ENOMEM. */
char *plan_onbuild_expression(const struct df_node *n);
/* Go's time.Duration.String() into out. */
void plan_go_duration(int64_t ns, char out[40]);
/* Go's fmt %q of a []string: ["a" "b"]. Returns malloc'd, NULL on ENOMEM. */
char *plan_go_quote_list(const json_t *arr);
/* Go's fmt %v of a []string: [a b]. */
char *plan_go_list(char *const *v, size_t n);

/* Add to s->deps the stages that RUN --mount from= in n reads (n may be
 * any instruction). */
int plan_run_mount_deps(struct ctx *c, struct stage *s, const struct df_node *n, int line);

/* ---- plan-copy.c ---- */
/* COPY (add == false) or ADD. */
int plan_copy(struct ctx *c, struct stage *s, const struct plan_cmd *cmd, bool add);
/* Resolve COPY --from's value to a stage (*ret_stage) or a context
 * (*ret_ctx); both NULL: neither. Errors for a bad index or variables. */
int plan_copy_source(struct ctx *c, int line, const char *from, struct stage **ret_stage,
		     const struct plan_context **ret_ctx);
/* The op that --from=from names for stage s (a dispatched stage or a
 * context, made on first use); errors are COPY --from's. */
int plan_source_op(struct ctx *c, struct stage *s, int line, const char *from);
/* RUN --mount=type=bind without from=: the op holding the build context
 * at source (absolute, clean; a symlink is followed inside the context),
 * an OP_COPY on scratch made once per path, and *ret_source (caller
 * frees) the path to mount from it. Errors name the line when the
 * context has no such path. */
int plan_context_mount(struct ctx *c, int line, const char *source, char **ret_source);

#endif
