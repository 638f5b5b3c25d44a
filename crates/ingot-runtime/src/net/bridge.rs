//! ingot's bridge: `ingot0`, gateway 10.231.0.1/16 on the host, and one
//! veth pair per bridged container.
//!
//! The pair is created with its container end already inside the
//! container's network namespace (named `eth0` there), so no interface of a
//! container ever exists only on the host: when the namespace goes, the
//! kernel deletes both ends. Addresses come from [`super::ipam`], host-wide.
//!
//! Links are configured with iproute2's `ip`, run in the container's
//! namespace through `setns` for the container side.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::error::{Result, RuntimeError};

/// The bridge interface on the host.
pub const BRIDGE: &str = "ingot0";
/// The bridge's address: containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// Prefix length of the containers' subnet.
pub const PREFIX: u8 = 16;

/// Container addresses, lowest first: 10.231.0.2 to 10.231.255.254.
pub fn candidates() -> impl Iterator<Item = String> {
    let base = u32::from(GATEWAY) & !((1u32 << (32 - PREFIX)) - 1);
    let last = base | ((1u32 << (32 - PREFIX)) - 2);
    (u32::from(GATEWAY) + 1..=last).map(|a| Ipv4Addr::from(a).to_string())
}

/// Runs `ip ARGS...` (in the network namespace `netns` when given).
fn ip(args: &[&str], netns: Option<&File>, stdin: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; fd stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        let _ = input.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        let what = stdin.map_or_else(|| args.join(" "), |s| s.trim().replace('\n', "; "));
        return Err(format!("ip {what}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Creates the bridge if missing and makes sure it is up with its address.
/// Safe to race with other processes doing the same.
pub fn ensure_bridge() -> Result<()> {
    let mut created = false;
    let mut setup = || -> Result<(), String> {
        if !link_exists(BRIDGE) {
            created = true;
            if let Err(e) = ip(&["link", "add", BRIDGE, "type", "bridge"], None, None) {
                if !link_exists(BRIDGE) {
                    return Err(e);
                }
            }
        }
        // A fixed MAC: a bridge without one takes its lowest port's, which
        // changes as containers come and go, and every container's cached
        // gateway MAC goes stale (replies lost for the ~5 s the kernel waits
        // before re-probing a neighbour).
        let mac = mac_for(&GATEWAY.to_string()).ok_or("bad gateway address")?;
        let current = std::fs::read_to_string(format!("/sys/class/net/{BRIDGE}/address")).unwrap_or_default();
        let assigned = std::fs::read_to_string(format!("/sys/class/net/{BRIDGE}/addr_assign_type")).unwrap_or_default();
        if current.trim() != mac || assigned.trim() != "3" {
            ip(&["link", "set", BRIDGE, "address", &mac], None, None)?;
        }
        let addr = format!("{GATEWAY}/{PREFIX}");
        ip(&["addr", "replace", &addr, "dev", BRIDGE], None, None)?;
        ip(&["link", "set", BRIDGE, "up"], None, None)
    };
    setup().map_err(|e| RuntimeError::Setup(format!("bridge {BRIDGE}: {e}")))?;
    // Once per boot (the mark is on /run's tmpfs, as the rules are in the
    // kernel) and whenever the bridge is made; the daemon re-checks at start.
    let mark = std::path::Path::new(super::ipam::RUN_DIR).join("forwarding");
    if created || !mark.exists() {
        ensure_forwarding()?;
        let _ = std::fs::create_dir_all(super::ipam::RUN_DIR);
        let _ = std::fs::write(&mark, b"");
    }
    Ok(())
}

/// Services' virtual addresses (`endpoint_mode: vip`): a local route, so
/// the daemon's mesh can listen on any of them and replicas reach them
/// through their gateway.
pub const VIP_SUBNET: &str = "10.232.0.0/16";

/// Deploy daemons' DNS servers, one address per store root.
pub const DNS_SUBNET: &str = "10.233.0.0/16";

/// Makes [`VIP_SUBNET`] and [`DNS_SUBNET`] local to the host (idempotent).
pub fn ensure_vip_route() -> Result<()> {
    for subnet in [VIP_SUBNET, DNS_SUBNET] {
        ip(&["route", "replace", "local", subnet, "dev", "lo"], None, None)
            .map_err(|e| RuntimeError::Setup(format!("virtual addresses {subnet}: {e}")))?;
    }
    Ok(())
}

/// An address in `subnet` (a /16) for `seed`: the same for the same seed
/// in every process and version (SHA-256), neither the network's first
/// address nor its last. Addresses of different seeds may collide
/// (1 in 65,534); callers probe on.
pub fn address_in_16(subnet: std::net::Ipv4Addr, seed: &[u8], probe: u32) -> std::net::Ipv4Addr {
    let hex = ingot_oci::Digest::sha256(seed).hex().to_string();
    let h = u32::from_str_radix(&hex[..8], 16).unwrap_or(0);
    let n = h.wrapping_add(probe) % 65_534 + 1;
    std::net::Ipv4Addr::from(u32::from(subnet) + n)
}

/// The chains ingot keeps its rules in (in the filter and nat tables).
pub const FORWARD_CHAIN: &str = "INGOT-FORWARD";
pub const NAT_CHAIN: &str = "INGOT-POSTROUTING";
pub const INPUT_CHAIN: &str = "INGOT-INPUT";

/// Lets the bridge's traffic through a host whose FORWARD policy drops it
/// (Docker's engine sets DROP, and with br_netfilter even traffic between
/// two ports of one bridge passes FORWARD), and masquerades what leaves
/// for other networks, so containers reach the outside (egress NAT).
/// ingot's rules live in chains of its own, jumped to first from FORWARD
/// and POSTROUTING; made when the bridge is made and by the daemon at
/// start-up; idempotent and safe to race (iptables' lock, check before add).
pub fn ensure_forwarding() -> Result<()> {
    let subnet = format!("{GATEWAY}/{PREFIX}");
    let steps: [(&str, &str, &[&str], bool); 9] = [
        // The virtual and DNS addresses (routed local) answer the host and
        // its bridge only, never another interface's traffic.
        ("filter", "INPUT", &["-j", INPUT_CHAIN], true),
        ("filter", INPUT_CHAIN, &["-i", BRIDGE, "-j", "RETURN"], false),
        ("filter", INPUT_CHAIN, &["-i", "lo", "-j", "RETURN"], false),
        ("filter", INPUT_CHAIN, &["-d", "10.232.0.0/15", "-j", "DROP"], false),
        ("filter", "FORWARD", &["-j", FORWARD_CHAIN], true),
        ("filter", FORWARD_CHAIN, &["-i", BRIDGE, "-j", "ACCEPT"], false),
        (
            "filter",
            FORWARD_CHAIN,
            &[
                "-o",
                BRIDGE,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
            false,
        ),
        ("nat", "POSTROUTING", &["-j", NAT_CHAIN], true),
        (
            "nat",
            NAT_CHAIN,
            &["-s", &subnet, "!", "-o", BRIDGE, "-j", "MASQUERADE"],
            false,
        ),
    ];
    let run = |args: &[&str]| -> Result<bool, String> {
        let out = Command::new("iptables")
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("iptables: {e} (install iptables)"))?;
        Ok(out.status.success())
    };
    let setup = || -> Result<(), String> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("enable IP forwarding: {e}"))?;
        for chain in [("filter", FORWARD_CHAIN), ("filter", INPUT_CHAIN), ("nat", NAT_CHAIN)] {
            // -N fails when the chain exists: fine.
            run(&["-t", chain.0, "-N", chain.1])?;
        }
        for (table, chain, rule, first) in steps {
            let mut check = vec!["-t", table, "-C", chain];
            check.extend_from_slice(rule);
            if run(&check)? {
                continue;
            }
            let mut add = vec!["-t", table, if first { "-I" } else { "-A" }, chain];
            if first {
                add.push("1");
            }
            add.extend_from_slice(rule);
            if !run(&add)? && !run(&check)? {
                return Err(format!("iptables {} failed", add.join(" ")));
            }
        }
        Ok(())
    };
    setup().map_err(|e| RuntimeError::Setup(format!("forwarding for {BRIDGE}: {e}")))
}

/// The host end's name for container `id` (at most 15 bytes, IFNAMSIZ).
pub fn host_veth(id: &str) -> String {
    format!("ing{}", &id[..12.min(id.len())])
}

/// The MAC address of the container holding `address` (as Docker does:
/// `02:42` and the four address bytes). A reused address keeps its MAC, so
/// a neighbour entry the host cached for a previous holder stays right and
/// the first packets to a new replica are not sent to a vanished one.
pub fn mac_for(address: &str) -> Option<String> {
    let ip: std::net::Ipv4Addr = address.parse().ok()?;
    let o = ip.octets();
    Some(format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]))
}

