//! Who is on the other end of an API connection: the ledger's actor comes
//! from here, never from a request body. On the unix socket it is the
//! peer's credentials (`SO_PEERCRED`: uid, and the user name where it
//! resolves); over TCP, the subject of the client certificate mutual TLS
//! verified.

use std::net::SocketAddr;

use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

/// The connection's identity, as the ledger records it (`.0`), and the
/// peer's uid on the unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub String, pub Option<u32>);

impl Peer {
    /// The peer of a unix socket connection: its uid (and user name).
    pub fn unix(stream: &UnixStream) -> Peer {
        match stream.peer_cred() {
            Ok(cred) => Peer(unix_actor(cred.uid()), Some(cred.uid())),
            Err(e) => Peer(format!("unknown unix peer ({e})"), None),
        }
    }

    /// The peer of a mutual-TLS connection: its certificate's subject.
    pub fn tls(stream: &TlsStream<TcpStream>, addr: &SocketAddr) -> Peer {
        let (_, conn) = stream.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()) {
            Some(cert) => Peer(tls_actor(cert.as_ref()), None),
            // Unreachable: the acceptor requires a verified client certificate.
            None => Peer(format!("tls client {addr} without a certificate"), None),
        }
    }
}

/// `NAME (uid N)`, or `uid N` when the uid has no user name.
pub fn unix_actor(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// `tls: SUBJECT` of a DER certificate (RFC 4514 form, as `CN=ingot-client`).
pub fn tls_actor(der: &[u8]) -> String {
    use x509_cert::der::Decode;
    match x509_cert::Certificate::from_der(der) {
        Ok(c) => format!("tls: {}", c.tbs_certificate.subject),
        Err(e) => format!("tls: unparsable client certificate ({e})"),
    }
}

/// The user name of `uid` through the system's user database (NSS).
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pw, buf (with its length) and result are valid for the call;
    // on success pw's strings point into buf, which outlives their use.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_unknown_uids_do_not() {
        assert_eq!(unix_actor(0), "root (uid 0)");
        assert_eq!(unix_actor(3_999_999_999), "uid 3999999999");
    }

    #[test]
    fn certificate_subject() {
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(tls_actor(cert.der()), "tls: CN=alice");
        assert!(tls_actor(b"junk").starts_with("tls: unparsable"));
    }
}
