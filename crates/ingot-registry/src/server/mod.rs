//! `ingot serve`: the OCI distribution-spec 1.1 API over the store.
//!
//! This module is HTTP only: it parses the path into a [`Route`] and hands
//! it to the handler of its area ([`blobs`], [`uploads`], [`manifests`],
//! [`listing`]); those call the store through [`App::db`], which runs the
//! SQLite work on the blocking pool. Blob bytes never pass through the
//! database: reads stream from the blob file, uploads append to
//! `<root>/uploads/<uuid>` while hashing, and a finished upload is renamed
//! into the blob store.

pub mod auth;
mod blobs;
pub mod http;
mod listing;
mod manifests;
pub mod tls;
mod uploads;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ingot_store::{Blobs, Store};

use crate::error::ApiError;
use crate::names::valid_repo;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Refuse to move an existing tag to another digest.
    pub tag_immutability: bool,
    /// Upload sessions idle longer than this are dropped, and blobs linked
    /// but unreferenced for longer are unlinked by the online GC.
    pub grace: Duration,
    /// Token auth (`--auth tokens`); `None`: open.
    pub auth: Option<AuthOptions>,
    /// Certificate chain and key (PEM) for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// Pull without credentials (push still needs a token).
    pub anonymous_pull: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: "127.0.0.1:5000".parse().expect("literal address"),
            tag_immutability: false,
            grace: Duration::from_secs(3600),
            auth: None,
            tls: None,
        }
    }
}

/// An upload in progress: bytes so far and their running hash.
pub(crate) struct Upload {
    pub hasher: ingot_oci::digest::Hasher,
    pub offset: u64,
}

pub(crate) struct App {
    pub store: Arc<Mutex<Store>>,
    pub blobs: Blobs,
    pub uploads_dir: PathBuf,
    pub uploads: Mutex<HashMap<String, Upload>>,
    /// One request at a time per upload session (two concurrent PATCHes
    /// are serialised, never interleaved).
    pub turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub grants: Mutex<HashMap<String, auth::Grant>>,
    pub opts: ServeOptions,
}

pub(crate) type Shared = Arc<App>;

impl App {
    /// Runs `f` on the store on the blocking pool.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> ingot_store::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let s = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&s)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

/// Parses a request path; the repository name is validated here, once.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no route for {path}"));
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Base);
    }
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let named = |name: &str| -> Result<String, ApiError> {
        if valid_repo(name) {
            Ok(name.to_string())
        } else {
            Err(ApiError::name_invalid(name))
        }
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags(named(name)?));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Ok(Route::Manifest(named(name)?, reference.to_string()));
    }
    if let Some((name, uuid)) = rest.rsplit_once("/blobs/uploads/") {
        let name = named(name)?;
        return Ok(if uuid.is_empty() {
            Route::UploadStart(name)
        } else {
            Route::Upload(name, uuid.to_string())
        });
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads") {
        return Ok(Route::UploadStart(named(name)?));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(Route::Blob(named(name)?, digest.to_string()));
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Ok(Route::Referrers(named(name)?, digest.to_string()));
    }
    Err(not_found())
}

/// A request as the handlers see it (the body travels separately: it is
/// not `Sync`, and handlers hold `&Req` across awaits).
pub(crate) struct Req {
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
}