/// Joins the network namespace of process `pid` to the bridge: a veth pair
/// with `eth0` inside carrying `address` (and [`mac_for`] it), loopback
/// up, default route via the bridge.
pub fn attach(id: &str, pid: i32, address: &str) -> Result<()> {
    let veth = host_veth(id);
    let pid_s = pid.to_string();
    let mac = mac_for(address)
        .ok_or_else(|| RuntimeError::Setup(format!("network for container {id}: bad address {address:?}")))?;
    let ns_path = format!("/proc/{pid}/ns/net");
    let run = || -> Result<(), String> {
        let ns = File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
        ip(
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "address", &mac, "netns", &pid_s,
            ],
            None,
            None,
        )?;
        ip(&["link", "set", &veth, "master", BRIDGE, "up"], None, None)?;
        let inside = format!(
            "link set lo up\naddr add {address}/{PREFIX} dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n"
        );
        ip(&["-batch", "-"], Some(&ns), Some(&inside))
    };
    run().map_err(|e| RuntimeError::Setup(format!("network for container {}: {e}", &id[..12.min(id.len())])))
}

/// Brings up loopback in the network namespace of process `pid`.
pub fn loopback(pid: i32) -> Result<()> {
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&ns_path).map_err(RuntimeError::io(&ns_path))?;
    ip(&["link", "set", "lo", "up"], Some(&ns), None).map_err(RuntimeError::Setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_addresses() {
        assert_eq!(mac_for("10.231.0.2").as_deref(), Some("02:42:0a:e7:00:02"));
        assert_eq!(mac_for("nope"), None);
    }

    #[test]
    fn addresses_stay_in_the_subnet() {
        let mut it = candidates();
        assert_eq!(it.next().as_deref(), Some("10.231.0.2"));
        assert_eq!(candidates().last().as_deref(), Some("10.231.255.254"));
        assert_eq!(candidates().count(), 65533);
        assert_eq!(host_veth(&"ab".repeat(32)).len(), 15);
    }
}
