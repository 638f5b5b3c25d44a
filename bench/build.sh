#!/usr/bin/env bash
# Benchmark: building the bundled example (examples/hello: two stages, a
# COPY, a RUN in a container, COPY --from) cold, with no change, and after a
# one-file change, with ingot next to `docker build` and `buildah bud` on the
# same context and the same base image, in one run. Also: does each give the
# same digest twice (cold, no cache)? Needs root.
# Usage: bench/build.sh                (RUNS=5 by default)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v buildah >/dev/null || need+=(buildah)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin ingot
ingot=$PWD/target/release/ingot
work=$(mktemp -d /var/tmp/ingot-bench.XXXXXX)
cleanup() {
    docker rmi -f ingot-bench-hello example/base:latest >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
examples/rootfs/build.sh "$work/base.tar"
cp -r examples/hello "$work/ctx"
R=$work/root
"$ingot" --root "$R" import -q "$work/base.tar" example/base:latest >/dev/null
"$ingot" --root "$R" save example/base:latest -o "$work/base-oci.tar"
fresh="rm -rf $work/cold && $ingot --root $work/cold import -q $work/base.tar example/base:latest >/dev/null"
change="date +%N > $work/ctx/site/changed.txt"

B="buildah --root $work/buildah --runroot $work/buildah-run --storage-driver vfs"
$B pull -q "oci-archive:$work/base-oci.tar" >/dev/null
$B tag "$($B images -q | head -1)" example/base:latest
bud="$B bud -q --isolation chroot --layers -t ingot-bench-hello"

cmds=(
  "ingot cold (fresh root)|$fresh|$ingot --root $work/cold build -q -t hello:1 $work/ctx"
  "ingot no change|:|$ingot --root $R build -q -t hello:1 $work/ctx"
  "ingot one file changed|$change|$ingot --root $R build -q -t hello:1 $work/ctx"
  "buildah cold (--no-cache)|:|$bud --no-cache $work/ctx"
  "buildah no change|:|$bud $work/ctx"
  "buildah one file changed|$change|$bud $work/ctx"
)
docker_ok=0
if docker info >/dev/null 2>&1 && docker import "$work/base.tar" example/base:latest >/dev/null 2>&1; then
    docker_ok=1
    # No buildx here, so the engine's classic builder (BuildKit needs buildx).
    db="DOCKER_BUILDKIT=0 docker build -q -t ingot-bench-hello"
    cmds+=(
      "docker build cold (--no-cache)|:|$db --no-cache $work/ctx"
      "docker build no change|:|$db $work/ctx"
      "docker build one file changed|$change|$db $work/ctx"
    )
else
    echo "docker: no engine answers; skipped" >&2
fi
# Warm every cache once.
"$ingot" --root "$R" build -q -t hello:1 "$work/ctx" >/dev/null
sh -c "$bud $work/ctx" >/dev/null 2>&1
if [ $docker_ok = 1 ]; then sh -c "$db $work/ctx" >/dev/null 2>&1; fi

args=()
for c in "${cmds[@]}"; do
    IFS='|' read -r name prep cmd <<<"$c"
    args+=(-n "$name" --prepare "$prep" "$cmd")
done
hyperfine ${HYPERFINE_OPTS:-} --warmup 1 --runs "$RUNS" --export-markdown "$work/table.md" "${args[@]}" >&2
cat "$work/table.md"

echo
echo "Same digest twice (two cold builds, no cache):"
same() { if [ "$1" = "$2" ]; then echo "yes ($1)"; else echo "no ($1 vs $2)"; fi; }
sh -c "$fresh"; d1=$("$ingot" --root "$work/cold" build -q "$work/ctx")
sh -c "$fresh"; d2=$("$ingot" --root "$work/cold" build -q "$work/ctx")
echo "- ingot: $(same "$d1" "$d2")"
b1=$(sh -c "$bud --no-cache $work/ctx" 2>/dev/null | tail -1); b2=$(sh -c "$bud --no-cache $work/ctx" 2>/dev/null | tail -1)
echo "- buildah (image ID): $(same "$b1" "$b2")"
if [ $docker_ok = 1 ]; then
    k1=$(sh -c "$db --no-cache $work/ctx" | tail -1); k2=$(sh -c "$db --no-cache $work/ctx" | tail -1)
    echo "- docker build (image ID): $(same "$k1" "$k2")"
fi
