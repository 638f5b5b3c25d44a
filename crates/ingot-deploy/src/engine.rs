//! The engine inside `ingot daemon`: converges running replicas to the
//! ledger's desired state.
//!
//! Replicas are ordinary ingot containers (`ingot run -d` on the bridge
//! network, each with its own monitor process, so they outlive the daemon)
//! named `STACK.SERVICE.SLOT.VERSION.RANDOM`, where VERSION identifies what
//! the replica runs ([`PinnedService::version`]). On start the daemon adopts
//! the containers whose names say they are its own.
//!
//! A rolling update goes slot by slot in batches of `parallelism`. With
//! `start-first`, the new replica starts, must pass its health check, joins
//! the mesh pool, and only then does the old one leave the pool; the old
//! replicas are kept running, out of the pool ("parked"), until the whole
//! change has succeeded, so an automatic rollback is a swap of the pool's
//! members (no container needs to start) and then the new replicas are
//! stopped. With `stop-first`, the old replica leaves the pool, drains and
//! stops before the new one starts. Every replica leaves its pool and
//! drains before it is stopped.
//!
//! Changes (deploy, scale, rollback, rm) are serialized by one lock; the
//! reconcile tick (dead or unhealthy replicas replaced, counts restored)
//! runs between changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingot_mesh::Pool;
use ingot_store::{ContainerState, LedgerRow, Store};
use serde::Serialize;

use crate::compose::{FailureAction, Order, RestartCondition, UpdatePolicy};
use crate::ledger;
use crate::pin::{PinnedService, PinnedStack};
use crate::{DeployError, Result};

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
    pub address: Option<String>,
    #[serde(skip)]
    pub pid: i64,
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
    /// Stopped by the engine (retired, replaced or removed).
    Shutdown,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeResult {
    pub entry: LedgerRow,
    pub outcome: String,
    pub message: String,
}

pub struct Engine {
    pub root: PathBuf,
    exe: PathBuf,
    policy: Option<PathBuf>,
    services: Mutex<BTreeMap<String, Service>>,
    listeners: Mutex<BTreeMap<SocketAddr, (String, tokio::task::JoinHandle<()>)>>,
    /// One change at a time: the ledger's only pending entry is its last.
    change: tokio::sync::Mutex<()>,
    /// Per stack: held by a change of the stack and by its reconcile pass,
    /// so one stack's rollout never stalls another stack's reconcile.
    stacks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The messages of the changes this daemon finished, by entry.
    messages: Mutex<BTreeMap<i64, String>>,
    /// The last entry sealed; `wait` watches it.
    sealed: tokio::sync::watch::Sender<i64>,
    /// Set once start-up adopted the replicas (the reconcile tick waits for it).
    ready: std::sync::atomic::AtomicBool,
}

