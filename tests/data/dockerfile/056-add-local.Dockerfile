# ADD of a local file copies it like COPY (history says ADD).
FROM scratch
ADD --chown=0:0 b.txt /b
ADD bin /usr/local/bin
