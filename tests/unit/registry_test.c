/* Tests for shared/registry.c. The pure parts (references, WWW-Authenticate
 * challenges, platform ranking, Docker config files) are tested directly;
 * everything else against real registries: Debian's docker-registry
 * started here on 127.0.0.1 with a temp storage directory, three times:
 *
 *   plain  no auth; also reached through a TCP proxy that cuts the first
 *          blob download short, to test resuming
 *   basic  htpasswd (bcrypt from `htpasswd -Bbn`) plus the "redirect"
 *          storage middleware, which answers blob reads with a 307 to
 *          http://localhost:PORT/..., a file server run by this test that
 *          records whether any credentials reached it
 *   token  token auth: a token server run by this test issues RS256 JWTs
 *          (key and self-signed certificate made here with OpenSSL),
 *          pull-only to anonymous callers, everything asked to kiln/secret
 *
 * Every registry is killed by PID at the end (and by PDEATHSIG if this
 * process dies first). A registry that cannot start fails the group: the
 * package is installed by tests/install-deps.sh. Images pushed are made
 * here with shared/layer.h and shared/oci.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cas.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "layer.h"
#include "oci.h"
#include "platform.h"
#include "registry.h"
#include "util.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

#define USER "kiln"
#define PASS "s3cret-Pass"
#define TOKEN_SERVICE "kiln-test-registry"
#define TOKEN_ISSUER "kiln-test-issuer"

/* ---- helpers ---- */

static char *
pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
pathf(const char *fmt, ...)
{
	static __thread char bufs[8][1024];
	static __thread unsigned next;
	char *b = bufs[next++ % 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b, sizeof(bufs[0]), fmt, ap);
	va_end(ap);
	return b;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, len), 0);
	close(fd);
}

static void
write_str(const char *path, const char *s)
{
	write_file(path, s, strlen(s));
}

static char *
read_file(const char *path, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;

	if (kiln_read_file_at(AT_FDCWD, path, 64u << 20, &buf, &len) < 0)
		return NULL;
	if (ret_len)
		*ret_len = len;
	return buf;
}

/* Deterministic bytes that gzip cannot shrink. */
static void
fill_random(unsigned char *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 0x1234567;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char) (x >> 24);
	}
}

static int
free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *) &a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int
listen_any(int *ret_port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *) &a, &len) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*ret_port = ntohs(a.sin_port);
	return fd;
}

static int
connect_port(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Status of GET path on 127.0.0.1:port, or -1. */
static int
http_status(int port, const char *path)
{
	char buf[256];
	int fd = connect_port(port), status = -1;
	ssize_t n;

	if (fd < 0)
		return -1;
	snprintf(buf, sizeof(buf), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (kiln_write_all(fd, buf, strlen(buf)) == 0 && (n = read(fd, buf, sizeof(buf) - 1)) > 12) {
		buf[n] = '\0';
		if (strncmp(buf, "HTTP/1.", 7) == 0)
			status = atoi(buf + 9);
	}
	close(fd);
	return status;
}

static char *
b64(const void *data, size_t len, bool url)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	size_t n;

	assert_non_null(out);
	EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	if (url) {
		for (char *p = out; *p; p++)
			*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
		n = strlen(out);
		while (n > 0 && out[n - 1] == '=')
			out[--n] = '\0';
	}
	return out;
}

/* ---- docker-registry processes ---- */

struct regproc {
	pid_t pid;
	int port;
	char dir[512];
	char host[64];          /* "127.0.0.1:PORT" */
};

static int
registry_start(struct regproc *rp, const char *dir, const char *extra_yaml)
{
	for (int tries = 0; tries < 3; tries++) {
		_cleanup_free_ char *cfg = NULL;
		int64_t deadline;
		pid_t pid;

		snprintf(rp->dir, sizeof(rp->dir), "%s", dir);
		(void) kiln_mkdir_p(pathf("%s/storage", dir), 0755);
		rp->port = free_port();
		if (rp->port < 0)
			return -1;
		snprintf(rp->host, sizeof(rp->host), "127.0.0.1:%d", rp->port);
		cfg = kiln_strdupf("version: 0.1\n"
				   "log:\n  level: info\n"
				   "storage:\n  filesystem:\n    rootdirectory: %s/storage\n"
				   "  delete:\n    enabled: true\n"
				   "http:\n  addr: 127.0.0.1:%d\n%s",
				   dir, rp->port, extra_yaml ? extra_yaml : "");
		write_file(pathf("%s/config.yml", dir), cfg, strlen(cfg));

		pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			int fd = open(pathf("%s/registry.log", dir),
				      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

			(void) setsid();
			(void) prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (fd >= 0) {
				(void) dup2(fd, 1);
				(void) dup2(fd, 2);
			}
			execlp("docker-registry", "docker-registry", "serve", pathf("%s/config.yml", dir),
			       (char *) NULL);
			_exit(127);
		}
		rp->pid = pid;
		deadline = kiln_now_ms() + 15000;
		while (kiln_now_ms() < deadline) {
			int st = http_status(rp->port, "/v2/");

			if (st == 200 || st == 401)
				return 0;
			if (waitpid(pid, NULL, WNOHANG) == pid) {
				rp->pid = 0;
				break;
			}
			usleep(50 * 1000);
		}
		if (rp->pid) {
			kill(rp->pid, SIGKILL);
			waitpid(rp->pid, NULL, 0);
			rp->pid = 0;
		}
	}
	fprintf(stderr, "cannot start docker-registry in %s; its log:\n", dir);
	{
		_cleanup_free_ char *log = read_file(pathf("%s/registry.log", dir), NULL);

		fprintf(stderr, "%s\n", log ? log : "(none)");
	}
	return -1;
}

static void
registry_stop(struct regproc *rp)
{
	if (rp->pid <= 0)
		return;
	kill(rp->pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(rp->pid, NULL, WNOHANG) == rp->pid) {
			rp->pid = 0;
			return;
		}
		usleep(50 * 1000);
	}
	kill(rp->pid, SIGKILL);
	waitpid(rp->pid, NULL, 0);
	rp->pid = 0;
}

/* ---- a tiny HTTP server: one request per connection ---- */

struct mini;
typedef void (*mini_fn)(struct mini *m, int fd, const char *method, const char *target,
			const char *head);

struct mini {
	int lfd, port;
	pthread_t th;
	bool started;
	int stop;
	mini_fn fn;
	char root[512];         /* file server: what it serves */
	int requests;           /* atomics: read by the tests */
	int with_auth;
	int anonymous;
};

static void
respond(int fd, int status, const char *reason, const char *ctype, const void *body, size_t len,
	bool head_only)
{
	char h[512];

	snprintf(h, sizeof(h), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nContent-Type: %s\r\n"
		 "Connection: close\r\n\r\n", status, reason, len, ctype);
	(void) kiln_write_all(fd, h, strlen(h));
	if (!head_only && len)
		(void) kiln_write_all(fd, body, len);
}

/* The value of header name in a request head, copied into out; false when absent. */
static bool
header_value(const char *head, const char *name, char *out, size_t size)
{
	size_t n = strlen(name);

	for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
		const char *l = p + 2;

		if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
			const char *v = l + n + 1, *e;

			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			snprintf(out, size, "%.*s", (int) (e ? e - v : (long) strlen(v)), v);
			return true;
		}
	}
	return false;
}

static void *
mini_main(void *arg)
{
	struct mini *m = arg;

	while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { m->lfd, POLLIN, 0 };
		struct timeval tv = { 5, 0 };
		char head[16384], method[16], target[4096];
		size_t n = 0;
		int c;

		if (poll(&p, 1, 100) <= 0)
			continue;
		c = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		(void) setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (n < sizeof(head) - 1) {
			ssize_t r = read(c, head + n, sizeof(head) - 1 - n);

			if (r <= 0)
				break;
			n += (size_t) r;
			head[n] = '\0';
			if (strstr(head, "\r\n\r\n"))
				break;
		}
		head[n] = '\0';
		if (sscanf(head, "%15s %4095s", method, target) == 2) {
			__atomic_add_fetch(&m->requests, 1, __ATOMIC_RELAXED);
			m->fn(m, c, method, target, head);
		}
		close(c);
	}
	return NULL;
}

static int
mini_start(struct mini *m, mini_fn fn)
{
	m->fn = fn;
	m->lfd = listen_any(&m->port);
	if (m->lfd < 0 || pthread_create(&m->th, NULL, mini_main, m) != 0)
		return -1;
	m->started = true;
	return 0;
}

static void
mini_stop(struct mini *m)
{
	if (!m->started)
		return;
	__atomic_store_n(&m->stop, 1, __ATOMIC_RELEASE);
	pthread_join(m->th, NULL);
	close(m->lfd);
	m->started = false;
}

