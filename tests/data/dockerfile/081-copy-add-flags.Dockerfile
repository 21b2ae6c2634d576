# COPY/ADD flags resolved by the planner (symbolic --chmod, --parents,
# --exclude) and passed to the worker (--chown names, ADD archives and URLs,
# COPY --from excludes and symbolic modes).
FROM base AS build
RUN make

FROM base
COPY --chown=app:staff --chmod=u=rwX,go=rX src /srv/src
COPY --parents ./app/./go.mod src/sub/x.c /p/
COPY --exclude=*.c --exclude=sub src /ex
ADD config.tar.gz /etc/app/
ADD --chown=1:2 --checksum=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef https://example.com/dl/tool /usr/local/bin/
COPY --from=build --chown=app --chmod=a+rX --exclude=*.o /out /out
