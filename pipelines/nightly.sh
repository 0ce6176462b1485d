#!/usr/bin/env bash
# The study's nightly job on one machine: score every checkpoint of pipelines/nightly.toml
# for tonight (UTC date), then write reports/NIGHT/. Safe to re-run: a night's history rows
# are replaced, and the report is rewritten atomically.
#
# cron (02:15 every night, as the user that owns the checkout):
#   15 2 * * *  /path/to/prep/pipelines/nightly.sh >> /path/to/prep/out/study/nightly.log 2>&1
#
# systemd timer (~/.config/systemd/user/, then `systemctl --user enable --now prep-nightly.timer`):
#   # prep-nightly.service
#   [Unit]
#   Description=prep nightly sample-complexity study
#   [Service]
#   Type=oneshot
#   ExecStart=/path/to/prep/pipelines/nightly.sh
#   # prep-nightly.timer
#   [Unit]
#   Description=run prep-nightly every night
#   [Timer]
#   OnCalendar=*-*-* 02:15:00 UTC
#   Persistent=true
#   [Install]
#   WantedBy=timers.target
#
# Environment: PREP (the binary, default target/release/prep), CONFIG, REPORTS, TARGETS
# (space-separated METRIC=X for "samples needed", default "fid=20").
set -euo pipefail
cd "$(dirname "$0")/.."
PREP=${PREP:-target/release/prep}
CONFIG=${CONFIG:-pipelines/nightly.toml}
REPORTS=${REPORTS:-reports}
NIGHT=${NIGHT:-$(date -u +%F)}
HISTORY=${HISTORY:-out/study/history.parquet}
TARGETS=${TARGETS:-fid=20}

# One run at a time on this machine.
exec 9>"${TMPDIR:-/tmp}/prep-nightly.lock"
flock -n 9 || { echo "prep nightly: another run holds the lock; exiting" >&2; exit 0; }

"$PREP" eval run --config "$CONFIG" --night "$NIGHT"
args=()
for t in $TARGETS; do args+=(--target "$t"); done
"$PREP" report --history "$HISTORY" --night "$NIGHT" --config "$CONFIG" \
    --out "$REPORTS/$NIGHT" "${args[@]}"
echo "prep nightly $NIGHT: $REPORTS/$NIGHT/index.html"
