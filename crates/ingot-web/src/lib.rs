//! The daemon's web dashboard (`ingot daemon --web ADDR`): the stacks'
//! services with their replicas' states and health, updated live from the
//! daemon's event stream; the ledger as a timeline, each entry with who,
//! why, what changed (a diff of the pinned stacks) and its outcome; each
//! deployed image's bill of materials, packages, scan findings and
//! signatures; the four DORA metrics with their trend; drift. Plain
//! server-rendered HTML (maud escapes every value) and one small script,
//! both embedded in the binary.
//!
//! Access ([`auth`]): on a loopback address anyone on the host may read; on
//! any other address every request needs the token (`<root>/web.token`,
//! made at first start, mode 0600) as a cookie set by `POST /login` or as
//! `Authorization: Bearer`, else 401. Nothing changes without the token:
//! the rollback form also carries a CSRF token derived from it, the cookie
//! is `HttpOnly; SameSite=Strict`, and a cross-origin `Origin` is refused.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | / | the overview: services, DORA, ledger |
//! | GET | /fragments/{services,dora,ledger} | one panel of it (what the script refreshes) |
//! | GET | /events | the daemon's events as Server-Sent Events |
//! | GET | /ledger/{seq} | one entry: the diff, the detail, the pinned stack |
//! | GET | /images/{digest} | bill of materials, packages, findings, signatures |
//! | GET, POST | /login | the token form; sets the cookie |
//! | POST | /logout | clears it |
//! | POST | /services/{name}/rollback | a rollback (token and CSRF token) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use ingot_deploy::engine::{Change, Engine};
use serde::Deserialize;

pub mod auth;
mod diff;
mod pages;
mod panels;

pub use auth::Access;

/// What the handlers share.
pub struct Web {
    pub engine: Arc<Engine>,
    pub root: PathBuf,
    /// The token that lets a client in and allows changes.
    token: String,
    /// Reads without the token (the listener is on a loopback address).
    open_reads: bool,
}

type Shared = Arc<Web>;

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve(engine: Arc<Engine>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let root = engine.root.clone();
    let token = auth::load_or_make_token(&root)?;
    let web = Arc::new(Web {
        engine,
        root,
        token,
        open_reads: addr.ip().is_loopback(),
    });
    axum::serve(
        listener,
        router(web).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Where the token lives.
pub fn token_path(root: &Path) -> PathBuf {
    root.join("web.token")
}

pub fn router(web: Shared) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/fragments/services", get(pages::services_fragment))
        .route("/fragments/dora", get(pages::dora_fragment))
        .route("/fragments/ledger", get(pages::ledger_fragment))
        .route("/events", get(pages::events))
        .route("/ledger/{seq}", get(pages::entry))
        .route("/images/{digest}", get(pages::image))
        .route("/login", get(pages::login_form).post(login))
        .route("/logout", post(logout))
        .route("/services/{name}/rollback", post(rollback))
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript", include_str!("../assets/app.js"))),
        )
        .route(
            "/assets/style.css",
            get(|| asset("text/css", include_str!("../assets/style.css"))),
        )
        .layer(axum::middleware::from_fn_with_state(web.clone(), gate))
        .with_state(web)
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// Every request: who it is ([`Access`] in its extensions), 401 where the
/// token is needed and missing, and the headers that keep the pages to
/// themselves (no framing, no scripts or styles but the dashboard's own).
async fn gate(State(web): State<Shared>, mut req: Request, next: Next) -> Response {
    let access = auth::access(&web.token, req.headers());
    let public = matches!(req.uri().path(), "/login" | "/assets/style.css");
    if !web.open_reads && access == Access::Anonymous && !public {
        return pages::unauthorized();
    }
    // Open reads are for this host's own clients: a page elsewhere that
    // rebinds its name to loopback (DNS rebinding) sends its own Host.
    if web.open_reads && access == Access::Anonymous && !auth::loopback_host(req.headers()) {
        return pages::message(
            StatusCode::MISDIRECTED_REQUEST,
            "Wrong host",
            "This dashboard answers requests for localhost or a loopback address only.",
        );
    }
    req.extensions_mut().insert(access);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Same-origin: the browser then sends `Origin` on the forms' POSTs
    // (with no-referrer it sends `Origin: null`, refused as foreign).
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(web): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    if !auth::same(f.token.trim(), &web.token) {
        return pages::login_page(Some("That is not this daemon's token."))
            .into_response_with(StatusCode::UNAUTHORIZED);
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, auth::session_cookie(&web.token));
    resp
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, auth::cleared_cookie());
    resp
}

#[derive(Deserialize)]
struct RollbackForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn rollback(
    State(web): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(access): axum::Extension<Access>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    Form(f): Form<RollbackForm>,
) -> Response {
    if let Err(why) = auth::may_change(&web.token, access, &headers, &f.csrf) {
        return pages::message(StatusCode::FORBIDDEN, "Not allowed", why);
    }
    let reason = match f.reason.trim() {
        "" => "rolled back from the dashboard".to_string(),
        r if r.len() > ingot_deploy::api::MAX_REASON || r.chars().any(char::is_control) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Bad reason",
                "A reason is at most 4096 bytes of text on one line.",
            );
        }
        r => r.to_string(),
    };
    let actor = format!("web:{}", peer.ip());
    match web
        .engine
        .submit(Change::Rollback { service: name.clone() }, actor, Some(reason))
        .await
    {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => pages::message(StatusCode::CONFLICT, "Rollback refused", &format!("{name}: {e}")),
    }
}

/// A page with a status.
trait WithStatus {
    fn into_response_with(self, code: StatusCode) -> Response;
}

impl WithStatus for maud::Markup {
    fn into_response_with(self, code: StatusCode) -> Response {
        (code, axum::response::Html(self.into_string())).into_response()
    }
}
