#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need, then
# formatting, lints, unit + integration tests, the main job, fuzz smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v runc >/dev/null || need+=(runc)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v buildah >/dev/null || need+=(buildah)
command -v podman >/dev/null || need+=(podman)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v go >/dev/null || need+=(golang-go)
command -v debootstrap >/dev/null || need+=(debootstrap)
# The dashboard's test drives headless Chromium through WebDriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    echo "test: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The official SBOM validators the SBOM tests use.
if ! python3 -c "import spdx_tools, cyclonedx.validation.json" >/dev/null 2>&1; then
    echo "test: installing spdx-tools and cyclonedx-python-lib from PyPI" >&2
    pip install -q "cyclonedx-python-lib[json-validation]" spdx-tools
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
# The Rust binary cataloger's test builds a real cargo-auditable binary.
if ! cargo auditable --version >/dev/null 2>&1; then
    cargo install --locked cargo-auditable
fi
# A Debian minbase rootfs for the dpkg cataloger's test and the SBOM bench.
export INGOT_DEBOOTSTRAP=${INGOT_DEBOOTSTRAP:-/var/tmp/ingot-debootstrap}
if [ ! -f "$INGOT_DEBOOTSTRAP/var/lib/dpkg/status" ]; then
    echo "test: debootstrap --variant=minbase bookworm $INGOT_DEBOOTSTRAP" >&2
    rm -rf "$INGOT_DEBOOTSTRAP"
    debootstrap --variant=minbase bookworm "$INGOT_DEBOOTSTRAP" >/dev/null \
        || { echo "test: debootstrap failed" >&2; rm -rf "$INGOT_DEBOOTSTRAP"; exit 1; }
fi

# A test that cannot run here (not root, a peer missing) fails instead of skipping.
# The Debian root filesystems deploy tests serve from (redis for the shop
# example, nghttpd for HTTP/2 replicas), made once here with apt rather than
# inside tests that run beside others timing their requests.
for pkg in redis-server nghttp2-server; do
    out=$(mktemp)
    scripts/debian-rootfs "$out" "$pkg" >/dev/null \
        || { echo "test: scripts/debian-rootfs $pkg failed" >&2; rm -f "$out"; exit 1; }
    rm -f "$out"
done

export INGOT_REQUIRE_ALL=1
