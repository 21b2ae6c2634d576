/* `kiln builder create|ls|inspect|use|rm|stop`: builder instances as
 * buildx manages them. */
#ifndef KILN_CLI_BUILDER_H
#define KILN_CLI_BUILDER_H

/* argv[0] is "builder", argv[1] the subcommand. builder_flag is the global
 * --builder value (NULL when not given; borrowed): ls marks it as current
 * and inspect/rm/stop act on it when no NAME is given. Prints its own
 * output and errors; returns the process exit status. */
int builder_main(int argc, char **argv, const char *builder_flag);

#endif
