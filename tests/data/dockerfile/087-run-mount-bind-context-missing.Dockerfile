# A bind mount of a path the build context does not have fails with
# BuildKit's words and the line of the RUN.
FROM base
RUN echo ok
RUN --mount=source=nope,target=/n true
