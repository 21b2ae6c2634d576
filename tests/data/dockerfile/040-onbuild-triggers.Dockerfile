# The base image's ONBUILD triggers run first, as if they were written
# right after FROM; the new image has no OnBuild of its own.
FROM onbuild-base
RUN echo after the triggers
