#!/usr/bin/env bash
# The database image's root filesystem: Debian (debootstrap minbase) with
# redis-server from Debian's packages, written as a tar to $1. Built once
# and cached (INGOT_REDIS_ROOTFS, default /var/tmp/ingot-redis-rootfs);
# apt inside uses this machine's own apt sources and settings. Needs root.
set -euo pipefail
out=${1:?usage: rootfs.sh OUT.tar}
base=${INGOT_DEBOOTSTRAP:-/var/tmp/ingot-debootstrap}
cache=${INGOT_REDIS_ROOTFS:-/var/tmp/ingot-redis-rootfs}
if [ ! -x "$cache/usr/bin/redis-server" ]; then
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    if [ ! -f "$base/var/lib/dpkg/status" ]; then
        echo "rootfs: debootstrap --variant=minbase bookworm $base" >&2
        rm -rf "$base"
        debootstrap --variant=minbase bookworm "$base" >/dev/null
    fi
    echo "rootfs: installing redis-server into a copy of $base" >&2
    tmp="$cache.tmp"
    rm -rf "$tmp"
    cp -a "$base" "$tmp"
    # This machine's apt configuration and name servers, for the install only.
    saved=$(mktemp -d)
    cp -a "$tmp/etc/apt" "$saved/apt"
    cp -a "$tmp/etc/resolv.conf" "$saved/resolv.conf" 2>/dev/null || true
    rm -f "$tmp/etc/apt/sources.list"
    cp -a /etc/apt/sources.list* /etc/apt/apt.conf.d "$tmp/etc/apt/" 2>/dev/null || true
    cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    # No service starts inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"
    chroot "$tmp" apt-get update -qq 2> >(grep -v '^W:' >&2)
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
        >/dev/null 2> >(grep -v -e '^W:' -e '^debconf:' -e 'posix_openpt' -e '^invoke-rc.d:' >&2)
    chroot "$tmp" apt-get clean
    rm -rf "$tmp/var/lib/apt/lists/"* "$tmp/usr/sbin/policy-rc.d" "$tmp/etc/apt"
    cp -a "$saved/apt" "$tmp/etc/apt"
    if [ -e "$saved/resolv.conf" ]; then cp -a "$saved/resolv.conf" "$tmp/etc/resolv.conf"; else rm -f "$tmp/etc/resolv.conf"; fi
    rm -rf "$saved"
    rm -rf "$cache"
    mv "$tmp" "$cache"
fi
# Device nodes are not layer content (the runtime makes /dev).
tar -C "$cache" --numeric-owner --exclude="./dev/*" -cf "$out" .
