//! The daemon's HTTP+JSON API, served on a unix socket (`<root>/ingot.sock`,
//! mode 0660) and optionally on TCP with mutual TLS ([`crate::tls`]).
//! Errors are `{"error": "..."}` with a 4xx status; a request that fails
//! validation is a 400 naming the field, and nothing is recorded or started.
//!
//! The ledger's actor is the connection's identity ([`Peer`]), never part
//! of a body. A change answers 202 with its pending ledger entry as soon as
//! it is recorded and goes on in the daemon whatever the client does;
//! `GET /v1/ledger/{seq}/wait` follows it to its outcome.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | /v1/ping | | `{"version"}` |
//! | POST | /v1/deploy | `{stack, secrets?, reason?}` ([`DeployRequest`]) | 202 `{entry}` |
//! | GET | /v1/services | | [`ServiceStatus`](crate::engine::ServiceStatus) list |
//! | GET | /v1/services/{name}/ps | | [`Replica`](crate::engine::Replica) list |
//! | POST | /v1/services/{name}/scale | `{replicas, reason?}` | 202 `{entry}` |
//! | POST | /v1/services/{name}/rollback | `{reason?}` or none | 202 `{entry}` |
//! | DELETE | /v1/stacks/{name} | | 202 `{entry}` |
//! | GET | /v1/ledger/{seq}/wait | | [`ChangeResult`](crate::engine::ChangeResult) once sealed |
//! | POST | /v1/handover | | `{pid}` once quiesced (unix socket, the daemon's own uid only) |
//! | GET | /metrics | | Prometheus text |

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::engine::{Change, Engine};
use crate::peer::Peer;
use crate::pin::{PinnedStack, SecretValue};
use crate::DeployError;

/// The most a request body may hold (a stack with its configs).
pub const MAX_BODY: usize = 16 << 20;
/// The longest free-text reason.
pub const MAX_REASON: usize = 4096;

/// `POST /v1/deploy`: a pinned stack (as `ingot_deploy::pin` makes it),
/// the values of its secrets (name -> base64; a value the daemon holds
/// already may be left out) and why. Unknown fields are refused (an
/// `actor` among them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub stack: serde_json::Value,
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A deploy request, parsed and checked: the stack, the values of its
/// secrets (each hashing to the digest the stack names), the reason.
#[derive(Debug)]
pub struct Deploy {
    pub stack: PinnedStack,
    pub secrets: Vec<SecretValue>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: u32,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Parses a request body; errors name the field (`stack.services.web.digest: ...`).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DeployError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        DeployError::Field {
            field: if field == "." { "body".into() } else { field },
            why: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| DeployError::Field {
        field: "body".into(),
        why: e.to_string(),
    })?;
    Ok(v)
}

fn check_reason(reason: &Option<String>) -> Result<(), DeployError> {
    match reason {
        Some(r) if r.len() > MAX_REASON || r.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            Err(DeployError::Field {
                field: "reason".into(),
                why: format!("at most {MAX_REASON} bytes of text without control characters"),
            })
        }
        _ => Ok(()),
    }
}

/// A deploy request, fully parsed: the stack typed (digests as
/// `ingot_oci::Digest`, unknown fields refused) and the reason checked.
/// The store-dependent checks follow when the change is prepared.
pub fn parse_deploy(body: &[u8]) -> Result<Deploy, DeployError> {
    use base64::Engine as _;
    let req: DeployRequest = parse_body(body)?;
    check_reason(&req.reason)?;
    let stack: PinnedStack = serde_path_to_error::deserialize(req.stack).map_err(|e| DeployError::Field {
        field: format!("stack.{}", e.path()).trim_end_matches('.').to_string(),
        why: e.into_inner().to_string(),
    })?;
    // Every secret's value, every time: naming a digest the daemon holds
    // would otherwise hand any client another stack's secret.
    if let Some(name) = stack.secrets.keys().find(|n| !req.secrets.contains_key(*n)) {
        return Err(DeployError::Field {
            field: format!("secrets.{name}"),
            why: "no value sent for this secret of the stack".into(),
        });
    }
    let mut secrets = Vec::new();
    for (name, b64) in req.secrets {
        let field = format!("secrets.{name}");
        let bad = |why: String| DeployError::Field {
            field: field.clone(),
            why,
        };
        let Some(pinned) = stack.secrets.get(&name) else {
            return Err(bad("not one of the stack's secrets".into()));
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("not base64: {e}")))?;
        if value.len() > crate::pin::MAX_SECRET {
            return Err(bad(format!("more than {} bytes", crate::pin::MAX_SECRET)));
        }
        // Never echo the value: name the digests only.
        let actual = ingot_oci::Digest::sha256(&value);
        if actual != pinned.digest {
            return Err(bad(format!(
                "the value hashes to {actual}, not to the stack's {}",
                pinned.digest
            )));
        }
        secrets.push(SecretValue(value));
    }
    Ok(Deploy {
        stack,
        secrets,
        reason: req.reason,
    })
}