/* Serves files under m->root: the redirect target of the basic registry. */
static void
files_handler(struct mini *m, int fd, const char *method, const char *target, const char *head)
{
	char auth[512], tpath[512], path[1024];
	_cleanup_free_ char *data = NULL;
	size_t len = 0, tl = strcspn(target, "?");

	if (header_value(head, "Authorization", auth, sizeof(auth)))
		__atomic_add_fetch(&m->with_auth, 1, __ATOMIC_RELAXED);
	if (tl >= sizeof(tpath))
		tl = sizeof(tpath) - 1;
	memcpy(tpath, target, tl);
	tpath[tl] = '\0';
	snprintf(path, sizeof(path), "%s%s", m->root, tpath);
	if (strstr(tpath, "..") || !(data = read_file(path, &len))) {
		respond(fd, 404, "Not Found", "text/plain", "no such file\n", 13, false);
		return;
	}
	respond(fd, 200, "OK", "application/octet-stream", data, len, strcmp(method, "HEAD") == 0);
}

/* ---- the token server ---- */

static EVP_PKEY *token_key;
static char *token_x5c;                 /* base64 DER of the self-signed certificate */

static int
token_keys_make(const char *cert_path)
{
	X509 *x = X509_new();
	X509_NAME *name;
	unsigned char *der = NULL;
	int len;
	FILE *f;

	token_key = EVP_RSA_gen(2048);
	if (!token_key || !x)
		return -1;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, token_key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *) "kiln-token", -1,
				   -1, 0);
	X509_set_issuer_name(x, name);
	if (!X509_sign(x, token_key, EVP_sha256()))
		goto fail;
	f = fopen(cert_path, "we");
	if (!f || !PEM_write_X509(f, x)) {
		if (f)
			fclose(f);
		goto fail;
	}
	fclose(f);
	len = i2d_X509(x, &der);
	if (len <= 0)
		goto fail;
	token_x5c = b64(der, (size_t) len, false);
	OPENSSL_free(der);
	X509_free(x);
	return 0;
fail:
	X509_free(x);
	return -1;
}

static char *
jwt_sign(const char *claims)
{
	_cleanup_free_ char *hdr_json = kiln_strdupf("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5c\":[\"%s\"]}",
						     token_x5c);
	_cleanup_free_ char *h = b64(hdr_json, strlen(hdr_json), true);
	_cleanup_free_ char *c = b64(claims, strlen(claims), true);
	_cleanup_free_ char *input = kiln_strdupf("%s.%s", h, c);
	_cleanup_free_ char *s = NULL;
	unsigned char sig[512];
	size_t siglen = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, token_key) == 1 &&
	     EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *) input, strlen(input)) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return NULL;
	s = b64(sig, siglen, true);
	return kiln_strdupf("%s.%s", input, s);
}

static void
url_unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (*s == '%' && s[1] && s[2]) {
			char hex[3] = { s[1], s[2], 0 };

			*o++ = (char) strtol(hex, NULL, 16);
			s += 2;
		} else {
			*o++ = *s == '+' ? ' ' : *s;
		}
	}
	*o = '\0';
}

/* GET /token?service=..&scope=..[&scope=..][&account=..]: a JWT granting
 * the scopes' actions to kiln/secret, only "pull" to anonymous callers. */
static void
token_handler(struct mini *m, int fd, const char *method, const char *target, const char *head)
{
	char auth[512], query[4096], service[256] = "";
	_cleanup_json_ json_t *access = json_array();
	_cleanup_free_ char *claims = NULL, *jwt = NULL, *body = NULL;
	bool authed = false;
	time_t now = time(NULL);
	char *save = NULL;

	(void) method;
	if (header_value(head, "Authorization", auth, sizeof(auth))) {
		_cleanup_free_ char *want = kiln_strdupf("%s:%s", USER, PASS);
		_cleanup_free_ char *enc = b64(want, strlen(want), false);

		__atomic_add_fetch(&m->with_auth, 1, __ATOMIC_RELAXED);
		if (strncmp(auth, "Basic ", 6) != 0 || strcmp(auth + 6, enc) != 0) {
			static const char e[] = "{\"details\":\"incorrect username or password\"}";

			respond(fd, 401, "Unauthorized", "application/json", e, strlen(e), false);
			return;
		}
		authed = true;
	} else {
		__atomic_add_fetch(&m->anonymous, 1, __ATOMIC_RELAXED);
	}
	snprintf(query, sizeof(query), "%s", strchr(target, '?') ? strchr(target, '?') + 1 : "");
	for (char *kv = strtok_r(query, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');

		if (!eq)
			continue;
		*eq = '\0';
		url_unescape(eq + 1);
		if (strcmp(kv, "service") == 0) {
			snprintf(service, sizeof(service), "%s", eq + 1);
		} else if (strcmp(kv, "scope") == 0) {
			/* repository:NAME:ACTIONS */
			char *type = eq + 1, *name = strchr(type, ':'), *acts = strrchr(type, ':');
			json_t *actions = json_array();

			if (!name || name == acts)
				continue;
			*name++ = '\0';
			*acts++ = '\0';
			for (char *a = strtok(acts, ","); a; a = strtok(NULL, ","))
				if (authed || strcmp(a, "pull") == 0)
					json_array_append_new(actions, json_string(a));
			json_array_append_new(access, json_pack("{s:s, s:s, s:o}", "type", type, "name",
								name, "actions", actions));
		}
	}
	{
		_cleanup_json_ json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:O}",
						     "iss", TOKEN_ISSUER, "sub", authed ? USER : "",
						     "aud", service, "exp", (json_int_t) now + 300,
						     "nbf", (json_int_t) now - 10, "iat", (json_int_t) now,
						     "jti", "kiln", "access", access);

		claims = json_dumps(c, JSON_COMPACT);
	}
	jwt = claims ? jwt_sign(claims) : NULL;
	if (!jwt) {
		respond(fd, 500, "Internal Server Error", "text/plain", "sign\n", 5, false);
		return;
	}
	body = kiln_strdupf("{\"token\":\"%s\",\"expires_in\":300}", jwt);
	respond(fd, 200, "OK", "application/json", body, strlen(body), false);
}

/* ---- a TCP proxy that cuts the first blob download short ---- */

struct proxy {
	int lfd, port, upstream;
	pthread_t th;
	bool started;
	int stop;
	int cuts_left;                  /* blob GETs still to cut */
	long long cut_after;            /* response bytes let through before the cut */
	int cuts, ranges;               /* what happened (atomics) */
	long long range_from;
};

struct pair {
	int c, u;
	long long cut_left;             /* -1: not cut */
};

static void
pair_close(struct pair *p)
{
	if (p->c >= 0)
		close(p->c);
	if (p->u >= 0)
		close(p->u);
	p->c = p->u = -1;
}

static void *
proxy_main(void *arg)
{
	struct proxy *px = arg;
	struct pair pairs[32];
	size_t np = 0;

	while (!__atomic_load_n(&px->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd fds[1 + 2 * 32];
		char buf[65536];
		size_t nf = 0;

		fds[nf++] = (struct pollfd){ px->lfd, POLLIN, 0 };
		for (size_t i = 0; i < np; i++) {
			fds[nf++] = (struct pollfd){ pairs[i].c, POLLIN, 0 };
			fds[nf++] = (struct pollfd){ pairs[i].u, POLLIN, 0 };
		}
		if (poll(fds, nf, 100) <= 0)
			continue;
		for (size_t i = 0; i < np; i++) {
			struct pair *p = &pairs[i];
			short rc = fds[1 + 2 * i].revents, ru = fds[2 + 2 * i].revents;
			ssize_t n;

			if (p->c < 0)
				continue;
			if (rc & (POLLIN | POLLHUP | POLLERR)) {
				n = read(p->c, buf, sizeof(buf) - 1);
				if (n <= 0) {
					pair_close(p);
					continue;
				}
				buf[n] = '\0';
				if (strstr(buf, "GET ") && strstr(buf, "/blobs/sha256:") &&
				    __atomic_load_n(&px->cuts_left, __ATOMIC_RELAXED) > 0) {
					__atomic_sub_fetch(&px->cuts_left, 1, __ATOMIC_RELAXED);
					p->cut_left = px->cut_after;
				}
				if (strcasestr(buf, "\nRange: bytes=")) {
					__atomic_store_n(&px->range_from,
							 atoll(strcasestr(buf, "\nRange: bytes=") + 14),
							 __ATOMIC_RELAXED);
					__atomic_add_fetch(&px->ranges, 1, __ATOMIC_RELAXED);
				}
				if (kiln_write_all(p->u, buf, (size_t) n) < 0) {
					pair_close(p);
					continue;
				}
			}
			if (p->u >= 0 && (ru & (POLLIN | POLLHUP | POLLERR))) {
				n = read(p->u, buf, sizeof(buf));
				if (n <= 0) {
					pair_close(p);
					continue;
				}
				if (p->cut_left >= 0 && n > p->cut_left)
					n = (ssize_t) p->cut_left;
				if (kiln_write_all(p->c, buf, (size_t) n) < 0) {
					pair_close(p);
					continue;
				}
				if (p->cut_left >= 0) {
					p->cut_left -= n;
					if (p->cut_left == 0) {
						__atomic_add_fetch(&px->cuts, 1, __ATOMIC_RELAXED);
						pair_close(p);
					}
				}
			}
		}
		/* drop closed pairs */
		for (size_t i = 0; i < np;) {
			if (pairs[i].c < 0)
				pairs[i] = pairs[--np];
			else
				i++;
		}
		if ((fds[0].revents & POLLIN) && np < 32) {
			int c = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC), u;

			if (c >= 0) {
				u = connect_port(px->upstream);
				if (u < 0) {
					close(c);
				} else {
					pairs[np++] = (struct pair){ c, u, -1 };
				}
			}
		}
	}
	for (size_t i = 0; i < np; i++)
		pair_close(&pairs[i]);
	return NULL;
}

