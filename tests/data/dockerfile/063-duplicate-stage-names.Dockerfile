# BuildKit only warns about a duplicate stage name: FROM and COPY --from
# use the latest definition before them, --target and later ones the last.
FROM scratch AS files
COPY a.txt /

FROM files AS files
COPY b.txt /

FROM scratch
COPY --from=files / /all/
