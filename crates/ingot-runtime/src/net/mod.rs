//! Container networking.
//!
//! Three modes, as Docker's: `bridge` (the default: an own network
//! namespace joined to ingot's bridge by a veth pair, see [`bridge`]),
//! `none` (an own namespace with only loopback) and `host`. Published ports
//! are served by a userland proxy on the host ([`proxy`]).
//!
//! Invariant: every interface ingot makes for a container lives in (or is
//! paired with one in) the container's network namespace, so the kernel
//! removes it when the container's last process exits, whatever killed the
//! monitor. Only the bridge itself outlives containers.

pub mod bridge;
pub mod ipam;
pub mod netlink;
pub mod proxy;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace on ingot's bridge, with a private address.
    #[default]
    Bridge,
    /// Own network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// The name `--network` takes (and cache keys and bills of materials use).
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bridge" | "default" => Ok(NetworkMode::Bridge),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(RuntimeError::invalid("network", s, "expected bridge, host or none")),
        }
    }
}

/// A bridge network a container joins: ingot's default `ingot0` (what
/// `ingot run --network bridge` uses), or one a stack declares (its own
/// bridge and subnet, isolated from every other network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The bridge interface: `ingot0`, or `ingn…` (`ingi…` when internal),
    /// so that firewall rules can name every network by a wildcard.
    pub bridge: String,
    /// The network's address (host part zero).
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// No way out: no default route, nothing forwarded beyond the bridge,
    /// no NAT. The host's DNS and virtual addresses still answer.
    #[serde(default)]
    pub internal: bool,
}

impl Network {
    /// `ingot0`, 10.231.0.0/16.
    pub fn default_bridge() -> Network {
        Network {
            bridge: bridge::BRIDGE.to_string(),
            subnet: Ipv4Addr::new(10, 231, 0, 0),
            prefix: 16,
            internal: false,
        }
    }

    /// Checks what a client may have sent: a bridge name ingot would make,
    /// a prefix of 8 to 29 bits, a subnet with its host part zero.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| RuntimeError::invalid("network", &self.bridge, why.to_string());
        let named = self.bridge == bridge::BRIDGE
            || (self.bridge.len() <= 15
                && (self.bridge.starts_with(bridge::NETWORK_PREFIX)
                    || self.bridge.starts_with(bridge::INTERNAL_PREFIX))
                && self.bridge[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        if !named {
            return Err(bad("not a bridge name ingot makes (ingot0, ingn…, ingi…)"));
        }
        if self.internal != self.bridge.starts_with(bridge::INTERNAL_PREFIX) {
            return Err(bad("an internal network's bridge is named ingi…, others ingn…"));
        }
        if !(8..=29).contains(&self.prefix) {
            return Err(bad("a subnet's prefix is 8 to 29 bits"));
        }
        if u32::from(self.subnet) & !self.mask() != 0 {
            return Err(bad("the subnet's host part is not zero"));
        }
        Ok(())
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// The bridge's own address: the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// `SUBNET/PREFIX`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.subnet)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Network) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.subnet) & m == u32::from(other.subnet) & m
    }

    /// Container addresses, lowest first (after the gateway, before the
    /// broadcast address).
    pub fn candidates(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.subnet);
        let last = base | !self.mask();
        (base + 2..last).map(Ipv4Addr::from)
    }
}

/// A published port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port: `host_ip:host_port` on the host forwards TCP
/// connections (or UDP datagrams) to `container_port` on the container's
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
}

impl std::str::FromStr for PortMap {
    type Err = RuntimeError;

