//! Blob uploads: POST (monolithic with `?digest=`, cross-repository
//! `?mount=&from=`, or a new session), PATCH chunks (in order: an
//! out-of-order Content-Range is 416), PUT `?digest=` to finish, GET status,
//! DELETE to cancel. A session's bytes go to `<root>/uploads/<uuid>` and are
//! hashed as they arrive; a finished upload whose digest matches is renamed
//! into the blob store and linked to the repository.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use ingot_oci::{Algorithm, Digest};

use super::blobs::parse_digest;
use super::{Req, Shared, Upload};
use crate::error::ApiError;

fn location(name: &str, uuid: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{uuid}")
}

fn created(name: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response()
}

fn session(status: StatusCode, name: &str, uuid: &str, offset: u64) -> Response {
    let range = format!("0-{}", offset.saturating_sub(1));
    (
        status,
        [
            (header::LOCATION, location(name, uuid)),
            (header::RANGE, range),
            (header::HeaderName::from_static("docker-upload-uuid"), uuid.to_string()),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
        .into_response()
}

/// Bytes of body frames handed to the blocking pool at a time.
const BATCH: usize = 1 << 20;
/// Frames shorter than this are copied together rather than held one by
/// one: a client sending tiny chunks cannot make a batch pin thousands of
/// small buffers.
const SMALL: usize = 16 << 10;

/// An upload's file and running hash, with the bytes written so far.
type Sink = (std::fs::File, ingot_oci::digest::Hasher, u64);

/// A session's turn (see [`turn`]), shared with the task writing its file;
/// `None` for a monolithic upload, which has no session.
type Turn = Option<Arc<tokio::sync::OwnedMutexGuard<()>>>;

/// Appends the request body to `path`, hashing it; bytes written.
///
/// The body's frames are gathered into batches of about [`BATCH`] bytes,
/// and each batch is hashed and written by one trip to the blocking pool
/// (not one per frame, and large frames with no copy through a buffer),
/// while the next batch is read: the hashing runs beside the reading
/// instead of in its way. A pool thread is held only while a batch is
/// written, so slow uploaders hold none.
///
/// The copy is a task of its own holding the session's `turn`: when the
/// request is dropped half-way (its client gone), the batch in flight is
/// still written before another request may touch the session, so the
/// session's file never holds bytes its hash has not seen.
async fn append(path: &Path, body: Body, hasher: &mut ingot_oci::digest::Hasher, turn: Turn) -> Result<u64, ApiError> {
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .await
        .map_err(ApiError::internal)?
        .into_std()
        .await;
    let hash = std::mem::replace(hasher, Algorithm::Sha256.hasher());
    let (_, hash, n) = tokio::spawn(copy(body, (file, hash, 0), turn))
        .await
        .map_err(ApiError::internal)??;
    *hasher = hash;
    Ok(n)
}

/// [`append`]'s copy: the body into `sink`, batch by batch.
async fn copy(body: Body, sink: Sink, _turn: Turn) -> Result<Sink, ApiError> {
    use std::io::Write;
    type Batch = Vec<axum::body::Bytes>;
    /// The sink, or the batch in flight that will give it back.
    enum Writer {
        Idle(Sink),
        Busy(tokio::task::JoinHandle<std::io::Result<Sink>>),
    }
    fn write((mut file, mut hash, mut n): Sink, batch: Batch) -> std::io::Result<Sink> {
        for chunk in batch {
            hash.update(&chunk);
            file.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        Ok((file, hash, n))
    }
    /// Waits for the batch in flight, if any: the sink back.
    async fn settle(writer: Writer) -> Result<Sink, ApiError> {
        match writer {
            Writer::Idle(sink) => Ok(sink),
            Writer::Busy(h) => h.await.map_err(ApiError::internal)?.map_err(ApiError::internal),
        }
    }
    let mut writer = Writer::Idle(sink);
    let mut stream = body.into_data_stream();
    let (mut batch, mut small, mut held) = (Batch::new(), Vec::new(), 0usize);
    loop {
        let next = match stream.next().await {
            Some(Ok(chunk)) => Some(chunk),
            None => None,
            Some(Err(e)) => {
                // What was read so far is written before the turn goes.
                let _ = settle(writer).await;
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    format!("reading the upload: {e}"),
                ));
            }
        };
        let end = next.is_none();
        if let Some(chunk) = next {
            held += chunk.len();
            if chunk.len() < SMALL {
                small.extend_from_slice(&chunk);
            } else {
                if !small.is_empty() {
                    batch.push(std::mem::take(&mut small).into());
                }
                batch.push(chunk);
            }
        }
        if end || held >= BATCH {
            if !small.is_empty() {
                batch.push(std::mem::take(&mut small).into());
            }
            if !batch.is_empty() {
                let ready = settle(writer).await?;
                let b = std::mem::take(&mut batch);
                writer = Writer::Busy(tokio::task::spawn_blocking(move || write(ready, b)));
            }
            held = 0;
        }
        if end {
            return settle(writer).await;
        }
    }
}

/// Verifies `file` against `digest` (the running sha256 when it applies,
/// else a fresh hash), installs it as a blob and links it to `name`.
async fn complete(
    app: &Shared,
    name: &str,
    file: PathBuf,
    hasher: ingot_oci::digest::Hasher,
    digest: &Digest,
) -> Result<(), ApiError> {
    let actual = if digest.algorithm() == Algorithm::Sha256 {
        hasher.finish()
    } else {
        let f = file.clone();
        let alg = digest.algorithm();
        tokio::task::spawn_blocking(move || ingot_store::hash_file(&f, alg))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
    };
    if actual != *digest {
        let _ = tokio::fs::remove_file(&file).await;
        return Err(ApiError::digest_invalid(format!(
            "content hashes to {actual}, not {digest}"
        )));
    }
    // Installed and linked under a writer lease: no GC (online, `ingot
    // gc`, `rmi`) can sweep the blob between the two.
    let lease = app.db(|s| s.lease()).await?;
    let blobs = app.blobs.clone();
    let d = digest.clone();
    tokio::task::spawn_blocking(move || blobs.install(&file, &d))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let (repo, ds) = (name.to_string(), digest.to_string());
    let linked = app.db(move |s| s.reg_link_blob(&repo, &ds)).await;
    drop(lease);
    linked
}

pub(crate) async fn start(app: &Shared, name: &str, req: &Req, body: Body) -> Result<Response, ApiError> {
    let mount = match (req.query.get("mount"), req.query.get("from")) {
        // Mounting needs pull on `from`; without it, an ordinary session.
        (Some(m), Some(from)) if super::auth::may_pull(app, from, req) => Some((m, from)),
        _ => None,
    };
    if let Some((m, from)) = mount {
        let digest = parse_digest(m)?;
        let (from, repo, ds) = (from.clone(), name.to_string(), digest.to_string());
        let mounted = app
            .db(move |s| {
                let ok = crate::names::valid_repo(&from)
                    && s.reg_has_blob(&from, &ds)?
                    && s.blobs().exists(&ds.parse().expect("valid"));
                if ok {
                    s.reg_link_blob(&repo, &ds)?;
                }
                Ok(ok)
            })
            .await?;
        if mounted {
            return Ok(created(name, &digest));
        }
        // Not mountable: an ordinary session, as the spec asks.
    }
    if let Some(d) = req.query.get("digest") {
        let digest = parse_digest(d)?;
        let file = app.uploads_dir.join(uuid::Uuid::new_v4().to_string());
        let mut hasher = Algorithm::Sha256.hasher();
        if let Err(e) = append(&file, body, &mut hasher, None).await {
            let _ = tokio::fs::remove_file(&file).await;
            return Err(e);
        }
        complete(app, name, file, hasher, &digest).await?;
        return Ok(created(name, &digest));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    tokio::fs::File::create(app.uploads_dir.join(&uuid))
        .await
        .map_err(ApiError::internal)?;
    let (u, repo) = (uuid.clone(), name.to_string());
    app.db(move |s| s.reg_upload_start(&u, &repo)).await?;
    app.uploads.lock().unwrap_or_else(|p| p.into_inner()).insert(
        uuid.clone(),
        Upload {
            hasher: Algorithm::Sha256.hasher(),
            offset: 0,
        },
    );
    Ok(session(StatusCode::ACCEPTED, name, &uuid, 0))
}

/// Checks that session `uuid` exists and belongs to `name`.
async fn owned(app: &Shared, name: &str, uuid: &str) -> Result<(), ApiError> {
    if uuid.contains(['/', '.']) || uuid.is_empty() {
        return Err(ApiError::upload_unknown(uuid));
    }
    let u = uuid.to_string();
    match app.db(move |s| s.reg_upload(&u)).await? {
        Some(repo) if repo == name => Ok(()),
        _ => Err(ApiError::upload_unknown(uuid)),
    }
}

/// Takes the session's state out of the map (rebuilding it from the file
/// after a restart, or after a request that was dropped half-way),
/// checking it belongs to `name`.
async fn take(app: &Shared, name: &str, uuid: &str) -> Result<Upload, ApiError> {
    owned(app, name, uuid).await?;
    if let Some(up) = app.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(uuid) {
        return Ok(up);
    }
    let path = app.uploads_dir.join(uuid);
    let data = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::upload_unknown(uuid))?;
    let mut hasher = Algorithm::Sha256.hasher();
    hasher.update(&data);
    Ok(Upload {
        hasher,
        offset: data.len() as u64,
    })
}

fn put_back(app: &Shared, uuid: &str, up: Upload) {
    app.uploads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(uuid.to_string(), up);
}

/// A chunk must start where the upload stands.
fn check_range(req: &Req, offset: u64) -> Result<(), ApiError> {
    let Some(v) = req.headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let start = v
        .trim()
        .trim_start_matches("bytes ")
        .split('-')
        .next()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if start != Some(offset) {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("chunk {v:?} does not start at the upload's offset {offset}"),
        ));
    }
    Ok(())
}

