FROM scratch
FLIBBLE a b
