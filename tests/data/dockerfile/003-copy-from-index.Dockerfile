# COPY --from takes a stage index as well as a name.
FROM scratch
COPY docs /docs

FROM base
COPY --from=0 /docs/readme.md /usr/share/doc/
