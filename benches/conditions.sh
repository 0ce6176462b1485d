#!/usr/bin/env bash
# Benchmark of a model-backed condition (not a test): images/s of
#   (a) the model alone on ready tensors (`prep models bench`, same session settings),
#   (b) `prep build --condition depth` end to end (decode → resize → infer → encode → Parquet),
#   (c) a straightforward Python pipeline (onnxruntime + OpenCV/NumPy, same steps),
# with a generated depth-contract model of realistic cost (~5.3 GFLOPs per 512×512 image).
# Usage: benches/conditions.sh [N_IMAGES=96] [THREADS=all] [BATCH=1, prep's CPU default] [ROUNDS=1]
# With ROUNDS > 1, (a), (b) and (c) run that many times interleaved (a VM's speed drifts by
# several per cent over minutes): each round's ratios are printed, then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-96}; THREADS=${2:-$(nproc)}; BATCH=${3:-1}; ROUNDS=${4:-1}
./scripts/setup-ort >/dev/null
./scripts/setup-build && cargo build --release --quiet
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export PREP_CACHE="$tmp/cache"
python3 tests/fixtures/models/make_models.py --bench "$tmp/bench_depth.onnx"
python3 - "$tmp/photos" "$N" <<'PY'
import os, sys, numpy as np, cv2
out, n = sys.argv[1], int(sys.argv[2]); os.makedirs(out)
rng = np.random.default_rng(0)
for i in range(n):
    h, w = 480 + 16 * (i % 5), 640
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x // 29 + y // 31 + i) % 7) * 36], -1).astype(np.uint8)
    img = cv2.GaussianBlur(img + rng.integers(0, 20, img.shape, dtype=np.uint8), (3, 3), 0)
    cv2.imwrite(f"{out}/p{i:04d}.jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    open(f"{out}/p{i:04d}.txt", "w").write(f"photo {i}")
PY
P=target/release/prep
$P models add bench-depth --file "$tmp/bench_depth.onnx" --like depth 2>/dev/null
results=()
for round in $(seq "$ROUNDS"); do
a=$($P models bench bench-depth --size 512 --batch-size "$BATCH" --threads "$THREADS" --images "$N" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
t0=$(date +%s.%N)
$P build --source folder --input "$tmp/photos" --condition depth --model depth=bench-depth \
    --resolution 512 --image-format jpeg --threads "$THREADS" --batch-size "$BATCH" --quiet --out "$tmp/out$round" 2>/dev/null
t1=$(date +%s.%N)
b=$(python3 -c "print($N / ($t1 - $t0))")
rm -rf "$tmp/out$round"
c=$(python3 - "$tmp/photos" "$tmp/bench_depth.onnx" "$THREADS" "$BATCH" <<'PY'
import glob, io, sys, time, cv2, numpy as np, onnxruntime as ort, pyarrow as pa, pyarrow.parquet as pq
photos, model, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Timed from session creation on, as (b) includes prep's session creation (and more:
# process start, the model file's sha256 check, the shard commit).
t0 = time.perf_counter()
so = ort.SessionOptions(); so.intra_op_num_threads = threads
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
files = sorted(glob.glob(photos + "/*.jpg"))
rows = []
for k in range(0, len(files), batch):
    imgs = []
    for f in files[k:k + batch]:
        img = cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]; s = 512 / min(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        y0, x0 = (img.shape[0] - 512) // 2, (img.shape[1] - 512) // 2
        imgs.append(np.ascontiguousarray(img[y0:y0 + 512, x0:x0 + 512]))
    x = np.stack([(i.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1) for i in imgs])
    out = sess.run(None, {"image": x})[0]
    for img, d, f in zip(imgs, out, files[k:k + batch]):
        d = d.squeeze(); d = d - d.min(); d = d / max(d.max(), 1e-12)
        dm = (d * 255).clip(0, 255).astype(np.uint8)
        rows.append({"key": f, "image": cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
                     "depth": cv2.imencode(".png", dm)[1].tobytes()})
pq.write_table(pa.Table.from_pylist(rows), "/dev/null")
print(len(files) / (time.perf_counter() - t0))
PY
)
results+=("$a $b $c")
done
python3 - "$N" "$THREADS" "$BATCH" "${results[@]}" <<'PY'
import statistics, sys
n, threads, batch = sys.argv[1:4]
rounds = [tuple(map(float, r.split())) for r in sys.argv[4:]]
print(f"images {n}, threads {threads}, batch {batch}, 512x512, ~5.3 GFLOPs/image, {len(rounds)} round(s)")
for i, (a, b, c) in enumerate(rounds, 1):
    tag = f"round {i}: " if len(rounds) > 1 else ""
    print(f"{tag}(a) model alone            {a:7.2f} images/s")
    print(f"{tag}(b) prep build end to end  {b:7.2f} images/s   (b)/(a) = {b / a:.3f}  (goal >= 0.9)")
    print(f"{tag}(c) Python ort + OpenCV    {c:7.2f} images/s   (b)/(c) = {b / c:.3f}  (goal >= 1.5)")
if len(rounds) > 1:
    med = statistics.median
    print(f"median of {len(rounds)}: (a) {med(r[0] for r in rounds):.2f}  (b) {med(r[1] for r in rounds):.2f}  "
          f"(c) {med(r[2] for r in rounds):.2f} images/s;  (b)/(a) = {med(r[1] / r[0] for r in rounds):.3f}  "
          f"(b)/(c) = {med(r[1] / r[2] for r in rounds):.3f}")
PY
