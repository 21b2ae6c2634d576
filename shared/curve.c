/* CurveZMQ key management and authentication on top of czmq's zcert
 * (certificate files) and zauth (the ZAP handler, checking client keys
 * against a directory of public certs through zcertstore).
 *
 * Invariants: a secret key only ever lands in a file ending in "_secret"
 * created with mode 0600; allowed/ only ever receives public halves, each
 * key at most once (zcertstore asserts on a duplicate key, taking the
 * whole process down). Files are written under a hidden temporary name and
 * renamed into place, because czmq's directory scan skips dot files: zauth
 * never sees half a certificate, and a crash leaves either the old file or
 * the new one. This module does not decide who should be allowed; the
 * callers (CLI, coordinator) do. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "curve.h"
#include "err.h"
#include "util.h"

#define CURVE_KEY_BYTES 32

static bool
curve_path_ok(const char *path)
{
	return strlen(path) <= CURVE_PATH_MAX;
}

/* snprintf a path, refusing those czmq would truncate. */
static int
curve_path(char *buf, size_t size, struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
curve_path(char *buf, size_t size, struct kiln_err *err, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t) n >= size || !curve_path_ok(buf))
		return kiln_err_set(err, ENAMETOOLONG, "path '%.64s...' longer than %d bytes",
				    buf, CURVE_PATH_MAX);
	return 0;
}

static bool
curve_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static bool
curve_has_secret(zcert_t *cert)
{
	const byte *k = zcert_secret_key(cert);

	for (int i = 0; i < CURVE_KEY_BYTES; i++)
		if (k[i])
			return true;
	return false;
}

static void
curve_cert_freep(zcert_t **cert)
{
	zcert_destroy(cert);
}

#define _cleanup_cert_ _cleanup_(curve_cert_freep)

/* Load the cert at path; with need_secret, insist on path_secret. */
static int
curve_load(const char *path, bool need_secret, zcert_t **ret_cert, struct kiln_err *err)
{
	zcert_t *cert;

	if (!curve_path_ok(path))
		return kiln_err_set(err, ENAMETOOLONG, "certificate path '%s' longer than %d bytes",
				    path, CURVE_PATH_MAX);
	cert = zcert_load(path);
	if (!cert)
		return kiln_err_set(err, ENOENT, "cannot load certificate '%s'%s", path,
				    need_secret ? " (or its _secret file)" : "");
	if (need_secret && !curve_has_secret(cert)) {
		zcert_destroy(&cert);
		return kiln_err_set(err, ENOENT, "no secret key in '%s_secret'", path);
	}
	*ret_cert = cert;
	return 0;
}

/* Directory part of path into buf ("." when there is none). */
static void
curve_dirname(const char *path, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(buf, size, ".");
	else if (slash == path)
		snprintf(buf, size, "/");
	else
		snprintf(buf, size, "%.*s", (int) (slash - path), path);
}

/* Save cert at path (public half) and, with secret, path_secret, through
 * hidden temporaries in the same directory. The secret goes into place
 * first, so a crash in between leaves a secret without its public file,
 * which curve_ensure_cert repairs. */
static int
curve_save(zcert_t *cert, const char *path, bool secret, struct kiln_err *err)
{
	char dir[CURVE_PATH_MAX + 1], tmp[CURVE_PATH_MAX + 16], tmp_secret[CURVE_PATH_MAX + 32];
	char final_secret[CURVE_PATH_MAX + 16];
	const char *base = strrchr(path, '/');
	int r;

	base = base ? base + 1 : path;
	curve_dirname(path, dir, sizeof(dir));
	r = curve_path(tmp, sizeof(tmp), err, "%s/.%s.%d", dir, base, (int) getpid());
	if (r < 0)
		return r;
	snprintf(tmp_secret, sizeof(tmp_secret), "%s_secret", tmp);
	snprintf(final_secret, sizeof(final_secret), "%s_secret", path);

	if (secret) {
		if (zcert_save(cert, tmp) < 0) {
			r = kiln_err_errno(err, errno ? errno : EIO, "write certificate '%s'", tmp);
			goto out_unlink;
		}
		/* czmq narrows the umask while writing the secret; make
		 * sure regardless of what umask it restores */
		if (chmod(tmp_secret, 0600) < 0 || rename(tmp_secret, final_secret) < 0) {
			r = kiln_err_errno(err, errno, "install '%s'", final_secret);
			goto out_unlink;
		}
	} else if (zcert_save_public(cert, tmp) < 0) {
		r = kiln_err_errno(err, errno ? errno : EIO, "write certificate '%s'", tmp);
		goto out_unlink;
	}
	if (chmod(tmp, 0644) < 0 || rename(tmp, path) < 0) {
		r = kiln_err_errno(err, errno, "install '%s'", path);
		goto out_unlink;
	}
	return 0;

out_unlink:
	(void) unlink(tmp);
	(void) unlink(tmp_secret);
	return r;
}

