//! ingot's bridges: `ingot0` (gateway 10.231.0.1/16, for `ingot run`)
//! and one per stack network ([`super::Network`]), each with one veth pair
//! per attached container.
//!
//! The pair is created with its container end already inside the
//! container's network namespace (named `ethN` there), so no interface of a
//! container ever exists only on the host: when the namespace goes, the
//! kernel deletes both ends. Addresses come from [`super::ipam`], host-wide.
//!
//! Isolation is in the firewall ([`ensure_forwarding`]): traffic stays
//! within one bridge, except that non-internal networks reach the outside
//! (NAT) and every network reaches the host's DNS and virtual addresses.
//!
//! Links, addresses and routes are made over rtnetlink ([`super::netlink`]),
//! the container side through a socket opened in its namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::netlink::{parse_mac, Netlink};
use super::Network;
use crate::error::{Result, RuntimeError};

/// The default bridge interface on the host.
pub const BRIDGE: &str = "ingot0";
/// A stack network's bridge name starts with this (not a hex digit, so no
/// container's veth, `ing<hex>`, matches it)...
pub const NETWORK_PREFIX: &str = "ingn";
/// ...and an internal network's with this.
pub const INTERNAL_PREFIX: &str = "ingi";

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Creates the default bridge if missing (see [`ensure`]).
pub fn ensure_bridge() -> Result<()> {
    ensure(&Network::default_bridge())
}

/// Creates `net`'s bridge if missing and makes sure it is up with its
/// gateway address and its firewall rules. Safe to race with other
/// processes doing the same.
pub fn ensure(net: &Network) -> Result<()> {
    net.validate()?;
    let name = net.bridge.as_str();
    let mut created = false;
    let mut setup = || -> Result<(), String> {
        let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        if !link_exists(name) {
            created = true;
            match nl.add_bridge(name) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(format!("create: {e}")),
            }
        }
        let index = nl.must_index(name).map_err(|e| e.to_string())?;
        // A fixed MAC: a bridge without one takes its lowest port's, which
        // changes as containers come and go, and every container's cached
        // gateway MAC goes stale (replies lost for the ~5 s the kernel waits
        // before re-probing a neighbour).
        let mac = mac_for(&net.gateway().to_string()).ok_or("bad gateway address")?;
        let current = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default();
        let assigned = std::fs::read_to_string(format!("/sys/class/net/{name}/addr_assign_type")).unwrap_or_default();
        let set_mac = (current.trim() != mac || assigned.trim() != "3")
            .then(|| parse_mac(&mac))
            .flatten();
        nl.replace_address(index, net.gateway(), net.prefix)
            .map_err(|e| format!("address {}/{}: {e}", net.gateway(), net.prefix))?;
        nl.set_link(index, set_mac, None, true).map_err(|e| format!("up: {e}"))
    };
    setup().map_err(|e| RuntimeError::Setup(format!("bridge {name}: {e}")))?;
    // Once per boot (the mark is on /run's tmpfs, as the rules are in the
    // kernel) and whenever a bridge is made; the daemon re-checks at start.
    let run = std::path::Path::new(super::ipam::RUN_DIR);
    let mark = run.join("forwarding");
    if created || !mark.exists() {
        ensure_forwarding()?;
        let _ = std::fs::create_dir_all(run);
        let _ = std::fs::write(&mark, b"");
    }
    let own = run.join(format!("forwarding-{name}"));
    if created || !own.exists() {
        network_rules(net, true).map_err(|e| RuntimeError::Setup(format!("firewall rules of {name}: {e}")))?;
        let _ = std::fs::write(&own, b"");
    }
    Ok(())
}

/// Deletes `net`'s bridge and its rules (its containers must be gone:
/// their veths go with the bridge).
pub fn remove(net: &Network) -> Result<()> {
    net.validate()?;
    if net.bridge == BRIDGE {
        return Err(RuntimeError::invalid(
            "network",
            BRIDGE,
            "the default bridge is not removed",
        ));
    }
    let name = net.bridge.as_str();
    let gone = (|| -> std::io::Result<()> {
        let mut nl = Netlink::open()?;
        match nl.index(name)? {
            Some(i) => match nl.delete_link(i) {
                Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    })();
    gone.map_err(|e| RuntimeError::Setup(format!("remove bridge {name}: {e}")))?;
    let _ = std::fs::remove_file(std::path::Path::new(super::ipam::RUN_DIR).join(format!("forwarding-{name}")));
    network_rules(net, false).map_err(|e| RuntimeError::Setup(format!("firewall rules of {name}: {e}")))
}

/// Adds (or deletes) a network's own rules: traffic within its bridge is
/// let through, and what leaves a non-internal one is masqueraded.
fn network_rules(net: &Network, add: bool) -> Result<(), String> {
    let name = net.bridge.as_str();
    let cidr = net.cidr();
    let mut rules: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    if name != BRIDGE {
        rules.push(("filter", NETWORKS_CHAIN, vec!["-i", name, "-o", name, "-j", "ACCEPT"]));
    }
    if !net.internal {
        rules.push(("nat", NAT_CHAIN, vec!["-s", &cidr, "!", "-o", name, "-j", "MASQUERADE"]));
    }
    for (table, chain, rule) in rules {
        let with = |op: &'static str| {
            let mut v = vec!["-t", table, op, chain];
            v.extend_from_slice(&rule);
            v
        };
        if add {
            if !iptables(&with("-C"))? && !iptables(&with("-A"))? && !iptables(&with("-C"))? {
                return Err(format!("iptables {} failed", with("-A").join(" ")));
            }
        } else {
            while iptables(&with("-D"))? {}
        }
    }
    Ok(())
}

/// Runs `iptables -w ARGS`; whether it succeeded.
fn iptables(args: &[&str]) -> Result<bool, String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("iptables: {e} (install iptables)"))?;
    Ok(out.status.success())
}

