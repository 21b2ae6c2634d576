/* Internals shared by registry.c, registry-http.c (and nothing else):
 * the client struct, endpoints, and struct xfer, one HTTP exchange. */
#ifndef KILN_REGISTRY_INTERNAL_H
#define KILN_REGISTRY_INTERNAL_H

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "registry.h"

struct cas;
struct cas_writer;
struct oci_descriptor;

#define REG_POOL_MAX 8                  /* idle curl multi handles kept */

/* jansson.h provides json_decrefp() for the cleanup attribute */
#define _cleanup_json_ _cleanup_(json_decrefp)

struct origin {
	char scheme[8];
	char host[REGISTRY_DOMAIN_SIZE];
	long port;
};

struct cred {
	struct cred *next;
	char host[REGISTRY_DOMAIN_SIZE];        /* canonical_host() */
	char *username;
	char *password;
};

/* A challenge learned from a 401, per registry host. */
struct host_auth {
	struct host_auth *next;
	char host[REGISTRY_DOMAIN_SIZE];
	struct registry_challenge ch;
};

struct token {
	struct token *next;
	char host[REGISTRY_DOMAIN_SIZE];
	char *scope;
	char *value;
	int64_t expires_ms;             /* CLOCK_MONOTONIC */
};

struct inflight {
	struct inflight *next;
	const struct cas *cas;
	struct digest digest;
};

struct registry {
	pthread_mutex_t lock;           /* everything below that changes */
	pthread_cond_t cond;            /* signalled when an inflight entry goes */
	struct cred *creds;
	char *config_path;              /* for messages; NULL when none was read */
	char **insecure;
	size_t n_insecure;
	char *user_agent;
	unsigned max_parallel, retries, retry_delay_ms;
	long connect_timeout_ms, stall_timeout_s;
	size_t chunk_size, chunk_threshold;
	struct host_auth *auths;
	struct token *tokens;
	struct inflight *inflight;
	CURLM *pool[REG_POOL_MAX];
	size_t n_pool;
	struct registry_stats stats;    /* updated with atomics */
};

/* What every request about one reference needs. */
struct endpoint {
	const struct registry_ref *ref;
	char host[REGISTRY_DOMAIN_SIZE];        /* canonical: credentials, challenges, tokens */
	char base[REGISTRY_DOMAIN_SIZE + 16];   /* "https://registry-1.docker.io" */
	char refstr[REGISTRY_REF_STR_SIZE];
	struct origin origin;
	char repo_url[REGISTRY_DOMAIN_SIZE + REGISTRY_PATH_SIZE + 24];  /* base + "/v2/" + path */
};

enum sink {
	SINK_DISCARD,                   /* HEAD, uploads: only headers matter */
	SINK_MEM,                       /* x->mem, at most x->mem_max bytes */
	SINK_CAS,                       /* a cas_writer for x->desc */
};

enum xfer_state { X_IDLE, X_RUNNING, X_WAIT, X_DONE, X_FAILED };
enum xfer_next { XFER_DONE, XFER_AGAIN, XFER_FAIL };

/* One HTTP exchange as the caller sees it: redirects, auth rounds and
 * retries are attempts of the same xfer. The caller sets the request
 * fields after reg_xfer_init and reads the response fields after
 * reg_run_one/reg_run_xfers; the rest belongs to registry-http.c. */
struct xfer {
	struct registry *reg;
	const struct endpoint *ep;
	const char *method;
	char *url;                      /* owned; the current attempt's */
	bool origin;                    /* url is on the registry: credentials may go along */
	bool idempotent;                /* may be retried after a broken transfer */
	bool no_redirect;
	bool allow_404;                 /* 404 is an answer, not an error */
	const char *accept;
	const char *content_type;
	const char *scope;              /* token scope(s), space separated */
	const char *auth_override;      /* a whole Authorization header (token requests) */
	char extra_header[96];

	/* request body */
	bool has_body;
	const unsigned char *body;      /* borrowed; or body_fd */
	int body_fd;
	uint64_t body_off, body_len, body_pos;

	/* response body */
	enum sink sink;
	char *mem;
	size_t mem_len, mem_cap, mem_max;
	struct cas *cas;
	const struct oci_descriptor *desc;
	struct cas_writer *w;
	bool claimed;                   /* holds reg->inflight for desc in cas */
	char *ebody;                    /* non-2xx body, for the error message */
	size_t ebody_len;

	/* response headers of the current attempt */
	long status;
	char reason[64];
	char ctype[128];
	char dcd[DIGEST_STR_SIZE + 8];
	char content_range[96];
	char range[64];
	char *location;
	char *www_auth;
	int64_t clen;

	enum xfer_state state;
	unsigned attempts, redirects, auth_rounds;
	bool sent_auth;
	bool fatal;                     /* x->err is set; do not retry */
	int64_t not_before_ms;
	CURL *easy;
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	struct kiln_err err;
};

static inline void
copy_lower(char *out, size_t size, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n && i + 1 < size; i++)
		out[i] = (char) tolower((unsigned char) s[i]);
	out[i] = '\0';
}

static inline void
stat_add(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

/* ---- registry-http.c ---- */

/* The URL without its query (upload URLs carry state tokens that are noise
 * to a reader) into buf; returns buf. */
const char *reg_url_for_msg(const char *url, char *buf, size_t size);
/* loc (absolute or relative) resolved against base; caller frees; NULL on
 * failure. */
char *reg_url_join(const char *base, const char *loc);
/* url with "name=value" appended to its query, value percent-encoded;
 * caller frees; NULL on ENOMEM. */
char *reg_url_add_query(const char *url, const char *name, const char *value);
/* Scheme, host and port of an http(s) URL; -EINVAL for anything else. */
int reg_url_origin(const char *url, struct origin *ret);
/* Plain http for loopback and for the hosts listed as insecure. */
bool reg_plain_http(const struct registry *reg, const char *host);

/* Start an xfer for method on url (taken, may be NULL: the caller checks
 * x->url). Callers then set the fields they need. */
void reg_xfer_init(struct xfer *x, struct registry *reg, const struct endpoint *ep,
		   const char *method, char *url);
/* Free everything x holds, abort its cas_writer, give up its in-flight
 * claim. x may be run again only after reg_xfer_init. */
void reg_xfer_release(struct xfer *x);
/* Run xs[0..n) with at most parallel transfers at once. Stops at the first
 * failure, abandoning the others, and copies its error to err. */
int reg_run_xfers(struct registry *reg, struct xfer **xs, size_t n, unsigned parallel,
		  struct kiln_err *err);
int reg_run_one(struct registry *reg, struct xfer *x, struct kiln_err *err);

/* ---- registry.c ---- */

/* Leave the in-flight table and wake the callers waiting for the blob. */
void reg_inflight_remove(struct registry *reg, const struct cas *cas, const struct digest *d);

#endif
