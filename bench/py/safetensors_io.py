"""Reads and writes .safetensors files of CPU tensors (8-byte header length, JSON header, raw data), for
the Python side of the benchmarks: Debian has no Python safetensors package."""
import json
import os
import struct

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def st_read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    res = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        res[k] = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[v["dtype"]]).reshape(v["shape"]).clone()
    return res


NAMES = {v: k for k, v in DTYPES.items()}


def st_write(path, tensors, metadata=None):
    """Writes contiguous CPU tensors of the DTYPES kinds (the caller renames into place: atomic)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for k, t in tensors.items():
        b = bytes(t.detach().contiguous().view(-1).view(torch.uint8).tolist())
        header[k] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
