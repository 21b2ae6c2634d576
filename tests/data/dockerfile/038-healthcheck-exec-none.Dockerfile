# HEALTHCHECK CMD in exec form; NONE in a later stage turns it off.
FROM base AS checked
HEALTHCHECK CMD ["/bin/check", "--quick"]

FROM checked
HEALTHCHECK NONE