    /// `[IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`; the host address defaults
    /// to loopback, so nothing is exposed beyond this machine unless asked.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| RuntimeError::invalid("port mapping", s, why.to_string());
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, proto)) => return Err(bad(&format!("protocol {proto:?} is not tcp or udp"))),
            None => (s, Protocol::Tcp),
        };
        let (ip, host, ctr) = match spec.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
            [ctr, host] => (None, *host, *ctr),
            [ctr, host, ip] => (Some(*ip), *host, *ctr),
            _ => return Err(bad("expected [IP:]HOSTPORT:CONTAINERPORT")),
        };
        let port = |p: &str, what: &str| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(&format!("{what} port {p:?} is not a number from 1 to 65535"))),
            }
        };
        let host_ip = match ip.map(|i| i.trim_start_matches('[').trim_end_matches(']')) {
            None | Some("") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(i) => i.parse().map_err(|_| bad(&format!("{i:?} is not an IP address")))?,
        };
        Ok(PortMap {
            host_ip,
            host_port: port(host, "host")?,
            container_port: port(ctr, "container")?,
            protocol,
        })
    }
}

/// Lets connections waiting in the accept queue of a listener that closes
/// move to another listener of the same SO_REUSEPORT group
/// (`net.ipv4.tcp_migrate_req`, Linux 5.14): a replaced daemon's published
/// ports and virtual addresses then lose no connection in the handover.
/// Host-wide, as `ip_forward`; whether the kernel has it.
pub fn migrate_listeners() -> bool {
    std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1").is_ok()
}

/// Brings the loopback interface up (a fresh network namespace has it down).
pub fn loopback_up() -> Result<(), String> {
    // SAFETY: an ifreq zeroed and named "lo", passed to two ioctls on a
    // socket we close before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(format!("bring up lo: {err}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps_parse_like_docker() {
        let p: PortMap = "8080:80".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port),
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080, 80)
        );
        let p: PortMap = "0.0.0.0:8080:80/tcp".parse().unwrap();
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let p: PortMap = "[::1]:8080:80".parse().unwrap();
        assert!(p.host_ip.is_ipv6());
        let p: PortMap = "5353:53/udp".parse().unwrap();
        assert_eq!((p.host_port, p.container_port, p.protocol), (5353, 53, Protocol::Udp));
        for bad in [
            "80",
            "0:80",
            "x:80",
            "8080:70000",
            "8080:80/sctp",
            "1.2.3:8080:80",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<PortMap>().is_err(), "{bad}");
        }
    }

    #[test]
    fn networks_hold_their_addresses() {
        let d = Network::default_bridge();
        assert_eq!(d.gateway(), Ipv4Addr::new(10, 231, 0, 1));
        assert_eq!(d.candidates().next(), Some(Ipv4Addr::new(10, 231, 0, 2)));
        assert_eq!(d.candidates().last(), Some(Ipv4Addr::new(10, 231, 255, 254)));
        assert_eq!(d.candidates().count(), 65533);
        d.validate().unwrap();
        let n = Network {
            bridge: "ingn0123456789a".into(),
            subnet: Ipv4Addr::new(10, 240, 3, 0),
            prefix: 24,
            internal: false,
        };
        n.validate().unwrap();
        assert!(n.contains(Ipv4Addr::new(10, 240, 3, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 240, 4, 1)));
        assert_eq!(n.candidates().count(), 253);
        let wide = Network {
            subnet: Ipv4Addr::new(10, 240, 0, 0),
            prefix: 16,
            ..n.clone()
        };
        assert!(n.overlaps(&wide) && wide.overlaps(&n) && !n.overlaps(&d));
        for bad in [
            Network {
                prefix: 30,
                ..n.clone()
            },
            Network {
                subnet: Ipv4Addr::new(10, 240, 3, 1),
                ..n.clone()
            },
            Network {
                bridge: "eth0".into(),
                ..n.clone()
            },
            Network {
                bridge: "ingn../x".into(),
                ..n.clone()
            },
            Network {
                internal: true,
                ..n.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!("bridge".parse::<NetworkMode>().unwrap(), NetworkMode::Bridge);
        assert_eq!(NetworkMode::default(), NetworkMode::Bridge);
        assert!("overlay".parse::<NetworkMode>().is_err());
    }
}
