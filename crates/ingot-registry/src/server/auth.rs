//! Bearer-token auth, as Docker's token flow: a request without a valid
//! token gets 401 with `WWW-Authenticate: Bearer realm=".../token",
//! service="ingot",scope="repository:NAME:ACTIONS"`; the client asks
//! `/token` for those scopes with its secret (HTTP Basic, any user name,
//! the secret as password; or nothing, for anonymous pull when allowed);
//! the answer is a short-lived bearer token granting what the secret's
//! repository pattern and rights allow of what was asked.
//!
//! Secrets are made by `ingot token create` and kept as sha256 only.
//! Issued bearer tokens live in memory for [`TOKEN_TTL`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::{Req, Route, Shared};
use crate::error::ApiError;

pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// The most bearer tokens the registry keeps at once.
pub const MAX_GRANTS: usize = 10_000;

/// What a bearer token may do.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// (repository, pull, push)
    pub access: Vec<(String, bool, bool)>,
    /// Pull on every repository (the catalog needs it).
    pub all: bool,
    pub expires: Instant,
}

/// `team/*` matches `team/app` and `team/x/y`; `*` matches all; else exact.
pub fn pattern_matches(pattern: &str, repo: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => repo.starts_with(prefix),
        None => pattern == repo,
    }
}

pub fn hash_secret(secret: &str) -> String {
    ingot_oci::Digest::sha256(secret.as_bytes()).hex().to_string()
}

/// A new secret: two random v4 UUIDs (244 random bits from the OS), hex.
pub fn new_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

/// The pull/push a request needs, and on which repository (`None`: the
/// catalog, `Some("")`: nothing).
fn needs(route: &Route, req: &Req) -> Option<(String, bool, bool)> {
    let write = !matches!(req.method, axum::http::Method::GET | axum::http::Method::HEAD);
    let repo = match route {
        Route::Base => return Some((String::new(), false, false)),
        Route::Catalog => return None,
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => n.clone(),
    };
    Some((repo, !write, write))
}

fn challenge(req_headers: &HeaderMap, tls: bool, scope: Option<String>, error: Option<&str>) -> Response {
    let host = req_headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    let mut value = format!("Bearer realm=\"{scheme}://{host}/token\",service=\"ingot\"");
    if let Some(s) = scope {
        value.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        value.push_str(&format!(",error=\"{e}\""));
    }
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required").into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Whether the request's credentials may pull from `repo` (always, when
/// the registry has no auth): a cross-repository mount needs it of its
/// `from` repository.
pub(crate) fn may_pull(app: &Shared, repo: &str, req: &Req) -> bool {
    let probe = Req {
        method: axum::http::Method::GET,
        query: Default::default(),
        headers: req.headers.clone(),
    };
    denial(app, &Route::Tags(repo.to_string()), &probe).is_none()
}

/// `None` if the request may go on, else the 401 to send.
pub(crate) fn denial(app: &Shared, route: &Route, req: &Req) -> Option<Response> {
    app.opts.auth.as_ref()?;
    let tls = app.opts.tls.is_some();
    let need = needs(route, req);
    let scope = match &need {
        Some((r, _, _)) if r.is_empty() => None,
        Some((r, pull, push)) => Some(format!(
            "repository:{r}:{}",
            match (pull, push) {
                (_, true) => "pull,push",
                _ => "pull",
            }
        )),
        None => Some("registry:catalog:*".to_string()),
    };
    let bearer = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = bearer else {
        return Some(challenge(&req.headers, tls, scope, None));
    };
    let grants = app.grants.lock().unwrap_or_else(|p| p.into_inner());
    let Some(grant) = grants.get(&token).filter(|g| g.expires > Instant::now()) else {
        return Some(challenge(&req.headers, tls, scope, Some("invalid_token")));
    };
    let allowed = match &need {
        Some((r, _, _)) if r.is_empty() => true,
        Some((r, pull, push)) => grant
            .access
            .iter()
            .any(|(repo, p, w)| repo == r && (!pull || *p) && (!push || *w)),
        None => grant.all,
    };
    (!allowed).then(|| challenge(&req.headers, tls, scope, Some("insufficient_scope")))
}

/// GET /token?service=ingot&scope=repository:NAME:pull,push[&scope=...]
pub(crate) async fn token(app: &Shared, uri: &axum::http::Uri, headers: &HeaderMap) -> Response {
    let Some(auth) = app.opts.auth.clone() else {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "this registry has no token service").into_response();
    };
    let scopes: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| {
            v.replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace("%2A", "*")
        })
        .collect();
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|up| up.split_once(':').map(|(_, p)| p.to_string()));
    // What the presented secret allows: (pattern, pull, push).
    let rights: Option<(String, bool, bool)> = match &secret {
        Some(s) => {
            let h = hash_secret(s);
            match app.db(move |st| st.reg_token(&h)).await {
                Ok(Some(r)) => Some(r),
                Ok(None) => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "unknown token").into_response()
                }
                Err(e) => return e.into_response(),
            }
        }
        None if auth.anonymous_pull => Some(("*".to_string(), true, false)),
        None => return ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "credentials required").into_response(),
    };
    let (pattern, may_pull, may_push) = rights.unwrap_or_default();
    let mut grant = Grant {
        access: Vec::new(),
        all: pattern == "*" && may_pull,
        expires: Instant::now() + TOKEN_TTL,
    };
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(repo), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !pattern_matches(&pattern, repo) {
            continue;
        }
        let pull = may_pull && actions.split(',').any(|a| a == "pull" || a == "*");
        let push = may_push && actions.split(',').any(|a| a == "push" || a == "*");
        grant.access.push((repo.to_string(), pull, push));
    }
    let token = new_secret();
    {
        let mut grants = app.grants.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: expired grants go first, then the one expiring soonest.
        if grants.len() >= MAX_GRANTS {
            expire(&mut grants);
        }
        if grants.len() >= MAX_GRANTS {
            if let Some(k) = grants.iter().min_by_key(|(_, g)| g.expires).map(|(k, _)| k.clone()) {
                grants.remove(&k);
            }
        }
        grants.insert(token.clone(), grant);
    }
    let body = json!({"token": token, "access_token": token, "expires_in": TOKEN_TTL.as_secs()});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Drops expired grants.
pub(crate) fn expire(grants: &mut HashMap<String, Grant>) {
    let now = Instant::now();
    grants.retain(|_, g| g.expires > now);
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns() {
        assert!(super::pattern_matches("team/*", "team/app"));
        assert!(super::pattern_matches("*", "x"));
        assert!(super::pattern_matches("a/b", "a/b"));
        assert!(!super::pattern_matches("team/*", "other/app"));
        assert!(!super::pattern_matches("a/b", "a/bc"));
    }
}
