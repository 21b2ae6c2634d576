# The simplest image: files from the context onto scratch.
FROM scratch
COPY a.txt /x/
COPY src /src
CMD ["/x/a.txt"]
