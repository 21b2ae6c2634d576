/* sha256 digests ("sha256:<64 lowercase hex>") through OpenSSL's EVP API,
 * one-shot or streaming. Only sha256 is supported; anything else is refused. */
#ifndef KILN_DIGEST_H
#define KILN_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_RAW_LEN 32
#define DIGEST_STR_LEN 71          /* "sha256:" + 64 hex */
#define DIGEST_STR_SIZE (DIGEST_STR_LEN + 1)

struct digest {
	unsigned char raw[DIGEST_RAW_LEN];
};

struct digest_ctx;                 /* opaque streaming state */

/* Parse "sha256:<64 lowercase hex>". -EINVAL on anything else. */
int digest_parse(const char *s, struct digest *ret_d);
/* Same for a non-NUL-terminated string of len bytes. */
int digest_parse_n(const char *s, size_t len, struct digest *ret_d);
/* Format into out (DIGEST_STR_SIZE bytes); returns out. */
char *digest_fmt(const struct digest *d, char out[DIGEST_STR_SIZE]);
/* The 64 hex characters only (65 bytes with NUL); returns out. */
char *digest_hex(const struct digest *d, char out[65]);
bool digest_equal(const struct digest *a, const struct digest *b);

void digest_buf(const void *data, size_t len, struct digest *ret_d);
/* Hash fd from its current offset to EOF; *ret_size (may be NULL) gets the
 * byte count. */
int digest_fd(int fd, struct digest *ret_d, uint64_t *ret_size);
int digest_file(const char *path, struct digest *ret_d, uint64_t *ret_size);

/* Streaming: new (NULL on ENOMEM), update any number of times, final once,
 * free always (NULL is a no-op). */
struct digest_ctx *digest_ctx_new(void);
void digest_ctx_update(struct digest_ctx *c, const void *data, size_t len);
void digest_ctx_final(struct digest_ctx *c, struct digest *ret_d);
void digest_ctx_free(struct digest_ctx *c);

#endif
