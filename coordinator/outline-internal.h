/* Internals shared by the files of the outline module (outline.c: the
 * calls; outline-source.c: reading the Dockerfile beyond its AST, comments
 * and RUN --mount values, and the stages; outline-json.c: JSON as Go
 * writes it). Nothing here is used outside them.
 *
 * Every string the module makes lives in a pool owned by struct ol and is
 * freed with it, so tables can be copied by value. */
#ifndef KILN_OUTLINE_INTERNAL_H
#define KILN_OUTLINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "outline.h"

struct df_node;
struct gbuf;
struct kiln_err;

#define OUTLINE_JSON_MAX (64u << 20)

struct loc {
	int start, end;                 /* lines, 1-based; 0: none */
};

struct argi {                           /* BuildKit's argInfo */
	const char *key;
	const char *comment;
	const char *value;              /* "" when there is none */
	struct loc loc;
	const char **deps;              /* global ARGs the default read */
	size_t n_deps;
};

struct mnt {                            /* secretInfo, sshInfo */
	const char *id;
	bool required;
	struct loc loc;
};

/* A map from borrowed strings to indexes (open addressing); the arrays
 * are owned. */
struct smap {
	const char **keys;
	size_t *vals;
	size_t cap, n;
};

/* BuildKit's outlineCapture of one stage. A stage's copy of its base's
 * table is made before any ARG of the base is dispatched, so it holds no
 * ARG definitions of the base's, only the global ones: all holds the
 * stage's own definitions, and lookups fall back to the global table
 * (struct ol's goc). The arrays are owned, their elements borrowed from
 * the pool. */
struct capture {
	struct argi *all;
	size_t n_all;
	struct smap all_ix;             /* key -> index in all */
	const char **used;              /* in the order they became used */
	size_t n_used;
	struct smap used_ix;
	struct mnt *secrets;            /* first use of each id */
	size_t n_secrets;
	struct smap secrets_ix;
	struct mnt *ssh;
	size_t n_ssh;
	struct smap ssh_ix;
};

struct strv {
	const char **v;                 /* "K=V", pooled; later entries win */
	size_t n;
};

/* A stage's environment for expansion, as a persistent list: a stage
 * built on another shares its base's list and adds to the front, so no
 * stage copies it. */
struct envn {
	const char *kv;                 /* "K=V", pooled */
	const struct envn *up;          /* what was set before; NULL at the root */
};

struct cmd {
	const struct df_node *n;
	struct loc loc;
	const char *const *comments;
	size_t n_comments;
};

struct stage {
	const struct df_node *from;
	struct loc loc;
	const char *name;               /* lower-cased AS name, or NULL */
	const char *stage_name;         /* name, or "stage-N" */
	const char *comment;
	const char *platform_raw;       /* --platform as written, or NULL */
	struct cmd *cmds;
	size_t n_cmds;
	int base;                       /* the earlier stage FROM names, or -1 */
	int *deps;                      /* stages read by COPY --from, RUN --mount from= */
	struct loc *dep_locs;           /* the command that reads each */
	size_t n_deps;
	struct capture oc;
	const struct envn *env;         /* pooled */
	bool reachable, dispatched, walked;
};

struct ol {
	const struct outline_input *in;
	struct kiln_err *err;
	const char *filename;
	char escape;
	void **pool;
	size_t n_pool, cap_pool;
	const char ***comments;         /* per node */
	size_t *n_comments;
	const struct df_node **meta;    /* ARGs before the first FROM */
	size_t n_meta;
	struct stage *st;
	size_t n_st;
	struct strv global;             /* globalArgs */
	struct smap global_ix;          /* key -> index in global */
	struct capture goc;
};

enum mount_type { MT_BIND, MT_CACHE, MT_TMPFS, MT_SECRET, MT_SSH };

struct mount {
	enum mount_type type;
	const char *from, *source, *target, *id, *sharing;
	bool required, has_mode, has_uid, has_gid;
};

#define MAX_MOUNTS 64                  /* --mount flags read per RUN */

/* ---- outline-source.c ---- */

