/* The remote driver: the builder is a coordinator someone else runs, at
 * the builder's endpoint. Its workers register with it directly, so there
 * is nothing to spawn or stop here; "start" only proves the coordinator
 * answers us, which over tcp:// also proves our key is on its allow-list
 * (a refused CURVE handshake is indistinguishable from silence). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "util.h"
#include "../cli/config.h"
#include "../cli/conn.h"
#include "remote.h"

static int
copy_opt(char *dst, size_t size, const char *val, const char *what, const struct builder *b,
	 struct kiln_err *err)
{
	int n;

	if (!val)
		return kiln_err_set(err, EINVAL,
				    "remote builder \"%s\" has no driver-opt %s (kiln builder create --name %s --node %s --driver-opt %s=FILE)",
				    b->name, what, b->name, b->n_nodes ? b->nodes[0].name : b->name, what);
	n = snprintf(dst, size, "%s", val);
	if (n < 0 || (size_t) n >= size)
		return kiln_err_set(err, ENAMETOOLONG, "driver-opt %s: path too long", what);
	return 0;
}

static int
remote_endpoint(const struct builder *b, struct conn_opts *ret, struct kiln_err *err)
{
	int n, r;

	memset(ret, 0, sizeof(*ret));
	if (!b->endpoint)
		return kiln_err_set(err, EINVAL, "remote builder \"%s\" has no endpoint", b->name);
	n = snprintf(ret->endpoint, sizeof(ret->endpoint), "%s", b->endpoint);
	if (n < 0 || (size_t) n >= sizeof(ret->endpoint))
		return kiln_err_set(err, ENAMETOOLONG, "endpoint too long");
	/* ipc:// (a coordinator on this machine, e.g. in tests) relies on
	 * file permissions; only tcp:// carries keys. */
	if (!kiln_startswith(b->endpoint, "tcp://"))
		return 0;
	r = copy_opt(ret->server_cert, sizeof(ret->server_cert), builder_opt(b, NULL, "cacert"),
		     "cacert", b, err);
	if (r < 0)
		return r;
	return copy_opt(ret->client_cert, sizeof(ret->client_cert), builder_opt(b, NULL, "key"),
			"key", b, err);
}

static int
remote_status(const struct builder *b, struct kiln_err *err)
{
	struct conn *c = NULL;
	struct conn_opts o;
	int r;

	r = remote_endpoint(b, &o, err);
	if (r < 0)
		return r;
	r = conn_open(&o, &c, err);
	if (r < 0)
		return r;
	r = conn_ping(c, DRIVER_CHECK_TIMEOUT_MS, NULL, 0, err);
	conn_free(c);
	return r < 0 ? r : DRIVER_RUNNING;
}

static int
remote_start(struct builder *b, struct kiln_err *err)
{
	int r;

	r = remote_status(b, err);
	if (r < 0)
		return kiln_err_wrap(err, "builder \"%s\"", b->name);
	return 0;
}

static int
remote_nothing(struct builder *b, struct kiln_err *err)
{
	(void) b;
	(void) err;
	return 0;
}

const struct driver_ops remote_driver_ops = {
	.name = "remote",
	.start = remote_start,
	.stop = remote_nothing,
	.endpoint = remote_endpoint,
	.status = remote_status,
	.remove = remote_nothing,
};
