//! Service discovery: the daemon's DNS server (UDP port 53 on an address
//! of its own, [`address`]), every replica's name server.
//!
//! A replica asking for a service of its own stack (`api` or `demo_api`)
//! gets the service's virtual address (`endpoint_mode: vip`, served by the
//! mesh from its healthy replicas) or its healthy replicas' addresses
//! (`dnsrr`); another stack's names are not its to see. Every other
//! question is relayed to the host's name servers (/etc/resolv.conf).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::engine::Engine;

/// Where the daemon of store `root` answers: an address of its own in
/// 10.233.0.0/16 (routed to this host), so that the daemons of several
/// roots on one host each answer their own replicas.
pub fn address(root: &Path) -> SocketAddr {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let ip = ingot_runtime::net::bridge::address_in_16(
        std::net::Ipv4Addr::new(10, 233, 0, 0),
        root.as_os_str().as_encoded_bytes(),
        0,
    );
    SocketAddr::from((ip, 53))
}

/// Binds [`address`] (SO_REUSEPORT, so a replacing daemon of the same
/// root can bind it too). The daemon binds before it serves anything: no
/// replica is given a name server that does not answer.
pub fn bind(root: &Path) -> std::io::Result<std::net::UdpSocket> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    // CLOEXEC: no replica's monitor (a child of the daemon) may inherit it
    // (a copy held elsewhere would take half the questions, SO_REUSEPORT).
    let fd = rustix::net::socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &address(root))?;
    let sock = std::net::UdpSocket::from(fd);
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// The most questions answered at once; more are dropped (clients retry).
const IN_FLIGHT: usize = 256;

/// Answers on `sock` until the task is dropped. Only replicas this daemon
/// started or adopted are answered (nothing else may use it as a relay).
pub async fn serve(engine: Arc<Engine>, sock: std::net::UdpSocket) -> std::io::Result<()> {
    let sock = Arc::new(UdpSocket::from_std(sock)?);
    let upstream = Arc::new(upstream());
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let known = match peer.ip() {
            IpAddr::V4(a) => engine.client_stack(a).is_some(),
            IpAddr::V6(_) => false,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        if !known {
            continue;
        }
        let query = buf[..n].to_vec();
        let (sock, engine, upstream) = (sock.clone(), engine.clone(), upstream.clone());
        tokio::spawn(async move {
            if let Some(answer) = answer(&engine, &upstream, &query, peer).await {
                let _ = sock.send_to(&answer, peer).await;
            }
            drop(slot);
        });
    }
}

/// The host's name servers, from /etc/resolv.conf.
fn upstream() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

async fn answer(engine: &Engine, upstream: &[SocketAddr], query: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let q = msg.queries().first()?.clone();
    let name = q.name().to_ascii();
    let local = match peer.ip() {
        IpAddr::V4(client) => engine.resolve(client, &name),
        IpAddr::V6(_) => None,
    };
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .add_query(q.clone());
    match local {
        Some(addrs) => {
            reply.set_authoritative(true);
            if q.query_type() == RecordType::A {
                for a in addrs {
                    reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(a.into())));
                }
            }
        }
        None => match relay(upstream, query).await {
            Some(a) => return Some(a),
            None => {
                reply.set_response_code(ResponseCode::ServFail);
            }
        },
    }
    reply.to_vec().ok()
}

/// Asks the host's name servers in turn (2 s each).
async fn relay(upstream: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for server in upstream {
        let Ok(sock) = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await else {
            continue;
        };
        if sock.send_to(query, server).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            if from == *server {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}
