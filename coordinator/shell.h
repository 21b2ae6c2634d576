/* Shell-word expansion as BuildKit's Dockerfile frontend does it
 * (frontend/dockerfile/shell): quote removal, escapes, $VAR and the
 * ${VAR...} forms, and splitting into words. It is not a shell: there is no
 * command substitution, arithmetic, globbing or tilde expansion.
 *
 * Supported: $V ${V} ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?msg} ${V?msg}
 * ${V#pat} ${V##pat} ${V%pat} ${V%%pat} ${V/pat/repl} ${V//pat/repl}.
 * Positional and special parameters ($1, $@, $#, ...) expand to "" unless
 * set in the environment. Anything else inside ${} is an error.
 *
 * Thread rules: no global state; every call is independent. */
#ifndef KILN_SHELL_H
#define KILN_SHELL_H

#include <stdbool.h>
#include <stddef.h>

struct kiln_err;

/* An environment: "KEY=VALUE" strings, borrowed. An entry without '='
 * defines KEY with an empty value; a later entry for a key wins. */
struct shell_env {
	const char *const *vars;
	size_t n;
};

enum shell_flags {
	SHELL_RAW_QUOTES  = 1 << 0, /* keep quote characters in the result */
	SHELL_RAW_ESCAPES = 1 << 1, /* keep escape tokens in the result */
	SHELL_SKIP_UNSET  = 1 << 2, /* leave references to unset variables as written */
	SHELL_SKIP_QUOTES = 1 << 3, /* quotes are ordinary characters */
};

/* The product of one expansion. Every string is owned by the result. */
struct shell_result {
	char *word;             /* ProcessWord: the expanded word, blanks kept */
	char **words;           /* ProcessWords: split on unquoted blanks; NULL if none */
	size_t n_words;
	char **matched;         /* variable names looked up and found, sorted */
	size_t n_matched;
	char **unmatched;       /* variable names looked up and not found, sorted */
	size_t n_unmatched;
};

/* Longest result a single expansion may produce. */
#define SHELL_MAX_OUTPUT (16u << 20)

/* Expand word with escape token escape ('\\' or '`') under flags
 * (enum shell_flags). env may be NULL (empty). On success fills *ret, which
 * the caller releases with shell_result_release(); on failure *ret is
 * untouched and err says "failed to process \"WORD\": reason". */
int shell_process(const char *word, char escape, unsigned flags, const struct shell_env *env,
		  struct shell_result *ret, struct kiln_err *err);
void shell_result_release(struct shell_result *r);

/* BuildKit's ProcessWord: one word, quotes removed, whitespace kept.
 * *ret is a malloc'd string the caller frees. */
int shell_process_word(const char *word, char escape, const struct shell_env *env, char **ret,
		       struct kiln_err *err);
/* BuildKit's ProcessWords: expand, then split into words on whitespace that
 * is outside quotes (blanks from an unquoted variable split; empty words
 * are dropped; "<<" keeps the blanks after it, so "<< EOF" is one word).
 * *ret_words is a malloc'd array of *ret_n malloc'd strings, NULL when
 * *ret_n is 0; free it with shell_words_free(). */
int shell_process_words(const char *word, char escape, const struct shell_env *env,
			char ***ret_words, size_t *ret_n, struct kiln_err *err);
void shell_words_free(char **words, size_t n);

/* The value of name[0..len) in env, or NULL when it is not set. Borrowed
 * from env. */
const char *shell_env_get(const struct shell_env *env, const char *name, size_t len);

#endif
