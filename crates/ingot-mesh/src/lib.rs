//! ingot's routing mesh: one proxy per published port, spreading
//! connections and HTTP/1.1 requests over a pool of healthy replicas.
//!
//! A connection whose first bytes look like an HTTP/1.x request is served
//! by hyper, and every request on it is routed on its own (so a keep-alive
//! client moves off a replica as soon as it leaves the pool) to the less
//! loaded of two replicas picked at random (power of two choices over the
//! in-flight counts), over a pooled keep-alive connection to it; anything
//! else is spliced to one backend as TCP. Bodies stream both ways, never
//! buffered whole. A request is retried on another connection or replica
//! when none of it was sent (connection refused, a pooled connection found
//! closed), and also after it was sent when it is idempotent and its body
//! is small enough to have been kept ([`REPLAY_BODY`]), so a replica that
//! dies between two requests costs no failure.
//!
//! Upstream connections: at most [`MAX_IDLE`] idle ones per replica, each
//! reused for at most [`IDLE_TIMEOUT`]; a replica that leaves the pool has
//! its idle connections closed at once, and those in use close when their
//! response ends.
//!
//! Invariants: only backends in the pool receive new requests or
//! connections; a backend's in-flight count ([`Pool::active`]) covers every
//! request and TCP connection using it, so the deployer can drain it
//! (remove, wait for zero, stop).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
pub use tally::{Tally, TallyNow, CLASSES, LATENCY_BOUNDS};

pub mod h1;
mod tally;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

/// The most a client may take to send a request head (or stay idle on a
/// keep-alive connection) before the mesh closes the connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// Failures in a row that eject a replica from the picks, and for how long.
pub const EJECT_AFTER: u32 = 3;
pub const EJECT_FOR: Duration = Duration::from_secs(5);

/// Idle keep-alive connections kept per replica.
pub const MAX_IDLE: usize = 64;
/// How long an idle upstream connection is kept for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest body of an idempotent request the mesh keeps to be able to
/// send it again (larger ones stream through once).
pub const REPLAY_BODY: usize = 64 << 10;

/// `at` plus `after`, or a year from `at` where that would overflow (a
/// timeout given as "forever").
pub(crate) fn later(at: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 86_400))
}

/// What breaks a body the mesh passes on.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("the replica sent nothing of the body for {0:?}")]
    Stalled(Duration),
}

/// A request or response body as the mesh passes it on (streamed).
type Body = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// An upstream connection's request sender.
type Sender = hyper::client::conn::http1::SendRequest<Body>;
/// A replica's one HTTP/2 connection, shared by every request to it.
type H2Sender = hyper::client::conn::http2::SendRequest<Body>;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// One replica the mesh may send traffic to.
#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    tally: Arc<Tally>,
}

/// The healthy replicas of one service, shared by its listeners.
#[derive(Default)]
pub struct Pool {
    backends: Mutex<Vec<Backend>>,
    /// Idle keep-alive connections per replica, with when each went idle.
    idle: Mutex<BTreeMap<SocketAddr, Vec<(Sender, tokio::time::Instant)>>>,
    /// The same for the HTTP/1.1 fast path's plain connections.
    idle_raw: Mutex<BTreeMap<SocketAddr, Vec<(TcpStream, tokio::time::Instant)>>>,
    /// The HTTP/2 connection to each replica spoken to that way.
    h2: Mutex<BTreeMap<SocketAddr, H2Sender>>,
    /// Held while a replica's HTTP/2 connection is being made, so that
    /// requests arriving meanwhile wait for it instead of making their own.
    h2_connecting: Mutex<BTreeMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// Connections opened to replicas (for tests and metrics).
    pub connects: AtomicU64,
    /// The power-of-two-choices draw.
    p2c: AtomicUsize,
    /// Per replica address: failures in a row, and until when it is ejected.
    outliers: Mutex<BTreeMap<std::net::IpAddr, (u32, Option<tokio::time::Instant>)>>,
    /// Every backend ever seen keeps its tally until it has drained.
    counters: Mutex<BTreeMap<SocketAddr, Arc<Tally>>>,
    /// The answers the mesh made itself (no replica, none answered in time).
    own: Tally,
    next: AtomicUsize,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Told of every replica that joins or leaves ("join"/"leave").
    watcher: std::sync::OnceLock<Box<dyn Fn(&'static str, SocketAddr) + Send + Sync>>,
}

impl Pool {
    /// Sets who hears of joins and leaves (once).
    pub fn watch(&self, f: impl Fn(&'static str, SocketAddr) + Send + Sync + 'static) {
        let _ = self.watcher.set(Box::new(f));
    }

    fn tell(&self, what: &'static str, addr: SocketAddr) {
        if let Some(w) = self.watcher.get() {
            w(what, addr);
        }
    }

    pub fn new() -> Arc<Pool> {
        Arc::new(Pool::default())
    }

    fn counter(&self, addr: SocketAddr) -> Arc<Tally> {
        self.counters.lock().unwrap().entry(addr).or_default().clone()
    }

    /// Adds a replica (idempotent).
    pub fn add(&self, addr: SocketAddr) {
        // A replica that joins has just passed its health check: whatever
        // an earlier holder of its address did is forgotten.
        self.outliers.lock().unwrap().remove(&addr.ip());
        let tally = self.counter(addr);
        let mut b = self.backends.lock().unwrap();
        if !b.iter().any(|x| x.addr == addr) {
            tracing::debug!(%addr, "joins the pool");
            b.push(Backend { addr, tally });
            drop(b);
            self.tell("join", addr);
        }
    }

    /// Takes a replica out: no new traffic goes to it, its idle
    /// connections close.
    pub fn remove(&self, addr: SocketAddr) {
        tracing::debug!(%addr, "leaves the pool");
        let left = {
            let mut b = self.backends.lock().unwrap();
            let before = b.len();
            b.retain(|b| b.addr != addr);
            b.len() != before
        };
        self.idle.lock().unwrap().retain(|a, _| a.ip() != addr.ip());
        self.idle_raw.lock().unwrap().retain(|a, _| a.ip() != addr.ip());
        // Its HTTP/2 connection takes no new streams; those open finish.
        self.h2.lock().unwrap().retain(|a, _| a.ip() != addr.ip());
        self.h2_connecting.lock().unwrap().retain(|a, _| a.ip() != addr.ip());
        // A replica with nothing in flight is done with: its tally goes now
        // (one still busy goes when `drain` sees it idle).
        let mut counters = self.counters.lock().unwrap();
        if counters
            .get(&addr)
            .is_some_and(|t| t.active.load(Ordering::SeqCst) == 0)
        {
            counters.remove(&addr);
        }
        drop(counters);
        if left {
            self.tell("leave", addr);
        }
    }

    /// A pooled connection to `addr` ready for a request, if one is idle.
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(&addr)?;
        while let Some((s, since)) = list.pop() {
            if s.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some(s);
            }
        }
        None
    }

    /// Keeps a connection whose response has ended for the next request,
    /// if its replica is still in the pool and there is room.
    fn checkin(&self, addr: SocketAddr, s: Sender) {
        let member = self.backends.lock().unwrap().iter().any(|b| b.addr.ip() == addr.ip());
        if !member || s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        let list = idle.entry(addr).or_default();
        list.retain(|(s, _)| !s.is_closed());
        keep_idle(list, s);
    }

    /// A fast-path connection to `addr` that is still open and has
    /// nothing unread, if one is idle.
    fn checkout_raw(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle_raw.lock().unwrap();
        let list = idle.get_mut(&addr)?;
        while let Some((s, since)) = list.pop() {
            let mut probe = [0u8; 1];
            let open = matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            if open && since.elapsed() < IDLE_TIMEOUT {
                return Some(s);
            }
        }
        None
    }

    /// [`Pool::checkin`] for a fast-path connection.
    fn checkin_raw(&self, addr: SocketAddr, s: TcpStream) {
        let member = self.backends.lock().unwrap().iter().any(|b| b.addr.ip() == addr.ip());
        if !member {
            return;
        }
        keep_idle(self.idle_raw.lock().unwrap().entry(addr).or_default(), s);
    }

    /// Idle connections kept for `addr` now.
    pub fn idle_connections(&self, addr: SocketAddr) -> usize {
        self.idle.lock().unwrap().get(&addr).map_or(0, Vec::len)
            + self.idle_raw.lock().unwrap().get(&addr).map_or(0, Vec::len)
    }

