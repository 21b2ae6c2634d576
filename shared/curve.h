/* CurveZMQ keys and client authentication, on czmq's zcert and zauth.
 *
 * A key directory DIR holds the server's keypair and the allow-list:
 *   DIR/server.cert          public half (give it to clients)
 *   DIR/server.cert_secret   both halves, mode 0600
 *   DIR/allowed/NAME.cert    public certs of clients that may connect
 * Certificates are czmq's text format (zcert_save). A keypair at PATH is
 * always the two files PATH and PATH_secret, and functions taking a
 * keypair take the base PATH, as zcert_load does. Paths are limited to 240
 * bytes because czmq builds "PATH_secret" in a 256-byte buffer.
 *
 * The allow-list is re-read by zauth whenever the number, total size or
 * newest mtime of its files changes (czmq's zcertstore checks on every
 * handshake), so adding or removing a cert takes effect for the next
 * connection without a restart. Replacing a cert by another of the same
 * size within the same second may go unnoticed until the next change.
 * zauth aborts the process if two certs in allowed/ carry the same public
 * key, so curve_allow and curve_new_key refuse to add a key that is
 * already listed; do not copy files into allowed/ by hand.
 *
 * All functions return 0 or a negative errno with err set, unless noted. */
#ifndef KILN_CURVE_H
#define KILN_CURVE_H

#include <czmq.h>

struct kiln_err;

#define CURVE_PATH_MAX 240

/* Create DIR (0700), DIR/server.cert(+_secret) if missing and DIR/allowed/.
 * Idempotent: an existing keypair is kept. */
int curve_init_dir(const char *dir, struct kiln_err *err);
/* Create the client keypair DIR/NAME.cert(+_secret) and allow it by
 * writing its public cert to DIR/allowed/NAME.cert. NAME is a plain file
 * name ([A-Za-z0-9._-], not starting with '.'). -EEXIST when DIR/NAME.cert
 * already exists. */
int curve_new_key(const char *dir, const char *name, struct kiln_err *err);
/* Create the keypair PATH(+_secret) if PATH_secret does not exist yet. */
int curve_ensure_cert(const char *path, struct kiln_err *err);
/* Allow a client: write the public half of the cert at public_cert_path to
 * DIR/allowed/<basename>. Only the public key is ever written there.
 * Re-allowing the same key under the same name is a no-op; -EEXIST when
 * another file in allowed/ already holds that key. */
int curve_allow(const char *dir, const char *public_cert_path, struct kiln_err *err);

/* Make sock a CURVE server with the keypair DIR/server.cert_secret. Call
 * before zsock_bind, and start the authenticator (curve_auth_start) before
 * any client can connect: without a ZAP handler libzmq admits every client
 * that knows the server key. */
int curve_server_apply(zsock_t *sock, const char *dir, struct kiln_err *err);
/* Start zauth checking CURVE clients against DIR/allowed/. Returns the
 * actor (caller owns; zactor_destroy stops authentication) or NULL with
 * err set. One per process: zauth binds the process-wide ZAP endpoint. */
zactor_t *curve_auth_start(const char *dir, struct kiln_err *err);
/* Make sock a CURVE client of the server whose public cert is at
 * server_cert_path, authenticating with the keypair client_cert_path
 * (+_secret). Call before zsock_connect. */
int curve_client_apply(zsock_t *sock, const char *server_cert_path, const char *client_cert_path,
		       struct kiln_err *err);

#endif
