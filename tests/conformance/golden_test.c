/* Golden tests for the planner: every tests/data/dockerfile/NNN-name.Dockerfile
 * is planned against a fixed fake build context and fixed fake base images,
 * and the graph (plan_dump_json) must equal NNN-name.graph byte for byte.
 * When planning fails, the output is "error: MESSAGE\n" instead, and the
 * .graph file holds that line.
 *
 * Usage: golden_test [--update] [DIR]   (default tests/data/dockerfile,
 * relative to the repository root). Prints each failing case with a
 * unified diff of expected and actual, then "N passed, N failed"; exits 1 on
 * any failure. Every case runs; a case without its .graph (or a .graph
 * without its .Dockerfile) fails. --update writes the actual output to the
 * .graph files (review the diff before committing) and still counts.
 *
 * Per-case options go in comment lines of the Dockerfile, anywhere:
 *   # kiln-golden: --target NAME --build-arg K=V --platform OS/ARCH[/V]
 *   # kiln-golden: --build-platform OS/ARCH[/V] --filename NAME
 * (several such lines add up; --build-arg repeats). Defaults: platform and
 * build platform linux/amd64, no target, no build args, filename
 * "Dockerfile".
 *
 * The fake build context (paths, kinds, modes; digests are sha256 of
 * "file:PATH"):
 *   a.txt 0644, app/ 0755, app/go.mod 0644, app/main.go 0644, b.txt 0600,
 *   bin/ 0755, bin/tool 0755, config.tar.gz 0644, docs/ 0755,
 *   docs/readme.md 0644, link -> a.txt, src/ 0755, src/main.c 0644,
 *   src/sub/ 0700, src/sub/x.c 0644
 * The fake named contexts (images resolved for the case's platform):
 *   base          2 layers; Env PATH, LANG=C.UTF-8; Cmd ["/bin/sh"];
 *                 Labels org.opencontainers.image.vendor=kiln; 2 history
 *                 entries; extra Docker fields that BuildKit drops
 *   onbuild-base  1 layer; WorkingDir /srv; User app; ExposedPorts 22/tcp;
 *                 OnBuild ["RUN echo triggered", "COPY a.txt /onbuild/"]
 *   tools         1 layer; no Env; Entrypoint ["/usr/bin/tool"]
 *   onbuild-from  1 layer; OnBuild ["COPY --from=builder /out /from-builder"]
 *   onbuild-multi 1 layer; OnBuild ["RUN a\nRUN b"] (not one instruction) */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "err.h"
#include "oci.h"
#include "platform.h"
#include "util.h"
#include "../../coordinator/plan.h"

#define MAX_FILE (1u << 20)
#define MAX_ARGS 32

struct opts {
	const char *target;
	char *build_args[MAX_ARGS];
	size_t n_build_args;
	struct platform platform;
	struct platform build_platform;
	const char *filename;
};

static const struct {
	const char *path;
	char kind;
	unsigned mode;
	const char *link;
} fake_files[] = {
	{ "a.txt", 'f', 0644, NULL },
	{ "app", 'd', 0755, NULL },
	{ "app/go.mod", 'f', 0644, NULL },
	{ "app/main.go", 'f', 0644, NULL },
	{ "b.txt", 'f', 0600, NULL },
	{ "bin", 'd', 0755, NULL },
	{ "bin/tool", 'f', 0755, NULL },
	{ "config.tar.gz", 'f', 0644, NULL },
	{ "docs", 'd', 0755, NULL },
	{ "docs/readme.md", 'f', 0644, NULL },
	{ "link", 'l', 0777, "a.txt" },
	{ "src", 'd', 0755, NULL },
	{ "src/main.c", 'f', 0644, NULL },
	{ "src/sub", 'd', 0700, NULL },
	{ "src/sub/x.c", 'f', 0644, NULL },
};
#define N_FILES (sizeof(fake_files) / sizeof(fake_files[0]))