    /// Replaces the whole set at once (a rollback's swap).
    pub fn set(&self, addrs: &[SocketAddr]) {
        tracing::debug!(?addrs, "pool set");
        let new: Vec<Backend> = addrs
            .iter()
            .map(|a| Backend {
                addr: *a,
                tally: self.counter(*a),
            })
            .collect();
        let old: Vec<SocketAddr> = {
            let mut b = self.backends.lock().unwrap();
            let old = b.iter().map(|x| x.addr).collect();
            *b = new;
            old
        };
        let kept = |a: &SocketAddr| addrs.iter().any(|m| m.ip() == a.ip());
        self.idle.lock().unwrap().retain(|a, _| kept(a));
        self.idle_raw.lock().unwrap().retain(|a, _| kept(a));
        self.h2.lock().unwrap().retain(|a, _| kept(a));
        self.h2_connecting.lock().unwrap().retain(|a, _| kept(a));
        for a in addrs.iter().filter(|a| !old.contains(a)) {
            self.tell("join", *a);
        }
        for a in old.iter().filter(|a| !addrs.contains(a)) {
            self.tell("leave", *a);
        }
    }

    pub fn members(&self) -> Vec<SocketAddr> {
        self.backends.lock().unwrap().iter().map(|b| b.addr).collect()
    }

    /// Requests and connections in flight to `addr`.
    pub fn active(&self, addr: SocketAddr) -> usize {
        self.counters
            .lock()
            .unwrap()
            .get(&addr)
            .map_or(0, |c| c.active.load(Ordering::SeqCst))
    }

    /// Each replica's tally (until it has drained after leaving), then the
    /// mesh's own answers under `None`.
    pub fn tallies(&self) -> Vec<(Option<SocketAddr>, TallyNow)> {
        let mut all: Vec<_> = self
            .counters
            .lock()
            .unwrap()
            .iter()
            .map(|(a, t)| (Some(*a), t.now()))
            .collect();
        all.push((None, self.own.now()));
        all
    }

    /// Waits until `addr` has nothing in flight, up to `timeout`; whether it drained.
    pub async fn drain(&self, addr: SocketAddr, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.active(addr) == 0 {
                self.counters.lock().unwrap().remove(&addr);
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Counts a request's outcome at `addr`: [`EJECT_AFTER`] failures in a
    /// row (unreachable, no answer, a 5xx) take the replica out of the
    /// picks for [`EJECT_FOR`] (passive outlier ejection); a success ends
    /// the run.
    fn report(&self, addr: SocketAddr, ok: bool) {
        let mut o = self.outliers.lock().unwrap();
        let e = o.entry(addr.ip()).or_insert((0, None));
        if ok {
            e.0 = 0;
            return;
        }
        e.0 += 1;
        if e.0 >= EJECT_AFTER {
            e.0 = 0;
            e.1 = Some(tokio::time::Instant::now() + EJECT_FOR);
            tracing::warn!(%addr, "replica ejected for {EJECT_FOR:?} after {EJECT_AFTER} failures in a row");
        }
    }

    /// Whether `addr` is ejected now.
    pub fn ejected(&self, addr: SocketAddr) -> bool {
        self.outliers
            .lock()
            .unwrap()
            .get(&addr.ip())
            .and_then(|(_, until)| *until)
            .is_some_and(|u| tokio::time::Instant::now() < u)
    }

    /// [`Pool::pick`], each backend at `port` when given (a listener for
    /// another of the service's ports than the pool's own).
    fn pick_at(&self, port: Option<u16>) -> Vec<(SocketAddr, Arc<Tally>)> {
        let mut all = self.pick();
        // Ejected replicas are left out, unless that leaves none (one
        // lock and one clock read for the lot).
        {
            let outliers = self.outliers.lock().unwrap();
            if outliers.values().any(|(_, until)| until.is_some()) {
                let now = tokio::time::Instant::now();
                let out = |a: &SocketAddr| {
                    outliers
                        .get(&a.ip())
                        .and_then(|(_, until)| *until)
                        .is_some_and(|u| now < u)
                };
                if all.iter().any(|(a, _)| !out(a)) {
                    all.retain(|(a, _)| !out(a));
                }
            }
        }
        if let Some(p) = port {
            for (a, _) in &mut all {
                a.set_port(p);
            }
        }
        all
    }

    /// The order to try the backends in for one request: the less loaded
    /// of two picked at random first (power of two choices over the
    /// in-flight counts), then the rest round-robin.
    fn pick_p2c(&self, port: Option<u16>) -> Vec<(SocketAddr, Arc<Tally>)> {
        let mut all = self.pick_at(port);
        if all.len() > 1 {
            // Two indexes from a counter scrambled by a multiplicative hash.
            let x = self.p2c.fetch_add(1, Ordering::Relaxed) as u64;
            let h = x.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let n = all.len() as u64;
            let (i, j) = (((h >> 40) % n) as usize, ((h >> 20) % n) as usize);
            let load = |k: usize| all[k].1.active.load(Ordering::Relaxed);
            let best = if j != i && load(j) < load(i) { j } else { i };
            all.swap(0, best);
        }
        all
    }

    /// The backends in round-robin order starting at the next one.
    fn pick(&self) -> Vec<(SocketAddr, Arc<Tally>)> {
        let b = self.backends.lock().unwrap();
        if b.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % b.len();
        (0..b.len())
            .map(|i| {
                let x = &b[(start + i) % b.len()];
                (x.addr, x.tally.clone())
            })
            .collect()
    }
}

/// Adds an idle connection to a replica's list (oldest first, as they went
/// idle), dropping those idle longer than [`IDLE_TIMEOUT`] first: one
/// clock read per check-in, not one per connection kept.
fn keep_idle<T>(list: &mut Vec<(T, tokio::time::Instant)>, conn: T) {
    let now = tokio::time::Instant::now();
    let stale = list
        .iter()
        .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
        .count();
    list.drain(..stale);
    if list.len() < MAX_IDLE {
        list.push((conn, now));
    }
}

/// What holds an in-flight count: a replica's tally, a listener's open
/// connections.
trait Counter {
    fn count(&self) -> &AtomicUsize;
}

impl Counter for AtomicUsize {
    fn count(&self) -> &AtomicUsize {
        self
    }
}

impl Counter for Tally {
    fn count(&self) -> &AtomicUsize {
        &self.active
    }
}

/// Counts a request (or connection) in flight until dropped.
struct InFlight<C: Counter>(Arc<C>);

impl<C: Counter> InFlight<C> {
    fn new(c: Arc<C>) -> InFlight<C> {
        c.count().fetch_add(1, Ordering::SeqCst);
        InFlight(c)
    }
}

impl<C: Counter> Drop for InFlight<C> {
    fn drop(&mut self) {
        self.0.count().fetch_sub(1, Ordering::SeqCst);
    }
}

/// A published port being served. Dropping it (or [`Listener::abort`])
/// stops accepting at once; [`Listener::drain`] stops accepting and lets
/// open connections finish.
pub struct Listener {
    accept: tokio::task::JoinHandle<()>,
    draining: tokio::sync::watch::Sender<bool>,
    open: Arc<AtomicUsize>,
    upstream: Upstream,
}

impl Listener {
    /// The HTTP version it speaks to replicas.
    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    /// Stops accepting; connections already open go on.
    pub fn abort(&self) {
        self.accept.abort();
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Stops accepting, then lets each open connection finish: every HTTP
    /// response from now on says `Connection: close` (a well-behaved client
    /// reconnects, to whoever listens on the port next), an HTTP connection
    /// still open a second later is closed once its request in flight is
    /// answered, and TCP ones when they end. Returns once none is open, or
    /// after `timeout`; whether all finished.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.accept.abort();
        let _ = self.draining.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Decides whether a client (by its address) may use a listener; a refused
/// one is disconnected at once.
pub type Admit = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// How a listener serves its pool.
#[derive(Clone, Default)]
pub struct ListenOptions {
    /// Who may connect (everyone without one).
    pub admit: Option<Admit>,
    /// The replicas' port for this listener, when not the pool's own.
    pub port: Option<u16>,
    /// How long a replica may take to send a response head
    /// ([`RESPONSE_TIMEOUT`] unless given); then the client gets a 504.
    /// Also how long a response body may stall: the replica sending
    /// nothing (on both paths) or, on the HTTP/1.1 fast path, the client
    /// taking nothing; then the response is cut off.
    pub response_timeout: Option<Duration>,
    /// How long a client may take to send a whole request head, or stay
    /// idle between requests ([`HEADER_TIMEOUT`] unless given).
    pub header_timeout: Option<Duration>,
    /// The HTTP version spoken to the replicas.
    pub upstream: Upstream,
}

/// How long a replica may take to answer a request with a response head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a listener's requests go: the replicas' port, how long they may
/// take to answer, in which HTTP version.
#[derive(Clone, Copy)]
struct Target {
    port: Option<u16>,
    response_timeout: Duration,
    header_timeout: Duration,
    upstream: Upstream,
}

/// The HTTP version the mesh speaks to a service's replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Upstream {
    /// HTTP/1.1 over pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c: gRPC servers, say): one
    /// connection per replica, its streams shared by every request.
    H2c,
}

/// Binds `addr` (with SO_REUSEPORT, so that a replacing daemon can bind the
/// same port before this one lets go of it) and serves it from `pool`.
pub async fn listen(addr: SocketAddr, pool: Arc<Pool>) -> Result<Listener, MeshError> {
    listen_with(addr, pool, ListenOptions::default()).await
}

/// [`listen`] with [`ListenOptions`].
pub async fn listen_with(addr: SocketAddr, pool: Arc<Pool>, opts: ListenOptions) -> Result<Listener, MeshError> {
    let ListenOptions {
        admit,
        port,
        response_timeout,
        header_timeout,
        upstream,
    } = opts;
    let target = Target {
        port,
        response_timeout: response_timeout.unwrap_or(RESPONSE_TIMEOUT),
        header_timeout: header_timeout.unwrap_or(HEADER_TIMEOUT),
        upstream,
    };
    let bind = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    let listener = bind().map_err(|source| MeshError::Bind { addr, source })?;
    let (draining, watch) = tokio::sync::watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if admit.as_ref().is_some_and(|a| !a(peer.ip())) {
                continue;
            }
            let client = peer;
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            let conn = InFlight::new(counter.clone());
            let watch = watch.clone();
            tokio::spawn(async move {
                serve(stream, client, pool, target, watch).await;
                drop(conn);
            });
        }
    });
    Ok(Listener {
        accept,
        draining,
        open,
        upstream,
    })
}

