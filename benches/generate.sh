#!/usr/bin/env bash
# Benchmark of `prep generate` (not a test): per denoising step, the UNet's time inside ONNX
# Runtime against everything prep does outside it (tokenize, scheduler math, guidance,
# tensor copies, PNG encoding; the adapter/text/VAE runs are ONNX Runtime time and reported
# apart), and images/s — on the fixture pipeline (64×64) and on a generated mid-size UNet
# (make_pipeline.py --bench: 128 base channels, 64×64 latents = 512×512 images, CFG batch 2).
# Target: outside ≤ 5 % of a step.
# Usage: benches/generate.sh [N_IMAGES=2] [STEPS=10] [THREADS=all] [PROFILE=release|debug]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}; STEPS=${2:-10}; THREADS=${3:-$(nproc)}; PROFILE=${4:-release}
./scripts/setup-ort >/dev/null
./scripts/setup-build
if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
P=target/$PROFILE/prep
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export PREP_CACHE="$tmp/cache"
python3 tests/fixtures/generate/make_pipeline.py --bench "$tmp/mid"
$P build --source demo --condition color --resolution 64 --image-format png --out "$tmp/ds64" --quiet 2>/dev/null
$P build --source demo --condition color --resolution 512 --image-format png --out "$tmp/ds512" --quiet 2>/dev/null
fx=tests/fixtures/generate
echo "== fixture pipeline (64x64, $STEPS steps, $N images, $PROFILE build, $THREADS threads)"
$P generate --pipeline $fx/pipeline --adapter color=$fx/adapters/color --input "$tmp/ds64" --limit "$N" \
    --steps "$STEPS" --threads "$THREADS" --out "$tmp/g64" --quiet 2>&1 | grep -E "generated|per step"
echo "== mid-size UNet (512x512, $STEPS steps, $N images)"
$P generate --pipeline "$tmp/mid/pipeline" --adapter color="$tmp/mid/adapters/color" --input "$tmp/ds512" \
    --limit "$N" --steps "$STEPS" --threads "$THREADS" --out "$tmp/g512" --quiet 2>&1 | grep -E "generated|per step"
