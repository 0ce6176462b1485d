#!/usr/bin/env python3
"""Check a `prep build` output against the reference implementations, in Python.

Usage: check_build.py OUT [--min-rows N]

- HF `datasets` loads OUT/data/*.parquet and decodes every image column to a PIL image
  (the schema metadata declares them as Image features);
- color  == T2I-Adapter's AddSpatialPalette with OpenCV (INTER_CUBIC to (w//64, h//64),
  INTER_NEAREST back), within +-1 on >= 99.5 % of pixels;
- canny  == cv2.Canny(image, 100, 200) (required: >= 99.5 % equal; reports exact %);
- keypose == T2I-Adapter's imshow_keypoints (radius 2, thickness 2, BGR palette on a BGR
  canvas converted to RGB) re-drawn with cv2 from the `keypoints` column: exact;
- seg uses only palette colours (VOC colour map of label + 1), never interpolated ones.
Checks are made on lossless images (run the build with --image-format png).
Exit status 1 on any failure.
"""
import argparse
import glob
import os
import sys

import cv2
import numpy as np

SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8],
            [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]
B, G, O = [51, 153, 255], [0, 255, 0], [255, 128, 0]  # mmpose BGR tuples
KPT_COLOR = [B, B, B, B, B, G, O, G, O, G, O, G, O, G, O, G, O]
LINK_COLOR = [G, G, O, O, B, B, B, B, G, O, G, O, B, B, B, B, B, B, B]


def imshow_keypoints(h, w, persons, thr=0.1, radius=2, thickness=2):
    """T2I-Adapter's drawing (ldm/modules/extra_condition/utils.py), all persons."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    for kpts in persons:
        kpts = np.array(kpts, dtype=np.float32).reshape(17, 3)
        for kid, kpt in enumerate(kpts):
            x, y, s = int(kpt[0]), int(kpt[1]), kpt[2]
            if s < thr:
                continue
            cv2.circle(img, (x, y), radius, tuple(KPT_COLOR[kid]), -1)
        for sk_id, sk in enumerate(SKELETON):
            p1 = (int(kpts[sk[0], 0]), int(kpts[sk[0], 1]))
            p2 = (int(kpts[sk[1], 0]), int(kpts[sk[1], 1]))
            if (p1[0] <= 0 or p1[0] >= w or p1[1] <= 0 or p1[1] >= h or p2[0] <= 0 or p2[0] >= w
                    or p2[1] <= 0 or p2[1] >= h or kpts[sk[0], 2] < thr or kpts[sk[1], 2] < thr):
                continue
            cv2.line(img, p1, p2, tuple(LINK_COLOR[sk_id]), thickness=thickness)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def voc(i):
    r = g = b = 0
    for j in range(8):
        r |= ((i >> 0) & 1) << (7 - j)
        g |= ((i >> 1) & 1) << (7 - j)
        b |= ((i >> 2) & 1) << (7 - j)
        i >>= 3
    return (r, g, b)


PALETTE = {voc(l + 1) for l in range(255)} | {(0, 0, 0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--min-rows", type=int, default=1)
    args = ap.parse_args()
    import datasets
    from PIL import Image

    files = sorted(glob.glob(os.path.join(args.out, "data", "*.parquet")))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    failures = []
    image_cols = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    print(f"{len(ds)} rows, image columns: {image_cols}")
    if len(ds) < args.min_rows:
        failures.append(f"only {len(ds)} rows")
    if "image" not in image_cols:
        failures.append("`image` is not an Image feature")
    for row in ds:
        key = row["key"]
        for c in image_cols:
            if not isinstance(row[c], Image.Image):
                failures.append(f"{key}: {c} did not decode to a PIL image")
        img = np.array(row["image"].convert("RGB"))
        h, w = img.shape[:2]
        if "color" in row:
            small = cv2.resize(img, (max(w // 64, 1), max(h // 64, 1)), interpolation=cv2.INTER_CUBIC)
            ref = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
            got = np.array(row["color"].convert("RGB"))
            ok = (np.abs(ref.astype(int) - got.astype(int)) <= 1).all(axis=2).mean()
            print(f"{key} color: {ok * 100:.3f}% of pixels within +-1 of OpenCV")
            if ok < 0.995:
                failures.append(f"{key}: color matches OpenCV on only {ok * 100:.2f}%")
        if "canny" in row:
            ref = cv2.Canny(img, 100, 200)
            got = np.array(row["canny"])
            if got.ndim == 3:
                failures.append(f"{key}: canny is not 1-channel")
                got = got[..., 0]
            eq = (ref == got).mean()
            print(f"{key} canny: {eq * 100:.3f}% equal to cv2.Canny")
            if eq < 0.995:
                failures.append(f"{key}: canny equals cv2.Canny on only {eq * 100:.2f}%")
        if "keypose" in row:
            persons = row.get("keypoints") or []
            ref = imshow_keypoints(h, w, persons)
            got = np.array(row["keypose"].convert("RGB"))
            diff = int((ref != got).any(axis=2).sum())
            print(f"{key} keypose: {len(persons)} person(s), {diff} pixels differ from the cv2 reference drawing")
            if diff:
                failures.append(f"{key}: keypose differs from the reference drawing in {diff} pixels")
        if "seg" in row:
            got = np.array(row["seg"].convert("RGB")).reshape(-1, 3)
            colours = {tuple(int(v) for v in c) for c in np.unique(got, axis=0)}
            bad = colours - PALETTE
            print(f"{key} seg: {len(colours)} colours, all in the palette: {not bad}")
            if bad:
                failures.append(f"{key}: seg has non-palette colours {sorted(bad)[:5]}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("all reference checks passed")


if __name__ == "__main__":
    main()
