/* Internals shared by imagetools.c (dispatch, create, the helpers below)
 * and imagetools-inspect.c (inspect, summary, templates), and nothing else. */
#ifndef KILN_CLI_IMAGETOOLS_INTERNAL_H
#define KILN_CLI_IMAGETOOLS_INTERNAL_H

#include <stdbool.h>

#include <jansson.h>

#include "cleanup.h"
#include "registry.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

struct kiln_err;

/* "ERROR: msg" on stderr; returns the exit status 1. */
int it_print_error(const struct kiln_err *err);

/* o[key] as a string, borrowed; NULL when absent or not a string. */
const char *it_jstr(const json_t *o, const char *key);
/* digest_parse of o["digest"]; -EINVAL when absent. */
int it_json_digest(const json_t *o, struct digest *ret);
bool it_is_index_mt(const char *mt);
bool it_is_manifest_mt(const char *mt);

/* r pinned to d (its tag kept, as reference.WithDigest does). */
struct registry_ref it_ref_at(const struct registry_ref *r, const struct digest *d);
/* registry_get_manifest, with 404 said as containerd does: "REF: not
 * found". Caller releases *ret. */
int it_get_doc(struct registry *reg, const struct registry_ref *r, struct registry_doc *ret,
	       struct kiln_err *err);
/* The config of the image manifest in doc (from r's repository) as
 * ocispec.Image marshals it. Caller owns *ret. */
int it_load_config(struct registry *reg, const struct registry_ref *r,
		   const struct registry_doc *doc, json_t **ret, struct kiln_err *err);

/* JSON shaped as Go marshals image-spec types (key order, omitempty, maps
 * with sorted keys). New references; NULL on ENOMEM. */
json_t *it_go_map(const json_t *in);
json_t *it_go_descriptors(const json_t *in);
json_t *it_go_image(const json_t *in);
/* json.MarshalIndent(v, "", "  "); caller frees. */
char *it_go_dump(const json_t *v);

/* `kiln imagetools inspect`; argv[0] is "inspect". Returns the exit status. */
int it_cmd_inspect(int argc, char **argv);

#endif
