#!/usr/bin/env python3
"""Parity of `prep eval` with the reference implementations of the metrics.

Generates random feature files (N > d and N < d, float32 and float64), runs
`prep eval metrics --json`, `prep eval stats` and `prep eval fid`, and compares with:

- FID: pytorch-fid's `calculate_frechet_distance` (np.cov + scipy.linalg.sqrtm), copied
  below line for line (relative 1e-5).
- KID: clean-fid's `kernel_distance` / torch-fidelity's unbiased polynomial MMD, on the full
  sets (N <= 1000, so every subset is the full set: exact, relative 1e-9).
- PRDC: the `prdc` package from PyPI (exact equality).
- CMMD: google-research cmmd `distance.mmd` in NumPy float64 (relative 1e-6).
- CLIP score: torchmetrics' definition, 100 * cos, mean clamped at 0 (relative 1e-9).
- stats: `mu`/`sigma` equal to np.mean / np.cov (relative 1e-10).
- bad input: NaN features, mismatched d, one sample, a malformed .npz -> exit 2 and an
  error naming the file.

Usage: metrics_ref.py [--prep target/debug/prep]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from scipy import linalg
import prdc as prdc_pkg


# --- pytorch-fid (src/pytorch_fid/fid_score.py), verbatim logic --------------------------
def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    mu1 = np.atleast_1d(mu1)
    mu2 = np.atleast_1d(mu2)
    sigma1 = np.atleast_2d(sigma1)
    sigma2 = np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape
    assert sigma1.shape == sigma2.shape
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError("Imaginary component {}".format(m))
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def pytorch_fid_stats(act):
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


# --- clean-fid kernel_distance's per-subset term (unbiased MMD^2, poly kernel) -------------
def polynomial_mmd_full(feats1, feats2):
    n = feats1.shape[1]
    m = feats1.shape[0]
    x, y = feats2, feats1
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    t = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return t / m


# --- google-research cmmd distance.py (jnp -> np, float64) --------------------------------
def cmmd(x, y, sigma=10, scale=1000):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_sq = np.diag(x @ x.T)
    y_sq = np.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * (x @ x.T) + np.expand_dims(x_sq, 1) + np.expand_dims(x_sq, 0))))
    k_xy = np.mean(np.exp(-gamma * (-2 * (x @ y.T) + np.expand_dims(x_sq, 1) + np.expand_dims(y_sq, 0))))
    k_yy = np.mean(np.exp(-gamma * (-2 * (y @ y.T) + np.expand_dims(y_sq, 1) + np.expand_dims(y_sq, 0))))
    return scale * (k_xx + k_yy - 2 * k_xy)


def clip_score(img, txt):
    img = img / np.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=-1, keepdims=True)
    s = 100 * (img * txt).sum(axis=-1)
    return max(s.mean(), 0.0), s


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


FAILS = []


def check(name, ok, detail):
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        FAILS.append(name)


def run(prep, *args, expect_fail=False):
    p = subprocess.run([prep, *args], capture_output=True, text=True)
    if expect_fail:
        return p
    if p.returncode != 0:
        sys.exit(f"prep {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def make_set(rng, n, d, shift, dtype):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n, d)) @ (np.eye(d) + 0.5 * a) + shift
    return x.astype(dtype)


def case(prep, tmp, name, n_real, n_gen, d, dtype, seed):
    print(f"case {name}: N_real={n_real} N_gen={n_gen} d={d} {np.dtype(dtype).name}")
    rng = np.random.default_rng(seed)
    real = make_set(rng, n_real, d, 0.0, dtype)
    gen = make_set(rng, n_gen, d, 0.05, dtype)
    rp, gp = os.path.join(tmp, f"{name}_real.npy"), os.path.join(tmp, f"{name}_gen.npy")
    np.save(rp, real)
    np.save(gp, gen)
    txt = rng.standard_normal((n_gen, d)).astype(dtype) + gen * 0.3
    tp = os.path.join(tmp, f"{name}_txt.npy")
    np.save(tp, txt)

    out = run(prep, "eval", "metrics", "--real", rp, "--gen", gp, "--metrics",
              "fid,kid,prdc,cmmd,clip", "--gen-text", tp, "--json", "--seed", "1").stdout
    got = json.loads(out)
    want_keys = {"fid", "kid", "cmmd", "precision", "recall", "density", "coverage", "clip_score"}
    check("json keys", set(got) == want_keys and set(got["kid"]) == {"mean", "std"}, sorted(got))

    r64, g64 = real.astype(np.float64), gen.astype(np.float64)
    mu1, s1 = pytorch_fid_stats(r64)
    mu2, s2 = pytorch_fid_stats(g64)
    fid = calculate_frechet_distance(mu1, s1, mu2, s2)
    check("fid (pytorch-fid sqrtm route)", rel(got["fid"], fid) < 1e-5, f"prep {got['fid']:.10g} ref {fid:.10g} rel {rel(got['fid'], fid):.2e}")

    if n_real == n_gen and n_real <= 1000:
        kid = polynomial_mmd_full(r64, g64)
        check("kid (unbiased, exact N<=1000)", rel(got["kid"]["mean"], kid) < 1e-9 and got["kid"]["std"] < 1e-12 * abs(kid) + 1e-18,
              f"prep {got['kid']['mean']:.12g} ± {got['kid']['std']:.2g} ref {kid:.12g}")

    p = prdc_pkg.compute_prdc(real_features=real, fake_features=gen, nearest_k=5)
    same = all(got[k] == float(p[k]) for k in ("precision", "recall", "density", "coverage"))
    check("prdc (prdc package, k=5)", same,
          " ".join(f"{k} {got[k]}/{float(p[k])}" for k in ("precision", "recall", "density", "coverage")))

    c = cmmd(real, gen)
    check("cmmd (distance.py)", rel(got["cmmd"], c) < 1e-6, f"prep {got['cmmd']:.10g} ref {c:.10g} rel {rel(got['cmmd'], c):.2e}")

    cs, _ = clip_score(g64, txt.astype(np.float64))
    check("clip score (torchmetrics)", rel(got["clip_score"], cs) < 1e-9 if cs > 0 else got["clip_score"] == 0.0,
          f"prep {got['clip_score']:.10g} ref {cs:.10g}")

    # stats files and FID from them
    sa, sb = os.path.join(tmp, f"{name}_a.npz"), os.path.join(tmp, f"{name}_b.npz")
    run(prep, "eval", "stats", "--features", rp, "--out", sa)
    run(prep, "eval", "stats", "--features", gp, "--out", sb, "--compressed")
    za, zb = np.load(sa), np.load(sb)
    ok = (np.max(np.abs(za["mu"] - mu1)) <= 1e-10 * np.max(np.abs(mu1)) and
          np.max(np.abs(za["sigma"] - s1)) <= 1e-10 * np.max(np.abs(s1)) and
          np.max(np.abs(zb["sigma"] - s2)) <= 1e-10 * np.max(np.abs(s2)) and za["sigma"].dtype == np.float64)
    check("stats npz == np.mean / np.cov", ok, f"sigma max abs diff {np.max(np.abs(za['sigma'] - s1)):.2e}")
    f2 = json.loads(run(prep, "eval", "fid", "--real", sa, "--gen", sb, "--json").stdout)["fid"]
    check("fid from .npz stats", rel(f2, fid) < 1e-5, f"prep {f2:.10g} ref {fid:.10g}")


def bad_inputs(prep, tmp):
    print("bad inputs")
    rng = np.random.default_rng(0)
    good = os.path.join(tmp, "good.npy")
    np.save(good, rng.standard_normal((20, 8)))
    cases = {}
    x = rng.standard_normal((20, 8)); x[3, 2] = np.nan
    cases["nan.npy"] = x
    cases["dim9.npy"] = rng.standard_normal((20, 9))
    cases["one.npy"] = rng.standard_normal((1, 8))
    cases["empty.npy"] = np.zeros((0, 8))
    for fname, arr in cases.items():
        p = os.path.join(tmp, fname)
        np.save(p, arr)
        r = run(prep, "eval", "metrics", "--real", good, "--gen", p, "--metrics", "fid,kid", "--json", expect_fail=True)
        check(f"rejects {fname}", r.returncode == 2 and fname in r.stderr and r.stdout == "", r.stderr.strip().splitlines()[0] if r.stderr else "")
    bad = os.path.join(tmp, "broken.npz")
    with open(bad, "wb") as f:
        f.write(b"PK\x03\x04garbage")
    r = run(prep, "eval", "fid", "--real", bad, "--gen", good, expect_fail=True)
    check("rejects malformed npz", r.returncode == 2 and "broken.npz" in r.stderr, r.stderr.strip().splitlines()[0] if r.stderr else "")
    nosig = os.path.join(tmp, "nosigma.npz")
    np.savez(nosig, mu=np.zeros(8))
    r = run(prep, "eval", "fid", "--real", nosig, "--gen", good, expect_fail=True)
    check("rejects npz without sigma", r.returncode == 2 and "nosigma.npz" in r.stderr and "sigma" in r.stderr, r.stderr.strip().splitlines()[0] if r.stderr else "")


def main():
    # pytorch-fid passes disp=False, deprecated in recent SciPy; keep its call as it is.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("--prep", default=os.environ.get("PREP_BIN", "target/debug/prep"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        case(args.prep, tmp, "n_gt_d_f32", 600, 600, 64, np.float32, 1)
        case(args.prep, tmp, "n_lt_d_f64", 150, 150, 256, np.float64, 2)
        case(args.prep, tmp, "n_lt_d_f32_unequal", 300, 200, 512, np.float32, 3)
        case(args.prep, tmp, "n_gt_d_f64", 1000, 1000, 128, np.float64, 4)
        # d = 1024 > the two-stage eigenvalue solver's threshold, both Cholesky routes.
        case(args.prep, tmp, "n_gt_d_f32_wide", 1100, 1100, 1024, np.float32, 5)
        bad_inputs(args.prep, tmp)
    if FAILS:
        print(f"FAILED: {', '.join(FAILS)}")
        sys.exit(1)
    print("metrics parity: all checks passed")


if __name__ == "__main__":
    main()
