#!/usr/bin/env python3
"""Write small random feature files for pipelines/eval-example.toml (out/eval-example-data)."""
import os
import numpy as np

root = os.path.join(os.path.dirname(__file__), "..", "..", "out", "eval-example-data")
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(0)
d = 64
np.save(os.path.join(root, "real.npy"), rng.standard_normal((800, d)).astype(np.float32))
np.save(os.path.join(root, "gen_n1k.npy"), (rng.standard_normal((800, d)) * 1.2 + 0.3).astype(np.float32))
np.save(os.path.join(root, "gen_n10k.npy"), (rng.standard_normal((800, d)) * 1.05 + 0.05).astype(np.float32))
print("wrote", os.path.abspath(root))
