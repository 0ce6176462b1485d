"""prep decodes JPEGs to the pixels PIL and OpenCV decode (both libjpeg-turbo).

Usage: check_decode.py BUILD SOURCE_DIR [--min-rows N]

For every row of a PNG build whose image kept its source size (no resize, no crop),
the image column must equal PIL's Image.open(src).convert("RGB") and cv2.imread(src)
exactly. Build with a --resolution/--resize-mode that leaves some images untouched.
"""
import argparse
import io
import os
import sys

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_jpeg import rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("source_dir")
    ap.add_argument("--min-rows", type=int, default=1)
    a = ap.parse_args()
    checked = 0
    for key, image in sorted(rows(a.build).items()):
        src = os.path.join(a.source_dir, os.path.basename(key) + ".jpg")
        if not os.path.exists(src):
            continue
        ours = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
        pil = np.asarray(Image.open(src).convert("RGB"))
        if ours.shape != pil.shape:
            continue  # resized: not a pure decode
        cv = cv2.imread(src, cv2.IMREAD_COLOR)[:, :, ::-1]
        mode = Image.open(src).mode
        d_pil = int(np.abs(ours.astype(int) - pil).max())
        d_cv = int(np.abs(ours.astype(int) - cv).max())
        print(f"{key}: {pil.shape[1]}x{pil.shape[0]} {mode}; max |prep - PIL| {d_pil}, |prep - cv2| {d_cv}")
        if d_pil or d_cv:
            sys.exit(f"{key}: prep's decode differs from PIL/cv2")
        checked += 1
    if checked < a.min_rows:
        sys.exit(f"only {checked} rows kept their source size (need {a.min_rows})")
    print(f"ok: {checked} JPEGs decoded exactly as PIL and cv2 decode them")


if __name__ == "__main__":
    main()
