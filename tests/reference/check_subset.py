#!/usr/bin/env python3
"""Load `prep subset` output with HF `datasets` exactly as docs/TRAINING.md says, and check it.

usage: check_subset.py SUBSET_DIR [--expect NAME=ROWS ...]

Checks: every split loads (both documented ways: `select` by index, and a rank filter for
unstratified subsets); the row counts; the keys of the loaded rows are the index file's
keys; nesting of the training subsets; validation disjoint from them; every rank equals
the documented hash.
"""
import argparse
import hashlib
import json
import os
import sys

import pyarrow.parquet as pq
from datasets import load_dataset


def rank(key: str, seed: int) -> int:
    d = hashlib.sha256(b"prep-subset-v1\0" + seed.to_bytes(8, "little") + key.encode()).digest()
    return int.from_bytes(d[:8], "big")


# --- the loading code of docs/TRAINING.md ("Load a subset") --------------------------------
def load_subset(subset_dir: str, name: str):
    manifest = json.load(open(os.path.join(subset_dir, "subsets.json")))
    split = manifest["splits"][name]
    ds = load_dataset("parquet", data_files=manifest["data_files"], split="train")
    index = pq.read_table(os.path.join(subset_dir, split["index"]), columns=["index"])
    return ds.select(index.column("index").to_pylist())
# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("subset_dir")
    ap.add_argument("--expect", action="append", default=[], help="NAME=ROWS")
    a = ap.parse_args()
    m = json.load(open(os.path.join(a.subset_dir, "subsets.json")))
    seed = m["seed"]
    keys = {}
    for name, split in m["splits"].items():
        ds = load_subset(a.subset_dir, name)
        if len(ds) != split["rows"]:
            print(f"FAIL {name}: loaded {len(ds)} rows, manifest says {split['rows']}")
            return 1
        idx = pq.read_table(os.path.join(a.subset_dir, split["index"]))
        want = idx.column("key").to_pylist()
        got = ds["key"]
        if got != want:
            print(f"FAIL {name}: loaded keys differ from the index file's")
            return 1
        for k, r in zip(want, idx.column("rank").to_pylist()):
            if rank(k, seed) != r:
                print(f"FAIL {name}: rank of {k!r} is {r}, the documented hash gives {rank(k, seed)}")
                return 1
        if m["stratify"] is None and len(want) > 0:
            # The documented alternative: a rank filter over the whole dataset.
            full = load_dataset("parquet", data_files=m["data_files"], split="train")
            lo, hi = split["rank_min"], split["rank_max"]
            filt = full.filter(lambda k: lo <= rank(k, seed) <= hi, input_columns="key")
            if sorted(filt["key"]) != sorted(want):
                print(f"FAIL {name}: the rank filter [{lo}, {hi}] selects other rows")
                return 1
        if len(ds) and "image" in ds.column_names and not hasattr(ds[0]["image"], "size"):
            print(f"FAIL {name}: the image column does not decode to a PIL image")
            return 1
        keys[name] = set(want)
        print(f"ok {name}: {len(ds)} rows, columns {ds.column_names}")
    train = sorted(m["sizes"], key=lambda s: m["splits"][s]["rows"])
    for small, big in zip(train, train[1:]):
        if not keys[small] <= keys[big]:
            print(f"FAIL {small} is not inside {big}")
            return 1
    for s in train:
        if keys[s] & keys["val"]:
            print(f"FAIL {s} overlaps the validation split")
            return 1
    for e in a.expect:
        name, rows = e.split("=")
        if len(keys[name]) != int(rows):
            print(f"FAIL {name}: {len(keys[name])} rows, expected {rows}")
            return 1
    print(f"subsets OK: nested {' ⊂ '.join(train)}, validation disjoint, ranks match the hash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
