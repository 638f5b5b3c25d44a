#!/usr/bin/env bash
# Packs the bundled example root filesystem into a tarball, reproducibly:
# the files under examples/rootfs/ plus the host's static busybox
# (Debian package busybox-static), sorted, with fixed owners and times.
# Usage: examples/rootfs/build.sh OUT.tar
set -euo pipefail
out=${1:?usage: build.sh OUT.tar}
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}
if ! [ -x "$busybox" ]; then
    echo "build.sh: $busybox is missing; install busybox-static" >&2
    exit 1
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,etc,tmp,root}
cp "$here"/etc/* "$stage/etc/"
cp "$busybox" "$stage/bin/busybox"
for applet in sh ls cat echo env true false sleep wget httpd; do
    ln -s busybox "$stage/bin/$applet"
done
chmod 1777 "$stage/tmp"
chmod 0700 "$stage/root"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$stage" -cf "$out" .
