# VOLUME in JSON and plain forms; words are expanded.
FROM base
ARG DATA=/var/lib/data
VOLUME ["/data", "$DATA"]
VOLUME /var/log /var/cache
