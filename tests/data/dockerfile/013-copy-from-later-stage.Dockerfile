# A stage can only read stages defined before it.
FROM scratch AS first
COPY --from=second /b.txt /

FROM scratch AS second
COPY b.txt /

FROM scratch
COPY --from=first /b.txt /
