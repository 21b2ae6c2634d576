/* Instruction checks: the part of BuildKit's instructions layer that
 * decides whether a parsed node is a valid instruction at all, before
 * anything is planned from it.
 *
 * The checks run in upstream's order for each instruction (argument count
 * before flags for some, after for others), because the order decides
 * which message a broken line gets. Flag sets are those of current
 * BuildKit; STOPSIGNAL and ARG do not look at flags, as upstream.
 *
 * This module interprets nothing: values are only validated, the planner
 * reads them again from the node. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dockerfile.h"
#include "err.h"
#include "gostr.h"
#include "instructions.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

int
instr_flags_parse(const char *const *flags, size_t n, const struct instr_flag_def *defs,
		  size_t n_defs, struct instr_flag_value *values, struct kiln_err *err)
{
	size_t i, j;

	for (j = 0; j < n_defs; j++) {
		memset(&values[j], 0, sizeof(values[j]));
		values[j].value = defs[j].def ? defs[j].def :
				  defs[j].type == INSTR_FLAG_BOOL ? "false" : "";
	}
	for (i = 0; i < n; i++) {
		const char *arg = flags[i], *eq, *value = "";
		struct instr_flag_value *v;
		size_t name_len;

		if (strncmp(arg, "--", 2) != 0)
			return kiln_err_set(err, EINVAL, "arg should start with -- : %s", arg);
		if (strcmp(arg, "--") == 0)
			return 0;
		arg += 2;
		eq = strchr(arg, '=');
		name_len = eq ? (size_t) (eq - arg) : strlen(arg);
		if (eq)
			value = eq + 1;
		for (j = 0; j < n_defs; j++)
			if (strlen(defs[j].name) == name_len &&
			    memcmp(defs[j].name, arg, name_len) == 0)
				break;
		if (j == n_defs)
			return kiln_err_set(err, EINVAL, "unknown flag: --%.*s", (int) name_len,
					    arg);
		v = &values[j];
		if (v->used && defs[j].type != INSTR_FLAG_STRINGS)
			return kiln_err_set(err, EINVAL, "duplicate flag specified: --%s",
					    defs[j].name);
		v->used = true;
		switch (defs[j].type) {
		case INSTR_FLAG_BOOL:
			/* a bare --flag is true; "--flag=" is not */
			if (eq && !*value)
				return kiln_err_set(err, EINVAL, "missing a value on flag: --%s",
						    defs[j].name);
			if (!eq || strcasecmp(value, "true") == 0)
				v->value = "true";
			else if (strcasecmp(value, "false") == 0)
				v->value = "false";
			else
				return kiln_err_set(err, EINVAL,
						    "expecting boolean value for flag --%s, not: %s",
						    defs[j].name, value);
			break;
		case INSTR_FLAG_STRING:
			if (!eq)
				return kiln_err_set(err, EINVAL, "missing a value on flag: --%s",
						    defs[j].name);
			v->value = value;
			break;
		case INSTR_FLAG_STRINGS: {
			const char **nv;

			if (!eq)
				return kiln_err_set(err, EINVAL, "missing a value on flag: --%s",
						    defs[j].name);
			nv = realloc(v->values, (v->n_values + 1) * sizeof(*nv));
			if (!nv)
				return kiln_err_set(err, ENOMEM, "out of memory");
			v->values = nv;
			v->values[v->n_values++] = value;
			break;
		}
		}
	}
	return 0;
}

void
instr_flag_values_release(struct instr_flag_value *values, size_t n_defs)
{
	size_t j;

	for (j = 0; j < n_defs; j++) {
		free(values[j].values);
		values[j].values = NULL;
		values[j].n_values = 0;
	}
}

/* ---- durations ---- */

static int
leading_int(const char **s, uint64_t *ret)
{
	uint64_t x = 0;

	while (**s >= '0' && **s <= '9') {
		if (x > (UINT64_C(1) << 63) / 10)
			return -ERANGE;
		x = x * 10 + (uint64_t) (**s - '0');
		if (x > UINT64_C(1) << 63)
			return -ERANGE;
		(*s)++;
	}
	*ret = x;
	return 0;
}

