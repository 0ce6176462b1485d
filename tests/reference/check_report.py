#!/usr/bin/env python3
"""Open a `prep report` page in headless Chromium, with the network off, and check it.

usage: check_report.py REPORT_DIR --artifacts DIR [--min-svg N] [--expect TEXT ...] [--chromium BIN]

- The file itself: no http(s) references, no <script>, no external url(...)/src/href.
- Chromium (--headless, every host mapped to NOTFOUND and a dead proxy, so any network
  request would fail and be logged): --dump-dom must contain the plots (count <svg> in the
  rendered DOM, at least --min-svg), the report sections and the sample images; the
  console log (--enable-logging=stderr --v=0) must have no CONSOLE lines (the page has no
  scripts, so any console message is an error: a failed load, a parse problem).
- A full-page screenshot is written to ARTIFACTS/report.png (kept by CI), the DOM to
  ARTIFACTS/report-dom.html and the browser log to ARTIFACTS/chromium.log.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys


def chromium_bin(given):
    if given:
        return given
    for b in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(b)
        if p:
            return p
    sys.exit("FAIL: no chromium on PATH (scripts/test installs Debian's `chromium`)")


def run(binary, args, page, profile):
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        "file://" + os.path.abspath(page),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report_dir")
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--min-svg", type=int, default=1)
    ap.add_argument("--chromium")
    ap.add_argument("--expect", action="append", default=[], help="text the rendered DOM must contain")
    a = ap.parse_args()
    page = os.path.join(a.report_dir, "index.html")
    html = open(page, encoding="utf-8").read()
    fails = []
    if re.search(r"https?:", html):
        fails.append("index.html contains an http(s) reference: " + re.search(r".{0,60}https?:.{0,60}", html).group(0))
    if "<script" in html.lower():
        fails.append("index.html contains a <script>")
    for m in re.finditer(r'(?:src|href)="([^"]*)"', html):
        if not m.group(1).startswith(("data:", "#")):
            fails.append(f"external reference {m.group(1)[:80]!r}")
    if re.search(r"url\((?!['\"]?data:)", html):
        fails.append("CSS url() to something other than data:")

    os.makedirs(a.artifacts, exist_ok=True)
    binary = chromium_bin(a.chromium)
    profile = os.path.join(a.artifacts, "chromium-profile")
    dom = run(binary, ["--dump-dom", "--virtual-time-budget=5000"], page, profile)
    shot_path = os.path.join(a.artifacts, "report.png")
    shot = run(binary, [f"--screenshot={os.path.abspath(shot_path)}", "--window-size=1400,5000", "--hide-scrollbars"], page, profile)
    shutil.rmtree(profile, ignore_errors=True)
    with open(os.path.join(a.artifacts, "report-dom.html"), "w", encoding="utf-8") as f:
        f.write(dom.stdout)
    log = dom.stderr + "\n" + shot.stderr
    with open(os.path.join(a.artifacts, "chromium.log"), "w", encoding="utf-8") as f:
        f.write(log)
    if dom.returncode != 0:
        fails.append(f"chromium --dump-dom exited {dom.returncode}")
    console = [l for l in log.splitlines() if "CONSOLE" in l]
    if console:
        fails.append("console messages:\n  " + "\n  ".join(console[:10]))
    net = [l for l in log.splitlines() if "ERR_NAME_NOT_RESOLVED" in l or "ERR_PROXY" in l]
    if net:
        fails.append("network requests were attempted:\n  " + "\n  ".join(net[:10]))
    n_svg = dom.stdout.count("<svg")
    if n_svg < a.min_svg:
        fails.append(f"rendered DOM has {n_svg} <svg> elements, expected at least {a.min_svg}")
    for section in ("Sample-complexity curves", "Power-law fits", "Trends over nights", "Sample grids", "Provenance"):
        if section not in dom.stdout:
            fails.append(f"rendered DOM lacks the section {section!r}")
    for text in a.expect:
        if text not in dom.stdout:
            fails.append(f"rendered DOM lacks {text!r}")
    n_img = dom.stdout.count('src="data:image/png;base64,')
    if shot.returncode != 0 or not os.path.exists(shot_path) or os.path.getsize(shot_path) < 10000:
        fails.append(f"no screenshot (exit {shot.returncode}): {shot.stderr[-500:]}")
    if fails:
        print("FAIL " + "\nFAIL ".join(fails))
        return 1
    print(f"report OK in {os.path.basename(binary)}: {n_svg} <svg> plots, {n_img} inline images, "
          f"no console errors, no network; screenshot {shot_path} ({os.path.getsize(shot_path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
