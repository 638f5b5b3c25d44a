//! The Swarm engine: the same pinned stacks, ledger and policy as the
//! local engine, carried out by an existing Docker Swarm through the
//! Engine API (bollard, API 1.41 pinned: dockerd 20.10 speaks no newer).
//!
//! A change runs in the deploying client (no ingot daemon is involved):
//! [`carry_out`] checks the manager, evaluates policy, pushes every image
//! (with its referrers) to the registry the nodes pull from, checks that
//! the manager can resolve them, appends the pending ledger entry, applies
//! each service in `depends_on` order and waits for Swarm to finish its
//! update, and seals the entry. When one service fails, every service this
//! change had already updated is rolled back as well (and the ones it
//! created removed), so the stack returns to the previous entry as one
//! unit. The entry's detail records each service's Swarm update state and
//! the registry. Objects carry labels ([`spec`]) naming their stack, its
//! digest, the service's version and the entry that deployed them, which
//! is how [`Swarm::drift`] finds changes made outside ingot.

pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::models::{
    ConfigSpec, NetworkCreateRequest, SecretSpec, Service, ServiceUpdateStatusStateEnum, Task, TaskState,
};
use bollard::query_parameters::{
    ListConfigsOptionsBuilder, ListNetworksOptionsBuilder, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, UpdateServiceOptions,
};
use bollard::{ClientVersion, Docker};
use serde::Serialize;

use crate::backend::{Backend, Outcome, ServiceReport};
use crate::drift::Difference;
use crate::ledger;
use crate::pin::{EngineKind, PinnedService, PinnedStack, SecretValue};
use crate::{DeployError, Result};

/// The oldest Engine API version spoken (Docker 20.10's); the version is
/// negotiated down from bollard's own to the server's.
pub const MIN_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// A connection to a swarm manager.
pub struct Swarm {
    docker: Docker,
    /// As given (`DOCKER_HOST`), for messages.
    pub host: String,
}

fn err(host: &str, why: impl std::fmt::Display) -> DeployError {
    DeployError::Swarm {
        host: host.to_string(),
        why: why.to_string(),
    }
}

/// What the manager said about its swarm.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub nodes: i64,
    pub managers: i64,
    pub node: String,
}

/// `DOCKER_HOST` as the docker CLI reads it: `unix://PATH`, or
/// `tcp://HOST:PORT` (TLS with `DOCKER_TLS_VERIFY` set, the client key and
/// certificates from `DOCKER_CERT_PATH`, else ~/.docker); unset: the
/// local engine's socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

impl Swarm {
    pub fn connect(host: &str) -> Result<Swarm> {
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") {
            let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
            if tls {
                let dir = std::env::var_os("DOCKER_CERT_PATH")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
                    .unwrap_or_default();
                Docker::connect_with_ssl(
                    host,
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
            } else {
                Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
            }
        } else {
            return Err(err(
                host,
                "unsupported DOCKER_HOST (expected unix://PATH or tcp://HOST:PORT)",
            ));
        }
        .map_err(|e| err(host, format!("no Docker engine answers here: {e}")))?;
        Ok(Swarm {
            docker,
            host: host.to_string(),
        })
    }