/// Waits for this session's turn: requests on one session run one at a time.
async fn turn(app: &Shared, uuid: &str) -> tokio::sync::OwnedMutexGuard<()> {
    let m = app
        .turns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(uuid.to_string())
        .or_default()
        .clone();
    m.lock_owned().await
}

fn forget_turn(app: &Shared, uuid: &str) {
    app.turns.lock().unwrap_or_else(|p| p.into_inner()).remove(uuid);
}

/// Reads and drops up to 16 MiB of a body the request will not use, so a
/// client still sending it gets the answer rather than a reset connection.
async fn discard(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut n = 0usize;
    while n < 16 << 20 {
        match stream.next().await {
            Some(Ok(c)) => n += c.len(),
            _ => break,
        }
    }
}

pub(crate) async fn patch(app: &Shared, name: &str, uuid: &str, req: &Req, body: Body) -> Result<Response, ApiError> {
    let held = Arc::new(turn(app, uuid).await);
    let mut up = take(app, name, uuid).await?;
    if let Err(e) = check_range(req, up.offset) {
        put_back(app, uuid, up);
        discard(body).await;
        return Err(e);
    }
    let path = app.uploads_dir.join(uuid);
    match append(&path, body, &mut up.hasher, Some(held.clone())).await {
        Ok(n) => {
            up.offset += n;
            let offset = up.offset;
            put_back(app, uuid, up);
            let u = uuid.to_string();
            app.db(move |s| s.reg_upload_touch(&u)).await?;
            Ok(session(StatusCode::ACCEPTED, name, uuid, offset))
        }
        Err(e) => {
            // The file may hold part of the chunk now: the session is spoilt.
            let _ = close(app, uuid).await;
            Err(e)
        }
    }
}

