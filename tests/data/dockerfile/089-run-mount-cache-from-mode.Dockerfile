# BuildKit mounts a new empty /cache made on top of from when a cache has
# from= and mode, uid or gid but no source; kiln says it does not do that.
FROM base AS deps
FROM base
RUN --mount=type=cache,target=/c,from=deps,uid=1000 true
