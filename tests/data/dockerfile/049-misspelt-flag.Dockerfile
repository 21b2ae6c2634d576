FROM scratch
COPY --chwon=1000 a.txt /
