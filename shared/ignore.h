/* .dockerignore: reading the file and matching context paths against it,
 * with the semantics of github.com/moby/patternmatcher (and its ignorefile
 * reader), which BuildKit, buildx and Docker use.
 *
 * Patterns are Go filepath.Match patterns ('*' and '?' stop at '/',
 * [a-z] [^a-z] classes, '\' escapes) plus '**' for any number of path
 * segments. They are trimmed and cleaned (filepath.Clean) first. A leading
 * '!' re-includes. A path is excluded when the last pattern that matches
 * it, or one of its parent directories, is not a '!' pattern.
 *
 * Thread rules: a compiled struct ignore is read-only and may be shared
 * by threads. */
#ifndef KILN_IGNORE_H
#define KILN_IGNORE_H

#include <stdbool.h>
#include <stddef.h>

struct kiln_err;
struct ignore;                  /* opaque */

/* ignorefile.ReadAll: the patterns of a .dockerignore, in order (BOM and
 * '#' comment lines dropped, lines trimmed, paths cleaned, one leading '/'
 * removed, "!" kept in front). *ret_patterns is a malloc'd array of *ret_n
 * malloc'd strings (NULL when 0); free each and the array. A line longer
 * than 65535 bytes is an error. */
int ignore_read(const char *buf, size_t len, char ***ret_patterns, size_t *ret_n,
		struct kiln_err *err);

/* patternmatcher.New: compile patterns (borrowed). A lone "!" or a
 * pattern that filepath.Match rejects ("[", "a[", "\\" at the end, "[x-]")
 * is an error. A pattern that passes that check but is still invalid (a
 * reversed range "[z-a]") is accepted here and fails every match that
 * reaches it, as upstream. The caller owns *ret (ignore_free()). */
int ignore_new(const char *const *patterns, size_t n, struct ignore **ret, struct kiln_err *err);
/* ignore_read() then ignore_new(). */
int ignore_parse(const char *buf, size_t len, struct ignore **ret, struct kiln_err *err);
void ignore_free(struct ignore *ig);  /* NULL is a no-op */

/* MatchesOrParentMatches: is path (relative to the context root, '/'
 * separated, not cleaned here) excluded? Fails when an evaluated pattern
 * is malformed. */
int ignore_match(const struct ignore *ig, const char *path, bool *ret_excluded,
		 struct kiln_err *err);

/* The compiled patterns, for callers that walk a tree and keep per-parent
 * results: their number, the cleaned text of pattern i without its '!'
 * (borrowed) and whether it is a '!' pattern, and whether pattern i alone
 * matches path exactly (no parent directories). */
size_t ignore_count(const struct ignore *ig);
const char *ignore_pattern(const struct ignore *ig, size_t i, bool *ret_exclusion);
int ignore_pattern_match(const struct ignore *ig, size_t i, const char *path, bool *ret_match,
			 struct kiln_err *err);
/* Whether any pattern is a '!' pattern. */
bool ignore_has_exclusions(const struct ignore *ig);

/* Go's filepath.Clean on a '/' path; malloc'd, NULL when out of memory. */
char *ignore_clean_path(const char *path);

#endif
