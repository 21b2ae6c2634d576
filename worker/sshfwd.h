/* The node's end of RUN --mount=type=ssh: for one step, a unix socket per
 * ssh mount (in the step's scratch dir; kiln-run binds it on the mount's
 * target) and a thread that relays what the step says on them to the
 * client's agent, one SSH agent message at a time.
 *
 * A request (4-byte big-endian length + body, at most PROTO_SSH_AGENT_MAX)
 * read in full from a connection goes to the worker's main thread as
 * ssh.req {build, step, conn, ssh, data} on a DEALER whose routing id is
 * sshfwd_route(build, step); the main thread sends it to the coordinator,
 * which relays it to the client. The answer comes back the same way as
 * ssh.resp {build, step, conn, data | fail}, is written to the connection,
 * and the next request is read. A connection the step closes, a request
 * over the bound, or fail closes it and sends ssh.close {build, step,
 * conn}; when the relay stops, ssh.close {build, step} tells the client
 * to close what it opened for the step. Agent bytes are never logged. */
#ifndef KILN_SSHFWD_H
#define KILN_SSHFWD_H

#include <stddef.h>
#include <stdint.h>

struct kiln_err;
struct sshfwd;                          /* opaque */

#define SSHFWD_SOCKS_MAX 16             /* ssh mounts in one step */
#define SSHFWD_CONNS_MAX 32             /* connections open at once, per step */
#define SSHFWD_ROUTE_SIZE 96

/* The routing id of the relay of (build, step) on the main thread's
 * ROUTER (NUL-terminated; the id is its strlen bytes). */
void sshfwd_route(const char *build, uint64_t step, char ret[SSHFWD_ROUTE_SIZE]);

/* A relay for one step that reaches the main thread at endpoint (an
 * inproc ROUTER, borrowed for the call). The caller owns *ret. */
int sshfwd_new(const char *endpoint, const char *build, uint64_t step, struct sshfwd **ret,
	       struct kiln_err *err);
/* Listen for ssh id on a new socket at path (its directory must exist;
 * path may be longer than a sockaddr_un holds), with mode, uid and gid.
 * Only before sshfwd_start. */
int sshfwd_listen(struct sshfwd *f, const char *id, const char *path, uint32_t mode, uint32_t uid,
		  uint32_t gid, struct kiln_err *err);
/* Relay on a thread of its own until sshfwd_free. */
int sshfwd_start(struct sshfwd *f, struct kiln_err *err);
/* Stop the thread, close every connection and listening socket, tell the
 * client (when it was asked anything) and free f; NULL is a no-op. The
 * socket files are left to the caller's scratch dir. */
void sshfwd_free(struct sshfwd *f);

#endif
