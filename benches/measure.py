#!/usr/bin/env python3
"""Run a command, report wall time, CPU time (with descendants) and the peak of the summed
RSS of its process tree.

Usage: measure.py LABEL -- CMD ARGS...   (prints one JSON line)
Sampling every 20 ms from /proc; children spawned by the command are included.
"""
import json
import os
import subprocess
import sys
import time


def tree_rss_kib(root):
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    total, stack = 0, [root]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def main():
    label = sys.argv[1]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    rusage = None
    while rusage is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            rusage = ru
            proc.returncode = os.waitstatus_to_exitcode(status)
        else:
            time.sleep(0.02)
    wall = time.monotonic() - t0
    # CPU time of the command and every descendant it waited for: robust to other load.
    cpu = rusage.ru_utime + rusage.ru_stime
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        print(err, file=sys.stderr)
    print(json.dumps({"label": label, "seconds": round(wall, 3), "peak_rss_mib": round(peak / 1024, 1),
                      "cpu_seconds": round(cpu, 3),
                      "rc": proc.returncode}))


if __name__ == "__main__":
    main()
