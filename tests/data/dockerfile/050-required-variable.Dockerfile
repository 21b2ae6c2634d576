FROM base
ARG RELEASE
LABEL release="${RELEASE:?pass --build-arg RELEASE=x.y}"
