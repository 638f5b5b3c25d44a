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

/// A connection to the daemon, whichever transport.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn open(endpoint: &Endpoint) -> Result<Box<dyn Io>> {
    match endpoint {
        Endpoint::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                DeployError::Daemon(format!(
                    "cannot reach the daemon at {} ({e}); start it with `ingot daemon`",
                    socket.display()
                ))
            })?;
            Ok(Box::new(stream))
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
            Ok(Box::new(stream))
        }
    }
}

/// Sends `method path` with an optional JSON body; returns (status, JSON).
pub async fn call(endpoint: &Endpoint, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let resp = send(open(endpoint).await?, method, path, body).await?;
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

/// GETs `path`, a stream of JSON lines, and hands each line to `each`
/// until it returns false or the daemon ends the stream.
pub async fn follow(endpoint: &Endpoint, path: &str, mut each: impl FnMut(&str) -> bool) -> Result<()> {
    let resp = send(open(endpoint).await?, "GET", path, None).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| DeployError::Daemon(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if status >= 400 {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                return Err(DeployError::Invalid(v["error"].as_str().unwrap_or(&line).to_string()));
            }
            if !line.is_empty() && !each(&line) {
                return Ok(());
            }
        }
    }
    if status >= 400 {
        let text = String::from_utf8_lossy(&pending).into_owned();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        return Err(DeployError::Invalid(v["error"].as_str().unwrap_or(&text).to_string()));
    }
    Ok(())
}

async fn send(
    stream: Box<dyn Io>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
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
    sender
        .send_request(req)
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))
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
