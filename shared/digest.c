/* sha256 content digests over OpenSSL's EVP interface. A struct digest is
 * always the raw 32 bytes; the text form is exactly "sha256:" followed by
 * 64 lowercase hex digits, and parsing accepts nothing else (no uppercase,
 * no other algorithm, no surrounding junk), because digests name files in
 * the blob store and two spellings of one digest would be two names.
 *
 * The hashing calls return void: with an algorithm fetched once at startup,
 * EVP can only fail here on allocation failure or misuse. A wrong digest
 * would silently corrupt the content-addressed store, so those failures
 * abort() instead of returning something plausible. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanup.h"
#include "digest.h"

#define DIGEST_PREFIX "sha256:"
#define DIGEST_PREFIX_LEN (sizeof(DIGEST_PREFIX) - 1)
#define DIGEST_READ_CHUNK (128 * 1024)

struct digest_ctx {
	EVP_MD_CTX *md;
};

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static const EVP_MD *sha256_md;

/* Fetch the implementation once: EVP_sha256() makes OpenSSL 3 look it up
 * again on every init, which costs more than hashing a small manifest. */
static void
sha256_fetch(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
	sha256_md = EVP_sha256();
#endif
}

static const EVP_MD *
sha256(void)
{
	(void) pthread_once(&sha256_once, sha256_fetch);
	if (!sha256_md)
		abort();
	return sha256_md;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
digest_parse_n(const char *s, size_t len, struct digest *ret_d)
{
	struct digest d;

	if (!s || len != DIGEST_STR_LEN || memcmp(s, DIGEST_PREFIX, DIGEST_PREFIX_LEN) != 0)
		return -EINVAL;
	s += DIGEST_PREFIX_LEN;
	for (size_t i = 0; i < DIGEST_RAW_LEN; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		d.raw[i] = (unsigned char) (hi << 4 | lo);
	}
	*ret_d = d;
	return 0;
}

int
digest_parse(const char *s, struct digest *ret_d)
{
	if (!s)
		return -EINVAL;
	/* strnlen: a huge string is rejected without being walked. */
	return digest_parse_n(s, strnlen(s, DIGEST_STR_LEN + 1), ret_d);
}

char *
digest_hex(const struct digest *d, char out[65])
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < DIGEST_RAW_LEN; i++) {
		out[2 * i] = hex[d->raw[i] >> 4];
		out[2 * i + 1] = hex[d->raw[i] & 0xf];
	}
	out[64] = '\0';
	return out;
}

char *
digest_fmt(const struct digest *d, char out[DIGEST_STR_SIZE])
{
	memcpy(out, DIGEST_PREFIX, DIGEST_PREFIX_LEN);
	digest_hex(d, out + DIGEST_PREFIX_LEN);
	return out;
}

bool
digest_equal(const struct digest *a, const struct digest *b)
{
	return memcmp(a->raw, b->raw, DIGEST_RAW_LEN) == 0;
}

void
digest_buf(const void *data, size_t len, struct digest *ret_d)
{
	unsigned int n = 0;

	if (!EVP_Digest(data, len, ret_d->raw, &n, sha256(), NULL) || n != DIGEST_RAW_LEN)
		abort();
}

struct digest_ctx *
digest_ctx_new(void)
{
	struct digest_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->md = EVP_MD_CTX_new();
	if (!c->md || !EVP_DigestInit_ex(c->md, sha256(), NULL)) {
		digest_ctx_free(c);
		return NULL;
	}
	return c;
}

void
digest_ctx_update(struct digest_ctx *c, const void *data, size_t len)
{
	if (len == 0)
		return;
	if (!EVP_DigestUpdate(c->md, data, len))
		abort();
}

void
digest_ctx_final(struct digest_ctx *c, struct digest *ret_d)
{
	unsigned int n = 0;

	if (!EVP_DigestFinal_ex(c->md, ret_d->raw, &n) || n != DIGEST_RAW_LEN)
		abort();
}

void
digest_ctx_free(struct digest_ctx *c)
{
	if (!c)
		return;
	EVP_MD_CTX_free(c->md);
	free(c);
}

int
digest_fd(int fd, struct digest *ret_d, uint64_t *ret_size)
{
	_cleanup_free_ unsigned char *buf = NULL;
	struct digest_ctx *c;
	uint64_t size = 0;
	int r = 0;

	buf = malloc(DIGEST_READ_CHUNK);
	c = digest_ctx_new();
	if (!buf || !c) {
		digest_ctx_free(c);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, buf, DIGEST_READ_CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		digest_ctx_update(c, buf, (size_t) n);
		size += (uint64_t) n;
	}
	if (r == 0) {
		digest_ctx_final(c, ret_d);
		if (ret_size)
			*ret_size = size;
	}
	digest_ctx_free(c);
	return r;
}

int
digest_file(const char *path, struct digest *ret_d, uint64_t *ret_size)
{
	_cleanup_close_ int fd = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	return digest_fd(fd, ret_d, ret_size);
}