static int
proxy_start(struct proxy *px, int upstream)
{
	px->upstream = upstream;
	px->lfd = listen_any(&px->port);
	if (px->lfd < 0 || pthread_create(&px->th, NULL, proxy_main, px) != 0)
		return -1;
	px->started = true;
	return 0;
}

static void
proxy_stop(struct proxy *px)
{
	if (!px->started)
		return;
	__atomic_store_n(&px->stop, 1, __ATOMIC_RELEASE);
	pthread_join(px->th, NULL);
	close(px->lfd);
	px->started = false;
}

/* ---- the fixture: three registries and their helpers ---- */

struct fixture {
	char dir[64];
	struct regproc plain, basic, token;
	struct mini files, tokensrv;
	struct proxy proxy;
	struct cas *src;                /* where test images are made */
	int seq;                        /* unique names */
};

static struct fixture *fx;

static int
htpasswd_file(const char *path)
{
	_cleanup_free_ char *cmd = kiln_strdupf("htpasswd -Bbn '%s' '%s'", USER, PASS);
	char line[512] = "";
	FILE *p = popen(cmd, "re");
	int st;

	if (!p)
		return -1;
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	st = pclose(p);
	if (st != 0 || !strchr(line, ':')) {
		fprintf(stderr, "htpasswd -Bbn failed (package apache2-utils)\n");
		return -1;
	}
	write_file(path, line, strlen(line));
	return 0;
}

