FROM scratch
ADD https://example.com/file.txt /file.txt
