//! The few rtnetlink requests ingot's networks need (links, addresses,
//! routes), over a plain netlink socket: no `ip` process per step.
//! Messages are built and parsed by netlink-packet-route.
//!
//! A socket works in the network namespace it was opened in:
//! [`Netlink::open_in`] opens one inside a container's namespace from a
//! short-lived thread that joined it (setns affects that thread only).

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An rtnetlink socket of one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// A socket in the network namespace `ns` (an open /proc/PID/ns/net).
    pub fn open_in(ns: &File) -> io::Result<Netlink> {
        let ns = ns.try_clone()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Netlink::open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netlink thread panicked")))
        })
    }

    /// Sends one request and waits for its acknowledgement (or the
    /// kernel's error); the answers to a GET are returned.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut answers = Vec::new();
        let mut rx = vec![0u8; 64 << 10];
        loop {
            let n = self.sock.recv(&mut &mut rx[..], 0)?;
            let mut at = 0;
            while at < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(m) => answers.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// The index of link `name`, if there is one.
    pub fn index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`Self::index`], an error naming the link when it is missing.
    pub fn must_index(&mut self, name: &str) -> io::Result<u32> {
        self.index(name)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link {name}")))
    }

    /// Creates bridge `name` (EEXIST when it is there).
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Creates the veth pair `host` (here) and `peer`, whose end goes
    /// straight into the network namespace of process `peer_pid` with MAC
    /// `peer_mac`.
    pub fn add_veth(&mut self, host: &str, peer: &str, peer_mac: [u8; 6], peer_pid: u32) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        p.attributes.push(LinkAttribute::NetNsPid(peer_pid));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Sets link `index`: its MAC address, its controller (a bridge), up.
    pub fn set_link(&mut self, index: u32, mac: Option<[u8; 6]>, controller: Option<u32>, up: bool) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(c) = controller {
            m.attributes.push(LinkAttribute::Controller(c));
        }
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Deletes link `index` (a veth's peer goes with it).
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), 0).map(drop)
    }

    /// Gives link `index` the address `ip/prefix` (replacing it if there).
    pub fn replace_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(ip.into()));
        m.attributes.push(AddressAttribute::Address(ip.into()));
        let host = u32::from(ip) | !(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
        m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(host)));
        self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE)
            .map(drop)
    }

    /// Routes `dest` (the default route when `None`) via `gateway`.
    pub fn add_route(&mut self, dest: Option<(Ipv4Addr, u8)>, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = unicast_route();
        if let Some((net, prefix)) = dest {
            m.header.destination_prefix_length = prefix;
            m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(net)));
        }
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Makes `net/prefix` local to this host (`ip route replace local NET
    /// dev lo`): the host answers every address of it.
    pub fn replace_local_route(&mut self, net: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let lo = self.must_index("lo")?;
        let mut m = unicast_route();
        m.header.table = 255;
        m.header.kind = RouteType::Local;
        m.header.scope = RouteScope::Host;
        m.header.destination_prefix_length = prefix;
        m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(net)));
        m.attributes.push(RouteAttribute::Oif(lo));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
            .map(drop)
    }
}

/// A unicast IPv4 route of the main table, made by ingot (boot protocol).
fn unicast_route() -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: AddressFamily::Inet,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..Default::default()
    };
    m
}

/// `02:42:...` as six bytes.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("02:42:0a:e7:00:02"), Some([2, 0x42, 10, 0xe7, 0, 2]));
        assert_eq!(parse_mac("02:42"), None);
        assert_eq!(parse_mac("02:42:0a:e7:00:02:07"), None);
    }

    /// In a network namespace of its own (root only): a bridge, a veth
    /// into a child's namespace, addresses and routes, all by netlink.
    #[test]
    fn links_addresses_and_routes_in_a_namespace_of_its_own() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("INGOT_REQUIRE_ALL").is_none(),
                "needs root (network namespaces)"
            );
            eprintln!("skipped: needs root (network namespaces)");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut nl = Netlink::open().unwrap();
            nl.add_bridge("tbr0").unwrap();
            let err = nl.add_bridge("tbr0").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
            let br = nl.must_index("tbr0").unwrap();
            nl.set_link(br, Some([2, 0x42, 10, 9, 0, 1]), None, true).unwrap();
            nl.replace_address(br, Ipv4Addr::new(10, 9, 0, 1), 24).unwrap();
            nl.replace_address(br, Ipv4Addr::new(10, 9, 0, 1), 24).unwrap();
            nl.add_route(Some((Ipv4Addr::new(10, 8, 0, 0), 16)), Ipv4Addr::new(10, 9, 0, 7))
                .unwrap();
            nl.replace_local_route(Ipv4Addr::new(10, 7, 0, 0), 16).unwrap();
            assert_eq!(nl.index("nope0").unwrap(), None);
            nl.delete_link(br).unwrap();
            assert_eq!(nl.index("tbr0").unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
