/* Private to worker/job.c (op execution, snapshots), job-run.c (RUN
 * through kiln-run, with its mounts) and job-copy.c (COPY, ADD, WORKDIR,
 * COPY --from, cache mounts seeded from an op). */
#ifndef KILN_JOB_INTERNAL_H
#define KILN_JOB_INTERNAL_H

#include <stddef.h>

#include "job.h"

struct kiln_err;

#define TAIL_SIZE 2048                   /* output kept for the error message */

/* job.c */
char *stack_lowerdirs(const char *state, char *const *stack, size_t n, struct kiln_err *err);
char *lowerdirs(struct job *j, struct kiln_err *err);
const struct job_secret *secret_find(const struct job *j, const char *id);

/* job-run.c */
int spawn_run(struct job *j, size_t step, const struct op *op, const char *base, job_emit_fn emit,
	  void *ctx, struct kiln_err *err);

/* job-copy.c */
int apply_copy(struct job *j, const struct op *op, const char *upper, struct kiln_err *err);
int apply_mkdir(struct job *j, const struct op *op, const char *upper, struct kiln_err *err);
int apply_copy_from(struct job *j, const struct op *op, const struct job_snap *src, const char *upper,
		struct kiln_err *err);
int cache_seed(struct job *j, const struct op_mount *m, const struct job_snap *from, const char *dir,
	   struct kiln_err *err);

#endif
