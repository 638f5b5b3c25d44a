//! GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>. Manifests are kept
//! byte-exact as blobs; a PUT is accepted only when every blob and manifest
//! it references is already in the repository (a subject need not be).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use ingot_oci::manifest::Role;
use ingot_oci::{Digest, Manifest};
use ingot_store::RegManifest;
use serde_json::Value;
use std::io::Write;

use super::blobs::parse_digest;
use super::{Req, Shared};
use crate::error::ApiError;
use crate::names::valid_tag;

/// The largest manifest accepted, as the distribution spec suggests.
pub const MAX_MANIFEST: usize = 4 << 20;

enum Ref {
    Tag(String),
    Digest(Digest),
}

fn reference(r: &str) -> Result<Ref, ApiError> {
    if r.contains(':') {
        return parse_digest(r).map(Ref::Digest);
    }
    if valid_tag(r) {
        Ok(Ref::Tag(r.to_string()))
    } else {
        // Not a tag the grammar allows: no manifest can have it (the OCI
        // spec's code for a reference that does not exist).
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("invalid tag {r:?}: no manifest can have it"),
        ))
    }
}

/// The manifest `r` names in `name`.
async fn lookup(app: &Shared, name: &str, r: &str) -> Result<RegManifest, ApiError> {
    let (repo, reference) = (name.to_string(), reference(r)?);
    let found = app
        .db(move |s| {
            let digest = match reference {
                Ref::Tag(t) => match s.reg_tag(&repo, &t)? {
                    Some(d) => d,
                    None => return Ok(None),
                },
                Ref::Digest(d) => d.to_string(),
            };
            s.reg_manifest(&repo, &digest)
        })
        .await?;
    found.ok_or_else(|| ApiError::manifest_unknown(r))
}

pub(crate) async fn get(app: &Shared, name: &str, r: &str, head: bool) -> Result<Response, ApiError> {
    let m = lookup(app, name, r).await?;
    let digest = parse_digest(&m.digest)?;
    let blobs = app.blobs.clone();
    let bytes = tokio::task::spawn_blocking(move || blobs.read(&digest))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let len = bytes.len();
    let body = if head { axum::body::Body::empty() } else { bytes.into() };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, len)
        .header("docker-content-digest", &m.digest)
        .body(body)
        .map_err(ApiError::internal)
}

pub(crate) async fn put(
    app: &Shared,
    name: &str,
    r: &str,
    req: &Req,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let reference = reference(r)?;
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::manifest_invalid(format!("reading the manifest: {e}")))?;
        if bytes.len() + chunk.len() > MAX_MANIFEST {
            // Read (and drop) a bounded rest of the body first, so that the
            // client, still sending, gets the 413 rather than a reset.
            let mut rest = bytes.len() + chunk.len();
            while rest < 4 * MAX_MANIFEST {
                match stream.next().await {
                    Some(Ok(c)) => rest += c.len(),
                    _ => break,
                }
            }
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MANIFEST_INVALID",
                format!("manifest larger than {MAX_MANIFEST} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let digest = match &reference {
        Ref::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if actual != *d {
                return Err(ApiError::digest_invalid(format!(
                    "manifest hashes to {actual}, not {d}"
                )));
            }
            actual
        }
        Ref::Tag(_) => Digest::sha256(&bytes),
    };
    let manifest = Manifest::parse(bytes.clone(), content_type.as_deref())
        .map_err(|e| ApiError::manifest_invalid(e.to_string()))?;
    let refs = manifest
        .references()
        .map_err(|e| ApiError::manifest_invalid(e.to_string()))?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::manifest_invalid(e.to_string()))?;
    let artifact_type = json["artifactType"]
        .as_str()
        .or_else(|| json["config"]["mediaType"].as_str())
        .map(String::from);
    let subject = refs
        .iter()
        .find(|x| x.role == Role::Subject)
        .map(|x| x.digest.to_string());
    let record = RegManifest {
        digest: digest.to_string(),
        media_type: manifest.media_type.clone(),
        size: bytes.len() as u64,
        artifact_type,
        subject: subject.clone(),
        annotations: json.get("annotations").filter(|a| a.is_object()).map(|a| a.to_string()),
    };
    let repo = name.to_string();
    let tag = match &reference {
        Ref::Tag(t) => Some(t.clone()),
        Ref::Digest(_) => None,
    };
    let immutable = app.opts.tag_immutability;
    let check: Vec<(Role, String)> = refs
        .iter()
        .filter(|x| x.role != Role::Subject)
        .map(|x| (x.role, x.digest.to_string()))
        .collect();
    let d = digest.clone();
    let outcome = app
        .db(move |s| {
            for (role, dg) in &check {
                let present = match role {
                    Role::Manifest => s.reg_manifest(&repo, dg)?.is_some(),
                    _ => s.reg_has_blob(&repo, dg)?,
                };
                if !present {
                    return Ok(Err(dg.clone()));
                }
            }
            if !s.blobs().exists(&d) {
                let mut w = s.blobs().writer(Some(d.clone()))?;
                w.write_all(&bytes).map_err(ingot_store::StoreError::io("manifest"))?;
                w.commit()?;
            }
            Ok(Ok(s.reg_put_manifest(&repo, &record, tag.as_deref(), immutable)?))
        })
        .await?;
    match outcome {
        Err(missing) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("manifest references {missing}, which is not in repository {name}"),
        )),
        Ok(Err(taken)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!("tag {r} is immutable here and already points at {}", taken.existing),
        )),
        Ok(Ok(())) => {
            let mut resp = Response::builder()
                .status(StatusCode::CREATED)
                .header(header::LOCATION, format!("/v2/{name}/manifests/{digest}"))
                .header("docker-content-digest", digest.to_string())
                .header(header::CONTENT_LENGTH, 0);
            if let Some(s) = subject {
                resp = resp.header("oci-subject", s);
            }
            resp.body(axum::body::Body::empty()).map_err(ApiError::internal)
        }
    }
}

pub(crate) async fn delete(app: &Shared, name: &str, r: &str) -> Result<Response, ApiError> {
    let repo = name.to_string();
    let deleted = match reference(r)? {
        Ref::Digest(d) => app.db(move |s| s.reg_delete_manifest(&repo, &d.to_string())).await?,
        Ref::Tag(t) => app.db(move |s| s.reg_delete_tag(&repo, &t)).await?,
    };
    if !deleted {
        return Err(ApiError::manifest_unknown(r));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
