/* Unit tests for `kiln build --ssh` (cli/ssh.c): buildx's syntax, its
 * defaults and error texts, key files refused, and the client's end of the
 * relay against a small fake agent: one agent connection per step
 * connection, requests a build may not make answered without the agent,
 * bad answers and unreachable agents failing the connection. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "err.h"
#include "ssh.h"

static char dir[64];
static char sock[128];                  /* a live fake agent */
static char dead[128];                  /* a socket nobody listens on */
static char keyfile[128];
static int listen_fd = -1;

/* The fake agent: answers each request on a connection with
 * SSH_AGENT_IDENTITIES_ANSWER holding no keys, except a sign request,
 * which gets a length over the bound. Counts the connections it accepts. */
static int accepted;

static bool
read_full(int fd, unsigned char *p, size_t n)
{
	while (n) {
		ssize_t k = read(fd, p, n);

		if (k <= 0)
			return false;
		p += k;
		n -= (size_t) k;
	}
	return true;
}

static void *
agent_conn(void *arg)
{
	int fd = (int) (intptr_t) arg;
	unsigned char req[8];

	while (read_full(fd, req, 5)) {
		static const unsigned char ok[] = { 0, 0, 0, 5, 12, 0, 0, 0, 0 };
		static const unsigned char big[] = { 0, 0x10, 0, 0, 12 };

		if (req[4] == 13)
			(void) !write(fd, big, sizeof(big));
		else
			(void) !write(fd, ok, sizeof(ok));
	}
	close(fd);
	return NULL;
}

static void *
agent_thread(void *arg)
{
	(void) arg;
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);
		pthread_t t;

		if (fd < 0)
			return NULL;
		__atomic_add_fetch(&accepted, 1, __ATOMIC_SEQ_CST);
		if (pthread_create(&t, NULL, agent_conn, (void *) (intptr_t) fd) != 0)
			close(fd);
		else
			pthread_detach(t);
	}
}

static int
make_socket(const char *path, bool keep)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 8) < 0)
		return -1;
	if (!keep) {
		close(fd);
		return 0;
	}
	return fd;
}