static const struct {
	const char *name;
	size_t layers;
	const char *config;         /* "config" section and extras; platform filled in */
} fake_images[] = {
	{ "base", 2,
	  "{\"config\": {\"Env\": [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\","
	  " \"LANG=C.UTF-8\"], \"Cmd\": [\"/bin/sh\"], \"Labels\": {\"org.opencontainers.image.vendor\":"
	  " \"kiln\"}, \"Hostname\": \"\", \"AttachStdin\": false, \"Image\": \"sha256:1234\"},"
	  " \"container\": \"abcdef\", \"docker_version\": \"20.10.0\","
	  " \"created\": \"2024-01-02T03:04:05Z\","
	  " \"history\": [{\"created\": \"2024-01-02T03:04:05Z\", \"created_by\": \"ADD rootfs.tar / # base\"},"
	  " {\"created\": \"2024-01-02T03:04:05Z\", \"created_by\": \"CMD [\\\"/bin/sh\\\"]\", \"empty_layer\": true},"
	  " {\"created\": \"2024-01-02T03:04:05Z\", \"created_by\": \"RUN setup # base\"}]}" },
	{ "onbuild-base", 1,
	  "{\"config\": {\"Env\": [\"PATH=/usr/bin:/bin\"], \"WorkingDir\": \"/srv\", \"User\": \"app\","
	  " \"ExposedPorts\": {\"22/tcp\": {}}, \"OnBuild\": [\"RUN echo triggered\", \"COPY a.txt /onbuild/\"]},"
	  " \"history\": [{\"created_by\": \"ADD rootfs.tar / # onbuild-base\"}]}" },
	{ "tools", 1,
	  "{\"config\": {\"Entrypoint\": [\"/usr/bin/tool\"]},"
	  " \"history\": [{\"created_by\": \"ADD tools.tar / # tools\"}]}" },
	{ "onbuild-from", 1,
	  "{\"config\": {\"Env\": [\"PATH=/bin\"], \"OnBuild\": [\"COPY --from=builder /out /from-builder\"]},"
	  " \"history\": [{\"created_by\": \"ADD x.tar / # onbuild-from\"}]}" },
	{ "onbuild-multi", 1,
	  "{\"config\": {\"Env\": [\"PATH=/bin\"], \"OnBuild\": [\"RUN a\\nRUN b\"]},"
	  " \"history\": [{\"created_by\": \"ADD x.tar / # onbuild-multi\"}]}" },
};
#define N_IMAGES (sizeof(fake_images) / sizeof(fake_images[0]))

static int
cmp_files(const void *a, const void *b)
{
	return strcmp(((const struct plan_file *) a)->path, ((const struct plan_file *) b)->path);
}

static void
make_files(struct plan_file *files)
{
	for (size_t i = 0; i < N_FILES; i++) {
		char buf[256];

		memset(&files[i], 0, sizeof(files[i]));
		files[i].path = (char *) fake_files[i].path;
		files[i].kind = fake_files[i].kind;
		files[i].mode = fake_files[i].mode;
		files[i].mtime = 1700000000 + (int64_t) i;
		files[i].size = fake_files[i].kind == 'f' ? 100 + i : 0;
		files[i].link = (char *) fake_files[i].link;
		if (fake_files[i].kind == 'f') {
			snprintf(buf, sizeof(buf), "file:%s", fake_files[i].path);
			digest_buf(buf, strlen(buf), &files[i].digest);
		}
	}
	qsort(files, N_FILES, sizeof(*files), cmp_files);
}

/* The fake images for platform p. Returns 0 or -1 (message printed). */
static int
make_contexts(const struct platform *p, struct plan_context *ctxs, struct plan_layer *layers)
{
	size_t nl = 0;

	for (size_t i = 0; i < N_IMAGES; i++) {
		json_error_t je;
		json_t *cfg = json_loads(fake_images[i].config, 0, &je);
		json_t *ids = json_array();
		struct kiln_err err = { 0 };
		char *text;

		if (!cfg || !ids) {
			printf("internal: fake image %s: %s\n", fake_images[i].name, je.text);
			json_decref(ids);
			return -1;
		}
		json_object_set_new(cfg, "os", json_string(p->os));
		json_object_set_new(cfg, "architecture", json_string(p->arch));
		if (p->variant[0])
			json_object_set_new(cfg, "variant", json_string(p->variant));
		ctxs[i].name = (char *) fake_images[i].name;
		ctxs[i].layers = &layers[nl];
		ctxs[i].n_layers = fake_images[i].layers;
		for (size_t k = 0; k < fake_images[i].layers; k++, nl++) {
			char buf[128], ds[DIGEST_STR_SIZE];

			memset(&layers[nl], 0, sizeof(layers[nl]));
			snprintf(buf, sizeof(buf), "layer:%s:%zu", fake_images[i].name, k);
			digest_buf(buf, strlen(buf), &layers[nl].l.digest);
			snprintf(buf, sizeof(buf), "diff:%s:%zu", fake_images[i].name, k);
			digest_buf(buf, strlen(buf), &layers[nl].l.diff_id);
			layers[nl].l.size = 1000 + nl;
			snprintf(layers[nl].media_type, sizeof(layers[nl].media_type), "%s", OCI_MT_LAYER_GZ);
			json_array_append_new(ids, json_string(digest_fmt(&layers[nl].l.diff_id, ds)));
		}
		json_object_set_new(cfg, "rootfs", json_pack("{s:s, s:o}", "type", "layers", "diff_ids", ids));
		text = json_dumps(cfg, JSON_COMPACT);
		json_decref(cfg);
		if (!text || oci_config_parse(text, strlen(text), &ctxs[i].config, &err) < 0) {
			printf("internal: fake image %s: %s\n", fake_images[i].name, err.msg);
			free(text);
			return -1;
		}
		free(text);
	}
	return 0;
}

