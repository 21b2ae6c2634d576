# Two stages that do not read each other: no path between them in the
# graph, so they can run at once; the final stage reads both.
FROM base AS frontend
WORKDIR /web
COPY docs ./
RUN echo build web > /web/index.html

FROM base AS backend
WORKDIR /srv
COPY app ./
RUN echo build app > /srv/app.bin

FROM scratch
COPY --from=frontend /web /www
COPY --from=backend /srv/app.bin /bin/app
