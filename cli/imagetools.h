/* `kiln imagetools`: buildx's commands for images in a registry,
 * `inspect [--raw] [--format TPL] NAME` and `create [-t REF]... [--dry-run]
 * [--append] [-f FILE]... [SOURCE...]`. They run in the client through
 * shared/registry; no builder is involved (--builder is accepted and
 * ignored, as it only picks buildx's registry settings). Credentials come
 * from Docker's config.json ($DOCKER_CONFIG or ~/.docker). */
#ifndef KILN_CLI_IMAGETOOLS_H
#define KILN_CLI_IMAGETOOLS_H

/* Run `kiln imagetools ...`; argv[0] is "imagetools". Prints its own
 * output and errors; returns the process exit status. */
int imagetools_main(int argc, char **argv);

#endif
