# Nothing but FROM scratch: the result is the empty image itself.
FROM scratch
LABEL empty=yes
