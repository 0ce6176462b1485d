# Shared helpers for the bench scripts (sourced, not run).

# start_moto: a moto S3 server on a free loopback port, for benches that write to or read
# from s3://. Sets PORT, EP (its endpoint URL) and MOTO (its pid: the caller's EXIT trap
# kills it), exports dummy AWS credentials, and returns once the server accepts connections.
start_moto() {
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & MOTO=$!
    EP="http://127.0.0.1:$PORT"
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT))" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "moto_server did not start on port $PORT" >&2
    return 1
}

# make_photos DIR N [captions]: N synthetic 800×600 JPEGs (about LAION's median size;
# gradients, a tiled pattern and seeded noise, quality 90) named pNNNN.jpg, and with
# `captions` a pNNNN.txt beside each ("photo i"). The same N always gives the same bytes.
make_photos() {
    python3 - "$1" "$2" "${3:-}" <<'PY'
import os, sys, numpy as np
from PIL import Image
out, n, captions = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "captions"
os.makedirs(out)
rng = np.random.default_rng(0)
for i in range(n):
    h, w = 600, 800
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x // 29 + y // 31 + i) % 7) * 36], -1)
    img = np.clip(img + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(f"{out}/p{i:04d}.jpg", quality=90)
    if captions:
        open(f"{out}/p{i:04d}.txt", "w").write(f"photo {i}")
PY
}

# make_bucket NAME: create a bucket on the moto server start_moto started.
make_bucket() {
    python3 -c "import urllib.request as u; u.urlopen(u.Request('$EP/$1', method='PUT'))"
}
