# ENTRYPOINT drops a CMD inherited from the base image; a CMD set in the
# same stage stays. Shell forms go through /bin/sh -c.
FROM base AS inherited
ENTRYPOINT ["/usr/bin/app", "--serve"]

FROM base AS kept
CMD ["--port", "80"]
ENTRYPOINT /usr/bin/app "quoted arg"

FROM inherited
CMD echo "hello $USER"
