#!/usr/bin/env bash
# Benchmark: a rolling update and an automatic rollback of 3 replicas of
# examples/hello under constant load from wrk (failed requests, time to
# converge, time from the failed health check to the old version serving all
# traffic), then the mesh's throughput and latency next to nginx (Debian)
# proxying the same three replicas, and a replica reached directly.
# Needs root. Usage: bench/deploy.sh   (SECS=10 per throughput run)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
. bench/lib.sh
bench_setup wrk=wrk nginx=nginx-light busybox=busybox-static
cleanup() {
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    $I stack rm bench >/dev/null 2>&1 || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
examples/rootfs/build.sh "$work/base.tar" >/dev/null
$I import -q "$work/base.tar" example/base:latest >/dev/null
cp -r examples/hello "$work/v1"
$I build -q --no-sbom -t hello:1 "$work/v1" >/dev/null
cp -r examples/hello "$work/v2"
sed -i 's/hello from ingot/hello v2/' "$work/v2/site/index.html"
$I build -q --no-sbom -t hello:2 "$work/v2" >/dev/null
mkdir -p "$work/flaky"
printf 'FROM hello:2\nUSER root\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD test ! -e /tmp/broken && wget -q -O /dev/null http://127.0.0.1:8080/\nCMD ["sh", "-c", "(sleep 1.5; touch /tmp/broken) & exec httpd -f -p 8080 -h /srv/www"]\n' >"$work/flaky/Dockerfile"
$I build -q --no-sbom -t hello:flaky "$work/flaky" >/dev/null
port=$(free_port)
stack() { # image monitor
    sed -e "s|example/hello:latest|$1|" -e "s|monitor: 1s|monitor: $2|" examples/hello/stack.yml >"$work/stack.yml"
    cp examples/hello/greeting.txt "$work/"
}
$I daemon >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do $I services >/dev/null 2>&1 && break; sleep 0.1; done
stack hello:1 1s
HELLO_PORT=$port $I deploy -q -f "$work/stack.yml" --name bench

# wrk summary: requests, failures (socket errors + non-2xx), req/s, p50, p99
wrk_run() { # secs url
    wrk -t2 -c8 -d"$1"s --latency "$2" >"$work/wrk.txt" 2>&1 || true
    python3 - "$work/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
req = int(re.search(r"(\d+) requests in", t).group(1))
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", t) or [0, 0])[1])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def lat(p):
    m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, t)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
print(f"{req} {errs + non2xx} {rps:.0f} {lat(50):.2f} {lat(99):.2f}")
PY
}

# 1. Rolling update v1 -> v2 under load.
wrk -t2 -c8 -d12s "http://127.0.0.1:$port/" >"$work/wrk-update.txt" 2>&1 &
load=$!
sleep 1
stack hello:2 1s
t0=$(date +%s.%N)
HELLO_PORT=$port $I deploy -q -f "$work/stack.yml" --name bench
t1=$(date +%s.%N)
wait $load || true
upd=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
upd_req=$(grep -oE '[0-9]+ requests in' "$work/wrk-update.txt" | cut -d' ' -f1)
upd_fail=$(python3 -c "import re; t=open('$work/wrk-update.txt').read(); print(sum(int(x) for x in re.findall(r'(?:connect|read|write|timeout) (\d+)', t)) + int((re.search(r'Non-2xx or 3xx responses: (\d+)', t) or [0,0])[1]))")

# 2. A version that fails its health check after joining: automatic rollback under load.
wrk -t2 -c8 -d10s "http://127.0.0.1:$port/" >"$work/wrk-rollback.txt" 2>&1 &
load=$!
sleep 1
stack hello:flaky 3s
HELLO_PORT=$port $I deploy --format json -f "$work/stack.yml" --name bench >"$work/rollback.json" || true
wait $load || true
rb_msg=$(python3 -c "import json; print(json.load(open('$work/rollback.json'))['message'])")
rb_ms=$(echo "$rb_msg" | grep -oE '[0-9.]+ ms after' | cut -d' ' -f1)
rb_req=$(grep -oE '[0-9]+ requests in' "$work/wrk-rollback.txt" | cut -d' ' -f1)
rb_fail=$(python3 -c "import re; t=open('$work/wrk-rollback.txt').read(); print(sum(int(x) for x in re.findall(r'(?:connect|read|write|timeout) (\d+)', t)) + int((re.search(r'Non-2xx or 3xx responses: (\d+)', t) or [0,0])[1]))")

# 3. Throughput: the mesh, nginx over the same replicas, one replica directly.
addrs=$($I service ps bench_web --format json | python3 -c 'import json,sys; print(" ".join(r["address"] for r in json.load(sys.stdin)))')
nport=$(free_port)
{
    echo "worker_processes 2; pid $work/nginx.pid; error_log $work/nginx.err;"
    echo "events { worker_connections 1024; }"
    echo "http { access_log off; upstream r { keepalive 32;"
    for a in $addrs; do echo "  server $a:8080;"; done
    echo "} server { listen 127.0.0.1:$nport; location / { proxy_pass http://r; proxy_http_version 1.1; proxy_set_header Connection \"\"; } } }"
} >"$work/nginx.conf"
nginx -c "$work/nginx.conf"
sleep 0.5
read -r m_req m_fail m_rps m_p50 m_p99 <<<"$(wrk_run "$SECS" "http://127.0.0.1:$port/")"
read -r n_req n_fail n_rps n_p50 n_p99 <<<"$(wrk_run "$SECS" "http://127.0.0.1:$nport/")"
first=$(echo "$addrs" | cut -d' ' -f1)
read -r d_req d_fail d_rps d_p50 d_p99 <<<"$(wrk_run "$SECS" "http://$first:8080/")"

echo "| run | requests | failed | result |"
echo "|---|---|---|---|"
echo "| rolling update v1 -> v2, 3 replicas, start-first, monitor 1 s, under wrk -c8 | $upd_req | $upd_fail | converged in $upd s |"
echo "| automatic rollback (new replica fails its check 1.5 s after joining), under wrk -c8 | $rb_req | $rb_fail | old version serving all traffic $rb_ms ms after the failed check |"
echo
echo "| target (wrk -t2 -c8 -d${SECS}s) | req/s | p50 ms | p99 ms | failed |"
echo "|---|---|---|---|---|"
echo "| ingot mesh -> 3 replicas | $m_rps | $m_p50 | $m_p99 | $m_fail |"
echo "| nginx (keepalive upstream) -> same 3 replicas | $n_rps | $n_p50 | $n_p99 | $n_fail |"
echo "| one replica directly (busybox httpd) | $d_rps | $d_p50 | $d_p99 | $d_fail |"
