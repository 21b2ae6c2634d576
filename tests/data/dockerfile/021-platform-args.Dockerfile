# The automatic platform args: in FROM without declaring them, inside a
# stage only once declared.
FROM base
ARG TARGETPLATFORM
ARG TARGETOS TARGETARCH
ARG BUILDPLATFORM
LABEL target=$TARGETPLATFORM os=$TARGETOS arch=$TARGETARCH build=$BUILDPLATFORM variant=${TARGETVARIANT:-none}
RUN echo building on $BUILDPLATFORM for $TARGETPLATFORM
