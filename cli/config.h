/* Builder instances as the CLI stores them: $KILN_CONFIG/builders/NAME.json,
 * the name chosen by `kiln builder use` in $KILN_CONFIG/current, and the
 * embedded default builder that exists without any file.
 *
 * Nothing here starts, stops or connects to anything: that is drivers/. */
#ifndef KILN_CLI_CONFIG_H
#define KILN_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct kiln_err;

#define BUILDER_DEFAULT_NAME "default"
#define BUILDER_NAME_MAX     64         /* bytes, NUL included */
#define BUILDER_FILE_MAX     (1u << 20)

struct builder_opt {
	char *key;
	char *val;
};

struct builder_node {
	char *name;
	char **platforms;               /* normalised "os/arch[/variant]" */
	size_t n_platforms;
	struct builder_opt *opts;       /* per-node driver opts (local: cpuset-cpus, memory) */
	size_t n_opts;
};

struct builder {
	char *name;
	char *driver;                   /* "local" | "remote" */
	char *endpoint;                 /* remote: tcp://host:port; NULL otherwise */
	struct builder_opt *opts;       /* builder-wide driver opts (remote: cacert, key) */
	size_t n_opts;
	struct builder_node *nodes;
	size_t n_nodes;
	bool is_default;                /* the embedded default: never persisted */
};

/* What `kiln builder create` asked for. Every pointer is borrowed; NULL
 * means "not given". driver_opts are "KEY=VALUE" strings. */
struct builder_create_opts {
	const char *name;               /* NULL: generate kiln0, kiln1, ... */
	const char *driver;             /* NULL: the existing builder's, else remote if endpoint, else local */
	const char *node;               /* NULL: generate NAME0, NAME1, ... */
	const char *platforms;          /* comma-separated */
	const char *endpoint;
	const char *const *driver_opts;
	size_t n_driver_opts;
	bool append;
	bool leave;                     /* remove node `node` instead */
};

/* $KILN_CONFIG, else $HOME/.kiln, into buf. -ENAMETOOLONG or -ENOENT (no
 * HOME) with err set. */
int config_dir(char *buf, size_t size, struct kiln_err *err);

/* true when name may name a builder or a node: [A-Za-z0-9][A-Za-z0-9_.-]*,
 * shorter than BUILDER_NAME_MAX. Names become file names, so this matters. */
bool config_name_valid(const char *name);

/* The embedded default builder (local, one node "default"). The caller
 * owns *ret_b (builder_free). */
int config_default(struct builder **ret_b, struct kiln_err *err);

/* Load builder name; "default" without a file is the embedded default. A
 * builder that does not exist fails with -ENOENT and `no builder "x" found`.
 * The caller owns *ret_b. */
int config_load(const char *name, struct builder **ret_b, struct kiln_err *err);

/* Write b to $KILN_CONFIG/builders/NAME.json atomically. The embedded
 * default is refused (-EINVAL). */
int config_save(const struct builder *b, struct kiln_err *err);

/* Pick the builder: flag (--builder) > $KILN_BUILDER > current > embedded
 * default. A flag or $KILN_BUILDER naming no builder is an error; a current
 * file naming a builder that is gone falls back to the default. The caller
 * owns *ret_b. */
int config_resolve(const char *flag, struct builder **ret_b, struct kiln_err *err);

/* The name in $KILN_CONFIG/current into buf, or "" when none. */
int config_current(char *buf, size_t size, struct kiln_err *err);
/* `kiln builder use`: name must exist (or be "default"). */
int config_use(const char *name, struct kiln_err *err);

/* Names of the persisted builders, sorted. The caller owns the array and
 * its strings (config_names_free). */
int config_list(char ***ret_names, size_t *ret_n, struct kiln_err *err);
void config_names_free(char **names, size_t n);

/* Create or change a builder as `kiln builder create` does (buildx's rules:
 * an existing builder needs --append or --node; --append with an existing
 * node name replaces that node), save it and hand it back. Driver opts are
 * checked against the driver's known keys and stored as given: paths must
 * already be absolute. The caller owns *ret_b. */
int config_create(const struct builder_create_opts *o, struct builder **ret_b,
		  struct kiln_err *err);

/* Remove the file of builder name and clear current if it named it. The
 * embedded default cannot be removed. State directories are the driver's. */
int config_remove(const char *name, struct kiln_err *err);

/* $KILN_CONFIG/state/NAME into buf. */
int config_state_dir(const char *name, char *buf, size_t size, struct kiln_err *err);

void builder_free(struct builder *b);         /* NULL is a no-op */
static inline void
builder_freep(struct builder **b)
{
	builder_free(*b);
}

/* Borrowed lookups; NULL when absent. builder_opt looks at node n first
 * (when given), then at the builder. */
struct builder_node *builder_node_find(const struct builder *b, const char *name);
const char *builder_opt(const struct builder *b, const struct builder_node *n, const char *key);

#endif
