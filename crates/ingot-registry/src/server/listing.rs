//! Tag lists and the catalog (lexical order, `n`/`last` pagination with a
//! Link header), and the referrers API (an OCI index of the manifests whose
//! subject is the digest, filterable by `artifactType`).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::blobs::parse_digest;
use super::{Req, Shared};
use crate::error::ApiError;

fn page(req: &Req) -> Result<(Option<usize>, Option<String>), ApiError> {
    let n = match req.query.get("n") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("invalid n={v:?}"),
            )
        })?),
    };
    Ok((n, req.query.get("last").cloned()))
}

fn listed(path: &str, key: &str, name: Option<&str>, items: Vec<String>, n: Option<usize>) -> Response {
    let mut body = json!({ key: items });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json".to_string())],
        body.to_string(),
    )
        .into_response();
    if let (Some(n), Some(last)) = (n, items.last()) {
        if items.len() == n && n > 0 {
            let link = format!("<{path}?n={n}&last={last}>; rel=\"next\"");
            if let Ok(v) = link.parse() {
                resp.headers_mut().insert(header::LINK, v);
            }
        }
    }
    resp
}

pub(crate) async fn tags(app: &Shared, name: &str, req: &Req) -> Result<Response, ApiError> {
    let (n, last) = page(req)?;
    let repo = name.to_string();
    let (exists, tags) = app
        .db(move |s| Ok((s.reg_repo_exists(&repo)?, s.reg_tags(&repo, n, last.as_deref())?)))
        .await?;
    if !exists {
        return Err(ApiError::name_unknown(name));
    }
    Ok(listed(&format!("/v2/{name}/tags/list"), "tags", Some(name), tags, n))
}

pub(crate) async fn catalog(app: &Shared, req: &Req) -> Result<Response, ApiError> {
    let (n, last) = page(req)?;
    let repos = app.db(move |s| s.reg_repos(n, last.as_deref())).await?;
    Ok(listed("/v2/_catalog", "repositories", None, repos, n))
}

pub(crate) async fn referrers(app: &Shared, name: &str, d: &str, req: &Req) -> Result<Response, ApiError> {
    let digest = parse_digest(d)?;
    let filter = req.query.get("artifactType").cloned();
    let (repo, ds, f) = (name.to_string(), digest.to_string(), filter.clone());
    let found = app.db(move |s| s.reg_referrers(&repo, &ds, f.as_deref())).await?;
    let manifests: Vec<Value> = found
        .into_iter()
        .map(|m| {
            let mut v = json!({"mediaType": m.media_type, "digest": m.digest, "size": m.size});
            if let Some(t) = m.artifact_type {
                v["artifactType"] = json!(t);
            }
            if let Some(a) = m.annotations.and_then(|a| serde_json::from_str::<Value>(&a).ok()) {
                v["annotations"] = a;
            }
            v
        })
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": ingot_oci::media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ingot_oci::media::OCI_INDEX.to_string())],
        body.to_string(),
    )
        .into_response();
    if filter.is_some() {
        resp.headers_mut().insert(
            "oci-filters-applied",
            axum::http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
