//! The seam between the engine and the containers it runs: [`Runtime`].
//! [`LocalRuntime`] is ingot-runtime on this host (the daemon's); unit
//! tests of rollout, rollback and reconcile use a fake.

use ingot_runtime::net::Network;
use ingot_runtime::spec::{FileMount, FileSource};

use crate::compose::MountType;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingot_store::{ContainerState, Store};
use tokio::io::AsyncBufReadExt;

use crate::compose::Health;
use crate::pin::PinnedService;
use crate::{DeployError, Result};

/// A boxed future, so that [`Runtime`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A replica container just started.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    /// Its address on each network, in the order asked (the primary first).
    pub addresses: Vec<String>,
}

/// A container the runtime knows of (for adoption after a restart).
#[derive(Debug, Clone)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub addresses: Vec<String>,
}

/// What the engine needs of a container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Starts container `name` running `spec` (detached: it outlives the
    /// daemon) on networks `nets` (the primary first); config mounts come
    /// from `configs/<hex>` under the root.
    fn start<'a>(
        &'a self,
        name: &'a str,
        spec: &'a PinnedService,
        nets: &'a [Network],
    ) -> BoxFuture<'a, Result<Started>>;
    /// Makes sure network `net`'s bridge and rules are there.
    fn ensure_network(&self, net: Network) -> BoxFuture<'_, Result<()>>;
    /// Removes network `net`'s bridge and rules.
    fn remove_network(&self, net: Network) -> BoxFuture<'_, Result<()>>;
    /// Whether container `id` still runs.
    fn is_running<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool>;
    /// The exit code of a container that ended.
    fn exit_code<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<i64>>;
    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes container `id`.
    fn remove<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, ()>;
    /// Runs `health`'s command inside container `id` within its timeout.
    fn check<'a>(&'a self, id: &'a str, health: &'a Health) -> BoxFuture<'a, bool>;
    /// Whether `addr` accepts a TCP connection within `timeout`.
    fn reachable(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'_, bool>;
    /// Every container (after marking those whose monitor died as dead).
    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>>>;
}

/// ingot-runtime on this host: replicas are ingot containers on the bridge
/// network, each under a detached monitor process of its own.
pub struct LocalRuntime {
    root: PathBuf,
    exe: PathBuf,
    /// For short queries; stops, which wait out a grace period, open a
    /// handle of their own so they never hold this one.
    store: Arc<Mutex<Store>>,
}

impl LocalRuntime {
    pub fn new(root: PathBuf, exe: PathBuf) -> Result<LocalRuntime> {
        let store = Store::open(&root)?;
        Ok(LocalRuntime {
            root,
            exe,
            store: Arc::new(Mutex::new(store)),
        })
    }

    async fn query<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> Result<T> + Send + 'static) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&super::lock(&store)))
            .await
            .map_err(|e| DeployError::Daemon(e.to_string()))?
    }

    fn options(&self, name: &str, spec: &PinnedService, nets: &[Network]) -> ingot_runtime::RunOptions {
        let configs = self.root.join("configs");
        let mut command = Vec::new();
        let mut entrypoint = None;
        if let Some((first, rest)) = spec.entrypoint.as_ref().and_then(|ep| ep.split_first()) {
            entrypoint = Some(first.clone());
            command.extend(rest.iter().cloned());
        }
        command.extend(spec.command.clone().unwrap_or_default());
        ingot_runtime::RunOptions {
            name: Some(name.to_string()),
            env: spec.env.clone(),
            user: spec.user.clone(),
            workdir: spec.workdir.clone(),
            entrypoint,
            command,
            network: ingot_runtime::NetworkMode::Bridge,
            networks: nets.to_vec(),
            // Host-mode ports: the replica's own, not the mesh's.
            publish: spec
                .ports
                .iter()
                .filter(|p| p.mode == crate::compose::PortMode::Host)
                .map(|p| format!("{}:{}:{}/{}", bracket(&p.host_ip), p.published, p.target, p.protocol))
                .collect(),
            // The daemon's DNS server (crate::dns).
            dns: vec![crate::dns::address(&self.root).ip()],
            mounts: spec
                .mounts
                .iter()
                .filter(|m| m.kind != MountType::Tmpfs)
                .map(|m| ingot_runtime::spec::Bind {
                    source: match m.kind {
                        MountType::Volume => ingot_store::volume_path(&self.root, &m.source),
                        _ => PathBuf::from(&m.source),
                    },
                    target: m.target.clone(),
                    read_only: m.read_only,
                    copy_up: m.kind == MountType::Volume && !m.nocopy,
                })
                .collect(),
            tmpfs: spec
                .mounts
                .iter()
                .filter(|m| m.kind == MountType::Tmpfs)
                .map(|m| m.target.clone())
                .collect(),
            memory: spec.resources.memory.map(|b| b.to_string()),
            cpus: spec.resources.cpus.map(|c| c.to_string()),
            pids_limit: spec.resources.pids,
            // A config with an owner or mode is a copy of its own; else the shared file.
            volumes: spec
                .configs
                .iter()
                .filter(|c| (c.uid, c.gid, c.mode) == (None, None, None))
                .map(|c| format!("{}:{}:ro", configs.join(c.digest.hex()).display(), c.target))
                .collect(),
            files: spec
                .configs
                .iter()
                .filter(|c| (c.uid, c.gid, c.mode) != (None, None, None))
                .map(|c| FileMount {
                    source: FileSource::Config,
                    digest: c.digest.clone(),
                    target: c.target.clone(),
                    uid: c.uid.unwrap_or(0),
                    gid: c.gid.unwrap_or(0),
                    mode: c.mode.unwrap_or(0o444),
                })
                .chain(spec.secrets.iter().map(|m| FileMount {
                    source: FileSource::Secret,
                    digest: m.digest.clone(),
                    target: m.target.clone(),
                    uid: m.uid,
                    gid: m.gid,
                    mode: m.mode,
                }))
                .collect(),
            detach: true,
            ..Default::default()
        }
    }
}

