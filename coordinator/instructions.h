/* The checks BuildKit's instructions layer (frontend/dockerfile/
 * instructions) makes when it turns a parsed node into a typed
 * instruction: is the instruction known, are there enough arguments, are
 * the flags known and well formed. The planner calls instr_check() on
 * every node before it interprets it, so that kiln rejects what BuildKit
 * rejects, with the same words.
 *
 * Thread rules: no global state. */
#ifndef KILN_INSTRUCTIONS_H
#define KILN_INSTRUCTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_err;
struct df_node;

enum instr_flag_type {
	INSTR_FLAG_BOOL,        /* --f, --f=true, --f=false */
	INSTR_FLAG_STRING,      /* --f=value (value may be empty); once */
	INSTR_FLAG_STRINGS,     /* --f=value, repeatable */
};

struct instr_flag_def {
	const char *name;       /* without the leading "--" */
	enum instr_flag_type type;
	const char *def;        /* default; bools use "true" or "false" */
};

struct instr_flag_value {
	bool used;
	const char *value;      /* BOOL: "true"/"false"; STRING: value or default */
	const char **values;    /* STRINGS: malloc'd array of borrowed strings */
	size_t n_values;
};

/* BuildKit's BFlags.Parse: read flags[0..n) (df_node.flags: "--name" or
 * "--name=value") against defs[0..n_defs) and fill values[0..n_defs).
 * Errors: a word without "--", an unknown flag, a string flag without
 * "=value", a bool that is not true/false, a repeated non-STRINGS flag.
 * A lone "--" stops the reading. Strings are borrowed from flags and
 * defs; release values with instr_flag_values_release(), also after a
 * failure. */
int instr_flags_parse(const char *const *flags, size_t n, const struct instr_flag_def *defs,
		      size_t n_defs, struct instr_flag_value *values, struct kiln_err *err);
void instr_flag_values_release(struct instr_flag_value *values, size_t n_defs);

/* Check node n as BuildKit's ParseInstruction does, with its messages:
 * "unknown instruction: FOO", "WORKDIR requires exactly one argument",
 * "unknown flag: --boo", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't
 * allowed", "COPY cannot accept a heredoc as a destination", HEALTHCHECK
 * types, retries and durations, SHELL outside JSON form, stage names.
 * The message has no location: callers prefix "FILE:LINE: " from
 * n->start_line. */
int instr_check(const struct df_node *n, struct kiln_err *err);

/* Go's time.ParseDuration: "300ms", "1.5h", "2h45m", "-1s", "0". Returns
 * 0 and the duration in nanoseconds, or -EINVAL / -ERANGE. */
int instr_parse_duration(const char *s, int64_t *ret_ns);

/* A HEALTHCHECK duration flag (--interval and friends): "" and "0" give
 * 0; otherwise at least 1ms. flag names the flag in the message. */
int instr_parse_interval(const char *flag, const char *value, int64_t *ret_ns,
			 struct kiln_err *err);

#endif
