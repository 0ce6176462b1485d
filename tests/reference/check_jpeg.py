"""prep's JPEG image column equals what PIL and OpenCV write for the same pixels.

Usage: check_jpeg.py PNG_BUILD JPEG_BUILD --quality Q

The two builds differ only in --image-format: the PNG build's image column holds,
losslessly, the pixels the JPEG build encoded. Each row's JPEG bytes must equal
PIL's Image.save(format="JPEG", quality=Q) and cv2.imencode(".jpg", IMWRITE_JPEG_QUALITY=Q)
of those pixels (both libjpeg-turbo: 4:2:0, accurate integer DCT, standard Huffman tables).
"""
import argparse
import glob
import io
import sys

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image


def rows(build):
    """key -> image column bytes of every data shard of a build."""
    out = {}
    for f in sorted(glob.glob(f"{build}/data/*.parquet")):
        t = pq.read_table(f, columns=["key", "image"]).to_pylist()
        for r in t:
            out[r["key"]] = r["image"]["bytes"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("png_build")
    ap.add_argument("jpeg_build")
    ap.add_argument("--quality", type=int, default=95)
    a = ap.parse_args()
    png, jpg = rows(a.png_build), rows(a.jpeg_build)
    if not png or sorted(png) != sorted(jpg):
        sys.exit(f"the builds hold different keys: {sorted(png)} vs {sorted(jpg)}")
    bad = 0
    for key in sorted(png):
        img = Image.open(io.BytesIO(png[key]))
        img.load()
        if img.mode != "RGB":
            sys.exit(f"{key}: PNG image column is {img.mode}, expected RGB")
        b = io.BytesIO()
        img.save(b, format="JPEG", quality=a.quality)
        pil = b.getvalue()
        rgb = np.asarray(img)
        ok, enc = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, a.quality])
        assert ok
        ours = jpg[key]
        same_pil, same_cv = ours == pil, ours == enc.tobytes()
        print(f"{key}: {img.size[0]}x{img.size[1]} {len(ours)} bytes; == PIL {same_pil}; == cv2 {same_cv}")
        bad += not (same_pil and same_cv)
    if bad:
        sys.exit(f"{bad} of {len(png)} rows differ from PIL/cv2")
    print(f"ok: {len(png)} rows byte-identical to PIL and cv2 at quality {a.quality}")


if __name__ == "__main__":
    main()
