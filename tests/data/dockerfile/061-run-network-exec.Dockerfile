# RUN --network=none|host|default; the exec form runs as written.
FROM base
RUN --network=none ["/bin/true"]
RUN --network=host wget http://example.com/
