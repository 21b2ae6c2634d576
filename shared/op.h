/* Build steps as they cross the wire from the coordinator to a worker.
 * The coordinator's frontend resolves everything that needs the Dockerfile,
 * the build context listing or the image config (expansion, COPY globs,
 * destination paths, environment), so a worker only executes: it never
 * parses a Dockerfile.
 *
 *   OP_IMAGE  start from the given layers (bottom first); none = scratch
 *   OP_RUN    run args in the current snapshot (through kiln-run)
 *   OP_COPY   write entries (files from blobs, dirs, symlinks) on top
 *   OP_MKDIR  mkdir -p path (WORKDIR), parents root-owned 0755
 *   OP_COPY_FROM  copy paths (globs allowed) out of another op's result
 *             (COPY --from): resolved on the worker, which has that
 *             filesystem
 *
 * A job is a graph in list form: every op names the op it applies on top
 * of (input) and, for OP_COPY_FROM, the op it reads from (from); both are
 * indexes of earlier ops, so list order is a topological order. The last
 * op's result is the job's result (the image). Ops whose inputs do not
 * depend on each other are independent (different stages). */
#ifndef KILN_OP_H
#define KILN_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "digest.h"

struct kiln_err;

enum op_kind { OP_IMAGE, OP_RUN, OP_COPY, OP_MKDIR, OP_COPY_FROM };

struct op_layer {
	struct digest digest;         /* blob */
	struct digest diff_id;        /* uncompressed */
	uint64_t size;
};

enum op_entry_kind { OP_ENTRY_FILE = 'f', OP_ENTRY_DIR = 'd', OP_ENTRY_SYMLINK = 'l' };

struct op_entry {
	char *path;                   /* absolute path in the image */
	char kind;                    /* enum op_entry_kind */
	uint32_t mode;                /* permission bits (07777) */
	uint32_t uid, gid;
	int64_t mtime;                /* unix seconds */
	struct digest digest;         /* files: content blob */
	char *link;                   /* symlinks: target */
};

struct op {
	enum op_kind kind;
	char *name;                   /* shown in progress, never in a key */
	int input;                    /* earlier op this applies on; -1 for OP_IMAGE */
	/* OP_IMAGE */
	char *ref;                    /* registry reference the layers come from; NULL:
				       * the client sent them */
	struct op_layer *layers;
	size_t n_layers;
	/* OP_RUN */
	char **args;
	size_t n_args;
	char **env;                   /* "K=V" */
	size_t n_env;
	char *cwd;
	char *user;                   /* "" or NULL = root */
	char *network;                /* "default", "none", "host" */
	/* OP_COPY */
	struct op_entry *entries;     /* parents before children */
	size_t n_entries;
	/* OP_MKDIR */
	char *path;
	/* OP_COPY_FROM */
	int from;                     /* earlier op whose result is the source */
	char **srcs;                  /* absolute paths in the source; globs allowed */
	size_t n_srcs;
	char *dest;                   /* absolute */
	bool into_dir;                /* sources go inside dest (dest/ or several sources) */
	bool chown;                   /* else keep the source's owners */
	uint32_t uid, gid;
	bool chmod;                   /* else keep the source's modes */
	uint32_t mode;
};

/* Pack one op as a msgpack map. */
void op_pack(const struct op *op, msgpack_packer *pk);
/* Unpack; on failure *ret is left released and err says which field. */
int op_unpack(const msgpack_object *o, struct op *ret, struct kiln_err *err);
void op_release(struct op *op);
/* Append helpers for builders of ops (return -ENOMEM). Strings are copied. */
int op_add_arg(char ***v, size_t *n, const char *s);
void op_strv_free(char **v, size_t n);

#endif
