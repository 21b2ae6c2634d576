FROM base
RUN --mount=type=ssh,source=/x true
