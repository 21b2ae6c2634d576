/* Build sessions on the coordinator. A build belongs to the client that
 * started it and runs on one node (this slice schedules whole builds; the
 * step scheduler comes later). The coordinator relays context blobs from
 * the client to the node and outputs from the node to the client without
 * storing them: relayed payloads are forwarded frame for frame.
 *
 * Client -> coordinator: build.start, build.secrets, blob.put, xfer.data,
 *                        xfer.credit, build.synced, ssh.resp
 * Coordinator -> client: build.secrets.need, build.need, progress,
 *                        output.begin, xfer.*, build.done, build.error,
 *                        ssh.req, ssh.close
 * Coordinator -> node:   job.have, build.secrets, blob.put, xfer.*, job.run,
 *                        job.rewrite (only when the output needs layers
 *                        recompressed or their times clamped), job.export,
 *                        ssh.resp
 *
 * Secrets: build.secrets.need {ids} names the secret ids the planned RUNs
 * mount; the client answers build.secrets {secrets: [{id, value}]} with
 * the values it has, which is forwarded to the node frame for frame and
 * never decoded, logged or kept here.
 *
 * SSH agents (RUN --mount=type=ssh): build.start carries the client's
 * --ssh ids, which job.run passes on; while the steps run, a step's agent
 * requests (ssh.req {step, conn, ssh, data}) go node -> client and the
 * answers (ssh.resp {step, conn, data | fail}) client -> node, each frame
 * relayed as is; ssh.close {step[, conn]} tells the client a connection
 * or the step's mounts ended.
 * Node -> coordinator:   job.missing, xfer.credit, step.start, step.log,
 *                        step.done, job.done, job.error, job.rewritten,
 *                        output.begin, xfer.data, job.exported, ssh.req,
 *                        ssh.close */
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
