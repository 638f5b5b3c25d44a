//! The one HTTP/1.1 accept loop of ingot's servers (the registry, the
//! daemon on its unix socket and over TCP): hyper with a timer, so that a
//! client that is slow to send its request head — or that keeps an idle
//! connection open — is disconnected after [`Limits::header_read`]; at most
//! [`Limits::max_connections`] connections at once (further clients wait
//! in the listen backlog); graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most a request head may take to arrive, counted from when the
    /// connection is ready for it (so also an idle keep-alive timeout).
    pub header_read: Duration,
    pub max_connections: usize,
    /// The most a graceful shutdown waits for open connections.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// connections finish their request in flight (at most
/// `limits.shutdown_grace`). `info` gives each connection's identity,
/// handed to handlers as `ConnectInfo<T>`.
pub async fn serve<L, T, F>(mut listener: L, app: Router, limits: Limits, info: F, shutdown: impl Future<Output = ()>)
where
    L: Listener,
    L::Io: Send + Unpin + 'static,
    T: Clone + Send + Sync + 'static,
    F: Fn(&L::Io, &L::Addr) -> T,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (io, addr) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        let who = info(&io, &addr);
        let app = app.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(who.clone()));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let stop = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await;
}
