/* Build sessions on the coordinator. A build belongs to the client that
 * started it; its steps run as jobs (the ops of one stage each, id
 * BUILD.N) on whichever nodes the scheduler picks (build-solve.c). The
 * coordinator relays context blobs from the client to a job's node and
 * outputs from the export node to the client without storing them;
 * nodes fetch what other nodes hold from those peers (blob.fetch).
 *
 * Client -> coordinator: build.start, build.secrets {job}, build.secrets.done
 *                        {job}, blob.put, xfer.data, xfer.credit,
 *                        build.synced, ssh.resp, ping
 * Coordinator -> client: build.secrets.need {job, ids}, build.need (one
 *                        round per node that lacks context files, each
 *                        ended by build.synced), progress, output.begin,
 *                        xfer.*, build.done, build.error, ssh.req, ssh.close
 * Coordinator -> node:   job.have, blob.fetch, build.secrets, blob.put,
 *                        xfer.*, job.run, job.rewrite (only when the output
 *                        needs layers recompressed or their times clamped),
 *                        job.export, job.cancel, ssh.resp
 * Node -> coordinator:   job.missing, blob.fetch.done, xfer.credit,
 *                        step.start, step.log, step.done, job.done,
 *                        job.error, job.rewritten, output.begin, xfer.data,
 *                        job.exported, ssh.req, ssh.close
 *
 * Secrets: build.secrets.need names the secret ids a job's RUNs mount, just
 * before the job runs; the client answers build.secrets with the values it
 * has, forwarded to that job's node frame for frame and never decoded,
 * logged or kept here, then build.secrets.done.
 *
 * SSH agents (RUN --mount=type=ssh): build.start carries the client's
 * --ssh ids, which job.run passes on; a step's agent requests (ssh.req)
 * go node -> client and the answers (ssh.resp) back, their step numbered
 * (job serial << 16 | step) so that an answer finds its job again. */
#ifndef KILN_BUILD_H
#define KILN_BUILD_H

#include <czmq.h>

struct builds;
struct nodes;
struct node;
struct peer;
struct proto_msg;

struct builds *builds_new(struct nodes *ns, const char *state);
void builds_free(struct builds *bs);
/* payload is the raw frame of m, for forwarding (borrowed). */
void builds_on_client(struct builds *bs, const struct peer *from, const struct proto_msg *m,
		      zframe_t *payload);
void builds_on_node(struct builds *bs, struct node *n, const struct proto_msg *m, zframe_t *payload);
/* A node went away: its jobs run again elsewhere. */
void builds_node_gone(struct builds *bs, struct node *n);
/* Any message from a client (pings included) says it is still there. */
void builds_client_seen(struct builds *bs, const struct peer *from);
/* Periodically: cancel builds whose client went silent; hand out work. */
void builds_tick(struct builds *bs, int64_t now_ms);

#endif