pub(crate) async fn finish(app: &Shared, name: &str, uuid: &str, req: &Req, body: Body) -> Result<Response, ApiError> {
    let Some(d) = req.query.get("digest").cloned() else {
        return Err(ApiError::digest_invalid("PUT to finish an upload needs ?digest="));
    };
    let digest = parse_digest(&d)?;
    let held = Arc::new(turn(app, uuid).await);
    let mut up = take(app, name, uuid).await?;
    if let Err(e) = check_range(req, up.offset) {
        put_back(app, uuid, up);
        discard(body).await;
        return Err(e);
    }
    let path = app.uploads_dir.join(uuid);
    let result = match append(&path, body, &mut up.hasher, Some(held.clone())).await {
        Ok(_) => complete(app, name, path.clone(), up.hasher, &digest).await,
        Err(e) => Err(e),
    };
    close(app, uuid).await?;
    result.map(|()| created(name, &digest))
}

pub(crate) async fn status(app: &Shared, name: &str, uuid: &str) -> Result<Response, ApiError> {
    let _turn = turn(app, uuid).await;
    let up = take(app, name, uuid).await?;
    let offset = up.offset;
    put_back(app, uuid, up);
    Ok(session(StatusCode::NO_CONTENT, name, uuid, offset))
}

pub(crate) async fn cancel(app: &Shared, name: &str, uuid: &str) -> Result<Response, ApiError> {
    let _turn = turn(app, uuid).await;
    end(app, name, uuid).await
}

