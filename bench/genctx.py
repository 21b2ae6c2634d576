#!/usr/bin/env python3
"""genctx.py DIR FILES BYTES: a deterministic build context of FILES files
totalling exactly BYTES bytes under DIR/src/dNN/fNNNNN.txt.

Each file is lines of lowercase hex from a fixed-seed generator, so gzip
shrinks it about as much as it shrinks source code (to roughly half), and
every run on every machine writes the same bytes. Sizes vary between 0.2x
and 1.8x the mean; the last file takes up the rounding.
"""
import os
import random
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: genctx.py DIR FILES BYTES")
    out, n, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(20240101)
    mean = total // n
    sizes = [rng.randint(mean // 5, mean * 9 // 5) for _ in range(n - 1)]
    # Scale so the first n-1 leave a sensible size for the last one.
    scale = (total - mean) / sum(sizes)
    sizes = [max(1, int(s * scale)) for s in sizes]
    sizes.append(total - sum(sizes))
    assert sizes[-1] > 0
    per_dir = 200
    for i, size in enumerate(sizes):
        d = os.path.join(out, "src", "d%02d" % (i // per_dir))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        # 63 hex digits and a newline per line.
        raw = rng.randbytes((size + 1) // 2).hex()[:size]
        body = bytearray(raw, "ascii")
        body[63::64] = b"\n" * len(body[63::64])
        with open(os.path.join(d, "f%05d.txt" % i), "wb") as f:
            f.write(body)


if __name__ == "__main__":
    main()
