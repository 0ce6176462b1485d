#!/usr/bin/env bash
# The feature cache on an object store (a benchmark, not a test): N photos 800×600,
# `prep eval features` with the fixture Inception (tests/fixtures/models/inception_fx.onnx,
# the Inception contract at a fraction of its FLOPs) four ways, in one run:
#   no cache | s3 cache, all computed (fills it) | s3 cache, fresh worker, all hits | local cache, all hits
# moto_server on loopback is the store. Prints seconds and images/s per run, the request
# counts prep reports, and checks the four .npy outputs are byte-identical.
# LATENCY_MS=20 puts a proxy in front of moto that delays every client→store packet by that
# much (a store across a network instead of on loopback).
# Usage: [LATENCY_MS=0] benches/feature_cache.sh [N_IMAGES=400] [PREP=target/release/prep]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}; P=${2:-target/release/prep}
if [ ! -x "$P" ]; then ./scripts/setup-build && cargo build --release --quiet; P=target/release/prep; fi
P=$(readlink -f "$P")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; [ -n "${MOTO:-}" ] && kill "$MOTO" 2>/dev/null; [ -n "${PROXY:-}" ] && kill "$PROXY" 2>/dev/null; true' EXIT
source benches/lib.sh
start_moto
make_photos "$tmp/photos" "$N"
make_bucket bench
if [ "${LATENCY_MS:-0}" != 0 ]; then
    PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 - "$PPORT" "$PORT" "$LATENCY_MS" <<'PY' & PROXY=$!
import asyncio, sys
listen, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
async def pipe(r, w, d):
    try:
        while data := await r.read(1 << 16):
            if d:
                await asyncio.sleep(d)
            w.write(data)
            await w.drain()
    finally:
        w.close()
async def serve(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(cr, uw, delay), pipe(ur, cw, 0), return_exceptions=True)
async def main():
    async with await asyncio.start_server(serve, "127.0.0.1", listen) as s:
        await s.serve_forever()
asyncio.run(main())
PY
    sleep 0.5
    EP="http://127.0.0.1:$PPORT"
fi
worker() { # a fresh $PREP_CACHE with the fixture model registered
    export PREP_CACHE="$tmp/$1"
    "$P" models add incfx --file tests/fixtures/models/inception_fx.onnx --like inception >/dev/null 2>&1
}
run() { # NAME ARGS... → seconds, images/s, prep's cache line
    local name=$1; shift
    local t0 t1; t0=$(date +%s.%N)
    "$P" eval features --images "$tmp/photos" --model incfx --out "$tmp/$name.npy" "$@" 2> "$tmp/$name.log"
    t1=$(date +%s.%N)
    printf "%-28s %6.2f s  %7.1f images/s   %s\n" "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
        "$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN{print n/(b-a)}')" \
        "$(grep -o '[0-9]* computed, [0-9]* from the cache' "$tmp/$name.log"; grep -o 'PUT [0-9]*, multipart parts 0, GET [0-9]*' "$tmp/$name.log" || true)"
}
S3=(--feature-cache s3://bench/features --s3-endpoint "$EP")
echo "N=$N photos 800x600, fixture inception, $(nproc) cores, store latency +${LATENCY_MS:-0} ms, $P"
worker w0; run no-cache --no-cache
worker w1; run s3-compute "${S3[@]}"
worker w2; run s3-hits-fresh-worker "${S3[@]}"
worker w3; run local-compute
run local-hits
for f in s3-compute s3-hits-fresh-worker local-compute local-hits; do cmp "$tmp/no-cache.npy" "$tmp/$f.npy"; done
echo "all outputs byte-identical"
