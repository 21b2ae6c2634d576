FROM base
RUN --mount=type=ssh echo agent
