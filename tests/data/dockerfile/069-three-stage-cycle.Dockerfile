FROM scratch AS one
COPY --from=three /c /c

FROM scratch AS two
COPY --from=one /a /a

FROM scratch AS three
COPY --from=two /b /b
