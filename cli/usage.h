/* Usage errors as cobra prints them under buildx: "ERROR: MSG" and a
 * pointer to the command's help, for every `kiln GROUP CMD`. */
#ifndef KILN_CLI_USAGE_H
#define KILN_CLI_USAGE_H

/* Prints "ERROR: ...\nSee 'kiln GROUP CMD --help'." on stderr; returns 1
 * (the exit status). */
int cli_usage_error(const char *group, const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* getopt_long's complaint about argv[optind - 1] (c is what it returned:
 * ':' for a missing argument, else an unknown flag), in cobra's words. */
int cli_bad_flag(const char *group, const char *cmd, char **argv, int c);

#endif
