# Wildcards: several matches go into the destination directory; a
# directory that matches has its contents copied; no match copies nothing.
FROM scratch
COPY *.txt /texts/
COPY sr? /code
COPY *.none /nothing/
