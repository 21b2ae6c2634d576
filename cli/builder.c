/* `kiln builder create|ls|inspect|use|rm|stop`, with buildx's flags,
 * output and error texts, so that people and scripts coming from
 * `docker buildx` find what they expect.
 *
 * The configuration lives in config.c and the processes behind a builder
 * in drivers/; this file parses arguments, puts the two together and
 * prints. ls and inspect never start anything: they report what is
 * running, asking a running coordinator for its live node list, which is
 * the truth about nodes (a configured node that never registered is
 * "inactive", a registered one that stopped answering is "gone"). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "curve.h"
#include "err.h"
#include "resources.h"
#include "util.h"
#include "../drivers/driver.h"
#include "builder.h"
#include "usage.h"
#include "config.h"
#include "conn.h"

#define MAX_CREATE_OPTS 32

/* One node as ls and inspect show it. */
struct node_view {
	char *name;
	char *endpoint;
	char *status;
	char *platforms;
	char *opts;                     /* NULL when none */
	bool live;                      /* reported by the coordinator */
	uint64_t capacity;
	uint64_t load;
};

struct builder_view {
	char error[sizeof(((struct kiln_err *) 0)->msg)];      /* "" when fine */
	struct node_view *nodes;
	size_t n;
};

static void
builder_view_release(struct builder_view *v)
{
	for (size_t i = 0; i < v->n; i++) {
		free(v->nodes[i].name);
		free(v->nodes[i].endpoint);
		free(v->nodes[i].status);
		free(v->nodes[i].platforms);
		free(v->nodes[i].opts);
	}
	free(v->nodes);
	memset(v, 0, sizeof(*v));
}

static int
print_error(const struct kiln_err *err)
{
	fprintf(stderr, "ERROR: %s\n", err->msg[0] ? err->msg : strerror(err->code));
	return 1;
}

