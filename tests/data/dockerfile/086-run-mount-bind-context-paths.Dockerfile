# RUN --mount=type=bind without from=: only the path mounted travels (one
# copy op per path, shared by the RUNs that mount it), a file mounts one
# file, a symlink is followed inside the context, targets are relative to
# WORKDIR, and the context files land in "needed".
FROM base
WORKDIR /w
RUN --mount=type=bind,source=src,target=/s \
    --mount=source=./b.txt,target=b.txt,rw \
    --mount=source=link,target=/l \
    cat /s/main.c /w/b.txt /l
RUN --mount=source=/src/,target=/again ls /again
