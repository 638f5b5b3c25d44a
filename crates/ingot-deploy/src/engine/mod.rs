//! The engine inside `ingot daemon`: converges running replicas to the
//! ledger's desired state.
//!
//! Replicas are containers of a [`Runtime`] (on this host, [`LocalRuntime`]:
//! ingot containers on the bridge network, each under its own monitor
//! process, so they outlive the daemon) named
//! `STACK.SERVICE.SLOT.VERSION.RANDOM`, where VERSION identifies what the
//! replica runs ([`PinnedService::version`]). On start the daemon adopts
//! the containers whose names say they are its own ([`adopt`]).
//!
//! A rolling update ([`rollout`]) goes slot by slot in batches of
//! `parallelism`. With `start-first`, the new replica starts, must pass its
//! health check, joins the mesh pool, and only then does the old one leave
//! the pool; the old replicas are kept running, out of the pool
//! ("parked"), until the whole change has succeeded, so an automatic
//! rollback is a swap of the pool's members (no container needs to start)
//! and then the new replicas are stopped. With `stop-first`, the old
//! replica leaves the pool, drains and stops before the new one starts.
//! Every replica leaves its pool and drains before it is stopped.
//!
//! Changes ([`changes`]: deploy, scale, rollback, rm) are recorded one at
//! a time (the ledger's only pending entry is its last) and each runs in a
//! task of its own under its stack's lock; the reconcile tick
//! ([`reconcile`]: dead or unhealthy replicas replaced, counts restored)
//! runs per stack, skipping a stack whose change is in progress.
//!
//! Modules: [`adopt`] (start-up), [`changes`] (submit, wait, prepare, carry
//! out), [`rollout`] (updates and the automatic rollback), [`reconcile`],
//! [`replica`] (start, probe, retire), [`ports`] (pools and published
//! ports), [`metrics`], [`runtime`] (the seam to the containers).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use ingot_mesh::Pool;
use ingot_store::{LedgerRow, Store};
use serde::Serialize;

use crate::compose::{FailureAction, Order, RestartCondition, UpdatePolicy};
use crate::ledger;
use crate::pin::{EngineKind, PinnedService, PinnedStack};
use crate::{DeployError, Result};

pub mod adopt;
pub mod changes;
pub mod metrics;
pub mod networks;
pub mod ports;
pub mod reconcile;
pub mod replica;
pub mod rollout;
pub mod runtime;
#[cfg(test)]
mod tests;

pub use runtime::{LocalRuntime, Runtime};

/// How often a starting replica is probed (and the reconcile tick).
const START_PROBE: Duration = Duration::from_millis(100);
/// How long a replica without a health check gets to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving replica's in-flight requests may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub id: String,
    pub name: String,
    pub slot: u32,
    pub version: String,
    pub image: String,
    /// Its primary address (the one the mesh and health checks use).
    pub address: Option<String>,
    /// One address per network it joined, in the order of the service's
    /// networks (the primary first).
    pub addresses: Vec<String>,
    /// The task state, as Docker's: starting, running, shutdown, failed.
    pub state: TaskState,
    /// Health beside it: starting, healthy, unhealthy (for a replica
    /// without a health check: whether its port accepts connections).
    pub health: HealthState,
    #[serde(skip)]
    pub failures: u32,
    #[serde(skip)]
    pub last_check: Option<Instant>,
}

/// A replica's task state, named as Docker's task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Started, its first health check not passed yet.
    Starting,
    Running,
    /// Exited or failed its health checks.
    Failed,
}

/// A replica's health, beside its task state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Starting,
    Healthy,
    Unhealthy,
}

impl Replica {
    /// Running and healthy: may serve traffic.
    pub fn serving(&self) -> bool {
        self.state == TaskState::Running && self.health == HealthState::Healthy
    }

    fn mark_healthy(&mut self) {
        self.state = TaskState::Running;
        self.health = HealthState::Healthy;
    }
}

/// A replica as a client of the stack's names and virtual addresses.
#[derive(Debug, Clone)]
struct Client {
    stack: String,
    /// Its service's networks (full names).
    networks: Vec<String>,
}

