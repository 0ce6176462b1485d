#!/usr/bin/env bash
# Benchmark of `prep eval features` (not a test): images/s of
#   (a) the feature model alone on ready tensors (`prep models bench`, same session settings),
#   (b) `prep eval features --no-cache` end to end (read → decode → pytorch-fid resize → infer),
#   (c) a straightforward Python loop (PIL decode, cv2 float bilinear, onnxruntime), the
#       shape of pytorch-fid's extraction without PyTorch,
# with a generated Inception-contract model of realistic cost (~5 GFLOPs per 299×299 image)
# on COCO-sized JPEGs.  Usage: benches/features.sh [N_IMAGES=128] [THREADS=all] [BATCH=16]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-128}; THREADS=${2:-$(nproc)}; BATCH=${3:-16}
./scripts/setup-ort >/dev/null
./scripts/setup-build && cargo build --release --quiet
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export PREP_CACHE="$tmp/cache"
python3 tests/fixtures/models/make_feature_models.py --bench "$tmp/bench_inception.onnx"
python3 - "$tmp/photos" "$N" <<'PY'
import os, sys, numpy as np, cv2
out, n = sys.argv[1], int(sys.argv[2]); os.makedirs(out)
rng = np.random.default_rng(0)
for i in range(n):
    h, w = 480 - 16 * (i % 5), 640
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x // 29 + y // 31 + i) % 7) * 36], -1).astype(np.uint8)
    img = cv2.GaussianBlur(img + rng.integers(0, 20, img.shape, dtype=np.uint8), (3, 3), 0)
    cv2.imwrite(f"{out}/p{i:04d}.jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
PY
P=target/release/prep
$P models add bench-inception --file "$tmp/bench_inception.onnx" --like inception 2>/dev/null
a=$($P models bench bench-inception --size 299 --batch-size "$BATCH" --threads "$THREADS" --images "$N" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
t0=$(date +%s.%N)
$P eval features --images "$tmp/photos" --model bench-inception --no-cache --batch-size "$BATCH" \
    --threads "$THREADS" --out "$tmp/f.npy" 2>/dev/null
t1=$(date +%s.%N)
b=$(python3 -c "print($N / ($t1 - $t0))")
c=$(python3 - "$tmp/photos" "$tmp/bench_inception.onnx" "$THREADS" "$BATCH" "$tmp/f.npy" <<'PY'
import glob, sys, time, cv2, numpy as np, onnxruntime as ort
from PIL import Image
photos, model, threads, batch, prep = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
so = ort.SessionOptions(); so.intra_op_num_threads = threads
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
files = sorted(glob.glob(photos + "/*.jpg"))
t0 = time.perf_counter()
out = []
for k in range(0, len(files), batch):
    xs = []
    for f in files[k:k + batch]:
        x = np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0
        x = cv2.resize(x, (299, 299), interpolation=cv2.INTER_LINEAR)
        xs.append((2 * x - 1).transpose(2, 0, 1))
    out.append(sess.run(None, {"x": np.stack(xs)})[0])
dt = time.perf_counter() - t0
f = np.concatenate(out)
diff = float(np.abs(f - np.load(prep)).max())
assert diff < 2e-3, f"prep's features differ from the Python loop's by {diff}"
print(len(files) / dt)
PY
)
python3 - "$a" "$b" "$c" "$N" "$THREADS" "$BATCH" <<'PY'
import sys
a, b, c = map(float, sys.argv[1:4])
print(f"images={sys.argv[4]} threads={sys.argv[5]} batch={sys.argv[6]}")
print(f"(a) model alone           {a:7.2f} images/s")
print(f"(b) prep eval features    {b:7.2f} images/s   (b)/(a) = {b / a:.2f}")
print(f"(c) Python PIL+cv2+ort    {c:7.2f} images/s   (b)/(c) = {b / c:.2f}")
PY