/// Ends a session (its turn held by the caller).
async fn end(app: &Shared, name: &str, uuid: &str) -> Result<Response, ApiError> {
    owned(app, name, uuid).await?;
    app.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(uuid);
    close(app, uuid).await
}

/// Removes session `uuid`, known to exist, and its file (its turn held by
/// the caller, its state out of the map).
async fn close(app: &Shared, uuid: &str) -> Result<Response, ApiError> {
    let _ = tokio::fs::remove_file(app.uploads_dir.join(uuid)).await;
    let u = uuid.to_string();
    app.db(move |s| s.reg_upload_end(&u)).await?;
    forget_turn(app, uuid);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A body that sends `first`, then fails after `after` (a client gone
    /// mid-upload).
    fn cut_off(first: Vec<u8>, after: std::time::Duration) -> Body {
        let tail = futures_util::stream::once(async move {
            tokio::time::sleep(after).await;
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client gone"))
        });
        Body::from_stream(futures_util::stream::iter([Ok(first)]).chain(tail))
    }

    #[tokio::test]
    async fn a_request_dropped_mid_upload_keeps_the_turn_until_its_bytes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        let first = vec![7u8; BATCH + BATCH / 2];
        let session = Arc::new(tokio::sync::Mutex::new(()));
        let turn = Some(Arc::new(session.clone().lock_owned().await));
        let mut hasher = Algorithm::Sha256.hasher();
        // The request is dropped (its connection closed) once the first
        // batch is on its way, before the body has failed.
        let body = cut_off(first.clone(), Duration::from_millis(300));
        let dropped = tokio::time::timeout(Duration::from_millis(50), append(&path, body, &mut hasher, turn)).await;
        assert!(dropped.is_err(), "the body's failure comes later");
        assert!(
            session.try_lock().is_err(),
            "the session's turn stays with the copy while it runs"
        );
        let next = tokio::time::timeout(Duration::from_secs(10), session.lock()).await;
        assert!(next.is_ok(), "the copy ends when the body does");
        // Everything received before the failure is in the file by the time
        // the next request may look: rebuilding the session from it is right.
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }

    #[tokio::test]
    async fn small_frames_are_gathered_and_everything_is_hashed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for i in 0..3000u32 {
            // Tiny frames, with a large one now and then.
            let n = if i % 500 == 0 { SMALL + 1 } else { (i % 97) as usize + 1 };
            frames.push(vec![(i % 251) as u8; n]);
        }
        let all: Vec<u8> = frames.concat();
        let body = Body::from_stream(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let mut hasher = Algorithm::Sha256.hasher();
        let n = append(&path, body, &mut hasher, None).await.unwrap();
        assert_eq!(n, all.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), all);
        assert_eq!(hasher.finish(), Digest::sha256(&all));
    }
}
