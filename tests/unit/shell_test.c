/* Unit tests for the shell-word lexer (coordinator/shell.c): expansion
 * forms, quoting, word splitting and the flags the parser uses for
 * heredoc names, beyond what the upstream tables cover. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "../../coordinator/shell.h"

static const char *const vars[] = {
	"HOME=/root", "EMPTY=", "LIST=a  b c", "PATHV=/usr/local/bin:/usr/bin:/bin",
	"FILE=archive.tar.gz", "NAME=first", "NAME=second", "BARE", "TPL=<$0>",
};
static const struct shell_env env = { vars, sizeof(vars) / sizeof(vars[0]) };

static void
word_is(const char *in, const char *want)
{
	struct kiln_err err = { 0 };
	char *got = NULL;

	if (shell_process_word(in, '\\', &env, &got, &err) < 0)
		fail_msg("%s: %s", in, err.msg);
	if (strcmp(got, want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", in, got, want);
	free(got);
}

static void
word_fails(const char *in, const char *msg)
{
	struct kiln_err err = { 0 };
	char *got = NULL;

	if (shell_process_word(in, '\\', &env, &got, &err) == 0)
		fail_msg("%s: got \"%s\", want an error", in, got);
	if (!strstr(err.msg, msg))
		fail_msg("%s: error \"%s\" lacks \"%s\"", in, err.msg, msg);
}

static void
simple_references(void **state)
{
	(void) state;
	word_is("$HOME/x", "/root/x");
	word_is("${HOME}x", "/rootx");
	word_is("$NAME", "second");             /* the later entry wins */
	word_is("[$BARE]", "[]");               /* no '=' means empty */
	word_is("$UNSET-$1-$@-$#-$$", "----");
	word_is("$", "$");
	word_is("a$.b", "a$.b");
	word_is("$HOME_DIR", "");               /* the name runs on */
}

static void
default_and_alternative_forms(void **state)
{
	(void) state;
	word_is("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", "d||d");
	word_is("${EMPTY:+a}|${EMPTY+a}|${HOME:+a}|${UNSET+a}", "|a|a|");
	word_is("${UNSET:-${HOME:-x}/sub}", "/root/sub");
	word_is("${EMPTY?}", "");
	word_fails("${EMPTY:?must be set}", "EMPTY: must be set");
	word_fails("${UNSET?}", "UNSET: is not allowed to be unset");
	word_fails("${EMPTY:?}", "EMPTY: is not allowed to be empty");
}

static void
pattern_forms(void **state)
{
	(void) state;
	word_is("${FILE#*.}", "tar.gz");
	word_is("${FILE##*.}", "gz");
	word_is("${FILE%.*}", "archive.tar");
	word_is("${FILE%%.*}", "archive");
	word_is("${FILE#nomatch}", "archive.tar.gz");
	word_is("${PATHV/:/;}", "/usr/local/bin;/usr/bin:/bin");
	word_is("${PATHV//:/;}", "/usr/local/bin;/usr/bin;/bin");
	word_is("${PATHV//\\//-}", "-usr-local-bin:-usr-bin:-bin");
	word_is("${FILE/.tar/}", "archive.gz");
	word_is("${FILE//?/.}", "..............");
	/* Regexp.ReplaceAllString expands $0 in an expanded replacement */
	word_is("${FILE//a/$TPL}", "<a>rchive.t<a>r.gz");
	word_is("${FILE/a/$TPL}", "<$0>rchive.tar.gz");
	word_is("${UNSET/x/y}", "");
	word_fails("${FILE#\\x}", "invalid escape");
	word_fails("${FILE:#x}", "unsupported modifier (:#)");
	word_fails("${FILE/x}", "missing '/' in ${}");
}

static void
quotes_and_escapes(void **state)
{
	struct kiln_err err = { 0 };
	char *got = NULL;

	(void) state;
	word_is("'$HOME' \"$HOME\" \\$HOME", "$HOME /root $HOME");
	word_is("\"a\\\"b\\\\c\\d\"", "a\"b\\c\\d");
	word_is("it'\"'s", "it\"s");
	word_fails("'open", "unexpected end of statement while looking for matching single-quote");
	word_fails("\"open", "unexpected end of statement while looking for matching double-quote");
	word_fails("${HOME", "unsupported modifier");
	word_fails("${HOME:-x", "syntax error: missing '}'");
	word_fails("${}", "syntax error: bad substitution");
	word_fails("${HOME:=x}", "unsupported modifier (:=) in substitution");
	word_fails("x${a:-y", "failed to process \"x${a:-y\"");
	/* with backtick as the escape token, backslash is ordinary */
	assert_int_equal(shell_process_word("C:\\dir `$HOME", '`', &env, &got, &err), 0);
	assert_string_equal(got, "C:\\dir $HOME");
	free(got);
}

