# RUN --mount=type=cache with from= and source=: the cache starts from a
# stage, a named context or (without from) itself; mode, uid and gid are
# BuildKit's only for a cache mounted whole. The scratch op is shared by
# a FROM scratch stage and the context a bind mount reads.
FROM base AS deps
RUN mkdir -p /root/.cache/pip && echo seed > /root/.cache/pip/f
FROM scratch AS empty
COPY a.txt /
FROM base
RUN --mount=type=cache,target=/root/.cache/pip,from=deps,source=/root/.cache/pip \
    --mount=type=cache,id=tools,target=/t,from=tools,source=usr,uid=5 \
    --mount=type=cache,target=/sub,source=x,mode=0700 \
    --mount=from=empty,target=/e \
    --mount=source=docs,target=/d \
    --mount=type=cache,target=/plain,from=deps \
    ls
