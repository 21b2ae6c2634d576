/* Builder instances on disk, the way buildx keeps its "node groups": one
 * JSON file per builder under $KILN_CONFIG/builders, the name picked by
 * `builder use` in $KILN_CONFIG/current, and an embedded default builder
 * (local driver, one node) that is never written anywhere, so a fresh
 * machine builds without any setup.
 *
 * Invariants: every name stored or loaded passes config_name_valid() (names
 * become file and directory names); platforms are stored normalised; a
 * file is replaced atomically, so a reader never sees half a builder. A file
 * that does not parse is an error naming the file, never silently skipped
 * when it is the one asked for.
 *
 * This module knows the schema and buildx's create/append rules. It does not
 * start, stop or reach builders (drivers/), nor touch their state
 * directories beyond computing their path. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cleanup.h"
#include "err.h"
#include "platform.h"
#include "resources.h"
#include "util.h"
#include "config.h"

#define MAX_PLATFORMS 32
#define MAX_OPTS      32
#define MAX_NODES     256

/* Driver opts we understand, and where they live: remote opts describe how
 * to reach the one coordinator (builder-wide); local opts describe one
 * worker process (per node). */
struct opt_spec {
	const char *driver;
	const char *key;
	bool per_node;
};

static const struct opt_spec opt_specs[] = {
	{ "local", "cpuset-cpus", true },
	{ "local", "memory", true },
	{ "remote", "cacert", false },
	{ "remote", "key", false },
};

#define _cleanup_json_ _cleanup_(json_decrefp)     /* jansson's own helper */

static void
opts_free(struct builder_opt *opts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(opts[i].key);
		free(opts[i].val);
	}
	free(opts);
}

/* A list of opts under construction, freed on every early return. */
struct opt_list {
	struct builder_opt *v;
	size_t n;
};

static void
opt_list_release(struct opt_list *l)
{
	opts_free(l->v, l->n);
}

static void
node_release(struct builder_node *n)
{
	free(n->name);
	for (size_t i = 0; i < n->n_platforms; i++)
		free(n->platforms[i]);
	free(n->platforms);
	opts_free(n->opts, n->n_opts);
	memset(n, 0, sizeof(*n));
}

void
builder_free(struct builder *b)
{
	if (!b)
		return;
	free(b->name);
	free(b->driver);
	free(b->endpoint);
	opts_free(b->opts, b->n_opts);
	for (size_t i = 0; i < b->n_nodes; i++)
		node_release(&b->nodes[i]);
	free(b->nodes);
	free(b);
}

struct builder_node *
builder_node_find(const struct builder *b, const char *name)
{
	for (size_t i = 0; i < b->n_nodes; i++)
		if (strcmp(b->nodes[i].name, name) == 0)
			return &b->nodes[i];
	return NULL;
}

static const char *
opts_get(const struct builder_opt *opts, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(opts[i].key, key) == 0)
			return opts[i].val;
	return NULL;
}

const char *
builder_opt(const struct builder *b, const struct builder_node *n, const char *key)
{
	const char *v = NULL;

	if (n)
		v = opts_get(n->opts, n->n_opts, key);
	return v ? v : opts_get(b->opts, b->n_opts, key);
}

/* Set key=val in a list, replacing an existing key. */
static int
opts_set(struct builder_opt **opts, size_t *n, const char *key, const char *val)
{
	struct builder_opt *o;
	char *v;

	v = strdup(val);
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < *n; i++) {
		if (strcmp((*opts)[i].key, key) == 0) {
			free((*opts)[i].val);
			(*opts)[i].val = v;
			return 0;
		}
	}
	if (*n >= MAX_OPTS) {
		free(v);
		return -E2BIG;
	}
	o = realloc(*opts, (*n + 1) * sizeof(**opts));
	if (!o) {
		free(v);
		return -ENOMEM;
	}
	*opts = o;
	o[*n].key = strdup(key);
	if (!o[*n].key) {
		free(v);
		return -ENOMEM;
	}
	o[*n].val = v;
	(*n)++;
	return 0;
}

bool
config_name_valid(const char *name)
{
	size_t len;

	if (!name)
		return false;
	len = strlen(name);
	if (len == 0 || len >= BUILDER_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			return false;
	}
	return true;
}