/* "a, b, c (emulated)" from native and emulated lists. NULL on ENOMEM. */
static char *
join_platforms(char *const *native, size_t n, char *const *emulated, size_t m)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f;

	f = open_memstream(&s, &len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%s", i ? ", " : "", native[i]);
	for (size_t i = 0; i < m; i++)
		fprintf(f, "%s%s (emulated)", n + i ? ", " : "", emulated[i]);
	if (fclose(f) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* key="val" pairs of the node's driver opts, then the builder's. */
static char *
join_opts(const struct builder *b, const struct builder_node *n)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f;

	if (n->n_opts == 0 && b->n_opts == 0)
		return NULL;
	f = open_memstream(&s, &len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < n->n_opts; i++)
		fprintf(f, "%s%s=\"%s\"", i ? " " : "", n->opts[i].key, n->opts[i].val);
	for (size_t i = 0; i < b->n_opts; i++)
		fprintf(f, "%s%s=\"%s\"", n->n_opts + i ? " " : "", b->opts[i].key, b->opts[i].val);
	if (fclose(f) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

static int
view_add(struct builder_view *v, const char *name, const char *endpoint, const char *status,
	 char *platforms, char *opts)
{
	struct node_view *grown, *nv;

	grown = realloc(v->nodes, (v->n + 1) * sizeof(*grown));
	if (!grown) {
		free(platforms);
		free(opts);
		return -ENOMEM;
	}
	v->nodes = grown;
	nv = &grown[v->n++];
	memset(nv, 0, sizeof(*nv));
	nv->name = strdup(name);
	nv->endpoint = strdup(endpoint);
	nv->status = strdup(status);
	nv->platforms = platforms ? platforms : strdup("");
	nv->opts = opts;
	if (!nv->name || !nv->endpoint || !nv->status || !nv->platforms)
		return -ENOMEM;
	return 0;
}

static const char *
live_status(const char *s)
{
	/* The coordinator says "ready"; buildx users read "running". */
	return strcmp(s, "ready") == 0 ? "running" : s;
}

/* What ls and inspect show for b. Starts nothing. Problems reaching the
 * builder land in v->error; only ENOMEM fails. */
static int
builder_view_build(struct builder *b, struct builder_view *v)
{
	const struct driver_ops *ops = driver_lookup(b->driver);
	struct conn_node *live = NULL;
	struct kiln_err e = { 0 };
	struct conn *c = NULL;
	struct conn_opts o;
	size_t n_live = 0;
	bool *seen = NULL;
	bool local, reached = false;
	int st, r = 0;

	memset(v, 0, sizeof(*v));
	if (!ops) {
		snprintf(v->error, sizeof(v->error), "unknown driver \"%s\"", b->driver);
		return 0;
	}
	local = strcmp(ops->name, "local") == 0;
	if (ops->endpoint(b, &o, &e) < 0) {
		snprintf(v->error, sizeof(v->error), "%s", e.msg);
		return 0;
	}
	st = ops->status(b, &e);
	if (st < 0) {
		snprintf(v->error, sizeof(v->error), "%s", e.msg);
	} else if (st == DRIVER_RUNNING) {
		if (conn_open(&o, &c, &e) == 0 &&
		    conn_nodes_list(c, DRIVER_CHECK_TIMEOUT_MS, &live, &n_live, &e) == 0)
			reached = true;
		else
			snprintf(v->error, sizeof(v->error), "%s", e.msg);
		conn_free(c);
	}
	seen = calloc(n_live + 1, sizeof(*seen));
	if (!seen) {
		conn_nodes_free(live, n_live);
		return -ENOMEM;
	}

	/* Configured nodes first, in their order, then whatever else the
	 * coordinator knows (a remote farm's workers join it directly). */
	for (size_t i = 0; r == 0 && i < b->n_nodes; i++) {
		const struct builder_node *n = &b->nodes[i];
		struct conn_node *ln = NULL;

		for (size_t k = 0; k < n_live; k++)
			if (!seen[k] && strcmp(live[k].name, n->name) == 0) {
				ln = &live[k];
				seen[k] = true;
			}
		if (ln) {
			r = view_add(v, n->name, o.endpoint, live_status(ln->status),
				     join_platforms(ln->platforms, ln->n_platforms, ln->emulated,
						    ln->n_emulated),
				     join_opts(b, n));
			if (r == 0) {
				v->nodes[v->n - 1].live = true;
				v->nodes[v->n - 1].capacity = ln->capacity;
				v->nodes[v->n - 1].load = ln->load;
			}
		} else if (local) {
			/* Not registered (yet), or no coordinator at all. */
			r = view_add(v, n->name, o.endpoint, st == DRIVER_RUNNING && !reached ? "" : "inactive",
				     join_platforms(n->platforms, n->n_platforms, NULL, 0),
				     join_opts(b, n));
		} else if (!reached) {
			/* A remote builder we cannot reach: show what we
			 * would connect to. */
			r = view_add(v, n->name, o.endpoint, "",
				     join_platforms(n->platforms, n->n_platforms, NULL, 0),
				     join_opts(b, n));
		}
	}
	for (size_t k = 0; r == 0 && k < n_live; k++) {
		if (seen[k])
			continue;
		r = view_add(v, live[k].name, o.endpoint, live_status(live[k].status),
			     join_platforms(live[k].platforms, live[k].n_platforms, live[k].emulated,
					    live[k].n_emulated),
			     NULL);
		if (r == 0) {
			v->nodes[v->n - 1].live = true;
			v->nodes[v->n - 1].capacity = live[k].capacity;
			v->nodes[v->n - 1].load = live[k].load;
		}
	}
	free(seen);
	conn_nodes_free(live, n_live);
	return r;
}

/* ---- ls ------------------------------------------------------------- */

#define LS_COLS 4

struct ls_table {
	char *(*rows)[LS_COLS];
	size_t n;
};

static int
ls_row(struct ls_table *t, const char *a, const char *b, const char *c, const char *d)
{
	const char *in[LS_COLS] = { a, b, c, d };
	char *(*grown)[LS_COLS];

	grown = realloc(t->rows, (t->n + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	t->rows = grown;
	for (int i = 0; i < LS_COLS; i++)
		grown[t->n][i] = NULL;
	t->n++;
	for (int i = 0; i < LS_COLS; i++) {
		grown[t->n - 1][i] = strdup(in[i] ? in[i] : "");
		if (!grown[t->n - 1][i])
			return -ENOMEM;
	}
	return 0;
}

static void
ls_table_release(struct ls_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		for (int k = 0; k < LS_COLS; k++)
			free(t->rows[i][k]);
	free(t->rows);
}

static int
ls_last_cell(char *const *row)
{
	int last = LS_COLS - 1;

	while (last > 0 && !row[last][0])
		last--;
	return last;
}

static void
ls_print(const struct ls_table *t)
{
	size_t w[LS_COLS] = { 0 };

	/* A row's last non-empty cell is printed unpadded and does not
	 * widen its column: a builder's long error must not push every
	 * node's platforms off the screen. */
	for (size_t i = 0; i < t->n; i++)
		for (int k = 0; k < ls_last_cell(t->rows[i]); k++)
			if (strlen(t->rows[i][k]) > w[k])
				w[k] = strlen(t->rows[i][k]);
	for (size_t i = 0; i < t->n; i++) {
		int last = ls_last_cell(t->rows[i]);

		for (int k = 0; k < last; k++)
			printf("%-*s   ", (int) w[k], t->rows[i][k]);
		printf("%s\n", t->rows[i][last]);
	}
}

static int
ls_add_builder(struct ls_table *t, const char *name, bool current)
{
	_cleanup_(builder_freep) struct builder *b = NULL;
	struct builder_view v;
	struct kiln_err e = { 0 };
	char title[BUILDER_NAME_MAX + 4], status[sizeof(e.msg) + 8];
	int r;

	snprintf(title, sizeof(title), "%s%s", name, current ? " *" : "");
	r = config_load(name, &b, &e);
	if (r < 0) {
		snprintf(status, sizeof(status), "error: %s", e.msg);
		return ls_row(t, title, "", status, "");
	}
	r = builder_view_build(b, &v);
	if (r < 0)
		return r;
	snprintf(status, sizeof(status), "%s%s", v.error[0] ? "error: " : "", v.error);
	r = ls_row(t, title, b->driver, status, "");
	for (size_t i = 0; r == 0 && i < v.n; i++) {
		_cleanup_free_ char *n = kiln_strdupf(" \\_ %s", v.nodes[i].name);
		_cleanup_free_ char *ep = kiln_strdupf(" \\_ %s", v.nodes[i].endpoint);

		r = n && ep ? ls_row(t, n, ep, v.nodes[i].status, v.nodes[i].platforms) : -ENOMEM;
	}
	builder_view_release(&v);
	return r;
}

static const char ls_help[] =
	"Usage:  kiln builder ls\n"
	"\n"
	"List builder instances. The current one is marked with \"*\". Nodes of a\n"
	"running builder are those its coordinator reports; nothing is started.\n"
	"\n"
	"Options:\n"
	"  -h, --help   Print usage\n";

static int
cmd_ls(int argc, char **argv, const char *flag)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	_cleanup_(builder_freep) struct builder *cur = NULL;
	struct ls_table t = { 0 };
	struct kiln_err e = { 0 };
	char **names = NULL;
	size_t n = 0;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		if (c == 'h') {
			fputs(ls_help, stdout);
			return 0;
		}
		return cli_bad_flag("builder", "ls", argv, c);
	}
	if (optind < argc)
		return cli_usage_error("builder", "ls", "\"kiln builder ls\" accepts no arguments (got \"%s\")",
				   argv[optind]);
	r = config_resolve(flag, &cur, &e);
	if (r < 0)
		return print_error(&e);
	r = config_list(&names, &n, &e);
	if (r < 0)
		return print_error(&e);
	r = ls_row(&t, "NAME/NODE", "DRIVER/ENDPOINT", "STATUS", "PLATFORMS");
	if (r == 0)
		r = ls_add_builder(&t, BUILDER_DEFAULT_NAME,
				   strcmp(cur->name, BUILDER_DEFAULT_NAME) == 0);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = ls_add_builder(&t, names[i], strcmp(cur->name, names[i]) == 0);
	if (r == 0)
		ls_print(&t);
	ls_table_release(&t);
	config_names_free(names, n);
	if (r < 0) {
		kiln_err_set(&e, -r, "out of memory");
		return print_error(&e);
	}
	return 0;
}

/* ---- inspect -------------------------------------------------------- */

static void
field(const char *label, const char *value)
{
	if (value[0])
		printf("%-16s%s\n", label, value);
	else
		printf("%s\n", label);
}

static const char inspect_help[] =
	"Usage:  kiln builder inspect [OPTIONS] [NAME]\n"
	"\n"
	"Inspect a builder instance (default: the current one)\n"
	"\n"
	"Options:\n"
	"      --bootstrap   Ensure builder has booted before inspecting\n"
	"  -h, --help        Print usage\n";

static int
cmd_inspect(int argc, char **argv, const char *flag)
{
	static const struct option longopts[] = {
		{ "bootstrap", no_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	_cleanup_(builder_freep) struct builder *b = NULL;
	struct kiln_err e = { 0 };
	struct builder_view v;
	bool bootstrap = false;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			bootstrap = true;
			break;
		case 'h':
			fputs(inspect_help, stdout);
			return 0;
		default:
			return cli_bad_flag("builder", "inspect", argv, c);
		}
	}
	if (argc - optind > 1)
		return cli_usage_error("builder", "inspect", "\"kiln builder inspect\" accepts at most 1 argument (got \"%s\" too)",
				   argv[optind + 1]);
	r = optind < argc ? config_load(argv[optind], &b, &e) : config_resolve(flag, &b, &e);
	if (r < 0)
		return print_error(&e);
	if (bootstrap) {
		r = driver_lookup(b->driver) ? driver_lookup(b->driver)->start(b, &e) :
		    kiln_err_set(&e, EINVAL, "unknown driver \"%s\"", b->driver);
		if (r < 0)
			return print_error(&e);
	}
	r = builder_view_build(b, &v);
	if (r < 0) {
		kiln_err_set(&e, -r, "out of memory");
		return print_error(&e);
	}
	field("Name:", b->name);
	field("Driver:", b->driver);
	if (v.error[0])
		field("Error:", v.error);
	printf("\nNodes:\n");
	for (size_t i = 0; i < v.n; i++) {
		const struct node_view *n = &v.nodes[i];
		char load[48];

		if (i)
			printf("\n");
		field("Name:", n->name);
		field("Endpoint:", n->endpoint);
		field("Status:", n->status[0] ? n->status : "unknown");
		if (n->opts)
			field("Driver Options:", n->opts);
		field("Platforms:", n->platforms);
		/* What the node said when it registered: the steps it runs
		 * at once (by default the CPUs its worker may use). */
		if (n->live && n->capacity > 0) {
			snprintf(load, sizeof(load), "%llu", (unsigned long long) n->capacity);
			field("Capacity:", load);
			snprintf(load, sizeof(load), "%llu/%llu", (unsigned long long) n->load,
				 (unsigned long long) n->capacity);
			field("Load:", load);
		}
	}
	builder_view_release(&v);
	return 0;
}

/* ---- create --------------------------------------------------------- */

static const char create_help[] =
	"Usage:  kiln builder create [OPTIONS] [ENDPOINT]\n"
	"\n"
	"Create a new builder instance, or change one (--append, --node, --leave)\n"
	"\n"
	"Options:\n"
	"      --append                Append a node to builder instead of changing it\n"
	"      --bootstrap             Boot builder after creation\n"
	"      --driver string         Driver to use (available: \"local\", \"remote\")\n"
	"      --driver-opt KEY=VALUE  Options for the driver (repeatable)\n"
	"      --leave                 Remove a node from builder instead of changing it\n"
	"      --name string           Builder instance name (default: kiln0, kiln1, ...)\n"
	"      --node string           Create/modify node with given name\n"
	"      --platform strings      Fixed platforms for current node (repeatable, comma-separated)\n"
	"      --use                   Set the current builder instance\n"
	"  -h, --help                  Print usage\n"
	"\n"
	"ENDPOINT is the coordinator of a remote builder: tcp://HOST:PORT.\n"
	"\n"
	"Driver options:\n"
	"  local:   cpuset-cpus=LIST   CPUs the node's worker and steps may use (e.g. 0-3, 0,2)\n"
	"           memory=SIZE        memory limit of the node (e.g. 512m, 4g; needs cgroup v2)\n"
	"  remote:  cacert=FILE        the coordinator's public certificate\n"
	"           key=FILE           this client's certificate (created if missing;\n"
	"                              default $KILN_CONFIG/keys/client.cert)\n";

static int
abs_path(const char *path, char *buf, size_t size, struct kiln_err *err)
{
	char cwd[PATH_MAX];
	int n;

	if (path[0] == '/') {
		n = snprintf(buf, size, "%s", path);
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return kiln_err_errno(err, errno, "getcwd");
		n = snprintf(buf, size, "%s/%s", cwd, path);
	}
	if (n < 0 || (size_t) n >= size)
		return kiln_err_set(err, ENAMETOOLONG, "path too long: '%s'", path);
	return 0;
}

/* Create the keypair at path unless it exists, and say so when we did:
 * the coordinator must be told about a new key before it lets us in. */
static int
ensure_key(const char *path, struct kiln_err *err)
{
	_cleanup_free_ char *secret = kiln_strdupf("%s_secret", path);
	bool existed;
	int r;

	if (!secret)
		return kiln_err_set(err, ENOMEM, "out of memory");
	existed = access(secret, F_OK) == 0;
	r = curve_ensure_cert(path, err);
	if (r < 0)
		return kiln_err_wrap(err, "driver-opt key");
	if (!existed)
		fprintf(stderr,
			"created client key '%s': allow it on the coordinator (kiln-coordinator's allowed/ directory)\n",
			path);
	return 0;
}

/* Rewrite the remote driver's file options to absolute paths (the builder
 * is used from any directory later), check cacert is readable, create the
 * key, and add the default key when the builder would have none. opts
 * entries are malloc'd. */
static int
prepare_remote_opts(const char *name, const char *driver, const char *endpoint,
		    char **opts, size_t *n_opts, struct kiln_err *err)
{
	_cleanup_(builder_freep) struct builder *old = NULL;
	bool have_key = false, have_ca, remote, tcp;
	char path[CURVE_PATH_MAX + 1];
	int r;

	if (name && config_load(name, &old, NULL) < 0)
		old = NULL;
	if (driver)
		remote = strcmp(driver, "remote") == 0;
	else
		remote = old ? strcmp(old->driver, "remote") == 0 : endpoint != NULL;
	if (!remote)
		return 0;
	tcp = kiln_startswith(endpoint ? endpoint : old && old->endpoint ? old->endpoint : "",
			      "tcp://");
	if (old && builder_opt(old, NULL, "key"))
		have_key = true;
	have_ca = old && builder_opt(old, NULL, "cacert");
	for (size_t i = 0; i < *n_opts; i++)
		if (kiln_startswith(opts[i], "cacert="))
			have_ca = true;
	/* Without the coordinator's certificate config_create() refuses
	 * the builder; do not leave a new key behind for nothing. */
	if (tcp && !have_ca)
		return 0;

	for (size_t i = 0; i < *n_opts; i++) {
		bool is_key = kiln_startswith(opts[i], "key="), is_ca = kiln_startswith(opts[i], "cacert=");
		const char *val = strchr(opts[i], '=') + 1;
		char *rewritten;

		if (!is_key && !is_ca)
			continue;
		if (!*val)
			return kiln_err_set(err, EINVAL, "driver-opt %s needs a file", opts[i]);
		r = abs_path(val, path, sizeof(path), err);
		if (r < 0)
			return r;
		if (is_ca && access(path, R_OK) < 0)
			return kiln_err_errno(err, errno, "driver-opt cacert: '%s'", path);
		if (is_key) {
			r = ensure_key(path, err);
			if (r < 0)
				return r;
			have_key = true;
		}
		rewritten = kiln_strdupf("%s=%s", is_key ? "key" : "cacert", path);
		if (!rewritten)
			return kiln_err_set(err, ENOMEM, "out of memory");
		free(opts[i]);
		opts[i] = rewritten;
	}
	if (tcp && !have_key) {
		char dir[PATH_MAX];

		if (*n_opts >= MAX_CREATE_OPTS)
			return kiln_err_set(err, E2BIG, "too many driver options");
		r = config_dir(dir, sizeof(dir), err);
		if (r < 0)
			return r;
		r = snprintf(path, sizeof(path), "%s/keys", dir);
		if (r < 0 || (size_t) r >= sizeof(path))
			return kiln_err_set(err, ENAMETOOLONG, "'%s/keys': path too long", dir);
		r = kiln_mkdir_p(path, 0700);
		if (r < 0)
			return kiln_err_errno(err, -r, "create '%s'", path);
		r = snprintf(path, sizeof(path), "%s/keys/client.cert", dir);
		if (r < 0 || (size_t) r >= sizeof(path))
			return kiln_err_set(err, ENAMETOOLONG, "'%s/keys/client.cert': path too long", dir);
		r = ensure_key(path, err);
		if (r < 0)
			return r;
		opts[*n_opts] = kiln_strdupf("key=%s", path);
		if (!opts[*n_opts])
			return kiln_err_set(err, ENOMEM, "out of memory");
		(*n_opts)++;
	}
	return 0;
}

/* A local node runs here, so CPUs this machine does not give us are an
 * error now rather than a worker that dies at its first start (docker's
 * words, as buildx's docker-container driver would report them). Syntax
 * errors are config_create()'s. */
static int
check_local_cpus(const char *name, const char *driver, const char *endpoint,
		 char *const *opts, size_t n_opts, struct kiln_err *err)
{
	_cleanup_(builder_freep) struct builder *old = NULL;
	char have[RESOURCES_CPUS_STR_SIZE];
	cpu_set_t avail, cpus, both;
	bool local;

	if (driver)
		local = strcmp(driver, "local") == 0;
	else if (name && config_load(name, &old, NULL) == 0)
		local = strcmp(old->driver, "local") == 0;
	else
		local = endpoint == NULL;
	if (!local || sched_getaffinity(0, sizeof(avail), &avail) < 0)
		return 0;
	for (size_t i = 0; i < n_opts; i++) {
		const char *val = opts[i] + strlen("cpuset-cpus=");

		if (!kiln_startswith(opts[i], "cpuset-cpus=") || resources_parse_cpus(val, &cpus, NULL) < 0)
			continue;
		CPU_AND(&both, &cpus, &avail);
		if (CPU_EQUAL(&both, &cpus))
			continue;
		(void) resources_fmt_cpus(&avail, have, sizeof(have));
		return kiln_err_set(err, EINVAL,
				    "driver-opt cpuset-cpus: requested CPUs are not available - requested %s, available: %s",
				    val, have);
	}
	return 0;
}

static int
cmd_create(int argc, char **argv)
{
	enum { O_APPEND_ = 1000, O_BOOTSTRAP, O_DRIVER, O_DRIVER_OPT, O_LEAVE, O_NAME, O_NODE,
	       O_PLATFORM, O_USE };
	static const struct option longopts[] = {
		{ "append", no_argument, NULL, O_APPEND_ },
		{ "bootstrap", no_argument, NULL, O_BOOTSTRAP },
		{ "driver", required_argument, NULL, O_DRIVER },
		{ "driver-opt", required_argument, NULL, O_DRIVER_OPT },
		{ "leave", no_argument, NULL, O_LEAVE },
		{ "name", required_argument, NULL, O_NAME },
		{ "node", required_argument, NULL, O_NODE },
		{ "platform", required_argument, NULL, O_PLATFORM },
		{ "use", no_argument, NULL, O_USE },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	_cleanup_(builder_freep) struct builder *b = NULL;
	_cleanup_free_ char *platforms = NULL;
	struct builder_create_opts o = { 0 };
	char *opts[MAX_CREATE_OPTS + 1] = { 0 };
	size_t n_opts = 0;
	struct kiln_err e = { 0 };
	bool use = false, bootstrap = false;
	int c, r, rc = 1;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case O_APPEND_:
			o.append = true;
			break;
		case O_BOOTSTRAP:
			bootstrap = true;
			break;
		case O_DRIVER:
			o.driver = optarg;
			break;
		case O_DRIVER_OPT:
			if (n_opts >= MAX_CREATE_OPTS) {
				rc = cli_usage_error("builder", "create", "too many --driver-opt (at most %d)", MAX_CREATE_OPTS);
				goto out;
			}
			opts[n_opts] = strdup(optarg);
			if (!opts[n_opts]) {
				kiln_err_set(&e, ENOMEM, "out of memory");
				goto out_error;
			}
			n_opts++;
			break;
		case O_LEAVE:
			o.leave = true;
			break;
		case O_NAME:
			o.name = optarg;
			break;
		case O_NODE:
			o.node = optarg;
			break;
		case O_PLATFORM: {
			/* buildx takes both --platform a,b and repeated flags. */
			char *joined = kiln_strdupf("%s%s%s", platforms ? platforms : "",
						    platforms ? "," : "", optarg);

			if (!joined) {
				kiln_err_set(&e, ENOMEM, "out of memory");
				goto out_error;
			}
			free(platforms);
			platforms = joined;
			break;
		}
		case O_USE:
			use = true;
			break;
		case 'h':
			fputs(create_help, stdout);
			rc = 0;
			goto out;
		default:
			rc = cli_bad_flag("builder", "create", argv, c);
			goto out;
		}
	}
	if (argc - optind > 1) {
		rc = cli_usage_error("builder", "create", "\"kiln builder create\" accepts at most 1 endpoint (got \"%s\" too)",
				 argv[optind + 1]);
		goto out;
	}
	if (optind < argc)
		o.endpoint = argv[optind];
	if (o.leave && (o.append || o.endpoint || platforms || n_opts)) {
		rc = cli_usage_error("builder", "create", "%s", "--leave takes only --name and --node");
		goto out;
	}
	o.platforms = platforms;

	r = prepare_remote_opts(o.name, o.driver, o.endpoint, opts, &n_opts, &e);
	if (r == 0)
		r = check_local_cpus(o.name, o.driver, o.endpoint, opts, n_opts, &e);
	if (r < 0)
		goto out_error;
	o.driver_opts = (const char *const *) opts;
	o.n_driver_opts = n_opts;
	r = config_create(&o, &b, &e);
	if (r < 0)
		goto out_error;
	if (use) {
		r = config_use(b->name, &e);
		if (r < 0)
			goto out_error;
	}
	if (bootstrap) {
		const struct driver_ops *ops = driver_lookup(b->driver);

		r = ops ? ops->start(b, &e) : kiln_err_set(&e, EINVAL, "unknown driver");
		if (r < 0)
			goto out_error;
	}
	printf("%s\n", b->name);
	rc = 0;
	goto out;

out_error:
	rc = print_error(&e);
out:
	for (size_t i = 0; i < n_opts; i++)
		free(opts[i]);
	return rc;
}

/* ---- use, rm, stop -------------------------------------------------- */

static const char use_help[] =
	"Usage:  kiln builder use NAME\n"
	"\n"
	"Set the current builder instance\n"
	"\n"
	"Options:\n"
	"  -h, --help   Print usage\n";

static const char rm_help[] =
	"Usage:  kiln builder rm [OPTIONS] [NAME]\n"
	"\n"
	"Remove a builder instance (default: the current one): stop its processes,\n"
	"delete its state and its configuration\n"
	"\n"
	"Options:\n"
	"      --keep-state   Keep the builder's state (its cache)\n"
	"  -h, --help         Print usage\n";

static const char stop_help[] =
	"Usage:  kiln builder stop [NAME]\n"
	"\n"
	"Stop a builder instance (default: the current one); the next build starts it again\n"
	"\n"
	"Options:\n"
	"  -h, --help   Print usage\n";

/* use, rm and stop share their shape: flags, then at most one NAME. */
static int
cmd_simple(const char *cmd, int argc, char **argv, const char *flag)
{
	static const struct option longopts[] = {
		{ "keep-state", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	_cleanup_(builder_freep) struct builder *b = NULL;
	const struct driver_ops *ops;
	struct kiln_err e = { 0 };
	bool keep_state = false;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (c == 'h') {
			fputs(strcmp(cmd, "use") == 0 ? use_help :
			      strcmp(cmd, "rm") == 0 ? rm_help : stop_help, stdout);
			return 0;
		}
		if (c == 'k' && strcmp(cmd, "rm") == 0) {
			keep_state = true;
			continue;
		}
		return cli_bad_flag("builder", cmd, argv, c == 'k' ? '?' : c);
	}
	if (argc - optind > 1)
		return cli_usage_error("builder", cmd, "too many arguments (from \"%s\" on)", argv[optind + 1]);
	if (strcmp(cmd, "use") == 0) {
		if (optind >= argc)
			return cli_usage_error("builder", cmd, "%s", "\"kiln builder use\" requires 1 argument (NAME)");
		r = config_use(argv[optind], &e);
		return r < 0 ? print_error(&e) : 0;
	}

	r = optind < argc ? config_load(argv[optind], &b, &e) : config_resolve(flag, &b, &e);
	if (r < 0)
		return print_error(&e);
	if (strcmp(cmd, "rm") == 0 && b->is_default) {
		kiln_err_set(&e, EINVAL, "default builder cannot be removed");
		return print_error(&e);
	}
	ops = driver_lookup(b->driver);
	if (!ops) {
		kiln_err_set(&e, EINVAL, "builder \"%s\": unknown driver \"%s\"", b->name, b->driver);
		return print_error(&e);
	}
	if (strcmp(cmd, "stop") == 0 || keep_state)
		r = ops->stop(b, &e);
	else
		r = ops->remove(b, &e);
	if (r < 0)
		return print_error(&e);
	if (strcmp(cmd, "rm") == 0) {
		r = config_remove(b->name, &e);
		if (r < 0)
			return print_error(&e);
		printf("%s removed\n", b->name);
	}
	return 0;
}

/* ---- dispatch ------------------------------------------------------- */

static const char builder_help[] =
	"Usage:  kiln builder COMMAND\n"
	"\n"
	"Manage builder instances\n"
	"\n"
	"Commands:\n"
	"  create      Create a new builder instance\n"
	"  inspect     Inspect current builder instance\n"
	"  ls          List builder instances\n"
	"  rm          Remove a builder instance\n"
	"  stop        Stop builder instance\n"
	"  use         Set the current builder instance\n"
	"\n"
	"Run 'kiln builder COMMAND --help' for more information on a command.\n";

int
builder_main(int argc, char **argv, const char *builder_flag)
{
	const char *cmd;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(builder_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? 1 : 0;
	}
	cmd = argv[1];
	/* getopt reports errors against argv[0]: make it the subcommand. */
	argc--;
	argv++;
	if (strcmp(cmd, "create") == 0)
		return cmd_create(argc, argv);
	if (strcmp(cmd, "ls") == 0)
		return cmd_ls(argc, argv, builder_flag);
	if (strcmp(cmd, "inspect") == 0)
		return cmd_inspect(argc, argv, builder_flag);
	if (strcmp(cmd, "use") == 0 || strcmp(cmd, "rm") == 0 || strcmp(cmd, "stop") == 0)
		return cmd_simple(cmd, argc, argv, builder_flag);
	fprintf(stderr, "ERROR: unknown command \"%s\" for \"kiln builder\"\n"
		"See 'kiln builder --help'.\n", cmd);
	return 1;
}
