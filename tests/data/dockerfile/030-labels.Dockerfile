# Labels are inherited from the base image and overridden by key.
FROM base
LABEL org.opencontainers.image.vendor="Example Corp" \
      org.opencontainers.image.title=demo
LABEL "with space"="a value" multi.word='single quoted $NOT_EXPANDED'