struct ApiError(DeployError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match &self.0 {
            DeployError::NotFound(_) => StatusCode::NOT_FOUND,
            DeployError::Ledger { .. } => StatusCode::CONFLICT,
            DeployError::Policy { .. } => StatusCode::FORBIDDEN,
            DeployError::Daemon(_) | DeployError::Store(_) | DeployError::Runtime(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        (code, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        ApiError(e)
    }
}

type Answer = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(v: &T) -> Answer {
    Ok(Json(serde_json::to_value(v).unwrap_or_default()).into_response())
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route(
            "/v1/ping",
            get(|| async { Json(json!({"version": env!("CARGO_PKG_VERSION")})) }),
        )
        .route("/v1/deploy", post(deploy))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}/ps", get(ps))
        .route("/v1/services/{name}/scale", post(scale))
        .route("/v1/services/{name}/rollback", post(rollback))
        .route("/v1/stacks/{name}", delete(remove_stack))
        .route("/v1/ledger/{seq}/wait", get(wait))
        .route("/v1/handover", post(handover))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(engine)
}

/// Records the change and answers 202 with the pending entry.
async fn submit(e: &Arc<Engine>, change: Change, peer: Peer, reason: Option<String>) -> Answer {
    let entry = e.submit(change, peer.0, reason).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"entry": entry}))).into_response())
}

async fn deploy(State(e): State<Arc<Engine>>, ConnectInfo(peer): ConnectInfo<Peer>, body: Bytes) -> Answer {
    let d = parse_deploy(&body)?;
    let change = Change::Deploy {
        stack: d.stack,
        secrets: d.secrets.into_iter().map(|v| v.0).collect(),
    };
    submit(&e, change, peer, d.reason).await
}

async fn services(State(e): State<Arc<Engine>>) -> Answer {
    ok(&e.services())
}

async fn ps(State(e): State<Arc<Engine>>, UrlPath(name): UrlPath<String>) -> Answer {
    ok(&e.replicas(&name)?)
}

