# A global ARG is not visible inside a stage until declared there.
ARG GREETING=hello
FROM scratch
LABEL greeting=${GREETING:-not-declared}
ARG GREETING
LABEL greeting2=${GREETING:-not-declared}
