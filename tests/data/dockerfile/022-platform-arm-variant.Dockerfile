# kiln-golden: --platform linux/arm/v7 --build-platform linux/arm64
# TARGETVARIANT and the image's variant come from the target platform.
FROM base
ARG TARGETARCH TARGETVARIANT BUILDARCH
LABEL arch=$TARGETARCH variant=$TARGETVARIANT build=$BUILDARCH