/* Parse in's AST into o: comments per node, ARGs before the first FROM,
 * stages and their commands, with BuildKit's instruction checks. On
 * failure o must still be released. */
int ol_init(struct ol *o, const struct outline_input *in, struct kiln_err *err);
void ol_release(struct ol *o);

/* Sets o->err to "out of memory"; returns -ENOMEM. */
int ol_oom(struct ol *o);
/* Hand p to the pool and return it; NULL (and p freed) on failure. */
void *ol_keep(struct ol *o, void *p);
const char *ol_strndup(struct ol *o, const char *s, size_t n);
const char *ol_strdup(struct ol *o, const char *s);
const char *ol_printf(struct ol *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Room for element n of the array p, which holds n elements of size
 * bytes: p itself, a larger copy (p freed), or NULL with p untouched.
 * Arrays double when n is 0 or a power of two. */
void *ol_grow(void *p, size_t n, size_t size);
/* The same on an array variable: 0, or -ENOMEM with arr untouched. */
#define OL_GROW(arr, n) ({ \
	__typeof__(arr) g_ = ol_grow((arr), (n), sizeof(*(arr))); \
	g_ ? ((arr) = g_, 0) : -ENOMEM; \
})

/* 1 and *ret_val when key is in m, else 0. */
int ol_smap_get(const struct smap *m, const char *key, size_t *ret_val);
/* Set key (borrowed) to val. */
int ol_smap_put(struct smap *m, const char *key, size_t val);
int ol_smap_clone(struct smap *dst, const struct smap *src);
void ol_smap_release(struct smap *m);

int ol_strv_add(struct strv *e, const char *kv);
int ol_strv_setkv(struct ol *o, struct strv *e, const char *k, const char *v);
void ol_capture_release(struct capture *c);

/* Set o->err to "FILENAME:LINE: message" (l NULL or without a line:
 * "FILENAME: message"); returns -code. */
int ol_loc_err(struct ol *o, const struct loc *l, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Prefix the error a callee left in o->err with l. */
int ol_loc_wrap(struct ol *o, const struct loc *l);
struct loc ol_node_loc(const struct df_node *n);
/* getComment: the text after "NAME " of the first comment that starts
 * with it, or "". */
const char *ol_get_comment(const char *const *comments, size_t n, const char *name);

/* The --mount values of a RUN into out[0..max), in order; their count. */
size_t ol_mount_flags(const struct df_node *n, const char **out, size_t max);
/* BuildKit's parseMount of val: with env NULL (instruction parse time)
 * only "from" is looked at; with env every value is expanded in it
 * first. Errors carry BuildKit's message and no location. */
int ol_parse_mount(struct ol *o, const char *val, const struct strv *env, struct mount *m);
/* The stage named name (lower-cased) among the first limit, or -1. */
int ol_find_stage(const struct ol *o, const char *name, size_t limit);
int ol_add_cmd(struct ol *o, struct stage *s, const struct df_node *n, struct loc l,
	       const char *const *comments, size_t n_comments);

/* ---- outline-json.c: json.MarshalIndent(v, "", "  ") piece by piece ---- */

/* A string as encoding/json quotes it (HTML-safe). */
void ol_json_str(struct gbuf *b, const char *s, size_t n);
/* A newline and depth levels of indentation. */
void ol_json_nl(struct gbuf *b, int depth);
/* The next member of an object: ",", newline, indentation, "key": . */
void ol_json_key(struct gbuf *b, bool *first, int depth, const char *key);
/* A string member, left out when v is NULL or empty (omitempty). */
void ol_json_str_member(struct gbuf *b, bool *first, int depth, const char *key, const char *v);
/* A pb.Location with one range, as the value of a member at depth. */
void ol_json_loc(struct gbuf *b, int depth, const struct loc *l);
/* The top-level "sources" member: the Dockerfile in base64. */
void ol_json_sources(struct gbuf *b, bool *first, const char *src, size_t len);
/* Close the top-level object and hand the text over. */
int ol_json_finish(struct ol *o, struct gbuf *b, char **ret_json);

#endif