static int
curve_mkdir(const char *path, struct kiln_err *err)
{
	int r;

	r = kiln_mkdir_p(path, 0700);
	if (r < 0)
		return kiln_err_errno(err, -r, "create directory '%s'", path);
	return 0;
}

int
curve_ensure_cert(const char *path, struct kiln_err *err)
{
	_cleanup_cert_ zcert_t *cert = NULL;
	char secret[CURVE_PATH_MAX + 16], dir[CURVE_PATH_MAX + 1];
	int r;

	r = curve_path(secret, sizeof(secret), err, "%s_secret", path);
	if (r < 0)
		return r;
	if (curve_exists(secret)) {
		r = curve_load(path, true, &cert, err);
		if (r < 0)
			return r;
		if (curve_exists(path))
			return 0;
		/* interrupted curve_save: restore the public half */
		return curve_save(cert, path, false, err);
	}
	if (curve_exists(path))
		return kiln_err_set(err, EEXIST, "'%s' exists without '%s', refusing to replace it",
				    path, secret);

	curve_dirname(path, dir, sizeof(dir));
	r = curve_mkdir(dir, err);
	if (r < 0)
		return r;
	cert = zcert_new();
	if (!cert)
		return kiln_err_set(err, ENOMEM, "generate CURVE keypair");
	return curve_save(cert, path, true, err);
}

int
curve_init_dir(const char *dir, struct kiln_err *err)
{
	char path[CURVE_PATH_MAX + 1];
	int r;

	r = curve_mkdir(dir, err);
	if (r < 0)
		return r;
	r = curve_path(path, sizeof(path), err, "%s/allowed", dir);
	if (r < 0)
		return r;
	r = curve_mkdir(path, err);
	if (r < 0)
		return r;
	r = curve_path(path, sizeof(path), err, "%s/server.cert", dir);
	if (r < 0)
		return r;
	return curve_ensure_cert(path, err);
}

static bool
curve_name_ok(const char *name)
{
	if (!name[0] || name[0] == '.')
		return false;
	return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
	       strlen(name);
}

int
curve_new_key(const char *dir, const char *name, struct kiln_err *err)
{
	_cleanup_cert_ zcert_t *cert = NULL;
	char path[CURVE_PATH_MAX + 1], secret[CURVE_PATH_MAX + 16];
	int r;

	if (!curve_name_ok(name))
		return kiln_err_set(err, EINVAL, "invalid key name '%s'", name);
	r = curve_path(path, sizeof(path), err, "%s/%s.cert", dir, name);
	if (r < 0)
		return r;
	snprintf(secret, sizeof(secret), "%s_secret", path);
	if (curve_exists(path) || curve_exists(secret))
		return kiln_err_set(err, EEXIST, "key '%s' already exists in '%s'", name, dir);

	cert = zcert_new();
	if (!cert)
		return kiln_err_set(err, ENOMEM, "generate CURVE keypair");
	zcert_set_meta(cert, "name", "%s", name);
	r = curve_save(cert, path, true, err);
	if (r < 0)
		return r;
	return curve_allow(dir, path, err);
}

/* Look through allowed/ as zcertstore will (zdir_flatten: recursive, dot
 * files skipped, *_secret skipped) for a cert carrying public_txt. Sets
 * *ret_same when it is the file named target. */
static int
curve_find_key(const char *allowed, const char *public_txt, const char *target, bool *ret_same,
	       struct kiln_err *err)
{
	zdir_t *zd;
	zfile_t **files;
	int r = 0;

