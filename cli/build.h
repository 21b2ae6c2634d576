/* `kiln build`: implemented in build.c. */
#ifndef KILN_CLI_BUILD_H
#define KILN_CLI_BUILD_H

struct builder;

/* Run `kiln build`. argv[0] is "build"; --builder has already been taken
 * out and resolved into b (never NULL; borrowed, main frees it). Returns
 * the process exit status. */
int build_main(int argc, char **argv, struct builder *b);
/* `kiln debug graph`: the flags of `kiln build` (but --call), argv[0] is
 * "graph"; prints the build graph the coordinator plans, as JSON. */
int build_graph_main(int argc, char **argv, struct builder *b);

#endif