/// How long a UDP client's flow lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// The most UDP clients one listener keeps flows for at once.
const UDP_FLOWS: usize = 4096;

/// Binds UDP `addr` (SO_REUSEPORT, as [`listen`]) and relays datagrams to
/// the pool: each client's flow goes to one replica (picked when the flow
/// starts, as the TCP proxy picks per connection) through a socket of its
/// own, whose replies go back to that client; a flow idle for 60 s ends.
pub async fn listen_udp(addr: SocketAddr, pool: Arc<Pool>, opts: ListenOptions) -> Result<Listener, MeshError> {
    let bind = || -> std::io::Result<tokio::net::UdpSocket> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(s.into())
    };
    let sock = Arc::new(bind().map_err(|source| MeshError::Bind { addr, source })?);
    let (draining, _) = tokio::sync::watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let accept = tokio::spawn(async move {
        let flows: Arc<Mutex<BTreeMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> = Arc::default();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, client)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            if opts.admit.as_ref().is_some_and(|a| !a(client.ip())) {
                continue;
            }
            let known = flows.lock().unwrap().get(&client).cloned();
            let flow = match known {
                Some(f) => f,
                None => {
                    if flows.lock().unwrap().len() >= UDP_FLOWS {
                        continue;
                    }
                    let Some((backend, active)) = pool.pick_at(opts.port).into_iter().next() else {
                        pool.failures.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let local: SocketAddr = if backend.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                        .parse()
                        .expect("address");
                    let up = match tokio::net::UdpSocket::bind(local).await {
                        Ok(u) if u.connect(backend).await.is_ok() => Arc::new(u),
                        _ => {
                            pool.failures.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    pool.requests.fetch_add(1, Ordering::Relaxed);
                    flows.lock().unwrap().insert(client, up.clone());
                    let (sock, flows, back) = (sock.clone(), flows.clone(), up.clone());
                    tokio::spawn(async move {
                        let _guard = InFlight::new(active);
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, back.recv(&mut buf)).await {
                            let _ = sock.send_to(&buf[..n], client).await;
                        }
                        flows.lock().unwrap().remove(&client);
                    });
                    up
                }
            };
            let _ = flow.send(&buf[..n]).await;
        }
    });
    Ok(Listener {
        accept,
        draining,
        open,
        upstream: Upstream::Http1,
    })
}

fn looks_like_http(b: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
    ];
    METHODS
        .iter()
        .any(|m| b.starts_with(m) || (b.len() < m.len() && m.starts_with(b) && !b.is_empty()))
}

/// Drives a connection until it ends (true) or its listener starts
/// draining (false: the caller winds it down).
async fn served_before_draining<F: std::future::Future>(
    mut conn: std::pin::Pin<&mut F>,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    // Already draining when handed over (by the fast path, say).
    if *draining.borrow() {
        return false;
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return true,
            changed = draining.changed() => {
                if changed.is_err() || *draining.borrow() {
                    return false;
                }
            }
        }
    }
}

