# ENV replaces a variable in place and keeps the order; all words of one
# ENV are expanded before any takes effect.
FROM base
ENV LANG=en_US.UTF-8 FIRST=1
ENV FIRST=one SECOND=$FIRST
ENV THIRD="${SECOND}-3" PATH=/app/bin:$PATH
RUN env
