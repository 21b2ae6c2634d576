# kiln-golden: --target buidler
FROM scratch AS builder
COPY a.txt /a
