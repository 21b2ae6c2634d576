# ONBUILD records a trigger in the image config; a stage built FROM that
# stage runs it; a stage built from that one does not.
FROM base AS lib
ONBUILD RUN echo building on top of lib
ONBUILD COPY a.txt /from-lib/
RUN echo lib itself

FROM lib AS app
RUN echo app

FROM app
RUN echo final
