# A relative destination is taken from WORKDIR; "." means into it.
FROM scratch
WORKDIR /app
COPY a.txt .
COPY b.txt renamed.txt
COPY link sub/dir/
COPY . /everything
