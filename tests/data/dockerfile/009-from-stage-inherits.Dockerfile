# A stage built FROM another starts with its config and history.
FROM base AS common
ENV APP_HOME=/opt/app
LABEL stage=common
RUN mkdir -p $APP_HOME

FROM common AS final
LABEL stage=final
COPY a.txt $APP_HOME/
CMD ["cat", "/opt/app/a.txt"]