int
config_dir(char *buf, size_t size, struct kiln_err *err)
{
	const char *env = getenv("KILN_CONFIG");
	const char *home;
	int n;

	if (env && *env == '/') {
		n = snprintf(buf, size, "%s", env);
	} else if (env && *env) {
		/* Paths derived from here reach daemons and ipc:// endpoints
		 * that outlive this command's working directory. */
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)))
			return kiln_err_errno(err, errno, "KILN_CONFIG is relative and getcwd failed");
		n = snprintf(buf, size, "%s/%s", cwd, env);
	} else {
		home = getenv("HOME");
		if (!home || !*home)
			return kiln_err_set(err, ENOENT,
					    "neither KILN_CONFIG nor HOME is set: nowhere to keep builders");
		n = snprintf(buf, size, "%s/.kiln", home);
	}
	if (n < 0 || (size_t) n >= size)
		return kiln_err_set(err, ENAMETOOLONG, "config directory path is too long");
	/* A trailing slash would make every derived path look different. */
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	return 0;
}

/* dir/sub/name into buf; sub or name may be NULL. */
static int
config_path(char *buf, size_t size, const char *sub, const char *name, const char *suffix,
	    struct kiln_err *err)
{
	char dir[PATH_MAX];
	int n, r;

	r = config_dir(dir, sizeof(dir), err);
	if (r < 0)
		return r;
	n = snprintf(buf, size, "%s%s%s%s%s%s", dir, sub ? "/" : "", sub ? sub : "",
		     name ? "/" : "", name ? name : "", suffix ? suffix : "");
	if (n < 0 || (size_t) n >= size)
		return kiln_err_set(err, ENAMETOOLONG, "path under '%s' is too long", dir);
	return 0;
}

int
config_state_dir(const char *name, char *buf, size_t size, struct kiln_err *err)
{
	if (!config_name_valid(name))
		return kiln_err_set(err, EINVAL, "invalid builder name \"%s\"", name);
	return config_path(buf, size, "state", name, NULL, err);
}

static struct builder_node *
builder_add_node(struct builder *b, const char *name)
{
	struct builder_node *nodes;

	if (b->n_nodes >= MAX_NODES)
		return NULL;
	nodes = realloc(b->nodes, (b->n_nodes + 1) * sizeof(*nodes));
	if (!nodes)
		return NULL;
	b->nodes = nodes;
	memset(&nodes[b->n_nodes], 0, sizeof(*nodes));
	nodes[b->n_nodes].name = strdup(name);
	if (!nodes[b->n_nodes].name)
		return NULL;
	return &nodes[b->n_nodes++];
}

static struct builder *
builder_new(const char *name, const char *driver)
{
	_cleanup_(builder_freep) struct builder *b = NULL;

	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->name = strdup(name);
	b->driver = strdup(driver);
	if (!b->name || !b->driver)
		return NULL;
	return STEAL_PTR(b);
}

int
config_default(struct builder **ret_b, struct kiln_err *err)
{
	_cleanup_(builder_freep) struct builder *b = NULL;

	b = builder_new(BUILDER_DEFAULT_NAME, "local");
	if (!b || !builder_add_node(b, BUILDER_DEFAULT_NAME))
		return kiln_err_set(err, ENOMEM, "out of memory");
	b->is_default = true;
	*ret_b = STEAL_PTR(b);
	return 0;
}

/* Replace n's platforms by the normalised form of the comma-separated s. */
static int
node_set_platforms(struct builder_node *n, const char *s, struct kiln_err *err)
{
	struct platform p[MAX_PLATFORMS];
	char **list;
	int count;

	count = platform_parse_list(s, p, MAX_PLATFORMS);
	if (count == -E2BIG)
		return kiln_err_set(err, E2BIG, "too many platforms in \"%s\" (at most %d)", s,
				    MAX_PLATFORMS);
	if (count < 0)
		return kiln_err_set(err, EINVAL, "invalid platform list \"%s\"", s);
	list = calloc((size_t) count + 1, sizeof(*list));
	if (!list)
		return kiln_err_set(err, ENOMEM, "out of memory");
	for (int i = 0; i < count; i++) {
		char buf[PLATFORM_STR_SIZE];

		list[i] = strdup(platform_fmt(&p[i], buf));
		if (!list[i]) {
			for (int j = 0; j < i; j++)
				free(list[j]);
			free(list);
			return kiln_err_set(err, ENOMEM, "out of memory");
		}
	}
	for (size_t i = 0; i < n->n_platforms; i++)
		free(n->platforms[i]);
	free(n->platforms);
	n->platforms = list;
	n->n_platforms = (size_t) count;
	return 0;
}