/// Services' virtual addresses (`endpoint_mode: vip`): a local route, so
/// the daemon's mesh can listen on any of them and replicas reach them
/// through their gateway.
pub const VIP_SUBNET: &str = "10.232.0.0/16";

/// Deploy daemons' DNS servers, one address per store root.
pub const DNS_SUBNET: &str = "10.233.0.0/16";

/// Makes [`VIP_SUBNET`] and [`DNS_SUBNET`] local to the host (idempotent).
pub fn ensure_vip_route() -> Result<()> {
    let mut nl = Netlink::open().map_err(|e| RuntimeError::Setup(format!("netlink: {e}")))?;
    for (subnet, net) in [
        (VIP_SUBNET, Ipv4Addr::new(10, 232, 0, 0)),
        (DNS_SUBNET, Ipv4Addr::new(10, 233, 0, 0)),
    ] {
        nl.replace_local_route(net, 16)
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
/// One rule per stack network: traffic within its bridge.
pub const NETWORKS_CHAIN: &str = "INGOT-NETWORKS";

/// Lets the bridges' traffic through a host whose FORWARD policy drops it
/// (Docker's engine sets DROP, and with br_netfilter even traffic between
/// two ports of one bridge passes FORWARD), keeps networks apart, and
/// masquerades what leaves for other networks, so containers reach the
/// outside (egress NAT). ingot's rules live in chains of its own, jumped
/// to first from INPUT, FORWARD and POSTROUTING; the fixed ones are
/// rewritten at once (iptables-restore), each network's are added with it
/// ([`ensure`]). Made when a bridge is made and by the daemon at start-up;
/// idempotent and safe to race (iptables' lock).
pub fn ensure_forwarding() -> Result<()> {
    let (n, i) = (format!("{NETWORK_PREFIX}+"), format!("{INTERNAL_PREFIX}+"));
    let fixed = format!(
        "*filter\n:{INPUT_CHAIN} - [0:0]\n:{FORWARD_CHAIN} - [0:0]\n\
         -A {INPUT_CHAIN} -i {BRIDGE} -j RETURN\n\
         -A {INPUT_CHAIN} -i {n} -j RETURN\n\
         -A {INPUT_CHAIN} -i {i} -j RETURN\n\
         -A {INPUT_CHAIN} -i lo -j RETURN\n\
         -A {INPUT_CHAIN} -d 10.232.0.0/15 -j DROP\n\
         -A {FORWARD_CHAIN} -j {NETWORKS_CHAIN}\n\
         -A {FORWARD_CHAIN} -i {i} -j DROP\n\
         -A {FORWARD_CHAIN} -o {i} -j DROP\n\
         -A {FORWARD_CHAIN} -i {n} -o {n} -j DROP\n\
         -A {FORWARD_CHAIN} -i {n} -o {BRIDGE} -j DROP\n\
         -A {FORWARD_CHAIN} -i {BRIDGE} -o {n} -j DROP\n\
         -A {FORWARD_CHAIN} -i {BRIDGE} -j ACCEPT\n\
         -A {FORWARD_CHAIN} -i {n} -j ACCEPT\n\
         -A {FORWARD_CHAIN} -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A {FORWARD_CHAIN} -o {n} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n"
    );
    let setup = || -> Result<(), String> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("enable IP forwarding: {e}"))?;
        for (table, chain) in [
            ("filter", FORWARD_CHAIN),
            ("filter", INPUT_CHAIN),
            ("filter", NETWORKS_CHAIN),
            ("nat", NAT_CHAIN),
        ] {
            // -N fails when the chain exists: fine.
            iptables(&["-t", table, "-N", chain])?;
        }
        let mut restore = Command::new("iptables-restore")
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("iptables-restore: {e} (install iptables)"))?;
        if let Some(mut input) = restore.stdin.take() {
            use std::io::Write;
            input
                .write_all(fixed.as_bytes())
                .map_err(|e| format!("iptables-restore: {e}"))?;
        }
        let out = restore
            .wait_with_output()
            .map_err(|e| format!("iptables-restore: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "iptables-restore: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for (table, chain, target) in [
            ("filter", "INPUT", INPUT_CHAIN),
            ("filter", "FORWARD", FORWARD_CHAIN),
            ("nat", "POSTROUTING", NAT_CHAIN),
        ] {
            let check = ["-t", table, "-C", chain, "-j", target];
            if !iptables(&check)? && !iptables(&["-t", table, "-I", chain, "1", "-j", target])? && !iptables(&check)? {
                return Err(format!("iptables -t {table} -I {chain} 1 -j {target} failed"));
            }
        }
        Ok(())
    };
    setup().map_err(|e| RuntimeError::Setup(format!("forwarding for ingot's bridges: {e}")))?;
    network_rules(&Network::default_bridge(), true)
        .map_err(|e| RuntimeError::Setup(format!("firewall rules of {BRIDGE}: {e}")))
}

/// The host end's name for container `id`'s `n`th link (at most 15
/// bytes, IFNAMSIZ).
pub fn host_veth(id: &str, n: usize) -> String {
    format!("ing{}{n:x}", &id[..11.min(id.len())])
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

/// Joins the network namespace of process `pid` to each network of
/// `links`: a veth pair with `ethN` inside carrying the address (and
/// [`mac_for`] it), loopback up. The default route goes through the first
/// network that is not internal; with none, only the host's DNS and
/// virtual addresses (10.232.0.0/15) are routed, through the first.
pub fn attach(id: &str, pid: i32, links: &[(Network, Ipv4Addr)]) -> Result<()> {
    if links.len() > 16 {
        return Err(RuntimeError::Setup(format!("container {id}: at most 16 networks")));
    }
    let ns_path = format!("/proc/{pid}/ns/net");
    let run = || -> Result<(), String> {
        let ns = File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
        let pid = u32::try_from(pid).map_err(|_| "bad pid")?;
        let mut host = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        for (n, (net, address)) in links.iter().enumerate() {
            let veth = host_veth(id, n);
            let mac = mac_for(&address.to_string())
                .and_then(|m| parse_mac(&m))
                .ok_or("bad address")?;
            host.add_veth(&veth, &format!("eth{n}"), mac, pid)
                .map_err(|e| format!("veth {veth}: {e}"))?;
            let bridge = host.must_index(&net.bridge).map_err(|e| e.to_string())?;
            let index = host.must_index(&veth).map_err(|e| e.to_string())?;
            host.set_link(index, None, Some(bridge), true)
                .map_err(|e| format!("{veth} on {}: {e}", net.bridge))?;
        }
        let mut inside = Netlink::open_in(&ns).map_err(|e| format!("netlink in the container: {e}"))?;
        let lo = inside.must_index("lo").map_err(|e| e.to_string())?;
        inside
            .set_link(lo, None, None, true)
            .map_err(|e| format!("lo up: {e}"))?;
        for (n, (net, address)) in links.iter().enumerate() {
            let eth = format!("eth{n}");
            let index = inside.must_index(&eth).map_err(|e| e.to_string())?;
            inside
                .replace_address(index, *address, net.prefix)
                .map_err(|e| format!("{eth} {address}/{}: {e}", net.prefix))?;
            inside
                .set_link(index, None, None, true)
                .map_err(|e| format!("{eth} up: {e}"))?;
        }
        match links.iter().find(|(net, _)| !net.internal).or(links.first()) {
            Some((net, _)) if !net.internal => inside.add_route(None, net.gateway()),
            Some((net, _)) => inside.add_route(Some((Ipv4Addr::new(10, 232, 0, 0), 15)), net.gateway()),
            None => Ok(()),
        }
        .map_err(|e| format!("route: {e}"))
    };
    run().map_err(|e| RuntimeError::Setup(format!("network for container {}: {e}", &id[..12.min(id.len())])))
}

/// Brings up loopback in the network namespace of process `pid`.
pub fn loopback(pid: i32) -> Result<()> {
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&ns_path).map_err(RuntimeError::io(&ns_path))?;
    let up = || -> std::io::Result<()> {
        let mut nl = Netlink::open_in(&ns)?;
        let lo = nl.must_index("lo")?;
        nl.set_link(lo, None, None, true)
    };
    up().map_err(|e| RuntimeError::Setup(format!("bring up lo: {e}")))
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
    fn veth_names_fit() {
        assert_eq!(host_veth(&"ab".repeat(32), 15).len(), 15);
        assert_ne!(host_veth("abcdef0123456", 0), host_veth("abcdef0123456", 1));
    }
}
