# A named context answers the familiar forms of its name.
FROM docker.io/library/base:latest AS a
RUN echo a

FROM base:latest
COPY --from=a /etc/hostname /a-hostname