static int
group_setup(void **state)
{
	struct kiln_err err = { 0 };
	_cleanup_free_ char *yaml = NULL;

	fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/kiln-registry-test-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	if (cas_open(pathf("%s/src-cas", fx->dir), &fx->src, &err) < 0) {
		fprintf(stderr, "cas: %s\n", err.msg);
		return -1;
	}

	if (registry_start(&fx->plain, pathf("%s/plain", fx->dir), NULL) < 0)
		return -1;
	if (proxy_start(&fx->proxy, fx->plain.port) < 0)
		return -1;

	/* basic: htpasswd, blob reads redirected to our file server on
	 * "localhost", another origin than 127.0.0.1 */
	if (mini_start(&fx->files, files_handler) < 0)
		return -1;
	(void) kiln_mkdir_p(pathf("%s/basic", fx->dir), 0755);
	if (htpasswd_file(pathf("%s/basic/htpasswd", fx->dir)) < 0)
		return -1;
	snprintf(fx->files.root, sizeof(fx->files.root), "%s/basic/storage", fx->dir);
	yaml = kiln_strdupf("auth:\n  htpasswd:\n    realm: kiln-test\n    path: %s/basic/htpasswd\n"
			    "middleware:\n  storage:\n    - name: redirect\n      options:\n"
			    "        baseurl: http://localhost:%d/\n", fx->dir, fx->files.port);
	if (registry_start(&fx->basic, pathf("%s/basic", fx->dir), yaml) < 0)
		return -1;

	/* token: our token server signs, the registry trusts its certificate */
	if (mini_start(&fx->tokensrv, token_handler) < 0)
		return -1;
	(void) kiln_mkdir_p(pathf("%s/token", fx->dir), 0755);
	if (token_keys_make(pathf("%s/token/cert.pem", fx->dir)) < 0)
		return -1;
	free(yaml);
	yaml = kiln_strdupf("auth:\n  token:\n    realm: http://127.0.0.1:%d/token\n"
			    "    service: %s\n    issuer: %s\n    rootcertbundle: %s/token/cert.pem\n",
			    fx->tokensrv.port, TOKEN_SERVICE, TOKEN_ISSUER, fx->dir);
	if (registry_start(&fx->token, pathf("%s/token", fx->dir), yaml) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int
group_teardown(void **state)
{
	(void) state;
	if (!fx)
		return 0;
	registry_stop(&fx->plain);
	registry_stop(&fx->basic);
	registry_stop(&fx->token);
	proxy_stop(&fx->proxy);
	mini_stop(&fx->files);
	mini_stop(&fx->tokensrv);
	cas_free(fx->src);
	if (!getenv("KEEP"))
		(void) kiln_rm_rf(fx->dir);
	else
		fprintf(stderr, "kept %s\n", fx->dir);
	EVP_PKEY_free(token_key);
	free(token_x5c);
	free(fx);
	fx = NULL;
	return 0;
}

/* ---- images made here ---- */

struct img {
	struct oci_descriptor layer;
	struct oci_descriptor config;
	char *config_json;
	size_t config_len;
	char *manifest;
	size_t manifest_len;
	struct digest manifest_digest;
	struct platform platform;
};

static void
img_release(struct img *im)
{
	free(im->config_json);
	free(im->manifest);
	memset(im, 0, sizeof(*im));
}

/* One layer holding `payload` incompressible bytes, a config for the
 * platform (written as given, so "arm64/v8" keeps its variant in the
 * config) and an OCI manifest. The layer blob goes to fx->src. */
static void
img_make(const char *platform, size_t payload, uint64_t seed, struct img *im)
{
	struct kiln_err err = { 0 };
	struct layer_info li;
	struct oci_manifest m = { 0 };
	_cleanup_free_ unsigned char *data = malloc(payload ? payload : 1);
	_cleanup_json_ json_t *cfg = NULL;
	char *dir = pathf("%s/layer-%d", fx->dir, ++fx->seq);
	char os[16] = "", arch[16] = "", variant[16] = "";

	memset(im, 0, sizeof(*im));
	assert_non_null(data);
	assert_int_equal(platform_parse(platform, &im->platform), 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	fill_random(data, payload, seed);
	write_file(pathf("%s/data", dir), data, payload);
	if (layer_from_dir(fx->src, dir, &li, &err) != 0)
		fail_msg("layer: %s", err.msg);
	snprintf(im->layer.media_type, sizeof(im->layer.media_type), "%s", OCI_MT_LAYER_GZ);
	im->layer.digest = li.digest;
	im->layer.size = (int64_t) li.size;

	sscanf(platform, "%15[^/]/%15[^/]/%15s", os, arch, variant);
	cfg = json_pack("{s:s, s:s, s:{s:s, s:[]}, s:{}, s:[]}", "architecture", arch, "os", os,
			"rootfs", "type", "layers", "diff_ids", "config", "history");
	assert_non_null(cfg);
	if (variant[0])
		json_object_set_new(cfg, "variant", json_string(variant));
	assert_int_equal(oci_config_add_history(cfg, "kiln registry test", 1704067200, false,
						&li.diff_id), 0);
	im->config_json = oci_json_dump(cfg, &im->config_len);
	assert_non_null(im->config_json);
	snprintf(im->config.media_type, sizeof(im->config.media_type), "%s", OCI_MT_CONFIG);
	digest_buf(im->config_json, im->config_len, &im->config.digest);
	im->config.size = (int64_t) im->config_len;

	snprintf(m.media_type, sizeof(m.media_type), "%s", OCI_MT_MANIFEST);
	m.config = im->config;
	m.layers = &im->layer;
	m.n_layers = 1;
	im->manifest = oci_manifest_dump(&m, &im->manifest_len);
	assert_non_null(im->manifest);
	digest_buf(im->manifest, im->manifest_len, &im->manifest_digest);
}

static void
ref_of(struct registry_ref *ref, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
ref_of(struct registry_ref *ref, const char *fmt, ...)
{
	struct kiln_err err = { 0 };
	char s[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s, sizeof(s), fmt, ap);
	va_end(ap);
	if (registry_ref_parse(s, ref, &err) < 0)
		fail_msg("ref '%s': %s", s, err.msg);
}

static struct registry *
client(const char *docker_config)
{
	struct registry_opts o = { .docker_config = docker_config ? docker_config : "",
				   .retry_delay_ms = 20, .stall_timeout_s = 10 };
	struct kiln_err err = { 0 };
	struct registry *reg = NULL;

	if (registry_new(&o, &reg, &err) < 0)
		fail_msg("registry_new: %s", err.msg);
	return reg;
}

/* Push layer, config and manifest (by tag, or by digest when the ref has
 * one) with the given upload options for the layer. */
static void
img_push(struct registry *reg, const struct registry_ref *ref, const struct img *im,
	 const struct registry_push_opts *lo, enum registry_push_result *ret_layer)
{
	struct kiln_err err = { 0 };
	enum registry_push_result res;
	struct digest d;

	if (registry_push_blob(reg, ref, fx->src, &im->layer.digest, lo, &res, &err) < 0)
		fail_msg("push layer: %s", err.msg);
	if (ret_layer)
		*ret_layer = res;
	if (registry_push_blob_buf(reg, ref, im->config_json, im->config_len, &im->config.digest, NULL,
				   NULL, &err) < 0)
		fail_msg("push config: %s", err.msg);
	if (registry_put_manifest(reg, ref, OCI_MT_MANIFEST, im->manifest, im->manifest_len, &d,
				  &err) < 0)
		fail_msg("put manifest: %s", err.msg);
	assert_true(digest_equal(&d, &im->manifest_digest));
}

static struct cas *
fresh_cas(void)
{
	struct kiln_err err = { 0 };
	struct cas *cas = NULL;

	if (cas_open(pathf("%s/cas-%d", fx->dir, ++fx->seq), &cas, &err) < 0)
		fail_msg("cas: %s", err.msg);
	return cas;
}

/* The blob in cas equals the one in fx->src. */
static void
assert_same_blob(struct cas *cas, const struct digest *d)
{
	struct kiln_err err = { 0 };
	_cleanup_free_ char *a = NULL, *b = NULL;
	size_t al, bl;

	assert_int_equal(cas_get(cas, d, 64u << 20, &a, &al, &err), 0);
	assert_int_equal(cas_get(fx->src, d, 64u << 20, &b, &bl, &err), 0);
	assert_int_equal(al, bl);
	assert_memory_equal(a, b, al);
}

static size_t
count_tmp(struct cas *cas)
{
	char path[1024];
	struct digest zero = { 0 };
	_cleanup_closedir_ DIR *d = NULL;
	struct dirent *e;
	size_t n = 0;
	char *slash;

	/* DIR/blobs/sha256/00/... -> DIR/tmp */
	assert_int_equal(cas_path(cas, &zero, path, sizeof(path)), 0);
	slash = strstr(path, "/blobs/");
	assert_non_null(slash);
	strcpy(slash, "/tmp");
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	return n;
}

#define assert_err_contains(err, s) do { \
	if (!strstr((err).msg, (s))) \
		fail_msg("error '%s' does not contain '%s'", (err).msg, (s)); \
} while (0)

/* ---- pure parts ---- */

static void
ref_parse_cases(void **state)
{
	static const struct {
		const char *in, *domain, *path, *tag;
		bool digest;
	} ok[] = {
		{ "alpine", "docker.io", "library/alpine", "latest", false },
		{ "alpine:3.20", "docker.io", "library/alpine", "3.20", false },
		{ "docker.io/alpine", "docker.io", "library/alpine", "latest", false },
		{ "index.docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", false },
		{ "user/app:v1", "docker.io", "user/app", "v1", false },
		{ "localhost/app", "localhost", "app", "latest", false },
		{ "localhost:5000/a/b/c:t_1-2.3", "localhost:5000", "a/b/c", "t_1-2.3", false },
		{ "127.0.0.1:5000/busybox", "127.0.0.1:5000", "busybox", "latest", false },
		{ "ghcr.io/o/r", "ghcr.io", "o/r", "latest", false },
		{ "Registry/app", "Registry", "app", "latest", false },
		{ "[::1]:5000/app:1", "[::1]:5000", "app", "1", false },
		{ "x/a__b.c-d---e", "docker.io", "x/a__b.c-d---e", "latest", false },
		{ "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		  "docker.io", "library/alpine", "", true },
		{ "h:1/a:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		  "h:1", "a", "tag", true },
	};
	static const char *const bad[] = {
		"", ":tag", "Alpine", "user/App", "a//b", "a/", "/a", "a:", "a:-x", "a:.x",
		"a@sha256:123", "a@md5:0123456789abcdef0123456789abcdef", "-a", "a-", "a..b", "a___b",
		"host:port/a", "ho_st.io/a", "a__b.c/x", "h:123456/a", "a b", "a:tag:tag",
	};
	struct registry_ref r;
	struct kiln_err err = { 0 };
	char s[REGISTRY_REF_STR_SIZE];

	(void) state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (registry_ref_parse(ok[i].in, &r, &err) < 0)
			fail_msg("'%s': %s", ok[i].in, err.msg);
		assert_string_equal(r.domain, ok[i].domain);
		assert_string_equal(r.path, ok[i].path);
		assert_string_equal(r.tag, ok[i].tag);
		assert_int_equal(r.has_digest, ok[i].digest);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (registry_ref_parse(bad[i], &r, &err) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
	assert_int_equal(registry_ref_parse("user/App", &r, &err), -EINVAL);
	assert_err_contains(err, "lowercase");

	/* tags are at most 128 characters */
	{
		char tag[200];

		snprintf(tag, sizeof(tag), "a:%0128d", 0);
		assert_int_equal(registry_ref_parse(tag, &r, &err), 0);
		snprintf(tag, sizeof(tag), "a:%0129d", 0);
		assert_int_equal(registry_ref_parse(tag, &r, &err), -EINVAL);
	}

	/* a name of 256 characters is one too many */
	{
		char name[300];

		memset(name, 'a', 256);
		name[256] = '\0';
		assert_int_equal(registry_ref_parse(name, &r, &err), -EINVAL);
		name[255] = '\0';
		assert_int_equal(registry_ref_parse(name, &r, &err), 0);
	}

	assert_int_equal(registry_ref_parse("127.0.0.1:5000/a/b:1@sha256:"
					    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
					    &r, &err), 0);
	assert_string_equal(registry_ref_fmt(&r, s, sizeof(s)), "127.0.0.1:5000/a/b:1@sha256:"
			    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
	assert_int_equal(registry_ref_parse("busybox", &r, &err), 0);
	assert_string_equal(registry_ref_fmt(&r, s, sizeof(s)), "docker.io/library/busybox:latest");
}

static void
challenge_cases(void **state)
{
	struct registry_challenge c;

	(void) state;
	assert_int_equal(registry_challenge_parse("Bearer realm=\"https://auth.docker.io/token\","
						  "service=\"registry.docker.io\","
						  "scope=\"repository:samalba/my-app:pull,push\"", &c), 0);
	assert_int_equal(c.scheme, REGISTRY_AUTH_BEARER);
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:samalba/my-app:pull,push");
	assert_string_equal(c.error, "");

	/* Case, spaces, escapes, unquoted values, the error parameter. */
	assert_int_equal(registry_challenge_parse("bearer  Realm = \"http://h/t?a=1\" , "
						  "service=svc, error=\"insufficient_scope\", "
						  "scope=\"a \\\"b\\\" c\"", &c), 0);
	assert_string_equal(c.realm, "http://h/t?a=1");
	assert_string_equal(c.service, "svc");
	assert_string_equal(c.error, "insufficient_scope");
	assert_string_equal(c.scope, "a \"b\" c");

	/* Several challenges: Bearer wins whatever the order; unknown schemes
	 * and token68 forms are skipped. */
	assert_int_equal(registry_challenge_parse("Basic realm=\"r\", Negotiate abc==, "
						  "Bearer realm=\"https://t\",service=\"s\"", &c), 0);
	assert_int_equal(c.scheme, REGISTRY_AUTH_BEARER);
	assert_string_equal(c.realm, "https://t");
	assert_int_equal(registry_challenge_parse("Basic realm=\"Registry Realm\"", &c), 0);
	assert_int_equal(c.scheme, REGISTRY_AUTH_BASIC);
	assert_string_equal(c.realm, "Registry Realm");
	assert_int_equal(registry_challenge_parse("Negotiate, NTLM", &c), -EINVAL);
	assert_int_equal(registry_challenge_parse("", &c), -EINVAL);
	assert_int_equal(registry_challenge_parse("Bearer realm=\"unterminated", &c), -EINVAL);
	assert_int_equal(registry_challenge_parse("Bearer realm=\"x\" junk", &c), -EINVAL);
	/* A Bearer challenge without a realm is useless; Basic is taken. */
	assert_int_equal(registry_challenge_parse("Bearer service=\"s\", Basic realm=\"b\"", &c), 0);
	assert_int_equal(c.scheme, REGISTRY_AUTH_BASIC);
	{
		char big[2048];

		snprintf(big, sizeof(big), "Bearer realm=\"%01500d\"", 0);
		assert_int_equal(registry_challenge_parse(big, &c), -E2BIG);
	}
}

static struct platform
P(const char *s)
{
	struct platform p;

	assert_int_equal(platform_parse(s, &p), 0);
	return p;
}

static void
platform_matching(void **state)
{
	struct platform w;
	struct oci_index ix = { 0 };
	struct oci_descriptor d[4] = { 0 };
	size_t i;

	(void) state;
	w = P("linux/arm64");
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ 0 }), -1);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "arm64", "" }), 0);
	{
		struct platform v8 = P("linux/arm64/v8"), a8 = P("linux/arm/v8"), a7 = P("linux/arm/v7"),
				a5 = P("linux/arm/v5"), amd = P("linux/amd64");

		assert_int_equal(registry_platform_rank(&w, &v8), 0);
		assert_int_equal(registry_platform_rank(&w, &a8), 1);
		assert_int_equal(registry_platform_rank(&w, &a7), 2);
		assert_int_equal(registry_platform_rank(&w, &a5), 4);
		assert_int_equal(registry_platform_rank(&w, &amd), -1);
	}
	w = P("linux/amd64");
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "386", "" }), 1);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "arm64", "" }), -1);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "windows", "amd64", "" }), -1);
	w = P("linux/amd64/v3");
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "amd64", "v2" }), 1);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "amd64", "" }), 2);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "amd64", "v4" }), -1);
	w = P("linux/arm/v7");
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "arm", "v6" }), 1);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "arm", "v8" }), -1);
	assert_int_equal(registry_platform_rank(&w, &(struct platform){ "linux", "arm64", "" }), -1);

	/* Selection: the best rank wins, the first on a tie; entries
	 * without a platform are not candidates. */
	ix.manifests = d;
	ix.n_manifests = 4;
	d[0].has_platform = false;
	d[1].has_platform = true, d[1].platform = P("linux/arm/v7");
	d[2].has_platform = true, d[2].platform = P("linux/arm/v8");
	d[3].has_platform = true, d[3].platform = P("linux/arm/v8");
	w = P("linux/arm64");
	assert_int_equal(registry_index_select(&ix, &w, &i), 0);
	assert_int_equal(i, 2);
	w = P("linux/arm/v7");
	assert_int_equal(registry_index_select(&ix, &w, &i), 0);
	assert_int_equal(i, 1);
	w = P("linux/amd64");
	assert_int_equal(registry_index_select(&ix, &w, &i), -ENOENT);
	d[0].has_platform = true, d[0].platform = P("linux/386");
	assert_int_equal(registry_index_select(&ix, &w, &i), 0);
	assert_int_equal(i, 0);
}

