# kiln-golden: --target BUILDER
# Stage names and --target are case-insensitive.
FROM scratch AS Builder
COPY a.txt /a

FROM scratch
COPY b.txt /b
