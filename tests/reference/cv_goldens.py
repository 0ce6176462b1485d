#!/usr/bin/env python3
"""Golden files for src/cvops (our ports of cv2.resize, cv2.Canny, cv2.circle,
cv2.line), made with the real OpenCV.

    pip install opencv-python-headless numpy   # x86-64 wheel; made with 4.14
    python3 tests/reference/cv_goldens.py          # (re)write tests/fixtures/cv/
    python3 tests/reference/cv_goldens.py --check  # recompute, compare, exit 1 on any difference

The goldens match cv2 4.13, 4.14 and 5.0. With cv2 4.12 or older, --check
reports draw_lines.png: before 4.13, cv2.line did not pre-clip thick lines, which
changes pixels of the tiles whose end points lie off the canvas (see
src/cvops/draw.rs).

Everything is deterministic (fixed seeds). Images are stored as PNG whose
channels are the array's channels in order (1: gray, 2: gray+alpha, 3: RGB,
4: RGBA), written and read by the small codec below, not by cv2 (which would
swap BGR/RGB). Large noise inputs are not stored: the Rust tests re-make them
with the same splitmix64 generator (`prng_bytes`).

Cubic resize has two goldens per case: `*_ipp.png` is what cv2 gives by
default on x86-64 (IPP on; see src/cvops/resize.rs) and `*_noipp.png` what it
gives with cv2.ipp.setUseIPP(False) (OpenCV's own code). A cv2 without IPP can
only check the latter; the former are then skipped with a warning.
"""

import os
import struct
import sys
import zlib

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "cv")

# ---------------------------------------------------------------- PNG codec --

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def png_bytes(a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPE[c], 0, 0, 0)
    return _PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def png_read(path):
    """Reads the PNGs written by png_bytes (8-bit, no interlace, filter 0)."""
    data = open(path, "rb").read()
    assert data[:8] == _PNG_SIG, path
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    w, h, depth, ctype = hdr[:4]
    c = {v: k for k, v in _COLOR_TYPE.items()}[ctype]
    assert depth == 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * c)
    assert (raw[:, 0] == 0).all(), f"{path}: only filter 0 is supported"
    return raw[:, 1:].reshape(h, w, c)


# ------------------------------------------------------- generated inputs --


