#!/usr/bin/env bash
# Per-image costs behind docs/SCALING.md (a benchmark, not a test). On N photos of
# 800×600 (about LAION's median size), 512 px output, JPEG:
#   decode → resize → encode → Parquet                      (prep build, no condition)
#   the same + canny,color                                  (prep build)
#   each condition model alone on ready tensors             (prep models bench: the depth
#       fixture of ~5.3 GFLOPs, and the real HED / MoveNet when ../shared/models has them)
#   object-store requests per shard                         (prep build --out s3:// against
#       moto_server on loopback, counted by prep itself)
# Prints images/s and core-milliseconds per image (threads × 1000 / images/s).
# Usage: benches/scaling.sh [N_IMAGES=200] [THREADS=all] [PREP=target/release/prep]
# PHOTOS=DIR and DEPTH_MODEL=F.onnx reuse prepared inputs (a machine without Python).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}; T=${2:-$(nproc)}; P=${3:-target/release/prep}
if [ ! -x "$P" ]; then ./scripts/setup-build && cargo build --release --quiet; P=target/release/prep; fi
P=$(readlink -f "$P")
MODELS=${PREP_REAL_MODELS:-../shared/models}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; [ -n "${MOTO:-}" ] && kill "$MOTO" 2>/dev/null; true' EXIT
export PREP_CACHE="$tmp/cache"
source benches/lib.sh
if [ -n "${PHOTOS:-}" ]; then
    mkdir -p "$tmp/photos"; cp "$PHOTOS"/* "$tmp/photos/"
    N=$(ls "$tmp/photos"/*.jpg | wc -l)
else
    make_photos "$tmp/photos" "$N" captions
fi
rate() { awk -v n="$N" -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", n / (b - a) }'; }
report() { # NAME IMAGES_PER_S
    awk -v n="$1" -v r="$2" -v t="$T" 'BEGIN { printf "%-44s %9.2f images/s %10.1f core-ms/image\n", n, r, t * 1000 / r }'
}
build() { # OUT ARGS...
    local out=$1; shift
    local t0 t1; t0=$(date +%s.%N)
    # CPU seconds (user + sys) too: unlike wall time they hold when other work shares the cores.
    { TIMEFORMAT='%U %S'; time "$P" build --source folder --input "$tmp/photos" --resolution 512 \
        --image-format jpeg --threads "$T" --shard-size 100 --quiet --out "$out" "$@" \
        2> "$tmp/build.log"; } 2> "$tmp/cpu"
    t1=$(date +%s.%N)
    awk -v n="$N" '{ printf "cpu %.1f ms/image; ", ($1 + $2) * 1000 / n }' "$tmp/cpu" >&2
    rate "$t0" "$t1"
}
echo "N=$N photos 800x600, 512 px output, --threads $T, $(nproc) cores, prep $("$P" --version)"
report "decode+resize+encode+parquet" "$(build "$tmp/o1")"
report "  + canny,color" "$(build "$tmp/o2" --condition canny,color)"
echo "output bytes per row (image + canny + color, Parquet): $(( $(du -sb "$tmp/o2/data" | cut -f1) / N ))"
if [ -n "${DEPTH_MODEL:-}" ]; then cp "$DEPTH_MODEL" "$tmp/bench_depth.onnx"
else python3 tests/fixtures/models/make_models.py --bench "$tmp/bench_depth.onnx" >/dev/null; fi
"$P" models add bench-depth --file "$tmp/bench_depth.onnx" --like depth 2>/dev/null
bench() { "$P" models bench "$@" --threads "$T" --json | tr -d '\n ' | sed 's/.*"images_per_s":\([0-9.e+-]*\).*/\1/'; }
report "depth fixture model alone (5.3 GFLOPs, b4)" "$(bench bench-depth --size 512 --batch-size 4 --images 32)"
if [ -f "$MODELS/hed_bsds500.onnx" ]; then
    report "HED (VGG16) alone at 512 (b1)" "$(bench hed --file "$MODELS/hed_bsds500.onnx" --size 512 --batch-size 1 --images 6)"
fi
if [ -f "$MODELS/movenet-lightning.onnx" ]; then
    report "MoveNet lightning alone (192, b1)" "$(bench movenet-lightning --file "$MODELS/movenet-lightning.onnx" --size 512 --batch-size 1 --images 64)"
fi
if command -v moto_server >/dev/null; then
    start_moto
    make_bucket bench
    r=$(build s3://bench/run --condition canny,color --s3-endpoint "$EP")
    report "  + canny,color to s3:// (moto, loopback)" "$r"
    grep "object store" "$tmp/build.log"
fi
