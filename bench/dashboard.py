#!/usr/bin/env python3
"""The dashboard benchmark's measuring half (bench/dashboard.sh sets up the
daemon, 50 services and the ledger). Server side with urllib; the browser
side speaks W3C WebDriver to Debian's chromedriver over plain HTTP.
Usage: dashboard.py WEB_PORT RUNS LIVE ENTRIES INGOT_CMD"""
import json
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime

port, runs, live, entries, ingot = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
base = f"http://127.0.0.1:{port}"


def timed_get(path):
    t = time.perf_counter()
    with urllib.request.urlopen(base + path, timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, len(body)


rows = []
for path in ["/", "/fragments/services", "/fragments/ledger", "/fragments/dora"]:
    timed_get(path)  # warm-up
    ms = [timed_get(path) for _ in range(runs)]
    rows.append((f"GET {path} (server)", statistics.median(m for m, _ in ms), max(m for m, _ in ms), ms[0][1]))


def millis(rfc3339):
    t = rfc3339.rstrip("Z")
    if "." in t:
        whole, frac = t.split(".")
        t = whole + "." + (frac + "000000")[:6]
    return datetime.fromisoformat(t + "+00:00").timestamp() * 1000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wd(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["value"]


dport = free_port()
profile = tempfile.mkdtemp(prefix="ingot-bench-chromium.")
driver = subprocess.Popen(["chromedriver", f"--port={dport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wdu = f"http://127.0.0.1:{dport}"
    for _ in range(100):
        try:
            wd("GET", wdu + "/status")
            break
        except OSError:
            time.sleep(0.1)
    caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1400,1100", f"--user-data-dir={profile}"]}}}}
    sid = wd("POST", wdu + "/session", caps)["sessionId"]
    s = f"{wdu}/session/{sid}"

    def js(script):
        return wd("POST", s + "/execute/sync", {"script": script, "args": []})

    loads = []
    for i in range(5):
        wd("POST", s + "/url", {"url": base + "/"})
        t = js("var n = performance.getEntriesByType('navigation')[0]; return [n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd];")
        if i > 0:  # the first warms the browser
            loads.append(t)
    rows.append(("first page load in Chromium: response end", statistics.median(l[0] for l in loads), max(l[0] for l in loads), ""))
    rows.append(("first page load in Chromium: load event", statistics.median(l[2] for l in loads), max(l[2] for l in loads), ""))

    # Live updates: the daemon's seal event (its own timestamp) to the new
    # entry in the page's DOM (the browser's clock: the same host's).
    events = []

    def follow():
        with urllib.request.urlopen(base + "/events", timeout=600) as r:
            kind = None
            for line in r:
                line = line.decode().strip()
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "ledger":
                    e = json.loads(line[5:])
                    if e["action"] == "seal":
                        events.append(e)

    threading.Thread(target=follow, daemon=True).start()
    js("""window.seen = {}; new MutationObserver(function () {
            var e = document.querySelector('#ledger .entry');
            if (e && e.dataset.outcome !== 'pending' && !window.seen[e.dataset.seq]) window.seen[e.dataset.seq] = Date.now();
          }).observe(document.getElementById('ledger'), {childList: true, subtree: true}); return null;""")
    time.sleep(1)
    lat = []
    for i in range(live):
        before = len(events)
        subprocess.run(shlex.split(ingot) + ["service", "scale", f"bench_s{i % 50:02d}=1"], check=True,
                       stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while len(events) == before and time.time() < deadline:
            time.sleep(0.01)
        e = events[-1]
        sealed = millis(e["time"])
        while time.time() < deadline:
            shown = js(f"return window.seen['{e['subject']}'] || null")
            if shown:
                lat.append(shown - sealed)
                break
            time.sleep(0.01)
        else:
            raise SystemExit(f"entry {e['subject']} never showed on the page")
    rows.append(("live update: seal event to the entry in the DOM", statistics.median(lat), max(lat), ""))
    wd("DELETE", s)
finally:
    driver.kill()
    driver.wait()
    subprocess.run(["pkill", "-f", profile])

print(f"50 services, {entries} ledger entries; {runs} server-side runs after a warm-up, 4 page loads, {live} live updates\n")
print("| what | median ms | max ms | bytes |")
print("|---|---|---|---|")
for name, med, mx, size in rows:
    print(f"| {name} | {med:.1f} | {mx:.1f} | {size} |")
