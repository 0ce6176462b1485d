#!/usr/bin/env python3
"""Reference check of `prep eval features`: the same ONNX file run by Python onnxruntime on
inputs preprocessed the way the reference implementations do, compared with prep's .npy.

- legacy (pytorch-fid): PIL `Image.open(f).convert("RGB")` -> [0, 1] float32 -> bilinear
  resize to 299 (align_corners=False, no antialias; cv2.resize INTER_LINEAR on float32
  computes the same taps and weights as F.interpolate) -> 2x - 1 -> NCHW.
- clean (clean-fid): each channel as a PIL "F" image, resize((299, 299), BICUBIC), clip to
  [0, 255], (x - 128) / 128.
- clip (CLIP / torchvision): PIL resize of the shorter side to S with BICUBIC (longer side
  int(S * long / short)), centre crop S (offsets round((side - S) / 2)), /255, CLIP mean/std.

Usage: features_ref.py --images DIR --model F.onnx --prep F.npy --mode legacy|clean|clip
       [--output NAME] [--size S] [--tol 2e-3]
"""
import argparse
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

EXTS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def legacy(img, size):
    x = np.asarray(img, np.float32) / 255.0
    x = cv2.resize(x, (size, size), interpolation=cv2.INTER_LINEAR)
    return (2.0 * x - 1.0).transpose(2, 0, 1)


def clean(img, size):
    a = np.asarray(img)
    chans = []
    for c in range(3):
        f = Image.fromarray(a[:, :, c].astype(np.float32), mode="F")
        chans.append(np.asarray(f.resize((size, size), resample=Image.BICUBIC)).clip(0, 255))
    x = np.stack(chans, 0).astype(np.float32)
    return (x - 128.0) / 128.0


def clip(img, size):
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    r = img.resize((nw, nh), resample=Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    x = np.asarray(r, np.float32)[top:top + size, left:left + size] / 255.0
    return ((x - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prep", required=True)
    ap.add_argument("--mode", choices=["legacy", "clean", "clip"], required=True)
    ap.add_argument("--output", default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--tol", type=float, default=2e-3)
    a = ap.parse_args()
    size = a.size or (224 if a.mode == "clip" else 299)
    files = sorted(
        os.path.join(a.images, f) for f in os.listdir(a.images)
        if f.rsplit(".", 1)[-1].lower() in EXTS and os.path.isfile(os.path.join(a.images, f))
    )
    prep = np.load(a.prep)
    if prep.shape[0] != len(files):
        sys.exit(f"prep wrote {prep.shape[0]} rows for {len(files)} images")
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    fn = {"legacy": legacy, "clean": clean, "clip": clip}[a.mode]
    worst = 0.0
    for i, f in enumerate(files):
        x = fn(Image.open(f).convert("RGB"), size)[None]
        out = sess.run([a.output] if a.output else None, {inp: x})[-1 if not a.output else 0]
        ref = out.reshape(-1)
        diff = float(np.abs(ref - prep[i]).max())
        worst = max(worst, diff)
        if diff > a.tol:
            sys.exit(f"{f}: features differ from the {a.mode} reference by {diff:.3g} > {a.tol}")
    print(f"{a.mode}: {len(files)} images, max |prep - reference| = {worst:.3g} (tolerance {a.tol})")


if __name__ == "__main__":
    main()
