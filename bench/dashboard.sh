#!/usr/bin/env bash
# Benchmark: the web dashboard with 50 services and 1,000 ledger entries:
# the overview's server time and size, each panel's, the first page load in
# headless Chromium (navigation timing), and the live-update latency (from
# the daemon's ledger seal event to the new entry in the page's DOM, without
# a reload). No peer runs here: Docker has no dashboard of its own, and
# Portainer or Swarm's visualizer would need images from a registry this
# machine cannot reach.
# Needs root. Usage: bench/dashboard.sh   (RUNS=20 server-side, LIVE=10 live updates)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
LIVE=${LIVE:-10}
. bench/lib.sh
bench_setup busybox=busybox-static chromium=chromium chromedriver=chromium-driver
cleanup() {
    $I stack rm bench >/dev/null 2>&1 || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
examples/rootfs/build.sh "$work/base.tar" >/dev/null
$I import -q "$work/base.tar" example/base:latest >/dev/null
cp -r examples/hello "$work/v1"
$I build -q -t hello:1 "$work/v1" >/dev/null
{
    echo "services:"
    for i in $(seq -w 0 49); do
        printf '  s%s:\n    image: hello:1\n    stop_grace_period: 1s\n    deploy: {replicas: 1}\n' "$i"
    done
} >"$work/stack.yml"
web=$(free_port)
$I daemon --web "127.0.0.1:$web" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do $I services >/dev/null 2>&1 && break; sleep 0.1; done
$I deploy -q -f "$work/stack.yml" --name bench --reason "50 services" >/dev/null
# 999 more entries: redeploys (each a deployment for DORA) and scales.
for i in $(seq 1 499); do
    $I deploy -q -f "$work/stack.yml" --name bench --reason "redeploy $i" >/dev/null
done
for i in $(seq 1 500); do
    $I service scale "bench_s$(printf %02d $((i % 50)))=1" >/dev/null 2>&1
done
entries=$($I ledger --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
python3 bench/dashboard.py "$web" "$RUNS" "$LIVE" "$entries" "$ingot --root $R"
