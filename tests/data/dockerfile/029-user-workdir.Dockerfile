# USER and WORKDIR carry to later RUNs; a relative WORKDIR builds on the
# last one; WORKDIR makes the directory (except for "/").
FROM base
ARG HOME_DIR=/home/app
WORKDIR $HOME_DIR
WORKDIR src/../work
USER 1000:1000
RUN pwd && id
WORKDIR /
USER root
RUN ls
