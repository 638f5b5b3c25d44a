#!/usr/bin/env bash
# Benchmark: a realistic multi-stage build. A C program (a few source files)
# is compiled in a Debian stage (gcc, make, ccache from Debian's packages,
# through scripts/debian-rootfs) with `RUN --mount=type=cache` keeping
# ccache's directory, and the static binary is copied into a slim busybox
# stage. Cold (fresh store, nothing cached), no change, and one source file
# changed, with ingot next to buildah (`bud --layers`, the same Dockerfile:
# buildah reads RUN --mount) and Docker's classic builder (no buildx here,
# so no BuildKit and no RUN --mount: the same Dockerfile with the mount
# flag removed), on the same context and the same two base images. Needs
# root.
# Usage: bench/build_compiled.sh            (RUNS=5 by default)
# Writes a markdown table to stdout; copy it into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-5}
bench_setup hyperfine=hyperfine buildah=buildah busybox=busybox-static
gcc_id=
cleanup() {
    # The classic builder keeps the first stage's image (untagged): those
    # built on our compiler base go first, then the tags.
    if [ -n "$gcc_id" ]; then
        for i in $(docker images -aq --no-trunc --filter dangling=true); do
            docker history -q --no-trunc "$i" 2>/dev/null | grep -q "$gcc_id" && docker rmi -f "$i" >/dev/null 2>&1
        done
    fi
    docker rmi -f ingot-bench-compiled bench/gcc:1 bench/slim:1 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The two bases: a Debian with the compiler, the busybox rootfs.
scripts/debian-rootfs "$work/gcc.tar" gcc libc6-dev make ccache
examples/rootfs/build.sh "$work/slim.tar"

# The context: a program of five files and a Makefile.
ctx=$work/ctx
mkdir -p "$ctx/src"
for i in 1 2 3 4; do
    cat >"$ctx/src/part$i.c" <<EOF
#include <stdio.h>
int part$i(int n) {
    long acc = 0;
    for (int k = 0; k < n; k++) acc += (k * $i) % 7;
    return (int)(acc % 1000);
}
EOF
done
cat >"$ctx/src/main.c" <<'EOF'
#include <stdio.h>
int part1(int), part2(int), part3(int), part4(int);
int main(void) {
    printf("%d %d %d %d\n", part1(1000), part2(1000), part3(1000), part4(1000));
    return 0;
}
EOF
cat >"$ctx/Makefile" <<'EOF'
CC ?= gcc
OBJ = main.o part1.o part2.o part3.o part4.o
app: $(OBJ)
	$(CC) -static -O2 -o $@ $(OBJ)
%.o: src/%.c
	$(CC) -O2 -c -o $@ $<
EOF
cat >"$ctx/Dockerfile" <<'EOF'
FROM bench/gcc:1 AS build
WORKDIR /src
COPY Makefile ./
COPY src/ ./src/
RUN --mount=type=cache,target=/root/.cache/ccache CCACHE_DIR=/root/.cache/ccache make CC="ccache gcc" app \
    && install -D app /out/app
FROM bench/slim:1
COPY --from=build /out/app /usr/local/bin/app
CMD ["/usr/local/bin/app"]
EOF
# Docker's classic builder knows no RUN --mount.
mkdir -p "$work/docker-ctx"
cp -r "$ctx/." "$work/docker-ctx/"
sed -i 's/^RUN --mount=type=cache,target=\/root\/.cache\/ccache /RUN /' "$work/docker-ctx/Dockerfile"

# ingot
$I import -q "$work/gcc.tar" bench/gcc:1 >/dev/null
$I import -q "$work/slim.tar" bench/slim:1 >/dev/null
$I save bench/gcc:1 -o "$work/gcc-oci.tar"
$I save bench/slim:1 -o "$work/slim-oci.tar"
# A fresh root per run, in a new directory: the old ones are deleted at the
# end, as ext4 allocates inodes slowly for a minute or more after thousands
# were deleted (that showed as 70% of an unpack's time in `perf record`).
fresh="d=$work/cold-\$(date +%s%N) && echo \$d > $work/cold.now && $ingot --root \$d import -q $work/gcc.tar bench/gcc:1 >/dev/null && $ingot --root \$d import -q $work/slim.tar bench/slim:1 >/dev/null"
# Like for like with the peers' --no-cache: the bases as they hold them
# (unpacked at import), no step cached, the cache mount emptied.
nocache="rm -rf $R/build-cache"
# (No '|' in a command: the table below splits on it.)
change="echo \"int changed_\$(date +%N)(void) { return 1; }\" >> $ctx/src/part4.c && cp $ctx/src/part4.c $work/docker-ctx/src/part4.c"

# buildah (vfs storage, chroot isolation: what runs without a daemon here)
B="buildah --root $work/buildah --runroot $work/buildah-run --storage-driver vfs"
$B tag "$($B pull -q "oci-archive:$work/gcc-oci.tar" | tail -1)" bench/gcc:1
$B tag "$($B pull -q "oci-archive:$work/slim-oci.tar" | tail -1)" bench/slim:1
bud="$B bud -q --isolation chroot --layers -t ingot-bench-compiled"

cmds=(
  "ingot cold (fresh root)|$fresh|$ingot --root \$(cat $work/cold.now) build -q -t app:1 $ctx"
  "ingot cold (--no-cache)|$nocache|$I build -q --no-cache -t app:1 $ctx"
  "ingot no change|:|$I build -q -t app:1 $ctx"
  "ingot one source file changed|$change|$I build -q -t app:1 $ctx"
  "buildah cold (--no-cache)|:|$bud --no-cache $ctx"
  "buildah no change|:|$bud $ctx"
  "buildah one source file changed|$change|$bud $ctx"
)
docker_ok=0
if docker info >/dev/null 2>&1 && gcc_id=$(docker import "$work/gcc.tar" bench/gcc:1 2>/dev/null) \
    && docker import "$work/slim.tar" bench/slim:1 >/dev/null 2>&1; then
    docker_ok=1
    db="DOCKER_BUILDKIT=0 docker build -q -t ingot-bench-compiled"
    cmds+=(
      "docker build cold (--no-cache)|:|$db --no-cache $work/docker-ctx"
      "docker build no change|:|$db $work/docker-ctx"
      "docker build one source file changed|$change|$db $work/docker-ctx"
    )
else
    echo "docker: no engine answers; skipped" >&2
fi
# Warm every cache once; check each builder's program runs.
$I build -q -t app:1 "$ctx" >/dev/null
echo "ingot's program prints: $($I run --rm app:1)" >&2
sh -c "$bud $ctx" >/dev/null 2>&1
if [ $docker_ok = 1 ]; then sh -c "$db $work/docker-ctx" >/dev/null 2>&1; fi

args=()
for c in "${cmds[@]}"; do
    IFS='|' read -r name prep cmd <<<"$c"
    args+=(-n "$name" --prepare "$prep" "$cmd")
done
hyperfine ${HYPERFINE_OPTS:-} --warmup 1 --runs "$RUNS" --export-markdown "$work/table.md" "${args[@]}" >&2
cat "$work/table.md"
