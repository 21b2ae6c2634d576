FROM base
RUN --mount=target=/src ls /src
