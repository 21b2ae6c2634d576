# kiln-golden: --build-arg TOKEN=s3cret
# A stage built FROM another keeps its ARGs: RUN sees them and its history
# lists them.
FROM base AS build
ARG TOKEN
ARG LEVEL=2
RUN echo build

FROM build
RUN echo still sees $LEVEL
