# kiln-golden: --target builder
# --target builds only what the target needs: the stages after it go.
FROM base AS builder
RUN echo compile

FROM builder AS test
RUN echo test

FROM scratch
COPY --from=builder /bin/sh /sh
