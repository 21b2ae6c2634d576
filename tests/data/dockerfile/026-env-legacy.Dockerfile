# The old "ENV KEY value with spaces" form.
FROM scratch
ENV GREETING hello big world
LABEL greeting="$GREETING"
