/* Dockerfile parser: bytes -> AST, as BuildKit's frontend/dockerfile/parser
 * builds it, plus the structural checks of its instructions layer.
 *
 * The AST is syntax only. A misspelt instruction ("RUNN x") parses into a
 * node with keyword "runn"; whether an instruction exists, and whether its
 * arguments make sense, is decided later (instructions.h, the planner).
 * Variables are not expanded here (see shell.h).
 *
 * Limits: the input is at most DF_MAX_INPUT bytes and a physical line at
 * most DF_MAX_LINE bytes (BuildKit's own line limit); a NUL byte outside a
 * heredoc body is refused. Errors read "FILENAME:LINE: message".
 *
 * Thread rules: no global state. */
#ifndef KILN_DOCKERFILE_H
#define KILN_DOCKERFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_err;

#define DF_MAX_INPUT (16u << 20)
#define DF_MAX_LINE  65535u

/* A here-document attached to ADD, COPY or RUN (or ONBUILD of one). */
struct df_heredoc {
	char *name;             /* terminator after quote removal: <<"EOF" -> EOF */
	char *content;          /* body lines verbatim, each with its line end;
				 * leading tabs NOT removed, even for <<- */
	size_t content_len;
	uint64_t fd;            /* 3<<EOF -> 3; 0 when absent */
	bool expand;            /* false when any part of the name was quoted */
	bool chomp;             /* <<-: the consumer strips leading tabs */
};

/* One instruction.
 *
 * args holds what BuildKit's Node.Next chain holds:
 *   FROM, EXPOSE             rest split on blanks
 *   ADD, COPY, VOLUME        JSON array elements, else rest split on blanks
 *   RUN, CMD, ENTRYPOINT,    JSON array elements, else rest as one string
 *   SHELL
 *   MAINTAINER, USER,        rest as one string
 *   WORKDIR, STOPSIGNAL
 *   HEALTHCHECK              first word, then as CMD
 *   ENV, LABEL               triples KEY, VALUE, "=" (or "" for the old
 *                            "KEY value" form); quotes kept
 *   ARG                      quote-aware words, quotes kept
 *   ONBUILD                  none: the instruction is in inner
 *   anything else            one empty string
 * "rest" is the text after the keyword and the flags, trimmed. */
struct df_node {
	char *keyword;          /* lower-cased: "run", "runn" */
	char *keyword_raw;      /* as written: "RUN", for messages */
	char *original;         /* the logical line, continuations joined */
	char **flags;           /* "--name=value" words, quotes removed */
	size_t n_flags;
	char **args;
	size_t *arg_lens;       /* a JSON "\u0000" puts a NUL inside an arg */
	size_t n_args;
	bool json;              /* exec (JSON array) form */
	struct df_node *inner;  /* ONBUILD's instruction, or NULL */
	struct df_heredoc *heredocs;
	size_t n_heredocs;
	int start_line;         /* 1-based, inclusive; heredoc bodies count */
	int end_line;
};

struct df_warning {
	char *text;             /* "Empty continuation line found in: RUN a b" */
	const char *detail;     /* static */
	const char *url;        /* static */
	int line;
};

struct df_ast {
	struct df_node *nodes;
	size_t n_nodes;
	char escape;            /* '\\' or '`' (escape directive) */
	char *syntax;           /* "# syntax=" value, or NULL */
	char *check;            /* "# check=" value, or NULL */
	struct df_warning *warnings;
	size_t n_warnings;
	int start_line;         /* first line of the first instruction */
	int end_line;           /* last line of the last instruction */
};

/* Parse buf[0..len). filename (borrowed) only prefixes error messages.
 * On success the caller owns *ret (free with df_ast_free()); a file with
 * no instruction is an error. */
int df_parse(const char *buf, size_t len, const char *filename, struct df_ast **ret,
	     struct kiln_err *err);
void df_ast_free(struct df_ast *ast);  /* NULL is a no-op */

/* BuildKit's Node.Dump(): one "(keyword ["flags"] "arg"...)" line per
 * instruction, each ending in "\n", values printed as Go's strconv.Quote.
 * Returns a malloc'd string, or NULL when out of memory. */
char *df_ast_dump(const struct df_ast *ast);
/* The same for one instruction, without parentheses or newline. */
char *df_node_dump(const struct df_node *n);

/* Look for flag --name. Returns 1 and sets *ret_value (may be NULL) to the
 * text after '=' (NULL for a bare "--name") when present; the last
 * occurrence wins. Returns 0 when absent. ret_value is borrowed from n. */
int df_node_flag(const struct df_node *n, const char *name, const char **ret_value);

/* BuildKit's ParseHeredoc: is word ("<<EOF", "3<<-'EOF'") a heredoc
 * opener? Returns 1 and fills *ret (name, fd, expand, chomp; free name
 * with df_heredoc_release()), 0 when it is not one, or a negative errno
 * for malformed quoting ("<<'EOF"). */
int df_parse_heredoc(const char *word, struct df_heredoc *ret, struct kiln_err *err);
void df_heredoc_release(struct df_heredoc *h);
/* The heredoc openers of an instruction line, in order (bodies empty).
 * *ret is a malloc'd array of *ret_n entries (NULL when 0); release each
 * entry and free the array. */
int df_heredocs_from_line(const char *line, struct df_heredoc **ret, size_t *ret_n,
			  struct kiln_err *err);
/* Remove the leading tabs of every line (what <<- asks for). Returns a
 * malloc'd copy and its length, or NULL when out of memory. */
char *df_heredoc_chomp(const char *content, size_t len, size_t *ret_len);

/* Length of the physical line s[0..n) without its trailing CR/LF bytes. */
size_t df_trim_newline(const char *s, size_t n);
/* Whether a physical line is a comment: "#" after leading blanks. */
bool df_is_comment(const char *s, size_t n);

/* BuildKit's DetectSyntax (key "syntax", any_format) and ParseDirective
 * (any key, any_format false): find directive key in a Dockerfile's
 * leading "# key=value" lines, skipping a BOM and a "#!" first line; with
 * any_format also "//key=value" lines and a JSON object {"key": "..."}.
 * Returns 1 when found and sets *ret_cmdline (the whole value, malloc'd)
 * and *ret_line (1-based line, 0 for JSON); 0 when not found; -ENOMEM.
 * The first space-separated word of the value is what names the
 * frontend. */
int df_find_directive(const char *buf, size_t len, const char *key, bool any_format,
		      char **ret_cmdline, int *ret_line);

#endif
