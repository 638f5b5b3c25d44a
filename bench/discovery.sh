#!/usr/bin/env bash
# Benchmark: a service's requests per second and latency through its
# virtual address (the mesh on 10.232.x.y, endpoint_mode vip) versus one
# replica's own address, and, side by side, Docker: a container of the same
# image on docker0 by its address (what Compose's service names resolve to).
# wrk runs on the host (the VIP and bridge addresses are routed here), 2
# threads, 32 connections, DURATION seconds each (default 10).
# Needs root. Usage: bench/discovery.sh
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
. bench/lib.sh
bench_setup wrk=wrk busybox=busybox-static
cleanup() {
    docker rm -f ingot-bench-disc >/dev/null 2>&1 || true
    docker rmi ingot-bench-hello:1 >/dev/null 2>&1 || true
    $I stack rm disc >/dev/null 2>&1 || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

examples/rootfs/build.sh "$work/base.tar" >/dev/null
$I import -q "$work/base.tar" example/base:latest >/dev/null
$I build -q --no-sbom -t hello:1 examples/hello >/dev/null
$I daemon >"$work/daemon.log" 2>&1 &
daemon=$!
until $I services >/dev/null 2>&1; do sleep 0.1; done
cat >"$work/disc.yml" <<'YML'
services:
  api:
    image: hello:1
    stop_grace_period: 1s
    deploy:
      replicas: 2
  client:
    image: hello:1
    stop_grace_period: 1s
YML
$I deploy -q -f "$work/disc.yml" --name disc >/dev/null
client=$($I service ps disc_client --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')
vip=$($I exec "$client" /bin/busybox nslookup api | awk '/^Address:/ && $2 ~ /^10\.232\./ {print $2}' | head -1)
replica=$($I service ps disc_api --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
[ -n "$vip" ] && [ -n "$replica" ] || { echo "no VIP ($vip) or replica ($replica)" >&2; exit 1; }

run() { # name url
    local out
    out=$(wrk -t2 -c32 -d"${DURATION}s" --latency "$2")
    local rps p50 p99 errs
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out" | tr '\n' ' ')
    echo "| $1 | $rps | $p50 | $p99 | ${errs:-none} |"
}
echo "| target | requests/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
run "ingot: the service's virtual address $vip (mesh, 2 replicas)" "http://$vip:8080/"
run "ingot: one replica's address $replica (direct)" "http://$replica:8080/"
loaded=""
if docker info >/dev/null 2>&1 && $I save hello:1 -o "$work/hello.tar" 2>/dev/null; then
    loaded=$(docker load -i "$work/hello.tar" 2>/dev/null | sed -n 's/^Loaded image[^:]*: //p' | head -1)
fi
if [ -n "$loaded" ]; then
    docker tag "$loaded" ingot-bench-hello:1
    if docker run -d --name ingot-bench-disc ingot-bench-hello:1 >/dev/null 2>&1; then
        addr=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' ingot-bench-disc)
        sleep 1
        run "docker: a container's address $addr on docker0 (direct)" "http://$addr:8080/"
    else
        echo "docker: cannot run the image; skipped" >&2
    fi
else
    echo "docker: no engine or no image; skipped" >&2
fi
