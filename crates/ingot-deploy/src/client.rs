//! The CLI's side of the daemon API: one HTTP/1.1 request per call over
//! the unix socket.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::{DeployError, Result};

/// Sends `method path` with an optional JSON body; returns (status, JSON).
pub async fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        DeployError::Daemon(format!(
            "cannot reach the daemon at {} ({e}); start it with `ingot daemon`",
            socket.display()
        ))
    })?;
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
pub async fn request(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, v) = call(socket, method, path, body).await?;
    if status >= 400 {
        let msg = v["error"].as_str().map(String::from).unwrap_or_else(|| v.to_string());
        return Err(match status {
            404 => DeployError::NotFound(msg),
            _ => DeployError::Invalid(msg),
        });
    }
    Ok(v)
}
