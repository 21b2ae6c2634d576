/* `kiln debug ast FILE`, and how the client prints the answers of
 * `kiln build --call outline|targets` and `kiln debug graph`. (`kiln
 * debug graph` itself is a build: see build_graph_main() in build.h.) */
#ifndef KILN_CLI_DEBUG_H
#define KILN_CLI_DEBUG_H

#include <stddef.h>
#include <stdio.h>

struct kiln_err;

/* `kiln debug SUBCOMMAND ...` other than graph; argv[0] is "debug".
 * Returns the process exit status. */
int debug_main(int argc, char **argv);

/* Print the data of a build.call answer (JSON text data[0..len)) to out
 * as buildx prints it: call "targets" as a TARGET/DESCRIPTION table,
 * "outline" as the TARGET, BUILD ARG, SECRET and SSH tables, each
 * followed by a blank line; with format "json", and always for "graph",
 * the JSON text itself and a newline. format is NULL or "json". Fails
 * with -EINVAL when data is not the JSON the call returns or the call is
 * unknown; nothing is printed then. */
int debug_render_call(FILE *out, const char *call, const char *format, const char *data,
		      size_t len, struct kiln_err *err);

#endif
