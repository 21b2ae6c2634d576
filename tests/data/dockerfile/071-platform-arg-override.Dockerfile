# kiln-golden: --build-arg TARGETARCH=riscv64
# A --build-arg may override an automatic platform arg.
ARG TARGETARCH
FROM scratch
ARG TARGETARCH
ARG TARGETOS
LABEL arch=$TARGETARCH os=$TARGETOS
