//! The daemon's HTTP+JSON API, served on a unix socket (`<root>/ingot.sock`,
//! mode 0660) and optionally on TCP with mutual TLS ([`crate::tls`]).
//! Errors are `{"error": "..."}` with a 4xx status.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | /v1/ping | | `{"version"}` |
//! | POST | /v1/deploy | `{stack, actor, reason, detach}` | [`ChangeResult`] |
//! | GET | /v1/services | | [`ServiceStatus`] list |
//! | GET | /v1/services/{name}/ps | | [`Replica`] list |
//! | POST | /v1/services/{name}/scale | `{replicas}` | [`ChangeResult`] |
//! | POST | /v1/services/{name}/rollback | | [`ChangeResult`] |
//! | DELETE | /v1/stacks/{name} | | [`ChangeResult`] |
//! | GET | /metrics | | Prometheus text |

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::engine::Engine;
use crate::pin::PinnedStack;
use crate::{ledger, DeployError};

#[derive(Debug, Deserialize)]
pub struct DeployRequest {
    pub stack: PinnedStack,
    pub actor: String,
    pub reason: Option<String>,
    #[serde(default)]
    pub detach: bool,
}

#[derive(Debug, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u32,
    #[serde(default)]
    pub actor: Option<String>,
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
        .route("/metrics", get(metrics))
        .with_state(engine)
}

async fn deploy(State(e): State<Arc<Engine>>, Json(req): Json<DeployRequest>) -> Answer {
    if req.detach {
        let e2 = e.clone();
        tokio::spawn(async move {
            if let Err(err) = e2.deploy(req.stack, ledger::DEPLOY, &req.actor, req.reason).await {
                tracing::warn!("detached deploy failed: {err}");
            }
        });
        return Ok((StatusCode::ACCEPTED, Json(json!({"outcome": ledger::PENDING}))).into_response());
    }
    let r = e
        .deploy(req.stack, ledger::DEPLOY, &req.actor, req.reason)
        .await
        .map_err(ApiError)?;
    ok(&r)
}

async fn services(State(e): State<Arc<Engine>>) -> Answer {
    ok(&e.services())
}

async fn ps(State(e): State<Arc<Engine>>, UrlPath(name): UrlPath<String>) -> Answer {
    ok(&e.replicas(&name).map_err(ApiError)?)
}

async fn scale(State(e): State<Arc<Engine>>, UrlPath(name): UrlPath<String>, Json(req): Json<ScaleRequest>) -> Answer {
    let actor = req.actor.unwrap_or_else(|| "api".into());
    ok(&e.scale(&name, req.replicas, &actor).await.map_err(ApiError)?)
}

async fn rollback(State(e): State<Arc<Engine>>, UrlPath(name): UrlPath<String>) -> Answer {
    ok(&e.rollback(&name, "api").await.map_err(ApiError)?)
}

async fn remove_stack(State(e): State<Arc<Engine>>, UrlPath(name): UrlPath<String>) -> Answer {
    ok(&e.remove_stack(&name, "api").await.map_err(ApiError)?)
}

async fn metrics(State(e): State<Arc<Engine>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], e.metrics()).into_response()
}

/// Serves `engine` on the unix socket at `socket` (mode 0660), and on
/// `tcp` (address, TLS directory) with mutual TLS if given, until ctrl-c or
/// SIGTERM; the reconcile tick runs every 100 ms meanwhile.
pub async fn serve(
    engine: Arc<Engine>,
    socket: &Path,
    tcp: Option<(std::net::SocketAddr, std::path::PathBuf)>,
) -> crate::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if socket.exists() {
        // A live daemon answers; a stale socket file is replaced.
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(DeployError::Daemon(format!(
                "another daemon is listening on {}",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(socket);
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| DeployError::Daemon(format!("cannot listen on {}: {e}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| DeployError::Daemon(format!("{}: {e}", socket.display())))?;
    let tcp_task = match tcp {
        Some((addr, dir)) => {
            let acceptor = crate::tls::acceptor(&dir)?;
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DeployError::Daemon(format!("cannot listen on {addr}: {e}")))?;
            let listener = ingot_registry::server::tls::TlsListener::new(l, acceptor);
            let app = router(engine.clone());
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }))
        }
        None => None,
    };
    let ticker = {
        let e = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                e.tick().await;
            }
        })
    };
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    let result = axum::serve(listener, router(engine.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()));
    ticker.abort();
    if let Some(t) = tcp_task {
        t.abort();
    }
    engine.shutdown();
    let _ = std::fs::remove_file(socket);
    result
}
