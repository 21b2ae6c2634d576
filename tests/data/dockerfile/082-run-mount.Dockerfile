FROM base AS src
RUN echo hi > /hello
FROM base AS unused
RUN echo unused
FROM base
WORKDIR /w
ARG CACHE=/var/cache/apk
RUN --mount=type=cache,target=$CACHE,sharing=locked,mode=0700,uid=1,gid=2 \
    --mount=type=cache,id=shared-go,target=go,ro \
    --mount=type=tmpfs,dst=/t,size=1.5m \
    --mount=from=src,src=/etc,target=/mnt/etc,rw \
    --mount=type=bind,from=0,destination=/s,readonly=false \
    ls /mnt