async fn scale(
    State(e): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Answer {
    let req: ScaleRequest = parse_body(&body)?;
    check_reason(&req.reason)?;
    let change = Change::Scale {
        service: name,
        replicas: req.replicas,
    };
    submit(&e, change, peer, req.reason).await
}

async fn rollback(
    State(e): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Answer {
    let req: ReasonRequest = if body.is_empty() {
        ReasonRequest::default()
    } else {
        parse_body(&body)?
    };
    check_reason(&req.reason)?;
    submit(&e, Change::Rollback { service: name }, peer, req.reason).await
}

async fn remove_stack(
    State(e): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
) -> Answer {
    crate::pin::check_stack_name(&name).map_err(|why| DeployError::Field {
        field: "stack".into(),
        why,
    })?;
    submit(&e, Change::Remove { stack: name }, peer, None).await
}

async fn wait(State(e): State<Arc<Engine>>, UrlPath(seq): UrlPath<i64>) -> Answer {
    ok(&e.wait(seq).await?)
}

/// A replacing daemon (`ingot daemon --replace`) asks this one to stop
/// changing anything; its published ports keep serving until it is told
/// to exit (SIGTERM), when it drains them.
async fn handover(State(e): State<Arc<Engine>>, ConnectInfo(peer): ConnectInfo<Peer>) -> Answer {
    let me = rustix::process::geteuid().as_raw();
    if peer.1 != Some(me) {
        return Err(ApiError(DeployError::Field {
            field: "peer".into(),
            why: format!("only uid {me} on the unix socket may take this daemon over"),
        }));
    }
    e.quiesce().await;
    tracing::info!(by = %peer.0, "handing over to a replacing daemon");
    ok(&json!({"pid": std::process::id()}))
}

/// The daemon's events as JSON lines: those kept since `?since=RFC3339`,
/// then each as it happens, until the client goes or the daemon stops.
async fn events(State(e): State<Arc<Engine>>, uri: axum::http::Uri) -> Answer {
    let since = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("since="))
        .map(String::from);
    let since = match &since {
        Some(t) => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|err| {
                ApiError(DeployError::Field {
                    field: "since".into(),
                    why: format!("{t:?} is not an RFC 3339 time: {err}"),
                })
            })?,
        ),
        None => None,
    };
    let (past, rx) = e.events.follow(since);
    let closing = e.closing_signal();
    let line = |ev: &crate::events::Event| {
        let mut v = serde_json::to_vec(ev).unwrap_or_default();
        v.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(v))
    };
    let past = futures_util::stream::iter(past.iter().map(line).collect::<Vec<_>>());
    let live = futures_util::stream::unfold((rx, closing), move |(mut rx, mut closing)| async move {
        loop {
            if *closing.borrow() {
                return None;
            }
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(ev) => return Some((line(&ev), (rx, closing))),
                    // A follower too slow for the channel misses some: it
                    // is told how many, and goes on.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("{{\"type\":\"lagged\",\"missed\":{n}}}\n");
                        return Some((Ok(Bytes::from(note)), (rx, closing)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                changed = closing.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    use futures_util::StreamExt;
    Ok((
        [("content-type", "application/x-ndjson")],
        axum::body::Body::from_stream(past.chain(live)),
    )
        .into_response())
}

async fn metrics(State(e): State<Arc<Engine>>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics(),
    )
        .into_response()
}

/// Serves `engine` on the unix socket at `socket` (mode 0660), and on
/// `tcp` (address, TLS directory) with mutual TLS if given, until ctrl-c or
/// SIGTERM; the reconcile tick runs every 100 ms meanwhile.
pub async fn serve(
    engine: Arc<Engine>,
    socket: &Path,
    tcp: Option<(std::net::SocketAddr, std::path::PathBuf)>,
    replace: bool,
) -> crate::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut predecessor = None;
    if socket.exists() {
        // A live daemon answers; a stale socket file is replaced.
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            if !replace {
                return Err(DeployError::Daemon(format!(
                    "another daemon is listening on {} (`ingot daemon --replace` takes over from it without dropping a request)",
                    socket.display()
                )));
            }
            let ep = crate::client::Endpoint::Unix(socket.to_path_buf());
            let v = crate::client::request(&ep, "POST", "/v1/handover", None).await?;
            predecessor = v["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
            tracing::info!(?predecessor, "the running daemon handed over");
        } else {
            let _ = std::fs::remove_file(socket);
        }
    }
    // Replicas adopted and published ports bound before the socket answers:
    // a daemon that answers serves its ports. (A ledger that does not
    // verify stops the daemon here.)
    let adopted = engine.adopt().await?;
    // Bound beside the path and renamed over it: clients always find a socket.
    let fresh = socket.with_extension(format!("new-{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let listener = tokio::net::UnixListener::bind(&fresh)
        .map_err(|e| DeployError::Daemon(format!("cannot listen on {}: {e}", fresh.display())))?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o660))
        .and_then(|_| std::fs::rename(&fresh, socket))
        .map_err(|e| DeployError::Daemon(format!("{}: {e}", socket.display())))?;
    let inode = std::fs::metadata(socket).map(|m| m.ino()).unwrap_or(0);
    let tcp_task = match tcp {
        Some((addr, dir)) => {
            let acceptor = crate::tls::acceptor(&dir)?;
            let bind = || -> std::io::Result<tokio::net::TcpListener> {
                let s = match addr {
                    std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                s.set_reuseaddr(true)?;
                s.set_reuseport(replace)?;
                s.bind(addr)?;
                s.listen(256)
            };
            let l = bind().map_err(|e| DeployError::Daemon(format!("cannot listen on {addr}: {e}")))?;
            let listener = ingot_registry::server::tls::TlsListener::new(l, acceptor);
            let app = router(engine.clone());
            Some(tokio::spawn(async move {
                use ingot_registry::server::http;
                let limits = http::Limits::default();
                http::serve(listener, app, limits, Peer::tls, std::future::pending()).await;
            }))
        }
        None => None,
    };
    let ticker = {
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                e.tick();
            }
        })
    };
    // A pending entry is carried out while the socket already answers.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<DeployError>();
    let starting = {
        let e = engine.clone();
        tokio::spawn(async move {
            if let Err(err) = e.resume(adopted).await {
                let _ = failed_tx.send(err);
            }
        })
    };
    // The predecessor drains its ports: this daemon serves them now.
    if let Some(pid) = predecessor {
        tracing::info!(pid, "ports served here: telling the predecessor to drain and exit");
        let _ = rustix::process::Pid::from_raw(pid)
            .map(|p| rustix::process::kill_process(p, rustix::process::Signal::TERM));
    }
    let start_error = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let start_error = start_error.clone();
        let stopping = engine.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => stopping.closing(),
                _ = term.recv() => stopping.closing(),
                Ok(err) = failed_rx => {
                    *start_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err);
                },
            }
        }
    };
    use ingot_registry::server::http;
    http::serve(
        listener,
        router(engine.clone()),
        http::Limits::default(),
        |io, _| Peer::unix(io),
        shutdown,
    )
    .await;
    ticker.abort();
    starting.abort();
    if let Some(t) = tcp_task {
        t.abort();
    }
    // Published ports: no new connections; open ones finish first.
    engine.drain_listeners(std::time::Duration::from_secs(10)).await;
    // The socket file, unless a successor has put its own there.
    if std::fs::metadata(socket).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(socket);
    }
    if let Some(err) = start_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        return Err(err);
    }
    Ok(())
}
