FROM scratch AS build
COPY a.txt /

FROM scratch
COPY --from=biuld /a.txt /
