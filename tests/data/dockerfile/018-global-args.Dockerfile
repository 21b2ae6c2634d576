# kiln-golden: --build-arg VERSION=2.1
# ARGs before the first FROM are for FROM lines; a stage sees one only if
# it declares it again (and then gets the global value).
ARG IMAGE=base
ARG VERSION=1.0
ARG UNSET
FROM ${IMAGE} AS app
ARG VERSION
ARG IMAGE
ARG UNSET
LABEL version=$VERSION image=$IMAGE unset=${UNSET:-none}
RUN echo $VERSION