int
instr_parse_duration(const char *s, int64_t *ret_ns)
{
	static const struct {
		const char *name;
		uint64_t ns;
	} units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "\xc2\xb5s", 1000 }, { "\xce\xbcs", 1000 },
		{ "ms", 1000000 }, { "s", 1000000000 }, { "m", UINT64_C(60000000000) },
		{ "h", UINT64_C(3600000000000) },
	};
	uint64_t d = 0;
	bool neg = false;

	if (*s == '-' || *s == '+') {
		neg = *s == '-';
		s++;
	}
	if (strcmp(s, "0") == 0) {
		*ret_ns = 0;
		return 0;
	}
	if (!*s)
		return -EINVAL;
	while (*s) {
		uint64_t v = 0, f = 0, unit = 0;
		double scale = 1;
		const char *start = s, *u;
		bool pre, post = false, overflow = false;
		size_t i, ulen;

		if (!(*s == '.' || (*s >= '0' && *s <= '9')))
			return -EINVAL;
		if (leading_int(&s, &v) < 0)
			return -ERANGE;
		pre = s != start;
		if (*s == '.') {
			const char *fs = ++s;

			/* digits past what fits are read but ignored */
			while (*s >= '0' && *s <= '9') {
				if (!overflow) {
					if (f > (UINT64_C(1) << 63) / 10) {
						overflow = true;
					} else {
						uint64_t y = f * 10 + (uint64_t) (*s - '0');

						if (y > UINT64_C(1) << 63) {
							overflow = true;
						} else {
							f = y;
							scale *= 10;
						}
					}
				}
				s++;
			}
			post = s != fs;
		}
		if (!pre && !post)
			return -EINVAL;
		u = s;
		while (*s && *s != '.' && !(*s >= '0' && *s <= '9'))
			s++;
		ulen = (size_t) (s - u);
		if (ulen == 0)
			return -EINVAL;
		for (i = 0; i < ARRAY_SIZE(units); i++)
			if (strlen(units[i].name) == ulen && memcmp(units[i].name, u, ulen) == 0)
				unit = units[i].ns;
		if (!unit)
			return -EINVAL;
		if (v > (UINT64_C(1) << 63) / unit)
			return -ERANGE;
		v *= unit;
		if (f > 0) {
			v += (uint64_t) ((double) f * ((double) unit / scale));
			if (v > UINT64_C(1) << 63)
				return -ERANGE;
		}
		d += v;
		if (d > UINT64_C(1) << 63)
			return -ERANGE;
	}
	if (neg) {
		*ret_ns = d == UINT64_C(1) << 63 ? INT64_MIN : -(int64_t) d;
		return 0;
	}
	if (d > (uint64_t) INT64_MAX)
		return -ERANGE;
	*ret_ns = (int64_t) d;
	return 0;
}

int
instr_parse_interval(const char *flag, const char *value, int64_t *ret_ns,
		     struct kiln_err *err)
{
	int64_t d;
	int r;

	*ret_ns = 0;
	if (!value || !*value)
		return 0;
	r = instr_parse_duration(value, &d);
	if (r < 0)
		return kiln_err_set(err, -r, "time: invalid duration \"%s\"", value);
	if (d == 0)
		return 0;
	if (d < 1000000)
		return kiln_err_set(err, EINVAL, "Interval \"%s\" cannot be less than 1ms", flag);
	*ret_ns = d;
	return 0;
}

/* ---- instructions ---- */

static const struct instr_flag_def add_flags[] = {
	{ "chown", INSTR_FLAG_STRING, "" },
	{ "chmod", INSTR_FLAG_STRING, "" },
	{ "link", INSTR_FLAG_BOOL, "false" },
	{ "keep-git-dir", INSTR_FLAG_BOOL, "false" },
	{ "checksum", INSTR_FLAG_STRING, "" },
	{ "exclude", INSTR_FLAG_STRINGS, NULL },
	{ "unpack", INSTR_FLAG_BOOL, "false" },
};

