FROM scratch
EXPOSE 80/quic
