#!/usr/bin/env bash
# Benchmark: push and pull of a 1 GiB multi-layer image of fresh random data
# with skopeo, to `ingot serve` and to Debian's distribution registry
# (docker-registry 2.8) on the same machine, in one run; then 32 concurrent
# pulls of every blob (curl) from each. Fresh registry storage and a cleared
# skopeo blob-info cache before every push; fresh data for every run.
# A third row is the ceiling a pull can reach on this machine: nginx serving
# the same manifest and blobs as static files (sendfile, no registry logic
# at all). The CPU seconds each side spends are reported too: on 2 cores,
# skopeo's own share decides how far any server can go.
# Usage: bench/registry.sh            (SIZE_MB=1024 LAYERS=8 RUNS=3 by default)
#        BENCH_DIR=/dev/shm bench/registry.sh   (data and storage on a tmpfs;
#        /var/tmp by default)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
LAYERS=${LAYERS:-8}
RUNS=${RUNS:-3}
. bench/lib.sh
need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v curl >/dev/null || need+=(curl)
command -v nginx >/dev/null || need+=(nginx-light)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin ingot
ingot=$PWD/target/release/ingot
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ingot-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cache=/var/lib/containers/cache/blob-info-cache-v1.boltdb


# An OCI layout of LAYERS layers of fresh random bytes, each already a gzip
# stream (stored blocks: valid, fast to make), so that skopeo copies the
# blobs as they are instead of compressing them on the way (it does compress
# uncompressed layers, and then measures its own gzip, not the registry).
make_image() {
    python3 - "$1" "$SIZE_MB" "$LAYERS" <<'EOF'
import hashlib, json, os, sys, zlib
out, size_mb, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def gz(data):
    c = zlib.compressobj(0, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()
os.makedirs(f"{out}/blobs/sha256", exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return {"digest": f"sha256:{d}", "size": len(data)}
layers = []
for _ in range(n):
    layers.append(dict(put(gz(os.urandom(size_mb * 1024 * 1024 // n))), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": dict(put(config), mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers}).encode()
md = dict(put(m), mediaType="application/vnd.oci.image.manifest.v1+json", annotations={"org.opencontainers.image.ref.name": "bench"})
json.dump({"schemaVersion": 2, "manifests": [md]}, open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
EOF
}

# Starts SERVER on PORT with fresh storage; its pid goes to $server_pid.
start() {
    if [ "$1" = ingot ]; then
        rm -rf "$work/ingot-root"
        "$ingot" --root "$work/ingot-root" serve --addr "127.0.0.1:$2" >/dev/null 2>&1 &
    elif [ "$1" = nginx ]; then
        # The image's files laid out as the registry API's paths.
        rm -rf "$work/www"
        local api=$work/www/v2/bench/img
        mkdir -p "$api/manifests" "$api/blobs"
        local m
        m=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['manifests'][0]['digest'].split(':')[1])" "$work/img/index.json")
        cp "$work/img/blobs/sha256/$m" "$api/manifests/1"
        for f in "$work"/img/blobs/sha256/*; do ln "$f" "$api/blobs/sha256:${f##*/}"; done
        cat >"$work/nginx.conf" <<CONF
worker_processes 2;
# The scratch directory is private to root (mktemp).
user root;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:$2;
        root $work/www;
        location = /v2/ { default_type application/json; return 200 '{}'; }
        location /v2/bench/img/manifests/ { default_type application/vnd.oci.image.manifest.v1+json; }
        location /v2/bench/img/blobs/ { default_type application/octet-stream; }
    }
}
CONF
        nginx -c "$work/nginx.conf" &
    else
        rm -rf "$work/dist"
        mkdir -p "$work/dist"
        printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
            "$work/dist/data" "$2" > "$work/dist/config.yml"
        docker-registry serve "$work/dist/config.yml" >/dev/null 2>&1 &
    fi
    server_pid=$!
    pids+=("$server_pid")
}

wait_port() { for _ in $(seq 100); do curl -s "http://127.0.0.1:$1/v2/" >/dev/null && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }

now() { date +%s.%N; }
# CPU seconds (user + system) process PID and its children have used so far.
cpu() {
    local t=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        # A worker may be gone between pgrep and here.
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    python3 -c "print($t / $(getconf CLK_TCK))"
}
# skopeo ARGS...: skopeo copy, its CPU seconds into $work/skopeo.cpu.
skopeo_copy() { /usr/bin/time -f '%U %S' -o "$work/skopeo.cpu" skopeo copy -q "$@"; }
skopeo_cpu() { python3 -c "import sys; u, s = sys.argv[1:3]; print(f'{float(u) + float(s):.2f}')" $(tail -1 "$work/skopeo.cpu"); }
minus() { python3 -c "print(f'{$1 - $2:.2f}')"; }
mbps() { python3 -c "print(f'{$SIZE_MB / ($2 - $1):.0f}')"; }

declare -A push pull conc push_cpu pull_cpu
servers=(ingot distribution nginx)
for run in $(seq "$RUNS"); do
    rm -rf "$work/img"
    make_image "$work/img"
    for server in "${servers[@]}"; do
        port=$(free_port)
        start "$server" "$port"
        wait_port "$port"
        if [ "$server" != nginx ]; then
            rm -f "$cache"
            c0=$(cpu "$server_pid")
            t0=$(now)
            skopeo_copy --dest-tls-verify=false "oci:$work/img:bench" "docker://127.0.0.1:$port/bench/img:1"
            t1=$(now)
            push[$server]+="$(mbps "$t0" "$t1") "
            push_cpu[$server]+="$(minus "$(cpu "$server_pid")" "$c0")/$(skopeo_cpu) "
        fi
        rm -rf "$work/pulled"
        rm -f "$cache"
        c1=$(cpu "$server_pid")
        t1=$(now)
        skopeo_copy --src-tls-verify=false "docker://127.0.0.1:$port/bench/img:1" "oci:$work/pulled:x"
        t2=$(now)
        pull_cpu[$server]+="$(minus "$(cpu "$server_pid")" "$c1")/$(skopeo_cpu) "
        # 32 concurrent clients, each fetching every layer blob once.
        digests=$(curl -s -H "accept: application/vnd.oci.image.manifest.v1+json" "http://127.0.0.1:$port/v2/bench/img/manifests/1" \
            | python3 -c "import json, sys; print(' '.join(l['digest'] for l in json.load(sys.stdin)['layers']))")
        sizes=$(curl -s -H "accept: application/vnd.oci.image.manifest.v1+json" "http://127.0.0.1:$port/v2/bench/img/manifests/1" \
            | python3 -c "import json, sys; print(sum(l['size'] for l in json.load(sys.stdin)['layers']))")
        [ -n "$digests" ] || { echo "no layer digests" >&2; exit 1; }
        t3=$(now)
        clients=()
        for c in $(seq 32); do
            (for d in $digests; do curl -sf -o /dev/null -w '%{size_download}\n' "http://127.0.0.1:$port/v2/bench/img/blobs/$d"; done > "$work/got.$c") &
            clients+=($!)
        done
        wait "${clients[@]}"
        t4=$(now)
        got=$(cat "$work"/got.* | python3 -c "import sys; print(sum(int(x) for x in sys.stdin if x.strip()))")
        want=$((32 * sizes))
        [ "$got" -eq "$want" ] || { echo "$server: concurrent pulls got $got bytes, expected $want" >&2; exit 1; }
        rm -f "$work"/got.*
        pull[$server]+="$(mbps "$t1" "$t2") "
        conc[$server]+="$(python3 -c "print(f'{$got / 1048576 / ($t4 - $t3):.0f}')") "
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    done
done
mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(f'{sum(v)/len(v):.0f}')" $1; }
echo "| server | push MB/s (skopeo) | pull MB/s (skopeo) | 32 concurrent pulls, MB/s in all |"
echo "|---|---|---|---|"
for server in "${servers[@]}"; do
    if [ "$server" = nginx ]; then
        p="- (static files: no uploads)"
        name="nginx, the same blobs as static files (the ceiling)"
    else
        p="$(mean "${push[$server]}") (runs: ${push[$server]})"
        name=$server
    fi
    echo "| $name | $p | $(mean "${pull[$server]}") (runs: ${pull[$server]}) | $(mean "${conc[$server]}") (runs: ${conc[$server]}) |"
done
echo
echo "CPU seconds, server/skopeo, per run:"
echo
for server in "${servers[@]}"; do
    echo "- $server: push ${push_cpu[$server]:--}; pull ${pull_cpu[$server]}"
done
