# kiln-golden: --platform linux/arm64 --build-platform linux/amd64
# Cross-compiling: the build stage runs as the build platform, the result
# is for the target platform.
FROM --platform=$BUILDPLATFORM base AS build
ARG TARGETARCH
RUN echo cross-compiling for $TARGETARCH > /out.txt

FROM base
COPY --from=build /out.txt /
