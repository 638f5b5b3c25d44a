#!/usr/bin/env bash
# Benchmark (issue 14): the routing mesh as a data plane. Two replicas of
# nginx (Debian's nginx-light in an ingot image made by
# scripts/debian-rootfs) serve a static page; wrk -t1 -c32 runs DURATION
# seconds through ingot's mesh (the stack's published port) and through
# nginx on the host as a reverse proxy with upstream keep-alive to the same
# two replica addresses, ROUNDS rounds alternating the two; after each run
# the host's TIME_WAIT sockets are counted; at the end the daemon's peak
# RSS. Needs root. Usage: bench/mesh.sh   (DURATION=8 ROUNDS=3)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
. bench/lib.sh
bench_setup wrk=wrk nginx=nginx-light debootstrap=debootstrap
cleanup() {
    [ -n "${proxy:-}" ] && kill "$proxy" 2>/dev/null
    $I stack rm bench >/dev/null 2>&1 || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

scripts/debian-rootfs "$work/nginx.tar" nginx-light
$I import -q "$work/nginx.tar" bench/nginx-rootfs:latest >/dev/null
mkdir -p "$work/ctx"
cat >"$work/ctx/nginx.conf" <<'CONF'
worker_processes auto;
pid /tmp/nginx.pid;
error_log stderr warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server { listen 8080; root /srv/www; }
}
CONF
head -c 612 /dev/zero | tr '\0' 'x' >"$work/ctx/index.html"
cat >"$work/ctx/Dockerfile" <<'DF'
FROM bench/nginx-rootfs:latest
COPY nginx.conf /etc/nginx/bench.conf
COPY index.html /srv/www/index.html
EXPOSE 8080
CMD ["nginx", "-c", "/etc/nginx/bench.conf"]
DF
$I build -q --no-sbom -t bench/nginx:1 "$work/ctx" >/dev/null
mesh_port=$(port)
cat >"$work/stack.yml" <<YML
services:
  web:
    image: bench/nginx:1
    stop_grace_period: 1s
    tmpfs: /tmp
    ports: ["127.0.0.1:$mesh_port:8080"]
    deploy: {replicas: 2}
YML
$I daemon >"$work/daemon.log" 2>&1 &
daemon=$!
until $I services >/dev/null 2>&1; do sleep 0.1; done
$I deploy -f "$work/stack.yml" --name bench >/dev/null
mapfile -t replicas < <($I service ps bench_web --format json | python3 -c 'import json,sys; [print(r["address"]) for r in json.load(sys.stdin)]')
proxy_port=$(port)
cat >"$work/proxy.conf" <<CONF
worker_processes auto;
pid $work/proxy.pid;
error_log $work/proxy.err warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    upstream replicas {
        server ${replicas[0]}:8080;
        server ${replicas[1]}:8080;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$proxy_port;
        location / {
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -c "$work/proxy.conf" -p "$work" &
proxy=$!
for _ in $(seq 50); do busybox wget -q -O /dev/null "http://127.0.0.1:$proxy_port/" 2>/dev/null && break; sleep 0.1; done

run() { # name port
    local out rps p50 p99 errs tw
    out=$(wrk -t1 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$2/")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {sub(/^ +/, ""); printf "%s; ", $0}' <<<"$out")
    tw=$(ss -Htan state time-wait | wc -l)
    echo "| $1 | $rps | $p50 | $p99 | ${errs:-none} | $tw |"
}
echo "| path ($ROUNDS rounds, wrk -t1 -c32 -d${DURATION}s) | req/s | p50 | p99 | errors | TIME_WAIT after |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
    run "ingot mesh, round $r" "$mesh_port"
    run "nginx reverse proxy (keepalive 32), round $r" "$proxy_port"
done
echo
echo "daemon peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$daemon/status)"
