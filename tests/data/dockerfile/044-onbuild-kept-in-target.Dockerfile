# ONBUILD in the target stage stays in its config (heredoc bodies too), for
# images built on it later; it records no history.
FROM scratch
ONBUILD RUN echo one
ONBUILD COPY <<EOF /greeting
hello
EOF
COPY a.txt /
