# kiln-golden: --target ok
# Stages the target does not need are not resolved: a missing base image
# there is no error (a bad instruction would still be).
FROM scratch AS ok
COPY a.txt /

FROM not-available-anywhere AS broken
RUN false
