#!/bin/sh
echo "${GREETING:-hello}! I was built by kiln on $(uname -m)."
