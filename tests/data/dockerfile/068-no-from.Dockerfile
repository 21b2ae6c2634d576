# only arguments here
ARG A=1
ARG B=2
