#!/usr/bin/env bash
# Benchmark (issue 14): the routing mesh as a data plane. Two replicas of
# nginx (Debian's nginx-light in an ingot image made by
# scripts/debian-rootfs) serve a static page; wrk -t1 -c32 runs DURATION
# seconds through ingot's mesh (the stack's published port) and through
# nginx on the host as a reverse proxy with upstream keep-alive to the same
# two replica addresses, ROUNDS rounds alternating the two; after each run
# the host's TIME_WAIT sockets are counted; at the end the daemon's peak
# RSS. Then one SUSTAINED-second run of each, and a run through the mesh
# while hostile clients hold it: a full-speed 2 GiB download, two slow
# readers of it (1 MB/s), and 16 clients uploading 512 bytes every 250 ms;
# the daemon's RSS is sampled meanwhile. Needs root.
# Usage: bench/mesh.sh   (DURATION=8 ROUNDS=3 SUSTAINED=60)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
SUSTAINED=${SUSTAINED:-60}
. bench/lib.sh
bench_setup wrk=wrk nginx=nginx-light debootstrap=debootstrap curl=curl
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
    server {
        listen 8080;
        root /srv/www;
        # The hostile-client runs: a 2 GiB response (a sparse file on the
        # replica's tmpfs) and an upload endpoint that answers at once and
        # discards the body as it trickles in.
        location = /big { alias /tmp/big; }
        location = /upload { return 204; }
    }
}
CONF
head -c 612 /dev/zero | tr '\0' 'x' >"$work/ctx/index.html"
cat >"$work/ctx/Dockerfile" <<'DF'
FROM bench/nginx-rootfs:latest
COPY nginx.conf /etc/nginx/bench.conf
COPY index.html /srv/www/index.html
EXPOSE 8080
CMD ["sh", "-c", "truncate -s 2G /tmp/big && exec nginx -c /etc/nginx/bench.conf"]
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

run() { # name port [seconds]
    local out rps p50 p99 errs tw
    out=$(wrk -t1 -c32 -d"${3:-$DURATION}s" --latency "http://127.0.0.1:$2/")
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
run "ingot mesh, sustained ${SUSTAINED}s" "$mesh_port" "$SUSTAINED"
run "nginx reverse proxy (keepalive 32), sustained ${SUSTAINED}s" "$proxy_port" "$SUSTAINED"
rss_before=$(awk '/VmRSS/ {print $2}' /proc/$daemon/status)

# Hostile clients, each bounded in time, alongside a wrk run on the mesh.
hostile=$(( DURATION + 2 ))
curl -s -o /dev/null --max-time 60 -w '%{size_download} %{time_total}\n' \
    "http://127.0.0.1:$mesh_port/big" >"$work/big.out" &
big=$!
slow=()
for i in 1 2; do
    # Stopped by --max-time (curl exits 28 then): the point is what it read.
    (curl -s -o /dev/null --limit-rate 1M --max-time "$hostile" -w '%{size_download}\n' \
        "http://127.0.0.1:$mesh_port/big" >"$work/slow$i.out" || true) &
    slow+=($!)
done
python3 - "$mesh_port" "$hostile" >"$work/uploads.out" <<'PY' &
import socket, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
sent, answered = [0] * 16, [0] * 16
def upload(i):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: 1048576\r\n\r\n")
    s.settimeout(0.01)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s.sendall(b"u" * 512)
            sent[i] += 512
        except OSError:
            break
        try:
            if s.recv(4096):
                answered[i] = 1
        except socket.timeout:
            pass
        except OSError:
            break
        time.sleep(0.25)
    s.close()
threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sum(sent), sum(answered))
PY
uploads=$!
( while kill -0 "$uploads" 2>/dev/null; do awk '/VmRSS/ {print $2}' /proc/$daemon/status; sleep 0.2; done ) >"$work/rss.samples" &
sampler=$!
sleep 1
run "ingot mesh while hostile clients hold it" "$mesh_port"
wait "$big" "$uploads" "$sampler" "${slow[@]}" || true
peak=$(sort -n "$work/rss.samples" | tail -1)
echo
read -r big_bytes big_time <"$work/big.out"
echo "2 GiB download through the mesh (alongside): $big_bytes bytes in ${big_time} s"
echo "slow readers (1 MB/s, ${hostile} s each): $(cat "$work"/slow*.out | tr '\n' ' ')bytes"
read -r up_bytes up_answered <"$work/uploads.out"
echo "slow uploads: 16 clients sent $up_bytes bytes in all, $up_answered answered"
echo "daemon RSS: ${rss_before} kB before the hostile run, at most ${peak} kB during it"
echo "daemon peak RSS over the whole benchmark: $(awk '/VmHWM/ {print $2, $3}' /proc/$daemon/status)"
