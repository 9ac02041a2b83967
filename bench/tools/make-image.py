#!/usr/bin/env python3
"""Write a docker-save archive for the image benchmark: a busybox layer (from the host's
busybox-static, with sh and sleep) and N data layers of SIZE MiB each, every layer a gzip
tar. The data is base64 of random bytes (gzip shrinks it to ~3/4, so unpacking does real
decompression work). The seed makes the layers distinct between images.

    make-image.py OUT.tar NAME:TAG LAYERS SIZE_MIB SEED
"""
import base64
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

out, name, layers, size_mib, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(seed)


def layer(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        for path, data, kind, target in entries:
            info = tarfile.TarInfo(path)
            info.mtime = 1700000000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755
                t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    gz = gzip.compress(tar, compresslevel=6, mtime=0)
    return "sha256:" + hashlib.sha256(tar).hexdigest(), gz


with open("/bin/busybox", "rb") as f:
    busybox = f.read()
files = [layer([("bin", None, "dir", None), ("bin/busybox", busybox, "file", None),
                ("bin/sh", None, "sym", "busybox"), ("bin/sleep", None, "sym", "busybox"),
                ("data", None, "dir", None)])]
for i in range(layers):
    data = base64.b64encode(rng.randbytes(size_mib * 3 * 1024 * 1024 // 4))
    files.append(layer([(f"data/{seed}-{i}.txt", data, "file", None)]))

config = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [d for d, _ in files]},
    "history": [{"created": "2024-01-01T00:00:00Z"} for _ in files],
}
config_bytes = json.dumps(config).encode()
config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
with tarfile.open(out, "w") as t:
    def add(path, data):
        info = tarfile.TarInfo(path)
        info.size, info.mtime = len(data), 1700000000
        t.addfile(info, io.BytesIO(data))
    add(config_name, config_bytes)
    names = []
    for i, (_, gz) in enumerate(files):
        names.append(f"layer{i}/layer.tar")
        add(names[-1], gz)
    add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": names}]).encode())
print(sum(len(gz) for _, gz in files), sum(int(len(gz)) for _, gz in files[1:]))
