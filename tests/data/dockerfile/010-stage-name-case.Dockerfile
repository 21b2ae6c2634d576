# AS Names are lower-cased; COPY --from matches them in any case.
FROM scratch AS Assets
COPY docs /docs

FROM scratch
COPY --from=ASSETS /docs /docs
