/* Build steps as they cross the wire from the coordinator to a worker.
 * The coordinator's frontend resolves everything that needs the Dockerfile,
 * the build context listing or the image config (expansion, COPY globs,
 * destination paths, environment), so a worker only executes: it never
 * parses a Dockerfile.
 *
 *   OP_IMAGE  start from the given layers (bottom first); none = scratch
 *   OP_RUN    run args in the current snapshot (through kiln-run)
 *   OP_COPY   write entries (files from blobs, dirs, symlinks) on top
 *   OP_MKDIR  mkdir -p path (WORKDIR): what it creates is 0755, owned by
 *             user (resolved in the image's /etc/passwd and /etc/group)
 *             or by root
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

/* OP_ENTRY_URL: the worker downloads url (ADD https://...) to path. */
enum op_entry_kind { OP_ENTRY_FILE = 'f', OP_ENTRY_DIR = 'd', OP_ENTRY_SYMLINK = 'l', OP_ENTRY_URL = 'u' };

struct op_entry {
	char *path;                   /* absolute path in the image */
	char kind;                    /* enum op_entry_kind */
	uint32_t mode;                /* permission bits (07777) */
	uint32_t uid, gid;
	int64_t mtime;                /* unix seconds */
	struct digest digest;         /* files: content blob */
	char *link;                   /* symlinks: target */
	/* files (ADD): when the content is a tar archive (plain, gzip, bzip2,
	 * xz or zstd, sniffed by content as BuildKit does), extract it into
	 * this directory instead of writing path; NULL: never extract */
	char *unpack_dir;
	/* OP_ENTRY_URL */
	char *url;
	bool has_checksum;            /* verify the download against checksum */
	struct digest checksum;
	/* files and URLs copied to a destination without a trailing slash:
	 * when path is a directory in the snapshot below, the file goes to
	 * path_if_dir instead (path/<source name>), as BuildKit copies into
	 * an existing directory. NULL: always path. */
	char *path_if_dir;
	/* directories: this is the copy's destination itself, not something
	 * inside it. When it already exists (as a directory) it keeps its
	 * metadata; mode, uid and gid are for a new one. */
	bool is_root;
};

/* RUN --mount (BuildKit's syntax, resolved by the planner). Paths are
 * absolute and clean. Secrets carry only their id: the value travels
 * beside the job (never in an op) and only to the step that mounts it.
 * So do ssh mounts: the target is the socket's path in the step, and the
 * client's agent stays on the client. */
enum op_mount_type { OP_MOUNT_BIND, OP_MOUNT_CACHE, OP_MOUNT_TMPFS, OP_MOUNT_SECRET, OP_MOUNT_SSH };

struct op_mount {
	enum op_mount_type type;
	char *target;                 /* absolute; secrets without one: NULL (env only) */
	int from;                     /* bind: earlier op whose result is mounted; cache:
				       * whose result a new cache starts from; -1: none */
	char *source;                 /* bind: path in from's result ("/" default); cache:
				       * the path of from's result (or, without from, of
				       * the cache) that is mounted, NULL: all of it */
	bool ro;                      /* bind: default ro; cache: default rw */
	char *id;                     /* cache (default target), secret, ssh */
	char *sharing;                /* cache: "shared", "private", "locked" */
	uint32_t mode, uid, gid;      /* cache (0755, 0, 0), secret (0400, 0, 0), ssh (0600, 0, 0) */
	uint64_t size;                /* tmpfs: bytes, 0 = no limit */
	char *env;                    /* secret: also (or only) in this variable */
	bool required;                /* secret, ssh: fail when the client has no value or agent */
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
	char *user;                   /* "" or NULL = root; also OP_MKDIR */
	char *network;                /* "default", "none", "host" */
	struct op_mount *mounts;      /* RUN --mount, in order; packed only when present */
	size_t n_mounts;
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
	/* OP_COPY_FROM and OP_COPY: --chown; directories a copy creates
	 * (parents, a new destination) get these owners. Else: the source's
	 * owners (OP_COPY_FROM) or the entries' (OP_COPY), and root for what
	 * is created. */
	bool chown;
	uint32_t uid, gid;
	bool chmod;                   /* else keep the source's modes */
	uint32_t mode;
	char *chmod_spec;             /* symbolic --chmod (op_mode_apply), applied per entry */
	char **excludes;              /* --exclude patterns (ignore.h), relative to each source */
	size_t n_excludes;
	/* OP_COPY and OP_COPY_FROM: --chown names, resolved on the worker in the
	 * destination's /etc/passwd and /etc/group; they override uid (and gid:
	 * the user's primary group unless a group is given) and gid. NULL:
	 * numeric or not given. */
	char *chown_user;
	char *chown_group;
};

/* Pack one op as a msgpack map. */
void op_pack(const struct op *op, msgpack_packer *pk);
/* Unpack; on failure *ret is left released and err says which field. */
int op_unpack(const msgpack_object *o, struct op *ret, struct kiln_err *err);
void op_release(struct op *op);
/* Append helpers for builders of ops (return -ENOMEM). Strings are copied. */
int op_add_arg(char ***v, size_t *n, const char *s);
/* A symbolic chmod as `chmod` and BuildKit (BSD setmode, umask 0) take it:
 * clauses "[ugoa]*[+-=][rwxXst]*|[ugo]" separated by commas, e.g.
 * "u+x,go-w", "a=r", "u=rwX,g=u". op_mode_check returns 0 when spec is
 * one, else -EINVAL; op_mode_apply gives the permission bits of an entry
 * with mode (07777) after spec (which must pass op_mode_check); dir: X
 * adds x to directories. */
int op_mode_check(const char *spec);
uint32_t op_mode_apply(const char *spec, uint32_t mode, bool dir);
void op_strv_free(char **v, size_t n);

#endif
