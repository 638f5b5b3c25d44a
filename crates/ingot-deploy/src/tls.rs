//! Mutual TLS for the daemon's optional TCP listener.
//!
//! A TLS directory holds `ca.pem`, `server.pem` + `server-key.pem` and
//! `client.pem` + `client-key.pem`. [`ensure_dev_ca`] makes a development
//! CA and both certificates with rcgen when the directory has none (keys
//! 0600); production setups put their own files there. The server accepts
//! only clients whose certificate chains to `ca.pem`; the client accepts
//! only a server whose certificate chains to it and names the host.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{DeployError, Result};

fn err(path: &Path, e: impl std::fmt::Display) -> DeployError {
    DeployError::Invalid(format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| err(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| err(path, e))
}

/// Makes a development CA, a server certificate for `hosts` and a client
/// certificate in `dir`, unless `dir/ca.pem` exists.
pub fn ensure_dev_ca(dir: &Path, hosts: &[String]) -> Result<bool> {
    if dir.join("ca.pem").exists() {
        return Ok(false);
    }
    fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let gen = |e: rcgen::Error| DeployError::Invalid(format!("certificate generation: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingot development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().map_err(gen)?).map_err(gen)?;
    let leaf = |names: Vec<String>, cn: &str, usage: rcgen::ExtendedKeyUsagePurpose| -> Result<(String, String)> {
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut p = rcgen::CertificateParams::new(names).map_err(gen)?;
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca).map_err(gen)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf(
        hosts.to_vec(),
        "ingot daemon",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client, client_key) = leaf(Vec::new(), "ingot client", rcgen::ExtendedKeyUsagePurpose::ClientAuth)?;
    write(&dir.join("ca.pem"), &ca.pem(), 0o644)?;
    write(&dir.join("server.pem"), &server, 0o644)?;
    write(&dir.join("server-key.pem"), &server_key, 0o600)?;
    write(&dir.join("client.pem"), &client, 0o644)?;
    write(&dir.join("client-key.pem"), &client_key, 0o600)?;
    Ok(true)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let c: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(path, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| err(path, e))?;
    if c.is_empty() {
        return Err(err(path, "no certificate in the file"));
    }
    Ok(c)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| err(path, e))
}

fn roots(dir: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&dir.join("ca.pem"))? {
        roots.add(c).map_err(|e| err(&dir.join("ca.pem"), e))?;
    }
    Ok(Arc::new(roots))
}

/// The server side: its certificate, and client certificates required.
pub fn acceptor(dir: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(dir)?, provider())
        .build()
        .map_err(|e| err(&dir.join("ca.pem"), e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(dir, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.join("server.pem"))?, key(&dir.join("server-key.pem"))?)
        .map_err(|e| err(&dir.join("server-key.pem"), e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The client side: trusts `ca.pem`, presents `client.pem`.
pub fn connector(dir: &Path) -> Result<tokio_rustls::TlsConnector> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(dir, e))?
        .with_root_certificates(roots(dir)?)
        .with_client_auth_cert(certs(&dir.join("client.pem"))?, key(&dir.join("client-key.pem"))?)
        .map_err(|e| err(&dir.join("client-key.pem"), e))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
