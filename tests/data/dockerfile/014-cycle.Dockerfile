FROM scratch AS a
COPY --from=b /x /x

FROM scratch AS b
COPY --from=a /y /y