/// An IPv6 address in brackets, as a port mapping writes it.
fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

impl Runtime for LocalRuntime {
    fn start<'a>(
        &'a self,
        name: &'a str,
        spec: &'a PinnedService,
        nets: &'a [Network],
    ) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            let opts = self.options(name, spec, nets);
            let image = spec.digest.to_string();
            let rec = self
                .query(move |s| Ok(ingot_runtime::create(s, &image, &opts, std::process::id())?))
                .await?;
            // tokio reaps the monitor when it ends (it is our child).
            let mut child =
                tokio::process::Command::from(ingot_runtime::monitor::detached_command(&self.exe, &self.root, &rec.id))
                    .spawn()
                    .map_err(|e| DeployError::Daemon(format!("cannot start the monitor of {name}: {e}")))?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = tokio::io::BufReader::new(out).read_line(&mut line).await;
            }
            ingot_runtime::monitor::parse_report(&line, name)
                .map_err(|e| DeployError::Invalid(format!("replica {name} did not start: {e}")))?;
            let id = rec.id.clone();
            let rec = self.query(move |s| Ok(s.container(&id)?)).await?;
            Ok(Started {
                addresses: rec.addresses(),
                id: rec.id,
            })
        })
    }

    fn ensure_network(&self, net: Network) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || ingot_runtime::net::bridge::ensure(&net))
                .await
                .map_err(|e| DeployError::Daemon(e.to_string()))??;
            Ok(())
        })
    }

    fn remove_network(&self, net: Network) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || ingot_runtime::net::bridge::remove(&net))
                .await
                .map_err(|e| DeployError::Daemon(e.to_string()))??;
            Ok(())
        })
    }

    fn is_running<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        let id = id.to_string();
        Box::pin(async move {
            self.query(move |s| Ok(ingot_runtime::is_running(s, &id).unwrap_or(false)))
                .await
                .unwrap_or(false)
        })
    }

    fn exit_code<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<i64>> {
        let id = id.to_string();
        Box::pin(async move {
            self.query(move |s| Ok(s.container(&id).ok().and_then(|c| c.exit_code)))
                .await
                .ok()
                .flatten()
        })
    }

    fn remove<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, ()> {
        let (id, root) = (id.to_string(), self.root.clone());
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(s) = Store::open(&root) {
                    let _ = ingot_runtime::stop(&s, &id, grace);
                    let _ = ingot_runtime::remove(&s, &id, true);
                }
            })
            .await;
        })
    }

    fn check<'a>(&'a self, id: &'a str, health: &'a Health) -> BoxFuture<'a, bool> {
        Box::pin(crate::health::check(&self.exe, &self.root, id, health))
    }

    fn reachable(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(crate::health::tcp(addr, timeout))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>>> {
        Box::pin(self.query(|s| {
            ingot_runtime::reconcile(s)?;
            Ok(s.containers()?
                .into_iter()
                .map(|c| Existing {
                    running: c.state == ContainerState::Running,
                    addresses: c.addresses(),
                    id: c.id,
                    name: c.name,
                })
                .collect())
        }))
    }
}
