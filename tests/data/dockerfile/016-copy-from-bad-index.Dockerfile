FROM scratch
COPY a.txt /

FROM scratch
COPY --from=2 /a.txt /
