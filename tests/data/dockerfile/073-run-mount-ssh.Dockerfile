FROM base
ARG KEY=gh
RUN --mount=type=ssh ssh-add -l
RUN --mount=type=ssh,id=$KEY,required --mount=type=ssh,id=other,target=/tmp/agent.sock,mode=0660,uid=1,gid=2 ls
WORKDIR /w
RUN --mount=type=ssh,target=rel.sock,required=false --mount=type=ssh,id=two true
ENV SSH_AUTH_SOCK=/mine
RUN --mount=type=ssh true
