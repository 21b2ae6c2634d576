FROM scratch
ADD config.tar.gz /etc/
