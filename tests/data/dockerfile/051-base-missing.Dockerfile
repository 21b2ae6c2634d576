FROM scratch AS builder
COPY a.txt /

FROM alpine:3.20
COPY --from=builder /a.txt /
