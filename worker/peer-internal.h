/* What the blob server (peer.c) and the fetcher (peer-fetch.c) share.
 * Not for other modules. */
#ifndef KILN_PEER_INTERNAL_H
#define KILN_PEER_INTERNAL_H

#include <stdbool.h>
#include <czmq.h>

struct kiln_err;

#define PEER_TICK_MS 1000               /* longest poll of either thread */

bool peer_is_tcp(const char *ep);
bool peer_is_ipc(const char *ep);        /* "ipc://" and a path */
/* Read one command from an actor's pipe: true for the $TERM that
 * zactor_destroy sends (or a dead pipe); else the caller owns *ret_cmd
 * and *ret_msg (the rest of the message). */
bool peer_pipe_term(zsock_t *pipe, char **ret_cmd, zmsg_t **ret_msg);
/* Load a key pair (PATH and PATH_secret), insisting on the secret half.
 * The caller owns *ret (zcert_destroy). */
int peer_load_keypair(const char *path, zcert_t **ret, struct kiln_err *err);

#endif
