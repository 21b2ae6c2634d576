#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>

#include "usage.h"

int
cli_usage_error(const char *group, const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("ERROR: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nSee 'kiln %s %s --help'.\n", group, cmd);
	return 1;
}

int
cli_bad_flag(const char *group, const char *cmd, char **argv, int c)
{
	const char *arg = argv[optind - 1];

	if (c == ':')
		return cli_usage_error(group, cmd, "flag needs an argument: %s", arg);
	return cli_usage_error(group, cmd, "unknown flag: %s", arg);
}
