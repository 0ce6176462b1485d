#!/usr/bin/env python3
"""Benchmark (not a test): prep's FID against pytorch-fid's scipy route, same run, same data.

1. FID from two 2048-d statistics files (.npz): `prep eval fid --real A.npz --gen B.npz`
   vs `calculate_frechet_distance` (scipy.linalg.sqrtm of Σ1·Σ2, as pytorch-fid).
2. FID from two N × 2048 float32 feature files (covariance included):
   `prep eval fid --real a.npy --gen b.npy` vs np.mean/np.cov + the same sqrtm route.

Times are wall clock; prep's include process start and file reading (median of --runs
runs; SciPy's sqrtm is timed once). Usage:
  ./scripts/setup-build && cargo build --release && python3 benches/fid_bench.py [--n 50000] [--d 2048]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from metrics_ref import calculate_frechet_distance  # noqa: E402  (pytorch-fid's route)


def make(rng, n, d, shift):
    # Correlated features: isotropic noise plus a 64-dim low-rank part, non-zero mean.
    z = rng.standard_normal((n, d), dtype=np.float32)
    u = rng.standard_normal((n, 64), dtype=np.float32)
    w = rng.standard_normal((64, d), dtype=np.float32) * 0.5
    return (z + u @ w + shift).astype(np.float32)


def timed(f):
    t = time.perf_counter()
    v = f()
    return v, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--prep", default="target/release/prep")
    ap.add_argument("--runs", type=int, default=5, help="prep runs per route (median reported)")
    a = ap.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        fa, fb = os.path.join(tmp, "a.npy"), os.path.join(tmp, "b.npy")
        np.save(fa, make(rng, a.n, a.d, 0.0))
        np.save(fb, make(rng, a.n, a.d, 0.1))

        def scipy_stats(p):
            act = np.load(p).astype(np.float64)
            return np.mean(act, axis=0), np.cov(act, rowvar=False)

        (sa, t_cov_a) = timed(lambda: scipy_stats(fa))
        (sb, t_cov_b) = timed(lambda: scipy_stats(fb))
        sza, szb = os.path.join(tmp, "a.npz"), os.path.join(tmp, "b.npz")
        np.savez(sza, mu=sa[0], sigma=sa[1])
        np.savez(szb, mu=sb[0], sigma=sb[1])
        fid_ref, t_sqrtm = timed(lambda: calculate_frechet_distance(sa[0], sa[1], sb[0], sb[1]))

        def prep(*args):
            out = subprocess.run([a.prep, *args, "--json"], check=True, capture_output=True, text=True).stdout
            return json.loads(out)["fid"]

        # prep is timed over a.runs runs (best and median reported; the ratio uses the
        # median), SciPy's sqrtm once (it takes seconds; its spread is small against that).
        runs_s = [timed(lambda: prep("eval", "fid", "--real", sza, "--gen", szb)) for _ in range(a.runs)]
        fid_stats, t_prep_stats = runs_s[0][0], float(np.median([t for _, t in runs_s]))
        t_best_stats = min(t for _, t in runs_s)
        # FID from feature files: `eval fid` streams each .npy through its statistics.
        runs_f = [timed(lambda: prep("eval", "fid", "--real", fa, "--gen", fb)) for _ in range(max(1, a.runs // 2))]
        fid_feat, t_prep_feat = runs_f[0][0], float(np.median([t for _, t in runs_f]))
        t_scipy_feat = t_cov_a + t_cov_b + t_sqrtm
        rel_s = abs(fid_stats - fid_ref) / abs(fid_ref)
        rel_f = abs(fid_feat - fid_ref) / abs(fid_ref)
        print(f"N = {a.n}, d = {a.d}, {os.cpu_count()} CPUs")
        print(f"stats files : scipy sqrtm route {t_sqrtm:8.2f} s  prep {t_prep_stats:6.2f} s (median of "
              f"{a.runs}, best {t_best_stats:.2f} s)  ratio {t_sqrtm / t_prep_stats:6.1f}x  "
              f"FID {fid_ref:.6f} vs {fid_stats:.6f} (rel {rel_s:.1e})")
        print(f"feature files: np.cov x2 + sqrtm {t_scipy_feat:8.2f} s  prep {t_prep_feat:6.2f} s  "
              f"ratio {t_scipy_feat / t_prep_feat:6.1f}x  FID {fid_ref:.6f} vs {fid_feat:.6f} (rel {rel_f:.1e})")
        print(f"  (np.cov {t_cov_a:.2f} s + {t_cov_b:.2f} s incl. loading, sqrtm {t_sqrtm:.2f} s)")


if __name__ == "__main__":
    main()
