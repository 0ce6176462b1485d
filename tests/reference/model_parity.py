#!/usr/bin/env python3
"""Reference run of the model-backed conditions, compared with what `prep build` stored.

For every row of OUT (built with --image-format png, so `image` holds the exact
preprocessed pixels), recompute each model condition with onnxruntime + NumPy/OpenCV
following the reference annotators' steps, independently of prep's manifests:

- hed (ControlNet HED/softedge; HED contract): BGR float32 − Caffe mean, NHWC; fused map
  round(clip(p, 0, 1)·255).   --edge-contract pidinet: RGB/255 NCHW, last output.
- sketch (T2I-Adapter): the same edge map > threshold → 255.
- depth (T2I-Adapter MiDaS): RGB, sides resized (INTER_CUBIC) to multiples of 32 when they
  are not, x/127.5 − 1, NCHW; output squeezed, INTER_CUBIC back to the image size if
  needed, d −= min, d /= max, uint8(clip(d·255)).
- keypose (MoveNet): letterbox into 192×192 (scale min(192/w,192/h), INTER_CUBIC, centred,
  black), int32 NHWC; (y, x, score) → image pixels; the person counts when the mean score
  ≥ --person-threshold; drawn with T2I-Adapter's imshow_keypoints at --keypoint-threshold.

- keypose (DWPose, --yolox-model + --simcc-model): DWPose's own steps (controlnet_aux
  dwpose cv_ox_det.py / onnxpose.py): 640×640 letterbox top-left (cv2.INTER_LINEAR,
  int(w·r), pad 114), float32 NCHW; grid decode over strides 8/16/32, exp(wh)·stride,
  score = obj × cls, boxes / r, NMS 0.45 (+1 areas), person class with score > 0.3;
  per box bbox_xyxy2cs(padding 1.25), _fix_aspect_ratio(288/384), get_warp_matrix +
  cv2.getAffineTransform + cv2.warpAffine(INTER_LINEAR), (x − mean) / std, NCHW; SimCC
  argmax / 2.0, score = min(max_x, max_y), −1 where ≤ 0, keypoints / input size · scale +
  center − scale / 2; body = the first 17; drawn at --keypoint-threshold (0.3). One
  deliberate difference from DWPose: no detection means no person (DWPose would run the
  pose model on the whole image).

prep's ports of cv2.resize/cv2.warpAffine INTER_LINEAR themselves are checked pixel for
pixel by the goldens of tests/reference/cv_goldens.py.

Checks: maps within 1 level on ≥ 99 % of pixels (sketch: equal on ≥ 99 %), keypoints
within 1 px, the same persons found. Prints the numbers; exits 1 on failure.
"""
import argparse
import glob
import io
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_build import imshow_keypoints  # noqa: E402

HED_MEAN = np.array([104.00699, 116.66877, 122.67892], np.float32)