async fn dispatch(State(app): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    if uri.path() == "/token" && method == Method::GET {
        return auth::token(&app, &uri, &headers).await;
    }
    let req = Req { method, query, headers };
    let result = match route(uri.path()) {
        Err(e) => Err(e),
        Ok(r) => match auth::denial(&app, &r, &req) {
            None => handle(&app, r, req, body).await,
            Some(denied) => return denied,
        },
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response());
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn handle(app: &Shared, route: Route, req: Req, body: Body) -> Result<Response, ApiError> {
    use Method as M;
    match (route, req.method.clone()) {
        (Route::Base, M::GET | M::HEAD) => {
            Ok((StatusCode::OK, [("content-type", "application/json")], "{}").into_response())
        }
        (Route::Catalog, M::GET) => listing::catalog(app, &req).await,
        (Route::Tags(name), M::GET) => listing::tags(app, &name, &req).await,
        (Route::Referrers(name, digest), M::GET) => listing::referrers(app, &name, &digest, &req).await,
        (Route::Manifest(name, r), M::GET | M::HEAD) => manifests::get(app, &name, &r, req.method == M::HEAD).await,
        (Route::Manifest(name, r), M::PUT) => manifests::put(app, &name, &r, &req, body).await,
        (Route::Manifest(name, r), M::DELETE) => manifests::delete(app, &name, &r).await,
        (Route::Blob(name, d), M::GET | M::HEAD) => blobs::get(app, &name, &d, &req).await,
        (Route::Blob(name, d), M::DELETE) => blobs::delete(app, &name, &d).await,
        (Route::UploadStart(name), M::POST) => uploads::start(app, &name, &req, body).await,
        (Route::Upload(name, u), M::PATCH) => uploads::patch(app, &name, &u, &req, body).await,
        (Route::Upload(name, u), M::PUT) => uploads::finish(app, &name, &u, &req, body).await,
        (Route::Upload(name, u), M::GET) => uploads::status(app, &name, &u).await,
        (Route::Upload(name, u), M::DELETE) => uploads::cancel(app, &name, &u).await,
        (_, m) => Err(ApiError::unsupported(format!("{m} is not supported here"))),
    }
}

/// Builds the server over the store at `root`.
pub fn router(root: &std::path::Path, opts: ServeOptions) -> ingot_store::Result<Router> {
    let store = Store::open(root)?;
    let uploads_dir = root.join("uploads");
    std::fs::create_dir_all(&uploads_dir).map_err(ingot_store::StoreError::io(&uploads_dir))?;
    let app = Arc::new(App {
        blobs: store.blobs().clone(),
        store: Arc::new(Mutex::new(store)),
        uploads_dir,
        uploads: Mutex::new(HashMap::new()),
        turns: Mutex::new(HashMap::new()),
        grants: Mutex::new(HashMap::new()),
        opts,
    });
    let gc_app = app.clone();
    tokio::spawn(async move { crate::gc::run(gc_app).await });
    Ok(Router::new().fallback(dispatch).with_state(app))
}

/// Serves until SIGINT or SIGTERM; `ready` hears the bound address.
pub async fn serve(root: &std::path::Path, opts: ServeOptions, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let acceptor = match &opts.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(opts.addr).await?;
    let addr = listener.local_addr()?;
    let app = router(root, opts).map_err(std::io::Error::other)?;
    ready(addr);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
        }
    };
    let limits = http::Limits {
        max_connections: 4096,
        ..Default::default()
    };
    match acceptor {
        Some(a) => http::serve(tls::TlsListener::new(listener, a), app, limits, |_, _| (), shutdown).await,
        None => http::serve(listener, app, limits, |_, _| (), shutdown).await,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/").unwrap(), Route::Base);
        assert_eq!(route("/v2/a/b/tags/list").unwrap(), Route::Tags("a/b".into()));
        assert_eq!(
            route("/v2/a/manifests/v1").unwrap(),
            Route::Manifest("a".into(), "v1".into())
        );
        assert_eq!(
            route("/v2/a/b/blobs/uploads/").unwrap(),
            Route::UploadStart("a/b".into())
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/xyz").unwrap(),
            Route::Upload("a".into(), "xyz".into())
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00").unwrap(),
            Route::Blob("a".into(), "sha256:00".into())
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:00").unwrap(),
            Route::Referrers("a".into(), "sha256:00".into())
        );
        assert_eq!(route("/v2/../etc/manifests/x").unwrap_err().code, "NAME_INVALID");
        assert_eq!(route("/v2/A/manifests/x").unwrap_err().code, "NAME_INVALID");
        assert_eq!(route("/etc/passwd").unwrap_err().status, StatusCode::NOT_FOUND);
    }
}
