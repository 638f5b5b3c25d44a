//! Service discovery: the daemon's DNS server (UDP port 53 on an address
//! of its own, [`address`]), every replica's name server.
//!
//! A replica asking for a service of its own stack (`api` or `demo_api`)
//! gets the service's virtual address (`endpoint_mode: vip`, served by the
//! mesh from its healthy replicas) or its healthy replicas' addresses
//! (`dnsrr`); another stack's names are not its to see. Every other
//! question is relayed to the host's name servers (/etc/resolv.conf).
//! UDP and TCP on port 53, as any name server: an answer too long for a
//! UDP datagram (512 bytes, or the client's EDNS size) is truncated with
//! TC set, and the client asks again over TCP. AAAA questions for the
//! stack's names are answered with no records (the networks are IPv4).

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

/// The daemon's DNS sockets: UDP and TCP on [`address`].
pub struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

/// Binds [`address`], UDP and TCP (SO_REUSEPORT, so a replacing daemon of
/// the same root can bind it too). The daemon binds before it serves
/// anything: no replica is given a name server that does not answer.
pub fn bind(root: &Path) -> std::io::Result<Sockets> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    // CLOEXEC: no replica's monitor (a child of the daemon) may inherit
    // them (a copy held elsewhere would take half the questions).
    let make = |kind: SocketType| -> std::io::Result<rustix::fd::OwnedFd> {
        let fd = rustix::net::socket_with(AddressFamily::INET, kind, SocketFlags::CLOEXEC, None)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        sockopt::set_socket_reuseport(&fd, true)?;
        rustix::net::bind(&fd, &address(root))?;
        Ok(fd)
    };
    let udp = std::net::UdpSocket::from(make(SocketType::DGRAM)?);
    udp.set_nonblocking(true)?;
    let tcp_fd = make(SocketType::STREAM)?;
    rustix::net::listen(&tcp_fd, 128)?;
    let tcp = std::net::TcpListener::from(tcp_fd);
    tcp.set_nonblocking(true)?;
    Ok(Sockets { udp, tcp })
}

/// The most questions answered at once; more are dropped (clients retry).
const IN_FLIGHT: usize = 256;
/// The most TCP connections served at once, and how long one may idle.
const TCP_CONNECTIONS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The longest UDP answer without EDNS (RFC 1035).
const UDP_PLAIN: usize = 512;

/// Answers on `socks` until the task is dropped. Only replicas this daemon
/// started or adopted are answered (nothing else may use it as a relay).
pub async fn serve(engine: Arc<Engine>, socks: Sockets) -> std::io::Result<()> {
    let sock = Arc::new(UdpSocket::from_std(socks.udp)?);
    let tcp = tokio::net::TcpListener::from_std(socks.tcp)?;
    let upstream = Arc::new(upstream());
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let conns = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
    {
        let (engine, upstream) = (engine.clone(), upstream.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    continue;
                };
                let Ok(slot) = conns.clone().try_acquire_owned() else {
                    continue;
                };
                let (engine, upstream) = (engine.clone(), upstream.clone());
                tokio::spawn(async move {
                    if !known_now(&engine, peer).await {
                        return;
                    }
                    let _ = answer_tcp(&engine, &upstream, stream, peer).await;
                    drop(slot);
                });
            }
        });
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, engine, upstream) = (sock.clone(), engine.clone(), upstream.clone());
        tokio::spawn(async move {
            if !known_now(&engine, peer).await {
                return;
            }
            if let Some(answer) = answer(&engine, &upstream, &query, peer, true).await {
                let _ = sock.send_to(&answer, peer).await;
            }
            drop(slot);
        });
    }
}

/// How long a question from an address not known yet waits for start-up
/// to finish adopting the replicas.
const ADOPTING: Duration = Duration::from_secs(5);

/// [`known`], once start-up has adopted the replicas it found: a replacing
/// daemon shares the DNS sockets with its predecessor from its first
/// moment (SO_REUSEPORT spreads the questions over both), and a replica's
/// question that reaches it before the adoption is answered, not dropped
/// (its resolver would wait seconds to ask again).
async fn known_now(engine: &Engine, peer: SocketAddr) -> bool {
    if known(engine, peer) {
        return true;
    }
    engine.wait_adopted(ADOPTING).await;
    known(engine, peer)
}

/// Whether `peer` is a replica this daemon knows.
fn known(engine: &Engine, peer: SocketAddr) -> bool {
    match peer.ip() {
        IpAddr::V4(a) => engine.client_stack(a).is_some(),
        IpAddr::V6(_) => false,
    }
}

/// Questions over one TCP connection (each message after its 2-byte
/// length), until the client closes it or idles [`TCP_IDLE`].
async fn answer_tcp(
    engine: &Engine,
    upstream: &[SocketAddr],
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(reply) = answer(engine, upstream, &query, peer, false).await else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_all(&n.to_be_bytes()).await?;
        stream.write_all(&reply).await?;
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

async fn answer(
    engine: &Engine,
    upstream: &[SocketAddr],
    query: &[u8],
    peer: SocketAddr,
    udp: bool,
) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    // What fits a datagram: 512 bytes, or what the client's EDNS says.
    let room = msg
        .extensions()
        .as_ref()
        .map_or(UDP_PLAIN, |e| usize::from(e.max_payload()).clamp(UDP_PLAIN, 4096));
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
        // (Over UDP: an upstream answer too long for it comes back truncated.)
        None => match relay(upstream, query).await {
            Some(a) => return Some(a),
            None => {
                reply.set_response_code(ResponseCode::ServFail);
            }
        },
    }
    let bytes = reply.to_vec().ok()?;
    if udp && bytes.len() > room {
        // Too long for a datagram: the question alone, TC set; the client
        // asks again over TCP.
        reply.take_answers();
        reply.set_truncated(true);
        return reply.to_vec().ok();
    }
    Some(bytes)
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