def session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def edge_map(sess, rgb, contract):
    if contract == "hed":
        x = (rgb[:, :, ::-1].astype(np.float32) - HED_MEAN)[None]
    else:
        x = (rgb.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
    out = sess.run(None, {sess.get_inputs()[0].name: x})[-1]
    p = np.squeeze(out).astype(np.float32)
    h, w = rgb.shape[:2]
    if p.shape != (h, w):
        p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
    return p


def depth_map(sess, rgb):
    h, w = rgb.shape[:2]
    r = lambda v: max(32, (v + 16) // 32 * 32)
    img = rgb if (r(w), r(h)) == (w, h) else cv2.resize(rgb, (r(w), r(h)), interpolation=cv2.INTER_CUBIC)
    x = (img.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)[None]
    d = np.squeeze(sess.run(None, {sess.get_inputs()[0].name: x})[-1]).astype(np.float32)
    if d.shape != (h, w):
        d = cv2.resize(d, (w, h), interpolation=cv2.INTER_CUBIC)
    d = d - d.min()
    m = d.max()
    d = d / m if m > 0 else d * 0
    return (d * np.float32(255.0)).clip(0, 255).astype(np.uint8)


def movenet(sess, rgb, person_thr):
    h, w = rgb.shape[:2]
    s = min(192 / w, 192 / h)
    cw, ch = min(192, max(1, round(w * s))), min(192, max(1, round(h * s)))
    ox, oy = (192 - cw) // 2, (192 - ch) // 2
    canvas = np.zeros((192, 192, 3), np.uint8)
    canvas[oy:oy + ch, ox:ox + cw] = cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_CUBIC) if (cw, ch) != (w, h) else rgb
    out = sess.run(None, {sess.get_inputs()[0].name: canvas[None].astype(np.int32)})[0].reshape(17, 3)
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = (out[:, 1] * 192 - ox) * (w / cw)
    kp[:, 1] = (out[:, 0] * 192 - oy) * (h / ch)
    kp[:, 2] = out[:, 2]
    return [kp] if kp[:, 2].mean() >= person_thr else []


def dwpose_detect(sess, rgb, nms_thr=0.45, score_thr=0.3):
    """DWPose inference_detector (YOLOX), person boxes best first."""
    h, w = rgb.shape[:2]
    r = min(640 / h, 640 / w)
    padded = np.ones((640, 640, 3), np.uint8) * 114
    resized = cv2.resize(rgb, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    padded[: int(h * r), : int(w * r)] = resized
    x = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)
    out = sess.run(None, {sess.get_inputs()[0].name: x[None]})[0]
    grids, strides = [], []
    for s in (8, 16, 32):
        xv, yv = np.meshgrid(np.arange(640 // s), np.arange(640 // s))
        g = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(g)
        strides.append(np.full((*g.shape[:2], 1), s))
    grids, strides = np.concatenate(grids, 1), np.concatenate(strides, 1)
    out[..., :2] = (out[..., :2] + grids) * strides
    out[..., 2:4] = np.exp(out[..., 2:4]) * strides
    pred = out[0]
    boxes, scores = pred[:, :4], pred[:, 4:5] * pred[:, 5:]
    xyxy = np.ones_like(boxes)
    xyxy[:, 0] = boxes[:, 0] - boxes[:, 2] / 2.0
    xyxy[:, 1] = boxes[:, 1] - boxes[:, 3] / 2.0
    xyxy[:, 2] = boxes[:, 0] + boxes[:, 2] / 2.0
    xyxy[:, 3] = boxes[:, 1] + boxes[:, 3] / 2.0
    xyxy /= r
    # multiclass_nms(score_thr=0.1) for the person class, then score > 0.3.
    sc = scores[:, 0]
    valid = sc > 0.1
    vb, vs = xyxy[valid], sc[valid]
    x1, y1, x2, y2 = vb[:, 0], vb[:, 1], vb[:, 2], vb[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-vs, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= nms_thr)[0] + 1]
    return [vb[i] for i in keep if vs[i] > score_thr]


def dwpose_pose(sess, rgb, boxes, thr_body=17):
    """DWPose inference_pose (RTMPose SimCC) on each box: 17 body keypoints (x, y, score)."""
    h_in, w_in = sess.get_inputs()[0].shape[2:]
    persons = []
    for b in boxes:
        bbox = np.array([b[0], b[1], b[2], b[3]])
        center = np.array([bbox[0] + bbox[2], bbox[1] + bbox[3]]) * 0.5
        scale = np.array([bbox[2] - bbox[0], bbox[3] - bbox[1]]) * 1.25
        aspect = w_in / h_in
        if scale[0] > scale[1] * aspect:
            scale = np.array([scale[0], scale[0] / aspect])
        else:
            scale = np.array([scale[1] * aspect, scale[1]])
        src_w = scale[0]
        src = np.zeros((3, 2), np.float32)
        src[0, :] = center
        src[1, :] = center + np.array([0.0, src_w * -0.5])
        d = src[0, :] - src[1, :]
        src[2, :] = src[1, :] + np.r_[-d[1], d[0]]
        dst = np.zeros((3, 2), np.float32)
        dst[0, :] = [w_in * 0.5, h_in * 0.5]
        dst[1, :] = np.array([w_in * 0.5, h_in * 0.5]) + np.array([0.0, w_in * -0.5])
        dd = dst[0, :] - dst[1, :]
        dst[2, :] = dst[1, :] + np.r_[-dd[1], dd[0]]
        m = cv2.getAffineTransform(np.float32(src), np.float32(dst))
        crop = cv2.warpAffine(rgb, m, (int(w_in), int(h_in)), flags=cv2.INTER_LINEAR)
        mean = np.array([123.675, 116.28, 103.53])
        std = np.array([58.395, 57.12, 57.375])
        x = ((crop - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        sx, sy = sess.run(None, {sess.get_inputs()[0].name: x})[:2]
        k = sx.shape[1]
        sx, sy = sx.reshape(k, -1), sy.reshape(k, -1)
        locs = np.stack((np.argmax(sx, 1), np.argmax(sy, 1)), -1).astype(np.float32)
        mx, my = np.amax(sx, 1), np.amax(sy, 1)
        vals = np.where(mx > my, my, mx)
        locs[vals <= 0.0] = -1
        kp = locs / 2.0
        kp = kp / np.array([w_in, h_in]) * scale.astype(np.float32) + center.astype(np.float32) - scale.astype(np.float32) / 2
        out = np.zeros((thr_body, 3), np.float32)
        out[:, :2] = kp[:thr_body]
        out[:, 2] = vals[:thr_body]
        persons.append(out)
    return persons


def png(b):
    return np.array(Image.open(io.BytesIO(b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--edge-model")
    ap.add_argument("--edge-contract", choices=["hed", "pidinet"], default="hed")
    ap.add_argument("--depth-model")
    ap.add_argument("--movenet-model")
    ap.add_argument("--yolox-model", help="DWPose route: the detector (with --simcc-model)")
    ap.add_argument("--simcc-model", help="DWPose route: the SimCC pose model")
    ap.add_argument("--sketch-threshold", type=float, default=0.5)
    ap.add_argument("--keypoint-threshold", type=float, default=0.3)
    ap.add_argument("--person-threshold", type=float, default=0.25)
    ap.add_argument("--min-share", type=float, default=0.99)
    ap.add_argument("--expect-people", help="comma-separated substrings of keys that must have a person")
    ap.add_argument("--expect-empty", help="comma-separated substrings of keys that must have no person")
    a = ap.parse_args()
    edge = session(a.edge_model) if a.edge_model else None
    dep = session(a.depth_model) if a.depth_model else None
    mov = session(a.movenet_model) if a.movenet_model else None
    det = session(a.yolox_model) if a.yolox_model else None
    pose = session(a.simcc_model) if a.simcc_model else None
    if (det is None) != (pose is None):
        sys.exit("--yolox-model and --simcc-model go together")
    files = sorted(glob.glob(os.path.join(a.out, "data", "*.parquet")))
    if not files:
        sys.exit(f"no shards under {a.out}/data")
    stats = {}
    worst_kp = 0.0
    failures = []
    people = {}

    def record(name, share):
        stats.setdefault(name, []).append(share)

    for f in files:
        t = pq.read_table(f).to_pylist()
        for row in t:
            rgb = png(row["image"]["bytes"])
            key = row["key"]
            if edge is not None and ("hed" in row or "sketch" in row):
                p = edge_map(edge, rgb, a.edge_contract)
                if "hed" in row:
                    ref = np.round(np.clip(p, 0, 1) * 255).astype(np.int16)
                    got = png(row["hed"]["bytes"]).astype(np.int16)
                    record("hed", float((np.abs(ref - got) <= 1).mean()))
                if "sketch" in row:
                    ref = np.where(p > np.float32(a.sketch_threshold), 255, 0)
                    got = png(row["sketch"]["bytes"])
                    if not set(np.unique(got)) <= {0, 255}:
                        failures.append(f"{key}: sketch is not binary")
                    record("sketch", float((ref == got).mean()))
            if dep is not None and "depth" in row:
                ref = depth_map(dep, rgb).astype(np.int16)
                got = png(row["depth"]["bytes"]).astype(np.int16)
                record("depth", float((np.abs(ref - got) <= 1).mean()))
            if (mov is not None or pose is not None) and "keypose" in row:
                if pose is not None:
                    persons = dwpose_pose(pose, rgb, dwpose_detect(det, rgb))
                else:
                    persons = movenet(mov, rgb, a.person_threshold)
                got = row["keypoints"] or []
                people[key] = len(got)
                if len(got) != len(persons):
                    failures.append(f"{key}: prep found {len(got)} person(s), the reference {len(persons)}")
                else:
                    for g, r in zip(got, persons):
                        g = np.array(g, np.float32).reshape(17, 3)
                        d = float(np.abs(g[:, :2] - r[:, :2]).max())
                        worst_kp = max(worst_kp, d)
                        if d > 1.0:
                            failures.append(f"{key}: keypoints differ by {d:.3f} px")
                h, w = rgb.shape[:2]
                ref = imshow_keypoints(h, w, persons, thr=a.keypoint_threshold).astype(np.int16)
                gotm = png(row["keypose"]["bytes"]).astype(np.int16)
                record("keypose", float((np.abs(ref - gotm) <= 1).all(axis=2).mean()))
    for name, shares in stats.items():
        worst = min(shares)
        print(f"{name:8s} rows {len(shares):3d}  worst share within tolerance {worst * 100:.3f} %  mean {np.mean(shares) * 100:.3f} %")
        if worst < a.min_share:
            failures.append(f"{name}: a row has only {worst * 100:.2f} % of pixels within tolerance")
    if mov is not None or pose is not None:
        print(f"keypose  max keypoint difference {worst_kp:.4f} px; persons per row: {json.dumps(people)}")
    for sub in filter(None, (a.expect_people or "").split(",")):
        if not any(sub in k and n > 0 for k, n in people.items()):
            failures.append(f"expected a person in a row matching {sub!r}")
    for sub in filter(None, (a.expect_empty or "").split(",")):
        if any(sub in k and n > 0 for k, n in people.items()):
            failures.append(f"expected no person in rows matching {sub!r}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("model parity: ok")


if __name__ == "__main__":
    main()
