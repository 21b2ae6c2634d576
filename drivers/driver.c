/* The driver registry and the one entry point the commands use to reach a
 * builder: look the driver up by name, start the builder if asked, connect.
 * Drivers differ only in their vtables (local.c, remote.c); nothing here
 * knows which one it holds. */
#include <errno.h>
#include <string.h>

#include "err.h"
#include "../cli/config.h"
#include "../cli/conn.h"
#include "driver.h"
#include "local.h"
#include "remote.h"

static const struct driver_ops *const drivers[] = {
	&local_driver_ops,
	&remote_driver_ops,
};

const struct driver_ops *
driver_lookup(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (strcmp(drivers[i]->name, name) == 0)
			return drivers[i];
	return NULL;
}

int
driver_connect(struct builder *b, bool start, struct conn **ret, struct kiln_err *err)
{
	const struct driver_ops *ops = driver_lookup(b->driver);
	struct conn_opts o;
	int r;

	if (!ops)
		return kiln_err_set(err, EINVAL, "builder \"%s\": unknown driver \"%s\"", b->name,
				    b->driver);
	if (start) {
		r = ops->start(b, err);
		if (r < 0)
			return r;
	}
	r = ops->endpoint(b, &o, err);
	if (r < 0)
		return kiln_err_wrap(err, "builder \"%s\"", b->name);
	return conn_open(&o, ret, err);
}
