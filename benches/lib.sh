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
