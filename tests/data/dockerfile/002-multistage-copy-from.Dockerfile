# A builder stage and a runtime stage that copies its result.
FROM base AS builder
WORKDIR /build
COPY src/ ./src/
RUN make -C src && mkdir -p /out && cp src/app /out/app

FROM scratch
COPY --from=builder /out/app /usr/bin/app
ENTRYPOINT ["/usr/bin/app"]
