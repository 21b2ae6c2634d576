/* The solver's pure parts: cache keys of ops and the results (records)
 * the cache index keeps for them.
 *
 * A key is the sha256 of the op's definition (without its progress name,
 * its position in the graph, the registry name an image came from, or the
 * mtimes of the files it copies) together with the keys of the ops it
 * reads (input, COPY --from, RUN --mount from=) and a salt for what shapes
 * the bytes of its layer (platform, compression, level). A COPY's entries
 * carry the digest of every file it copies, so the key covers exactly the
 * content the op reads: a change in docs/ leaves a COPY of src/ alone.
 * Secret values never reach an op, so they never reach a key.
 *
 * A record is what an op's result is: the layers of its filesystem (bottom
 * first: those of the image at the head of its input chain, then one per
 * op along the chain that made one) and, per op along the chain, whether
 * it made a layer (the image config's history needs that). */
#ifndef KILN_SOLVER_H
#define KILN_SOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "op.h"

struct kiln_err;

struct solver_layer {
	struct op_layer l;
	char media_type[128];
};

struct solver_rec {
	char *ref;                    /* registry image of the n_base bottom layers; NULL: none */
	size_t n_base;
	struct solver_layer *layers;
	size_t n_layers;
	bool *made;                   /* per op after the image, along the input chain */
	size_t n_made;
};

#define SOLVER_REC_MAX_LAYERS 4096

/* Key of ops[i]; keys[] holds the keys of the ops before it. salt: e.g.
 * "linux/amd64 gzip -1". */
int solver_key(const struct op *ops, size_t i, const struct digest *keys, const char *salt,
	       struct digest *ret);

/* The record of an OP_IMAGE: its layers (media types from mts, or gzip
 * when NULL), ref kept. */
int solver_rec_image(const struct op *op, const char (*mts)[128], struct solver_rec *ret);
/* The record of an op applied on in: in plus layer (when made). */
int solver_rec_extend(const struct solver_rec *in, const struct solver_layer *layer,
		      struct solver_rec *ret);
int solver_rec_copy(const struct solver_rec *src, struct solver_rec *ret);
void solver_rec_release(struct solver_rec *r);

/* msgpack bytes of a record, and back (bounded: at most
 * SOLVER_REC_MAX_LAYERS layers; a malformed one is -EBADMSG). */
int solver_rec_encode(const struct solver_rec *r, char **ret, size_t *ret_len);
int solver_rec_decode(const void *data, size_t len, struct solver_rec *ret, struct kiln_err *err);

/* The layer op made, i.e. the last one of rec, when rec's last made flag
 * is set; NULL otherwise. */
const struct solver_layer *solver_rec_own_layer(const struct solver_rec *r);

#endif
