# STOPSIGNAL takes a name (with or without SIG) or a number.
FROM base AS named
STOPSIGNAL SIGQUIT

FROM base AS numeric
STOPSIGNAL 9

FROM base
ARG SIG=RTMIN+3
STOPSIGNAL $SIG
