/* The local driver: a coordinator and one worker per node, spawned on
 * this machine and reached over ipc:// sockets under the state directory
 * $KILN_CONFIG/state/NAME. */
#ifndef KILN_DRIVERS_LOCAL_H
#define KILN_DRIVERS_LOCAL_H

#include "driver.h"

extern const struct driver_ops local_driver_ops;

#endif
