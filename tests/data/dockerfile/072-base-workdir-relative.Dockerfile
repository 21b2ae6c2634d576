# WORKDIR from the base image is where a relative WORKDIR starts.
FROM onbuild-base
WORKDIR data
COPY b.txt ./
