/* `kiln build --ssh`: the SSH agents a build's RUN --mount=type=ssh steps
 * may use (buildx's syntax), and the client's end of the relay. A step's
 * agent requests arrive one message at a time (ssh.req); each is written
 * to a connection of this client's own to the agent socket (one per
 * connection the step opened) and the agent's answer goes back (ssh.resp).
 * Socket paths never leave this module: the builder only learns the ids.
 *
 * As BuildKit's forwarding, the agent is read-only for the build: it may
 * list identities and ask for signatures; adding, removing, locking and
 * extensions are answered SSH_AGENT_FAILURE without reaching the agent. */
#ifndef KILN_CLI_SSH_H
#define KILN_CLI_SSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_err;
struct ssh_agents;                      /* opaque */

#define SSH_AGENTS_MAX 64               /* --ssh ids */
#define SSH_AGENT_CONNS_MAX 64          /* agent connections open at once */

/* Parse every --ssh spec, "ID[=SOCKET]" ("default" for the default id; no
 * SOCKET: $SSH_AUTH_SOCK), as buildx does: an empty SOCKET and unset
 * SSH_AUTH_SOCK, a path that does not exist, two sockets for one id, or an
 * id given twice are errors. A path that is not a socket is a key file,
 * which is refused (not supported yet). Nothing is connected yet. On
 * success the caller owns *ret (ssh_agents_free); n = 0 gives an empty set. */
int ssh_agents_new(const char *const *specs, size_t n, struct ssh_agents **ret,
		   struct kiln_err *err);
/* Close every agent connection and free a; NULL is a no-op. */
void ssh_agents_free(struct ssh_agents *a);
/* The ids, in the order given (borrowed from a). */
size_t ssh_agents_count(const struct ssh_agents *a);
const char *ssh_agents_id(const struct ssh_agents *a, size_t i);

/* One request (an agent message's body, without its length) that step's
 * connection conn made on the socket of ssh id. The agent's answer (a
 * body too) goes into a malloc'd *ret_resp the caller owns. A request the
 * build may not make is answered SSH_AGENT_FAILURE here. On failure (no
 * such id, the agent cannot be reached or answers badly, too many
 * connections) the connection is closed and err says why, naming the
 * socket: for this user's eyes, not for the wire. */
int ssh_agents_request(struct ssh_agents *a, uint64_t step, uint64_t conn, const char *id,
		       const void *req, size_t len, void **ret_resp, size_t *ret_len,
		       struct kiln_err *err);
/* The step closed connection conn (or, with all set, the step ended):
 * close the agent connections that served it. */
void ssh_agents_close(struct ssh_agents *a, uint64_t step, uint64_t conn, bool all);

#endif
