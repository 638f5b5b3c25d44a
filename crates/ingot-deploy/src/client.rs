//! The CLI's side of the daemon API: one HTTP/1.1 request per call, over
//! the unix socket or over TCP with mutual TLS.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::{DeployError, Result};

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, with the TLS directory holding ca.pem, client.pem, client-key.pem.
    Tcp {
        addr: String,
        tls: PathBuf,
    },
}

impl Endpoint {
    /// `tcp://HOST:PORT` (mutual TLS with the files in `tls`), else the socket path.
    pub fn parse(host: Option<&str>, socket: &Path, tls: &Path) -> Result<Endpoint> {
        match host {
            None => Ok(Endpoint::Unix(socket.to_path_buf())),
            Some(h) => match h.strip_prefix("tcp://") {
                Some(addr) => Ok(Endpoint::Tcp {
                    addr: addr.trim_end_matches('/').to_string(),
                    tls: tls.to_path_buf(),
                }),
                None => match h.strip_prefix("unix://") {
                    Some(p) => Ok(Endpoint::Unix(PathBuf::from(p))),
                    None => Err(DeployError::Invalid(format!(
                        "daemon host {h:?}: expected tcp://HOST:PORT or unix:///PATH"
                    ))),
                },
            },
        }
    }
}

/// Sends `method path` with an optional JSON body; returns (status, JSON).
pub async fn call(endpoint: &Endpoint, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    match endpoint {
        Endpoint::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                DeployError::Daemon(format!(
                    "cannot reach the daemon at {} ({e}); start it with `ingot daemon`",
                    socket.display()
                ))
            })?;
            exchange(stream, method, path, body).await
        }
        Endpoint::Tcp { addr, tls } => {
            let connector = crate::tls::connector(tls)?;
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| DeployError::Daemon(format!("cannot reach the daemon at {addr} ({e})")))?;
            let host = addr
                .rsplit_once(':')
                .map_or(addr.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| DeployError::Invalid(format!("daemon host {host:?}: {e}")))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| DeployError::Daemon(format!("TLS with the daemon at {addr}: {e}")))?;
            exchange(stream, method, path, body).await
        }
    }
}

async fn exchange<S>(stream: S, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "ingot")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| DeployError::Daemon(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))?
        .to_bytes();
    let v =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, v))
}

/// Like [`call`], but a 4xx/5xx answer is an error carrying the daemon's message.
pub async fn request(endpoint: &Endpoint, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, v) = call(endpoint, method, path, body).await?;
    if status >= 400 {
        let msg = v["error"].as_str().map(String::from).unwrap_or_else(|| v.to_string());
        return Err(match status {
            404 => DeployError::NotFound(msg),
            _ => DeployError::Invalid(msg),
        });
    }
    Ok(v)
}
