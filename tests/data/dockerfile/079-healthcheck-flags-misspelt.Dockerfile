FROM scratch
HEALTHCHECK --intervall=5s CMD true