    fn api(&self, what: &str) -> impl Fn(bollard::errors::Error) -> DeployError + '_ {
        let what = what.to_string();
        move |e| match e {
            bollard::errors::Error::DockerResponseServerError { status_code, message } => {
                err(&self.host, format!("{what}: {message} ({status_code})"))
            }
            e => err(&self.host, format!("{what}: {e}")),
        }
    }

    /// The swarm's shape; an error names why this engine is not a usable
    /// manager (nothing answers, not in a swarm, a worker).
    pub async fn manager(&self) -> Result<Cluster> {
        // The version is shared by every clone of the client.
        self.docker
            .clone()
            .negotiate_version()
            .await
            .map_err(|e| err(&self.host, format!("no Docker engine answers here: {e}")))?;
        let v = self.docker.client_version();
        if v < MIN_API {
            return Err(err(
                &self.host,
                format!("Docker Engine API {v} is older than {MIN_API} (Docker 20.10): upgrade the engine"),
            ));
        }
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| err(&self.host, format!("no Docker engine answers here: {e}")))?;
        let s = info.swarm.unwrap_or_default();
        use bollard::models::LocalNodeState;
        match s.local_node_state {
            Some(LocalNodeState::ACTIVE) => {}
            Some(LocalNodeState::LOCKED) => return Err(err(&self.host, "the swarm is locked (docker swarm unlock)")),
            other => {
                return Err(err(
                    &self.host,
                    format!(
                        "this engine is not in a swarm (state {}): run `docker swarm init`, or point DOCKER_HOST at a manager",
                        other.map(|o| o.to_string()).unwrap_or_default()
                    ),
                ))
            }
        }
        if s.control_available != Some(true) {
            return Err(err(
                &self.host,
                "this engine is a worker node of its swarm, not a manager: point DOCKER_HOST at a manager",
            ));
        }
        Ok(Cluster {
            nodes: s.nodes.unwrap_or(0),
            managers: s.managers.unwrap_or(0),
            node: info.name.unwrap_or_default(),
        })
    }

    /// Whether the manager can resolve `image` in its registry (it asks the
    /// registry itself): a registry the nodes cannot reach is found here,
    /// before anything is updated.
    pub async fn check_pull(&self, image: &str) -> Result<()> {
        self.docker
            .inspect_registry_image(image, None)
            .await
            .map(|_| ())
            .map_err(|e| {
                let why = match e {
                    bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                    e => e.to_string(),
                };
                err(
                    &self.host,
                    format!("the swarm's manager cannot resolve {image} (is the registry reachable from the nodes, and trusted by them?): {why}"),
                )
            })
    }

    async fn stack_services(&self, stack: Option<&str>) -> Result<Vec<Service>> {
        let label = match stack {
            Some(s) => format!("{}={s}", spec::INGOT_STACK),
            None => spec::INGOT_STACK.to_string(),
        };
        let filters = HashMap::from([("label", vec![label])]);
        let opts = ListServicesOptionsBuilder::new().filters(&filters).status(true).build();
        let mut out = self
            .docker
            .list_services(Some(opts))
            .await
            .map_err(self.api("listing services"))?;
        out.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        Ok(out)
    }

    async fn inspect(&self, name: &str) -> Result<Option<Service>> {
        match self.docker.inspect_service(name, None).await {
            Ok(s) => Ok(Some(s)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.api(&format!("service {name}"))(e)),
        }
    }

    async fn tasks_of(&self, service: &str) -> Result<Vec<Task>> {
        let filters = HashMap::from([("service", vec![service.to_string()])]);
        let opts = ListTasksOptionsBuilder::new().filters(&filters).build();
        self.docker
            .list_tasks(Some(opts))
            .await
            .map_err(self.api(&format!("tasks of {service}")))
    }

    /// The stack's networks (overlay, attachable), configs and secrets
    /// (immutable, named by digest), made where missing.
    /// Returns the configs' and secrets' IDs by name (a service's reference
    /// to one needs both).
    async fn ensure_objects(
        &self,
        stack: &PinnedStack,
        secrets: &BTreeMap<String, SecretValue>,
    ) -> Result<HashMap<String, String>> {
        let labels = HashMap::from([
            (spec::STACK_LABEL.to_string(), stack.name.clone()),
            (spec::INGOT_STACK.to_string(), stack.name.clone()),
        ]);
        let mut wanted: Vec<(String, bool)> = stack
            .services
            .values()
            .flat_map(PinnedService::network_names)
            .map(|n| {
                let internal = stack.networks.get(&n).is_some_and(|d| d.internal);
                (n, internal)
            })
            .collect();
        wanted.sort();
        wanted.dedup();
        let filters = HashMap::from([("label", vec![format!("{}={}", spec::INGOT_STACK, stack.name)])]);
        let have: HashSet<String> = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(self.api("listing networks"))?
            .into_iter()
            .filter_map(|n| n.name)
            .collect();
        for (n, internal) in wanted {
            let name = spec::scoped(&stack.name, &n);
            if have.contains(&name) {
                continue;
            }
            let ipam = stack
                .networks
                .get(&n)
                .and_then(|d| d.subnet.clone())
                .map(|subnet| bollard::models::Ipam {
                    config: Some(vec![bollard::models::IpamConfig {
                        subnet: Some(subnet),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
            self.docker
                .create_network(NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("overlay".into()),
                    attachable: Some(true),
                    internal: Some(internal),
                    ipam,
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(self.api(&format!("creating network {name}")))?;
        }
        let mut ids: HashMap<String, String> = self
            .docker
            .list_configs(Some(ListConfigsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(self.api("listing configs"))?
            .into_iter()
            .filter_map(|c| Some((c.spec?.name?, c.id?)))
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD;
        for (n, c) in &stack.configs {
            let name = spec::object_name(&stack.name, n, &c.digest);
            if ids.contains_key(&name) {
                continue;
            }
            let made = self
                .docker
                .create_config(ConfigSpec {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    data: Some(b64.encode(c.content.as_bytes())),
                    templating: None,
                })
                .await
                .map_err(self.api(&format!("creating config {name}")))?;
            ids.insert(name, made.id);
        }
        ids.extend(
            self.docker
                .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
                .await
                .map_err(self.api("listing secrets"))?
                .into_iter()
                .filter_map(|c| Some((c.spec?.name?, c.id?))),
        );
        for (n, s) in &stack.secrets {
            let name = spec::object_name(&stack.name, n, &s.digest);
            if ids.contains_key(&name) {
                continue;
            }
            let value = secrets.get(n).ok_or_else(|| DeployError::Field {
                field: format!("secrets.{n}"),
                why: "its value is not known here (deploy from the stack file, which names its source)".into(),
            })?;
            let made = self
                .docker
                .create_secret(SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    data: Some(b64.encode(&value.0)),
                    ..Default::default()
                })
                .await
                .map_err(self.api(&format!("creating secret {name}")))?;
            ids.insert(name, made.id);
        }
        Ok(ids)
    }

    /// Applies `next` (after `previous`, the stack as the ledger had it),
    /// service by service in start order, waiting for each; on a failure
    /// rolls the whole change back.
    async fn apply_stack(
        &self,
        next: &PinnedStack,
        entry: i64,
        registry: &str,
        secrets: &BTreeMap<String, SecretValue>,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome> {
        let ingress: Vec<&String> = next
            .services
            .iter()
            .filter(|(_, s)| s.ports.iter().any(|p| p.mode == crate::compose::PortMode::Ingress))
            .map(|(n, _)| n)
            .collect();
        if !ingress.is_empty() {
            progress(&format!(
                "{} publish ports in ingress mode: Swarm's routing mesh needs IPVS in every node's kernel{}",
                ingress.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                if self.host.starts_with("unix://") && !Path::new("/proc/net/ip_vs").exists() {
                    " (this machine's kernel has none: those ports will not answer here; use mode: host)"
                } else {
                    ""
                }
            ));
        }
        let ids = self.ensure_objects(next, secrets).await?;
        let mut reports: BTreeMap<String, ServiceReport> = BTreeMap::new();
        // Services this change touched, in order: (name, created).
        let mut done: Vec<(String, bool)> = Vec::new();
        let mut failure: Option<(String, String, bool)> = None; // (service, why, swarm rolled it back itself)
        for name in next.start_order() {
            let svc = &next.services[&name];
            let full = spec::scoped(&next.name, &name);
            let image = crate::backend::image_ref(registry, svc);
            let mut want = spec::service_spec(next, &name, entry, &image)?;
            spec::resolve_ids(&mut want, &ids);
            let current = match self.inspect(&full).await {
                Ok(c) => c,
                Err(e) => {
                    failure = Some((name.clone(), e.to_string(), false));
                    break;
                }
            };
            let mut scaled = false;
            let known: HashSet<String> = match &current {
                Some(_) => self
                    .tasks_of(&full)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| t.id)
                    .collect(),
                None => HashSet::new(),
            };
            let sent = match &current {
                None => {
                    progress(&format!("creating {full}"));
                    self.docker
                        .create_service(want.clone(), None)
                        .await
                        .map(|_| (true, true))
                        .map_err(self.api(&format!("creating service {full}")))
                }
                Some(cur) => {
                    let label = |s: &Service, k: &str| {
                        s.spec
                            .as_ref()
                            .and_then(|s| s.labels.as_ref())
                            .and_then(|l| l.get(k))
                            .cloned()
                    };
                    let template_changes = label(cur, spec::INGOT_TEMPLATE).as_deref()
                        != want
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(spec::INGOT_TEMPLATE))
                            .map(String::as_str);
                    let version = cur.version.as_ref().and_then(|v| v.index).unwrap_or(0);
                    let replicas = |s: Option<&bollard::models::ServiceSpec>| {
                        s.and_then(|s| s.mode.as_ref())
                            .and_then(|m| m.replicated.as_ref())
                            .and_then(|r| r.replicas)
                    };
                    scaled = replicas(cur.spec.as_ref()) != replicas(Some(&want));
                    progress(&format!(
                        "updating {full}{}",
                        if template_changes { " (rolling)" } else { "" }
                    ));
                    self.docker
                        .update_service(
                            &full,
                            want.clone(),
                            UpdateServiceOptions {
                                version: i32::try_from(version).unwrap_or(i32::MAX),
                                ..Default::default()
                            },
                            None,
                        )
                        .await
                        .map(|_| (false, template_changes))
                        .map_err(self.api(&format!("updating service {full}")))
                }
            };
            let (created, rolls) = match sent {
                Ok(x) => x,
                Err(e) => {
                    failure = Some((name.clone(), e.to_string(), false));
                    break;
                }
            };
            done.push((name.clone(), created));
            let mark = current.as_ref().and_then(update_mark);
            match self
                .wait(&full, svc, rolls && !created, mark, &known, Goal::Update)
                .await
            {
                Ok(state) => {
                    reports.insert(
                        name.clone(),
                        ServiceReport {
                            action: if created {
                                "created"
                            } else if rolls {
                                "updated"
                            } else if scaled {
                                "scaled"
                            } else {
                                "unchanged"
                            }
                            .into(),
                            state,
                            message: String::new(),
                        },
                    );
                }
                Err(Waited::Paused(msg)) => {
                    reports.insert(name.clone(), ServiceReport::new("updated", "paused", msg.clone()));
                    return Ok(Outcome {
                        outcome: ledger::PAUSED.into(),
                        message: format!("the update of {full} paused (its failure_action): {msg}"),
                        services: reports,
                    });
                }
                Err(Waited::RolledBack(msg)) => {
                    failure = Some((name.clone(), msg, true));
                    break;
                }
                Err(Waited::Failed(msg)) => {
                    failure = Some((name.clone(), msg, false));
                    break;
                }
                Err(Waited::Error(e)) => {
                    failure = Some((name.clone(), e.to_string(), false));
                    break;
                }
            }
        }
        let Some((failed, why, swarm_rolled_back)) = failure else {
            // Every service is there: services the stack no longer has go.
            for s in self.stack_services(Some(&next.name)).await? {
                let svc_name = label_of(&s, spec::INGOT_SERVICE).unwrap_or_default();
                if !next.services.contains_key(&svc_name) {
                    progress(&format!("removing {}", name_of(&s)));
                    self.docker
                        .delete_service(name_of(&s))
                        .await
                        .map_err(self.api(&format!("removing service {}", name_of(&s))))?;
                    reports.insert(svc_name, ServiceReport::new("removed", "removed", ""));
                }
            }
            return Ok(Outcome {
                outcome: ledger::SUCCEEDED.into(),
                message: format!("{} services converged", next.services.len()),
                services: reports,
            });
        };
        // One service failed: the whole change goes back, newest first.
        progress(&format!("{failed} failed ({why}); rolling the stack back"));
        let mut rollback_errors = Vec::new();
        for (name, created) in done.iter().rev() {
            let full = spec::scoped(&next.name, name);
            let svc = &next.services[name];
            if *name == failed && swarm_rolled_back {
                reports.insert(
                    name.clone(),
                    ServiceReport::new("rolled-back", "rollback_completed", why.clone()),
                );
                continue;
            }
            let result = if *created {
                progress(&format!("removing {full} (new in this change)"));
                self.docker
                    .delete_service(&full)
                    .await
                    .map_err(self.api(&format!("removing service {full}")))
                    .map(|_| "removed".to_string())
            } else {
                progress(&format!("rolling back {full}"));
                self.rollback(&full, svc).await
            };
            let (state, message) = match result {
                Ok(s) => (s, if *name == failed { why.clone() } else { String::new() }),
                Err(e) => {
                    rollback_errors.push(format!("{full}: {e}"));
                    ("rollback-failed".to_string(), e.to_string())
                }
            };
            reports.insert(
                name.clone(),
                ServiceReport {
                    action: if *created { "removed" } else { "rolled-back" }.into(),
                    state,
                    message,
                },
            );
        }
        let untouched: Vec<String> = next
            .services
            .keys()
            .filter(|n| !reports.contains_key(*n))
            .cloned()
            .collect();
        for name in untouched {
            reports.insert(name, ServiceReport::new("not-started", "", ""));
        }
        let full = spec::scoped(&next.name, &failed);
        if rollback_errors.is_empty() {
            Ok(Outcome {
                outcome: ledger::ROLLED_BACK.into(),
                message: format!("{full}: {why}; the stack was rolled back to its previous entry"),
                services: reports,
            })
        } else {
            Ok(Outcome {
                outcome: ledger::FAILED.into(),
                message: format!("{full}: {why}; and rolling back failed: {}", rollback_errors.join("; ")),
                services: reports,
            })
        }
    }

    /// Swarm's own rollback of `full` to its previous spec, waited for.
    async fn rollback(&self, full: &str, svc: &PinnedService) -> Result<String> {
        let cur = self
            .inspect(full)
            .await?
            .ok_or_else(|| err(&self.host, format!("service {full} is gone")))?;
        // Swarm may be rolling it back already (its failure_action): wait
        // for that rollback rather than ask for another.
        use ServiceUpdateStatusStateEnum as U;
        let state = cur.update_status.as_ref().and_then(|u| u.state);
        if matches!(state, Some(U::ROLLBACK_STARTED | U::ROLLBACK_COMPLETED)) {
            return match self.wait(full, svc, true, None, &HashSet::new(), Goal::Rollback).await {
                Ok(s) => Ok(s),
                Err(Waited::Error(e)) => Err(e),
                Err(Waited::Paused(m) | Waited::Failed(m) | Waited::RolledBack(m)) => Err(err(&self.host, m)),
            };
        }
        let version = cur.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let spec = cur.spec.clone().unwrap_or_default();
        let known: HashSet<String> = self.tasks_of(full).await?.into_iter().filter_map(|t| t.id).collect();
        self.docker
            .update_service(
                full,
                spec,
                UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    rollback: Some("previous".into()),
                    ..Default::default()
                },
                None,
            )
            .await
            .map_err(self.api(&format!("rolling back {full}")))?;
        match self
            .wait(full, svc, true, update_mark(&cur), &known, Goal::Rollback)
            .await
        {
            Ok(s) => Ok(s),
            Err(Waited::Error(e)) => Err(e),
            Err(Waited::Paused(m) | Waited::Failed(m) | Waited::RolledBack(m)) => Err(err(&self.host, m)),
        }
    }

    /// Waits for `full` to converge: its update (when `rolls`) finished and
    /// every task that should run running (for a service with a health
    /// check, Swarm counts a task running once it is healthy).
    async fn wait(
        &self,
        full: &str,
        svc: &PinnedService,
        rolls: bool,
        before: Option<String>,
        known: &HashSet<String>,
        goal: Goal,
    ) -> std::result::Result<String, Waited> {
        // Bounded by the update and, Swarm's failure_action being
        // rollback, the rollback after it, batch by batch.
        let tasks_now = self
            .inspect(full)
            .await
            .map_err(Waited::Error)?
            .and_then(|s| s.service_status)
            .and_then(|st| st.desired_tasks)
            .unwrap_or(0);
        let tasks = u32::try_from(tasks_now).unwrap_or(u32::MAX).max(svc.replicas).max(1);
        let time = |p: &crate::compose::UpdatePolicy| {
            let batches = if p.parallelism == 0 {
                1
            } else {
                u64::from(tasks.div_ceil(p.parallelism))
            };
            batches * (p.monitor_ms + p.delay_ms + svc.stop_grace_ms + 60_000)
        };
        let limit = Duration::from_millis(60_000 + time(&svc.update) + time(&svc.rollback));
        let started = Instant::now();
        let deadline = started + limit;
        let mut last_nodes = started;
        let mut failures = 0;
        let mut counted: HashSet<String> = HashSet::new();
        loop {
            let s = self
                .inspect(full)
                .await
                .map_err(Waited::Error)?
                .ok_or_else(|| Waited::Failed(format!("service {full} disappeared")))?;
            let tasks = self.tasks_of(full).await.map_err(Waited::Error)?;
            // A node that cannot pull the image: say so at once.
            for t in tasks
                .iter()
                .filter(|t| t.id.as_ref().is_some_and(|id| !known.contains(id)))
            {
                let st = t.status.clone().unwrap_or_default();
                let e = st.err.clone().unwrap_or_default();
                if matches!(st.state, Some(TaskState::REJECTED)) && pull_error(&e) {
                    return Err(Waited::Failed(format!("a node could not pull the image: {e}")));
                }
                if matches!(st.state, Some(TaskState::FAILED | TaskState::REJECTED))
                    && counted.insert(t.id.clone().unwrap_or_default())
                {
                    failures += 1;
                    if !rolls && failures >= 3 {
                        return Err(Waited::Failed(format!("its tasks keep failing: {e}")));
                    }
                }
            }
            // A node that goes down while its tasks are being replaced
            // stalls Swarm's update for as long as it is down (the updater
            // waits for them to report stopped): fail now, naming the node.
            let updating = matches!(
                s.update_status.as_ref().and_then(|u| u.state),
                Some(ServiceUpdateStatusStateEnum::UPDATING)
            );
            // Nodes go down in seconds at best (heartbeats): asking every
            // 2 s, not every poll, is enough.
            if rolls && goal == Goal::Update && updating && last_nodes.elapsed() >= Duration::from_secs(2) {
                last_nodes = Instant::now();
                let down = self.nodes_down().await.map_err(Waited::Error)?;
                let stranded: Vec<&String> = tasks
                    .iter()
                    .filter(|t| !terminal(t))
                    .filter_map(|t| down.get(t.node_id.as_ref()?))
                    .collect();
                if let Some(host) = stranded.first() {
                    return Err(Waited::Failed(format!(
                        "node {host} went down during the update with {} of its tasks not confirmed stopped (Swarm's update waits for them until the node returns)",
                        stranded.len()
                    )));
                }
            }
            let converged = converged(&s, &tasks, svc);
            let mark = update_mark(&s);
            let state = s.update_status.as_ref().and_then(|u| u.state);
            let msg = s
                .update_status
                .as_ref()
                .and_then(|u| u.message.clone())
                .unwrap_or_default();
            if rolls {
                // Wait for this update's status, not an earlier one's.
                let fresh = mark.is_some() && mark != before;
                if !fresh && converged && started.elapsed() > Duration::from_secs(10) {
                    // Nothing Swarm restarts tasks for changed after all
                    // (a placement that the running tasks still meet).
                    return Ok("converged".into());
                }
                if fresh {
                    use ServiceUpdateStatusStateEnum as U;
                    match (goal, state) {
                        (Goal::Update, Some(U::COMPLETED)) if converged => return Ok("completed".into()),
                        (Goal::Update, Some(U::ROLLBACK_COMPLETED)) if converged => {
                            return Err(Waited::RolledBack(format!("Swarm rolled its update back: {msg}")))
                        }
                        (Goal::Update, Some(U::PAUSED)) => return Err(Waited::Paused(msg)),
                        (Goal::Rollback, Some(U::ROLLBACK_COMPLETED)) if converged => {
                            return Ok("rollback_completed".into())
                        }
                        (_, Some(U::ROLLBACK_PAUSED)) => {
                            return Err(Waited::Failed(format!("Swarm's rollback paused: {msg}")))
                        }
                        _ => {}
                    }
                }
            } else if converged {
                return Ok("converged".into());
            }
            if Instant::now() > deadline {
                return Err(Waited::Failed(format!(
                    "not converged within {} s (update state {}; {})",
                    limit.as_secs(),
                    state.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                    running_summary(&tasks)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every service of `stack` (or of every stack ingot deployed).
    pub async fn services(&self, stack: Option<&str>) -> Result<Vec<ServiceView>> {
        let mut out = Vec::new();
        for s in self.stack_services(stack).await? {
            let spec = s.spec.clone().unwrap_or_default();
            let image = spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let status = s.service_status.clone().unwrap_or_default();
            let mut ports = Vec::new();
            for p in spec
                .endpoint_spec
                .as_ref()
                .and_then(|e| e.ports.clone())
                .unwrap_or_default()
            {
                ports.push(format!(
                    "*:{}->{}/{} ({})",
                    p.published_port.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    p.target_port.unwrap_or(0),
                    p.protocol.map(|p| p.to_string()).unwrap_or_else(|| "tcp".into()),
                    p.publish_mode
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "ingress".into())
                ));
            }
            out.push(ServiceView {
                name: name_of(&s).to_string(),
                stack: label_of(&s, spec::INGOT_STACK).unwrap_or_default(),
                mode: if spec.mode.as_ref().is_some_and(|m| m.global.is_some()) {
                    "global".into()
                } else {
                    "replicated".into()
                },
                running: status.running_tasks.unwrap_or(0),
                desired: status.desired_tasks.unwrap_or(0),
                digest: image.split_once('@').map(|(_, d)| d.to_string()).unwrap_or_default(),
                image,
                ports,
                update: s
                    .update_status
                    .as_ref()
                    .and_then(|u| u.state)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Every node: ID -> (host name, address, whether it is down or
    /// disconnected).
    async fn nodes(&self) -> Result<HashMap<String, (String, String, bool)>> {
        let nodes = self.docker.list_nodes(None).await.map_err(self.api("listing nodes"))?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let host = n
                    .description
                    .as_ref()
                    .and_then(|d| d.hostname.clone())
                    .unwrap_or_default();
                let status = n.status.unwrap_or_default();
                let down = matches!(
                    status.state,
                    Some(bollard::models::NodeState::DOWN | bollard::models::NodeState::DISCONNECTED)
                );
                Some((n.id?, (host, status.addr.unwrap_or_default(), down)))
            })
            .collect())
    }

    /// Nodes down or disconnected: ID -> host name.
    async fn nodes_down(&self) -> Result<HashMap<String, String>> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .filter(|(_, (_, _, down))| *down)
            .map(|(id, (host, _, _))| (id, host))
            .collect())
    }

    /// The tasks of `service` (`STACK_SERVICE`), newest first per slot.
    pub async fn tasks(&self, service: &str) -> Result<Vec<TaskView>> {
        let s = self
            .inspect(service)
            .await?
            .filter(|s| label_of(s, spec::INGOT_STACK).is_some())
            .ok_or_else(|| DeployError::NotFound(format!("no service {service:?} deployed by ingot on the swarm")))?;
        let has_health = label_of(&s, spec::INGOT_HEALTH).as_deref() == Some("true");
        let nodes = self.nodes().await?;
        let mut out: Vec<TaskView> = self
            .tasks_of(service)
            .await?
            .into_iter()
            .map(|t| {
                let st = t.status.clone().unwrap_or_default();
                let state = st.state.map(|s| s.to_string()).unwrap_or_default();
                let (node, addr, _) = t
                    .node_id
                    .as_ref()
                    .and_then(|n| nodes.get(n).cloned())
                    .unwrap_or_default();
                let image = t
                    .spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                let mut ports: Vec<String> = st
                    .port_status
                    .as_ref()
                    .and_then(|p| p.ports.clone())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| Some(format!("{addr}:{}->{}", p.published_port?, p.target_port?)))
                    .collect();
                ports.dedup();
                TaskView {
                    id: t.id.clone().unwrap_or_default(),
                    slot: t.slot.unwrap_or(0),
                    node,
                    health: match (has_health, state.as_str()) {
                        (false, _) => "-".into(),
                        (true, "running") => "healthy".into(),
                        (true, "starting") => "starting".into(),
                        (true, _) => "-".into(),
                    },
                    state,
                    desired: t.desired_state.map(|s| s.to_string()).unwrap_or_default(),
                    digest: image.split_once('@').map(|(_, d)| d.to_string()).unwrap_or_default(),
                    error: st.err.unwrap_or_default(),
                    ports,
                    updated: t.updated_at.clone().map(|d| d.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.slot, std::cmp::Reverse(&a.updated)).cmp(&(b.slot, std::cmp::Reverse(&b.updated))));
        Ok(out)
    }

    /// Removes every object of `stack` ingot made: services, then
    /// networks, configs and secrets.
    async fn remove_stack(&self, stack: &str) -> Result<Outcome> {
        let mut reports = BTreeMap::new();
        for s in self.stack_services(Some(stack)).await? {
            self.docker
                .delete_service(name_of(&s))
                .await
                .map_err(self.api(&format!("removing service {}", name_of(&s))))?;
            reports.insert(
                label_of(&s, spec::INGOT_SERVICE).unwrap_or_default(),
                ServiceReport::new("removed", "removed", ""),
            );
        }
        let filters = HashMap::from([("label", vec![format!("{}={stack}", spec::INGOT_STACK)])]);
        for c in self
            .docker
            .list_configs(Some(ListConfigsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(self.api("listing configs"))?
        {
            if let Some(id) = c.id {
                self.docker
                    .delete_config(&id)
                    .await
                    .map_err(self.api("removing a config"))?;
            }
        }
        for c in self
            .docker
            .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(self.api("listing secrets"))?
        {
            if let Some(id) = c.id {
                self.docker
                    .delete_secret(&id)
                    .await
                    .map_err(self.api("removing a secret"))?;
            }
        }
        // A network is busy until its tasks' containers are gone, and the
        // manager removes it after it answered: wait until none is listed.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nets = self
                .docker
                .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
                .await
                .map_err(self.api("listing networks"))?;
            if nets.is_empty() {
                break;
            }
            let mut last = None;
            for n in nets {
                if let Some(id) = n.id {
                    if let Err(e) = self.docker.remove_network(&id).await {
                        last = Some(e);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(match last {
                    Some(e) => self.api("removing a network")(e),
                    None => err(&self.host, "the stack's networks are still listed after 60 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Outcome {
            outcome: ledger::SUCCEEDED.into(),
            message: format!("stack {stack} removed from the swarm"),
            services: reports,
        })
    }

    /// What runs on the swarm against the ledger's swarm stacks: services
    /// missing, extra, scaled, or changed outside ingot (image, command,
    /// environment: `docker service update`/`scale`).
    async fn drift_of(&self, desired: &BTreeMap<String, PinnedStack>) -> Result<Vec<Difference>> {
        let mut running: BTreeMap<String, Service> = self
            .stack_services(None)
            .await?
            .into_iter()
            .map(|s| (name_of(&s).to_string(), s))
            .collect();
        let mut out = Vec::new();
        for (stack, pinned) in desired {
            for (name, svc) in &pinned.services {
                let full = spec::scoped(stack, name);
                let Some(have) = running.remove(&full) else {
                    out.push(Difference {
                        service: full,
                        what: "service".into(),
                        desired: "present".into(),
                        actual: "missing".into(),
                    });
                    continue;
                };
                let hs = have.spec.clone().unwrap_or_default();
                let c = hs
                    .task_template
                    .as_ref()
                    .and_then(|t| t.container_spec.clone())
                    .unwrap_or_default();
                let replicas = hs
                    .mode
                    .as_ref()
                    .and_then(|m| m.replicated.as_ref())
                    .and_then(|r| r.replicas);
                if !svc.global && replicas != Some(svc.replicas.into()) {
                    out.push(Difference {
                        service: full.clone(),
                        what: "replicas".into(),
                        desired: svc.replicas.to_string(),
                        actual: replicas.map(|r| r.to_string()).unwrap_or_else(|| "global".into()),
                    });
                }
                let image = c.image.clone().unwrap_or_default();
                if !image.ends_with(&format!("@{}", svc.digest)) {
                    out.push(Difference {
                        service: full.clone(),
                        what: "image".into(),
                        desired: svc.digest.to_string(),
                        actual: image,
                    });
                }
                let mut env = c.env.clone().unwrap_or_default();
                let mut want_env = svc.env.clone();
                env.sort();
                want_env.sort();
                if env != want_env {
                    out.push(Difference {
                        service: full.clone(),
                        what: "environment".into(),
                        desired: want_env.join(" "),
                        actual: env.join(" "),
                    });
                }
                if c.args != svc.command || c.command != svc.entrypoint {
                    out.push(Difference {
                        service: full.clone(),
                        what: "command".into(),
                        desired: format!("{:?} {:?}", svc.entrypoint, svc.command),
                        actual: format!("{:?} {:?}", c.command, c.args),
                    });
                }
                let labelled = label_of(&have, spec::INGOT_VERSION);
                if labelled.as_deref() != Some(svc.version().as_str()) {
                    out.push(Difference {
                        service: full.clone(),
                        what: "version label".into(),
                        desired: svc.version(),
                        actual: labelled.unwrap_or_default(),
                    });
                }
            }
        }
        for (name, _) in running {
            out.push(Difference {
                service: name,
                what: "service".into(),
                desired: "absent (not in the ledger)".into(),
                actual: "present".into(),
            });
        }
        Ok(out)
    }
}

impl Backend for Swarm {
    const KIND: EngineKind = EngineKind::Swarm;

    fn place(&self) -> String {
        self.host.clone()
    }

    async fn check(&self) -> Result<String> {
        let c = self.manager().await?;
        Ok(format!(
            "swarm at {}: manager {}, {} nodes, {} managers",
            self.host, c.node, c.nodes, c.managers
        ))
    }

    fn validate(&self, stack: &PinnedStack, registry: &str) -> Result<()> {
        for (name, svc) in &stack.services {
            spec::service_spec(stack, name, 0, &crate::backend::image_ref(registry, svc))?;
        }
        Ok(())
    }

    async fn check_image(&self, image: &str) -> Result<()> {
        self.check_pull(image).await
    }

    async fn apply(
        &self,
        next: &PinnedStack,
        entry: i64,
        registry: &str,
        secrets: &BTreeMap<String, SecretValue>,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome> {
        self.apply_stack(next, entry, registry, secrets, progress).await
    }

    async fn remove(&self, stack: &str) -> Result<Outcome> {
        self.remove_stack(stack).await
    }

    async fn drift(&self, desired: &BTreeMap<String, PinnedStack>) -> Result<Vec<Difference>> {
        self.drift_of(desired).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Update,
    Rollback,
}

enum Waited {
    Paused(String),
    RolledBack(String),
    Failed(String),
    Error(DeployError),
}

/// A service as `ingot services --engine swarm` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub stack: String,
    pub mode: String,
    pub running: u64,
    pub desired: u64,
    pub image: String,
    pub digest: String,
    pub ports: Vec<String>,
    /// Swarm's update state of its last update.
    pub update: String,
}

/// A task as `ingot service ps --engine swarm` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub slot: i64,
    pub node: String,
    pub state: String,
    pub desired: String,
    pub health: String,
    pub digest: String,
    pub error: String,
    pub ports: Vec<String>,
    pub updated: String,
}

fn name_of(s: &Service) -> &str {
    s.spec.as_ref().and_then(|s| s.name.as_deref()).unwrap_or_default()
}

fn label_of(s: &Service, key: &str) -> Option<String> {
    s.spec.as_ref()?.labels.as_ref()?.get(key).cloned()
}

/// When a service's last update started: tells this update's status from
/// an earlier one's.
fn update_mark(s: &Service) -> Option<String> {
    let started = s.update_status.as_ref()?.started_at.clone()?.to_string();
    (!started.is_empty()).then_some(started)
}

/// Whether a task has ended (so a node down does not hold it).
fn terminal(t: &Task) -> bool {
    matches!(
        t.status.as_ref().and_then(|s| s.state),
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::REMOVE
                | TaskState::ORPHANED
        )
    )
}

fn pull_error(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    e.contains("no such image") || e.contains("pull access denied") || e.contains("manifest unknown")
}

/// Every task meant to run is running, as many as the service wants.
fn converged(s: &Service, tasks: &[Task], svc: &PinnedService) -> bool {
    let want: Vec<&Task> = tasks
        .iter()
        .filter(|t| matches!(t.desired_state, Some(TaskState::RUNNING)))
        .collect();
    let running = want
        .iter()
        .filter(|t| matches!(t.status.as_ref().and_then(|s| s.state), Some(TaskState::RUNNING)))
        .count();
    let desired = s
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas);
    match desired {
        Some(n) => running == want.len() && i64::try_from(running).ok() == Some(n),
        None => svc.global && !want.is_empty() && running == want.len(),
    }
}

fn running_summary(tasks: &[Task]) -> String {
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| matches!(t.desired_state, Some(TaskState::RUNNING)))
    {
        let s = t
            .status
            .as_ref()
            .and_then(|s| s.state)
            .map(|s| s.to_string())
            .unwrap_or_default();
        *by_state.entry(s).or_default() += 1;
    }
    let parts: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "tasks: {}",
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    )
}
