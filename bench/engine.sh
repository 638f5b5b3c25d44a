#!/usr/bin/env bash
# Benchmark: the deploy engine managing 50 services x 2 replicas of
# examples/hello (busybox httpd with its HEALTHCHECK every 2 s): time to
# converge from empty, host CPU at rest (the reconcile tick and every
# replica's health check), and `ingot daemon --replace` under wrk load on
# one published port (failed requests). The peer, side by side: Docker
# Engine with docker-compose, the same 100 containers (FROM scratch,
# busybox-static, the same page and health check), converge time and host
# CPU at rest.
# Needs root. Usage: bench/engine.sh   (REST=20 seconds of CPU sampling)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REST=${REST:-20}
N=50
. bench/lib.sh
bench_setup wrk=wrk docker-compose=docker-compose busybox=busybox-static
cleanup() {
    (cd "$work/docker" 2>/dev/null && docker-compose -p ingotbench down -t 1 >/dev/null 2>&1) || true
    docker rmi ingot-bench-hello:1 >/dev/null 2>&1 || true
    $I stack rm bench >/dev/null 2>&1 || true
    for p in ${daemons:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
# Host CPU busy over $1 seconds, in % of one core.
cpu_busy() {
    python3 - "$1" <<'PY'
import sys, time, os
def snap():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    return sum(v), v[3] + v[4]
t0, i0 = snap(); time.sleep(float(sys.argv[1])); t1, i1 = snap()
cores = os.cpu_count()
print(f"{100 * cores * (1 - (i1 - i0) / (t1 - t0)):.0f}")
PY
}
idle=$(cpu_busy 5)

examples/rootfs/build.sh "$work/base.tar" >/dev/null
$I import -q "$work/base.tar" example/base:latest >/dev/null
$I build -q --no-sbom -t hello:1 examples/hello >/dev/null
port=$(free_port)
{
    echo "services:"
    for i in $(seq -w 1 $N); do
        echo "  s$i:"
        echo "    image: hello:1"
        echo "    stop_grace_period: 1s"
        [ "$i" = 01 ] && echo "    ports: [\"127.0.0.1:$port:8080\"]"
        echo "    deploy: {replicas: 2}"
    done
} >"$work/stack.yml"

$I daemon >"$work/daemon.log" 2>&1 &
daemons=$!
for _ in $(seq 100); do $I services >/dev/null 2>&1 && break; sleep 0.1; done
t0=$(now)
$I deploy -q -f "$work/stack.yml" --name bench
t1=$(now)
ingot_converge=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
healthy=$($I services --format json | python3 -c 'import json,sys; print(sum(s["healthy"] for s in json.load(sys.stdin)))')
[ "$healthy" = $((N * 2)) ] || { echo "only $healthy replicas healthy" >&2; exit 1; }
ingot_cpu=$(cpu_busy "$REST")
echo "ingot: converged in $ingot_converge s; CPU at rest $ingot_cpu% (idle $idle%)" >&2

# --replace under load on the published port.
wrk -t2 -c8 -d10s "http://127.0.0.1:$port/" >"$work/wrk.txt" 2>&1 &
load=$!
sleep 2
old=$daemons
$I daemon --replace >"$work/daemon2.log" 2>&1 &
daemons="$daemons $!"
wait $load || true
for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
kill -0 "$old" 2>/dev/null && { echo "the replaced daemon did not exit" >&2; exit 1; }
read -r reqs fails < <(python3 - "$work/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
req = int(re.search(r"(\d+) requests in", t).group(1))
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", t) or [0, 0])[1])
print(req, errs + non2xx)
PY
)
t0=$(now)
$I stack rm -q bench
t1=$(now)
ingot_rm=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
echo "ingot: --replace under load: $reqs requests, $fails failed; rm in $ingot_rm s" >&2

# The peer: docker-compose, the same 100 containers.
mkdir -p "$work/docker/ctx/bin" "$work/docker/ctx/srv"
cp /bin/busybox "$work/docker/ctx/bin/"
cp -r examples/hello/site "$work/docker/ctx/srv/www"
cat >"$work/docker/ctx/Dockerfile" <<'DF'
FROM scratch
COPY bin/ /bin/
COPY srv/ /srv/
HEALTHCHECK --interval=2s --timeout=1s --retries=3 CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/srv/www"]
DF
docker build -q -t ingot-bench-hello:1 "$work/docker/ctx" >/dev/null
{
    echo 'version: "2.4"'
    echo "services:"
    for i in $(seq -w 1 $N); do
        printf '  s%s:\n    image: ingot-bench-hello:1\n    scale: 2\n    stop_grace_period: 1s\n' "$i"
    done
} >"$work/docker/docker-compose.yml"
cd "$work/docker"
t0=$(now)
docker-compose -p ingotbench up -d >/dev/null 2>&1
# All healthy, or give up after LIMIT seconds and say how many were.
LIMIT=${LIMIT:-180}
while :; do
    ok=$(docker ps -q --filter label=com.docker.compose.project=ingotbench --filter health=healthy | wc -l)
    [ "$ok" -ge $((N * 2)) ] && break
    if python3 -c "import sys; sys.exit(0 if $(now) - $t0 > $LIMIT else 1)"; then
        break
    fi
    sleep 0.5
done
t1=$(now)
if [ "$ok" -ge $((N * 2)) ]; then
    docker_converge=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
else
    docker_converge="not converged: $ok/$((N * 2)) healthy after ${LIMIT} s (health checks time out)"
fi
docker_cpu=$(cpu_busy "$REST")
t0=$(now)
docker-compose -p ingotbench down -t 1 >/dev/null 2>&1
t1=$(now)
docker_rm=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
cd - >/dev/null

echo "| | ingot | Docker + docker-compose |"
echo "|---|---|---|"
echo "| converge from empty, $N services x 2 replicas, all healthy (s) | $ingot_converge | $docker_converge |"
echo "| host CPU at rest, % of one core (idle host: $idle) | $ingot_cpu | $docker_cpu |"
echo "| remove everything (s) | $ingot_rm | $docker_rm |"
echo "| \`daemon --replace\` under wrk load: requests / failed | $reqs / $fails | n/a |"