/// HTTP/2 with prior knowledge (h2c): each stream's request is routed on
/// its own, as HTTP/1.1 requests are (to replicas over HTTP/1.1). When the
/// listener drains, the client gets a GOAWAY and its open streams finish.
async fn serve_h2c(
    stream: TcpStream,
    client: SocketAddr,
    pool: Arc<Pool>,
    target: Target,
    mut draining: tokio::sync::watch::Receiver<bool>,
) {
    let svc = hyper::service::service_fn(move |req| {
        let pool = pool.clone();
        async move { Ok::<_, std::convert::Infallible>(forward(req, &pool, target, client).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::pin!(conn);
    if served_before_draining(conn.as_mut(), &mut draining).await {
        return;
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.as_mut()).await;
}

async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    pool: Arc<Pool>,
    target: Target,
    mut draining: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = [0u8; 8];
    // Client-speaks-first protocols show their first bytes at once; a
    // server-speaks-first one gets TCP after a short wait.
    let n = match tokio::time::timeout(Duration::from_millis(300), stream.peek(&mut buf)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => return,
        Err(_) => 0,
    };
    if n == 8 && &buf == b"PRI * HT" {
        serve_h2c(stream, client, pool, target, draining).await;
    } else if n > 0 && looks_like_http(&buf[..n]) {
        if target.upstream == Upstream::Http1 {
            let mut stream = stream;
            match h1::serve(&mut stream, client, &pool, target, &mut draining).await {
                h1::Served::Closed => {}
                h1::Served::Handoff(read) => {
                    let io = h1::Prefixed { read, at: 0, stream };
                    serve_http1(io, client, pool, target, draining).await;
                }
            }
        } else {
            serve_http1(stream, client, pool, target, draining).await;
        }
    } else {
        splice(stream, pool, target.port).await;
    }
}

/// HTTP/1.x by hyper: what the fast path ([`h1`]) does not take.
async fn serve_http1<I>(
    stream: I,
    client: SocketAddr,
    pool: Arc<Pool>,
    target: Target,
    mut draining: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let closing = draining.clone();
    let svc = hyper::service::service_fn(move |req| {
        let pool = pool.clone();
        let closing = *closing.borrow();
        async move {
            let mut resp = forward(req, &pool, target, client).await;
            if closing {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // A client slow to send its request head, or idle that long
    // between requests, is disconnected.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(target.header_timeout)
        .keep_alive(true)
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::pin!(conn);
    // Draining: responses say Connection: close; a connection idle for
    // a second after that is closed.
    if served_before_draining(conn.as_mut(), &mut draining).await {
        return;
    }
    if tokio::time::timeout(Duration::from_secs(1), conn.as_mut())
        .await
        .is_err()
    {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), conn.as_mut()).await;
    }
}

async fn splice(mut client: TcpStream, pool: Arc<Pool>, port: Option<u16>) {
    for (addr, active) in pool.pick_p2c(port) {
        let Ok(Ok(mut up)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await else {
            pool.report(addr, false);
            continue;
        };
        pool.report(addr, true);
        let _guard = InFlight::new(active);
        pool.requests.fetch_add(1, Ordering::Relaxed);
        let _ = up.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        return;
    }
    pool.failures.fetch_add(1, Ordering::Relaxed);
}

/// An answer the mesh makes itself for want of a replica's: a failure,
/// tallied as the mesh's own.
fn refuse(pool: &Pool, code: StatusCode, msg: &str, since: tokio::time::Instant) -> Response<Body> {
    refused(pool, code, since);
    status(code, msg)
}

/// Tallies an answer the mesh made itself as a failure.
fn refused(pool: &Pool, code: StatusCode, since: tokio::time::Instant) {
    pool.failures.fetch_add(1, Ordering::Relaxed);
    pool.own.record(code.as_u16(), since.elapsed());
}

fn status(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = code;
    r
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and every header the Connection header names.
fn strip_hop_by_hop(h: &mut hyper::HeaderMap) {
    use hyper::header::{HeaderName, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    // Most messages name nothing in Connection: no list to build then.
    if h.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    // Constant names: no name to parse per message.
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    for n in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        h.remove(n);
    }
}

/// A request's head as it goes to a replica: hop-by-hop headers dropped,
/// the client appended to `X-Forwarded-For` and `Forwarded`, HTTP/1.1.
fn outgoing(parts: &mut hyper::http::request::Parts, client: SocketAddr) {
    strip_hop_by_hop(&mut parts.headers);
    // An HTTP/2 request names its authority in the URI: HTTP/1.1 wants it
    // in Host and the target in origin form.
    if let Some(authority) = parts.uri.authority().cloned() {
        if !parts.headers.contains_key(hyper::header::HOST) {
            if let Ok(v) = hyper::header::HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(hyper::header::HOST, v);
            }
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = path.parse() {
            parts.uri = uri;
        }
    }
    const X_FORWARDED_FOR: hyper::header::HeaderName = hyper::header::HeaderName::from_static("x-forwarded-for");
    let ip = client.ip();
    for (name, mine) in [
        (X_FORWARDED_FOR, ip.to_string()),
        (hyper::header::FORWARDED, forwarded_element(ip)),
    ] {
        let mut list = hop_list(parts.headers.get_all(&name).iter().map(|v| v.as_bytes()));
        list.extend_from_slice(mine.as_bytes());
        if let Ok(v) = hyper::header::HeaderValue::from_bytes(&list) {
            parts.headers.insert(name, v);
        }
    }
    parts.version = hyper::Version::HTTP_11;
}

/// The prior hops of a forwarding header (`X-Forwarded-For`, `Forwarded`)
/// from all its lines, each followed by `", "`, ready for this hop's to be
/// appended; empty lines and elements are left out (a list has none).
fn hop_list<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut list = Vec::new();
    for line in lines {
        for element in line.split(|b| *b == b',') {
            let element = element.trim_ascii();
            if !element.is_empty() {
                list.extend_from_slice(element);
                list.extend_from_slice(b", ");
            }
        }
    }
    list
}

/// This hop's element of a `Forwarded` header (RFC 7239): the client's
/// address (an IPv6 one quoted in brackets) and the protocol it spoke.
fn forwarded_element(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("for={a};proto=http"),
        std::net::IpAddr::V6(a) => format!("for=\"[{a}]\";proto=http"),
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` and
/// an `Upgrade` header: WebSocket, say).
fn is_upgrade(h: &hyper::HeaderMap) -> bool {
    h.contains_key(hyper::header::UPGRADE)
        && h.get_all(hyper::header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
        })
}

/// An upgrade request (WebSocket): sent on a connection of its own to one
/// replica; when it answers 101, the client's connection and the replica's
/// are joined and copied both ways until either side closes (the request
/// counts in flight until then, so a drain waits for the tunnel).
async fn upgrade(
    mut req: Request<Incoming>,
    pool: &Arc<Pool>,
    target: Target,
    client: SocketAddr,
    t0: tokio::time::Instant,
) -> Response<Body> {
    let from_client = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let protocol = parts.headers.get(hyper::header::UPGRADE).cloned();
    outgoing(&mut parts, client);
    if let Some(p) = protocol {
        parts.headers.insert(hyper::header::UPGRADE, p);
        parts.headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
    }
    let mut last = String::from("no healthy replica");
    for (addr, active) in pool.pick_p2c(target.port) {
        let guard = InFlight::new(active);
        let mut sender = match connect(pool, addr, true).await {
            Ok(s) => s,
            Err(e) => {
                pool.report(addr, false);
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let mut resp = match sender
            .send_request(Request::from_parts(parts, body.map_err(BodyError::from).boxed()))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return refuse(
                    pool,
                    StatusCode::BAD_GATEWAY,
                    &format!("the replica did not answer ({addr}: {e})"),
                    t0,
                );
            }
        };
        guard.0.record(resp.status().as_u16(), t0.elapsed());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let from_replica = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(r)) = (from_client.await, from_replica.await) {
                    let (mut c, mut r) = (hyper_util::rt::TokioIo::new(c), hyper_util::rt::TokioIo::new(r));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut r).await;
                }
                drop(guard);
            });
            let (rparts, _) = resp.into_parts();
            return Response::from_parts(rparts, full(Bytes::new()));
        }
        // Refused: an ordinary response, streamed.
        tokio::spawn(async move {
            let _ = sender.ready().await;
            drop(guard);
        });
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        return Response::from_parts(rparts, rbody.map_err(BodyError::from).boxed());
    }
    refuse(
        pool,
        StatusCode::BAD_GATEWAY,
        &format!("no replica answered ({last})"),
        t0,
    )
}

/// Opens a keep-alive connection to `addr` (a replica on a local bridge: a
/// connect that takes long is to one that is gone, so give up soon);
/// `upgrades`: the connection may switch protocols (it is not pooled then).
async fn connect(pool: &Pool, addr: SocketAddr, upgrades: bool) -> Result<Sender, String> {
    let stream = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    pool.connects.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let _ = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
    });
    Ok(sender)
}

/// What a response's end hands back: the connection to its pool, the
/// request's in-flight count to its replica.
struct Back {
    /// The HTTP/1.1 connection the response came on (an HTTP/2 one is
    /// shared and never taken out of its pool).
    sender: Option<Sender>,
    pool: Arc<Pool>,
    addr: SocketAddr,
    guard: InFlight<Tally>,
}

impl Back {
    fn give(self) {
        let Back {
            sender,
            pool,
            addr,
            guard,
        } = self;
        let Some(mut sender) = sender else {
            drop(guard);
            return;
        };
        if sender.is_ready() {
            pool.checkin(addr, sender);
            drop(guard);
            return;
        }
        // The connection task has not taken in the response's end yet.
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.checkin(addr, sender);
            }
            drop(guard);
        });
    }
}

/// A replica's response body as it streams to the client; read to its end,
/// it gives its connection back at once (no task to wait for that). Dropped
/// before its end, the connection goes with it.
struct Returning {
    body: Incoming,
    back: Option<Back>,
    /// How long the replica may send nothing while the body is wanted: a
    /// replica that stalls that long breaks the response off (as the fast
    /// path does, and nginx's `proxy_read_timeout`, counted between reads)
    /// rather than hold its client. A client that reads slowly is not
    /// waited for here (hyper asks for the next frame only once it can send
    /// it), so it is never cut off.
    stall: Duration,
    /// When the present wait for the replica began (`None` between waits).
    waiting_since: Option<tokio::time::Instant>,
    /// The timer, made on the first wait and moved on only when it fires
    /// early (a later wait began since): at most one timer update per
    /// stall period, not one per frame.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            Poll::Ready(None) => {
                if let Some(back) = self.back.take() {
                    back.give();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                self.waiting_since = None;
                Poll::Ready(Some(frame.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let this = &mut *self;
                let since = *this.waiting_since.get_or_insert_with(tokio::time::Instant::now);
                let due = later(since, this.stall);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                loop {
                    if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                        return Poll::Pending;
                    }
                    if timer.deadline() >= due {
                        break;
                    }
                    timer.as_mut().reset(due);
                }
                // The connection goes (dropped, not given back).
                if let Some(back) = this.back.take() {
                    tracing::warn!(addr = %back.addr, "replica sent nothing of a response body for {:?}: cut off", this.stall);
                }
                Poll::Ready(Some(Err(BodyError::Stalled(this.stall))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // A body with nothing to read (HEAD, 204, 304) may never be polled.
        if let Some(back) = self.back.take() {
            if hyper::body::Body::is_end_stream(&self.body) {
                back.give();
            }
        }
    }
}

/// A replica that accepted a request and sent no response head in time:
/// it counts a failure (its connection is dropped), the client gets a 504.
fn timed_out(pool: &Pool, addr: SocketAddr, target: Target, t0: tokio::time::Instant) -> Response<Body> {
    pool.report(addr, false);
    tracing::warn!(%addr, "replica did not answer within {:?}", target.response_timeout);
    refuse(
        pool,
        StatusCode::GATEWAY_TIMEOUT,
        "the replica did not answer in time",
        t0,
    )
}

/// A replica's response as it goes to the client: counted, hop-by-hop
/// headers dropped, its body a [`Returning`] one, which gives the HTTP/1.1
/// connection (`sender`) back to the pool and the request's in-flight
/// count back to the replica once read to its end.
fn answered(
    pool: &Arc<Pool>,
    addr: SocketAddr,
    guard: InFlight<Tally>,
    sender: Option<Sender>,
    resp: Response<Incoming>,
    t0: tokio::time::Instant,
    stall: Duration,
) -> Response<Body> {
    pool.report(addr, !resp.status().is_server_error());
    guard.0.record(resp.status().as_u16(), t0.elapsed());
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    let rbody = Returning {
        body: rbody,
        back: Some(Back {
            sender,
            pool: pool.clone(),
            addr,
            guard,
        }),
        stall,
        waiting_since: None,
        timer: None,
    };
    Response::from_parts(rparts, rbody.boxed())
}

/// The shared HTTP/2 connection to `addr`: the open one, or a new one.
async fn h2_connection(pool: &Pool, addr: SocketAddr, fresh: bool) -> Result<H2Sender, String> {
    let open = |pool: &Pool| {
        let h2 = pool.h2.lock().unwrap();
        h2.get(&addr).filter(|s| !s.is_closed()).cloned()
    };
    if !fresh {
        if let Some(s) = open(pool) {
            return Ok(s);
        }
    }
    let lock = pool.h2_connecting.lock().unwrap().entry(addr).or_default().clone();
    let _connecting = lock.lock().await;
    if !fresh {
        // Made by the request this one waited for.
        if let Some(s) = open(pool) {
            return Ok(s);
        }
    }
    let stream = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    // Pinged while open: a replica gone without a word is found out in
    // seconds, not by every request waiting out its response timeout.
    let (sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    pool.connects.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // Kept only while the replica is in the pool (it may have left while
    // this connected).
    // (Under the members' lock: a `remove` either comes before, and it is
    // not kept, or after, and takes it out.)
    let members = pool.backends.lock().unwrap();
    if members.iter().any(|b| b.addr.ip() == addr.ip()) {
        pool.h2.lock().unwrap().insert(addr, sender.clone());
    }
    drop(members);
    Ok(sender)
}

/// [`forward`] to replicas that speak HTTP/2 (h2c): the request goes as a
/// stream on the replica's one connection, in HTTP/2's form (the Host
/// header becomes the `:authority`), trailers and all (gRPC's status rides
/// in them). The same retry rules as over HTTP/1.1.
#[allow(clippy::too_many_arguments)]
async fn forward_h2(
    mut parts: hyper::http::request::Parts,
    te_trailers: bool,
    body: Option<Body>,
    replayable: bool,
    kept: Bytes,
    candidates: Vec<(SocketAddr, Arc<Tally>)>,
    pool: &Arc<Pool>,
    target: Target,
    t0: tokio::time::Instant,
) -> Response<Body> {
    parts.version = hyper::Version::HTTP_2;
    // The one TE an HTTP/2 request may carry (gRPC servers want it).
    if te_trailers {
        parts
            .headers
            .insert(hyper::header::TE, hyper::header::HeaderValue::from_static("trailers"));
    }
    // The Host header becomes the authority, if it is one (no user info,
    // nothing of a path, query or fragment smuggled in).
    let host = match parts.headers.remove(hyper::header::HOST) {
        None => None,
        Some(h) => match h
            .to_str()
            .ok()
            .filter(|h| !h.contains('@'))
            .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
        {
            Some(a) => Some(a),
            None => return status(StatusCode::BAD_REQUEST, "bad Host header"),
        },
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    let mut body = body;
    let mut last = String::new();
    'replicas: for (addr, active) in candidates {
        let guard = InFlight::new(active);
        let authority = match &host {
            Some(a) => a.clone(),
            None => match addr.to_string().parse() {
                Ok(a) => a,
                Err(_) => return status(StatusCode::BAD_REQUEST, "bad Host header"),
            },
        };
        match hyper::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path.clone())
            .build()
        {
            Ok(uri) => parts.uri = uri,
            Err(_) => return status(StatusCode::BAD_REQUEST, "bad Host header"),
        }
        // The shared connection may turn out closed: then a fresh one.
        for fresh in [false, true] {
            let mut sender = match h2_connection(pool, addr, fresh).await {
                Ok(s) => s,
                Err(e) => {
                    pool.report(addr, false);
                    last = format!("{addr}: {e}");
                    tracing::warn!(%addr, "replica unreachable over HTTP/2, trying the next: {e}");
                    continue 'replicas;
                }
            };
            let b = match body.take() {
                Some(b) => b,
                None if replayable => full(kept.clone()),
                None => break 'replicas,
            };
            let sent = tokio::time::timeout(
                target.response_timeout,
                sender.try_send_request(Request::from_parts(parts.clone(), b)),
            )
            .await;
            let Ok(sent) = sent else {
                return timed_out(pool, addr, target, t0);
            };
            match sent {
                Ok(resp) => return answered(pool, addr, guard, None, resp, t0, target.response_timeout),
                Err(mut e) => {
                    last = format!("{addr}: {}", e.error());
                    match e.take_message() {
                        Some(req) => body = Some(req.into_body()),
                        None if replayable => {}
                        None => {
                            tracing::warn!(%addr, "request to replica failed after it was sent: {last}");
                            break 'replicas;
                        }
                    }
                    tracing::debug!(%addr, fresh, "HTTP/2 request to replica failed, trying again: {last}");
                }
            }
        }
    }
    refuse(
        pool,
        StatusCode::BAD_GATEWAY,
        &format!("no replica answered ({last})"),
        t0,
    )
}

/// Sends one request to a replica, streaming its body and the response's,
/// retrying on another connection or replica while that is safe.
async fn forward(req: Request<Incoming>, pool: &Arc<Pool>, target: Target, client: SocketAddr) -> Response<Body> {
    pool.requests.fetch_add(1, Ordering::Relaxed);
    let t0 = tokio::time::Instant::now();
    if is_upgrade(req.headers()) {
        return upgrade(req, pool, target, client, t0).await;
    }
    let (mut parts, body) = req.into_parts();
    let te_trailers = parts.headers.get_all(hyper::header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
    });
    outgoing(&mut parts, client);
    // Sent and lost, a request is repeated only if that is harmless (an
    // RFC 9110 idempotent method) and possible (no body to send again).
    let idempotent = matches!(
        parts.method,
        hyper::Method::GET
            | hyper::Method::HEAD
            | hyper::Method::OPTIONS
            | hyper::Method::TRACE
            | hyper::Method::PUT
            | hyper::Method::DELETE
    );
    // An idempotent request's small body is kept, so the request can be
    // sent again; any other body streams through once.
    let size = hyper::body::Body::size_hint(&body).exact();
    let small = size.is_some_and(|n| n <= REPLAY_BODY as u64);
    let empty = size == Some(0);
    let (replayable, kept, mut body): (bool, Bytes, Option<Body>) = if idempotent && empty {
        (true, Bytes::new(), None)
    } else if idempotent && small {
        match http_body_util::Limited::new(body, REPLAY_BODY).collect().await {
            Ok(b) => (true, b.to_bytes(), None),
            Err(_) => return status(StatusCode::BAD_REQUEST, "request body broken"),
        }
    } else {
        (false, Bytes::new(), Some(body.map_err(BodyError::from).boxed()))
    };
    let candidates = pool.pick_p2c(target.port);
    if candidates.is_empty() {
        return refuse(pool, StatusCode::SERVICE_UNAVAILABLE, "no healthy replica", t0);
    }
    if target.upstream == Upstream::H2c {
        return forward_h2(parts, te_trailers, body, replayable, kept, candidates, pool, target, t0).await;
    }
    let mut last = String::new();
    'replicas: for (addr, active) in candidates {
        let guard = InFlight::new(active);
        // A pooled connection may turn out closed: then a fresh one.
        for _ in 0..3 {
            let (mut sender, pooled) = match pool.checkout(addr) {
                Some(s) => (s, true),
                None => match connect(pool, addr, false).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        pool.report(addr, false);
                        last = format!("{addr}: {e}");
                        tracing::warn!(%addr, "replica unreachable, trying the next: {e}");
                        continue 'replicas;
                    }
                },
            };
            let b = match body.take() {
                Some(b) => b,
                None if replayable => full(kept.clone()),
                None => break 'replicas,
            };
            let started = tokio::time::Instant::now();
            let sent = tokio::time::timeout(
                target.response_timeout,
                sender.try_send_request(Request::from_parts(parts.clone(), b)),
            )
            .await;
            let Ok(sent) = sent else {
                return timed_out(pool, addr, target, t0);
            };
            match sent {
                Ok(resp) => {
                    if started.elapsed() > Duration::from_secs(1) {
                        tracing::warn!(%addr, elapsed_ms = started.elapsed().as_millis() as u64, "slow replica");
                    }
                    return answered(pool, addr, guard, Some(sender), resp, t0, target.response_timeout);
                }
                Err(mut e) => {
                    last = format!("{addr}: {}", e.error());
                    match e.take_message() {
                        // Not sent: the same request again, elsewhere.
                        Some(req) => body = Some(req.into_body()),
                        None if replayable => {}
                        None => {
                            tracing::warn!(%addr, "request to replica failed after it was sent: {last}");
                            break 'replicas;
                        }
                    }
                    tracing::debug!(%addr, pooled, "request to replica failed, trying again: {last}");
                    if !pooled {
                        continue 'replicas;
                    }
                }
            }
        }
    }
    refuse(
        pool,
        StatusCode::BAD_GATEWAY,
        &format!("no replica answered ({last})"),
        t0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_flows_go_to_one_replica_each_and_replies_come_back() {
        let lo = std::net::Ipv4Addr::LOCALHOST;
        // Two replicas answering "<name>:<datagram>" on the same port of
        // two loopback addresses; the pool knows them at another port.
        let probe = std::net::UdpSocket::bind((lo, 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let pool = Pool::new();
        for (i, ip) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
            let s = tokio::net::UdpSocket::bind((ip, port)).await.unwrap();
            pool.add(SocketAddr::new(ip.parse().unwrap(), 9));
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = s.recv_from(&mut buf).await {
                    let reply = format!("r{i}:{}", String::from_utf8_lossy(&buf[..n]));
                    let _ = s.send_to(reply.as_bytes(), from).await;
                }
            });
        }
        let front_probe = std::net::UdpSocket::bind((lo, 0)).unwrap();
        let front = front_probe.local_addr().unwrap();
        drop(front_probe);
        let opts = ListenOptions {
            port: Some(port),
            ..Default::default()
        };
        let _l = listen_udp(front, pool.clone(), opts).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2 {
            let c = tokio::net::UdpSocket::bind((lo, 0)).await.unwrap();
            let mut first = None;
            for word in ["a", "b"] {
                c.send_to(word.as_bytes(), front).await.unwrap();
                let mut buf = [0u8; 64];
                let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                let (who, what) = std::str::from_utf8(&buf[..n]).unwrap().split_once(':').unwrap();
                assert_eq!(what, word);
                // One client's datagrams all go to the same replica.
                assert_eq!(*first.get_or_insert(who.to_string()), who);
            }
            seen.insert(first.unwrap());
        }
        assert_eq!(seen.len(), 2, "two clients, two replicas: {seen:?}");
    }

    /// A raw TCP backend on `ip` (an address of its own): `conn` serves
    /// each accepted connection.
    async fn raw_backend<F, Fut>(ip: &str, conn: F) -> SocketAddr
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + Copy + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(conn(s));
            }
        });
        addr
    }

    /// A hyper backend on loopback answering with `handler`; counts the
    /// connections it accepted and those still open.
    async fn hyper_backend<F, B>(handler: F) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>)
    where
        F: Fn(Request<Incoming>) -> Response<B> + Send + Sync + Copy + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| async move {
                        Ok::<_, std::convert::Infallible>(handler(req))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, open)
    }

    /// A GET of `path` with a Host header and no body.
    /// The mesh in front of `pool` on a free loopback port: its address and
    /// its listener.
    async fn front(pool: &Arc<Pool>, opts: ListenOptions) -> (SocketAddr, Listener) {
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let l = listen_with(addr, pool.clone(), opts).await.unwrap();
        (addr, l)
    }

    /// An HTTP/2 client (prior knowledge) connected to `front`.
    async fn h2_client<B>(front: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
    where
        B: hyper::body::Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let s = TcpStream::connect(front).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        send
    }

    /// Waits (at most 5 s) until nothing is in flight to `addr`.
    async fn out_of_flight(pool: &Pool, addr: SocketAddr, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pool.active(addr) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .uri(path)
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// A keep-alive client connection to `front`.
    async fn client<B>(front: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let s = TcpStream::connect(front).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    /// A replica written by hand, for what hyper would not send: a chunked
    /// body with trailers (`/chunked`), a body that ends when it closes
    /// (`/close`), two different lengths (`/conflict`); anything else gets
    /// its request head and body echoed.
    async fn hand_written_replica(mut s: TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat);
        let mut buf = Vec::new();
        let more = async |s: &mut TcpStream, buf: &mut Vec<u8>| {
            let mut b = [0u8; 4096];
            match s.read(&mut b).await {
                Ok(n) if n > 0 => {
                    buf.extend_from_slice(&b[..n]);
                    true
                }
                _ => false,
            }
        };
        loop {
            let head = loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    break i + 4;
                }
                if !more(&mut s, &mut buf).await {
                    return;
                }
            };
            let text = String::from_utf8_lossy(&buf[..head]).to_lowercase();
            let end = loop {
                if text.contains("transfer-encoding: chunked") {
                    if let Some(i) = find(&buf[head..], b"0\r\n\r\n") {
                        break head + i + 5;
                    }
                } else {
                    let l = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |l| l.trim().parse::<usize>().unwrap());
                    if buf.len() >= head + l {
                        break head + l;
                    }
                }
                if !more(&mut s, &mut buf).await {
                    return;
                }
            };
            let echo = format!("{text}|{}", String::from_utf8_lossy(&buf[head..end]));
            buf.drain(..end);
            let out = match text.split(' ').nth(1).unwrap() {
                "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
                               5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"
                    .to_string(),
                "/close" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
                    return;
                }
                "/conflict" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_string(),
                _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{echo}", echo.len()),
            };
            if s.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test]
    async fn the_fast_path_relays_every_framing_pipelines_and_hands_over_the_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let replica = raw_backend("127.0.0.6", hand_written_replica).await;
        let pool = Pool::new();
        pool.set(&[replica]);
        let (front, _l) = front(&pool, ListenOptions::default()).await;
        let mut c = client::<Full<Bytes>>(front).await;
        // A chunked body, extensions and trailers and all.
        let resp = c.send_request(get("/chunked")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()["x-sum"], "11");
        assert_eq!(body.to_bytes(), "hello world");
        // The head as the replica got it: hop-by-hop headers gone, the
        // client appended to X-Forwarded-For and Forwarded.
        let mut req = get("/echo");
        req.headers_mut().insert("connection", "x-drop".parse().unwrap());
        req.headers_mut().insert("x-drop", "1".parse().unwrap());
        req.headers_mut()
            .insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        req.headers_mut().insert("forwarded", "for=192.0.2.1".parse().unwrap());
        let resp = c.send_request(req).await.unwrap();
        let echo = resp.into_body().collect().await.unwrap().to_bytes();
        let echo = String::from_utf8_lossy(&echo);
        assert!(echo.starts_with("get /echo http/1.1\r\n"), "{echo}");
        assert!(echo.contains("x-forwarded-for: 192.0.2.1, 127.0.0.1\r\n"), "{echo}");
        assert!(
            echo.contains("forwarded: for=192.0.2.1, for=127.0.0.1;proto=http\r\n"),
            "{echo}"
        );
        assert!(!echo.contains("x-drop") && !echo.contains("connection"), "{echo}");
        // Ambiguous framing: a 502, and the next request is served.
        let resp = c.send_request(get("/conflict")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let resp = c.send_request(get("/echo")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // HEAD: the length, no body.
        let mut head = get("/echo");
        *head.method_mut() = hyper::Method::HEAD;
        let resp = c.send_request(head).await.unwrap();
        assert!(resp.headers().contains_key("content-length"));
        assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
        // A body that ends with its connection: the client's closes too.
        let mut c2 = client::<Full<Bytes>>(front).await;
        let resp = c2.send_request(get("/close")).await.unwrap();
        assert_eq!(resp.headers()["connection"], "close");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "until close");
        // Pipelined: a fast-path request, then one it hands to hyper (a
        // chunked upload) with what was read of it, on one connection.
        let mut raw = TcpStream::connect(front).await.unwrap();
        raw.write_all(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              4\r\ndata\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut all))
            .await
            .unwrap()
            .unwrap();
        let all = String::from_utf8_lossy(&all);
        assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
        let (one, two) = all.split_at(all.find("post /two").expect("the second request reached the replica"));
        assert!(one.contains("get /one http/1.1"), "{all}");
        assert!(two.contains("data"), "{all}");
        // Hyper's path adds the same forwarding headers.
        assert!(two.contains("x-forwarded-for: 127.0.0.1\r\n"), "{all}");
        assert!(two.contains("forwarded: for=127.0.0.1;proto=http\r\n"), "{all}");
        // The upstream connections were reused (the 502's and the closed
        // one's aside).
        assert!(
            pool.connects.load(Ordering::SeqCst) <= 5,
            "{pool_connects}",
            pool_connects = pool.connects.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_client_trickling_its_request_head_is_cut_off_at_the_header_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (replica, _, _) = hyper_backend(|_| Response::new(Full::new(Bytes::from("ok")))).await;
        let pool = Pool::new();
        pool.set(&[replica]);
        let opts = ListenOptions {
            header_timeout: Some(Duration::from_millis(400)),
            ..Default::default()
        };
        let (front, l) = front(&pool, opts).await;
        // One byte every 50 ms: each read comes in time, the head never
        // does. A head is the fast path's until it is whole; after a
        // chunked upload the connection is hyper's, and so is the next head.
        let upload = &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..];
        for (first, head) in [
            (
                &b""[..],
                &b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..],
            ),
            (
                upload,
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ] {
            let mut c = TcpStream::connect(front).await.unwrap();
            if !first.is_empty() {
                c.write_all(first).await.unwrap();
                let mut got = Vec::new();
                while !got.ends_with(b"ok") {
                    let mut b = [0u8; 1024];
                    let n = c.read(&mut b).await.unwrap();
                    assert!(n > 0, "the upload was not answered");
                    got.extend_from_slice(&b[..n]);
                }
            }
            let t0 = tokio::time::Instant::now();
            let mut cut = false;
            for b in head {
                if c.write_all(&[*b]).await.is_err() {
                    cut = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut probe = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(1), c.read(&mut probe)).await {
                    Ok(Ok(_)) | Ok(Err(_)) => {
                        cut = true;
                        break;
                    }
                    Err(_) => {}
                }
            }
            assert!(cut, "never cut off (after {} bytes first)", first.len());
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_millis(350) && took < Duration::from_millis(2000),
                "cut off after {took:?}"
            );
        }
        // The listener is fine: a prompt client is served.
        let mut c = client::<Full<Bytes>>(front).await;
        let req = get("/");
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        drop(c);
        assert!(l.drain(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn upstream_connections_are_kept_alive_and_closed_when_a_replica_leaves() {
        let (backend, accepted, open) = hyper_backend(|_| Response::new(Full::new(Bytes::from("ok")))).await;
        let pool = Pool::new();
        pool.set(&[backend]);
        let (front, _l) = front(&pool, ListenOptions::default()).await;
        // Four clients, 50 requests each, one after the other on each.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..4 {
            set.spawn(async move {
                let mut c = client::<Full<Bytes>>(front).await;
                for _ in 0..50 {
                    c.ready().await.unwrap();
                    let req = get("/");
                    let resp = c.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let n = accepted.load(Ordering::SeqCst);
        assert!(n <= 4, "200 requests over {n} upstream connections");
        assert_eq!(pool.connects.load(Ordering::SeqCst) as usize, n);
        assert!(pool.idle_connections(backend) >= 1);
        assert_eq!(pool.active(backend), 0, "nothing in flight");
        // Every response tallied against its replica, none against the mesh.
        let tallies = pool.tallies();
        let (_, t) = tallies.iter().find(|(a, _)| *a == Some(backend)).unwrap();
        assert_eq!(t.classes, [0, 200, 0, 0, 0]);
        assert_eq!(t.count(), 200);
        assert!(t.sum > 0.0);
        assert_eq!(tallies.last().unwrap(), &(None, TallyNow::default()));
        // Leaving the pool closes its idle connections.
        pool.remove(backend);
        assert_eq!(pool.idle_connections(backend), 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while open.load(Ordering::SeqCst) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "idle connections left open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `chunks` chunks of 64 KiB, made as they are read.
    struct Generated {
        left: usize,
    }

    impl hyper::body::Body for Generated {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![7u8; 64 << 10])))))
        }
    }

    /// Peak resident memory of this process (VmHWM), in KiB.
    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_stream_both_ways_with_bounded_memory() {
        // The replica echoes the request body back as it reads it.
        let (backend, _, _) = hyper_backend(|req: Request<Incoming>| Response::new(req.into_body())).await;
        let pool = Pool::new();
        pool.set(&[backend]);
        let (front, _l) = front(&pool, ListenOptions::default()).await;
        let before = peak_rss_kib();
        // 256 MiB up and back, sixteen times the old buffering limit.
        let chunks = 4096;
        let mut c = client::<Generated>(front).await;
        let req = Request::builder()
            .method("POST")
            .uri("/echo")
            .header("host", "x")
            .body(Generated { left: chunks })
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut got = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                assert!(d.iter().all(|b| *b == 7));
                got += d.len();
            }
        }
        assert_eq!(got, chunks << 16, "every byte came back");
        let grew = peak_rss_kib().saturating_sub(before);
        println!("peak RSS grew by {grew} KiB moving 256 MiB each way");
        assert!(grew < 64 << 10, "the mesh buffered: peak RSS grew by {grew} KiB");
    }

    #[tokio::test]
    async fn upgrades_are_passed_through_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A replica that switches to an echo protocol on `Upgrade: echo`.
        let backend = raw_backend("127.0.0.1", |s| async move {
            let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                let wanted = req.headers().get("upgrade").is_some_and(|v| v == "echo");
                let forwarded = req.headers().get("x-forwarded-for").is_some();
                if !wanted || !forwarded {
                    return Ok::<_, std::convert::Infallible>(
                        Response::builder().status(400).body(Full::new(Bytes::new())).unwrap(),
                    );
                }
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let mut io = hyper_util::rt::TokioIo::new(on.await.unwrap());
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(Response::builder()
                    .status(101)
                    .header("connection", "upgrade")
                    .header("upgrade", "echo")
                    .body(Full::new(Bytes::new()))
                    .unwrap())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .with_upgrades()
                .await;
        })
        .await;
        let pool = Pool::new();
        pool.set(&[backend]);
        let (front, _l) = front(&pool, ListenOptions::default()).await;
        let mut c = TcpStream::connect(front).await.unwrap();
        c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(c.read(&mut b).await.unwrap(), 1, "closed before the head ended");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        assert_eq!(pool.active(backend), 1, "the tunnel counts in flight");
        for word in ["hello", "through the mesh"] {
            c.write_all(word.as_bytes()).await.unwrap();
            let mut got = vec![0u8; word.len()];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, word.as_bytes());
        }
        drop(c);
        out_of_flight(&pool, backend, "the tunnel did not end").await;
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_cut_off_at_the_response_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Announces ten bytes, sends three, then holds the connection.
        let staller = raw_backend("127.0.0.7", |mut s| async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let pool = Pool::new();
        pool.set(&[staller]);
        let opts = ListenOptions {
            response_timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        };
        let (front, _l) = front(&pool, opts).await;
        // HTTP/1.1 takes the fast path; HTTP/2 (prior knowledge) hyper's.
        for h2 in [false, true] {
            let t0 = tokio::time::Instant::now();
            let resp = if h2 {
                let mut send = h2_client::<Full<Bytes>>(front).await;
                let req = Request::builder()
                    .uri("http://x/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                send.send_request(req).await.unwrap()
            } else {
                client::<Full<Bytes>>(front).await.send_request(get("/")).await.unwrap()
            };
            assert_eq!(resp.status(), StatusCode::OK, "h2={h2}: the head came through");
            let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
            assert!(
                matches!(body, Ok(Err(_))),
                "h2={h2}: the stalled body was cut off, not left open"
            );
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_millis(250),
                "h2={h2}: cut off after only {took:?}"
            );
            // Nothing of it stays in flight.
            out_of_flight(
                &pool,
                staller,
                &format!("h2={h2}: the stalled request stayed in flight"),
            )
            .await;
            // Its connection, mid-body, is not handed to the next request.
            assert_eq!(
                pool.idle_connections(staller),
                0,
                "h2={h2}: the stalled connection went back to the pool"
            );
        }
    }

    #[tokio::test]
    async fn a_replica_that_never_answers_times_out_and_is_ejected() {
        use tokio::io::AsyncReadExt;
        // Accepts, reads, never answers (on an address of its own: replicas
        // are told apart by address).
        let hung = raw_backend("127.0.0.2", |mut s| async move {
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {}
        })
        .await;
        let (good, _, _) = hyper_backend(|_| Response::new(Full::new(Bytes::from("ok")))).await;
        let pool = Pool::new();
        pool.set(&[hung]);
        let opts = ListenOptions {
            response_timeout: Some(Duration::from_millis(200)),
            ..Default::default()
        };
        let (front, _l) = front(&pool, opts).await;
        let get = || async move {
            let mut c = client::<Full<Bytes>>(front).await;
            let req = get("/");
            c.send_request(req).await.unwrap().status()
        };
        for _ in 0..EJECT_AFTER {
            let t = tokio::time::Instant::now();
            assert_eq!(get().await, StatusCode::GATEWAY_TIMEOUT);
            assert!(t.elapsed() < Duration::from_secs(2), "answered in {:?}", t.elapsed());
        }
        assert!(pool.ejected(hung), "ejected after {EJECT_AFTER} timeouts in a row");
        // The timeouts are the mesh's own answers, each after about 200 ms.
        let own = pool.tallies().pop().unwrap();
        assert_eq!(own.0, None);
        assert_eq!(own.1.classes[4], EJECT_AFTER as u64);
        let fast = own.1.buckets[..LATENCY_BOUNDS.iter().position(|b| *b >= 0.1).unwrap() + 1]
            .iter()
            .sum::<u64>();
        assert_eq!(fast, 0, "no timeout answered within 100 ms: {:?}", own.1.buckets);
        // With a healthy replica beside it, every request lands there.
        pool.set(&[hung, good]);
        for _ in 0..10 {
            assert_eq!(get().await, StatusCode::OK);
        }
        assert!(!pool.ejected(good));
        // An address nobody listens on is ejected too, and nobody notices it.
        let dead = TcpListener::bind("127.0.0.3:0").await.unwrap().local_addr().unwrap();
        pool.set(&[dead, good]);
        for _ in 0..30 {
            assert_eq!(get().await, StatusCode::OK);
        }
        assert!(pool.ejected(dead));
    }

    #[tokio::test]
    async fn http2_clients_with_prior_knowledge_are_served() {
        let (backend, _, _) = hyper_backend(|req: Request<Incoming>| {
            let host = req.headers().get("host").map(|h| h.to_str().unwrap_or("").to_string());
            Response::new(Full::new(Bytes::from(format!(
                "{} {} host={}",
                req.version() == hyper::Version::HTTP_11,
                req.uri(),
                host.unwrap_or_default()
            ))))
        })
        .await;
        let pool = Pool::new();
        pool.set(&[backend]);
        let (front, _l) = front(&pool, ListenOptions::default()).await;
        let mut send = h2_client::<Full<Bytes>>(front).await;
        // Several streams on one connection, at once.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..8 {
            let req = Request::builder()
                .uri(format!("http://shop.example/item/{i}?x=1"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let fut = send.send_request(req);
            set.spawn(async move {
                let resp = fut.await.unwrap();
                assert_eq!(resp.version(), hyper::Version::HTTP_2);
                assert_eq!(resp.status(), StatusCode::OK);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, format!("true /item/{i}?x=1 host=shop.example").as_bytes());
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }

    #[tokio::test]
    async fn replicas_that_speak_h2c_get_streams_on_one_connection_trailers_and_all() {
        // A gRPC-like replica: HTTP/2 only, answers with trailers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let te = req.headers().get("te").map(|v| v.to_str().unwrap().to_string());
                        let said = format!("{:?} {} te={}", req.version(), req.uri(), te.unwrap_or_default());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let out = Full::new(Bytes::from(format!("{said} body={}", body.len())))
                            .with_trailers(async move { Some(Ok(trailers)) });
                        Ok::<_, std::convert::Infallible>(Response::new(out))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let pool = Pool::new();
        pool.set(&[backend]);
        let (front, l) = front(
            &pool,
            ListenOptions {
                upstream: Upstream::H2c,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(l.upstream(), Upstream::H2c);

        // An HTTP/2 client's streams, at once, with bodies and `te: trailers`.
        let send = h2_client::<Full<Bytes>>(front).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16 {
            let req = Request::builder()
                .method("POST")
                .uri(format!("http://svc.example/pkg.Svc/Call{i}"))
                .header("te", "trailers")
                .body(Full::new(Bytes::from(vec![7u8; i * 100])))
                .unwrap();
            let mut send = send.clone();
            set.spawn(async move {
                let resp = send.send_request(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let collected = resp.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned().expect("trailers pass through");
                assert_eq!(trailers["grpc-status"], "0");
                let body = collected.to_bytes();
                assert_eq!(
                    body,
                    format!(
                        "HTTP/2.0 http://svc.example/pkg.Svc/Call{i} te=trailers body={}",
                        i * 100
                    )
                    .as_bytes()
                );
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // An HTTP/1.1 client is served too, the Host header as the authority.
        let mut c = client::<Full<Bytes>>(front).await;
        let resp = c
            .send_request(
                Request::builder()
                    .uri("/plain")
                    .header("host", "web.example")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HTTP/2.0 http://web.example/plain te= body=0".as_bytes());
        // A Host that would move the path is refused, never forwarded.
        for bad in ["h/admin?", "user@h", "h#x"] {
            let resp = c
                .send_request(
                    Request::builder()
                        .uri("/public")
                        .header("host", bad)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "Host {bad:?}");
        }
        // Every request went as a stream of one connection.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.connects.load(Ordering::SeqCst), 1);
        assert_eq!(pool.active(backend), 0, "every request left the in-flight count");

        // A replica that leaves takes its connection out of use: the next
        // request after it rejoins opens a new one.
        pool.remove(backend);
        pool.add(backend);
        let resp = c
            .send_request(Request::builder().uri("/again").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_replica_that_resets_mid_response_breaks_that_response_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Announces 1 MiB, sends 64 KiB, resets the connection.
        let breaker = raw_backend("127.0.0.4", |mut s| async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n").await;
            let _ = s.write_all(&[1u8; 65536]).await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        })
        .await;
        let (good, _, _) = hyper_backend(|_| Response::new(Full::new(Bytes::from("ok")))).await;
        let pool = Pool::new();
        pool.set(&[breaker]);
        let (front, _l) = front(&pool, ListenOptions::default()).await;
        let mut c = client::<Full<Bytes>>(front).await;
        let req = get("/");
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "the head came through");
        assert!(
            resp.into_body().collect().await.is_err(),
            "the cut shows as a broken body"
        );
        out_of_flight(&pool, breaker, "the broken request stayed in flight").await;
        // Other clients are served.
        pool.set(&[good]);
        let mut c = client::<Full<Bytes>>(front).await;
        let req = get("/");
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ] {
            h.insert(hyper::header::HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarding_lists_combine_every_line_and_drop_empty_elements() {
        let lines: [&[u8]; 4] = [b"", b" 192.0.2.1 ,, ", b"for=x", b","];
        assert_eq!(hop_list(lines.into_iter()), b"192.0.2.1, for=x, ");
        assert!(hop_list(std::iter::empty()).is_empty());
    }

    #[test]
    fn forwarded_elements_quote_ipv6() {
        assert_eq!(
            forwarded_element("192.0.2.1".parse().unwrap()),
            "for=192.0.2.1;proto=http"
        );
        assert_eq!(
            forwarded_element("2001:db8::1".parse().unwrap()),
            "for=\"[2001:db8::1]\";proto=http"
        );
    }

    #[test]
    fn http_sniffing() {
        assert!(looks_like_http(b"GET / HT"));
        assert!(looks_like_http(b"PO"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(b"SSH-2.0-"));
        assert!(!looks_like_http(b""));
    }

    #[tokio::test]
    async fn round_robin_retry_and_drain() {
        // Two tiny HTTP backends on loopback, and one address nobody listens on.
        async fn backend(tag: &'static str) -> SocketAddr {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(tag))))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    });
                }
            });
            addr
        }
        let a = backend("a").await;
        let b = backend("b").await;
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let pool = Pool::new();
        pool.set(&[dead, a, b]);
        let (front, task) = front(&pool, ListenOptions::default()).await;
        let get = || async move {
            let s = TcpStream::connect(front).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            let r = send
                .send_request(
                    Request::get("/")
                        .header("host", "x")
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(get().await);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["a", "b"],
            "spread over both; the dead one retried past"
        );
        pool.remove(a);
        for _ in 0..4 {
            assert_eq!(get().await, "b");
        }
        assert!(pool.drain(a, Duration::from_secs(1)).await);
        assert_eq!(pool.failures.load(Ordering::Relaxed), 0);
        task.abort();
    }

    #[tokio::test]
    async fn a_second_listener_shares_the_port_and_the_first_drains() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let pool = Pool::new();
        pool.set(&[backend]);
        let (front, old) = front(&pool, ListenOptions::default()).await;
        // A keep-alive client of the old listener.
        let s = TcpStream::connect(front).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = || {
            Request::get("/")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let r = send.send_request(req()).await.unwrap();
        assert!(!r.headers().contains_key("connection"));
        let _ = r.into_body().collect().await;
        assert_eq!(old.open_connections(), 1);
        // The replacement binds the same port while the old one still listens.
        let new = listen(front, pool.clone()).await.expect("SO_REUSEPORT");
        let draining = tokio::spawn(async move { old.drain(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The old connection's next response says close; the connection ends; the drain completes.
        let r = send.send_request(req()).await.unwrap();
        assert_eq!(r.headers()["connection"], "close");
        let _ = r.into_body().collect().await;
        let _ = conn.await;
        assert!(draining.await.unwrap(), "the old listener drained");
        // New connections reach the new listener.
        let s = TcpStream::connect(front).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        assert_eq!(send.send_request(req()).await.unwrap().status(), 200);
        new.abort();
    }

    #[tokio::test]
    async fn a_request_that_reached_a_replica_is_repeated_only_if_idempotent() {
        use tokio::io::AsyncReadExt;
        // A replica that reads each request, counts it, and hangs up without answering.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dropper = l.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    if s.read(&mut buf).await.unwrap_or(0) > 0 {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        let pool = Pool::new();
        pool.set(&[dropper, dropper]);
        let (front, task) = front(&pool, ListenOptions::default()).await;
        let request = |method: &'static str| async move {
            let s = TcpStream::connect(front).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::builder().method(method).uri("/").header("host", "x");
            send.send_request(req.body(Full::new(Bytes::from("x"))).unwrap())
                .await
                .unwrap()
                .status()
        };
        assert_eq!(request("POST").await, StatusCode::BAD_GATEWAY);
        assert_eq!(seen.load(Ordering::SeqCst), 1, "a POST is sent once");
        assert_eq!(request("GET").await, StatusCode::BAD_GATEWAY);
        assert_eq!(seen.load(Ordering::SeqCst), 3, "a GET is tried on each replica");
        task.abort();
    }
}
