#!/usr/bin/env bash
# Benchmark: import, save and load of a 1 GiB root filesystem with ingot, next
# to the practical limit (tar + sha256sum of the same data) and, where an
# engine answers, docker import / docker load of the same files.
# Usage: bench/image_io.sh            (SIZE_MB=1024 RUNS=3 by default)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
command -v hyperfine >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --quiet --bin ingot
ingot=$PWD/target/release/ingot
work=$(mktemp -d /var/tmp/ingot-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# 16 files of fresh random data (incompressible: the worst case for gzip),
# plus a small tree of ordinary files.
mkdir -p "$work/rootfs/data" "$work/rootfs/etc"
for i in $(seq 1 16); do head -c "$((SIZE_MB / 16))M" /dev/urandom > "$work/rootfs/data/f$i"; done
for i in $(seq 1 200); do echo "config $i" > "$work/rootfs/etc/c$i.conf"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
bytes=$(stat -c %s "$work/rootfs.tar")

# A saved archive to load, made once.
"$ingot" --root "$work/src" import -q --compression none "$work/rootfs.tar" bench:1 >/dev/null
"$ingot" --root "$work/src" save bench:1 -o "$work/saved.tar"
"$ingot" --root "$work/src" import -q "$work/rootfs.tar" benchgz:1 >/dev/null
"$ingot" --root "$work/src" save benchgz:1 -o "$work/saved-gz.tar"

cmds=(
  "tar + sha256sum (limit)|tar -C $work/rootfs -cf - . | sha256sum"
  "sha256sum of the tar|sha256sum $work/rootfs.tar"
  "ingot import (uncompressed layer)|$ingot --root $work/r import -q --compression none $work/rootfs.tar b:1"
  "ingot import (gzip layer)|$ingot --root $work/r import -q $work/rootfs.tar b:1"
  "ingot save (uncompressed layer)|$ingot --root $work/src save bench:1 -o $work/out.tar"
  "ingot load (uncompressed layer)|$ingot --root $work/r load -i $work/saved.tar"
  "ingot load (gzip layer)|$ingot --root $work/r load -i $work/saved-gz.tar"
)
docker_ok=0
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker_ok=1
  cmds+=(
    "docker import|docker import $work/rootfs.tar ingot-bench-import:1"
    "docker load (same archive)|docker load -i $work/saved.tar"
  )
fi

echo "| operation | mean s | MB/s (of $((bytes / 1000000)) MB) |"
echo "|---|---|---|"
for entry in "${cmds[@]}"; do
  name=${entry%%|*}
  cmd=${entry#*|}
  prep="rm -rf $work/r $work/out.tar; sync"
  if [ "$docker_ok" = 1 ]; then prep="$prep; docker rmi -f ingot-bench-import:1 bench:1 >/dev/null 2>&1 || true"; fi
  hyperfine --style none --runs "$RUNS" --warmup 1 --prepare "$prep" --export-json "$work/h.json" "$cmd" >/dev/null 2>&1
  mean=$(python3 -c "import json;print(json.load(open('$work/h.json'))['results'][0]['mean'])")
  python3 -c "print(f'| $name | {float($mean):.2f} | {$bytes/1e6/float($mean):.0f} |')"
done
if [ "$docker_ok" = 1 ]; then docker rmi -f ingot-bench-import:1 bench:1 >/dev/null 2>&1 || true; fi
