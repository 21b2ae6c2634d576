FROM scratch
COPPY a.txt /
