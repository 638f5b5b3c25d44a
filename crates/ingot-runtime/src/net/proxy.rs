//! Published ports: a userland TCP proxy on the host, like docker-proxy.
//!
//! Listeners are bound before the container starts, so a port that is
//! already taken fails `run` (exit 125) with nothing started. The proxy
//! lives in the container's monitor process and ends with it.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::PortMap;
use crate::error::{Result, RuntimeError};

/// Bound listeners, not yet serving.
pub struct Published {
    listeners: Vec<(TcpListener, PortMap)>,
}

/// Binds every published port; the first that cannot be bound is an error
/// naming it.
pub fn bind(ports: &[PortMap]) -> Result<Published> {
    let mut listeners = Vec::new();
    for p in ports {
        let addr = SocketAddr::new(p.host_ip, p.host_port);
        let l = TcpListener::bind(addr).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::AddrInUse {
                "port is already in use".to_string()
            } else {
                e.to_string()
            };
            RuntimeError::Setup(format!("publish {addr} -> {}: {why}", p.container_port))
        })?;
        listeners.push((l, *p));
    }
    Ok(Published { listeners })
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
}
