FROM base
ARG TOK=tok
RUN --mount=type=secret,id=$TOK cat /run/secrets/tok
RUN --mount=type=secret,id=tok2,env=TOK2,required sh -c 'echo ${#TOK2}'
RUN --mount=type=secret,target=/etc/key,mode=0440,uid=1,gid=2,required=true cat /etc/key
WORKDIR /w
RUN --mount=type=secret,source=npmrc,dst=rel/npmrc --mount=type=secret,id=both,target=/run/b,env=B ls
