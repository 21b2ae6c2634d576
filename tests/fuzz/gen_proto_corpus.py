#!/usr/bin/env python3
"""Write the seed corpus for fuzz_proto into tests/fuzz/corpus/proto/.

Valid messages in the shape proto_writer produces (map32 top level), plus
truncated, trailing, hostile and garbage frames. Deterministic: running it
again gives the same bytes. Needs only the standard library."""
import os
import struct
import sys


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            for fmt, tag in (("B", 0xcc), ("H", 0xcd), ("I", 0xce), ("Q", 0xcf)):
                if v < 1 << (8 * struct.calcsize(fmt)):
                    return bytes([tag]) + struct.pack(">" + fmt, v)
        for fmt, tag in (("b", 0xd0), ("h", 0xd1), ("i", 0xd2), ("q", 0xd3)):
            if v >= -(1 << (8 * struct.calcsize(fmt) - 1)):
                return bytes([tag]) + struct.pack(">" + fmt, v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, (bytes, bytearray)):
        return b"\xc4" + bytes([len(v)]) + bytes(v) if len(v) < 256 else b"\xc5" + struct.pack(">H", len(v)) + bytes(v)
    if isinstance(v, list):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return head + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


def message(t, mid, **fields):
    """Top-level map with a map32 header, as proto_writer_data() emits."""
    items = {"v": 1, "t": t, "id": mid}
    items.update(fields)
    return b"\xdf" + struct.pack(">I", len(items)) + b"".join(pack(k) + pack(v) for k, v in items.items())


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "proto")
    os.makedirs(out, exist_ok=True)
    hello = message("hello", 1, name="worker-1", platforms=["linux/amd64", "linux/arm64"], slots=4)
    seeds = {
        "hello": hello,
        "xfer-data": message("xfer.data", 2, stream=7, off=0, data=bytes(range(100)), eof=True),
        "xfer-credit": message("xfer.credit", 3, stream=7, n=8),
        "error": message("error", 4, code=1000, msg="malformed message"),
        "nested": message("job.start", 5, job={"vertex": "v1", "argv": ["sh", "-c", "make"],
                                               "env": {"A": "1"}, "limits": [0, 127, 128, 65536,
                                               1 << 32, -1, -200, -70000, -(1 << 40)]},
                          ratio=0.5, none=None, flag=False),
        "truncated": hello[: len(hello) // 2],
        "trailing": hello + b"\xc0",
        "wrong-version": message("hello", 1).replace(b"\xa1v\x01", b"\xa1v\x02", 1),
        "not-a-map": pack([1, "hello", 1]),
        "huge-array": b"\x81\xa1x\xdd\xff\xff\xff\xff",
        "deep": b"\x81\xa1x" + b"\x91" * 40 + b"\xc0",
        "garbage": bytes((i * 73 + 41) & 0xff for i in range(64)),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