static const struct instr_flag_def copy_flags[] = {
	{ "chown", INSTR_FLAG_STRING, "" },
	{ "chmod", INSTR_FLAG_STRING, "" },
	{ "from", INSTR_FLAG_STRING, "" },
	{ "link", INSTR_FLAG_BOOL, "false" },
	{ "parents", INSTR_FLAG_BOOL, "false" },
	{ "exclude", INSTR_FLAG_STRINGS, NULL },
};

static const struct instr_flag_def run_flags[] = {
	{ "mount", INSTR_FLAG_STRINGS, NULL },
	{ "network", INSTR_FLAG_STRING, "default" },
	{ "security", INSTR_FLAG_STRING, "sandbox" },
	{ "device", INSTR_FLAG_STRINGS, NULL },
};

static const struct instr_flag_def from_flags[] = {
	{ "platform", INSTR_FLAG_STRING, "" },
};

static const struct instr_flag_def health_flags[] = {
	{ "interval", INSTR_FLAG_STRING, "" },
	{ "timeout", INSTR_FLAG_STRING, "" },
	{ "start-period", INSTR_FLAG_STRING, "" },
	{ "start-interval", INSTR_FLAG_STRING, "" },
	{ "retries", INSTR_FLAG_STRING, "" },
};

#define FLAG_MAX 8

/* Parse n's flags against defs, keeping the values in vals. */
static int
check_flags(const struct df_node *n, const struct instr_flag_def *defs, size_t n_defs,
	    struct instr_flag_value *vals, struct kiln_err *err)
{
	int r;

	r = instr_flags_parse((const char *const *) n->flags, n->n_flags, defs, n_defs, vals, err);
	if (r < 0)
		instr_flag_values_release(vals, n_defs);
	return r;
}

static int
check_no_flags(const struct df_node *n, struct kiln_err *err)
{
	return check_flags(n, NULL, 0, NULL, err);
}

static int
check_flags_only(const struct df_node *n, const struct instr_flag_def *defs, size_t n_defs,
		 struct kiln_err *err)
{
	struct instr_flag_value vals[FLAG_MAX];
	int r;

	r = check_flags(n, defs, n_defs, vals, err);
	if (r == 0)
		instr_flag_values_release(vals, n_defs);
	return r;
}

static int
exactly_one(const struct df_node *n, const char *what, struct kiln_err *err)
{
	if (n->n_args != 1)
		return kiln_err_set(err, EINVAL, "%s requires exactly one argument", what);
	return 0;
}

static int
at_least_one(const struct df_node *n, const char *what, struct kiln_err *err)
{
	if (n->n_args == 0)
		return kiln_err_set(err, EINVAL, "%s requires at least one argument", what);
	return 0;
}

/* ENV and LABEL: triples of key, value, separator. */
static int
check_kvps(const struct df_node *n, const char *what, struct kiln_err *err)
{
	size_t i;
	int r;

	r = check_no_flags(n, err);
	if (r < 0)
		return r;
	r = at_least_one(n, what, err);
	if (r < 0)
		return r;
	if (n->n_args % 3)
		return kiln_err_set(err, EINVAL, "Bad input to %s, too many arguments", what);
	for (i = 0; i < n->n_args; i += 3)
		if (n->arg_lens[i] == 0)
			return kiln_err_set(err, EINVAL, "%s names can not be blank", what);
	return 0;
}

static int
check_sources_and_dest(const struct df_node *n, const char *what,
		       const struct instr_flag_def *defs, size_t n_defs, struct kiln_err *err)
{
	struct df_heredoc h;
	int r;

	if (n->n_args < 2)
		return kiln_err_set(err, EINVAL,
				    "%s requires at least two arguments, but only one was provided. "
				    "Destination could not be determined", what);
	r = check_flags_only(n, defs, n_defs, err);
	if (r < 0)
		return r;
	r = df_parse_heredoc(n->args[n->n_args - 1], &h, NULL);
	if (r > 0) {
		df_heredoc_release(&h);
		return kiln_err_set(err, EINVAL, "%s cannot accept a heredoc as a destination",
				    what);
	}
	return 0;
}