/* ---- JSON <-> struct builder ---------------------------------------- */

static int
opts_from_json(json_t *obj, struct builder_opt **opts, size_t *n, const char *path,
	       struct kiln_err *err)
{
	const char *key;
	json_t *val;

	if (!obj)
		return 0;
	if (!json_is_object(obj))
		return kiln_err_set(err, KILN_EPARSE, "%s: driver_opts must be an object", path);
	json_object_foreach(obj, key, val) {
		if (!json_is_string(val))
			return kiln_err_set(err, KILN_EPARSE, "%s: driver_opts.%s must be a string",
					    path, key);
		if (opts_set(opts, n, key, json_string_value(val)) < 0)
			return kiln_err_set(err, E2BIG, "%s: too many driver_opts", path);
	}
	return 0;
}

static json_t *
opts_to_json(const struct builder_opt *opts, size_t n)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < n; i++) {
		if (json_object_set_new(o, opts[i].key, json_string(opts[i].val)) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static int
builder_from_json(const char *path, const char *want_name, const char *text, size_t len,
		  struct builder **ret_b, struct kiln_err *err)
{
	_cleanup_(builder_freep) struct builder *b = NULL;
	_cleanup_json_ json_t *root = NULL;
	const char *name, *driver, *endpoint = NULL;
	json_t *nodes, *jn;
	json_error_t jerr;
	size_t i;
	int r;

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return kiln_err_set(err, KILN_EPARSE, "%s:%d: %s", path, jerr.line, jerr.text);
	if (json_unpack_ex(root, &jerr, 0, "{s:s, s:s, s?s, s:o}", "name", &name,
			   "driver", &driver, "endpoint", &endpoint, "nodes", &nodes) < 0)
		return kiln_err_set(err, KILN_EPARSE, "%s: %s", path, jerr.text);
	if (strcmp(name, want_name) != 0)
		return kiln_err_set(err, KILN_EPARSE, "%s: names builder \"%s\", not \"%s\"",
				    path, name, want_name);
	if (strcmp(driver, "local") != 0 && strcmp(driver, "remote") != 0)
		return kiln_err_set(err, KILN_EPARSE, "%s: unknown driver \"%s\"", path, driver);
	if (!json_is_array(nodes) || json_array_size(nodes) > MAX_NODES)
		return kiln_err_set(err, KILN_EPARSE, "%s: nodes must be an array of at most %d",
				    path, MAX_NODES);
	b = builder_new(name, driver);
	if (!b)
		return kiln_err_set(err, ENOMEM, "out of memory");
	if (endpoint && *endpoint) {
		b->endpoint = strdup(endpoint);
		if (!b->endpoint)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	r = opts_from_json(json_object_get(root, "driver_opts"), &b->opts, &b->n_opts, path, err);
	if (r < 0)
		return r;
	json_array_foreach(nodes, i, jn) {
		struct builder_node *n;
		const char *nname;
		json_t *plats = NULL, *nopts = NULL, *jp;
		size_t k;

		if (json_unpack_ex(jn, &jerr, 0, "{s:s, s?o, s?o}", "name", &nname,
				   "platforms", &plats, "driver_opts", &nopts) < 0)
			return kiln_err_set(err, KILN_EPARSE, "%s: nodes[%zu]: %s", path, i, jerr.text);
		if (!config_name_valid(nname))
			return kiln_err_set(err, KILN_EPARSE, "%s: invalid node name \"%s\"", path, nname);
		if (builder_node_find(b, nname))
			return kiln_err_set(err, KILN_EPARSE, "%s: node \"%s\" appears twice", path, nname);
		n = builder_add_node(b, nname);
		if (!n)
			return kiln_err_set(err, ENOMEM, "out of memory");
		if (plats && (!json_is_array(plats) || json_array_size(plats) > MAX_PLATFORMS))
			return kiln_err_set(err, KILN_EPARSE,
					    "%s: node \"%s\": platforms must be an array of at most %d",
					    path, nname, MAX_PLATFORMS);
		json_array_foreach(plats, k, jp) {
			if (!json_is_string(jp))
				return kiln_err_set(err, KILN_EPARSE,
						    "%s: node \"%s\": platforms must be strings",
						    path, nname);
		}
		if (plats && json_array_size(plats) > 0) {
			/* Re-join and re-parse, so a hand-edited file gets the
			 * same normalisation as the command line. */
			char joined[MAX_PLATFORMS * PLATFORM_STR_SIZE] = "";
			size_t off = 0;

			json_array_foreach(plats, k, jp) {
				int w = snprintf(joined + off, sizeof(joined) - off, "%s%s",
						 k ? "," : "", json_string_value(jp));

				if (w < 0 || (size_t) w >= sizeof(joined) - off)
					return kiln_err_set(err, KILN_EPARSE,
							    "%s: node \"%s\": platform list too long",
							    path, nname);
				off += (size_t) w;
			}
			r = node_set_platforms(n, joined, err);
			if (r < 0)
				return kiln_err_wrap(err, "%s: node \"%s\"", path, nname);
		}
		r = opts_from_json(nopts, &n->opts, &n->n_opts, path, err);
		if (r < 0)
			return r;
	}
	*ret_b = STEAL_PTR(b);
	return 0;
}

static json_t *
builder_to_json(const struct builder *b)
{
	_cleanup_json_ json_t *root = NULL;
	json_t *nodes;

	/* json_object_set_new() takes its value even when it fails, so
	 * nothing below leaks on ENOMEM. */
	root = json_object();
	if (!root)
		return NULL;
	if (json_object_set_new(root, "name", json_string(b->name)) < 0 ||
	    json_object_set_new(root, "driver", json_string(b->driver)) < 0 ||
	    (b->endpoint && json_object_set_new(root, "endpoint", json_string(b->endpoint)) < 0) ||
	    json_object_set_new(root, "driver_opts", opts_to_json(b->opts, b->n_opts)) < 0 ||
	    json_object_set_new(root, "nodes", json_array()) < 0)
		return NULL;
	nodes = json_object_get(root, "nodes");
	for (size_t i = 0; i < b->n_nodes; i++) {
		const struct builder_node *n = &b->nodes[i];
		json_t *jn, *plats;

		if (json_array_append_new(nodes, json_object()) < 0)
			return NULL;
		jn = json_array_get(nodes, i);
		if (json_object_set_new(jn, "name", json_string(n->name)) < 0 ||
		    json_object_set_new(jn, "platforms", json_array()) < 0 ||
		    json_object_set_new(jn, "driver_opts", opts_to_json(n->opts, n->n_opts)) < 0)
			return NULL;
		plats = json_object_get(jn, "platforms");
		for (size_t k = 0; k < n->n_platforms; k++)
			if (json_array_append_new(plats, json_string(n->platforms[k])) < 0)
				return NULL;
	}
	return STEAL_PTR(root);
}

/* ---- load / save ----------------------------------------------------- */

int
config_load(const char *name, struct builder **ret_b, struct kiln_err *err)
{
	_cleanup_free_ char *text = NULL;
	char path[PATH_MAX];
	size_t len;
	int r;

	if (!config_name_valid(name))
		return kiln_err_set(err, EINVAL, "invalid builder name \"%s\"", name ? name : "");
	if (strcmp(name, BUILDER_DEFAULT_NAME) == 0)
		return config_default(ret_b, err);
	r = config_path(path, sizeof(path), "builders", name, ".json", err);
	if (r < 0)
		return r;
	r = kiln_read_file_at(AT_FDCWD, path, BUILDER_FILE_MAX, &text, &len);
	if (r == -ENOENT)
		return kiln_err_set(err, ENOENT, "no builder \"%s\" found", name);
	if (r < 0)
		return kiln_err_errno(err, -r, "read '%s'", path);
	return builder_from_json(path, name, text, len, ret_b, err);
}

static int
mkdir_config(const char *sub, struct kiln_err *err)
{
	char path[PATH_MAX];
	int r;

	r = config_path(path, sizeof(path), sub, NULL, NULL, err);
	if (r < 0)
		return r;
	r = kiln_mkdir_p(path, 0755);
	if (r < 0)
		return kiln_err_errno(err, -r, "create '%s'", path);
	return 0;
}

int
config_save(const struct builder *b, struct kiln_err *err)
{
	_cleanup_json_ json_t *root = NULL;
	_cleanup_free_ char *text = NULL;
	char path[PATH_MAX];
	int r;

	if (b->is_default || strcmp(b->name, BUILDER_DEFAULT_NAME) == 0)
		return kiln_err_set(err, EINVAL, "the default builder is not stored");
	if (!config_name_valid(b->name))
		return kiln_err_set(err, EINVAL, "invalid builder name \"%s\"", b->name);
	r = mkdir_config("builders", err);
	if (r < 0)
		return r;
	r = config_path(path, sizeof(path), "builders", b->name, ".json", err);
	if (r < 0)
		return r;
	root = builder_to_json(b);
	if (root)
		text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!text)
		return kiln_err_set(err, ENOMEM, "out of memory");
	/* Editors and humans expect a final newline. */
	{
		_cleanup_free_ char *nl = kiln_strdupf("%s\n", text);

		if (!nl)
			return kiln_err_set(err, ENOMEM, "out of memory");
		r = kiln_write_file_atomic(AT_FDCWD, path, nl, strlen(nl), 0644);
	}
	if (r < 0)
		return kiln_err_errno(err, -r, "write '%s'", path);
	return 0;
}

/* ---- current, resolution --------------------------------------------- */

int
config_current(char *buf, size_t size, struct kiln_err *err)
{
	_cleanup_free_ char *text = NULL;
	char path[PATH_MAX];
	size_t len;
	int r;

	buf[0] = '\0';
	r = config_path(path, sizeof(path), "current", NULL, NULL, err);
	if (r < 0)
		return r;
	r = kiln_read_file_at(AT_FDCWD, path, 4096, &text, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return kiln_err_errno(err, -r, "read '%s'", path);
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ' || text[len - 1] == '\t'))
		text[--len] = '\0';
	/* Garbage in the file means "nothing chosen", not a broken CLI. */
	if (config_name_valid(text) && len < size)
		memcpy(buf, text, len + 1);
	return 0;
}

static int
write_current(const char *name, struct kiln_err *err)
{
	_cleanup_free_ char *line = NULL;
	char path[PATH_MAX];
	int r;

	r = mkdir_config(NULL, err);
	if (r < 0)
		return r;
	r = config_path(path, sizeof(path), "current", NULL, NULL, err);
	if (r < 0)
		return r;
	line = kiln_strdupf("%s\n", name);
	if (!line)
		return kiln_err_set(err, ENOMEM, "out of memory");
	r = kiln_write_file_atomic(AT_FDCWD, path, line, strlen(line), 0644);
	if (r < 0)
		return kiln_err_errno(err, -r, "write '%s'", path);
	return 0;
}

int
config_use(const char *name, struct kiln_err *err)
{
	_cleanup_(builder_freep) struct builder *b = NULL;
	int r;

	r = config_load(name, &b, err);
	if (r < 0)
		return r;
	return write_current(name, err);
}

int
config_resolve(const char *flag, struct builder **ret_b, struct kiln_err *err)
{
	char cur[BUILDER_NAME_MAX];
	const char *env;
	int r;

	if (flag && *flag)
		return config_load(flag, ret_b, err);
	env = getenv("KILN_BUILDER");
	if (env && *env) {
		r = config_load(env, ret_b, err);
		if (r < 0)
			return kiln_err_wrap(err, "KILN_BUILDER");
		return 0;
	}
	r = config_current(cur, sizeof(cur), err);
	if (r < 0)
		return r;
	if (cur[0]) {
		r = config_load(cur, ret_b, err);
		/* A builder removed behind our back (not through `builder rm`,
		 * which clears current) leaves the user on the default rather
		 * than stuck. */
		if (r != -ENOENT)
			return r;
		kiln_err_clear(err);
	}
	return config_default(ret_b, err);
}

/* ---- list, remove ---------------------------------------------------- */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

void
config_names_free(char **names, size_t n)
{
	if (!names)
		return;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int
config_list(char ***ret_names, size_t *ret_n, struct kiln_err *err)
{
	_cleanup_closedir_ DIR *d = NULL;
	char path[PATH_MAX];
	char **names = NULL;
	struct dirent *de;
	size_t n = 0;
	int r;

	r = config_path(path, sizeof(path), "builders", NULL, NULL, err);
	if (r < 0)
		return r;
	d = opendir(path);
	if (!d && errno != ENOENT)
		return kiln_err_errno(err, errno, "open '%s'", path);
	while (d && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char name[BUILDER_NAME_MAX];
		char **grown;

		if (len <= 5 || len - 5 >= sizeof(name) || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		memcpy(name, de->d_name, len - 5);
		name[len - 5] = '\0';
		if (!config_name_valid(name) || strcmp(name, BUILDER_DEFAULT_NAME) == 0)
			continue;
		grown = realloc(names, (n + 1) * sizeof(*names));
		if (!grown)
			goto out_nomem;
		names = grown;
		names[n] = strdup(name);
		if (!names[n])
			goto out_nomem;
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_str);
	*ret_names = names;
	*ret_n = n;
	return 0;

out_nomem:
	config_names_free(names, n);
	return kiln_err_set(err, ENOMEM, "out of memory");
}

int
config_remove(const char *name, struct kiln_err *err)
{
	char path[PATH_MAX], cur[BUILDER_NAME_MAX];
	int r;

	if (!config_name_valid(name))
		return kiln_err_set(err, EINVAL, "invalid builder name \"%s\"", name ? name : "");
	if (strcmp(name, BUILDER_DEFAULT_NAME) == 0)
		return kiln_err_set(err, EINVAL, "default builder cannot be removed");
	r = config_path(path, sizeof(path), "builders", name, ".json", err);
	if (r < 0)
		return r;
	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return kiln_err_set(err, ENOENT, "no builder \"%s\" found", name);
		return kiln_err_errno(err, errno, "remove '%s'", path);
	}
	r = config_current(cur, sizeof(cur), err);
	if (r < 0)
		return r;
	if (strcmp(cur, name) == 0) {
		r = config_path(path, sizeof(path), "current", NULL, NULL, err);
		if (r < 0)
			return r;
		if (unlink(path) < 0 && errno != ENOENT)
			return kiln_err_errno(err, errno, "remove '%s'", path);
	}
	return 0;
}

/* ---- create ---------------------------------------------------------- */

static bool
builder_exists(const char *name)
{
	char path[PATH_MAX];

	if (config_path(path, sizeof(path), "builders", name, ".json", NULL) < 0)
		return false;
	return access(path, F_OK) == 0;
}

/* kiln0, kiln1, ...: the first name without a file, like buildx's
 * generated names but predictable, so scripts can follow along. */
static int
generate_name(char *buf, size_t size, struct kiln_err *err)
{
	for (unsigned i = 0; i < 100000; i++) {
		snprintf(buf, size, "kiln%u", i);
		if (!builder_exists(buf))
			return 0;
	}
	return kiln_err_set(err, EEXIST, "no free builder name kiln0..kiln99999");
}

static const struct opt_spec *
opt_spec_find(const char *driver, const char *key)
{
	for (size_t i = 0; i < sizeof(opt_specs) / sizeof(opt_specs[0]); i++)
		if (strcmp(opt_specs[i].driver, driver) == 0 && strcmp(opt_specs[i].key, key) == 0)
			return &opt_specs[i];
	return NULL;
}

/* Values are checked here, at create, as buildx checks its driver opts:
 * a node whose limits cannot be read must not wait for its first start to
 * say so. Whether the CPUs exist is the machine's business (the worker's
 * start, or `builder create` for the local driver). */
static int
opt_value_check(const char *key, const char *val, struct kiln_err *err)
{
	cpu_set_t cpus;
	uint64_t bytes;
	int r = 0;

	if (strcmp(key, "cpuset-cpus") == 0)
		r = resources_parse_cpus(val, &cpus, err);
	else if (strcmp(key, "memory") == 0)
		r = resources_parse_memory(val, &bytes, err);
	else if (!val[0])
		r = kiln_err_set(err, EINVAL, "empty value");
	if (r < 0)
		return kiln_err_wrap(err, "driver-opt %s", key);
	return 0;
}

static bool
endpoint_valid(const char *ep)
{
	const char *colon;

	if (kiln_startswith(ep, "ipc://"))
		return ep[6] == '/';
	if (!kiln_startswith(ep, "tcp://"))
		return false;
	colon = strrchr(ep + 6, ':');
	return colon && colon > ep + 6 && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1);
}

static int
create_leave(struct builder *b, const char *node, struct kiln_err *err)
{
	struct builder_node *n;
	size_t i;

	if (!node)
		return kiln_err_set(err, EINVAL, "leave requires a node name (--node)");
	n = builder_node_find(b, node);
	if (!n)
		return kiln_err_set(err, ENOENT, "node \"%s\" not found for builder \"%s\"", node,
				    b->name);
	if (b->n_nodes == 1)
		return kiln_err_set(err, EINVAL,
				    "node \"%s\" is the last node of \"%s\": use 'kiln builder rm %s'",
				    node, b->name, b->name);
	i = (size_t) (n - b->nodes);
	node_release(n);
	memmove(&b->nodes[i], &b->nodes[i + 1], (b->n_nodes - i - 1) * sizeof(*n));
	b->n_nodes--;
	return 0;
}

int
config_create(const struct builder_create_opts *o, struct builder **ret_b, struct kiln_err *err)
{
	_cleanup_(builder_freep) struct builder *b = NULL;
	_cleanup_(opt_list_release) struct opt_list node_opts = { NULL, 0 };
	char name[BUILDER_NAME_MAX], node_name[BUILDER_NAME_MAX];
	struct builder_node *n;
	const char *driver;
	int r;

	if (o->driver && strcmp(o->driver, "local") != 0 && strcmp(o->driver, "remote") != 0)
		return kiln_err_set(err, EINVAL, "failed to find driver \"%s\" (known: local, remote)",
				    o->driver);
	if (o->name) {
		if (strcmp(o->name, BUILDER_DEFAULT_NAME) == 0)
			return kiln_err_set(err, EINVAL,
					    "default is a reserved name and cannot be used as builder name");
		if (!config_name_valid(o->name))
			return kiln_err_set(err, EINVAL,
					    "invalid builder name \"%s\": use letters, digits, '_', '.', '-'",
					    o->name);
		snprintf(name, sizeof(name), "%s", o->name);
	} else {
		if (o->leave)
			return kiln_err_set(err, EINVAL, "leave requires a builder name (--name)");
		r = generate_name(name, sizeof(name), err);
		if (r < 0)
			return r;
	}
	if (o->node && !config_name_valid(o->node))
		return kiln_err_set(err, EINVAL,
				    "invalid node name \"%s\": use letters, digits, '_', '.', '-'", o->node);

	r = config_load(name, &b, err);
	if (r < 0 && r != -ENOENT)
		return r;
	kiln_err_clear(err);

	if (o->leave) {
		if (!b)
			return kiln_err_set(err, ENOENT, "no builder \"%s\" found", name);
		r = create_leave(b, o->node, err);
		if (r < 0)
			return r;
		goto save;
	}

	if (b) {
		if (!o->node && !o->append)
			return kiln_err_set(err, EEXIST,
					    "existing instance for \"%s\" but no append mode, specify the node name to make changes for existing instances",
					    name);
		if (o->driver && strcmp(o->driver, b->driver) != 0)
			return kiln_err_set(err, EINVAL,
					    "invalid driver \"%s\" for existing builder \"%s\" (its driver is \"%s\")",
					    o->driver, name, b->driver);
	} else {
		driver = o->driver ? o->driver : (o->endpoint ? "remote" : "local");
		b = builder_new(name, driver);
		if (!b)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}

	/* Endpoint: the remote driver's one coordinator. */
	if (strcmp(b->driver, "local") == 0 && o->endpoint)
		return kiln_err_set(err, EINVAL,
				    "the local driver takes no endpoint (got \"%s\"); use --driver remote",
				    o->endpoint);
	if (strcmp(b->driver, "remote") == 0) {
		if (o->endpoint) {
			if (!endpoint_valid(o->endpoint))
				return kiln_err_set(err, EINVAL,
						    "invalid endpoint \"%s\": expected tcp://HOST:PORT",
						    o->endpoint);
			free(b->endpoint);
			b->endpoint = strdup(o->endpoint);
			if (!b->endpoint)
				return kiln_err_set(err, ENOMEM, "out of memory");
		}
		if (!b->endpoint)
			return kiln_err_set(err, EINVAL,
					    "the remote driver needs an endpoint: kiln builder create --driver remote tcp://HOST:PORT");
	}

	/* Driver opts: builder-wide ones go on b now, per-node ones wait for
	 * the node. */
	for (size_t i = 0; i < o->n_driver_opts; i++) {
		_cleanup_free_ char *key = NULL;
		const struct opt_spec *spec;
		const char *eq = strchr(o->driver_opts[i], '=');

		if (!eq || eq == o->driver_opts[i])
			return kiln_err_set(err, EINVAL, "invalid driver-opt \"%s\": expected KEY=VALUE",
					    o->driver_opts[i]);
		key = strndup(o->driver_opts[i], (size_t) (eq - o->driver_opts[i]));
		if (!key)
			return kiln_err_set(err, ENOMEM, "out of memory");
		spec = opt_spec_find(b->driver, key);
		if (!spec)
			return kiln_err_set(err, EINVAL, "invalid driver option \"%s\" for %s driver",
					    key, b->driver);
		r = opt_value_check(key, eq + 1, err);
		if (r < 0)
			return r;
		r = spec->per_node ? opts_set(&node_opts.v, &node_opts.n, key, eq + 1) :
				     opts_set(&b->opts, &b->n_opts, key, eq + 1);
		if (r < 0)
			return kiln_err_set(err, -r, "too many driver options");
	}
	if (strcmp(b->driver, "remote") == 0 && kiln_startswith(b->endpoint, "tcp://")) {
		/* tcp:// is always CurveZMQ: without both certificates the
		 * client could never be let in, so refuse now, not at build
		 * time. */
		if (!builder_opt(b, NULL, "cacert"))
			return kiln_err_set(err, EINVAL,
					    "the remote driver needs --driver-opt cacert=FILE (the coordinator's public certificate) for %s",
					    b->endpoint);
		if (!builder_opt(b, NULL, "key"))
			return kiln_err_set(err, EINVAL,
					    "the remote driver needs --driver-opt key=FILE (this client's certificate) for %s",
					    b->endpoint);
	}

	/* The node: named, or the first free NAME0, NAME1, ... */
	if (o->node) {
		snprintf(node_name, sizeof(node_name), "%s", o->node);
	} else {
		unsigned i = (unsigned) b->n_nodes;

		do {
			int w = snprintf(node_name, sizeof(node_name), "%s%u", b->name, i++);

			if (w < 0 || (size_t) w >= sizeof(node_name)) {
					return kiln_err_set(err, ENAMETOOLONG,
						    "builder name too long to derive a node name; use --node");
			}
		} while (builder_node_find(b, node_name));
	}
	n = builder_node_find(b, node_name);
	if (!n) {
		if (strcmp(b->driver, "remote") == 0 && b->n_nodes > 0)
			return kiln_err_set(err, EINVAL,
					    "builder \"%s\" uses the remote driver, which has one node (\"%s\"): workers join its coordinator directly",
					    b->name, b->nodes[0].name);
		n = builder_add_node(b, node_name);
		if (!n)
			return kiln_err_set(err, ENOMEM, "out of memory");
	}
	/* As buildx: what was given replaces, what was not is kept. */
	if (node_opts.n > 0) {
		opts_free(n->opts, n->n_opts);
		n->opts = STEAL_PTR(node_opts.v);
		n->n_opts = node_opts.n;
		node_opts.n = 0;
	}
	if (o->platforms) {
		r = node_set_platforms(n, o->platforms, err);
		if (r < 0)
			return r;
	}

save:
	r = config_save(b, err);
	if (r < 0)
		return r;
	*ret_b = STEAL_PTR(b);
	return 0;
}