	*ret_same = false;
	zd = zdir_new(allowed, NULL);
	if (!zd)
		return kiln_err_set(err, ENOENT, "'%s' is not a directory (run curve_init_dir)",
				    allowed);
	files = zdir_flatten(zd);
	for (size_t i = 0; files && files[i]; i++) {
		const char *fn = zfile_filename(files[i], NULL);
		size_t n = strlen(fn);
		zcert_t *c;

		if (n >= 7 && strcmp(fn + n - 7, "_secret") == 0)
			continue;
		if (!curve_path_ok(fn))
			continue;
		c = zcert_load(fn);
		if (!c)
			continue;
		if (strcmp(zcert_public_txt(c), public_txt) == 0) {
			if (strcmp(fn, target) == 0) {
				*ret_same = true;
			} else {
				r = kiln_err_set(err, EEXIST, "key already allowed as '%s'", fn);
			}
		}
		zcert_destroy(&c);
		if (r < 0 || *ret_same)
			break;
	}
	zdir_flatten_free(&files);
	zdir_destroy(&zd);
	return r;
}

int
curve_allow(const char *dir, const char *public_cert_path, struct kiln_err *err)
{
	_cleanup_cert_ zcert_t *cert = NULL;
	char allowed[CURVE_PATH_MAX + 1], target[CURVE_PATH_MAX + 1], name[CURVE_PATH_MAX + 1];
	const char *base;
	size_t n;
	bool same;
	int r;

	r = curve_load(public_cert_path, false, &cert, err);
	if (r < 0)
		return r;
	base = strrchr(public_cert_path, '/');
	base = base ? base + 1 : public_cert_path;
	/* zcertstore ignores *_secret files: name the copy after the public file */
	snprintf(name, sizeof(name), "%s", base);
	n = strlen(name);
	if (n > 7 && strcmp(name + n - 7, "_secret") == 0)
		name[n - 7] = '\0';
	if (!curve_name_ok(name))
		return kiln_err_set(err, EINVAL, "invalid certificate name '%s'", name);

	r = curve_path(allowed, sizeof(allowed), err, "%s/allowed", dir);
	if (r < 0)
		return r;
	r = curve_path(target, sizeof(target), err, "%s/%s", allowed, name);
	if (r < 0)
		return r;
	r = curve_find_key(allowed, zcert_public_txt(cert), target, &same, err);
	if (r < 0)
		return r;
	if (same)
		return 0;
	return curve_save(cert, target, false, err);
}

int
curve_server_apply(zsock_t *sock, const char *dir, struct kiln_err *err)
{
	_cleanup_cert_ zcert_t *cert = NULL;
	char path[CURVE_PATH_MAX + 1];
	int r;

	if (!zsys_has_curve())
		return kiln_err_set(err, ENOTSUP, "libzmq was built without CURVE support");
	r = curve_path(path, sizeof(path), err, "%s/server.cert", dir);
	if (r < 0)
		return r;
	r = curve_load(path, true, &cert, err);
	if (r < 0)
		return r;
	zcert_apply(cert, sock);
	zsock_set_curve_server(sock, 1);
	return 0;
}

zactor_t *
curve_auth_start(const char *dir, struct kiln_err *err)
{
	char allowed[CURVE_PATH_MAX + 1];
	zactor_t *auth;
	struct stat st;

	if (curve_path(allowed, sizeof(allowed), err, "%s/allowed", dir) < 0)
		return NULL;
	if (stat(allowed, &st) < 0 || !S_ISDIR(st.st_mode)) {
		kiln_err_set(err, ENOENT, "'%s' is not a directory (run curve_init_dir)", allowed);
		return NULL;
	}
	auth = zactor_new(zauth, NULL);
	if (!auth) {
		kiln_err_set(err, ENOMEM, "start authenticator");
		return NULL;
	}
	if (zstr_sendx(auth, "CURVE", allowed, NULL) < 0 || zsock_wait(auth) < 0) {
		zactor_destroy(&auth);
		kiln_err_set(err, EIO, "configure authenticator for '%s'", allowed);
		return NULL;
	}
	return auth;
}

int
curve_client_apply(zsock_t *sock, const char *server_cert_path, const char *client_cert_path,
		   struct kiln_err *err)
{
	_cleanup_cert_ zcert_t *server = NULL;
	_cleanup_cert_ zcert_t *client = NULL;
	int r;

	if (!zsys_has_curve())
		return kiln_err_set(err, ENOTSUP, "libzmq was built without CURVE support");
	r = curve_load(server_cert_path, false, &server, err);
	if (r < 0)
		return r;
	r = curve_load(client_cert_path, true, &client, err);
	if (r < 0)
		return r;
	zcert_apply(client, sock);
	zsock_set_curve_serverkey(sock, zcert_public_txt(server));
	return 0;
}