/* Read "# kiln-golden: ..." lines. */
static int
read_opts(const char *df, struct opts *o, char **store, size_t *n_store)
{
	const char *line = df;

	memset(o, 0, sizeof(*o));
	o->filename = "Dockerfile";
	platform_parse("linux/amd64", &o->platform);
	platform_parse("linux/amd64", &o->build_platform);
	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t) (end - line) : strlen(line);
		const char *tag = "# kiln-golden:";

		if (len > strlen(tag) && strncmp(line, tag, strlen(tag)) == 0) {
			char *copy = strndup(line + strlen(tag), len - strlen(tag));
			char *save = NULL, *w;

			if (!copy || *n_store >= 64) {
				free(copy);
				return -1;
			}
			store[(*n_store)++] = copy;
			for (w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
				char *v = strtok_r(NULL, " \t", &save);

				if (!v) {
					printf("option %s without a value\n", w);
					return -1;
				}
				if (strcmp(w, "--target") == 0) {
					o->target = v;
				} else if (strcmp(w, "--build-arg") == 0 && o->n_build_args < MAX_ARGS) {
					o->build_args[o->n_build_args++] = v;
				} else if (strcmp(w, "--platform") == 0) {
					if (platform_parse(v, &o->platform) < 0)
						return -1;
				} else if (strcmp(w, "--build-platform") == 0) {
					if (platform_parse(v, &o->build_platform) < 0)
						return -1;
				} else if (strcmp(w, "--filename") == 0) {
					o->filename = v;
				} else {
					printf("unknown kiln-golden option %s\n", w);
					return -1;
				}
			}
		}
		line = end ? end + 1 : NULL;
	}
	return 0;
}

/* The output for one Dockerfile: the graph or "error: ...". */
static char *
run_case(const char *df, size_t len)
{
	struct plan_file files[N_FILES];
	struct plan_context ctxs[N_IMAGES];
	struct plan_layer layers[16];
	char *store[64];
	size_t n_store = 0;
	struct plan_input in = { 0 };
	struct kiln_err err = { 0 };
	struct opts o;
	struct plan *p = NULL;
	char *out = NULL;

	memset(ctxs, 0, sizeof(ctxs));
	make_files(files);
	if (read_opts(df, &o, store, &n_store) < 0) {
		out = strdup("error: bad kiln-golden options\n");
		goto out;
	}
	if (make_contexts(&o.platform, ctxs, layers) < 0)
		goto out;
	in.dockerfile = df;
	in.dockerfile_len = len;
	in.filename = o.filename;
	in.build_args = o.build_args;
	in.n_build_args = o.n_build_args;
	in.target = o.target;
	in.platform = o.platform;
	in.build_platform = &o.build_platform;
	in.contexts = ctxs;
	in.n_contexts = N_IMAGES;
	in.files = files;
	in.n_files = N_FILES;
	if (plan_build(&in, &p, &err) < 0)
		out = kiln_strdupf("error: %s\n", err.msg);
	else
		out = plan_dump_json(p);
	plan_free(p);
out:
	for (size_t i = 0; i < N_IMAGES; i++)
		json_decref(ctxs[i].config);
	for (size_t i = 0; i < n_store; i++)
		free(store[i]);
	return out;
}

static char *
read_file(const char *path, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;

	if (kiln_read_file_at(AT_FDCWD, path, MAX_FILE, &buf, &len) < 0)
		return NULL;
	if (ret_len)
		*ret_len = len;
	return buf;
}

/* ---- a small unified diff (LCS over lines) ---- */

struct lines {
	char **v;
	size_t n;
};

static void
split_lines(char *text, struct lines *l)
{
	size_t cap = 16;

	l->n = 0;
	l->v = malloc(cap * sizeof(*l->v));
	while (l->v && text && *text) {
		char *nl = strchr(text, '\n');

		if (l->n == cap) {
			char **nv = realloc(l->v, (cap *= 2) * sizeof(*nv));

			if (!nv)
				break;
			l->v = nv;
		}
		l->v[l->n++] = text;
		if (!nl)
			break;
		*nl = '\0';
		text = nl + 1;
	}
}

