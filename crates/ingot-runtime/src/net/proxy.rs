//! Published ports: a userland TCP and UDP proxy on the host, like
//! docker-proxy. UDP keeps one socket towards the container per client
//! (so replies find their way back), dropped after 60 s without traffic.
//!
//! Listeners are bound before the container starts, so a port that is
//! already taken fails `run` (exit 125) with nothing started. The proxy
//! lives in the container's monitor process and ends with it.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{PortMap, Protocol};
use crate::error::{Result, RuntimeError};

/// Bound listeners, not yet serving.
pub struct Published {
    listeners: Vec<(TcpListener, PortMap)>,
    datagrams: Vec<(UdpSocket, PortMap)>,
}

/// How long a UDP client's flow lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// The most UDP clients one port keeps flows for at once.
const UDP_FLOWS: usize = 1024;

/// Binds every published port; the first that cannot be bound is an error
/// naming it.
pub fn bind(ports: &[PortMap]) -> Result<Published> {
    let mut listeners = Vec::new();
    let mut datagrams = Vec::new();
    for p in ports {
        let addr = SocketAddr::new(p.host_ip, p.host_port);
        let taken = |e: io::Error| {
            let why = if e.kind() == io::ErrorKind::AddrInUse {
                "port is already in use".to_string()
            } else {
                e.to_string()
            };
            RuntimeError::Setup(format!("publish {addr}/{} -> {}: {why}", p.protocol, p.container_port))
        };
        match p.protocol {
            Protocol::Tcp => listeners.push((TcpListener::bind(addr).map_err(taken)?, *p)),
            Protocol::Udp => datagrams.push((UdpSocket::bind(addr).map_err(taken)?, *p)),
        }
    }
    Ok(Published { listeners, datagrams })
}

impl Published {
    /// Starts forwarding to `target` (the container's address); returns at
    /// once, the proxy runs on its own threads.
    pub fn serve(self, target: std::net::IpAddr) {
        for (listener, p) in self.listeners {
            let to = SocketAddr::new(target, p.container_port);
            thread::spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(client) => {
                            thread::spawn(move || forward(client, to));
                        }
                        Err(e) => tracing::debug!(%e, "accept on published port"),
                    }
                }
            });
        }
        for (socket, p) in self.datagrams {
            let to = SocketAddr::new(target, p.container_port);
            thread::spawn(move || relay_udp(socket, to));
        }
    }
}

/// Relays datagrams from clients of `host` to `to`, each client through a
/// socket of its own whose replies go back to that client.
fn relay_udp(host: UdpSocket, to: SocketAddr) {
    let host = Arc::new(host);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = host.recv_from(&mut buf) else {
            continue;
        };
        let flow = flows.lock().unwrap_or_else(|e| e.into_inner()).get(&client).cloned();
        let flow = match flow {
            Some(f) => f,
            None => {
                if flows.lock().unwrap_or_else(|e| e.into_inner()).len() >= UDP_FLOWS {
                    continue;
                }
                let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                    .parse()
                    .expect("address");
                let Ok(up) = UdpSocket::bind(bind).and_then(|u| u.connect(to).map(|()| u)) else {
                    continue;
                };
                let _ = up.set_read_timeout(Some(UDP_IDLE));
                let up = Arc::new(up);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, up.clone());
                let (host, flows, back) = (host.clone(), flows.clone(), up.clone());
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65_536];
                    // Replies until the flow has been idle for UDP_IDLE.
                    while let Ok(n) = back.recv(&mut buf) {
                        let _ = host.send_to(&buf[..n], client);
                    }
                    flows.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                });
                up
            }
        };
        let _ = flow.send(&buf[..n]);
    }
}

/// Copies both ways until each side has closed; a refused or failed
/// connection to the container closes the client's.
fn forward(client: TcpStream, to: SocketAddr) {
    let server = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%to, %e, "published port: container does not answer");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || pipe(client, server2));
    pipe(server, client2);
    let _ = up.join();
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn forwards_and_refuses_a_taken_port() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let backend = TcpListener::bind((lo, 0)).unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        thread::spawn(move || {
            let (mut s, _) = backend.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
        });
        let probe = TcpListener::bind((lo, 0)).unwrap();
        let host_port = probe.local_addr().unwrap().port();
        let map = PortMap {
            host_ip: lo,
            host_port,
            container_port: backend_port,
            protocol: Protocol::Tcp,
        };
        let err = bind(&[map]).err().expect("taken port must be refused").to_string();
        assert!(
            err.contains("already in use") && err.contains(&host_port.to_string()),
            "{err}"
        );
        drop(probe);
        bind(&[map]).unwrap().serve(lo);
        let mut c = TcpStream::connect((lo, host_port)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "HELLO");
    }

    #[test]
    fn relays_udp_both_ways_per_client() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let backend = UdpSocket::bind((lo, 0)).unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = backend.recv_from(&mut buf) {
                let up: Vec<u8> = buf[..n].to_ascii_uppercase();
                backend.send_to(&up, from).unwrap();
            }
        });
        let probe = UdpSocket::bind((lo, 0)).unwrap();
        let host_port = probe.local_addr().unwrap().port();
        let map = PortMap {
            host_ip: lo,
            host_port,
            container_port: backend_port,
            protocol: Protocol::Udp,
        };
        let err = bind(&[map]).err().expect("taken port must be refused").to_string();
        assert!(err.contains("already in use") && err.contains("/udp"), "{err}");
        drop(probe);
        bind(&[map]).unwrap().serve(lo);
        for word in ["one", "two"] {
            let c = UdpSocket::bind((lo, 0)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.send_to(word.as_bytes(), (lo, host_port)).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], word.to_uppercase().as_bytes());
        }
    }
}
