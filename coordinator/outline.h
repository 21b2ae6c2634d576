/* The Dockerfile frontend's answers to buildx's information requests:
 * `--call targets` (BuildKit's frontend.targets subrequest) and
 * `--call outline` (frontend.outline). Both are pure functions of the
 * Dockerfile: nothing is resolved, pulled or run.
 *
 * The result is the JSON text BuildKit puts in the subrequest's
 * "result.json", byte for byte as Go's json.MarshalIndent(v, "", "  ")
 * writes it (HTML-safe string escapes, no final newline):
 *
 *   targets: {"targets": [{"name", "default", "description", "base",
 *             "platform", "location"}...], "sources": [base64 Dockerfile]}
 *   outline: {"name", "description", "args": [{"name", "description",
 *             "value", "location"}...], "secrets": [{"name", "required",
 *             "location"}...], "ssh": [...], "sources": [...]}
 *
 * with "location" = {"ranges": [{"start": {"line": N}, "end": {"line": M}}]}
 * and empty fields left out as upstream does. Descriptions come from the
 * comment lines right above an instruction that start with the stage or
 * argument name ("# build Compiles the binary" describes stage "build").
 *
 * Thread rules: no global state. */
#ifndef KILN_OUTLINE_H
#define KILN_OUTLINE_H

#include <stddef.h>

struct df_ast;
struct kiln_err;
struct platform;

struct outline_input {
	const struct df_ast *ast;       /* df_parse() of dockerfile[0..dockerfile_len) */
	const char *dockerfile;         /* the bytes themselves: comments, "sources" */
	size_t dockerfile_len;
	const char *filename;           /* for messages; NULL: "Dockerfile" */
	const char *target;             /* outline: the stage; NULL or "": the last one */
	char *const *build_args;        /* "K=V" (--build-arg); entries without '=' are ignored */
	size_t n_build_args;
	const struct platform *platform;  /* target platform; NULL: this machine's */
};

/* The stages of the Dockerfile, the last one marked default. Fails (err
 * reads "FILENAME:LINE: message") where BuildKit's instruction parser
 * fails: an unknown instruction, a bad flag, an instruction before the
 * first FROM. On success the caller owns the malloc'd *ret_json. All
 * pointers in in are borrowed. */
int outline_targets_json(const struct outline_input *in, char **ret_json, struct kiln_err *err);

/* The build arguments, secrets and SSH sockets the target stage (and the
 * stages it needs) uses, with their values under in's build args and
 * platform, sorted by line. Fails as outline_targets_json() does, and also
 * for an unknown target ("target stage \"x\" could not be found"), a
 * cycle between stages, a malformed --mount, or an expansion that fails
 * (${V:?msg}). On success the caller owns the malloc'd *ret_json. */
int outline_json(const struct outline_input *in, char **ret_json, struct kiln_err *err);

#endif
