/* Drivers: how a builder's coordinator and nodes are reached and started.
 * One vtable per driver, as crun's cgroup managers: the CLI looks the
 * driver up by the name stored with the builder and never asks which one
 * it holds. */
#ifndef KILN_DRIVERS_DRIVER_H
#define KILN_DRIVERS_DRIVER_H

#include <stdbool.h>

struct builder;
struct conn;
struct conn_opts;
struct kiln_err;

/* How long starting a builder may take before we give up, and how often
 * we look in the meantime. */
#define DRIVER_START_TIMEOUT_MS 15000
#define DRIVER_POLL_MS          50
/* How long a quick check (ls, inspect, remote start) waits for an answer. */
#define DRIVER_CHECK_TIMEOUT_MS 3000

/* What status() returns when it succeeds. */
enum driver_status {
	DRIVER_INACTIVE = 0,    /* nothing running (local builder not started) */
	DRIVER_RUNNING = 1,     /* coordinator up (local) or answering (remote) */
};

struct driver_ops {
	const char *name;
	/* Make b usable and wait until it is: local spawns the coordinator
	 * and every worker that is not running yet, then waits until the
	 * coordinator answers and lists every node of b as ready; remote
	 * checks that the coordinator answers. Idempotent. */
	int (*start)(struct builder *b, struct kiln_err *err);
	/* Stop what start started (local: by the PIDs in its pidfiles only);
	 * nothing for remote. */
	int (*stop)(struct builder *b, struct kiln_err *err);
	/* Where to connect, certificates included. Starts nothing, touches
	 * nothing on disk. */
	int (*endpoint)(const struct builder *b, struct conn_opts *ret, struct kiln_err *err);
	/* A cheap look that starts nothing: enum driver_status, or a negative
	 * errno with err set (remote: the coordinator does not answer). */
	int (*status)(const struct builder *b, struct kiln_err *err);
	/* Stop and forget everything the driver keeps for b (local: its
	 * processes and state directory). The builder's file is config's. */
	int (*remove)(struct builder *b, struct kiln_err *err);
};

/* The driver called name ("local", "remote"), or NULL. */
const struct driver_ops *driver_lookup(const char *name);

/* Connect to b's coordinator, first starting it (ops->start) when start is
 * true. The caller owns *ret (conn_free). */
int driver_connect(struct builder *b, bool start, struct conn **ret, struct kiln_err *err);

#endif