static void
docker_config_files(void **state)
{
	struct registry_opts o = { 0 };
	struct kiln_err err = { 0 };
	struct registry *reg = NULL;
	char *path = pathf("%s/cfg-bad.json", fx->dir);
	char *dir = pathf("%s/dockercfg-empty", fx->dir);
	char *old = getenv("DOCKER_CONFIG") ? strdup(getenv("DOCKER_CONFIG")) : NULL;

	(void) state;
	write_str(path, "{\"auths\": [");
	o.docker_config = path;
	assert_int_equal(registry_new(&o, &reg, &err), -EINVAL);
	assert_err_contains(err, path);

	write_str(path, "{\"auths\":{\"h:1\":{\"auth\":\"!!notbase64\"}}}");
	assert_int_equal(registry_new(&o, &reg, &err), -EINVAL);
	assert_err_contains(err, "h:1");
	write_str(path, "{\"auths\":{\"h:1\":{\"auth\":\"bm9jb2xvbg==\"}}}");    /* "nocolon" */
	assert_int_equal(registry_new(&o, &reg, &err), -EINVAL);

	/* An explicit file must exist; the default one may be missing. */
	o.docker_config = pathf("%s/nonexistent.json", fx->dir);
	assert_int_equal(registry_new(&o, &reg, &err), -ENOENT);
	assert_int_equal(mkdir(dir, 0700), 0);
	setenv("DOCKER_CONFIG", dir, 1);
	o.docker_config = NULL;
	assert_int_equal(registry_new(&o, &reg, &err), 0);
	registry_free(reg);
	reg = NULL;
	/* credsStore and empty entries are ignored */
	write_str(pathf("%s/config.json", dir), "{\"credsStore\":\"desktop\",\"auths\":{\"x.io\":{}}}");
	assert_int_equal(registry_new(&o, &reg, &err), 0);
	registry_free(reg);
	if (old)
		setenv("DOCKER_CONFIG", old, 1);
	else
		unsetenv("DOCKER_CONFIG");
	free(old);
	registry_free(NULL);
}

/* ---- against the plain registry ---- */

static void
push_and_pull(void **state)
{
	struct registry *reg = client(NULL);
	struct registry_push_opts chunked = { .upload = REGISTRY_UPLOAD_CHUNKED, .chunk_size = 64 * 1024 };
	struct registry_push_opts mono = { .upload = REGISTRY_UPLOAD_MONOLITHIC };
	struct registry_ref ref, ref2, by_digest, other;
	struct registry_image ri;
	struct registry_doc doc;
	struct oci_descriptor desc;
	struct registry_stats st;
	struct kiln_err err = { 0 };
	enum registry_push_result res;
	struct img a, b;
	struct cas *cas = fresh_cas();
	char ds[DIGEST_STR_SIZE];
	int64_t size = 0;

	(void) state;
	img_make("linux/amd64", 20000, 1, &a);
	img_make("linux/amd64", 300 * 1024, 2, &b);      /* several 64 KiB chunks */
	ref_of(&ref, "%s/kiln/app:one", fx->plain.host);
	ref_of(&ref2, "%s/kiln/app:two", fx->plain.host);

	/* monolithic, then chunked; a second push finds the blob there */
	assert_int_equal(registry_blob_exists(reg, &ref, &a.layer.digest, NULL, &err), 0);
	img_push(reg, &ref, &a, &mono, &res);
	assert_int_equal(res, REGISTRY_PUSH_UPLOADED);
	img_push(reg, &ref2, &b, &chunked, &res);
	assert_int_equal(res, REGISTRY_PUSH_UPLOADED);
	assert_int_equal(registry_blob_exists(reg, &ref, &b.layer.digest, &size, &err), 1);
	assert_int_equal(size, b.layer.size);
	img_push(reg, &ref, &a, &mono, &res);
	assert_int_equal(res, REGISTRY_PUSH_EXISTED);

	/* a cross-repository mount into a repository that lacks the blob */
	ref_of(&other, "%s/kiln/other:latest", fx->plain.host);
	assert_int_equal(registry_blob_exists(reg, &other, &b.layer.digest, NULL, &err), 0);
	if (registry_push_blob(reg, &other, fx->src, &b.layer.digest,
			       &(struct registry_push_opts){ .mount_from = "kiln/app" }, &res, &err) < 0)
		fail_msg("mount: %s", err.msg);
	assert_int_equal(res, REGISTRY_PUSH_MOUNTED);
	assert_int_equal(registry_blob_exists(reg, &other, &b.layer.digest, NULL, &err), 1);
	/* a mount from a repository without the blob falls back to an upload */
	if (registry_push_blob(reg, &other, fx->src, &a.layer.digest,
			       &(struct registry_push_opts){ .mount_from = "kiln/nothing",
							     .skip_exists_check = true }, &res, &err) < 0)
		fail_msg("mount fallback: %s", err.msg);
	assert_int_equal(res, REGISTRY_PUSH_UPLOADED);

	/* resolve by tag */
	if (registry_resolve(reg, &ref2, &(struct platform){ "linux", "amd64", "" }, &ri, &err) < 0)
		fail_msg("resolve: %s", err.msg);
	assert_true(digest_equal(&ri.digest, &b.manifest_digest));
	assert_string_equal(ri.media_type, OCI_MT_MANIFEST);
	assert_true(digest_equal(&ri.manifest.digest, &b.manifest_digest));
	assert_int_equal(ri.manifest.len, b.manifest_len);
	assert_memory_equal(ri.manifest.data, b.manifest, b.manifest_len);
	assert_true(digest_equal(&ri.config.digest, &b.config.digest));
	assert_memory_equal(ri.config.data, b.config_json, b.config_len);
	assert_string_equal(ri.platform.arch, "amd64");
	registry_image_release(&ri);

	/* by digest, and a manifest pushed by digest */
	by_digest = ref;
	by_digest.tag[0] = '\0';
	by_digest.has_digest = true;
	by_digest.digest = b.manifest_digest;
	if (registry_put_manifest(reg, &by_digest, OCI_MT_MANIFEST, b.manifest, b.manifest_len, NULL,
				  &err) < 0)
		fail_msg("put by digest: %s", err.msg);
	if (registry_get_manifest(reg, &by_digest, &doc, &err) < 0)
		fail_msg("get by digest: %s", err.msg);
	assert_true(digest_equal(&doc.digest, &b.manifest_digest));
	assert_string_equal(doc.media_type, OCI_MT_MANIFEST);
	registry_doc_release(&doc);
	/* a manifest whose bytes do not match the digest in the ref is refused */
	assert_int_equal(registry_put_manifest(reg, &by_digest, OCI_MT_MANIFEST, a.manifest,
					       a.manifest_len, NULL, &err), -EBADMSG);

	assert_int_equal(registry_head_manifest(reg, &ref, &desc, &err), 1);
	assert_true(digest_equal(&desc.digest, &a.manifest_digest));
	assert_int_equal(desc.size, (int64_t) a.manifest_len);
	assert_string_equal(desc.media_type, OCI_MT_MANIFEST);

	/* all blobs of both images into a fresh store, in one call */
	{
		struct oci_descriptor ds4[5] = { a.layer, b.layer, a.config, b.config, a.layer };

		if (registry_fetch_blobs(reg, &ref, ds4, 5, cas, &err) < 0)
			fail_msg("fetch: %s", err.msg);
		assert_same_blob(cas, &a.layer.digest);
		assert_same_blob(cas, &b.layer.digest);
		assert_true(cas_has(cas, &a.config.digest));
		assert_true(cas_has(cas, &b.config.digest));
		registry_get_stats(reg, &st);
		assert_int_equal(st.blobs_fetched, 4);
		/* again: everything is there, nothing is fetched */
		assert_int_equal(registry_fetch_blobs(reg, &ref, ds4, 5, cas, &err), 0);
		registry_get_stats(reg, &st);
		assert_int_equal(st.blobs_fetched, 4);
	}
	{
		struct cas_info info;

		assert_int_equal(cas_stat(cas, &a.layer.digest, &info, &err), 0);
		assert_string_equal(info.media_type, OCI_MT_LAYER_GZ);
	}
	/* get_blob bounds what it reads */
	assert_int_equal(registry_get_blob(reg, &ref, &b.layer.digest, 1000, &doc, &err), -EFBIG);
	assert_int_equal(registry_get_blob(reg, &ref, &a.config.digest, 1 << 20, &doc, &err), 0);
	assert_int_equal(doc.len, a.config_len);
	registry_doc_release(&doc);
	registry_get_stats(reg, &st);
	/* a and b: layer and config each, and the fallback upload */
	assert_int_equal(st.blobs_pushed, 5);
	assert_int_equal(st.blobs_mounted, 1);
	assert_int_equal(st.token_requests, 0);
	(void) ds;

	cas_free(cas);
	img_release(&a);
	img_release(&b);
	registry_free(reg);
}

