# COPY --from a named build context (an image) reads that image.
FROM base
COPY --from=tools /usr/bin/tool /usr/local/bin/
COPY --from=tools /etc/tool.conf /usr/share/a* /etc/
