#!/usr/bin/env bash
# A one-node Slurm cluster without systemd, then the build as a 4-task job array:
#   1. the array's output is byte-identical to a single-process build;
#   2. one task cancelled mid-way (scancel) leaves nothing partial, and re-submitting
#      that one index (sbatch --array=2, where SLURM_ARRAY_TASK_COUNT is 1) completes it;
#   3. prep status / prep finalize agree.
# Installs slurm-wlm and munge with apt-get when missing. Needs root (munged runs as the
# munge user, slurmd as root). Usage: tests/slurm/run.sh [PATH/TO/prep]
set -euo pipefail
cd "$(dirname "$0")/../.."
PREP=$(readlink -f "${1:-target/debug/prep}")
[ -x "$PREP" ] || { echo "no prep binary at $PREP (cargo build first)" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "== installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

W=$(mktemp -d /tmp/prep-slurm.XXXXXX)
chmod 0711 "$W"
cleanup() {
    set +e
    [ -f "$W/slurmd.pid" ] && kill "$(cat "$W/slurmd.pid")" 2>/dev/null
    [ -f "$W/slurmctld.pid" ] && kill "$(cat "$W/slurmctld.pid")" 2>/dev/null
    [ -f "$W/munge/munged.pid" ] && kill "$(cat "$W/munge/munged.pid")" 2>/dev/null
    sleep 0.3
    rm -rf "$W"
}
trap cleanup EXIT

echo "== munge (key, socket, pid and log in $W/munge)"
mkdir -p "$W/munge"
mungekey --create --keyfile="$W/munge/munge.key" --force 2>/dev/null \
    || dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$W/munge"
chmod 0711 "$W/munge"
chmod 0400 "$W/munge/munge.key"
runuser -u munge -- munged --key-file="$W/munge/munge.key" \
    --socket="$W/munge/munge.socket" --pid-file="$W/munge/munged.pid" \
    --log-file="$W/munge/munged.log" --seed-file="$W/munge/munged.seed"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NODE=$(hostname)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
mkdir -p "$W/state" "$W/spool" "$W/logs"
cat > "$W/slurm.conf" <<CONF
ClusterName=preptest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$W/munge/munge.socket,cred_expire=10
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$W/jobcomp.txt
SchedulerParameters=bf_interval=1
ReturnToService=2
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$W/slurm.conf"

echo "== slurmctld + slurmd"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$NODE"
for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^idle' && break
    sleep 0.1
done
sinfo -h -o '%P %T %c' | grep -q idle || { echo "node not idle:"; sinfo; tail -20 "$W"/slurm*.log; exit 1; }

echo "== input: 32 photos, shards of 8 -> 4 shards, one per array task"
python3 - "$W/photos" <<'PY'
import sys, os, numpy as np
from PIL import Image
d = sys.argv[1]; os.makedirs(d)
rng = np.random.default_rng(7)
for i in range(32):
    h, w = 480, 640 + 16 * (i % 5)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x + y + 31 * i) % 256)], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(f"{d}/img{i:03}.jpg", quality=90)
    open(f"{d}/img{i:03}.txt", "w").write(f"photo number {i}")
PY
FLAGS=(--source folder --input "$W/photos" --condition color,canny --resolution 384 --shard-size 8)

echo "== single-process reference build"
"$PREP" build "${FLAGS[@]}" --threads 1 --out "$W/single" --quiet

LAUNCHER=pipelines/slurm/build-array.sbatch
submit() { # ARRAY-SPEC -> job id
    sbatch --parsable --array="$1" --cpus-per-task=1 --mem=500M --output="$W/logs/%A_%a.out" \
        --export=ALL,PREP_BIN="$PREP",PREP_SHARDS=4,PREP_CACHE="$W/cache" \
        "$LAUNCHER" "${FLAGS[@]}" --out "$W/array"
}
wait_job() { # JOBID
    for _ in $(seq 1200); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    echo "job $1 did not finish in 120 s"; squeue; exit 1
}

echo "== 4-task array; task 2 cancelled as soon as it runs"
JOB=$(submit 0-3)
cancelled=no
for _ in $(seq 1200); do
    state=$(squeue -h -j "${JOB}_2" -o %T 2>/dev/null || true)
    if [ "$state" = RUNNING ]; then
        sleep 0.3
        scancel "${JOB}_2" && cancelled=yes
        break
    fi
    [ -z "$state" ] && break
    sleep 0.05
done
wait_job "$JOB"
[ "$cancelled" = yes ] || { echo "task 2 never seen running; cannot test the cancel"; exit 1; }
for k in 0 1 3; do
    cmp "$W/single/data/part-0000$k.parquet" "$W/array/data/part-0000$k.parquet"
done
if [ -e "$W/array/stats/part-00002.json" ] && [ -e "$W/array/data/part-00002.parquet" ]; then
    echo "task 2 finished before the cancel landed; the re-submit below must skip it"
else
    # Nothing partial under a final name: no data file for the cancelled shard.
    [ ! -e "$W/array/data/part-00002.parquet" ] || { echo "partial data/part-00002.parquet visible"; exit 1; }
    "$PREP" finalize "$W/array" 2> "$W/finalize.err" && { echo "finalize must refuse"; exit 1; }
    grep -q "1 of 4 shards are not done: part-00002" "$W/finalize.err" || { cat "$W/finalize.err"; exit 1; }
fi
"$PREP" status "$W/array" | tee "$W/status1.txt"

echo "== re-submit index 2 alone (its SLURM_ARRAY_TASK_COUNT is 1; the launcher passes 4)"
JOB2=$(submit 2)
wait_job "$JOB2"
grep -h "" "$W/logs/${JOB2}_2.out" | tail -3

echo "== the array's output equals the single-process build, byte for byte"
for f in "$W"/single/data/*.parquet "$W"/single/status/*.parquet; do
    rel=${f#"$W/single/"}
    cmp "$f" "$W/array/$rel"
done
n=$(ls "$W"/array/data/*.parquet | wc -l)
[ "$n" = 4 ] || { echo "expected 4 data shards, got $n"; exit 1; }
"$PREP" finalize "$W/array"
"$PREP" status "$W/array" --json > "$W/status.json"
python3 - "$W/status.json" "$W/array/dataset.json" "$W/single/dataset.json" <<'PY'
import json, sys
st, m, ref = (json.load(open(p)) for p in sys.argv[1:])
assert (st["done"], st["pending"], st["claimed"], st["failed"]) == (4, 0, 0, 0), st
assert st["rows"] == 32 and m["rows"] == 32 and m["complete"], (st["rows"], m["rows"])
assert m["shards"] == ref["shards"], "dataset.json lists the single-process shards"
assert len(st["workers"]) >= 4, st["workers"]  # one worker per task run
print("slurm: 4-task array + cancelled/re-submitted task == single process;", st["rows"], "rows")
PY
