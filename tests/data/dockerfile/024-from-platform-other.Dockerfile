# kiln-golden: --platform linux/amd64 --build-platform linux/amd64
FROM --platform=linux/s390x base AS odd
RUN echo no