static void
print_diff(const char *expected, const char *actual)
{
	char *a = strdup(expected), *b = strdup(actual);
	struct lines la, lb;
	unsigned *t;
	size_t n, m;

	split_lines(a, &la);
	split_lines(b, &lb);
	n = la.n;
	m = lb.n;
	t = calloc((n + 1) * (m + 1), sizeof(*t));
	if (!a || !b || !la.v || !lb.v || !t || n * m > 40000000u) {
		printf("--- expected\n%s\n+++ actual\n%s\n", expected, actual);
		goto out;
	}
#define T(i, j) t[(i) * (m + 1) + (j)]
	for (size_t i = n; i-- > 0;)
		for (size_t j = m; j-- > 0;)
			T(i, j) = strcmp(la.v[i], lb.v[j]) == 0 ? T(i + 1, j + 1) + 1 :
				  (T(i + 1, j) > T(i, j + 1) ? T(i + 1, j) : T(i, j + 1));
	printf("--- expected\n+++ actual\n");
	{
		/* the edit script, then changes with 3 lines of context */
		size_t i = 0, j = 0, k = 0, cap = n + m + 1;
		char *op = malloc(cap);
		size_t *oi = malloc(cap * sizeof(*oi)), *oj = malloc(cap * sizeof(*oj));
		bool *show = calloc(cap, sizeof(*show));

		if (!op || !oi || !oj || !show) {
			free(op);
			free(oi);
			free(oj);
			free(show);
			goto out;
		}
		while (i < n || j < m) {
			oi[k] = i;
			oj[k] = j;
			if (i < n && j < m && strcmp(la.v[i], lb.v[j]) == 0) {
				op[k++] = ' ';
				i++;
				j++;
			} else if (j < m && (i == n || T(i, j + 1) > T(i + 1, j))) {
				op[k++] = '+';
				j++;
			} else {
				op[k++] = '-';
				i++;
			}
		}
		for (size_t x = 0; x < k; x++)
			if (op[x] != ' ')
				for (size_t y = x >= 3 ? x - 3 : 0; y < k && y <= x + 3; y++)
					show[y] = true;
		for (size_t x = 0; x < k; x++) {
			if (!show[x])
				continue;
			if (x == 0 || !show[x - 1])
				printf("@@ -%zu +%zu @@\n", oi[x] + 1, oj[x] + 1);
			printf("%c%s\n", op[x], op[x] == '+' ? lb.v[oj[x]] : la.v[oi[x]]);
		}
		free(op);
		free(oi);
		free(oj);
		free(show);
	}
#undef T
out:
	free(t);
	free(la.v);
	free(lb.v);
	free(a);
	free(b);
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool
ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a > b && strcmp(s + a - b, suffix) == 0;
}

int
main(int argc, char **argv)
{
	const char *dir = "tests/data/dockerfile";
	bool update = false;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int pass = 0, fail = 0;
	struct dirent *de;
	DIR *d;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--update") == 0)
			update = true;
		else
			dir = argv[i];
	}
	d = opendir(dir);
	if (!d) {
		printf("cannot open %s: %s\n0 passed, 1 failed\n", dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		if (!ends_with(de->d_name, ".Dockerfile") && !ends_with(de->d_name, ".graph"))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*nn));

			if (!nn)
				return 1;
			names = nn;
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_names);

	for (size_t i = 0; i < n; i++) {
		char path[4096], gpath[4096];
		char *df, *expected, *actual;
		size_t len;

		if (ends_with(names[i], ".graph")) {
			/* a .graph must have its .Dockerfile */
			size_t base = strlen(names[i]) - strlen(".graph");

			snprintf(path, sizeof(path), "%s/%.*s.Dockerfile", dir, (int) base, names[i]);
			if (access(path, F_OK) != 0) {
				printf("FAIL %s: no %.*s.Dockerfile beside it\n", names[i], (int) base, names[i]);
				fail++;
			}
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		snprintf(gpath, sizeof(gpath), "%s/%.*s.graph", dir,
			 (int) (strlen(names[i]) - strlen(".Dockerfile")), names[i]);
		df = read_file(path, &len);
		if (!df) {
			printf("FAIL %s: cannot read it\n", names[i]);
			fail++;
			continue;
		}
		actual = run_case(df, len);
		expected = read_file(gpath, NULL);
		if (!actual) {
			printf("FAIL %s: planner produced no output (out of memory?)\n", names[i]);
			fail++;
		} else if (update) {
			if (!expected || strcmp(expected, actual) != 0) {
				if (kiln_write_file_atomic(AT_FDCWD, gpath, actual, strlen(actual), 0644) < 0) {
					printf("FAIL %s: cannot write %s\n", names[i], gpath);
					fail++;
				} else {
					printf("UPDATED %s\n", gpath);
					pass++;
				}
			} else {
				pass++;
			}
		} else if (!expected) {
			printf("FAIL %s: no expected output %s; actual:\n%s", names[i], gpath, actual);
			fail++;
		} else if (strcmp(expected, actual) != 0) {
			printf("FAIL %s\n", names[i]);
			print_diff(expected, actual);
			fail++;
		} else {
			pass++;
		}
		free(df);
		free(expected);
		free(actual);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	printf("dockerfile golden graphs: %d passed, %d failed\n", pass, fail);
	return fail ? 1 : 0;
}
