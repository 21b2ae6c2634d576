# kiln-golden: --build-arg MODE=release --build-arg NOT_DECLARED=x
# A --build-arg beats the default; undeclared build args are unused.
FROM base
ARG MODE=debug
ARG LEVEL=3
ENV BUILD_MODE=$MODE BUILD_LEVEL=$LEVEL
RUN echo building
