//! Pinning: a parsed stack with every image resolved to its manifest
//! digest, every config to its content and digest, and every health check
//! to its final form (the image's HEALTHCHECK when the stack gives none).
//! The pinned stack is what the ledger records and what replicas run.

use std::collections::BTreeMap;
use std::path::Path;

use ingot_oci::Digest;
use ingot_store::Store;
use serde::{Deserialize, Serialize};

use crate::compose::{
    Condition, ConfigSource, EndpointMode, Health, MountType, NetworkDecl, Placement, Port, Resources, RestartPolicy,
    SecretSource, ServiceNetwork, StackDef, UpdatePolicy,
};
use crate::{DeployError, Result};

/// The most a config may hold (Swarm's limit is 500 KiB).
pub const MAX_CONFIG: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedStack {
    pub name: String,
    pub services: BTreeMap<String, PinnedService>,
    pub configs: BTreeMap<String, PinnedConfig>,
    /// Secrets by digest only: their values are in the daemon's store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, PinnedSecret>,
    /// Declared volumes (the ledger records declarations, never contents).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, PinnedVolume>,
    /// Declared networks; empty for a stack that names none (every service
    /// on the implicit `default`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkDecl>,
    /// Where it runs: this host's engine (the daemon), or a Docker Swarm.
    #[serde(default, skip_serializing_if = "EngineKind::is_local")]
    pub engine: EngineKind,
    /// The bundle (`crate::bundle`) this stack was deployed from: its
    /// manifest digest. The stack is that bundle's application with this
    /// host's secret digests and engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Digest>,
}

/// The engine a stack is deployed on: the same ledger, policy and pinning,
/// a different executor (the daemon's engine, or `crate::swarm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Local,
    Swarm,
}

impl EngineKind {
    pub fn is_local(&self) -> bool {
        *self == EngineKind::Local
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Local => "local",
            EngineKind::Swarm => "swarm",
        })
    }
}

/// A volume of the stack: its name on the host; `external` ones must exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedVolume {
    pub name: String,
    pub external: bool,
}

/// A service's mount: a volume (by host name), a host path, or a tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// The volume's host name, the absolute host path, or empty (tmpfs).
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// A volume seen empty is not filled with the image's content.
    #[serde(default)]
    pub nocopy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedSecret {
    pub digest: Digest,
}

/// A service's secret: the value of `digest`, read-only at `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretMount {
    pub name: String,
    pub digest: Digest,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A secret's value, as the deploying client read it. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// The most a secret may hold (Swarm's limit).
