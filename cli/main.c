/* The `kiln` command: global flags, then dispatch to a subcommand, in
 * `docker buildx`'s shape. `--builder NAME` is accepted before or after
 * the subcommand and taken out of the arguments here, so that every
 * subcommand sees one resolved builder and none of them parses it again.
 * buildx's top-level builder commands (create, ls, inspect, use, rm, stop)
 * are aliases of `kiln builder ...`.
 *
 * This file only routes; each command prints its own output and errors
 * and returns its exit status. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "err.h"
#include "log.h"
#include "proto.h"
#include "build.h"
#include "builder.h"
#include "config.h"
#include "debug.h"
#include "imagetools.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.1.0-dev"
#endif

static const char usage[] =
	"Usage:  kiln [--builder NAME] COMMAND [OPTIONS]\n"
	"\n"
	"Build container images on a farm of workers, the docker buildx way\n"
	"\n"
	"Commands:\n"
	"  build       Start a build\n"
	"  builder     Manage builder instances (create, inspect, ls, rm, stop, use)\n"
	"  debug       Look at how kiln reads a build (ast, graph)\n"
	"  imagetools  Commands to work on images in registry (create, inspect)\n"
	"  version     Show the kiln version\n"
	"\n"
	"Builder commands, as in buildx:\n"
	"  create      Create a new builder instance\n"
	"  inspect     Inspect current builder instance\n"
	"  ls          List builder instances\n"
	"  rm          Remove a builder instance\n"
	"  stop        Stop builder instance\n"
	"  use         Set the current builder instance\n"
	"\n"
	"Options:\n"
	"      --builder NAME   Override the configured builder instance (also after COMMAND)\n"
	"  -h, --help           Print usage\n"
	"\n"
	"Environment:\n"
	"  KILN_BUILDER   builder instance to use when --builder is not given\n"
	"  KILN_CONFIG    where builders are kept (default: ~/.kiln)\n"
	"\n"
	"Run 'kiln COMMAND --help' for more information on a command.\n";

static bool
is_builder_alias(const char *cmd)
{
	static const char *const aliases[] = { "create", "inspect", "ls", "rm", "stop", "use" };

	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(cmd, aliases[i]) == 0)
			return true;
	return false;
}

/* Take --builder NAME / --builder=NAME out of argv[1..] (up to a "--"),
 * compacting argv. The last one wins, as with any flag. Returns argc, or
 * -1 for a --builder without a value. */
static int
take_builder_flag(int argc, char **argv, const char **flag)
{
	int out = 1, i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--builder") == 0) {
			if (i + 1 >= argc)
				return -1;
			*flag = argv[++i];
			continue;
		}
		if (strncmp(argv[i], "--builder=", 10) == 0) {
			*flag = argv[i] + 10;
			continue;
		}
		argv[out++] = argv[i];
	}
	for (; i < argc; i++)
		argv[out++] = argv[i];
	argv[out] = NULL;
	return out;
}

static bool
wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

/* Run a command that talks to a builder: resolve it first. */
static int
run_build(int argc, char **argv, const char *flag,
	  int (*cmd)(int argc, char **argv, struct builder *b))
{
	struct builder *b = NULL;
	struct kiln_err err = { 0 };
	int r;

	r = config_resolve(flag, &b, &err);
	if (r < 0 && wants_help(argc, argv)) {
		/* Help must work even with a broken builder configuration. */
		kiln_err_clear(&err);
		r = config_default(&b, &err);
	}
	if (r < 0) {
		fprintf(stderr, "ERROR: %s\n", err.msg);
		return 1;
	}
	r = cmd(argc, argv, b);
	builder_free(b);
	return r;
}

int
main(int argc, char **argv)
{
	const char *flag = NULL;
	char **sub;
	int i, n, rc;

	kiln_log_init("kiln");
	/* czmq would otherwise catch SIGINT/SIGTERM and leave it to every
	 * blocking call to notice; a client should simply die on Ctrl-C. */
	zsys_handler_set(NULL);

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
			printf("kiln %s (protocol %d)\n", KILN_VERSION, PROTO_VERSION);
			return 0;
		}
		if (strcmp(argv[i], "--builder") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "ERROR: flag needs an argument: --builder\n"
					"See 'kiln --help'.\n");
				return 1;
			}
			flag = argv[++i];
			continue;
		}
		if (strncmp(argv[i], "--builder=", 10) == 0) {
			flag = argv[i] + 10;
			continue;
		}
		fprintf(stderr, "ERROR: unknown flag: %s\nSee 'kiln --help'.\n", argv[i]);
		return 1;
	}
	if (i >= argc) {
		fputs(usage, stderr);
		return 1;
	}

	/* One slot in front for the "builder" of an alias, one for NULL. */
	sub = calloc((size_t) (argc - i) + 2, sizeof(*sub));
	if (!sub) {
		fprintf(stderr, "ERROR: out of memory\n");
		return 1;
	}
	sub[0] = "builder";
	memcpy(sub + 1, argv + i, (size_t) (argc - i) * sizeof(*sub));
	n = take_builder_flag(argc - i, sub + 1, &flag);
	if (n < 0) {
		fprintf(stderr, "ERROR: flag needs an argument: --builder\nSee 'kiln --help'.\n");
		free(sub);
		return 1;
	}

	if (strcmp(sub[1], "build") == 0) {
		rc = run_build(n, sub + 1, flag, build_main);
	} else if (strcmp(sub[1], "debug") == 0) {
		if (n >= 2 && strcmp(sub[2], "graph") == 0)
			rc = run_build(n - 1, sub + 2, flag, build_graph_main);
		else
			rc = debug_main(n, sub + 1);
	} else if (strcmp(sub[1], "imagetools") == 0) {
		rc = imagetools_main(n, sub + 1);
	} else if (strcmp(sub[1], "builder") == 0) {
		rc = builder_main(n, sub + 1, flag);
	} else if (is_builder_alias(sub[1])) {
		rc = builder_main(n + 1, sub, flag);
	} else if (strcmp(sub[1], "version") == 0) {
		printf("kiln %s (protocol %d)\n", KILN_VERSION, PROTO_VERSION);
		rc = 0;
	} else if (strcmp(sub[1], "help") == 0) {
		fputs(usage, stdout);
		rc = 0;
	} else {
		fprintf(stderr, "ERROR: unknown command \"%s\" for \"kiln\"\nSee 'kiln --help'.\n",
			sub[1]);
		rc = 1;
	}
	free(sub);
	return rc;
}
