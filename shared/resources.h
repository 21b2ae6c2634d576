/* The resource limits a node is given, in docker's syntax, which is what
 * buildx's docker-container driver takes: a CPU list for cpuset-cpus and a
 * byte size for memory. Parsing only; the worker applies them (worker/
 * confine.c) and the CLI checks them at `builder create`. */
#ifndef KILN_RESOURCES_H
#define KILN_RESOURCES_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_err;

/* docker refuses smaller memory limits: a process tree below this cannot
 * even start. */
#define RESOURCES_MEMORY_MIN (6ull << 20)
/* A CPU list formatted by resources_fmt_cpus fits in this many bytes when
 * the machine has at most a few hundred CPUs; longer output is cut and
 * flagged by the return value. */
#define RESOURCES_CPUS_STR_SIZE 256

/* Parse a CPU list such as "0", "0-3", "0,2" or "0-1,4" (docker's
 * ParseUintList: comma-separated numbers and inclusive ranges) into *ret.
 * Empty lists, empty entries, backwards ranges and CPUs at or past
 * CPU_SETSIZE are refused with -EINVAL and a message naming the list. */
int resources_parse_cpus(const char *list, cpu_set_t *ret, struct kiln_err *err);

/* set as the kernel writes Cpus_allowed_list: ascending, ranges joined
 * ("0-1,4"); "" for an empty set. Returns buf, or NULL when it did not fit
 * (buf then holds a truncated, NUL-terminated prefix). */
char *resources_fmt_cpus(const cpu_set_t *set, char *buf, size_t size);

/* Parse a memory size as docker's RAMInBytes does: a number (fraction
 * allowed), an optional space, then an optional binary unit b, k, m, g, t
 * or p, itself optionally followed by "b" or "ib" (any case): "1024",
 * "512m", "2g", "1.5GiB". Sizes below RESOURCES_MEMORY_MIN or beyond
 * INT64_MAX are refused. */
int resources_parse_memory(const char *size, uint64_t *ret, struct kiln_err *err);

#endif
