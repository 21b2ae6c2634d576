FROM base
RUN --mount=type=cache,target=/root/.cache echo cached
