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
 *
 * Every op of one job applies on top of the previous op's result. */
#ifndef KILN_OP_H
#define KILN_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "digest.h"

struct kiln_err;

enum op_kind { OP_IMAGE, OP_RUN, OP_COPY, OP_MKDIR };

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
	/* OP_IMAGE */
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
