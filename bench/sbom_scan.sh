#!/usr/bin/env bash
# Benchmark: cataloging (SBOM) and scanning a Debian minbase rootfs (from
# debootstrap) and a 1 GiB image (that rootfs plus 1 GiB of data files and
# an executable), cold (no layer catalogued yet) and warm (a re-scan: every
# layer's catalog cached in the store). Time (hyperfine) and peak RSS
# (/usr/bin/time). Reference beside it: `dpkg-query -W` inside the rootfs,
# which reads only the dpkg database (syft/grype are not packaged for any
# registry this machine reaches). Needs root (debootstrap, chroot).
# Usage: bench/sbom_scan.sh   (RUNS=10 by default; SIZE_MB=1024)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
SIZE_MB=${SIZE_MB:-1024}
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
DBS=${INGOT_DEBOOTSTRAP:-/var/tmp/ingot-debootstrap}
if [ ! -f "$DBS/var/lib/dpkg/status" ]; then
    debootstrap --variant=minbase bookworm "$DBS" http://deb.debian.org/debian >/dev/null
fi
cargo build --release --quiet --bin ingot
ingot=$PWD/target/release/ingot
work=$(mktemp -d /var/tmp/ingot-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
R=$work/root
I="$ingot --root $R"
tar -C "$DBS" --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -cf "$work/debian.tar" .
$I import -q "$work/debian.tar" debian:minbase >/dev/null
mkdir -p "$work/ctx/data"
n=$((SIZE_MB / 64))
for i in $(seq 1 "$n"); do head -c 64M /dev/urandom > "$work/ctx/data/blob$i"; done
cp "$ingot" "$work/ctx/ingot-binary"
printf 'FROM debian:minbase\nCOPY data/ /data/\nCOPY ingot-binary /usr/local/bin/app\n' > "$work/ctx/Dockerfile"
$I build -q --no-sbom -t big:1 "$work/ctx" >/dev/null
$I db import ../shared/osv >/dev/null 2>&1 || $I db import examples/osv >/dev/null
forget="python3 -c \"import sqlite3; c=sqlite3.connect('$R/ingot.db'); c.execute('DELETE FROM layer_catalog'); c.commit()\""
pkgs_deb=$($I packages debian:minbase --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
pkgs_big=$($I packages big:1 --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
size_big=$($I images --format json | python3 -c 'import json,sys; print([i["size"] for i in json.load(sys.stdin) if i["tag"]=="1" and "big" in i["name"]][0])')

hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$work/h.json" \
    --prepare "$forget" -n "deb: sbom+scan, cold" "$I scan debian:minbase --format json" \
    --prepare true -n "deb: sbom+scan, warm (re-scan)" "$I scan debian:minbase --format json" \
    --prepare "$forget" -n "deb: spdx sbom, cold" "$I sbom debian:minbase" \
    --prepare true -n "deb: dpkg-query -W (reference)" "chroot $DBS dpkg-query -W" \
    --prepare "$forget" -n "1 GiB: sbom+scan, cold" "$I scan big:1 --format json" \
    --prepare true -n "1 GiB: sbom+scan, warm (re-scan)" "$I scan big:1 --format json" >&2

peak() { # peak RSS in MiB of a command, cold or warm
    [ "$1" = cold ] && eval "$forget"
    shift
    /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.1f", $1/1024}'
}
echo "Debian minbase: $pkgs_deb packages; 1 GiB image: $pkgs_big packages, $((size_big / 1048576)) MiB."
echo
echo "| command | mean | min | peak RSS |"
echo "|---|---|---|---|"
python3 - "$work/h.json" \
    "$(peak cold $I scan debian:minbase)" "$(peak warm $I scan debian:minbase)" "$(peak cold $I sbom debian:minbase)" \
    "$(peak warm chroot "$DBS" dpkg-query -W)" "$(peak cold $I scan big:1)" "$(peak warm $I scan big:1)" <<'PY'
import json, sys
rs = json.load(open(sys.argv[1]))["results"]
for r, mem in zip(rs, sys.argv[2:]):
    print(f"| {r['command']} | {r['mean']*1000:.1f} ms | {r['min']*1000:.1f} ms | {mem} MiB |")
PY