/// Locks a std mutex of engine state; a panic elsewhere while it was held
/// does not disable the daemon (the state is plain data, always consistent
/// between statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Service {
    stack: String,
    name: String,
    spec: PinnedService,
    pool: Arc<Pool>,
    replicas: Vec<Replica>,
    restarts: u32,
    /// Slots whose replica ended and that the restart policy leaves empty
    /// (condition none or on-failure after exit 0, or max_attempts spent);
    /// the next change of the service refills them.
    held: std::collections::BTreeSet<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub stack: String,
    pub service: String,
    pub image: String,
    pub digest: String,
    pub version: String,
    pub replicas: u32,
    pub running: usize,
    pub healthy: usize,
    pub ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeResult {
    pub entry: LedgerRow,
    pub outcome: String,
    pub message: String,
}

pub struct Engine {
    pub root: PathBuf,
    policy: Option<PathBuf>,
    runtime: Arc<dyn Runtime>,
    /// The engine's one store handle (ledger, validation, policy), used
    /// on the blocking pool.
    store: Arc<Mutex<Store>>,
    /// The ledger's desired state as of its last sealed entry.
    desired: Mutex<BTreeMap<String, PinnedStack>>,
    services: Mutex<BTreeMap<String, Service>>,
    listeners: Mutex<BTreeMap<ports::ListenAt, (String, Arc<ingot_mesh::Listener>)>>,
    /// One change at a time: the ledger's only pending entry is its last.
    change: Arc<tokio::sync::Mutex<()>>,
    /// The locks a quiesced engine holds until it exits.
    #[allow(clippy::type_complexity)]
    quiesced: Mutex<Option<(tokio::sync::OwnedMutexGuard<()>, Vec<tokio::sync::OwnedMutexGuard<()>>)>>,
    /// Per stack: held by a change of the stack and by its reconcile pass,
    /// so one stack's rollout never stalls another stack's reconcile.
    stacks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The messages of the changes this daemon finished, by entry.
    messages: Mutex<BTreeMap<i64, String>>,
    /// The last entry sealed; `wait` watches it.
    sealed: tokio::sync::watch::Sender<i64>,
    /// Set once start-up adopted the replicas (the reconcile tick waits for it).
    ready: std::sync::atomic::AtomicBool,
    /// Set once start-up adopted the replicas, never unset (a daemon that
    /// hands over stays adopted); a watch, so that
    /// [`Engine::wait_adopted`] wakes at once.
    adopted: tokio::sync::watch::Sender<bool>,
    /// True once the daemon is stopping: waiters are let go.
    closing: tokio::sync::watch::Sender<bool>,
    /// Host directories a stack may bind-mount from (`daemon --allow-bind`).
    bind_roots: Mutex<Vec<PathBuf>>,
    /// Each service's virtual address (STACK_SERVICE -> address).
    vips: Mutex<BTreeMap<String, std::net::Ipv4Addr>>,
    /// Replica address -> whose it is, from the moment a replica starts (or
    /// is adopted): who may ask the DNS server for a stack's names.
    clients: Mutex<BTreeMap<String, Client>>,
    /// Networks of this root's stacks (`STACK_KEY` -> bridge and subnet).
    networks: Mutex<BTreeMap<String, ingot_runtime::net::Network>>,
    /// Set by the daemon once the virtual addresses are routed to this host.
    serve_vips: std::sync::atomic::AtomicBool,
    /// What happens, for `ingot events` (crate::events).
    pub events: Arc<crate::events::EventLog>,
    /// Changes counted and timed for `/metrics`.
    telemetry: metrics::Telemetry,
}

/// A change the API asks for; carried out by a task of its own, so a
/// client that goes away never leaves it half done.
#[derive(Debug, Clone)]
pub enum Change {
    /// A pinned stack, already parsed (validated against the store when
    /// prepared), with the values of its secrets (kept once every check
    /// passed; a secret not sent must be held already).
    Deploy {
        stack: PinnedStack,
        secrets: Vec<Vec<u8>>,
    },
    Scale {
        service: String,
        replicas: u32,
    },
    Rollback {
        service: String,
    },
    Remove {
        stack: String,
    },
}

/// A change recorded in the ledger and about to be carried out.
struct Prepared {
    entry: LedgerRow,
    stack: PinnedStack,
    previous: Option<PinnedStack>,
}

