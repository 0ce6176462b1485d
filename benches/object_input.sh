#!/usr/bin/env bash
# --input from an object store vs the same files on local disk (a benchmark, not a test):
# N photos of 800×600 with .txt captions, `prep build --source folder --condition canny`
# at 512 px, once from a local folder (the baseline) and once from s3:// (moto_server on
# loopback), in the same run. Prints images/s, CPU ms/image and the ratio s3/local, and
# checks the two outputs' data shards are byte-identical.
# Usage: benches/object_input.sh [N_IMAGES=200] [THREADS=all] [PREP=target/release/prep]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}; T=${2:-$(nproc)}; P=${3:-target/release/prep}
if [ ! -x "$P" ]; then ./scripts/setup-build && cargo build --release --quiet; P=target/release/prep; fi
P=$(readlink -f "$P")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; [ -n "${MOTO:-}" ] && kill "$MOTO" 2>/dev/null; true' EXIT
export PREP_CACHE="$tmp/cache"
source benches/lib.sh
start_moto
make_photos "$tmp/photos" "$N" captions
make_bucket bench
python3 - "$tmp/photos" "$EP" <<'PY'
import os, sys, boto3
out, ep = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=ep)
for f in sorted(os.listdir(out)):
    s3.upload_file(f"{out}/{f}", "bench", f"photos/{f}")
PY
build() { # OUT INPUT ARGS... → images/s on stdout, cpu ms/image on stderr
    local out=$1 input=$2; shift 2
    local t0 t1; t0=$(date +%s.%N)
    { TIMEFORMAT='%U %S'; time "$P" build --source folder --input "$input" --resolution 512 \
        --condition canny --threads "$T" --shard-size 100 --quiet --out "$out" "$@" \
        2> "$tmp/build.log"; } 2> "$tmp/cpu"
    t1=$(date +%s.%N)
    awk -v n="$N" '{ printf "%.1f", ($1 + $2) * 1000 / n }' "$tmp/cpu" > "$out.cpu"
    awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", n / (b - a) }'
}
echo "N=$N photos 800x600 + .txt, canny, 512 px, --threads $T, $(nproc) cores, $P"
for round in 1 2; do
    rm -rf "$tmp/local" "$tmp/s3"
    l=$(build "$tmp/local" "$tmp/photos")
    s=$(build "$tmp/s3" "s3://bench/photos" --s3-endpoint "$EP")
    printf "round %d: local %7.2f images/s (%s CPU-ms/image)   s3 input %7.2f images/s (%s CPU-ms/image)   s3/local %.2f\n" \
        "$round" "$l" "$(cat "$tmp/local.cpu")" "$s" "$(cat "$tmp/s3.cpu")" "$(awk -v a="$s" -v b="$l" 'BEGIN { print a / b }')"
done
for f in "$tmp/local/data"/*.parquet; do cmp "$f" "$tmp/s3/data/$(basename "$f")"; done
echo "data shards byte-identical: $(ls "$tmp/local/data" | wc -l) files"