static bool
valid_stage_name(const char *s)
{
	if (!(*s >= 'a' && *s <= 'z'))
		return false;
	for (s++; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' ||
		      *s == '_' || *s == '.'))
			return false;
	return true;
}

static int
check_from(const struct df_node *n, struct kiln_err *err)
{
	if (n->n_args == 3 && strcasecmp(n->args[1], "as") == 0) {
		char *lower = strdup(n->args[2]);
		bool ok;
		char *p;

		if (!lower)
			return kiln_err_set(err, ENOMEM, "out of memory");
		for (p = lower; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char) (*p + 32);
		ok = valid_stage_name(lower);
		free(lower);
		if (!ok) {
			struct gbuf q;
			int r;

			gbuf_init(&q, 1024);
			gostr_quote(&q, n->args[2], n->arg_lens[2]);
			r = kiln_err_set(err, EINVAL,
					 "invalid name for build stage: %s, name can't start with a "
					 "number or contain symbols", q.data ? q.data : "");
			gbuf_release(&q);
			return r;
		}
	} else if (n->n_args != 1) {
		return kiln_err_set(err, EINVAL, "FROM requires either one or three arguments");
	}
	return check_flags_only(n, from_flags, ARRAY_SIZE(from_flags), err);
}

static int
check_onbuild(const struct df_node *n, struct kiln_err *err)
{
	const char *trigger;
	int r;

	if (!n->inner)
		return kiln_err_set(err, EINVAL, "ONBUILD requires at least one argument");
	r = check_no_flags(n, err);
	if (r < 0)
		return r;
	trigger = n->inner->keyword;
	if (strcmp(trigger, "onbuild") == 0)
		return kiln_err_set(err, EINVAL,
				    "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
	if (strcmp(trigger, "maintainer") == 0 || strcmp(trigger, "from") == 0)
		return kiln_err_set(err, EINVAL, "%s isn't allowed as an ONBUILD trigger",
				    strcmp(trigger, "from") == 0 ? "FROM" : "MAINTAINER");
	return 0;
}

static int
check_retries(const char *value, struct kiln_err *err)
{
	char *end;
	long long v;

	/* strconv.ParseInt(value, 10, 32): an optional sign, then digits */
	if (!*value || gostr_is_space((unsigned char) value[0]))
		return kiln_err_set(err, EINVAL, "strconv.ParseInt: parsing \"%s\": invalid syntax",
				    value);
	errno = 0;
	v = strtoll(value, &end, 10);
	if (*end)
		return kiln_err_set(err, EINVAL, "strconv.ParseInt: parsing \"%s\": invalid syntax",
				    value);
	if (errno == ERANGE || v > INT32_MAX || v < INT32_MIN)
		return kiln_err_set(err, ERANGE,
				    "strconv.ParseInt: parsing \"%s\": value out of range", value);
	if (v < 0)
		return kiln_err_set(err, EINVAL, "--retries cannot be negative (%lld)", v);
	return 0;
}

static int
check_healthcheck(const struct df_node *n, struct kiln_err *err)
{
	struct instr_flag_value vals[FLAG_MAX];
	const char *typ;
	int64_t d;
	size_t i;
	int r;

	r = at_least_one(n, "HEALTHCHECK", err);
	if (r < 0)
		return r;
	typ = n->args[0];
	if (strcasecmp(typ, "NONE") == 0) {
		if (n->n_args > 1)
			return kiln_err_set(err, EINVAL, "HEALTHCHECK NONE takes no arguments");
		return 0;
	}
	r = check_flags(n, health_flags, ARRAY_SIZE(health_flags), vals, err);
	if (r < 0)
		return r;
	if (strcasecmp(typ, "CMD") != 0) {
		r = kiln_err_set(err, EINVAL, "Unknown type \"%s\" in HEALTHCHECK (try CMD)", typ);
		goto out;
	}
	if (n->n_args < 2) {
		r = kiln_err_set(err, EINVAL, "Missing command after HEALTHCHECK CMD");
		goto out;
	}
	for (i = 0; i < 4 && r == 0; i++)
		r = instr_parse_interval(health_flags[i].name, vals[i].value, &d, err);
	if (r == 0 && *vals[4].value)
		r = check_retries(vals[4].value, err);
out:
	instr_flag_values_release(vals, ARRAY_SIZE(health_flags));
	return r;
}

static int
check_volume(const struct df_node *n, struct kiln_err *err)
{
	size_t i;
	int r;

	r = at_least_one(n, "VOLUME", err);
	if (r == 0)
		r = check_no_flags(n, err);
	for (i = 0; r == 0 && i < n->n_args; i++)
		if (gostr_space_prefix(n->args[i], n->arg_lens[i]) == n->arg_lens[i])
			r = kiln_err_set(err, EINVAL,
					 "VOLUME specified can not be an empty string");
	return r;
}

static int
check_arg(const struct df_node *n, struct kiln_err *err)
{
	size_t i;
	int r;

	r = at_least_one(n, "ARG", err);
	for (i = 0; r == 0 && i < n->n_args; i++)
		if (n->args[i][0] == '=')
			r = kiln_err_set(err, EINVAL, "ARG names can not be blank");
	return r;
}

static int
check_shell(const struct df_node *n, struct kiln_err *err)
{
	int r;

	r = check_no_flags(n, err);
	if (r < 0)
		return r;
	if (n->n_args == 0)
		return kiln_err_set(err, EINVAL, "SHELL requires at least one argument");
	if (!n->json)
		return kiln_err_set(err, EINVAL, "SHELL requires the arguments to be in JSON form");
	return 0;
}

int
instr_check(const struct df_node *n, struct kiln_err *err)
{
	const char *k = n->keyword;
	int r;

	if (strcmp(k, "env") == 0)
		return check_kvps(n, "ENV", err);
	if (strcmp(k, "label") == 0)
		return check_kvps(n, "LABEL", err);
	if (strcmp(k, "maintainer") == 0) {
		r = exactly_one(n, "MAINTAINER", err);
		return r < 0 ? r : check_no_flags(n, err);
	}
	if (strcmp(k, "add") == 0)
		return check_sources_and_dest(n, "ADD", add_flags, ARRAY_SIZE(add_flags), err);
	if (strcmp(k, "copy") == 0)
		return check_sources_and_dest(n, "COPY", copy_flags, ARRAY_SIZE(copy_flags), err);
	if (strcmp(k, "from") == 0)
		return check_from(n, err);
	if (strcmp(k, "onbuild") == 0)
		return check_onbuild(n, err);
	if (strcmp(k, "workdir") == 0) {
		r = exactly_one(n, "WORKDIR", err);
		return r < 0 ? r : check_no_flags(n, err);
	}
	if (strcmp(k, "run") == 0)
		return check_flags_only(n, run_flags, ARRAY_SIZE(run_flags), err);
	if (strcmp(k, "cmd") == 0 || strcmp(k, "entrypoint") == 0)
		return check_no_flags(n, err);
	if (strcmp(k, "healthcheck") == 0)
		return check_healthcheck(n, err);
	if (strcmp(k, "expose") == 0) {
		r = at_least_one(n, "EXPOSE", err);
		return r < 0 ? r : check_no_flags(n, err);
	}
	if (strcmp(k, "user") == 0) {
		r = exactly_one(n, "USER", err);
		return r < 0 ? r : check_no_flags(n, err);
	}
	if (strcmp(k, "volume") == 0)
		return check_volume(n, err);
	if (strcmp(k, "stopsignal") == 0)
		return exactly_one(n, "STOPSIGNAL", err);
	if (strcmp(k, "arg") == 0)
		return check_arg(n, err);
	if (strcmp(k, "shell") == 0)
		return check_shell(n, err);
	return kiln_err_set(err, EINVAL, "unknown instruction: %s", n->keyword_raw);
}
