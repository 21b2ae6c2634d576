# EXPOSE: tcp by default, /udp and /sctp, ranges expand to each port; the
# words are sorted as written, then expanded.
FROM base
ARG HTTP_PORT=8080
EXPOSE 80 443/TCP
EXPOSE $HTTP_PORT 53/udp 9000-9002 7000-7001/sctp
