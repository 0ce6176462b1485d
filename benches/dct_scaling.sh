#!/usr/bin/env bash
# DCT-domain scaled JPEG decoding, measured: `prep fetch` on large JPEGs (short side
# 1200-2400 px) at --resolution 256, with and without --jpeg-dct-scaling, same process
# settings, same corpus, back to back. Prints images/s of both and the ratio.
# Usage: benches/dct_scaling.sh [N=300]   (needs nginx; python3 with pillow + pyarrow)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
PORT=${PORT:-18932}
work=${WORK:-$(mktemp -d)}
./scripts/setup-build && cargo build --release --quiet
if [ ! -f "$work/corpus/meta.parquet" ]; then
  python3 benches/make_corpus.py demo/demo "$work/corpus" "$N" "http://127.0.0.1:$PORT" 1200 3000
fi
mkdir -p "$work/tmp"
cat > "$work/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; client_body_temp_path $work/tmp; proxy_temp_path $work/tmp;
  fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$PORT; root $work/corpus/img; } }
CONF
nginx -c "$work/nginx.conf"
trap 'nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true' EXIT
sleep 0.3
for mode in false true false true; do
  rm -rf "$work/out-$mode"
  python3 benches/measure.py "dct-$mode" -- target/release/prep fetch --source laion \
    --input "$work/corpus/meta.parquet" --out "$work/out-$mode" --resolution 256 \
    --allow-network 127.0.0.1/32 --jpeg-dct-scaling "$mode" --quiet | tee -a "$work/dct.jsonl"
done
python3 - "$work" "$N" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/dct.jsonl")]
n = int(sys.argv[2])
best = {}
for r in rows:
    best[r["label"]] = min(best.get(r["label"], 1e9), r["seconds"])
off, on = n / best["dct-false"], n / best["dct-true"]
print(f"full decode: {off:.1f} img/s; DCT-scaled decode: {on:.1f} img/s; speed-up {on / off:.2f}x (best of 2 each)")
PY
