FROM scratch AS loop
COPY a.txt /
COPY --from=loop /a.txt /again.txt