/// A change the API asks for; carried out by a task of its own, so a
/// client that goes away never leaves it half done.
#[derive(Debug, Clone)]
pub enum Change {
    /// A pinned stack, already parsed (validated against the store when prepared).
    Deploy(PinnedStack),
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
    pub fn new(root: PathBuf, exe: PathBuf, policy: Option<PathBuf>) -> Arc<Engine> {
        Arc::new(Engine {
            root,
            exe,
            policy,
            services: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            change: tokio::sync::Mutex::new(()),
            stacks: Mutex::new(BTreeMap::new()),
            messages: Mutex::new(BTreeMap::new()),
            sealed: tokio::sync::watch::channel(0).0,
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn stack_lock(&self, stack: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.stacks).entry(stack.to_string()).or_default().clone()
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> Result<T> + Send + 'static) -> Result<T> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&root)?;
            f(&mut store)
        })
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))?
    }

    // ---------- start-up ----------

    /// Adopts the replicas already running, straight into their pools (they
    /// served before the restart; the reconcile tick re-checks them), binds
    /// the published ports, and then carries out an entry a dead daemon
    /// left pending: converged to it, or rolled back as any change.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let _g = self.change.lock().await;
        let rows = self.blocking(|s| Ok(s.ledger_rows()?)).await?;
        ledger::verify(&rows)?;
        let pending = rows.last().filter(|r| r.outcome == ledger::PENDING).cloned();
        let settled = &rows[..rows.len() - usize::from(pending.is_some())];
        let desired = ledger::desired(settled)?;
        let existing = self
            .blocking(|s| {
                ingot_runtime::reconcile(s)?;
                Ok(s.containers()?)
            })
            .await?;
        let mut strays = Vec::new();
        for (c, n) in existing.iter().filter_map(|c| Some((c, ReplicaName::parse(&c.name)?))) {
            let spec = desired.get(n.stack).and_then(|s| s.services.get(n.service));
            let Some(spec) = spec else {
                strays.push((c.id.clone(), 10_000));
                continue;
            };
            self.ensure_service(n.stack, n.service, spec)?;
            let fits = c.state == ContainerState::Running && n.version == spec.version() && n.slot <= spec.replicas;
            let taken = self.with_service(n.stack, n.service, |s| s.replicas.iter().any(|r| r.slot == n.slot));
            if !fits || taken {
                strays.push((c.id.clone(), spec.stop_grace_ms));
                continue;
            }
            let r = Replica {
                id: c.id.clone(),
                name: c.name.clone(),
                slot: n.slot,
                version: n.version.to_string(),
                image: spec.digest.to_string(),
                address: c.address.clone(),
                pid: c.pid.unwrap_or(0),
                state: TaskState::Running,
                health: HealthState::Healthy,
                failures: 0,
                last_check: None,
            };
            if let Some(a) = self.backend(spec, &r) {
                self.pool(n.stack, n.service).add(a);
            }
            self.with_service(n.stack, n.service, |s| s.replicas.push(r));
        }
        for stack in desired.values() {
            if let Err(e) = self.bind_ports(stack).await {
                tracing::error!(stack = %stack.name, "{e}");
            }
        }
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("replicas adopted; serving");
        let me = self.clone();
        tokio::spawn(async move {
            for (id, grace) in strays {
                me.remove_container(id, grace).await;
            }
        });
        if let Some(entry) = pending {
            let stack: PinnedStack = serde_json::from_str(&entry.body).map_err(|e| DeployError::Ledger {
                seq: entry.seq,
                why: format!("its stack does not parse: {e}"),
            })?;
            tracing::warn!(seq = entry.seq, stack = %entry.stack, "carrying out the change a previous daemon left pending");
            let previous = desired.get(&stack.name).cloned();
            if entry.kind != ledger::RM {
                if let Err(e) = self.stage(&stack).await {
                    tracing::error!(seq = entry.seq, "{e}");
                }
            }
            self.carry_out(Prepared { entry, stack, previous }).await;
        }
        Ok(())
    }

    // ---------- services, pools and listeners ----------

    fn pool(&self, stack: &str, name: &str) -> Arc<Pool> {
        lock(&self.services)[&key(stack, name)].pool.clone()
    }

    fn with_service<T>(&self, stack: &str, name: &str, f: impl FnOnce(&mut Service) -> T) -> T {
        let mut s = lock(&self.services);
        f(s.get_mut(&key(stack, name)).expect("service exists"))
    }

    fn backend(&self, spec: &PinnedService, r: &Replica) -> Option<SocketAddr> {
        let port = spec.ports.first()?.target;
        format!("{}:{port}", r.address.as_deref()?).parse().ok()
    }

    /// Every (host address, service key) a stack would listen on.
    fn wanted_listeners(stack: &PinnedStack) -> Result<Vec<(SocketAddr, String)>> {
        let mut out = Vec::new();
        for (name, s) in &stack.services {
            for p in &s.ports {
                let addr: SocketAddr = format!("{}:{}", p.host_ip, p.published)
                    .parse()
                    .map_err(|_| DeployError::Invalid(format!("service {name}: bad host address {:?}", p.host_ip)))?;
                out.push((addr, key(&stack.name, name)));
            }
        }
        Ok(out)
    }

    /// Binds the stack's published ports that are not yet bound; a port in
    /// use by another service or process is an error naming it.
    async fn bind_ports(&self, stack: &PinnedStack) -> Result<()> {
        for (addr, svc) in Self::wanted_listeners(stack)? {
            let owner = lock(&self.listeners).get(&addr).map(|(s, _)| s.clone());
            match owner {
                Some(o) if o == svc => continue,
                Some(o) => {
                    let o_stack = o.split('_').next().unwrap_or_default().to_string();
                    if o_stack != stack.name {
                        return Err(DeployError::Invalid(format!(
                            "port {} is already published by service {o}",
                            addr.port()
                        )));
                    }
                    // Moving within this stack: rebound below.
                    if let Some((_, h)) = lock(&self.listeners).remove(&addr) {
                        h.abort();
                    }
                }
                None => {}
            }
            let (stack_name, service) = svc
                .split_once('_')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            self.ensure_service(&stack_name, &service, &stack.services[&service])?;
            let pool = self.pool(&stack_name, &service);
            let handle = ingot_mesh::listen(addr, pool)
                .await
                .map_err(|e| DeployError::Invalid(format!("port {} cannot be published: {e}", addr.port())))?;
            lock(&self.listeners).insert(addr, (svc, handle));
        }
        Ok(())
    }

    fn unbind(&self, svc: &str, keep: &[SocketAddr]) {
        lock(&self.listeners).retain(|addr, (s, h)| {
            let drop_it = s == svc && !keep.contains(addr);
            if drop_it {
                h.abort();
            }
            !drop_it
        });
    }

    fn ensure_service(&self, stack: &str, name: &str, spec: &PinnedService) -> Result<()> {
        let mut s = lock(&self.services);
        s.entry(key(stack, name)).or_insert_with(|| Service {
            stack: stack.to_string(),
            name: name.to_string(),
            spec: spec.clone(),
            pool: Pool::new(),
            replicas: Vec::new(),
            restarts: 0,
            held: Default::default(),
        });
        Ok(())
    }

    // ---------- replicas ----------

    /// Starts one replica of `spec` in `slot` (not yet healthy, not in the pool).
    async fn start_replica(&self, stack: &str, name: &str, spec: &PinnedService, slot: u32) -> Result<Replica> {
        let version = spec.version();
        let cname = format!("{stack}.{name}.{slot}.{version}.{}", random6());
        let mut args: Vec<String> = vec![
            "--root".into(),
            self.root.display().to_string(),
            "run".into(),
            "-d".into(),
            "--name".into(),
            cname.clone(),
            "--network".into(),
            "bridge".into(),
        ];
        for e in &spec.env {
            args.extend(["-e".into(), e.clone()]);
        }
        if let Some(u) = &spec.user {
            args.extend(["--user".into(), u.clone()]);
        }
        if let Some(w) = &spec.workdir {
            args.extend(["--workdir".into(), w.clone()]);
        }
        let configs = self.root.join("configs");
        for c in &spec.configs {
            let hex = c.digest.hex();
            args.extend(["-v".into(), format!("{}:{}:ro", configs.join(hex).display(), c.target)]);
        }
        let mut command = Vec::new();
        if let Some(ep) = &spec.entrypoint {
            if let Some((first, rest)) = ep.split_first() {
                args.extend(["--entrypoint".into(), first.clone()]);
                command.extend(rest.iter().cloned());
            }
        }
        command.extend(spec.command.clone().unwrap_or_default());
        args.push(spec.digest.to_string());
        args.extend(command);
        let out = tokio::process::Command::new(&self.exe)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| DeployError::Daemon(format!("cannot run {}: {e}", self.exe.display())))?;
        if !out.status.success() {
            return Err(DeployError::Invalid(format!(
                "replica {cname} did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let lookup = cname.clone();
        let rec = self.blocking(move |s| Ok(s.container(&lookup)?)).await?;
        tracing::info!(replica = %cname, "started");
        Ok(Replica {
            id: rec.id,
            name: cname,
            slot,
            version,
            image: spec.digest.to_string(),
            address: rec.address,
            pid: rec.pid.unwrap_or(0),
            state: TaskState::Starting,
            health: HealthState::Starting,
            failures: 0,
            last_check: None,
        })
    }

    async fn is_running(&self, id: &str) -> bool {
        let id = id.to_string();
        self.blocking(move |s| Ok(ingot_runtime::is_running(s, &id).unwrap_or(false)))
            .await
            .unwrap_or(false)
    }

    /// One probe: the health check, else TCP readiness, else running.
    async fn probe(&self, spec: &PinnedService, r: &Replica) -> bool {
        if !self.is_running(&r.id).await {
            return false;
        }
        if let Some(h) = &spec.health {
            return crate::health::check(&self.exe, &self.root, &r.id, h).await;
        }
        match self.backend(spec, r) {
            Some(a) => crate::health::tcp(a, Duration::from_millis(500)).await,
            None => true,
        }
    }

    /// Waits until a new replica is healthy; false if it exits or fails
    /// its check `retries` times after the start period.
    async fn wait_healthy(&self, spec: &PinnedService, r: &Replica) -> bool {
        let started = Instant::now();
        let mut failures = 0;
        let (start_period, retries, deadline) = match &spec.health {
            Some(h) => (
                Duration::from_millis(h.start_period_ms),
                h.retries,
                Duration::from_millis(h.start_period_ms + (h.retries as u64 + 1) * (h.timeout_ms + 100)),
            ),
            None => (Duration::ZERO, u32::MAX, READY_TIMEOUT),
        };
        loop {
            if !self.is_running(&r.id).await {
                return false;
            }
            if self.probe(spec, r).await {
                return true;
            }
            if started.elapsed() >= start_period {
                failures += 1;
                if failures >= retries {
                    return false;
                }
            }
            if started.elapsed() > deadline.max(READY_TIMEOUT) {
                return false;
            }
            tokio::time::sleep(START_PROBE).await;
        }
    }

    async fn remove_container(&self, id: String, grace_ms: u64) {
        let _ = self
            .blocking(move |s| {
                let _ = ingot_runtime::stop(s, &id, Duration::from_millis(grace_ms));
                let _ = ingot_runtime::remove(s, &id, true);
                Ok(())
            })
            .await;
    }

    /// Takes a replica out of its pool, lets it drain, stops and removes it.
    async fn retire(&self, pool: &Pool, spec: &PinnedService, r: &Replica) {
        if let Some(a) = self.backend(spec, r) {
            pool.remove(a);
            pool.drain(a, DRAIN_TIMEOUT).await;
        }
        self.remove_container(r.id.clone(), spec.stop_grace_ms).await;
        tracing::info!(replica = %r.name, "stopped");
    }

    /// Writes the stack's configs where replicas mount them from.
    async fn write_configs(&self, stack: &PinnedStack) -> Result<()> {
        let dir = self.root.join("configs");
        let configs = stack.configs.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&dir).map_err(|e| DeployError::Daemon(format!("{}: {e}", dir.display())))?;
            for c in configs.values() {
                let path = dir.join(c.digest.hex());
                if path.exists() {
                    continue;
                }
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &c.content)
                    .and_then(|_| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
                    })
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| DeployError::Daemon(format!("{}: {e}", path.display())))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))?
    }

    // ---------- changes ----------

    /// Evaluates the daemon's policy (if any) for every image of `stack`.
    async fn check_policy(&self, stack: &PinnedStack) -> Result<()> {
        let Some(path) = self.policy.clone() else {
            return Ok(());
        };
        let digests: Vec<(String, String)> = stack
            .services
            .values()
            .map(|s| (s.image.clone(), s.digest.to_string()))
            .collect();
        self.blocking(move |store| {
            let policy = ingot_trust::policy::Policy::load(&path).map_err(|e| DeployError::Invalid(e.to_string()))?;
            let today = time::OffsetDateTime::now_utc().date();
            for (image, digest) in digests {
                let d = ingot_trust::policy::evaluate(store, &digest, &policy, today)
                    .map_err(|e| DeployError::Invalid(e.to_string()))?;
                if !d.passed() {
                    return Err(DeployError::Policy {
                        image,
                        refusals: d
                            .refusals
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    });
                }
            }
            Ok(())
        })
        .await
    }

    /// Records `change` in the ledger and carries it out in a task of its
    /// own; returns the pending entry as soon as it is recorded (or the
    /// reason nothing was recorded). The change goes on whatever happens to
    /// the caller; [`Engine::wait`] follows it.
    pub async fn submit(self: &Arc<Self>, change: Change, actor: String, reason: Option<String>) -> Result<LedgerRow> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let _g = me.change.lock().await;
            match me.prepare(change, &actor, reason).await {
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(p) => {
                    let _ = tx.send(Ok(p.entry.clone()));
                    me.carry_out(p).await;
                }
            }
        });
        rx.await
            .map_err(|_| DeployError::Daemon("the change ended before it was recorded".into()))?
    }

    /// Waits until ledger entry `seq` is sealed; its outcome and message.
    pub async fn wait(&self, seq: i64) -> Result<ChangeResult> {
        let mut sealed = self.sealed.subscribe();
        loop {
            let row = self
                .blocking(move |s| Ok(s.ledger_rows()?.into_iter().find(|r| r.seq == seq)))
                .await?
                .ok_or_else(|| DeployError::NotFound(format!("ledger entry {seq} does not exist")))?;
            if row.outcome != ledger::PENDING {
                let message = lock(&self.messages)
                    .get(&seq)
                    .cloned()
                    .unwrap_or_else(|| format!("{} before this daemon started", row.outcome));
                return Ok(ChangeResult {
                    outcome: row.outcome.clone(),
                    entry: row,
                    message,
                });
            }
            if sealed.changed().await.is_err() {
                return Err(DeployError::Daemon("the daemon is shutting down".into()));
            }
        }
    }

    /// Deploys `stack` and waits for the outcome.
    pub async fn deploy(
        self: &Arc<Self>,
        stack: PinnedStack,
        actor: &str,
        reason: Option<String>,
    ) -> Result<ChangeResult> {
        let entry = self.submit(Change::Deploy(stack), actor.to_string(), reason).await?;
        self.wait(entry.seq).await
    }

    async fn current(&self, stack: &str) -> Result<Option<PinnedStack>> {
        let rows = self.blocking(|s| Ok(s.ledger_rows()?)).await?;
        Ok(ledger::desired(&rows)?.remove(stack))
    }

    /// Turns a change into the stack it leads to, checks it (store, policy),
    /// binds its ports and writes its configs, and appends the pending
    /// entry. Nothing is recorded or started when this fails.
    async fn prepare(self: &Arc<Self>, change: Change, actor: &str, reason: Option<String>) -> Result<Prepared> {
        let (kind, stack, reason) = match change {
            Change::Deploy(stack) => {
                let s = stack.clone();
                self.blocking(move |store| s.validate(store)).await?;
                (ledger::DEPLOY, stack, reason)
            }
            Change::Scale { service, replicas } => {
                if replicas > crate::pin::MAX_REPLICAS {
                    return Err(DeployError::Field {
                        field: "replicas".into(),
                        why: format!("{replicas} is more than {}", crate::pin::MAX_REPLICAS),
                    });
                }
                let (stack, name) = self.find(&service)?;
                let mut pinned = self
                    .current(&stack)
                    .await?
                    .ok_or_else(|| DeployError::NotFound(format!("stack {stack} is not deployed")))?;
                let svc = pinned
                    .services
                    .get_mut(&name)
                    .ok_or_else(|| DeployError::NotFound(format!("service {service:?} not found")))?;
                svc.replicas = replicas;
                let reason = reason.or(Some(format!("scale {service}={replicas}")));
                (ledger::SCALE, pinned, reason)
            }
            Change::Rollback { service } => {
                let pinned = self.rollback_target(&service).await?;
                (ledger::ROLLBACK, pinned, reason.or(Some(format!("rollback {service}"))))
            }
            Change::Remove { stack } => {
                let pinned = self
                    .current(&stack)
                    .await?
                    .ok_or_else(|| DeployError::NotFound(format!("stack {stack} is not deployed")))?;
                (ledger::RM, pinned, reason.or(Some("stack rm".into())))
            }
        };
        let previous = self.current(&stack.name).await?;
        if kind != ledger::RM {
            self.check_policy(&stack).await?;
            let fresh: Vec<String> = {
                let have = lock(&self.services);
                stack
                    .services
                    .keys()
                    .filter(|n| !have.contains_key(&key(&stack.name, n)))
                    .cloned()
                    .collect()
            };
            if let Err(e) = self.stage(&stack).await {
                // Nothing was recorded or started: forget the services this attempt added.
                for n in &fresh {
                    let k = key(&stack.name, n);
                    self.unbind(&k, &[]);
                    lock(&self.services).remove(&k);
                }
                return Err(e);
            }
        }
        let (stack_c, actor_c) = (stack.clone(), actor.to_string());
        let entry = self
            .blocking(move |s| ledger::append(s, kind, &stack_c, &actor_c, reason.as_deref()))
            .await?;
        tracing::info!(seq = entry.seq, stack = %stack.name, kind, actor, "change recorded");
        Ok(Prepared { entry, stack, previous })
    }

    /// What a change needs before its replicas start: the services known,
    /// the published ports bound, the configs written.
    async fn stage(&self, stack: &PinnedStack) -> Result<()> {
        for (name, spec) in &stack.services {
            self.ensure_service(&stack.name, name, spec)?;
        }
        self.bind_ports(stack).await?;
        self.write_configs(stack).await
    }

    /// Carries out a recorded change under its stack's lock and seals its
    /// entry with the outcome, whatever happens (a panic in the rollout
    /// seals it "failed").
    async fn carry_out(self: &Arc<Self>, p: Prepared) {
        let stack_lock = self.stack_lock(&p.stack.name);
        let _s = stack_lock.lock().await;
        let seq = p.entry.seq;
        let me = self.clone();
        let (entry, stack, previous) = (p.entry.clone(), p.stack, p.previous);
        let work = tokio::spawn(async move {
            if entry.kind == ledger::RM {
                for name in stack.services.keys() {
                    me.remove_service(&stack.name, name).await;
                }
                (ledger::SUCCEEDED, format!("stack {} removed", stack.name))
            } else {
                me.rollout(&stack, previous.as_ref()).await
            }
        });
        let (outcome, message) = match work.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(seq, "the change failed: {e}");
                (ledger::FAILED, format!("the change failed inside the daemon: {e}"))
            }
        };
        let e = p.entry.clone();
        match self.blocking(move |s| ledger::finish(s, &e, outcome)).await {
            Ok(_) => tracing::info!(seq, outcome, "change finished"),
            Err(e) => tracing::error!(seq, "cannot seal the entry: {e}"),
        }
        lock(&self.messages).insert(seq, message);
        self.sealed.send_replace(seq);
    }

    /// Carries out a change; returns (outcome, message).
    async fn rollout(self: &Arc<Self>, stack: &PinnedStack, previous: Option<&PinnedStack>) -> (&'static str, String) {
        // Per service: replicas kept (parked) for a rollback, and new ones started.
        let mut parked: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
        let mut started: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
        let mut failure = None;
        let mut failed_at: Option<Instant> = None;
        // The failure action of the service whose failures stopped the change.
        let mut stopped_by: Option<FailureAction> = None;
        // Failures within max_failure_ratio or under failure_action continue.
        let mut tolerated: Vec<String> = Vec::new();
        'services: for (name, spec) in &stack.services {
            let k = key(&stack.name, name);
            let pool = self.pool(&stack.name, name);
            let version = spec.version();
            let mut current = self.with_service(&stack.name, name, |s| {
                s.spec = spec.clone();
                s.held.clear();
                s.restarts = 0;
                s.replicas.clone()
            });
            current.sort_by_key(|r| r.slot);
            let policy: &UpdatePolicy = &spec.update;
            let slots: Vec<u32> = (1..=spec.replicas).collect();
            let needs: Vec<u32> = slots
                .iter()
                .copied()
                .filter(|slot| {
                    !current
                        .iter()
                        .any(|r| r.slot == *slot && r.version == version && r.serving())
                })
                .collect();
            let mut failures = 0u32;
            // Parallelism 0 means all at once, as in Swarm.
            let width = if policy.parallelism == 0 {
                needs.len().max(1)
            } else {
                policy.parallelism as usize
            };
            for batch in needs.chunks(width) {
                let mut fresh = Vec::new();
                for &slot in batch {
                    let old: Vec<Replica> = current.iter().filter(|r| r.slot == slot).cloned().collect();
                    if policy.order == Order::StopFirst {
                        for o in &old {
                            if let Some(a) = self.backend(spec, o) {
                                pool.remove(a);
                            }
                        }
                        // Stop-first: the old replica goes now (a rollback restarts it).
                        for o in &old {
                            self.retire(&pool, spec, o).await;
                        }
                        current.retain(|r| r.slot != slot);
                        self.with_service(&stack.name, name, |s| s.replicas.retain(|r| r.slot != slot));
                    }
                    match self.start_replica(&stack.name, name, spec, slot).await {
                        Ok(r) => fresh.push((r, old)),
                        Err(e) => {
                            {
                                failed_at.get_or_insert_with(Instant::now);
                            }
                            failure = Some(format!("service {name}: {e}"));
                            failures += 1;
                        }
                    }
                }
                // Health, then the pool: the new joins before the old leaves.
                let (news, olds): (Vec<Replica>, Vec<Vec<Replica>>) = fresh.into_iter().unzip();
                let results = self.wait_all_healthy(spec, news).await;
                for ((mut r, healthy), old) in results.into_iter().zip(olds) {
                    if healthy {
                        r.mark_healthy();
                        if let Some(a) = self.backend(spec, &r) {
                            pool.add(a);
                        }
                        for o in &old {
                            if let Some(a) = self.backend(spec, o) {
                                pool.remove(a);
                            }
                            let o = o.clone();
                            parked.entry(k.clone()).or_default().push(o);
                        }
                        current.retain(|x| x.slot != r.slot);
                        current.push(r.clone());
                        started.entry(k.clone()).or_default().push(r.clone());
                        self.with_service(&stack.name, name, |s| {
                            s.replicas.retain(|x| x.slot != r.slot);
                            s.replicas.push(r);
                        });
                    } else {
                        failures += 1;
                        {
                            failed_at.get_or_insert_with(Instant::now);
                        }
                        failure = Some(format!(
                            "service {name}: replica {} did not become healthy{}",
                            r.name,
                            if spec.health.is_some() {
                                " (health check failed)"
                            } else {
                                " (exited or port not reachable)"
                            }
                        ));
                        started.entry(k.clone()).or_default().push(r.clone());
                        self.remove_container(r.id.clone(), 0).await;
                    }
                }
                // Monitor: the batch's new replicas must stay up.
                let deadline = Instant::now() + Duration::from_millis(policy.monitor_ms);
                let batch_new: Vec<Replica> = current
                    .iter()
                    .filter(|r| batch.contains(&r.slot) && r.version == version)
                    .cloned()
                    .collect();
                while failure.is_none() && Instant::now() < deadline && !batch_new.is_empty() {
                    for r in &batch_new {
                        if !self.probe(spec, r).await && !self.probe(spec, r).await {
                            failures += 1;
                            {
                                failed_at.get_or_insert_with(Instant::now);
                            }
                            failure = Some(format!(
                                "service {name}: replica {} failed during the monitor period",
                                r.name
                            ));
                        }
                    }
                    if failure.is_some() {
                        break;
                    }
                    tokio::time::sleep(START_PROBE).await;
                }
                if failure.is_some() {
                    // As Swarm: failures up to max_failure_ratio are tolerated;
                    // beyond it the failure action applies (continue goes on).
                    let ratio = failures as f64 / spec.replicas.max(1) as f64;
                    if ratio > policy.max_failure_ratio && policy.failure_action != FailureAction::Continue {
                        stopped_by = Some(policy.failure_action);
                        break 'services;
                    }
                    let why = failure.take().unwrap_or_default();
                    tracing::warn!(service = %k, "{why}; tolerated");
                    tolerated.push(why);
                    failed_at = None;
                }
                if policy.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(policy.delay_ms)).await;
                }
            }
            // Surplus slots (scale down or fewer replicas): out of the pool, parked.
            let surplus: Vec<Replica> = current.iter().filter(|r| r.slot > spec.replicas).cloned().collect();
            for o in surplus {
                if let Some(a) = self.backend(spec, &o) {
                    pool.remove(a);
                }
                let o = o.clone();
                parked.entry(k.clone()).or_default().push(o.clone());
                self.with_service(&stack.name, name, |s| s.replicas.retain(|x| x.id != o.id));
            }
        }

        if let (Some(action), Some(why)) = (stopped_by, failure) {
            if action == FailureAction::Rollback {
                let swapped = self.roll_back(stack, previous, parked, started).await;
                let after = failed_at
                    .map(|t| swapped.saturating_duration_since(t).as_micros())
                    .unwrap_or(0);
                return (
                    ledger::ROLLED_BACK,
                    format!(
                        "{why}; rolled back (old version serving all traffic {:.1} ms after the failure)",
                        after as f64 / 1000.0
                    ),
                );
            }
            // Pause: what started stays, the parked old replicas go.
            self.finish_parked(parked).await;
            return (ledger::PAUSED, format!("{why}; update paused"));
        }
        self.finish_parked(parked).await;
        // Services dropped from the stack, and ports it no longer publishes.
        if let Some(prev) = previous {
            for name in prev.services.keys().filter(|n| !stack.services.contains_key(*n)) {
                self.remove_service(&stack.name, name).await;
            }
        }
        if let Ok(wanted) = Self::wanted_listeners(stack) {
            for name in stack.services.keys() {
                let k = key(&stack.name, name);
                let keep: Vec<SocketAddr> = wanted.iter().filter(|(_, s)| *s == k).map(|(a, _)| *a).collect();
                self.unbind(&k, &keep);
            }
        }
        if tolerated.is_empty() {
            (ledger::SUCCEEDED, "converged".into())
        } else {
            (
                ledger::SUCCEEDED,
                format!("converged; tolerated: {}", tolerated.join("; ")),
            )
        }
    }

    async fn finish_parked(self: &Arc<Self>, parked: BTreeMap<String, Vec<Replica>>) {
        let mut all = Vec::new();
        for (k, olds) in parked {
            let (pool, spec) = {
                let s = lock(&self.services);
                match s.get(&k) {
                    Some(sv) => (sv.pool.clone(), sv.spec.clone()),
                    None => continue,
                }
            };
            all.extend(olds.into_iter().map(|o| (pool.clone(), spec.clone(), o)));
        }
        self.retire_all(all).await;
    }

    /// Retires replicas concurrently (each drains, then stops).
    async fn retire_all(self: &Arc<Self>, items: Vec<(Arc<Pool>, PinnedService, Replica)>) {
        let mut set = tokio::task::JoinSet::new();
        for (pool, spec, r) in items {
            let me = self.clone();
            set.spawn(async move { me.retire(&pool, &spec, &r).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// The automatic rollback: parked old replicas back into the pools at
    /// once (one swap per service), then the new replicas leave and stop;
    /// slots whose old replica is gone (stop-first) get one started again.
    async fn roll_back(
        self: &Arc<Self>,
        stack: &PinnedStack,
        previous: Option<&PinnedStack>,
        parked: BTreeMap<String, Vec<Replica>>,
        started: BTreeMap<String, Vec<Replica>>,
    ) -> Instant {
        let t = Instant::now();
        let mut swapped = t;
        for name in stack.services.keys() {
            let k = key(&stack.name, name);
            let Some(prev_spec) = previous.and_then(|p| p.services.get(name)) else {
                continue;
            };
            let pool = self.pool(&stack.name, name);
            let olds = parked.get(&k).cloned().unwrap_or_default();
            let new_ids: Vec<String> = started
                .get(&k)
                .map(|v| v.iter().map(|r| r.id.clone()).collect())
                .unwrap_or_default();
            let kept: Vec<Replica> = self.with_service(&stack.name, name, |s| {
                s.replicas
                    .iter()
                    .filter(|r| !new_ids.contains(&r.id))
                    .cloned()
                    .collect()
            });
            let members: Vec<SocketAddr> = kept
                .iter()
                .chain(&olds)
                .filter_map(|r| self.backend(prev_spec, r))
                .collect();
            if !members.is_empty() {
                pool.set(&members);
            }
            let mut restored: Vec<Replica> = kept
                .into_iter()
                .chain(olds.into_iter().map(|mut o| {
                    o.mark_healthy();
                    o
                }))
                .collect();
            self.with_service(&stack.name, name, |s| {
                s.spec = prev_spec.clone();
                s.replicas = restored.clone();
            });
            // Slots left empty (stop-first) get an old-version replica before
            // the new replicas leave, so some replica keeps serving.
            for slot in 1..=prev_spec.replicas {
                if restored.iter().any(|r| r.slot == slot) {
                    continue;
                }
                if let Ok(mut r) = self.start_replica(&stack.name, name, prev_spec, slot).await {
                    if self.wait_healthy(prev_spec, &r).await {
                        r.mark_healthy();
                        if let Some(a) = self.backend(prev_spec, &r) {
                            pool.add(a);
                        }
                        restored.push(r.clone());
                        self.with_service(&stack.name, name, |s| s.replicas.push(r));
                    }
                }
            }
            // The old version now serves all of this service's traffic.
            swapped = Instant::now();
            tracing::info!(service = %k, elapsed_ms = t.elapsed().as_millis() as u64, "old version serving again");
            let leaving = started
                .get(&k)
                .into_iter()
                .flatten()
                .map(|r| (pool.clone(), prev_spec.clone(), r.clone()));
            self.retire_all(leaving.collect()).await;
        }
        // Services the failed change added: gone again.
        for name in stack.services.keys() {
            if previous.is_none_or(|p| !p.services.contains_key(name)) {
                self.remove_service(&stack.name, name).await;
            }
        }
        swapped
    }

    async fn remove_service(self: &Arc<Self>, stack: &str, name: &str) {
        let k = key(stack, name);
        let Some(svc) = lock(&self.services).remove(&k) else {
            return;
        };
        self.unbind(&k, &[]);
        let all = svc
            .replicas
            .iter()
            .map(|r| (svc.pool.clone(), svc.spec.clone(), r.clone()))
            .collect();
        self.retire_all(all).await;
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

    /// The stack that rolls `service` back to the version before its
    /// current one (its rollback_config as the update policy).
    async fn rollback_target(&self, service: &str) -> Result<PinnedStack> {
        let (stack, name) = self.find(service)?;
        let rows = self.blocking(|s| Ok(s.ledger_rows()?)).await?;
        let current = ledger::desired(&rows)?.remove(&stack);
        let cur_version = current
            .as_ref()
            .and_then(|c| c.services.get(&name))
            .map(PinnedService::version);
        // The latest earlier state of the stack in which this service ran another version.
        let mut target = None;
        let mut state: BTreeMap<String, PinnedStack> = BTreeMap::new();
        for r in rows.iter().filter(|r| ledger::applies(r)) {
            if r.kind == ledger::RM {
                state.remove(&r.stack);
            } else if let Ok(s) = serde_json::from_str::<PinnedStack>(&r.body) {
                state.insert(r.stack.clone(), s);
            }
            if let Some(s) = state.get(&stack) {
                if s.services.get(&name).map(PinnedService::version) != cur_version && s.services.contains_key(&name) {
                    target = Some(s.clone());
                }
            }
        }
        let Some(prev) = target else {
            return Err(DeployError::Invalid(format!(
                "service {service} has no previous version to roll back to"
            )));
        };
        let mut pinned = current.ok_or_else(|| DeployError::NotFound(format!("stack {stack} is not deployed")))?;
        let mut svc = prev.services[&name].clone();
        svc.replicas = pinned.services.get(&name).map_or(svc.replicas, |s| s.replicas);
        svc.update = svc.rollback.clone();
        for c in &svc.configs {
            if let Some(pc) = prev.configs.get(&c.name) {
                pinned.configs.insert(c.name.clone(), pc.clone());
            }
        }
        pinned.services.insert(name.clone(), svc);
        Ok(pinned)
    }

    // ---------- reconcile ----------

    /// One reconcile pass per stack whose lock is free (a stack with a
    /// change in progress is skipped; the others go on), each in a task of
    /// its own.
    pub fn tick(self: &Arc<Self>) {
        if !self.ready.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let stacks: std::collections::BTreeSet<String> =
            lock(&self.services).values().map(|s| s.stack.clone()).collect();
        for stack in stacks {
            let Ok(guard) = self.stack_lock(&stack).try_lock_owned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.reconcile_stack(&stack).await;
                drop(guard);
            });
        }
    }

    /// Every replica of the stack's services checked at once (liveness; a
    /// due health check, each on its own interval and timeout); failed ones
    /// replaced per restart policy, counts restored.
    async fn reconcile_stack(self: &Arc<Self>, stack: &str) {
        let keys: Vec<String> = lock(&self.services)
            .iter()
            .filter(|(_, s)| s.stack == stack)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let Some((name, spec, pool, replicas)) = lock(&self.services)
                .get(&k)
                .map(|s| (s.name.clone(), s.spec.clone(), s.pool.clone(), s.replicas.clone()))
            else {
                continue;
            };
            let mut checks = tokio::task::JoinSet::new();
            for r in replicas {
                let me = self.clone();
                let spec = spec.clone();
                checks.spawn(async move { me.check_replica(&spec, r).await });
            }
            let mut keep = Vec::new();
            let mut failed = Vec::new();
            while let Some(done) = checks.join_next().await {
                match done {
                    Ok((r, true)) => keep.push(r),
                    Ok((r, false)) => failed.push(r),
                    Err(e) => tracing::error!(service = %k, "replica check: {e}"),
                }
            }
            for r in failed {
                let exit = self.exit_code(&r.id).await;
                tracing::warn!(replica = %r.name, ?exit, "replica failed; replacing");
                if let Some(a) = self.backend(&spec, &r) {
                    pool.remove(a);
                }
                self.remove_container(r.id.clone(), spec.stop_grace_ms).await;
                let restarts = self.with_service(stack, &name, |s| s.restarts);
                let replace = match spec.restart.condition {
                    RestartCondition::Any => true,
                    RestartCondition::OnFailure => exit != Some(0),
                    RestartCondition::None => false,
                } && spec.restart.max_attempts.is_none_or(|m| restarts < m);
                if !replace {
                    self.with_service(stack, &name, |s| s.held.insert(r.slot));
                    continue;
                }
                self.with_service(stack, &name, |s| s.restarts += 1);
                if spec.restart.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(spec.restart.delay_ms)).await;
                }
            }
            // Fill empty slots (but those the restart policy holds), drop surplus.
            let held = self.with_service(stack, &name, |s| s.held.clone());
            let mut starting = Vec::new();
            for slot in 1..=spec.replicas {
                if keep.iter().any(|r| r.slot == slot) || held.contains(&slot) {
                    continue;
                }
                match self.start_replica(stack, &name, &spec, slot).await {
                    Ok(r) => starting.push(r),
                    Err(e) => tracing::warn!(service = %k, slot, "{e}"),
                }
            }
            for (mut r, healthy) in self.wait_all_healthy(&spec, starting).await {
                if healthy {
                    r.mark_healthy();
                    if let Some(a) = self.backend(&spec, &r) {
                        pool.add(a);
                    }
                    keep.push(r);
                } else {
                    self.remove_container(r.id.clone(), 0).await;
                }
            }
            let (stay, surplus): (Vec<Replica>, Vec<Replica>) = keep.into_iter().partition(|r| r.slot <= spec.replicas);
            for r in &surplus {
                self.retire(&pool, &spec, r).await;
            }
            self.with_service(stack, &name, |s| s.replicas = stay);
        }
    }

    /// Whether a serving replica still runs and, when its health check is
    /// due, passes it (`retries` failures in a row make it unhealthy).
    async fn check_replica(&self, spec: &PinnedService, mut r: Replica) -> (Replica, bool) {
        if !self.is_running(&r.id).await {
            r.state = TaskState::Failed;
            return (r, false);
        }
        let Some(h) = spec.health.as_ref().filter(|_| r.serving()) else {
            return (r, true);
        };
        let due = r
            .last_check
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(h.interval_ms));
        if !due {
            return (r, true);
        }
        r.last_check = Some(Instant::now());
        if crate::health::check(&self.exe, &self.root, &r.id, h).await {
            r.failures = 0;
            return (r, true);
        }
        r.failures += 1;
        if r.failures >= h.retries {
            r.health = HealthState::Unhealthy;
            r.state = TaskState::Failed;
            return (r, false);
        }
        (r, true)
    }

    /// Waits for new replicas' health all at once; each with its verdict.
    async fn wait_all_healthy(self: &Arc<Self>, spec: &PinnedService, replicas: Vec<Replica>) -> Vec<(Replica, bool)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in replicas.into_iter().enumerate() {
            let me = self.clone();
            let spec = spec.clone();
            set.spawn(async move {
                let ok = me.wait_healthy(&spec, &r).await;
                (i, r, ok)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok(x) = done {
                out.push(x);
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, r, ok)| (r, ok)).collect()
    }

    async fn exit_code(&self, id: &str) -> Option<i64> {
        let id = id.to_string();
        self.blocking(move |s| Ok(s.container(&id).ok().and_then(|c| c.exit_code)))
            .await
            .ok()
            .flatten()
    }

    // ---------- reports ----------

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
                running: s.replicas.len(),
                healthy: s.replicas.iter().filter(|r| r.serving()).count(),
                ports: s
                    .spec
                    .ports
                    .iter()
                    .map(|p| format!("{}:{}->{}", p.host_ip, p.published, p.target))
                    .collect(),
            })
            .collect()
    }

    pub fn replicas(&self, service: &str) -> Result<Vec<Replica>> {
        let (stack, name) = self.find(service)?;
        let mut r = self.with_service(&stack, &name, |s| s.replicas.clone());
        r.sort_by_key(|x| x.slot);
        Ok(r)
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        out.push_str(
            "# HELP ingot_service_replicas Replicas per service and state.\n# TYPE ingot_service_replicas gauge\n",
        );
        let s = lock(&self.services);
        for sv in s.values() {
            let k = key(&sv.stack, &sv.name);
            let healthy = sv.replicas.iter().filter(|r| r.serving()).count();
            let _ = writeln!(
                out,
                "ingot_service_replicas{{service=\"{k}\",state=\"desired\"}} {}",
                sv.spec.replicas
            );
            let _ = writeln!(
                out,
                "ingot_service_replicas{{service=\"{k}\",state=\"healthy\"}} {healthy}"
            );
        }
        out.push_str("# HELP ingot_mesh_requests_total Requests and connections the mesh routed.\n# TYPE ingot_mesh_requests_total counter\n");
        for sv in s.values() {
            let k = key(&sv.stack, &sv.name);
            let _ = writeln!(
                out,
                "ingot_mesh_requests_total{{service=\"{k}\"}} {}",
                sv.pool.requests.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "ingot_mesh_failures_total{{service=\"{k}\"}} {}",
                sv.pool.failures.load(Relaxed)
            );
        }
        out.push_str("# HELP ingot_service_restarts_total Replicas replaced after dying or failing health checks.\n# TYPE ingot_service_restarts_total counter\n");
        for sv in s.values() {
            let _ = writeln!(
                out,
                "ingot_service_restarts_total{{service=\"{}\"}} {}",
                key(&sv.stack, &sv.name),
                sv.restarts
            );
        }
        out
    }

    /// Stops the listeners (replicas keep running; a new daemon adopts them).
    pub fn shutdown(&self) {
        for (_, (_, h)) in std::mem::take(&mut *lock(&self.listeners)) {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_names() {
        let n = ReplicaName::parse("demo.web.2.15bb4f4ac4e2.dd00a2").unwrap();
        assert_eq!(
            (n.stack, n.service, n.slot, n.version),
            ("demo", "web", 2, "15bb4f4ac4e2")
        );
        for other in [
            "a.b.c.d.e",
            "web",
            "demo.web.0.15bb4f4ac4e2.dd00a2",
            "demo.web.1.xyz.dd00a2",
            "my.app.1.15bb4f4ac4e2.dd00a2x",
        ] {
            assert!(ReplicaName::parse(other).is_none(), "{other}");
        }
    }
}