/// A replica's container name, `STACK.SERVICE.SLOT.VERSION.RANDOM`, parsed;
/// `None` for any other container (which the engine never touches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaName<'a> {
    pub stack: &'a str,
    pub service: &'a str,
    pub slot: u32,
    pub version: &'a str,
}

impl<'a> ReplicaName<'a> {
    pub fn parse(name: &'a str) -> Option<ReplicaName<'a>> {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        match name.split('.').collect::<Vec<_>>().as_slice() {
            [stack, service, slot, version, rand]
                if crate::compose::valid_name(stack)
                    && crate::compose::valid_name(service)
                    && hex(version, 12)
                    && hex(rand, 6) =>
            {
                Some(ReplicaName {
                    stack,
                    service,
                    slot: slot.parse().ok().filter(|s| *s >= 1)?,
                    version,
                })
            }
            _ => None,
        }
    }
}

fn key(stack: &str, service: &str) -> String {
    format!("{stack}_{service}")
}

fn random6() -> String {
    ingot_runtime::random_id()
        .map(|s| s[..6].to_string())
        .unwrap_or_else(|_| "000000".into())
}

impl Engine {
    /// The daemon's engine: replicas through ingot-runtime on this host
    /// (`exe` is the ingot binary their monitors run as).
    pub fn new(root: PathBuf, exe: PathBuf, policy: Option<PathBuf>) -> Result<Arc<Engine>> {
        let runtime = Arc::new(LocalRuntime::new(root.clone(), exe)?);
        Engine::with_runtime(root, policy, runtime)
    }

    /// An engine over any [`Runtime`] (tests use a fake one).
    pub fn with_runtime(root: PathBuf, policy: Option<PathBuf>, runtime: Arc<dyn Runtime>) -> Result<Arc<Engine>> {
        let store = Store::open(&root)?;
        Ok(Arc::new(Engine {
            root,
            policy,
            runtime,
            store: Arc::new(Mutex::new(store)),
            desired: Mutex::new(BTreeMap::new()),
            services: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            change: Arc::new(tokio::sync::Mutex::new(())),
            quiesced: Mutex::new(None),
            stacks: Mutex::new(BTreeMap::new()),
            messages: Mutex::new(BTreeMap::new()),
            sealed: tokio::sync::watch::channel(0).0,
            ready: std::sync::atomic::AtomicBool::new(false),
            adopted: tokio::sync::watch::Sender::new(false),
            closing: tokio::sync::watch::channel(false).0,
            bind_roots: Mutex::new(Vec::new()),
            vips: Mutex::new(BTreeMap::new()),
            serve_vips: std::sync::atomic::AtomicBool::new(false),
            clients: Mutex::new(BTreeMap::new()),
            networks: Mutex::new(BTreeMap::new()),
            events: Arc::new(crate::events::EventLog::default()),
            telemetry: metrics::Telemetry::default(),
        }))
    }

    /// A replica event: stack and service from the replica's name.
    pub(super) fn replica_event(&self, action: &'static str, replica: &str, detail: &str) {
        if let Some(n) = ReplicaName::parse(replica) {
            self.events.emit("replica", action, n.stack, n.service, replica, detail);
        }
    }

    /// Serves `endpoint_mode: vip` services on their virtual addresses
    /// (the daemon calls it once [`VIP_SUBNET`] is routed here); without
    /// it names resolve to the replicas' own addresses.
    ///
    /// [`VIP_SUBNET`]: ingot_runtime::net::bridge::VIP_SUBNET
    pub fn serve_vips(&self) {
        self.serve_vips.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The policy file the daemon checks changes against, if any.
    pub fn policy_path(&self) -> Option<&std::path::Path> {
        self.policy.as_deref()
    }

    /// Lets stacks bind-mount host paths under `roots` (none by default:
    /// a bind mount gives a container the host's files).
    pub fn allow_binds(&self, roots: Vec<PathBuf>) {
        *lock(&self.bind_roots) = roots;
    }

    /// The daemon is stopping: [`Engine::wait`] callers are answered at
    /// once (they re-attach to the next daemon with `ingot ledger wait`).
    /// Turns true when the daemon stops (followers of events end then).
    pub fn closing_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn closing(&self) {
        self.closing.send_replace(true);
    }

    async fn change_owned(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.change.clone().lock_owned().await
    }

    fn stack_lock(&self, stack: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.stacks).entry(stack.to_string()).or_default().clone()
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> Result<T> + Send + 'static) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&store)))
            .await
            .map_err(|e| DeployError::Daemon(e.to_string()))?
    }