pub const MAX_SECRET: usize = 500 << 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedConfig {
    pub digest: Digest,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMount {
    pub name: String,
    pub digest: Digest,
    pub target: String,
    /// With an owner or mode, the replica gets a copy of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedService {
    /// As written in the stack file.
    pub image: String,
    /// Its manifest digest.
    pub digest: Digest,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub ports: Vec<Port>,
    pub health: Option<Health>,
    pub replicas: u32,
    /// `deploy.mode: global`: one replica per node; not scaled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global: bool,
    /// vip (default) or dnsrr.
    #[serde(default, skip_serializing_if = "EndpointMode::is_vip")]
    pub endpoint_mode: EndpointMode,
    /// The image's EXPOSEd TCP ports: the first is the service's port on
    /// its virtual address when it publishes none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<u16>,
    pub update: UpdatePolicy,
    pub rollback: UpdatePolicy,
    pub restart: RestartPolicy,
    pub configs: Vec<ConfigMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Services of the stack this one starts after (`depends_on`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Condition>,
    /// Per-replica limits and reservations (`deploy.resources`).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// The service's labels (`deploy.labels`): on the service, not its
    /// replicas, so changing them restarts nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Which nodes of a cluster may run it (`deploy.placement`; Swarm only).
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    /// Its networks, the primary first; empty: the stack's `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<ServiceNetwork>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stop_grace_ms: u64,
}

impl PinnedService {
    /// The networks its replicas join, the primary first.
    pub fn network_names(&self) -> Vec<String> {
        if self.networks.is_empty() {
            return vec![crate::compose::DEFAULT_NETWORK.to_string()];
        }
        self.networks.iter().map(|n| n.name.clone()).collect()
    }

    /// What a replica runs: everything but counts and rollout policies. Two
    /// services with the same version run identical replicas.
    pub fn version(&self) -> String {
        let mut v = serde_json::json!({
            "digest": self.digest, "command": self.command, "entrypoint": self.entrypoint,
            "env": self.env, "health": self.health, "configs": self.configs,
            "user": self.user, "workdir": self.workdir,
        });
        if !self.secrets.is_empty() {
            v["secrets"] = serde_json::json!(self.secrets);
        }
        if !self.mounts.is_empty() {
            v["mounts"] = serde_json::json!(self.mounts);
        }
        let limits = (self.resources.memory, self.resources.cpus, self.resources.pids);
        if limits != (None, None, None) {
            v["limits"] = serde_json::json!(limits);
        }
        if !self.networks.is_empty() {
            v["networks"] = serde_json::json!(self.network_names());
        }
        let bytes = ingot_oci::config::canonical_json(&v).unwrap_or_default();
        Digest::sha256(&bytes).hex()[..12].to_string()
    }
}

impl PinnedStack {
    /// Its services' dependencies (service -> services it starts after).
    fn dependencies(&self) -> BTreeMap<&str, Vec<&str>> {
        self.services
            .iter()
            .map(|(n, s)| (n.as_str(), s.depends_on.keys().map(String::as_str).collect()))
            .collect()
    }

    /// The order its services start and update in: each after the services
    /// it depends on (`depends_on`), else by name.
    pub fn start_order(&self) -> Vec<String> {
        crate::compose::start_order(&self.dependencies())
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// Refuses what this host's engine cannot honour: a stack meant for
    /// another engine, placement among a cluster's nodes.
    pub fn runs_locally(&self) -> Result<()> {
        if !self.engine.is_local() {
            return Err(DeployError::Field {
                field: "stack.engine".into(),
                why: format!(
                    "{}: the daemon runs stacks on this host only (deploy with --engine {})",
                    self.engine, self.engine
                ),
            });
        }
        for (name, s) in &self.services {
            crate::compose::check_host_ports_one_node(&s.ports, s.replicas, s.global).map_err(|why| {
                DeployError::Field {
                    field: format!("services.{name}.ports"),
                    why,
                }
            })?;
            if !s.placement.is_empty() {
                return Err(DeployError::Field {
                    field: format!("services.{name}.deploy.placement"),
                    why: "placement chooses among a cluster's nodes; the local engine has one (deploy with --engine swarm, or remove it)".into(),
                });
            }
        }
        Ok(())
    }

    pub fn canonical(&self) -> Vec<u8> {
        ingot_oci::config::canonical_json(self).unwrap_or_default()
    }

    pub fn digest(&self) -> String {
        Digest::sha256(&self.canonical()).to_string()
    }
}

/// Pins `def` as stack `name`; config and secret files are read relative
/// to `dir`. The secrets' values come back beside the stack (which names
/// their digests only), to be sent to the daemon with it.
pub fn pin(
    store: &Store,
    name: &str,
    def: &StackDef,
    dir: &Path,
) -> Result<(PinnedStack, BTreeMap<String, SecretValue>)> {
    pin_with(store, name, def, dir, true)
}

/// [`pin`] for a bundle: the secrets' values are not read (a bundle names
/// secrets only; `crate::bundle::application` drops their digests).
pub fn pin_for_bundle(store: &Store, name: &str, def: &StackDef, dir: &Path) -> Result<PinnedStack> {
    Ok(pin_with(store, name, def, dir, false)?.0)
}

/// The value of secret `name` from its source: a file (relative to `dir`)
/// or an environment variable of this process.
pub fn secret_value(name: &str, src: &SecretSource, dir: &Path) -> Result<SecretValue> {
    let bytes = match src {
        SecretSource::File(f) => {
            let path = dir.join(f);
            std::fs::read(&path)
                .map_err(|e| DeployError::Invalid(format!("secrets.{name}: {}: {e}", path.display())))?
        }
        SecretSource::Environment(var) => std::env::var_os(var)
            .ok_or_else(|| DeployError::Invalid(format!("secrets.{name}: environment variable {var} is not set")))?
            .into_encoded_bytes(),
    };
    if bytes.len() > MAX_SECRET {
        return Err(DeployError::Invalid(format!(
            "secrets.{name}: {} bytes, more than {MAX_SECRET}",
            bytes.len()
        )));
    }
    Ok(SecretValue(bytes))
}

fn pin_with(
    store: &Store,
    name: &str,
    def: &StackDef,
    dir: &Path,
    read_secrets: bool,
) -> Result<(PinnedStack, BTreeMap<String, SecretValue>)> {
    check_stack_name(name).map_err(|why| DeployError::Invalid(format!("stack name {name:?}: {why}")))?;
    let mut configs = BTreeMap::new();
    for (cname, src) in &def.configs {
        let content = match src {
            ConfigSource::Content(t) => t.clone(),
            ConfigSource::File(f) => {
                let path = dir.join(f);
                let bytes = std::fs::read(&path)
                    .map_err(|e| DeployError::Invalid(format!("configs.{cname}: {}: {e}", path.display())))?;
                if bytes.len() > MAX_CONFIG {
                    return Err(DeployError::Invalid(format!(
                        "configs.{cname}: {} is {} bytes, more than {MAX_CONFIG}",
                        path.display(),
                        bytes.len()
                    )));
                }
                String::from_utf8(bytes).map_err(|_| {
                    DeployError::Invalid(format!("configs.{cname}: {} is not UTF-8 text", path.display()))
                })?
            }
        };
        configs.insert(
            cname.clone(),
            PinnedConfig {
                digest: Digest::sha256(content.as_bytes()),
                content,
            },
        );
    }
    let mut values = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for (sname, src) in &def.secrets {
        // Unread for a bundle: its secrets travel by name only.
        let value = match read_secrets {
            true => secret_value(sname, src, dir)?,
            false => SecretValue(Vec::new()),
        };
        secrets.insert(
            sname.clone(),
            PinnedSecret {
                digest: Digest::sha256(&value.0),
            },
        );
        values.insert(sname.clone(), value);
    }
    let volumes: BTreeMap<String, PinnedVolume> = def
        .volumes
        .iter()
        .map(|(key, d)| {
            let name = match (&d.name, d.external) {
                (Some(n), _) => n.clone(),
                (None, true) => key.clone(),
                (None, false) => format!("{name}_{key}"),
            };
            (
                key.clone(),
                PinnedVolume {
                    name,
                    external: d.external,
                },
            )
        })
        .collect();
    let mut services = BTreeMap::new();
    for s in &def.services {
        let mut mounts = Vec::new();
        for (i, m) in s.mounts.iter().enumerate() {
            let source = match m.kind {
                MountType::Volume => volumes[&m.source].name.clone(),
                MountType::Tmpfs => String::new(),
                MountType::Bind => {
                    let path = dir.join(&m.source);
                    let abs = std::fs::canonicalize(&path).map_err(|e| {
                        DeployError::Invalid(format!("services.{}.volumes[{i}]: {}: {e}", s.name, path.display()))
                    })?;
                    abs.to_str()
                        .ok_or_else(|| {
                            DeployError::Invalid(format!(
                                "services.{}.volumes[{i}]: {} is not UTF-8",
                                s.name,
                                abs.display()
                            ))
                        })?
                        .to_string()
                }
            };
            mounts.push(Mount {
                kind: m.kind.clone(),
                source,
                target: m.target.clone(),
                read_only: m.read_only,
                nocopy: m.nocopy,
            });
        }
        let img = store.resolve(&s.image).map_err(|e| match e {
            ingot_store::StoreError::ImageNotFound(_) => DeployError::NotFound(format!(
                "service {}: image {:?} is not in the store (build, pull or load it first)",
                s.name, s.image
            )),
            e => e.into(),
        })?;
        let health = match &s.health {
            Some(h) => h.clone(),
            None => image_health(store, &img)?,
        };
        let expose = image_expose(store, &img)?;
        services.insert(
            s.name.clone(),
            PinnedService {
                image: s.image.clone(),
                digest: img.digest.clone(),
                command: s.command.clone(),
                entrypoint: s.entrypoint.clone(),
                env: s.env.clone(),
                ports: s.ports.clone(),
                health,
                replicas: s.replicas,
                global: s.global,
                endpoint_mode: s.endpoint_mode,
                expose,
                update: s.update.clone(),
                rollback: s.rollback.clone(),
                restart: s.restart.clone(),
                configs: s
                    .configs
                    .iter()
                    .map(|c| ConfigMount {
                        name: c.name.clone(),
                        digest: configs[&c.name].digest.clone(),
                        target: c.target.clone(),
                        uid: c.uid,
                        gid: c.gid,
                        mode: c.mode,
                    })
                    .collect(),
                secrets: s
                    .secrets
                    .iter()
                    .map(|u| SecretMount {
                        name: u.name.clone(),
                        digest: secrets[&u.name].digest.clone(),
                        target: u.target.clone(),
                        uid: u.uid,
                        gid: u.gid,
                        mode: u.mode,
                    })
                    .collect(),
                mounts,
                depends_on: s.depends_on.clone(),
                resources: s.resources.clone(),
                labels: s.labels.clone(),
                placement: s.placement.clone(),
                networks: s.networks.clone(),
                user: s.user.clone(),
                workdir: s.workdir.clone(),
                stop_grace_ms: s.stop_grace_ms,
            },
        );
    }
    Ok((
        PinnedStack {
            name: name.to_string(),
            services,
            configs,
            secrets,
            volumes,
            networks: def.networks.clone(),
            engine: Default::default(),
            bundle: None,
        },
        values,
    ))
}

/// The image's EXPOSEd TCP ports, lowest first.
fn image_expose(store: &Store, img: &ingot_store::Image) -> Result<Vec<u16>> {
    let Some((_, config)) = store.config(&img.manifest)? else {
        return Ok(Vec::new());
    };
    let mut ports: Vec<u16> = config
        .config
        .as_ref()
        .and_then(|c| c["ExposedPorts"].as_object().cloned())
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| {
            let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The image's HEALTHCHECK, as a pinned health check.
fn image_health(store: &Store, img: &ingot_store::Image) -> Result<Option<Health>> {
    let Some((_, config)) = store.config(&img.manifest)? else {
        return Ok(None);
    };
    let h = &config
        .config
        .as_ref()
        .map(|c| c["Healthcheck"].clone())
        .unwrap_or_default();
    let test: Vec<String> = h["Test"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let test = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        _ => return Ok(None),
    };
    let ns = |k: &str, d: u64| h[k].as_u64().filter(|n| *n > 0).map_or(d, |n| n / 1_000_000);
    Ok(Some(Health {
        test,
        interval_ms: ns("Interval", 30_000),
        timeout_ms: ns("Timeout", 30_000),
        retries: h["Retries"].as_u64().filter(|n| *n > 0).unwrap_or(3) as u32,
        start_period_ms: ns("StartPeriod", 0),
        start_interval_ms: h["StartInterval"]
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| (n / 1_000_000).max(1)),
    }))
}

/// A config's or secret's mount: the stack's object of that name, with
/// that digest, at a target of its own; Err is (field, why).
fn check_file_mount<'a>(
    what: &str,
    name: &str,
    digest: &Digest,
    known: Option<&Digest>,
    target: &'a str,
    mode: Option<u32>,
    targets: &mut std::collections::BTreeSet<&'a str>,
) -> std::result::Result<(), (&'static str, String)> {
    let Some(known) = known else {
        return Err(("name", format!("{what} {name:?} is not one of the stack's {what}s")));
    };
    if known != digest {
        return Err(("digest", format!("{digest} is not {what} {name}'s digest {known}")));
    }
    check_target(target, mode, targets)
}

/// A mount's target: absolute, normalised, not /, not taken by another
/// mount of the service; a mode within 0777.
fn check_target<'a>(
    target: &'a str,
    mode: Option<u32>,
    targets: &mut std::collections::BTreeSet<&'a str>,
) -> std::result::Result<(), (&'static str, String)> {
    check_container_path(target).map_err(|e| ("target", e))?;
    if target == "/" || !targets.insert(target) {
        return Err(("target", format!("{target:?} is / or mounted twice")));
    }
    match mode {
        Some(m) if m > 0o777 => Err(("mode", format!("{m:o} is more than 0777"))),
        _ => Ok(()),
    }
}

/// Limits and reservations within what a cgroup can take.
fn check_resources(r: &Resources) -> std::result::Result<(), String> {
    for (what, c) in [("cpus", r.cpus), ("reserve_cpus", r.reserve_cpus)] {
        if c.is_some_and(|c| !c.is_finite() || c <= 0.0 || c > 1024.0) {
            return Err(format!("{what}: not a number of CPUs above 0"));
        }
    }
    for (what, m) in [("memory", r.memory), ("reserve_memory", r.reserve_memory)] {
        if m.is_some_and(|m| m < 6 << 20) {
            return Err(format!("{what}: less than 6 MiB"));
        }
    }
    if r.pids.is_some_and(|p| p <= 0) {
        return Err("pids: not a positive number".into());
    }
    Ok(())
}

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 1000;
/// The longest duration a stack may give (a day), in milliseconds.
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;

/// Services are named `STACK_SERVICE`, so a stack name is a Compose name without '_'.
pub fn check_stack_name(name: &str) -> std::result::Result<(), String> {
    if crate::compose::valid_name(name) && !name.contains('_') {
        Ok(())
    } else {
        Err("letters, digits and '-', starting with a letter or digit, at most 63".into())
    }
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if crate::compose::valid_name(name) {
        Ok(())
    } else {
        Err("letters, digits, '_' and '-', starting with a letter or digit, at most 63".into())
    }
}

/// An absolute, normalised path inside a container: `/` then components
/// that are neither empty, `.` nor `..`, without NUL (what
/// `ingot_runtime::spec::clean_target` makes of a user's path).
pub fn check_container_path(p: &str) -> std::result::Result<(), String> {
    let clean = ingot_runtime::spec::clean_target(p, "path").map_err(|e| e.to_string())?;
    if p.contains('\0') {
        return Err("contains NUL".into());
    }
    if clean != p {
        return Err(format!("not normalised (expected {clean:?})"));
    }
    Ok(())
}

fn check_text(s: &str, max: usize) -> std::result::Result<(), String> {
    if s.contains('\0') {
        Err("contains NUL".into())
    } else if s.len() > max {
        Err(format!("longer than {max} bytes"))
    } else {
        Ok(())
    }
}

fn check_ms(ms: u64) -> std::result::Result<(), String> {
    if ms > MAX_DURATION_MS {
        Err(format!("{ms} ms is more than a day"))
    } else {
        Ok(())
    }
}

impl PinnedStack {
    /// Re-checks every field of a pinned stack that came from outside the
    /// daemon (the API), with the parsers the CLI's path uses: names,
    /// digests (typed on parse, here checked against the store and against
    /// the config contents), container paths, ports, durations. The error
    /// names the first bad field, as `stack.services.web.configs[0].target`.
    pub fn validate(&self, store: &Store) -> Result<()> {
        let field = |f: String| move |why: String| DeployError::Field { field: f.clone(), why };
        check_stack_name(&self.name).map_err(field("stack.name".into()))?;
        // A stack said to come from a bundle must be that bundle's.
        crate::bundle::check(store, self)?;
        for (name, c) in &self.configs {
            let at = format!("stack.configs.{name}");
            check_name(name).map_err(field(at.clone()))?;
            if c.content.len() > MAX_CONFIG {
                return Err(field(format!("{at}.content"))(format!(
                    "{} bytes, more than {MAX_CONFIG}",
                    c.content.len()
                )));
            }
            let actual = Digest::sha256(c.content.as_bytes());
            if actual != c.digest {
                return Err(field(format!("{at}.digest"))(format!(
                    "{} does not match the content, which hashes to {actual}",
                    c.digest
                )));
            }
        }
        for name in self.secrets.keys() {
            check_name(name).map_err(field(format!("stack.secrets.{name}")))?;
        }
        for (key, n) in &self.networks {
            check_name(key).map_err(field(format!("stack.networks.{key}")))?;
            if let Some(sub) = &n.subnet {
                crate::compose::parse_subnet(sub).map_err(field(format!("stack.networks.{key}.subnet")))?;
            }
        }
        for (key, v) in &self.volumes {
            if !ingot_store::valid_volume_name(&v.name) {
                return Err(field(format!("stack.volumes.{key}.name"))(format!(
                    "{:?} is not a volume name",
                    v.name
                )));
            }
        }
        if let Some(cycle) = crate::compose::dependency_cycle(&self.dependencies()) {
            return Err(field("stack.services".into())(format!(
                "depends_on: a cycle: {}",
                cycle.join(" -> ")
            )));
        }
        let mut published = BTreeMap::new();
        for (name, s) in &self.services {
            let at = |f: &str| format!("stack.services.{name}{f}");
            check_name(name).map_err(field(at("")))?;
            if !crate::compose::valid_name(&format!("{}_{name}", self.name)) {
                return Err(field(at(""))("STACK_SERVICE is longer than 63 characters".into()));
            }
            check_text(&s.image, 1024).map_err(field(at(".image")))?;
            store.image(&s.digest).map_err(|_| {
                field(at(".digest"))(format!(
                    "{} is not an image in the daemon's store (push, pull or load it first)",
                    s.digest
                ))
            })?;
            for (i, a) in s.command.iter().flatten().enumerate() {
                check_text(a, 64 << 10).map_err(field(at(&format!(".command[{i}]"))))?;
            }
            for (i, a) in s.entrypoint.iter().flatten().enumerate() {
                check_text(a, 64 << 10).map_err(field(at(&format!(".entrypoint[{i}]"))))?;
            }
            for (i, e) in s.env.iter().enumerate() {
                let f = field(at(&format!(".env[{i}]")));
                check_text(e, 64 << 10).map_err(&f)?;
                match e.split_once('=') {
                    Some((k, _)) if !k.is_empty() => {}
                    _ => return Err(f("expected NAME=VALUE".into())),
                }
            }
            for (i, p) in s.ports.iter().enumerate() {
                let f = field(at(&format!(".ports[{i}]")));
                let ip: std::net::IpAddr = p
                    .host_ip
                    .parse()
                    .map_err(|_| f(format!("host address {:?} is not an IP address", p.host_ip)))?;
                if p.published == 0 || p.target == 0 {
                    return Err(f("port 0".into()));
                }
                if let Some(other) = published.insert((ip, p.published, p.protocol), name) {
                    return Err(f(format!(
                        "port {}/{} is also published by service {other}",
                        p.published, p.protocol
                    )));
                }
            }
            crate::compose::check_host_ports(&s.ports, &s.update, &s.rollback).map_err(field(at(".ports")))?;
            if let Some(h) = &s.health {
                let f = |x: &str| field(at(&format!(".health.{x}")));
                if h.test.is_empty() {
                    return Err(f("test")("empty command".into()));
                }
                for a in &h.test {
                    check_text(a, 64 << 10).map_err(f("test"))?;
                }
                for (n, v) in [("interval_ms", h.interval_ms), ("timeout_ms", h.timeout_ms)] {
                    if v == 0 {
                        return Err(f(n)("must be more than 0".into()));
                    }
                    check_ms(v).map_err(f(n))?;
                }
                check_ms(h.start_period_ms).map_err(f("start_period_ms"))?;
                if let Some(ms) = h.start_interval_ms {
                    check_ms(ms).map_err(f("start_interval_ms"))?;
                }
                if h.retries == 0 || h.retries > 1000 {
                    return Err(f("retries")(format!("{} is not in 1..=1000", h.retries)));
                }
            }
            if s.global && s.replicas != 1 {
                return Err(field(at(".replicas"))(
                    "a global service has one replica on this node".into(),
                ));
            }
            if s.replicas > MAX_REPLICAS {
                return Err(field(at(".replicas"))(format!(
                    "{} is more than {MAX_REPLICAS}",
                    s.replicas
                )));
            }
            for (what, u) in [("update", &s.update), ("rollback", &s.rollback)] {
                let f = |x: &str| field(at(&format!(".{what}.{x}")));
                check_ms(u.delay_ms).map_err(f("delay_ms"))?;
                check_ms(u.monitor_ms).map_err(f("monitor_ms"))?;
                if !(0.0..=1.0).contains(&u.max_failure_ratio) {
                    return Err(f("max_failure_ratio")(format!(
                        "{} is not in 0..=1",
                        u.max_failure_ratio
                    )));
                }
            }
            check_ms(s.restart.delay_ms).map_err(field(at(".restart.delay_ms")))?;
            check_ms(s.stop_grace_ms).map_err(field(at(".stop_grace_ms")))?;
            let mut targets = std::collections::BTreeSet::new();
            for (i, c) in s.configs.iter().enumerate() {
                let known = self.configs.get(&c.name).map(|p| &p.digest);
                check_file_mount("config", &c.name, &c.digest, known, &c.target, c.mode, &mut targets)
                    .map_err(|(x, why)| field(at(&format!(".configs[{i}].{x}")))(why))?;
            }
            check_resources(&s.resources).map_err(field(at(".resources")))?;
            for (i, c) in s.placement.constraints.iter().enumerate() {
                crate::compose::check_constraint(c).map_err(field(at(&format!(".placement.constraints[{i}]"))))?;
            }
            for (k, v) in &s.labels {
                if k.is_empty() || k.len() > 256 || v.len() > 4096 {
                    return Err(field(at(&format!(".labels.{k}")))(
                        "a name of 1 to 256 and a value of at most 4096 characters".into(),
                    ));
                }
                check_text(v, 4096).map_err(field(at(&format!(".labels.{k}"))))?;
            }
            for (i, m) in s.secrets.iter().enumerate() {
                let known = self.secrets.get(&m.name).map(|p| &p.digest);
                check_file_mount(
                    "secret",
                    &m.name,
                    &m.digest,
                    known,
                    &m.target,
                    Some(m.mode),
                    &mut targets,
                )
                .map_err(|(x, why)| field(at(&format!(".secrets[{i}].{x}")))(why))?;
            }
            for (i, m) in s.mounts.iter().enumerate() {
                let f = |x: &str| field(at(&format!(".mounts[{i}].{x}")));
                match m.kind {
                    MountType::Volume if !self.volumes.values().any(|v| v.name == m.source) => {
                        return Err(f("source")(format!("{:?} is not one of the stack's volumes", m.source)));
                    }
                    MountType::Bind
                        if !m.source.starts_with('/') || m.source.contains("/../") || m.source.ends_with("/..") =>
                    {
                        return Err(f("source")(format!(
                            "{:?} is not an absolute, normalised host path",
                            m.source
                        )));
                    }
                    MountType::Tmpfs if !m.source.is_empty() => {
                        return Err(f("source")("a tmpfs has no source".into()));
                    }
                    _ => {}
                }
                check_target(&m.target, None, &mut targets).map_err(|(x, why)| f(x)(why))?;
            }
            for (i, n) in s.networks.iter().enumerate() {
                let known = self.networks.contains_key(&n.name);
                if !known || s.networks[..i].iter().any(|o| o.name == n.name) {
                    return Err(field(at(&format!(".networks[{i}]")))(format!(
                        "{:?} is not one of the stack's networks, or is listed twice",
                        n.name
                    )));
                }
                for a in &n.aliases {
                    check_name(a).map_err(field(at(&format!(".networks[{i}].aliases"))))?;
                }
            }
            if s.networks.is_empty()
                && !self.networks.is_empty()
                && !self.networks.contains_key(crate::compose::DEFAULT_NETWORK)
            {
                return Err(field(at(".networks"))(
                    "the stack declares networks but not default, which this service would join".into(),
                ));
            }
            for d in s.depends_on.keys() {
                if d == name || !self.services.contains_key(d) {
                    return Err(field(at(".depends_on"))(format!(
                        "{d:?} is not another service of the stack"
                    )));
                }
            }
            if let Some(u) = &s.user {
                let ok = !u.is_empty()
                    && u.len() <= 256
                    && u.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
                if !ok {
                    return Err(field(at(".user"))(format!(
                        "{u:?}: expected NAME or UID[:GROUP] (letters, digits, '_', '-', '.')"
                    )));
                }
            }
            if let Some(w) = &s.workdir {
                check_container_path(w).map_err(field(at(".workdir")))?;
            }
        }
        Ok(())
    }

    /// Parses a pinned stack sent to the daemon (unknown fields refused,
    /// digests typed) and validates it against `store`; errors name the field.
    pub fn from_request(value: serde_json::Value, store: &Store) -> Result<PinnedStack> {
        let stack: PinnedStack = serde_path_to_error::deserialize(value).map_err(|e| DeployError::Field {
            field: format!("stack.{}", e.path()),
            why: e.into_inner().to_string(),
        })?;
        stack.validate(store)?;
        Ok(stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose;

    /// A store holding one image, and a stack pinned to it the CLI's way.
    fn fixture() -> (tempfile::TempDir, Store, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let tar = ingot_testsupport::sample_rootfs(4096, 1);
        let r: ingot_oci::reference::Reference = "app:1".parse().unwrap();
        ingot_store::import_rootfs(&mut store, &tar[..], "t.tar", &r, &Default::default()).unwrap();
        std::fs::write(dir.path().join("g.txt"), "hello\n").unwrap();
        let def = compose::parse(
            "s.yml",
            "services:\n  web:\n    image: app:1\n    working_dir: /srv\n    ports: [\"127.0.0.1:8080:80\"]\n    configs:\n      - source: g\n        target: /etc/g.txt\nconfigs:\n  g:\n    file: ./g.txt\n",
        )
        .unwrap();
        let (pinned, _) = pin(&store, "demo", &def, dir.path()).unwrap();
        let v = serde_json::to_value(&pinned).unwrap();
        (dir, store, v)
    }

    /// Parses and validates `v` as the daemon does; the error text.
    fn refused(store: &Store, v: serde_json::Value) -> String {
        match PinnedStack::from_request(v, store) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn edit(v: &serde_json::Value, path: &str, to: serde_json::Value) -> serde_json::Value {
        let mut v = v.clone();
        *v.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = to;
        v
    }

    #[test]
    fn what_the_cli_pins_passes() {
        let (_d, store, v) = fixture();
        let s = PinnedStack::from_request(v.clone(), &store).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), v, "a round trip changes nothing");
    }

    #[test]
    fn hostile_fields_are_refused_by_name() {
        let (_d, store, v) = fixture();
        let cfg = v["configs"]["g"]["digest"].clone();
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            (
                "/configs/g/digest",
                "sha256:../../../../tmp/x".into(),
                "configs.g.digest",
            ),
            (
                "/services/web/configs/0/digest",
                "sha256:../../../../tmp/x".into(),
                "configs[0].digest",
            ),
            ("/services/web/digest", "app:1".into(), "services.web.digest"),
            (
                "/services/web/digest",
                format!("sha256:{}", "ab".repeat(32)).into(),
                "not an image in the daemon's store",
            ),
            ("/configs/g/content", "other\n".into(), "does not match the content"),
            (
                "/services/web/configs/0/target",
                "/etc/../../x".into(),
                "configs[0].target",
            ),
            ("/services/web/configs/0/target", "etc/g".into(), "configs[0].target"),
            ("/services/web/configs/0/target", "/etc//g".into(), "not normalised"),
            ("/services/web/configs/0/name", "nope".into(), "configs[0].name"),
            ("/services/web/workdir", "/srv/../..".into(), "services.web.workdir"),
            ("/services/web/ports/0/host_ip", "localhost; rm".into(), "ports[0]"),
            ("/services/web/env", serde_json::json!(["=x"]), "env[0]"),
            ("/services/web/user", "root\nx".into(), "services.web.user"),
            (
                "/services/web/replicas",
                4_000_000_000u32.into(),
                "services.web.replicas",
            ),
            ("/services/web/update/max_failure_ratio", 7.into(), "max_failure_ratio"),
            ("/name", "../../etc".into(), "stack.name"),
            ("/name", "a_b".into(), "stack.name"),
        ];
        for (path, to, expect) in cases {
            let e = refused(&store, edit(&v, path, to.clone()));
            assert!(e.contains(expect), "{path} = {to}: {e}");
        }
        // Digests are typed: a tag or a traversal fails to parse, naming the field.
        let e = refused(&store, edit(&v, "/configs/g/digest", "sha256:../../../../tmp/x".into()));
        assert!(e.starts_with("stack.configs.g.digest"), "{e}");
        // Unknown fields (an actor among them) are refused.
        let mut extra = v.clone();
        extra["services"]["web"]["privileged"] = true.into();
        assert!(refused(&store, extra).contains("privileged"));
        // A mount must carry its config's digest, not another valid one.
        let other = Digest::sha256(b"x").to_string();
        let e = refused(&store, edit(&v, "/services/web/configs/0/digest", other.into()));
        assert!(
            e.contains("configs[0].digest") && e.contains(cfg.as_str().unwrap()),
            "{e}"
        );
    }

    #[test]
    fn container_paths() {
        for ok in ["/a", "/a/b", "/etc/x.conf"] {
            check_container_path(ok).unwrap();
        }
        for bad in ["", "a", "/a/", "/a//b", "/a/./b", "/a/../b", "/..", "/a\0"] {
            assert!(check_container_path(bad).is_err(), "{bad:?}");
        }
    }
}