def prng_bytes(seed, n):
    """splitmix64, top byte of each output (same as fixtures::prng_bytes in Rust)."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(56)).astype(np.uint8)


def noise(seed, w, h, ch):
    return prng_bytes(seed, w * h * ch).reshape(h, w, ch)


def gradient_noise(seed, w, h, ch):
    n = prng_bytes(seed, w * h * ch).reshape(h, w, ch).astype(np.int64)
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(ch), indexing="ij")
    base = (x * 200 // (w - 1) + y * 55 // (h - 1) + 60 * c) % 256
    return np.clip(base + n % 21 - 10, 0, 255).astype(np.uint8)


GENERATED = {
    "noise512": lambda: noise(1, 512, 512, 3),
    "gray512": lambda: noise(3, 512, 512, 1),
    "grad640": lambda: gradient_noise(2, 640, 427, 3),
    "noise96": lambda: noise(4, 96, 64, 3),
}


def stored_inputs():
    """Small inputs, stored as PNG next to the outputs."""
    rng = np.random.default_rng(20240601)
    d = {}
    d["up"] = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    d["gray"] = cv2.GaussianBlur(rng.integers(0, 256, (61, 97), dtype=np.uint8), (5, 5), 1.5)[:, :, None]
    d["rgba"] = rng.integers(0, 256, (29, 37, 4), dtype=np.uint8)
    d["half"] = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    d["twoch"] = rng.integers(0, 256, (20, 20, 2), dtype=np.uint8)
    d["tiny"] = rng.integers(0, 256, (7, 3, 3), dtype=np.uint8)
    # A case where OpenCV's own cubic path depends on its SIMD/scalar split
    # (8 f32 lanes, integer tail): 16 lanes or all-integer would be off by 1.
    r8 = np.random.default_rng(8)
    r8.integers(20, 60, 2), r8.integers(20, 90, 2)
    d["simd"] = r8.integers(0, 256, (33, 48, 3), dtype=np.uint8)
    d["eight"] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    d["small"] = rng.integers(0, 256, (3, 5, 1), dtype=np.uint8)

    # Canny (a): shapes + noise, 128x96x3.
    img = np.full((96, 128, 3), 40, np.uint8)
    img[:, 64:] = (90, 60, 30)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, 110, 2))
        x1, y1 = x0 + int(rng.integers(8, 40)), y0 + int(rng.integers(8, 30))
        cv2.rectangle(img, (x0, y0), (x1, y1), [int(v) for v in rng.integers(0, 256, 3)], -1)
    for _ in range(5):
        c = (int(rng.integers(0, 128)), int(rng.integers(0, 96)))
        cv2.circle(img, c, int(rng.integers(4, 20)), [int(v) for v in rng.integers(0, 256, 3)], -1, cv2.LINE_AA)
    for _ in range(6):
        p = (int(rng.integers(0, 128)), int(rng.integers(0, 96)))
        q = (int(rng.integers(0, 128)), int(rng.integers(0, 96)))
        cv2.line(img, p, q, [int(v) for v in rng.integers(0, 256, 3)], int(rng.integers(1, 4)), cv2.LINE_AA)
    img = np.clip(img.astype(np.int16) + rng.normal(0, 8, img.shape).round().astype(np.int16), 0, 255)
    d["shapes"] = img.astype(np.uint8)

    # Canny (b): one channel, 64x64: gradient, shapes, noise.
    g = np.tile(np.linspace(20, 200, 64), (64, 1)).astype(np.uint8)
    cv2.circle(g, (40, 24), 14, 240, -1)
    cv2.rectangle(g, (6, 36), (30, 58), 10, -1)
    cv2.line(g, (0, 63), (63, 10), 128, 2)
    g = np.clip(g.astype(np.int16) + rng.normal(0, 6, g.shape).round().astype(np.int16), 0, 255)
    d["gray64"] = g.astype(np.uint8)[:, :, None]

    # Canny (c): blurred noise (texture with edges at all angles), 160x120x3.
    t = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2.5)
    t = cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX)
    d["blur"] = t
    return d


def as_cv(a):
    """cv2 returns (h, w) for one channel; give it (h, w) and our arrays (h, w, c)."""
    return a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a


def hwc(a):
    return a[:, :, None] if a.ndim == 2 else a


# ------------------------------------------------------------------ cases --

CUBIC_CASES = [
    ("noise512", 8, 8),
    ("gray512", 8, 8),
    ("grad640", 10, 6),
    ("up", 23, 17),
    ("gray", 13, 9),
    ("rgba", 11, 13),
    ("half", 32, 24),
    ("twoch", 5, 45),
    ("tiny", 10, 4),
    ("simd", 36, 89),
]
# cv2.resize INTER_LINEAR (YOLOX letterbox; "half" is an exact x2 downscale, which cv2
# runs as INTER_AREA) and cv2.warpAffine INTER_LINEAR (an RTMPose-style crop, 96x128,
# matrix [s, 0, 48 - s*cx; 0, s, 64 - s*cy] with s = num/den): src/cvops/linear.rs.
LINEAR_CASES = [("noise96", 160, 106), ("grad640", 150, 100), ("up", 23, 17),
                ("half", 32, 24), ("tiny", 10, 4), ("shapes", 200, 151)]
WARP_CASES = [("grad640", 1, 5, 320.0, 213.5), ("grad640", 12, 5, 100.25, 400.75), ("noise96", 3, 1, 48.0, 32.0),
              ("noise96", 36, 5, 10.5, -3.25), ("shapes", 9, 10, 64.0, 48.0), ("grad640", 2, 7, 700.0, 50.0)]
NEAREST_CASES = [("eight", 512, 512), ("small", 7, 11), ("grad640", 10, 6)]
CANNY_CASES = [
    ("shapes", 100, 200),
    ("shapes", 50, 150),
    ("shapes", 150.9, 75.5),
    ("gray64", 100, 200),
    ("gray64", 50, 150),
    ("blur", 100, 200),
    ("blur", 50, 150),
    ("blur", 20, 40),
    ("noise96", 100, 200),
    ("noise96", 50, 150),
    ("grad640", 20, 60),
]
TILE_W, TILE_H, TILE_COLS = 64, 48, 10
POSE_LINKS = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8],
              [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]


def label(t):
    return f"{t:g}".replace(".", "p")


def color(rng):
    return [int(v) for v in rng.integers(1, 256, 3)]


def mosaic(tiles):
    rows = -(-len(tiles) // TILE_COLS)
    m = np.zeros((rows * TILE_H, TILE_COLS * TILE_W, 3), np.uint8)
    for i, t in enumerate(tiles):
        y, x = i // TILE_COLS * TILE_H, i % TILE_COLS * TILE_W
        m[y:y + TILE_H, x:x + TILE_W] = t
    return m


def circle_cases(rng):
    cases = []
    for i in range(220):
        if i < 160:
            r = int(rng.integers(1, 5))
        elif i < 200:
            r = int(rng.integers(0, 13))
        else:
            r = int(rng.integers(1, 5))
        if i < 200:
            cx, cy = int(rng.integers(-6, 70)), int(rng.integers(-6, 54))
        else:  # hugging the border
            cx = int(rng.choice([-1, 0, 1, 62, 63, 64]))
            cy = int(rng.choice([-1, 0, 1, 46, 47, 48]))
        cases.append([cx, cy, r] + color(rng))
    return cases


def line_cases(rng):
    cases = []

    def inside():
        return [int(rng.integers(0, TILE_W)), int(rng.integers(0, TILE_H))]

    def around():
        return [int(rng.integers(-40, TILE_W + 40)), int(rng.integers(-40, TILE_H + 40))]

    for i in range(360):
        if i < 160:
            p, q, t = inside(), inside(), int(rng.choice([1, 2, 3]))
        elif i < 270:
            p, q, t = inside(), around(), int(rng.choice([1, 2, 3]))
            if i % 2:
                p, q = around(), around()
        elif i < 300:
            p, q, t = around(), around(), int(rng.integers(4, 9))
        elif i < 330:  # degenerate and axis-aligned, some on or past the border
            p = inside() if i % 3 else around()
            kind = i % 5
            d = int(rng.integers(-20, 21))
            q = {0: p[:], 1: [p[0] + d, p[1]], 2: [p[0], p[1] + d], 3: [p[0] + d, p[1] + d], 4: [p[0] + d, p[1] - d]}[kind]
            t = int(rng.choice([1, 2, 3]))
        else:  # endpoints on the canvas edge, thickness 2 (pose-like, corners outside)
            p = [int(rng.choice([0, 1, TILE_W - 2, TILE_W - 1])), int(rng.integers(0, TILE_H))]
            q = [int(rng.integers(0, TILE_W)), int(rng.choice([0, 1, TILE_H - 2, TILE_H - 1]))]
            t = 2
        cases.append(p + q + [t] + color(rng))
    return cases


def pose_sets(rng):
    sets = []
    for s in range(4):
        if s < 3:
            kps = rng.integers(1, 512, (17, 2))
        else:  # near the borders: caps and quadrilateral corners fall outside
            kps = rng.choice([1, 2, 3, 508, 509, 510, 511], (17, 2))
            kps[::3] = rng.integers(1, 512, (len(kps[::3]), 2))
        kp_colors = [color(rng) for _ in range(17)]
        link_colors = [color(rng) for _ in range(len(POSE_LINKS))]
        sets.append(([[int(a), int(b)] for a, b in kps], kp_colors, link_colors))
    return sets


def draw_pose(kps, kp_colors, link_colors):
    # T2I-Adapter's imshow_keypoints with radius 2, thickness 2 (its canvas is
    # float64; the raster is the same on uint8).
    img = np.zeros((512, 512, 3), np.uint8)
    for (x, y), c in zip(kps, kp_colors):
        cv2.circle(img, (x, y), 2, c, -1)
    for (a, b), c in zip(POSE_LINKS, link_colors):
        cv2.line(img, tuple(kps[a]), tuple(kps[b]), c, thickness=2)
    return img


def build(have_ipp):
    """name -> ndarray (PNG) or str (text file)."""
    files = {}
    stored = stored_inputs()
    for name, a in stored.items():
        files[f"in_{name}.png"] = hwc(a)

    def get(name):
        return GENERATED[name]() if name in GENERATED else stored[name]

    for name, dw, dh in CUBIC_CASES:
        src = as_cv(get(name))
        cv2.ipp.setUseIPP(False)
        files[f"cubic_{name}_{dw}x{dh}_noipp.png"] = hwc(cv2.resize(src, (dw, dh), interpolation=cv2.INTER_CUBIC))
        if have_ipp:
            cv2.ipp.setUseIPP(True)
            files[f"cubic_{name}_{dw}x{dh}_ipp.png"] = hwc(cv2.resize(src, (dw, dh), interpolation=cv2.INTER_CUBIC))
    cv2.ipp.setUseIPP(have_ipp)
    for name, dw, dh in LINEAR_CASES:
        files[f"linear_{name}_{dw}x{dh}.png"] = hwc(cv2.resize(as_cv(get(name)), (dw, dh), interpolation=cv2.INTER_LINEAR))
    for name, num, den, cx, cy in WARP_CASES:
        sc = num / den
        m = np.array([[sc, 0.0, 48 - sc * cx], [0.0, sc, 64 - sc * cy]])
        files[f"warp_{name}_{num}_{den}_{label(cx)}_{label(cy)}.png"] = hwc(
            cv2.warpAffine(as_cv(get(name)), m, (96, 128), flags=cv2.INTER_LINEAR))
    for name, dw, dh in NEAREST_CASES:
        files[f"nearest_{name}_{dw}x{dh}.png"] = hwc(
            cv2.resize(as_cv(get(name)), (dw, dh), interpolation=cv2.INTER_NEAREST))
    for name, lo, hi in CANNY_CASES:
        files[f"canny_{name}_{label(lo)}_{label(hi)}.png"] = hwc(cv2.Canny(as_cv(get(name)), lo, hi))

    rng = np.random.default_rng(7)
    circles, tiles = circle_cases(rng), []
    for cx, cy, r, *c in circles:
        t = np.zeros((TILE_H, TILE_W, 3), np.uint8)
        cv2.circle(t, (cx, cy), r, c, -1)
        tiles.append(t)
    files["draw_circles.txt"] = "# cx cy radius c0 c1 c2: cv2.circle(img, (cx, cy), radius, c, -1)\n" + "".join(
        " ".join(map(str, row)) + "\n" for row in circles)
    files["draw_circles.png"] = mosaic(tiles)

    lines, tiles = line_cases(rng), []
    for x1, y1, x2, y2, th, *c in lines:
        t = np.zeros((TILE_H, TILE_W, 3), np.uint8)
        cv2.line(t, (x1, y1), (x2, y2), c, th)
        tiles.append(t)
    files["draw_lines.txt"] = "# x1 y1 x2 y2 thickness c0 c1 c2: cv2.line(img, (x1, y1), (x2, y2), c, thickness)\n" + "".join(
        " ".join(map(str, row)) + "\n" for row in lines)
    files["draw_lines.png"] = mosaic(tiles)

    text = ["# 0 set x y c0 c1 c2: keypoint (circle radius 2, filled)",
            "# 1 set a b c0 c1 c2: link from keypoint a to b (line thickness 2)"]
    for s, (kps, kpc, lc) in enumerate(pose_sets(rng)):
        text += [f"0 {s} {x} {y} {c[0]} {c[1]} {c[2]}" for (x, y), c in zip(kps, kpc)]
        text += [f"1 {s} {a} {b} {c[0]} {c[1]} {c[2]}" for (a, b), c in zip(POSE_LINKS, lc)]
        files[f"pose_{s}.png"] = draw_pose(kps, kpc, lc)
    files["pose.txt"] = "\n".join(text) + "\n"
    return files


def main():
    check = "--check" in sys.argv[1:]
    have_ipp = bool(cv2.ipp.useIPP())
    print(f"cv2 {cv2.__version__}, IPP {'on' if have_ipp else 'not available'}")
    if not have_ipp:
        if not check:
            sys.exit("this cv2 has no IPP: the *_ipp.png goldens need an x86-64 build with IPP")
        print("warning: skipping the *_ipp.png cubic goldens")
    files = build(have_ipp)
    os.makedirs(OUT, exist_ok=True)
    bad = 0
    for name, content in sorted(files.items()):
        path = os.path.join(OUT, name)
        if not check:
            data = content.encode() if isinstance(content, str) else png_bytes(content)
            with open(path, "wb") as f:
                f.write(data)
            continue
        if not os.path.exists(path):
            print(f"MISSING {name}")
            bad += 1
        elif isinstance(content, str):
            if open(path).read() != content:
                print(f"DIFFERS {name}")
                bad += 1
        else:
            old = png_read(path)
            if old.shape != content.shape:
                print(f"DIFFERS {name}: shape {old.shape} != {content.shape}")
                bad += 1
            elif (old != content).any():
                print(f"DIFFERS {name}: {(old != content).sum()} values")
                bad += 1
    if check:
        print(f"{len(files) - bad} of {len(files)} golden files match cv2")
        sys.exit(1 if bad else 0)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in files)
    print(f"wrote {len(files)} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
