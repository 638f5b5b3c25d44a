# What every benchmark does first; source it from the repository's root.
#
# bench_setup CMD=PACKAGE...: installs (apt) each PACKAGE whose CMD is
# missing (CMD busybox: /bin/busybox), builds the release binary and sets
# $ingot, makes a scratch directory $work under /var/tmp, a store root $R
# in it, and $I, ingot on that root.
bench_setup() {
    local need=() pair cmd
    for pair in "$@"; do
        cmd=${pair%%=*}
        if [ "$cmd" = busybox ]; then
            [ -x /bin/busybox ] && continue
        else
            command -v "$cmd" >/dev/null && continue
        fi
        need+=("${pair#*=}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    cargo build --release --quiet --bin ingot
    ingot=$PWD/target/release/ingot
    work=$(mktemp -d /var/tmp/ingot-bench.XXXXXX)
    R=$work/root
    I="$ingot --root $R"
}

# free_port: a TCP port of loopback nobody listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
