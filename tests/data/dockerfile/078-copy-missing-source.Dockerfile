FROM scratch
COPY a.txt missing.txt /dst/
