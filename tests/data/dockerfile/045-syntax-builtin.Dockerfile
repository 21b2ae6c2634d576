# syntax=docker/dockerfile:1.7-labs
# The docker/dockerfile frontend (1, 1.x, 1.x.y, -labs) is built in.
FROM scratch
COPY a.txt /
