# MAINTAINER sets the author (deprecated, still honoured).
FROM scratch
MAINTAINER Jane Doe <jane@example.com>
COPY a.txt /
