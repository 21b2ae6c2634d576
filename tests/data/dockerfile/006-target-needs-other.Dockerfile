# kiln-golden: --target release
# The target reads another stage; an unrelated stage is pruned.
FROM base AS deps
RUN echo fetch deps > /deps.txt

FROM base AS unrelated
RUN echo never built

FROM tools AS release
COPY --from=deps /deps.txt /deps.txt

FROM scratch AS last
COPY a.txt /
