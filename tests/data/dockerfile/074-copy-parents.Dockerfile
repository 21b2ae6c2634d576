FROM scratch
COPY --parents src/./main.c /dst/
