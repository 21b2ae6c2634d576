/* Fuzz target for the Dockerfile frontend: df_parse on arbitrary bytes,
 * then everything that reads the AST (dump, instruction checks, flag
 * lookups, shell expansion of every argument and heredoc name), the shell
 * lexer on the raw input under each flag set, the heredoc and directive
 * scanners, and the .dockerignore reader and matcher on the same bytes.
 * Invariants that must hold for any input abort() when broken. Built with
 * libFuzzer by `make fuzz`, or with replay.c to replay the corpus in
 * `make test`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "../../coordinator/dockerfile.h"
#include "ignore.h"
#include "../../coordinator/instructions.h"
#include "../../coordinator/shell.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const env_vars[] = { "A=1", "EMPTY=", "SP=a b  c", "P=/x/y.tar.gz", "B" };
static const struct shell_env env = { env_vars, sizeof(env_vars) / sizeof(env_vars[0]) };

static void
expand(const char *word, char escape)
{
	static const unsigned flag_sets[] = {
		0, SHELL_RAW_QUOTES | SHELL_RAW_ESCAPES | SHELL_SKIP_UNSET, SHELL_SKIP_QUOTES,
	};
	struct kiln_err err;
	struct shell_result r;
	size_t i, k;

	for (i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		if (shell_process(word, escape, flag_sets[i], &env, &r, &err) < 0) {
			if (!err.msg[0])
				abort();
			continue;
		}
		if (!r.word || (r.n_words && !r.words))
			abort();
		for (k = 0; k < r.n_words; k++)
			if (!r.words[k][0])
				abort();        /* empty words are dropped */
		shell_result_release(&r);
	}
}

static void
walk_node(const struct df_node *n, char escape, int depth)
{
	struct kiln_err err;
	const char *v;
	char *dump;
	size_t i;

	if (!n->keyword || !n->keyword_raw || !n->original || n->start_line > n->end_line ||
	    n->start_line < 1 || depth > 32)
		abort();
	dump = df_node_dump(n);
	if (!dump)
		abort();
	free(dump);
	(void) instr_check(n, &err);
	(void) df_node_flag(n, "from", &v);
	(void) df_node_flag(n, "mount", &v);
	for (i = 0; i < n->n_args; i++) {
		if (strlen(n->args[i]) > n->arg_lens[i])
			abort();
		expand(n->args[i], escape);
	}
	for (i = 0; i < n->n_flags; i++)
		expand(n->flags[i], escape);
	for (i = 0; i < n->n_heredocs; i++) {
		if (!n->heredocs[i].name || !n->heredocs[i].content)
			abort();
		free(df_heredoc_chomp(n->heredocs[i].content, n->heredocs[i].content_len, NULL));
	}
	if (n->inner)
		walk_node(n->inner, escape, depth + 1);
}

static void
dockerignore(const uint8_t *data, size_t size, const char *cstr)
{
	static const char *const paths[] = { "a", "a/b/c.txt", "node_modules/x", ".git/HEAD",
					     "dir/", "/", "x\ny" };
	struct kiln_err err;
	struct ignore *ig = NULL;
	size_t i;
	bool ex;

	if (ignore_parse((const char *) data, size, &ig, &err) < 0)
		return;
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		(void) ignore_match(ig, paths[i], &ex, &err);
	if (strlen(cstr) < 4096)
		(void) ignore_match(ig, cstr, &ex, &err);
	for (i = 0; i < ignore_count(ig); i++)
		(void) ignore_pattern_match(ig, i, "a/b", &ex, &err);
	ignore_free(ig);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct df_heredoc *hs = NULL;
	struct df_ast *ast = NULL;
	struct kiln_err err;
	size_t i, nh = 0;
	char *cstr, *cmdline;
	int line;

	if (df_parse((const char *) data, size, "Dockerfile", &ast, &err) == 0) {
		char *dump = df_ast_dump(ast);

		if (!dump || ast->n_nodes == 0 || (ast->escape != '\\' && ast->escape != '`'))
			abort();
		free(dump);
		for (i = 0; i < ast->n_nodes; i++)
			walk_node(&ast->nodes[i], ast->escape, 0);
		df_ast_free(ast);
	} else if (!err.msg[0] || !strstr(err.msg, "Dockerfile")) {
		abort();        /* every parse error names the file */
	}

	/* the lexer and the line scanners take C strings */
	cstr = malloc(size + 1);
	if (!cstr)
		return 0;
	memcpy(cstr, data, size);
	cstr[size] = '\0';
	if (size < (1u << 16)) {
		expand(cstr, '\\');
		expand(cstr, '`');
		if (df_heredocs_from_line(cstr, &hs, &nh, &err) == 0) {
			for (i = 0; i < nh; i++)
				df_heredoc_release(&hs[i]);
			free(hs);
		}
	}
	if (df_find_directive((const char *) data, size, "syntax", true, &cmdline, &line) == 1)
		free(cmdline);
	dockerignore(data, size, cstr);
	free(cstr);
	return 0;
}
