#!/usr/bin/env bash
# Benchmark: container start to exit (`/bin/true` in the bundled busybox
# image), ingot's own runtime next to runc, crun and `docker run` on the same
# root filesystem, in one run. Needs root.
# Usage: bench/container_start.sh          (RUNS=50 by default)
#        BASELINE=/path/to/an/older/ingot bench/container_start.sh
#        (adds that build's `run --network none` as a row, to compare)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# crun refuses a hybrid-cgroup host ("cgroups in hybrid mode not supported").
# So that every runtime sees the same host, the whole benchmark runs in a
# mount namespace of its own with the cgroup2 mount hidden (cgroup v1 only).
if [ -z "${INGOT_BENCH_NS:-}" ]; then
    exec unshare -m --propagation private env INGOT_BENCH_NS=1 "$0" "$@"
fi
if mountpoint -q /sys/fs/cgroup/unified; then
    umount /sys/fs/cgroup/unified
fi
# Runtime state belongs on a tmpfs: crun's and runc's default roots are
# /run/crun and /run/runc, ingot keeps a `run --rm` container's directory
# in /run/ingot, and /run is a tmpfs on every systemd host. Where it is
# not (this benchmark's machines run without systemd), the namespace gets
# a tmpfs on each of those three, so no runtime pays a disk's metadata
# journal that the others do not.
if [ "$(stat -f -c %T /run)" != tmpfs ]; then
    for d in /run/ingot /run/crun /run/runc; do
        # The host's address leases live in /run/ingot/ipam: hidden, the
        # bridge runs could take an address a running container holds.
        if [ "$d" = /run/ingot ] && [ -n "$(ls -A /run/ingot/ipam 2>/dev/null)" ]; then
            echo "containers hold addresses (/run/ingot/ipam): /run/ingot stays on the disk" >&2
            continue
        fi
        mkdir -p "$d" && mount -t tmpfs -o mode=0700 bench "$d"
    done
fi
RUNS=${RUNS:-50}
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v runc >/dev/null || need+=(runc)
command -v crun >/dev/null || need+=(crun)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin ingot
ingot=$PWD/target/release/ingot
work=$(mktemp -d /var/tmp/ingot-bench.XXXXXX)
trap 'rm -rf "$work"; docker rmi -f ingot-bench-box:1 >/dev/null 2>&1 || true' EXIT
examples/rootfs/build.sh "$work/rootfs.tar"
"$ingot" --root "$work/root" import -q "$work/rootfs.tar" box:1 >/dev/null
# Warm the layer cache once.
"$ingot" --root "$work/root" run --rm --network none box:1 /bin/true

# A plain OCI bundle for runc and crun: the same rootfs, read-only, the
# default spec of each (namespaces, caps, masks; runc's spec has no seccomp).
mkdir -p "$work/bundle/rootfs"
tar -C "$work/bundle/rootfs" -xf "$work/rootfs.tar"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json)

cmds=(
  "ingot run --network none (cgroups, caps, seccomp)|$ingot --root $work/root run --rm --network none box:1 /bin/true"
  "ingot run --network none, baseline build|${BASELINE:-}|"
  "ingot run (bridge network)|$ingot --root $work/root run --rm box:1 /bin/true"
  "ingot run --runtime runc --network none|$ingot --root $work/root run --rm --runtime runc --network none box:1 /bin/true"
  "runc run (bundle ready)|runc run --bundle $work/bundle b"
  "crun run (bundle ready)|crun run --bundle $work/bundle b"
)
if docker info >/dev/null 2>&1 && docker import "$work/rootfs.tar" ingot-bench-box:1 >/dev/null 2>&1; then
    cmds+=("docker run --rm --network none|docker run --rm --network none ingot-bench-box:1 /bin/true")
else
    echo "docker: no engine answers; skipped" >&2
fi

args=()
for c in "${cmds[@]}"; do
    name=${c%%|*}
    cmd=${c#*|}
    case $cmd in
    "|") continue ;; # no BASELINE given
    *"|") cmd="${cmd%|} --root $work/root run --rm --network none box:1 /bin/true" ;;
    esac
    # A peer that cannot run here (crun refuses hybrid cgroup hosts) is
    # reported, not benchmarked.
    if ! sh -c "$cmd" >/dev/null 2>"$work/err"; then
        echo "$name: does not run here: $(tail -1 "$work/err")" >&2
        continue
    fi
    args+=(-n "$name" "$cmd")
done
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$work/runs.json" "${args[@]}" >&2
# Medians first: a start that waits on the kernel (an RCU grace period, a
# journal commit) now and then moves the mean more than the typical run.
python3 - "$work/runs.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
crun = next((r["median"] for r in rows if r["command"].startswith("crun")), None)
print("| Command | Median [ms] | Mean [ms] | Min [ms] | Max [ms] | Median vs crun |")
print("|:---|---:|---:|---:|---:|---:|")
for r in rows:
    ms = lambda v: f"{v * 1000:.1f}"
    ratio = f"{r['median'] / crun:.2f}" if crun else "n/a"
    print(f"| `{r['command']}` | {ms(r['median'])} | {ms(r['mean'])} ± {ms(r['stddev'])} | {ms(r['min'])} | {ms(r['max'])} | {ratio} |")
PY
