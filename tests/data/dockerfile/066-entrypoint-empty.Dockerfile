# kiln-golden: --target cleared
# ENTRYPOINT [] removes the entrypoint and (not set here) the CMD.
FROM tools AS cleared
ENTRYPOINT []