    /// Keeps secret values (already checked against the digests a stack
    /// names) in the store, where replicas' monitors read them.
    pub(super) async fn keep_secrets(&self, values: Vec<Vec<u8>>) -> Result<()> {
        self.blocking(move |store| {
            for v in &values {
                store.put_secret(v)?;
            }
            Ok(())
        })
        .await
    }

    fn find(&self, service: &str) -> Result<(String, String)> {
        let s = lock(&self.services);
        if let Some(sv) = s.get(service) {
            return Ok((sv.stack.clone(), sv.name.clone()));
        }
        let hits: Vec<&Service> = s.values().filter(|sv| sv.name == service).collect();
        match hits.as_slice() {
            [one] => Ok((one.stack.clone(), one.name.clone())),
            [] => Err(DeployError::NotFound(format!("service {service:?} not found"))),
            _ => Err(DeployError::Invalid(format!(
                "service {service:?} is ambiguous; use STACK_SERVICE"
            ))),
        }
    }

    pub fn services(&self) -> Vec<ServiceStatus> {
        lock(&self.services)
            .values()
            .map(|s| ServiceStatus {
                name: key(&s.stack, &s.name),
                stack: s.stack.clone(),
                service: s.name.clone(),
                image: s.spec.image.clone(),
                digest: s.spec.digest.to_string(),
                version: s.spec.version(),
                replicas: s.spec.replicas,
                labels: s.spec.labels.clone(),
                running: s.replicas.len(),
                healthy: s.replicas.iter().filter(|r| r.serving()).count(),
                ports: s.spec.ports.iter().map(crate::compose::Port::describe).collect(),
            })
            .collect()
    }

    pub fn replicas(&self, service: &str) -> Result<Vec<Replica>> {
        let (stack, name) = self.find(service)?;
        let mut r = self.with_service(&stack, &name, |s| s.replicas.clone());
        r.sort_by_key(|x| x.slot);
        Ok(r)
    }

    /// Stops the listeners (replicas keep running; a new daemon adopts them).
    pub fn shutdown(&self) {
        for (_, (_, l)) in std::mem::take(&mut *lock(&self.listeners)) {
            l.abort();
        }
    }

    /// Waits until start-up has adopted the replicas it found (until then,
    /// a replica's address may be one this daemon does not know yet), at
    /// most `timeout`; whether it has.
    pub async fn wait_adopted(&self, timeout: Duration) -> bool {
        let mut rx = self.adopted.subscribe();
        let adopted = matches!(tokio::time::timeout(timeout, rx.wait_for(|a| *a)).await, Ok(Ok(_)));
        adopted
    }

    /// Stops accepting on every published port and lets open connections
    /// finish (at most `timeout`): how a daemon that is being replaced
    /// hands its ports over without dropping a request.
    pub async fn drain_listeners(&self, timeout: Duration) {
        let all: Vec<Arc<ingot_mesh::Listener>> = std::mem::take(&mut *lock(&self.listeners))
            .into_values()
            .map(|(_, l)| l)
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for l in all {
            set.spawn(async move { l.drain(timeout).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// Hands the engine over to a replacing daemon: waits for the change in
    /// progress and every stack's reconcile pass, then holds their locks
    /// (no change, no reconcile) until this daemon exits. The published
    /// ports keep serving until [`Engine::drain_listeners`].
    pub async fn quiesce(&self) {
        self.ready.store(false, std::sync::atomic::Ordering::SeqCst);
        let change = self.change_owned().await;
        let stacks: Vec<Arc<tokio::sync::Mutex<()>>> = lock(&self.stacks).values().cloned().collect();
        let mut held = Vec::new();
        for s in stacks {
            held.push(s.lock_owned().await);
        }
        *lock(&self.quiesced) = Some((change, held));
    }
}
