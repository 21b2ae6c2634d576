# A trigger of the base image may read a stage (COPY --from=builder): that
# stage becomes part of the build even though nothing else names it.
FROM base AS builder
RUN mkdir /out && echo built > /out/result

FROM onbuild-from
RUN ls /from-builder
