#!/usr/bin/env bash
# The database image's root filesystem: Debian (debootstrap minbase) with
# redis-server from Debian's packages, written as a tar to $1 (made once and
# cached by scripts/debian-rootfs). Needs root.
set -euo pipefail
exec "$(dirname "$0")/../../../scripts/debian-rootfs" "${1:?usage: rootfs.sh OUT.tar}" redis-server