/* An index over amd64, arm64/v8 and arm/v7, plus an attestation-like
 * unknown/unknown entry, written by hand so that "v8" stays in it. */
static void
index_platforms(void **state)
{
	struct registry *reg = client(NULL);
	struct registry_ref ref, rd;
	struct registry_image ri;
	struct registry_doc doc;
	struct kiln_err err = { 0 };
	struct img amd, arm64, armv7;
	_cleanup_free_ char *index = NULL;
	char d1[DIGEST_STR_SIZE], d2[DIGEST_STR_SIZE], d3[DIGEST_STR_SIZE];
	struct digest idx_digest;

	(void) state;
	img_make("linux/amd64", 1000, 11, &amd);
	img_make("linux/arm64/v8", 1000, 12, &arm64);
	img_make("linux/arm/v7", 1000, 13, &armv7);
	ref_of(&ref, "%s/kiln/multi:latest", fx->plain.host);
	rd = ref;
	rd.has_digest = true;
	rd.tag[0] = '\0';
	rd.digest = amd.manifest_digest;
	img_push(reg, &rd, &amd, NULL, NULL);
	rd.digest = arm64.manifest_digest;
	img_push(reg, &rd, &arm64, NULL, NULL);
	rd.digest = armv7.manifest_digest;
	img_push(reg, &rd, &armv7, NULL, NULL);
	index = kiln_strdupf(
		"{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":["
		"{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,"
		"\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}},"
		"{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,"
		"\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
		"{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,"
		"\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},"
		"{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,"
		"\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}}]}",
		OCI_MT_INDEX, OCI_MT_MANIFEST, digest_fmt(&armv7.manifest_digest, d1), armv7.manifest_len,
		OCI_MT_MANIFEST, digest_fmt(&amd.manifest_digest, d2), amd.manifest_len,
		OCI_MT_MANIFEST, digest_fmt(&arm64.manifest_digest, d3), arm64.manifest_len,
		OCI_MT_MANIFEST, d2, amd.manifest_len);
	if (registry_put_manifest(reg, &ref, OCI_MT_INDEX, index, strlen(index), &idx_digest, &err) < 0)
		fail_msg("put index: %s", err.msg);

	if (registry_get_manifest(reg, &ref, &doc, &err) < 0)
		fail_msg("get index: %s", err.msg);
	assert_string_equal(doc.media_type, OCI_MT_INDEX);
	assert_true(digest_equal(&doc.digest, &idx_digest));
	registry_doc_release(&doc);

	/* an arm64 node takes the arm64/v8 image over arm/v7 */
	if (registry_resolve(reg, &ref, &(struct platform){ "linux", "arm64", "" }, &ri, &err) < 0)
		fail_msg("resolve arm64: %s", err.msg);
	assert_true(digest_equal(&ri.digest, &idx_digest));
	assert_string_equal(ri.media_type, OCI_MT_INDEX);
	assert_true(digest_equal(&ri.manifest.digest, &arm64.manifest_digest));
	assert_true(digest_equal(&ri.config.digest, &arm64.config.digest));
	assert_string_equal(ri.platform.arch, "arm64");
	registry_image_release(&ri);

	if (registry_resolve(reg, &ref, &(struct platform){ "linux", "amd64", "" }, &ri, &err) < 0)
		fail_msg("resolve amd64: %s", err.msg);
	assert_true(digest_equal(&ri.manifest.digest, &amd.manifest_digest));
	registry_image_release(&ri);

	if (registry_resolve(reg, &ref, &(struct platform){ "linux", "arm", "v7" }, &ri, &err) < 0)
		fail_msg("resolve arm/v7: %s", err.msg);
	assert_true(digest_equal(&ri.manifest.digest, &armv7.manifest_digest));
	registry_image_release(&ri);

	/* nothing for arm/v6 or s390x: the error says what there is */
	assert_int_equal(registry_resolve(reg, &ref, &(struct platform){ "linux", "s390x", "" }, &ri,
					  &err), -ENOENT);
	assert_err_contains(err, "linux/s390x");
	assert_err_contains(err, "linux/arm/v7, linux/amd64, linux/arm64");
	assert_err_contains(err, "kiln/multi:latest");

	/* a single manifest is checked through its config */
	rd.digest = amd.manifest_digest;
	assert_int_equal(registry_resolve(reg, &rd, &(struct platform){ "linux", "arm64", "" }, &ri,
					  &err), -ENOENT);
	assert_err_contains(err, "is for platform linux/amd64, not linux/arm64");
	rd.digest = armv7.manifest_digest;
	if (registry_resolve(reg, &rd, &(struct platform){ "linux", "arm64", "" }, &ri, &err) < 0)
		fail_msg("arm64 runs arm/v7: %s", err.msg);
	registry_image_release(&ri);

	img_release(&amd);
	img_release(&arm64);
	img_release(&armv7);
	registry_free(reg);
}

static void
errors_name_things(void **state)
{
	struct registry *reg = client(NULL);
	struct registry_ref ref;
	struct registry_doc doc;
	struct registry_image ri;
	struct oci_descriptor desc;
	struct kiln_err err = { 0 };
	struct digest d;
	int port = free_port();

	(void) state;
	ref_of(&ref, "%s/kiln/nothing:here", fx->plain.host);
	assert_int_equal(registry_get_manifest(reg, &ref, &doc, &err), -ENOENT);
	assert_err_contains(err, "kiln/nothing:here");
	assert_err_contains(err, "404 Not Found");
	assert_err_contains(err, "MANIFEST_UNKNOWN");
	assert_int_equal(registry_resolve(reg, &ref, NULL, &ri, &err), -ENOENT);
	assert_int_equal(registry_head_manifest(reg, &ref, &desc, &err), 0);
	digest_buf("x", 1, &d);
	assert_int_equal(registry_get_blob(reg, &ref, &d, 100, &doc, &err), -ENOENT);
	assert_err_contains(err, "BLOB_UNKNOWN");
	assert_int_equal(registry_push_blob(reg, &ref, fx->src, &d, NULL, NULL, &err), -ENOENT);

	ref_of(&ref, "127.0.0.1:%d/kiln/app", port);
	assert_int_equal(registry_get_manifest(reg, &ref, &doc, &err), -ECONNREFUSED);
	assert_err_contains(err, pathf("http://127.0.0.1:%d/v2/kiln/app/manifests/latest", port));
	registry_free(reg);
}

struct racer {
	struct registry *reg;
	const struct registry_ref *ref;
	const struct oci_descriptor *descs;
	size_t n;
	struct cas *cas;
	pthread_barrier_t *bar;
	int r;
	struct kiln_err err;
};

static void *
racer_main(void *arg)
{
	struct racer *rc = arg;

	pthread_barrier_wait(rc->bar);
	rc->r = registry_fetch_blobs(rc->reg, rc->ref, rc->descs, rc->n, rc->cas, &rc->err);
	return NULL;
}

/* The access log lines of a registry for GETs of uri that answered 200. */
static int
count_gets(const struct regproc *rp, const char *uri)
{
	_cleanup_free_ char *log = read_file(pathf("%s/registry.log", rp->dir), NULL);
	char *needle = pathf("\"GET %s HTTP/1.1\" 200 ", uri);
	int n = 0;

	for (char *p = log; p && (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void
concurrent_same_blob(void **state)
{
	enum { THREADS = 8 };
	struct registry *reg = client(NULL);
	struct registry_ref ref;
	struct registry_stats st;
	struct racer rc[THREADS];
	pthread_t th[THREADS];
	pthread_barrier_t bar;
	struct img a, b;
	struct oci_descriptor set1[2], set2[2];
	struct cas *cas = fresh_cas();
	char ds[DIGEST_STR_SIZE];

	(void) state;
	img_make("linux/amd64", 6u << 20, 21, &a);
	img_make("linux/amd64", 3u << 20, 22, &b);
	ref_of(&ref, "%s/kiln/race:latest", fx->plain.host);
	img_push(reg, &ref, &a, NULL, NULL);
	img_push(reg, &ref, &b, NULL, NULL);
	set1[0] = a.layer, set1[1] = b.layer;
	set2[0] = b.layer, set2[1] = a.layer;

	pthread_barrier_init(&bar, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		rc[i] = (struct racer){ reg, &ref, i % 2 ? set1 : set2, 2, cas, &bar, 0, { 0 } };
		assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rc[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		if (rc[i].r < 0)
			fail_msg("thread %d: %s", i, rc[i].err.msg);
	}
	pthread_barrier_destroy(&bar);
	assert_same_blob(cas, &a.layer.digest);
	assert_same_blob(cas, &b.layer.digest);
	registry_get_stats(reg, &st);
	assert_int_equal(st.blobs_fetched, 2);
	assert_int_equal(count_gets(&fx->plain, pathf("/v2/kiln/race/blobs/%s",
						       digest_fmt(&a.layer.digest, ds))), 1);
	assert_int_equal(count_gets(&fx->plain, pathf("/v2/kiln/race/blobs/%s",
						       digest_fmt(&b.layer.digest, ds))), 1);
	assert_int_equal(count_tmp(cas), 0);

	cas_free(cas);
	img_release(&a);
	img_release(&b);
	registry_free(reg);
}

/* Damage the registry's copy of a blob: the download fails verification
 * and leaves nothing in the store, not even a temp file. */
static void
corrupted_blob(void **state)
{
	struct registry *reg = client(NULL);
	struct registry_ref ref;
	struct kiln_err err = { 0 };
	struct img a, b;
	struct cas *cas = fresh_cas();
	char hex[65], *path;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r;

	(void) state;
	img_make("linux/amd64", 100000, 31, &a);
	img_make("linux/amd64", 100000, 32, &b);
	ref_of(&ref, "%s/kiln/damaged:latest", fx->plain.host);
	img_push(reg, &ref, &a, NULL, NULL);
	img_push(reg, &ref, &b, NULL, NULL);

	/* same length, one byte flipped */
	digest_hex(&a.layer.digest, hex);
	path = pathf("%s/storage/docker/registry/v2/blobs/sha256/%.2s/%s/data", fx->plain.dir, hex, hex);
	data = read_file(path, &len);
	assert_non_null(data);
	data[len / 2] ^= 0x55;
	write_file(path, data, len);
	r = registry_fetch_blobs(reg, &ref, &a.layer, 1, cas, &err);
	assert_int_equal(r, -EBADMSG);
	assert_err_contains(err, "expected ");
	assert_err_contains(err, hex);
	assert_false(cas_has(cas, &a.layer.digest));
	assert_int_equal(count_tmp(cas), 0);

	/* truncated */
	digest_hex(&b.layer.digest, hex);
	path = pathf("%s/storage/docker/registry/v2/blobs/sha256/%.2s/%s/data", fx->plain.dir, hex, hex);
	assert_int_equal(truncate(path, 5000), 0);
	r = registry_fetch_blobs(reg, &ref, &b.layer, 1, cas, &err);
	assert_true(r < 0);
	assert_false(cas_has(cas, &b.layer.digest));
	assert_int_equal(count_tmp(cas), 0);

	cas_free(cas);
	img_release(&a);
	img_release(&b);
	registry_free(reg);
}

/* Through the proxy, the first blob download is cut after 100 KiB: the
 * client continues with a Range request instead of starting over. */
static void
resume_broken_download(void **state)
{
	struct registry *reg = client(NULL);
	struct registry_ref ref, via;
	struct registry_stats st;
	struct kiln_err err = { 0 };
	struct img a;
	struct cas *cas = fresh_cas();

	(void) state;
	img_make("linux/amd64", 1u << 20, 41, &a);
	ref_of(&ref, "%s/kiln/resume:latest", fx->plain.host);
	img_push(reg, &ref, &a, NULL, NULL);

	ref_of(&via, "127.0.0.1:%d/kiln/resume:latest", fx->proxy.port);
	fx->proxy.cut_after = 100 * 1024;
	__atomic_store_n(&fx->proxy.cuts_left, 1, __ATOMIC_RELEASE);
	if (registry_fetch_blobs(reg, &via, &a.layer, 1, cas, &err) < 0)
		fail_msg("fetch via proxy: %s", err.msg);
	assert_same_blob(cas, &a.layer.digest);
	assert_int_equal(__atomic_load_n(&fx->proxy.cuts, __ATOMIC_ACQUIRE), 1);
	assert_int_equal(__atomic_load_n(&fx->proxy.ranges, __ATOMIC_ACQUIRE), 1);
	assert_true(fx->proxy.range_from > 0);
	registry_get_stats(reg, &st);
	assert_int_equal(st.resumed, 1);
	assert_int_equal(st.blobs_fetched, 1);
	/* the bytes before the cut were not fetched twice */
	assert_true(st.bytes_fetched == (uint64_t) a.layer.size);

	cas_free(cas);
	img_release(&a);
	registry_free(reg);
}

/* ---- htpasswd (Basic) and redirects ---- */

static char *
docker_config(const char *name, const char *json)
{
	char *path = strdup(pathf("%s/%s.json", fx->dir, name));

	write_file(path, json, strlen(json));
	return path;
}

static void
basic_auth(void **state)
{
	struct registry *anon = client(NULL), *reg;
	struct registry_ref ref;
	struct registry_image ri;
	struct registry_doc doc;
	struct kiln_err err = { 0 };
	struct img a;
	struct cas *cas = fresh_cas();
	_cleanup_free_ char *plain = kiln_strdupf("%s:%s", USER, PASS);
	_cleanup_free_ char *enc = b64(plain, strlen(plain), false);
	_cleanup_free_ char *cfg = NULL, *cfg2 = NULL, *json = NULL;
	int files_before;

	(void) state;
	img_make("linux/amd64", 50000, 51, &a);
	ref_of(&ref, "%s/kiln/private:latest", fx->basic.host);

	/* no credentials: a clear 401 */
	assert_int_equal(registry_get_manifest(anon, &ref, &doc, &err), -KILN_EAUTH);
	assert_err_contains(err, "401 Unauthorized");
	assert_err_contains(err, "UNAUTHORIZED");
	assert_err_contains(err, pathf("no credentials for '%s'", fx->basic.host));
	assert_err_contains(err, "kiln/private:latest");
	assert_int_equal(registry_push_blob(anon, &ref, fx->src, &a.layer.digest, NULL, NULL, &err),
			 -KILN_EAUTH);

	/* wrong credentials: rejected, and the password is not in the message */
	assert_int_equal(registry_set_credentials(anon, fx->basic.host, USER, "wrong-password", &err),
			 0);
	assert_int_equal(registry_get_manifest(anon, &ref, &doc, &err), -KILN_EAUTH);
	assert_err_contains(err, "rejected the credentials");
	assert_null(strstr(err.msg, "wrong-password"));

	/* credentials from a config.json (base64 "auth") */
	json = kiln_strdupf("{\"auths\":{\"https://other.example\":{\"auth\":\"eDp5\"},"
			    "\"http://%s\":{\"auth\":\"%s\"}}}", fx->basic.host, enc);
	cfg = docker_config("basic-auth", json);
	reg = client(cfg);
	img_push(reg, &ref, &a, NULL, NULL);
	files_before = __atomic_load_n(&fx->files.requests, __ATOMIC_ACQUIRE);
	if (registry_resolve(reg, &ref, &(struct platform){ "linux", "amd64", "" }, &ri, &err) < 0)
		fail_msg("resolve: %s", err.msg);
	assert_true(digest_equal(&ri.manifest.digest, &a.manifest_digest));
	registry_image_release(&ri);
	if (registry_fetch_blobs(reg, &ref, &a.layer, 1, cas, &err) < 0)
		fail_msg("fetch: %s", err.msg);
	assert_same_blob(cas, &a.layer.digest);

	/* blob reads went to the file server on another origin (localhost),
	 * and no credentials went with them */
	assert_true(__atomic_load_n(&fx->files.requests, __ATOMIC_ACQUIRE) >= files_before + 2);
	assert_int_equal(__atomic_load_n(&fx->files.with_auth, __ATOMIC_ACQUIRE), 0);
	registry_free(reg);

	/* the username/password form works too */
	free(json);
	json = kiln_strdupf("{\"auths\":{\"%s\":{\"username\":\"%s\",\"password\":\"%s\"}}}",
			    fx->basic.host, USER, PASS);
	cfg2 = docker_config("basic-userpass", json);
	reg = client(cfg2);
	if (registry_get_manifest(reg, &ref, &doc, &err) < 0)
		fail_msg("get with username/password: %s", err.msg);
	registry_doc_release(&doc);
	registry_free(reg);

	cas_free(cas);
	img_release(&a);
	registry_free(anon);
}

/* ---- copying blobs between repositories (imagetools create) ---- */

static void
copy_blob(void **state)
{
	struct registry *reg = client(NULL);
	struct registry_ref src, dst, other_host, nothing;
	struct registry_stats before, after;
	struct kiln_err err = { 0 };
	enum registry_push_result res;
	struct oci_descriptor missing;
	struct img a;
	struct cas *cas = fresh_cas();
	int64_t size = 0;

	(void) state;
	img_make("linux/arm64", 40000, 61, &a);
	ref_of(&src, "%s/kiln/copy-src:v1", fx->plain.host);
	ref_of(&dst, "%s/kiln/copy-dst:v1", fx->plain.host);
	img_push(reg, &src, &a, NULL, NULL);

	/* same registry: mounted, nothing downloaded */
	assert_int_equal(registry_blob_exists(reg, &dst, &a.layer.digest, NULL, &err), 0);
	if (registry_copy_blob(reg, &src, &dst, &a.layer, cas, &res, &err) < 0)
		fail_msg("copy by mount: %s", err.msg);
	assert_int_equal(res, REGISTRY_PUSH_MOUNTED);
	assert_int_equal(registry_blob_exists(reg, &dst, &a.layer.digest, &size, &err), 1);
	assert_int_equal(size, a.layer.size);
	assert_false(cas_has(cas, &a.layer.digest));

	/* again: already there; and a copy within one repository asks nothing */
	if (registry_copy_blob(reg, &src, &dst, &a.layer, cas, &res, &err) < 0)
		fail_msg("copy again: %s", err.msg);
	assert_int_equal(res, REGISTRY_PUSH_EXISTED);
	registry_get_stats(reg, &before);
	assert_int_equal(registry_copy_blob(reg, &src, &src, &a.layer, cas, &res, &err), 0);
	assert_int_equal(res, REGISTRY_PUSH_EXISTED);
	registry_get_stats(reg, &after);
	assert_int_equal(after.requests, before.requests);

	/* another registry (Basic auth): downloaded into cas, uploaded there */
	assert_int_equal(registry_set_credentials(reg, fx->basic.host, USER, PASS, &err), 0);
	ref_of(&other_host, "%s/kiln/copied:v1", fx->basic.host);
	if (registry_copy_blob(reg, &src, &other_host, &a.layer, cas, &res, &err) < 0)
		fail_msg("copy across registries: %s", err.msg);
	assert_int_equal(res, REGISTRY_PUSH_UPLOADED);
	assert_same_blob(cas, &a.layer.digest);
	assert_int_equal(registry_blob_exists(reg, &other_host, &a.layer.digest, &size, &err), 1);
	assert_int_equal(size, a.layer.size);

	/* the source lacks the blob: the mount is refused, the download fails
	 * with an error naming the blob and both repositories */
	ref_of(&nothing, "%s/kiln/copy-empty:v1", fx->plain.host);
	missing = a.layer;
	digest_buf("not pushed anywhere", 19, &missing.digest);
	assert_int_equal(registry_copy_blob(reg, &nothing, &dst, &missing, cas, &res, &err), -ENOENT);
	assert_err_contains(err, "copy blob sha256:");
	assert_err_contains(err, "kiln/copy-empty:v1");
	assert_err_contains(err, "kiln/copy-dst:v1");
	assert_int_equal(registry_blob_exists(reg, &dst, &missing.digest, NULL, &err), 0);

	cas_free(cas);
	img_release(&a);
	registry_free(reg);
}

/* ---- token auth ---- */

static void
token_auth(void **state)
{
	struct registry *anon = client(NULL), *reg = client(NULL);
	struct registry_ref ref, other;
	struct registry_image ri;
	struct registry_stats st;
	struct kiln_err err = { 0 };
	enum registry_push_result res;
	struct img a;
	struct cas *cas = fresh_cas();
	uint64_t before;

	(void) state;
	img_make("linux/amd64", 40000, 61, &a);
	ref_of(&ref, "%s/kiln/tok:latest", fx->token.host);
	ref_of(&other, "%s/kiln/tok2:latest", fx->token.host);

	/* anonymous: a pull token only, so a push is refused */
	assert_int_equal(registry_push_blob(anon, &ref, fx->src, &a.layer.digest, NULL, NULL, &err),
			 -KILN_EAUTH);
	assert_err_contains(err, "401");
	assert_err_contains(err, pathf("no credentials for '%s'", fx->token.host));

	assert_int_equal(registry_set_credentials(reg, fx->token.host, USER, PASS, &err), 0);
	img_push(reg, &ref, &a, NULL, &res);
	assert_int_equal(res, REGISTRY_PUSH_UPLOADED);
	registry_get_stats(reg, &st);
	/* one token for pull,push on kiln/tok serves all of the push */
	assert_int_equal(st.token_requests, 1);
	assert_true(__atomic_load_n(&fx->tokensrv.with_auth, __ATOMIC_ACQUIRE) >= 1);

	/* a mount needs pull on the source too: a token for both scopes */
	if (registry_push_blob(reg, &other, fx->src, &a.layer.digest,
			       &(struct registry_push_opts){ .mount_from = "kiln/tok" }, &res, &err) < 0)
		fail_msg("mount: %s", err.msg);
	assert_int_equal(res, REGISTRY_PUSH_MOUNTED);

	/* anonymous pull works with an anonymous token, cached per scope */
	if (registry_resolve(anon, &ref, &(struct platform){ "linux", "amd64", "" }, &ri, &err) < 0)
		fail_msg("anonymous resolve: %s", err.msg);
	registry_image_release(&ri);
	registry_get_stats(anon, &st);
	before = st.token_requests;
	assert_true(before >= 1);
	if (registry_fetch_blobs(anon, &ref, &a.layer, 1, cas, &err) < 0)
		fail_msg("anonymous fetch: %s", err.msg);
	assert_same_blob(cas, &a.layer.digest);
	if (registry_resolve(anon, &ref, &(struct platform){ "linux", "amd64", "" }, &ri, &err) < 0)
		fail_msg("anonymous resolve: %s", err.msg);
	registry_image_release(&ri);
	registry_get_stats(anon, &st);
	assert_int_equal(st.token_requests, before);

	/* wrong password: the token server's refusal is in the message */
	assert_int_equal(registry_set_credentials(anon, fx->token.host, USER, "nope", &err), 0);
	assert_int_equal(registry_push_blob(anon, &other, fx->src, &a.layer.digest, NULL, NULL, &err),
			 -KILN_EAUTH);
	assert_err_contains(err, "incorrect username or password");
	assert_null(strstr(err.msg, "nope"));

	cas_free(cas);
	img_release(&a);
	registry_free(anon);
	registry_free(reg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ref_parse_cases),
		cmocka_unit_test(challenge_cases),
		cmocka_unit_test(platform_matching),
		cmocka_unit_test(docker_config_files),
		cmocka_unit_test(push_and_pull),
		cmocka_unit_test(index_platforms),
		cmocka_unit_test(errors_name_things),
		cmocka_unit_test(concurrent_same_blob),
		cmocka_unit_test(corrupted_blob),
		cmocka_unit_test(resume_broken_download),
		cmocka_unit_test(basic_auth),
		cmocka_unit_test(copy_blob),
		cmocka_unit_test(token_auth),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