static int
setup(void **state)
{
	pthread_t t;
	FILE *f;

	(void) state;
	snprintf(dir, sizeof(dir), "/tmp/kiln-ssh-test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	snprintf(dead, sizeof(dead), "%s/dead.sock", dir);
	snprintf(keyfile, sizeof(keyfile), "%s/id_ed25519", dir);
	listen_fd = make_socket(sock, true);
	if (listen_fd < 0 || make_socket(dead, false) < 0)
		return -1;
	f = fopen(keyfile, "w");
	if (!f)
		return -1;
	fputs("-----BEGIN OPENSSH PRIVATE KEY-----\n", f);
	fclose(f);
	if (pthread_create(&t, NULL, agent_thread, NULL) != 0)
		return -1;
	pthread_detach(t);
	return 0;
}

static int
teardown(void **state)
{
	(void) state;
	(void) unlink(sock);
	(void) unlink(dead);
	(void) unlink(keyfile);
	(void) rmdir(dir);
	return 0;
}

static void
parse_err(const char *spec, const char *want)
{
	const char *specs[] = { spec };
	struct ssh_agents *a = NULL;
	struct kiln_err err = { 0 };

	assert_true(ssh_agents_new(specs, 1, &a, &err) < 0);
	assert_null(a);
	if (!strstr(err.msg, want))
		fail_msg("'%s': got '%s', want '%s'", spec, err.msg, want);
}

static void
syntax(void **state)
{
	char spec[256], spec2[256], two[300];
	const char *specs[3];
	struct ssh_agents *a = NULL;
	struct kiln_err err = { 0 };

	(void) state;
	/* default comes from SSH_AUTH_SOCK; ID=SOCKET names its own */
	setenv("SSH_AUTH_SOCK", sock, 1);
	snprintf(spec, sizeof(spec), "gh=%s", dead);
	specs[0] = "default";
	specs[1] = spec;
	assert_int_equal(ssh_agents_new(specs, 2, &a, &err), 0);
	assert_int_equal(ssh_agents_count(a), 2);
	assert_string_equal(ssh_agents_id(a, 0), "default");
	assert_string_equal(ssh_agents_id(a, 1), "gh");
	assert_null(ssh_agents_id(a, 2));
	ssh_agents_free(a);
	/* none at all is an empty set */
	assert_int_equal(ssh_agents_new(NULL, 0, &a, &err), 0);
	assert_int_equal(ssh_agents_count(a), 0);
	ssh_agents_free(a);

	/* buildx's errors */
	snprintf(spec2, sizeof(spec2), "=%s", sock);
	specs[0] = "default";
	specs[1] = spec2;               /* an empty id is "default" */
	a = NULL;
	assert_true(ssh_agents_new(specs, 2, &a, &err) < 0);
	assert_string_equal(err.msg, "invalid duplicate ID default");
	parse_err("default=/nonexistent/agent.sock", "stat /nonexistent/agent.sock: No such file");
	snprintf(two, sizeof(two), "default=%s,%s", sock, dead);
	parse_err(two, "only single socket allowed");
	unsetenv("SSH_AUTH_SOCK");
	parse_err("default", "invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set");
	parse_err("default=", "invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set");
	/* key files: refused, with what to do instead */
	snprintf(spec, sizeof(spec), "default=%s", keyfile);
	parse_err(spec, "ssh key files are not supported yet");
	parse_err(spec, "ssh-add");
}

static void
relay(void **state)
{
	char spec[256], spec2[256];
	const char *specs[2];
	struct ssh_agents *a = NULL;
	struct kiln_err err = { 0 };
	const unsigned char list[] = { 11 }, remove_all[] = { 19 }, add[] = { 17, 0, 0 }, bad[] = { 13 };
	void *resp = NULL;
	size_t len = 0;

	(void) state;
	snprintf(spec, sizeof(spec), "default=%s", sock);
	snprintf(spec2, sizeof(spec2), "gone=%s", dead);
	specs[0] = spec;
	specs[1] = spec2;
	assert_int_equal(ssh_agents_new(specs, 2, &a, &err), 0);

	/* a request goes to the agent and its answer comes back */
	assert_int_equal(ssh_agents_request(a, 3, 1, "default", list, 1, &resp, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_int_equal(((unsigned char *) resp)[0], 12);
	free(resp);
	assert_int_equal(__atomic_load_n(&accepted, __ATOMIC_SEQ_CST), 1);
	/* the same step connection keeps its agent connection... */
	assert_int_equal(ssh_agents_request(a, 3, 1, "default", list, 1, &resp, &len, &err), 0);
	free(resp);
	assert_int_equal(__atomic_load_n(&accepted, __ATOMIC_SEQ_CST), 1);
	/* ...another one gets its own, and closing the step ends both */
	assert_int_equal(ssh_agents_request(a, 3, 2, "default", list, 1, &resp, &len, &err), 0);
	free(resp);
	assert_int_equal(__atomic_load_n(&accepted, __ATOMIC_SEQ_CST), 2);
	ssh_agents_close(a, 3, 0, true);
	assert_int_equal(ssh_agents_request(a, 3, 1, "default", list, 1, &resp, &len, &err), 0);
	free(resp);
	assert_int_equal(__atomic_load_n(&accepted, __ATOMIC_SEQ_CST), 3);

	/* the agent is read-only for the build: answered here, SSH_AGENT_FAILURE */
	assert_int_equal(ssh_agents_request(a, 4, 1, "gone", remove_all, 1, &resp, &len, &err), 0);
	assert_int_equal(len, 1);
	assert_int_equal(((unsigned char *) resp)[0], 5);
	free(resp);
	assert_int_equal(ssh_agents_request(a, 4, 1, "default", add, sizeof(add), &resp, &len, &err), 0);
	assert_int_equal(((unsigned char *) resp)[0], 5);
	free(resp);
	assert_int_equal(__atomic_load_n(&accepted, __ATOMIC_SEQ_CST), 3);

	/* failures close the connection and say why, for this terminal */
	assert_int_equal(ssh_agents_request(a, 4, 1, "nope", list, 1, &resp, &len, &err), -ENOENT);
	assert_string_equal(err.msg, "unset ssh forward key nope");
	assert_int_equal(ssh_agents_request(a, 4, 1, "gone", list, 1, &resp, &len, &err), -ECONNREFUSED);
	assert_non_null(strstr(err.msg, "failed to connect to"));
	assert_int_equal(ssh_agents_request(a, 4, 2, "default", bad, 1, &resp, &len, &err), -EBADMSG);
	assert_int_equal(ssh_agents_request(a, 4, 2, "default", list, 0, &resp, &len, &err), -EBADMSG);
	ssh_agents_free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(syntax),
		cmocka_unit_test(relay),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
