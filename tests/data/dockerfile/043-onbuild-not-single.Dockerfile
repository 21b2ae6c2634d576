FROM onbuild-multi
RUN true
