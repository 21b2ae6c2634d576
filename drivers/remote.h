/* The remote driver: a coordinator that runs elsewhere, reached at the
 * builder's tcp:// endpoint with CurveZMQ (driver-opts cacert and key).
 * Nothing is started or stopped from here. */
#ifndef KILN_DRIVERS_REMOTE_H
#define KILN_DRIVERS_REMOTE_H

#include "driver.h"

extern const struct driver_ops remote_driver_ops;

#endif
