# --chown and --chmod (expanded like the other words) set owner and mode;
# history shows them, --from and --link it does not.
FROM base AS src
RUN echo x > /x

FROM base
ARG UID=1000
COPY --chown=${UID}:2000 --chmod=0640 a.txt docs /srv/
COPY --link --from=src --chown=$UID --chmod=755 /x /usr/local/bin/x
