ARG SRC=builder
FROM scratch AS builder
COPY a.txt /

FROM scratch
COPY --from=$SRC /a.txt /
