/* Build progress as buildx renders it. "plain": every vertex as "#N NAME",
 * its log lines as "#N SECONDS LINE", then "#N DONE 0.4s" (or ERROR, or
 * CACHED). "tty": one "=> NAME  0.4s" line per finished vertex and a step's
 * log only when it fails (no cursor movement yet). "quiet": nothing but
 * errors. "rawjson": one JSON object per event and line, in the shape of
 * BuildKit's client.SolveStatus (vertexes, statuses, logs), as
 * `buildx --progress rawjson` writes them. "auto" picks tty when the output
 * is a terminal, else plain.
 *
 * rawjson has no digest of the op behind a vertex: "digest" is a stable
 * per-stream id in digest form (sha256 of the vertex number and name), not
 * a cache key, and "inputs" is never set. */
#ifndef KILN_CLI_PROGRESS_H
#define KILN_CLI_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct progress;

/* NULL for an unknown mode (or no memory). out is borrowed. */
struct progress *progress_new(const char *mode, FILE *out);
void progress_free(struct progress *p);
/* true in rawjson mode: out carries JSON lines only, so the caller must
 * not print text of its own there. */
bool progress_is_json(const struct progress *p);
/* Start a vertex; returns its number (#N). */
int progress_start(struct progress *p, const char *name);
/* The node that runs vertex v (emulated: under QEMU). plain prints
 * "#N node NAME [(emulated)]"; rawjson a completed status with the id
 * "node NAME" and the same name. Said once per vertex and node. */
void progress_node(struct progress *p, int v, const char *node, bool emulated);
/* Output bytes of vertex v (split into lines; partial lines are kept). */
void progress_log(struct progress *p, int v, const void *data, size_t len);
/* A status line of vertex v ("transferring context: 3 files 1.2kB done"). */
void progress_status(struct progress *p, int v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Finish vertex v; msg is the error (NULL on success). */
void progress_done(struct progress *p, int v, const char *msg);
/* Finish vertex v as answered from the cache ("#N CACHED"). */
void progress_cached(struct progress *p, int v);
/* Human size ("1.2kB", "3.4MB") into out. */
char *progress_size(unsigned long long bytes, char out[32]);

#endif
