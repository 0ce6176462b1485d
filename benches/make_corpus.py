#!/usr/bin/env python3
"""A corpus of real-looking JPEGs (640-1280 px) from the bundled demo photos: random
crops, scales, flips and colour shifts, JPEG quality 85-95; plus a LAION-style metadata
Parquet pointing at them on a loopback server.

Usage: make_corpus.py DEMO_IMAGES_DIR OUT_DIR N BASE_URL [MIN_SIDE MAX_LONG]  (defaults 640 1280)
"""
import glob
import os
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, ImageOps


def main():
    src_dir, out, n, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    lo = int(sys.argv[5]) if len(sys.argv) > 5 else 640
    hi = int(sys.argv[6]) if len(sys.argv) > 6 else 1280
    os.makedirs(os.path.join(out, "img"), exist_ok=True)
    srcs = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in sorted(glob.glob(os.path.join(src_dir, "*.jpg")))]
    rnd = random.Random(1234)
    urls, texts = [], []
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        cw, ch = rnd.randint(w // 2, w), rnd.randint(h // 2, h)
        x, y = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
        crop = im.crop((x, y, x + cw, y + ch))
        long_side = rnd.randint(max(lo, hi * 2 // 3), hi)
        s = long_side / max(cw, ch)
        crop = crop.resize((max(64, int(cw * s)), max(64, int(ch * s))), Image.BICUBIC)
        if min(crop.size) < lo:
            s = lo / min(crop.size)
            crop = crop.resize((int(crop.width * s) + 1, int(crop.height * s) + 1), Image.BICUBIC)
        if rnd.random() < 0.5:
            crop = ImageOps.mirror(crop)
        crop = ImageEnhance.Color(crop).enhance(rnd.uniform(0.6, 1.4))
        name = f"{i:05d}.jpg"
        crop.save(os.path.join(out, "img", name), quality=rnd.randint(85, 95))
        urls.append(f"{base}/{name}")
        texts.append(f"a photo, variant {i}")
    pq.write_table(pa.table({"URL": urls, "TEXT": texts}), os.path.join(out, "meta.parquet"))


if __name__ == "__main__":
    main()
