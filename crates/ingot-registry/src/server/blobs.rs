//! GET/HEAD/DELETE /v2/<name>/blobs/<digest>: streamed from the blob file,
//! with single byte ranges.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ingot_oci::Digest;

use super::{Req, Shared};
use crate::error::ApiError;

pub(crate) fn parse_digest(d: &str) -> Result<Digest, ApiError> {
    d.parse::<Digest>()
        .map_err(|e| ApiError::digest_invalid(format!("{d:?}: {e}")))
}

/// One byte range (RFC 9110 14.1.2) against a blob of `size` bytes:
/// `bytes=START-END` (an END past the blob is trimmed to its last byte),
/// `bytes=START-`, or the suffix `bytes=-N` (the last N bytes). `None` when
/// not satisfiable (a START at or past the end, an empty suffix).
fn range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (s, e) = spec.split_once('-')?;
    let (s, e) = (s.trim(), e.trim());
    let last = size.checked_sub(1)?;
    if s.is_empty() {
        let n: u64 = e.parse().ok().filter(|n| *n > 0)?;
        return Some((size - n.min(size), last));
    }
    let start: u64 = s.parse().ok().filter(|st| *st < size)?;
    let end: u64 = if e.is_empty() {
        last
    } else {
        e.parse::<u64>().ok()?.min(last)
    };
    (start <= end).then_some((start, end))
}

pub(crate) async fn get(app: &Shared, name: &str, d: &str, req: &Req) -> Result<Response, ApiError> {
    let digest = parse_digest(d)?;
    let (repo, ds) = (name.to_string(), digest.to_string());
    if !app.db(move |s| s.reg_has_blob(&repo, &ds)).await? {
        return Err(ApiError::blob_unknown(d));
    }
    let path = app.blobs.path(&digest);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return Err(ApiError::blob_unknown(d)),
    };
    let size = file.metadata().await.map_err(ApiError::internal)?.len();
    let head = req.method == axum::http::Method::HEAD;
    let requested = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match requested {
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
        Some(r) => match range(r, size) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            None => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response())
            }
        },
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    let body = if head {
        Body::empty()
    } else {
        stream_file(file.into_std().await, start, len)
    };
    resp.body(body).map_err(ApiError::internal)
}

/// Bytes per chunk a blob is read in.
const CHUNK: usize = 1 << 20;

/// `len` bytes of `file` from `start` as a body: read by one task of the
/// blocking pool for the whole response, at most 4 chunks ahead of the
/// client, instead of one trip to that pool per chunk.
fn stream_file(file: std::fs::File, start: u64, len: u64) -> Body {
    use std::io::{Read, Seek};
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                // The file is shorter than it said: the response breaks
                // off rather than end short of its Content-Length quietly.
                let _ = tx.blocking_send(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob file ended early",
                )));
                return;
            }
            buf.truncate(filled);
            left -= filled as u64;
            // A client gone: stop reading.
            if tx.blocking_send(Ok(buf.into())).is_err() {
                return;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

pub(crate) async fn delete(app: &Shared, name: &str, d: &str) -> Result<Response, ApiError> {
    let digest = parse_digest(d)?;
    let (repo, ds) = (name.to_string(), digest.to_string());
    if !app.db(move |s| s.reg_unlink_blob(&repo, &ds)).await? {
        return Err(ApiError::blob_unknown(d));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        assert_eq!(super::range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(super::range("bytes=90-", 100), Some((90, 99)));
        // RFC 9110: an end past the blob is trimmed; suffix ranges are the last N bytes.
        assert_eq!(super::range("bytes=50-200", 100), Some((50, 99)));
        assert_eq!(super::range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(super::range("bytes=-500", 100), Some((0, 99)));
        assert_eq!(super::range("bytes=-0", 100), None);
        assert_eq!(super::range("bytes=100-", 100), None);
        assert_eq!(super::range("bytes=0-0", 0), None);
        assert_eq!(super::range("bytes=9-0", 100), None);
        assert_eq!(super::range("items=0-1", 100), None);
    }
}
