# A named build context with a stage's name replaces that stage (as
# --build-context does): its instructions do not run.
FROM base AS tools
RUN echo this stage is replaced

FROM scratch
COPY --from=tools /usr/bin/tool /tool
