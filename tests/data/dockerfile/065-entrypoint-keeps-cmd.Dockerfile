# kiln-golden: --target kept
# A CMD set in the same stage survives ENTRYPOINT; ENTRYPOINT [] unsets it.
FROM base AS kept
CMD ["--port", "80"]
ENTRYPOINT /usr/bin/app "quoted arg"

FROM kept AS cleared
ENTRYPOINT []
