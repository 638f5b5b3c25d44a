#!/usr/bin/env bash
# Benchmark: ship the example stack (examples/hello: 3 replicas behind the
# mesh, a config) from one host's root to another's through a registry, as
# a signed bundle: `ingot stack push` on root A (bundle, sign, push the
# image, its SBOM and signature, the bundle), then `ingot deploy
# REGISTRY/REPO@DIGEST` on root B (a fresh store under a daemon whose
# policy trusts the key) until every replica is healthy. Beside it Docker
# (the engine on this machine) ships the same image through the same kind
# of registry: `docker push`, then, with the image removed from its store,
# `docker pull` and three `docker run -d` with the image's HEALTHCHECK until
# all three are healthy. Each run gets a fresh registry (ingot serve) so
# no blob is there already. Median and range of RUNS runs (default 5).
# Needs root and Docker. Usage: bench/bundle.sh
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
. bench/lib.sh
bench_setup busybox=busybox-static
cleanup() {
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    [ -n "${reg:-}" ] && kill "$reg" 2>/dev/null && wait "$reg" 2>/dev/null || true
    docker rm -f $(docker ps -aq --filter label=ingot-bench=bundle) >/dev/null 2>&1 || true
    docker images --format '{{.Repository}}:{{.Tag}}' | grep '/peer/hello' | xargs -r docker rmi -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }

examples/rootfs/build.sh "$work/base.tar" >/dev/null
$I import -q "$work/base.tar" example/base:latest >/dev/null
$I build -q -t example/hello:latest examples/hello >/dev/null
$I key generate --out "$work/k" >/dev/null
$I sign -q example/hello:latest --key "$work/k.key" >/dev/null
port=$(free_port)
export HELLO_PORT=$port
printf 'trusted_keys = ["%s"]\n' "$work/k.pub" >"$work/policy.toml"
# Docker's copy of the same image.
$I save example/hello:latest -o "$work/hello.tar"
docker load -q -i "$work/hello.tar" >/dev/null

start_registry() {
    rport=$(free_port)
    rm -rf "$work/reg"
    $ingot --root "$work/reg" serve --addr "127.0.0.1:$rport" 2>/dev/null &
    reg=$!
    for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $rport))" 2>/dev/null && break; sleep 0.05; done
}
stop_registry() { kill "$reg"; wait "$reg" 2>/dev/null || true; reg=; }

ingot_push=() ingot_deploy=() ingot_total=()
docker_push=() docker_deploy=() docker_total=()
for i in $(seq "$RUNS"); do
    # ingot: A pushes, B (fresh root, daemon up) deploys by digest.
    start_registry
    B="$work/b$i"
    $ingot --root "$B" daemon --policy "$work/policy.toml" >"$work/daemon-$i.log" 2>&1 &
    daemon=$!
    for _ in $(seq 100); do $ingot --root "$B" services >/dev/null 2>&1 && break; sleep 0.05; done
    t0=$(now)
    digest=$($I -q stack push -f examples/hello/stack.yml --name hello "127.0.0.1:$rport/bench/hello:1" --key "$work/k.key")
    t1=$(now)
    $ingot --root "$B" deploy -q "127.0.0.1:$rport/bench/hello@$digest"
    t2=$(now)
    busybox wget -q -O /dev/null "http://127.0.0.1:$port/"
    ingot_push+=("$(ms "$t0" "$t1")") ingot_deploy+=("$(ms "$t1" "$t2")") ingot_total+=("$(ms "$t0" "$t2")")
    $ingot --root "$B" stack rm -q hello
    kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=
    stop_registry

    # Docker: push, forget the image, pull and run three replicas until healthy.
    start_registry
    ref="127.0.0.1:$rport/peer/hello:1"
    docker tag example/hello:latest "$ref"
    t0=$(now)
    docker push -q "$ref" >/dev/null
    t1=$(now)
    docker rmi -f "$ref" example/hello:latest >/dev/null
    t1b=$(now)
    docker pull -q "$ref" >/dev/null
    ids=()
    for k in 1 2 3; do
        ids+=("$(docker run -d --read-only --label ingot-bench=bundle -p "127.0.0.1::8080" "$ref")")
    done
    until [ "$(docker inspect -f '{{.State.Health.Status}}' "${ids[@]}" | sort -u)" = healthy ]; do sleep 0.05; done
    t2=$(now)
    docker_push+=("$(ms "$t0" "$t1")") docker_deploy+=("$(ms "$t1b" "$t2")")
    docker_total+=("$(python3 -c "print(round(($t1 - $t0 + $t2 - $t1b) * 1000))")")
    docker rm -f "${ids[@]}" >/dev/null
    docker tag "$ref" example/hello:latest
    docker rmi "$ref" >/dev/null
    stop_registry
done

stat() { printf '%s\n' "$@" | sort -n | python3 -c 'import sys; v=[int(x) for x in sys.stdin]; print(f"{v[len(v)//2]} ({v[0]}-{v[-1]})")'; }
echo "| example stack (3 replicas), $RUNS runs, ms: median (min-max) | push | deploy until healthy | total |"
echo "|---|---|---|---|"
echo "| ingot: \`stack push\` (bundle, sign, image + SBOM + signature + bundle) on root A; \`deploy REG/REPO@DIGEST\` on a fresh root B (pull, policy: bundle and image signatures, 3 replicas healthy behind the mesh) | $(stat "${ingot_push[@]}") | $(stat "${ingot_deploy[@]}") | $(stat "${ingot_total[@]}") |"
echo "| Docker $(docker version --format '{{.Server.Version}}'): \`docker push\`; image removed; \`docker pull\` + 3 x \`docker run -d\` until healthy (no signature, no policy, no mesh) | $(stat "${docker_push[@]}") | $(stat "${docker_deploy[@]}") | $(stat "${docker_total[@]}") |"
