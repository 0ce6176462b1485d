#!/usr/bin/env bash
# prep fetch vs img2dataset on the same machine, same corpus, same settings.
#
# Builds a corpus of real-looking JPEGs (640-1280 px, from the bundled demo photos),
# serves it from loopback with nginx (Debian package; 1 worker, no access log), runs
# img2dataset (PyPI, in a venv) and `prep fetch` with img2dataset's benchmark settings
# (512 center crop, JPEG q95), and prints images/s and peak RSS of both.
#
# Usage: benches/fetch_vs_img2dataset.sh [N=600]
# Needs: apt-get install nginx; python3 with pillow + pyarrow (tests/reference/requirements.txt);
# img2dataset is pip-installed into a venv here.
# Not part of CI (it takes minutes and measures the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-600}
PORT=${PORT:-18931}
work=${WORK:-$(mktemp -d)}
echo "work dir: $work"

command -v nginx >/dev/null || { echo "nginx not found: apt-get install -y nginx" >&2; exit 1; }
venv=${I2D_VENV:-$work/venv}
if [ ! -x "$venv/bin/img2dataset" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q img2dataset
fi
./scripts/setup-build && cargo build --release --quiet
prep=target/release/prep

if [ ! -f "$work/corpus/meta.parquet" ]; then
  python3 benches/make_corpus.py demo/demo "$work/corpus" "$N" "http://127.0.0.1:$PORT"
fi
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$PORT; root $work/corpus/img; types { image/jpeg jpg; } }
}
CONF
mkdir -p "$work/tmp"
nginx -c "$work/nginx.conf"
trap 'nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true' EXIT
sleep 0.3

rm -rf "$work/i2d" "$work/prep"
python3 benches/measure.py img2dataset -- "$venv/bin/img2dataset" --url_list "$work/corpus/meta.parquet" \
  --input_format parquet --url_col URL --caption_col TEXT --output_format parquet \
  --output_folder "$work/i2d" --processes_count 2 --thread_count 32 --image_size 512 \
  --resize_mode center_crop --encode_quality 95 --number_sample_per_shard 1000 \
  --disallowed_header_directives '[]' | tee "$work/i2d.json"
python3 benches/measure.py prep -- "$prep" fetch --source laion --input "$work/corpus/meta.parquet" \
  --out "$work/prep" --resolution 512 --resize-mode center-crop --image-format jpeg --jpeg-quality 95 \
  --allow-network 127.0.0.1/32 --shard-size 1000 --quiet | tee "$work/prep.json"

python3 - "$work" "$N" <<'PY'
import json, sys, glob
import pyarrow.parquet as pq
work, n = sys.argv[1], int(sys.argv[2])
i2d = json.load(open(f"{work}/i2d.json")); prep = json.load(open(f"{work}/prep.json"))
ok_i2d = sum(pq.read_metadata(f).num_rows for f in glob.glob(f"{work}/i2d/*.parquet"))
ok_prep = sum(pq.read_metadata(f).num_rows for f in glob.glob(f"{work}/prep/data/*.parquet"))
r_i2d, r_prep = ok_i2d / i2d["seconds"], ok_prep / prep["seconds"]
print(f"img2dataset: {ok_i2d}/{n} images in {i2d['seconds']:.2f}s = {r_i2d:.1f} img/s, peak RSS {i2d['peak_rss_mib']} MiB")
print(f"prep:        {ok_prep}/{n} images in {prep['seconds']:.2f}s = {r_prep:.1f} img/s, peak RSS {prep['peak_rss_mib']} MiB")
print(f"prep/img2dataset: {r_prep / r_i2d:.2f}x throughput, {prep['peak_rss_mib'] / i2d['peak_rss_mib']:.2f}x peak memory")
c_i2d, c_prep = ok_i2d / i2d["cpu_seconds"], ok_prep / prep["cpu_seconds"]
print(f"per CPU-second (robust to other load): img2dataset {c_i2d:.1f} img, prep {c_prep:.1f} img, {c_prep / c_i2d:.2f}x")
PY