static void
words_split_outside_quotes(void **state)
{
	struct kiln_err err = { 0 };
	char **w = NULL;
	size_t n = 0;

	(void) state;
	assert_int_equal(shell_process_words("a $LIST \"$LIST\" '' x\\ y", '\\', &env, &w, &n, &err), 0);
	assert_int_equal(n, 6);
	assert_string_equal(w[0], "a");
	assert_string_equal(w[1], "a");
	assert_string_equal(w[2], "b");
	assert_string_equal(w[3], "c");
	assert_string_equal(w[4], "a  b c");
	assert_string_equal(w[5], "x y");       /* '' alone makes no word */
	shell_words_free(w, n);

	assert_int_equal(shell_process_words("  ", '\\', &env, &w, &n, &err), 0);
	assert_int_equal(n, 0);
	shell_words_free(w, n);

	/* "<<" keeps the blanks after it, so a heredoc opener is one word */
	assert_int_equal(shell_process_words("cat << EOF > f", '\\', NULL, &w, &n, &err), 0);
	assert_int_equal(n, 4);
	assert_string_equal(w[1], "<< EOF");
	shell_words_free(w, n);
}

static void
matches_are_reported(void **state)
{
	struct kiln_err err = { 0 };
	struct shell_result r;

	(void) state;
	assert_int_equal(shell_process("$NAME ${ZED:-$HOME} ${ALPHA+x} $NAME", '\\', 0, &env, &r,
				       &err), 0);
	assert_string_equal(r.word, "second /root  second");
	assert_int_equal(r.n_matched, 2);
	assert_string_equal(r.matched[0], "HOME");
	assert_string_equal(r.matched[1], "NAME");
	assert_int_equal(r.n_unmatched, 2);
	assert_string_equal(r.unmatched[0], "ALPHA");
	assert_string_equal(r.unmatched[1], "ZED");
	shell_result_release(&r);
}

static void
raw_flags_keep_the_source(void **state)
{
	struct kiln_err err = { 0 };
	struct shell_result r;

	(void) state;
	assert_int_equal(shell_process("'a' \"$X\" \\z ${Y:-d} $HOME", '\\',
				       SHELL_RAW_QUOTES | SHELL_RAW_ESCAPES | SHELL_SKIP_UNSET, &env,
				       &r, &err), 0);
	assert_string_equal(r.word, "'a' \"$X\" \\z ${Y:-d} /root");
	shell_result_release(&r);
	assert_int_equal(shell_process("'a' $HOME", '\\', SHELL_SKIP_QUOTES, &env, &r, &err), 0);
	assert_string_equal(r.word, "'a' /root");
	shell_result_release(&r);
}

static void
hostile_input_is_bounded(void **state)
{
	struct kiln_err err = { 0 };
	char *deep = malloc(20000), *got = NULL;
	size_t i, n = 0;

	(void) state;
	assert_non_null(deep);
	for (i = 0; i < 3000; i++) {
		memcpy(deep + n, "${a:-", 5);
		n += 5;
	}
	deep[n] = '\0';
	assert_true(shell_process_word(deep, '\\', NULL, &got, &err) < 0);
	assert_non_null(strstr(err.msg, "nested more than"));
	free(deep);
	/* invalid UTF-8 reads as U+FFFD, as Go's text/scanner reads it */
	assert_int_equal(shell_process_word("a\xff" "b", '\\', NULL, &got, &err), 0);
	assert_string_equal(got, "a\xef\xbf\xbd" "b");
	free(got);
	assert_int_equal(shell_process_word("\xef\xbb\xbfx", '\\', NULL, &got, &err), 0);
	assert_string_equal(got, "x");
	free(got);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(simple_references),
		cmocka_unit_test(default_and_alternative_forms),
		cmocka_unit_test(pattern_forms),
		cmocka_unit_test(quotes_and_escapes),
		cmocka_unit_test(words_split_outside_quotes),
		cmocka_unit_test(matches_are_reported),
		cmocka_unit_test(raw_flags_keep_the_source),
		cmocka_unit_test(hostile_input_is_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
