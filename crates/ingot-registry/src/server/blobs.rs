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
/// Responses read by a blocking-pool task of their own at once; more are
/// read one chunk per trip to the pool.
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);
/// How long a reader waits for a client to take the next chunk before it
/// gives up the response (and its blocking-pool thread).
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);

type Chunk = std::io::Result<axum::body::Bytes>;

/// `len` bytes of `file` from `start` as a body: read by one task of the
/// blocking pool for the whole response, at most 4 chunks ahead of the
/// client, instead of one trip to that pool per chunk. At most
/// [`READERS`] responses at once are read that way, and a client that takes
/// no chunk for [`STALLED`] loses its response, so slow clients cannot hold
/// the blocking pool; past that, chunks are read one trip at a time.
fn stream_file(file: std::fs::File, start: u64, len: u64) -> Body {
    use std::io::{Read, Seek};
    let Ok(permit) = READERS.try_acquire() else {
        return stream_file_async(tokio::fs::File::from_std(file), start, len);
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let send = |chunk: Chunk| -> bool {
            matches!(
                handle.block_on(tokio::time::timeout(STALLED, tx.send(chunk))),
                Ok(Ok(()))
            )
        };
        let mut file = file;
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
            send(Err(e));
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
                        send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                // The file is shorter than it said: the response breaks
                // off rather than end short of its Content-Length quietly.
                send(Err(short()));
                return;
            }
            buf.truncate(filled);
            left -= filled as u64;
            // A client gone or stalled: stop reading.
            if !send(Ok(buf.into())) {
                return;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

fn short() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "blob file ended early")
}

/// [`stream_file`] one chunk per trip to the blocking pool (tokio's file).
fn stream_file_async(file: tokio::fs::File, start: u64, len: u64) -> Body {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let state = (file, start, len, false);
    Body::from_stream(futures_util::stream::unfold(
        state,
        |(mut file, start, left, sought)| async move {
            let chunk: Chunk;
            if left == 0 {
                return None;
            }
            if !sought {
                if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
                    chunk = Err(e);
                    return Some((chunk, (file, start, 0, true)));
                }
            }
            let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => Some((Err(short()), (file, start, 0, true))),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf.into()), (file, start, left - n as u64, true)))
                }
                Err(e) => Some((Err(e), (file, start, 0, true))),
            }
        },
    ))
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
    async fn body_bytes(body: axum::body::Body) -> Result<Vec<u8>, String> {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        let mut s = body.into_data_stream();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn blobs_stream_whole_or_in_ranges_on_either_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(2 * super::CHUNK + 777)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let open = || std::fs::File::open(&path).unwrap();
        let n = data.len() as u64;
        for (start, len) in [(0, n), (5, 100), (super::CHUNK as u64 - 1, 3), (n - 1, 1)] {
            let want = &data[start as usize..(start + len) as usize];
            // A reader task of its own.
            let got = body_bytes(super::stream_file(open(), start, len)).await.unwrap();
            assert_eq!(got, want, "{start}+{len}");
            // Every reader taken: one chunk per trip to the pool instead.
            let held = super::READERS.acquire_many(64).await.unwrap();
            let got = body_bytes(super::stream_file(open(), start, len)).await.unwrap();
            assert_eq!(got, want, "{start}+{len}, fallback");
            drop(held);
        }
        // A file shorter than the response says breaks the body off.
        let err = body_bytes(super::stream_file(open(), n - 10, 20)).await.unwrap_err();
        assert!(err.contains("ended early"), "{err}");
        let held = super::READERS.acquire_many(64).await.unwrap();
        let err = body_bytes(super::stream_file(open(), n - 10, 20)).await.unwrap_err();
        assert!(err.contains("ended early"), "{err}");
        drop(held);
    }

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
