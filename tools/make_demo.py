#!/usr/bin/env python3
"""Regenerate the bundled demo dataset (demo/) from photos shipped inside scikit-image.

    python3 -m pip install scikit-image==0.26.0 pillow numpy     # (onnxruntime only for --check-movenet)
    python3 tools/make_demo.py                  # writes demo/ next to tools/
    python3 tools/make_demo.py --out /tmp/demo  # somewhere else
    python3 tools/make_demo.py --check-movenet ../shared/models/movenet-lightning.onnx

Everything is deterministic: the source files are checked against the sha256 values that
scikit-image 0.26.0 records for them, the label maps are drawn from the polygon/ellipse/threshold
tables below, and the keypoints come from the table MOVENET_RAW (the model's output, recorded once)
plus the hand fixes in KEYPOINT_FIXES. `--check-movenet` re-runs the model and compares it with the
recorded table. See demo/README.md for the provenance and licence of each photo.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------
# COCO-Stuff label ids used here, as stored in stuffthingmaps PNGs (= COCO-Stuff id - 1).
# ---------------------------------------------------------------------------------------------
PERSON, CAT, CUP, SPOON, DINING_TABLE, CLOCK = 0, 16, 46, 49, 66, 84
BANNER, LIGHT, SKY_OTHER, WALL_OTHER = 91, 129, 156, 172
UNLABELED = 255
LABEL_NAMES = {
    PERSON: "person", CAT: "cat", CUP: "cup", SPOON: "spoon", DINING_TABLE: "dining table",
    CLOCK: "clock", BANNER: "banner", LIGHT: "light", SKY_OTHER: "sky-other",
    WALL_OTHER: "wall-other", UNLABELED: "unlabeled",
}

# sha256 of the source files, as listed in skimage/data/_registry.py of scikit-image 0.26.0.
SOURCES = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
}

LICENSES = [
    {"id": 1, "name": "Public Domain", "url": ""},
    {"id": 2, "name": "CC0 1.0 Universal Public Domain Dedication",
     "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
]

# id, source file, crop box (upright pixels, PIL order l,t,r,b) or None, EXIF orientation to store
# (None: no EXIF), licence id, captions (written by the prep authors after looking at each photo).
IMAGES = [
    dict(id=1, src="astronaut.png", crop=None, orientation=None, license=1, captions=[
        "A smiling woman astronaut in an orange flight suit poses in front of an American flag.",
        "Portrait of an astronaut with short brown hair, a helmet with a dark visor beside her and a model space shuttle behind her.",
        "A woman in an orange pressure suit with a mission patch sits next to her helmet.",
    ]),
    dict(id=2, src="coffee.png", crop=None, orientation=None, license=2, captions=[
        "A cup of espresso on a red saucer with a silver spoon, on a wooden table.",
        "Top-down view of a small red and white coffee cup filled with espresso crema.",
        "An espresso cup and teaspoon sit on a reddish-brown saucer on a worn wooden tabletop.",
    ]),
    dict(id=3, src="chelsea.png", crop=None, orientation=None, license=2, captions=[
        "Close-up of a tabby cat's face with large green eyes.",
        "A brown striped cat with long white whiskers and a pink nose looks just past the camera.",
    ]),
    dict(id=4, src="rocket.jpg", crop=(160, 0, 480, 427), orientation=6, license=1, captions=[
        "A white rocket stands on its launch pad between two tall lattice towers at dusk.",
        "A rocket ready for launch under a deep blue evening sky, with bright lights glowing at its base.",
        "Floodlights shine around the base of a tall white rocket against a dark blue sky.",
    ]),
    dict(id=5, src="clock_motion.png", crop=None, orientation=None, license=1, captions=[
        "A blurry black-and-white photo of a round clock on a plain grey wall.",
        "A wall clock smeared sideways by camera motion against a grey background.",
    ]),
]

# ---------------------------------------------------------------------------------------------
# Keypoints of the one person (image 1). MOVENET_RAW is the output of
# ../shared/models/movenet-lightning.onnx on the upright 512x512 image letterboxed to 192x192
# (bilinear resize, no padding needed), mapped back to image pixels: (x, y, score).
# Keypoints with score >= 0.3 are kept as v=2, the rest are 0,0,0; then KEYPOINT_FIXES applies
# the hand review (see demo/README.md).
# ---------------------------------------------------------------------------------------------
KP_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
            "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
            [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
SCORE_MIN = 0.3
MOVENET_RAW = {
    1: [
        (221.92, 121.24, 0.582), (246.51, 101.13, 0.731), (203.91, 98.77, 0.736),
        (275.97, 115.10, 0.486), (175.86, 110.97, 0.739), (317.85, 271.21, 0.613),
        (108.94, 255.90, 0.643), (320.64, 397.77, 0.186), (60.70, 410.03, 0.416),
        (272.84, 481.41, 0.309), (142.13, 487.33, 0.245), (246.42, 501.13, 0.435),
        (127.79, 501.47, 0.359), (320.97, 507.03, 0.046), (63.68, 497.49, 0.021),
        (248.10, 503.17, 0.094), (163.94, 502.40, 0.095),
    ],
}
# name -> (x, y, v); v=0 removes the keypoint.
KEYPOINT_FIXES = {
    1: {
        # Her left hand is hidden behind the helmet; the predicted point lies on the suit's
        # white straps, not on a wrist.
        "left_wrist": (0, 0, 0),
        # The hips are not visible (below the frame / behind the arm, wrist ring and helmet);
        # the model put them on the bottom border.
        "left_hip": (0, 0, 0),
        "right_hip": (0, 0, 0),
    },
}

# ---------------------------------------------------------------------------------------------
# Label maps. Shapes are in upright image pixels; later shapes overwrite earlier ones.
# ---------------------------------------------------------------------------------------------
ASTRONAUT_PERSON = [  # hair, face, neck ring and orange suit; the helmet in front is excluded
    (200, 16), (225, 14), (256, 20), (280, 35), (296, 58), (300, 80), (298, 105), (290, 122),
    (278, 132), (270, 150), (262, 165), (285, 175), (300, 200), (305, 235), (322, 242),
    (345, 268), (357, 300), (362, 345), (345, 352), (325, 360), (302, 388), (287, 428),
    (280, 470), (277, 511), (34, 511), (24, 450), (20, 390), (24, 320), (36, 300), (50, 262),
    (75, 240), (115, 210), (120, 190), (135, 160), (155, 150), (180, 132), (170, 122),
    (160, 105), (153, 72), (168, 38),
]
ASTRONAUT_FLAG = [(0, 0), (67, 0), (62, 100), (75, 150), (96, 218), (60, 250), (24, 330),
                  (22, 511), (0, 511)]

COFFEE_DARK_CORNER = [(0, 0), (100, 0), (0, 80)]
COFFEE_SAUCER = ((277, 229), (202, 159))  # ellipse centre, semi-axes (left as 255, see README)
COFFEE_CUP_RIM = ((290, 110), (118, 93))
COFFEE_CUP_BODY = [(175, 120), (405, 120), (398, 175), (385, 228), (360, 262), (320, 280),
                   (265, 280), (228, 262), (196, 228), (180, 180)]
COFFEE_CUP_HANDLE = [(205, 228), (250, 232), (252, 280), (238, 300), (212, 308), (198, 292),
                     (196, 250)]
COFFEE_SPOON_HANDLE = [(410, 60), (425, 65), (420, 100), (398, 200), (390, 235), (378, 240),
                       (382, 200), (400, 110)]
COFFEE_SPOON_BOWL = ((365, 288), (40, 37))

CHELSEA_CAT = [(12, 0), (398, 0), (382, 28), (363, 50), (366, 100), (357, 160), (345, 190),
               (328, 215), (322, 250), (330, 299), (0, 299), (0, 30)]
CHELSEA_WALL = [(370, 0), (450, 0), (450, 105), (372, 105)]  # out-of-focus background, top right

ROCKET_HORIZON_Y = 352  # sky-other only above this row, and only where the pixel is sky blue

CLOCK_ELLIPSE = ((210, 155), (62, 54))  # clock face (inner, sure)
CLOCK_BLUR = ((210, 155), (84, 68))  # motion-blurred rim: left unlabeled


def _ellipse_box(e):
    (cx, cy), (ax, ay) = e
    return [cx - ax, cy - ay, cx + ax, cy + ay]


def label_map(image_id: int, rgb: np.ndarray) -> tuple[Image.Image, list | None]:
    """Returns the label map for the upright image, and for image 1 the person polygon."""
    h, w = rgb.shape[:2]
    m = Image.new("L", (w, h), UNLABELED)
    d = ImageDraw.Draw(m)
    poly = None
    if image_id == 1:
        d.polygon(ASTRONAUT_FLAG, fill=BANNER)
        d.polygon(ASTRONAUT_PERSON, fill=PERSON)
        poly = ASTRONAUT_PERSON
    elif image_id == 2:
        d.rectangle([0, 0, w, h], fill=DINING_TABLE)
        d.polygon(COFFEE_DARK_CORNER, fill=UNLABELED)
        d.ellipse(_ellipse_box(COFFEE_SAUCER), fill=UNLABELED)
        d.polygon(COFFEE_SPOON_HANDLE, fill=SPOON)
        d.ellipse(_ellipse_box(COFFEE_CUP_RIM), fill=CUP)
        d.polygon(COFFEE_CUP_BODY, fill=CUP)
        d.polygon(COFFEE_CUP_HANDLE, fill=CUP)
        d.ellipse(_ellipse_box(COFFEE_SPOON_BOWL), fill=SPOON)
    elif image_id == 3:
        d.polygon(CHELSEA_WALL, fill=WALL_OTHER)
        d.polygon(CHELSEA_CAT, fill=CAT)
    elif image_id == 4:
        a = np.asarray(m).copy()
        r, g, b = (rgb[..., i].astype(int) for i in range(3))
        rows = np.arange(h)[:, None]
        sky = (b > r + 25) & (b > g + 8) & (b > 40) & (rows < ROCKET_HORIZON_Y)
        lum = (r * 299 + g * 587 + b * 114) // 1000
        light = (lum >= 235) & (rows >= 340)
        a[sky] = SKY_OTHER
        a[light] = LIGHT
        m = Image.fromarray(a, "L")
    elif image_id == 5:
        d.rectangle([0, 0, w, h], fill=WALL_OTHER)
        d.ellipse(_ellipse_box(CLOCK_BLUR), fill=UNLABELED)
        d.ellipse(_ellipse_box(CLOCK_ELLIPSE), fill=CLOCK)
    return m, poly


def keypoints_for(image_id: int) -> list[int]:
    out = []
    fixes = KEYPOINT_FIXES.get(image_id, {})
    for name, (x, y, s) in zip(KP_NAMES, MOVENET_RAW[image_id]):
        if name in fixes:
            x, y, v = fixes[name]
        elif s >= SCORE_MIN:
            v = 2
        else:
            x, y, v = 0, 0, 0
        out += [int(round(x)), int(round(y)), v] if v else [0, 0, 0]
    return out


def run_movenet(model: str, rgb: np.ndarray) -> list[tuple[float, float, float]]:
    import onnxruntime as ort  # only needed for --check-movenet

    h, w = rgb.shape[:2]
    s = 192 / max(w, h)
    nw, nh = round(w * s), round(h * s)
    canvas = Image.new("RGB", (192, 192))
    ox, oy = (192 - nw) // 2, (192 - nh) // 2
    canvas.paste(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), (ox, oy))
    x = np.asarray(canvas, dtype=np.int32)[None]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input:0": x})[0][0, 0]
    return [((xx * 192 - ox) / s, (yy * 192 - oy) / s, float(sc)) for yy, xx, sc in out]


def source_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-image is not installed: python3 -m pip install scikit-image==0.26.0")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_upright(src: Path, crop) -> Image.Image:
    im = Image.open(src)
    im.load()
    im = im.convert("L" if im.mode in ("L", "I;16") else "RGB")
    if crop:
        im = im.crop(crop)
    if max(im.size) > 640:
        s = 640 / max(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    return im


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "demo")
    ap.add_argument("--check-movenet", metavar="ONNX", help="re-run MoveNet and compare with MOVENET_RAW")
    args = ap.parse_args()

    data = source_dir()
    for name, sha in SOURCES.items():
        got = hashlib.sha256((data / name).read_bytes()).hexdigest()
        if got != sha:
            sys.exit(f"{data / name}: sha256 {got} != {sha} (use scikit-image 0.26.0)")

    out = args.out
    (out / "demo").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    seg_dir = out / "stuffthingmaps_trainval2017" / "demo"
    seg_dir.mkdir(parents=True, exist_ok=True)

    images, captions, persons = [], [], []
    cap_id = 1
    for spec in IMAGES:
        iid = spec["id"]
        up = load_upright(data / spec["src"], spec["crop"])
        fname = f"{iid:012d}.jpg"
        stored = up
        kw = dict(quality=90)
        if spec["orientation"] is not None:
            assert spec["orientation"] == 6, "only Orientation=6 is implemented"
            # Orientation 6: the viewer rotates the stored pixels 90 degrees clockwise, so store
            # the upright image rotated 90 degrees counter-clockwise.
            stored = up.transpose(Image.Transpose.ROTATE_90)
            exif = Image.Exif()
            exif[0x0112] = 6
            kw["exif"] = exif.tobytes()
        stored.save(out / "demo" / fname, "JPEG", **kw)

        rgb = np.asarray(up.convert("RGB"))
        lm, poly = label_map(iid, rgb)
        lm.save(seg_dir / f"{iid:012d}.png", "PNG")

        entry = {"license": spec["license"], "file_name": fname, "coco_url": "",
                 "height": up.height, "width": up.width, "date_captured": "",
                 "flickr_url": "", "id": iid}
        images.append(entry)
        for c in spec["captions"]:
            captions.append({"image_id": iid, "id": cap_id, "caption": c})
            cap_id += 1

        if iid in MOVENET_RAW:
            if args.check_movenet:
                live = run_movenet(args.check_movenet, rgb)
                worst = max(max(abs(a[0] - b[0]), abs(a[1] - b[1]), abs(a[2] - b[2]) * 100)
                            for a, b in zip(live, MOVENET_RAW[iid]))
                print(f"image {iid}: MoveNet re-run vs recorded table: max diff {worst:.3f} px (score x100)")
                for n, a, b in zip(KP_NAMES, live, MOVENET_RAW[iid]):
                    print(f"  {n:15s} live ({a[0]:7.2f},{a[1]:7.2f},{a[2]:.3f})  table ({b[0]:7.2f},{b[1]:7.2f},{b[2]:.3f})")
            kps = keypoints_for(iid)
            pm = np.asarray(lm) == PERSON
            ys, xs = np.nonzero(pm)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            persons.append({
                "segmentation": [[float(c) for p in poly for c in p]],
                "num_keypoints": sum(1 for v in kps[2::3] if v > 0),
                "area": float(pm.sum()),
                "iscrowd": 0,
                "keypoints": kps,
                "image_id": iid,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "category_id": 1,
                "id": 1,
            })

    info = {"description": "prep demo split: public-domain / CC0 photos from scikit-image's sample data",
            "url": "", "version": "1.0", "year": 2025, "contributor": "prep authors (see demo/README.md)",
            "date_created": ""}
    cap_json = {"info": info, "licenses": LICENSES, "images": images, "annotations": captions}
    kp_json = {"info": info, "licenses": LICENSES, "images": images, "annotations": persons,
               "categories": [{"supercategory": "person", "id": 1, "name": "person",
                               "keypoints": KP_NAMES, "skeleton": SKELETON}]}
    for name, obj in [("captions_demo.json", cap_json), ("person_keypoints_demo.json", kp_json)]:
        (out / "annotations" / name).write_text(json.dumps(obj, indent=1) + "\n")

    for p in sorted(out.rglob("*")):
        if p.is_file() and p.suffix != ".md":
            print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:7d}  {p.relative_to(out)}")


if __name__ == "__main__":
    main()
