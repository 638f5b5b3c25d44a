//! Stacks in the Compose format: the subset a Swarm stack uses, parsed
//! strictly. An unknown field is an error naming it (a typo must not be
//! silently ignored); `x-*` extension fields are allowed anywhere Compose
//! allows them. Errors carry the file, line and column.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{DeployError, Result};

/// Unknown fields of this and [`Service`] land in `extensions` and are
/// refused unless they start with `x-` (serde cannot combine
/// `deny_unknown_fields` with `flatten`).
#[derive(Debug, Clone, Deserialize)]
pub struct ComposeFile {
    /// Obsolete in the Compose spec; accepted and ignored.
    #[serde(default)]
    pub version: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub name: Option<String>,
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub configs: BTreeMap<String, ConfigDef>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretDef>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<VolumeDef>>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<NetworkDef>>,
    #[serde(flatten)]
    pub extensions: BTreeMap<String, serde_yaml_ng::Value>,
}

/// A top-level network: a bridge and subnet of the stack's own on this
/// host (`overlay`, a Swarm stack's usual driver, is the same here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub internal: Option<bool>,
    #[serde(default)]
    pub ipam: Option<IpamDef>,
    #[serde(default)]
    pub external: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamDef {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamConfig {
    pub subnet: String,
}

/// A declared network, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDecl {
    /// No egress.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// `ADDRESS/PREFIX`, when the stack gives one (else ingot picks a /24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// The network every service without `networks` joins.
pub const DEFAULT_NETWORK: &str = "default";

/// One of a service's networks, with the extra names it has there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceNetworkDef {
    #[serde(default)]
    aliases: Vec<String>,
}

/// `ADDRESS/PREFIX` with a prefix of 8 to 29 and a zero host part.
pub fn parse_subnet(s: &str) -> std::result::Result<(std::net::Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("subnet {s:?} is not ADDRESS/PREFIX"))?;
    let addr: std::net::Ipv4Addr = a
        .parse()
        .map_err(|_| format!("subnet {s:?}: {a:?} is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .map_err(|_| format!("subnet {s:?}: {p:?} is not a prefix length"))?;
    if !(8..=29).contains(&prefix) {
        return Err(format!("subnet {s:?}: the prefix must be 8 to 29 bits"));
    }
    if u32::from(addr) & !(u32::MAX << (32 - prefix)) != 0 {
        return Err(format!("subnet {s:?}: the host part of the address is not zero"));
    }
    Ok((addr, prefix))
}

/// A service's `networks`: a list of names, or a map of name to
/// `{aliases}` (or nothing); order kept (the first is the primary).
fn service_networks(v: &serde_yaml_ng::Value) -> std::result::Result<Vec<ServiceNetwork>, String> {
    let mut out: Vec<ServiceNetwork> = Vec::new();
    match v {
        serde_yaml_ng::Value::Sequence(items) => {
            for i in items {
                let name = i.as_str().ok_or("a list entry is not a network name")?;
                out.push(ServiceNetwork {
                    name: name.to_string(),
                    aliases: Vec::new(),
                });
            }
        }
        serde_yaml_ng::Value::Mapping(m) => {
            for (k, v) in m {
                let name = k.as_str().ok_or("a key is not a network name")?;
                let def: ServiceNetworkDef = if v.is_null() {
                    ServiceNetworkDef::default()
                } else {
                    serde_yaml_ng::from_value(v.clone()).map_err(|e| format!("{name}: {e}"))?
                };
                for a in &def.aliases {
                    if !valid_name(a) {
                        return Err(format!(
                            "{name}.aliases: {a:?} is not a name (letters, digits, '-' and '_')"
                        ));
                    }
                }
                out.push(ServiceNetwork {
                    name: name.to_string(),
                    aliases: def.aliases,
                });
            }
        }
        _ => return Err("expected a list of network names or a map".into()),
    }
    for (i, n) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.name == n.name) {
            return Err(format!("{} is listed twice", n.name));
        }
    }
    if out.is_empty() {
        return Err("an empty list leaves the service without a network".into());
    }
    Ok(out)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub image: String,
    #[serde(default)]
    pub command: Option<StringOrList>,
    #[serde(default)]
    pub entrypoint: Option<StringOrList>,
    #[serde(default)]
    pub environment: Option<Environment>,
    #[serde(default)]
    pub ports: Vec<PortDef>,
    #[serde(default)]
    pub healthcheck: Option<HealthcheckDef>,
    #[serde(default)]
    pub deploy: Option<DeployDef>,
    #[serde(default)]
    pub configs: Vec<ServiceConfigDef>,
    #[serde(default)]
    pub secrets: Vec<ServiceConfigDef>,
    #[serde(default)]
    pub volumes: Vec<ServiceVolumeDef>,
    #[serde(default)]
    pub tmpfs: Option<StringOrList>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_grace_period: Option<String>,
    #[serde(default)]
    pub depends_on: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub networks: Option<serde_yaml_ng::Value>,
    #[serde(flatten)]
    pub extensions: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    Map(BTreeMap<String, Option<serde_yaml_ng::Value>>),
    List(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortDef {
    Short(serde_yaml_ng::Value),
    Long(LongPort),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPort {
    pub target: u16,
    pub published: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    /// Compose's hint of the application protocol: `h2c` (or `grpc`) makes
    /// the mesh speak HTTP/2 to the replicas.
    #[serde(default)]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckDef {
    #[serde(default)]
    pub test: Option<StringOrList>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub start_period: Option<String>,
    #[serde(default)]
    pub start_interval: Option<String>,
    #[serde(default)]
    pub disable: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployDef {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub endpoint_mode: Option<String>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub update_config: Option<UpdateDef>,
    #[serde(default)]
    pub rollback_config: Option<UpdateDef>,
    #[serde(default)]
    pub restart_policy: Option<RestartDef>,
    #[serde(default)]
    pub labels: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub resources: Option<ResourcesDef>,
    #[serde(default)]
    pub placement: Option<PlacementDef>,
}

/// `deploy.placement`: which nodes of a cluster may run the replicas.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementDef {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub max_replicas_per_node: Option<u32>,
}

/// A service's placement on a cluster's nodes (Swarm's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// `node.role == manager`, `node.labels.zone != b`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u32>,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.max_replicas_per_node.is_none()
    }
}

/// Checks one placement constraint: `ATTRIBUTE == VALUE` or `!=`, the
/// attribute `node.id`, `node.hostname`, `node.role`, `node.platform.os`,
/// `node.platform.arch`, `node.labels.KEY` or `engine.labels.KEY`.
pub fn check_constraint(c: &str) -> std::result::Result<(), String> {
    let (attr, value) = c
        .split_once("==")
        .or_else(|| c.split_once("!="))
        .ok_or_else(|| format!("{c:?}: expected ATTRIBUTE == VALUE or ATTRIBUTE != VALUE"))?;
    let (attr, value) = (attr.trim(), value.trim());
    let known = [
        "node.id",
        "node.hostname",
        "node.role",
        "node.platform.os",
        "node.platform.arch",
    ];
    let labelled = ["node.labels.", "engine.labels."]
        .iter()
        .any(|p| attr.strip_prefix(p).is_some_and(|k| !k.is_empty()));
    if !known.contains(&attr) && !labelled {
        return Err(format!(
            "{c:?}: unknown attribute {attr:?} (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY, engine.labels.KEY)"
        ));
    }
    if value.is_empty() || value.len() > 256 || value.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
        return Err(format!("{c:?}: the value must be 1 to 256 characters without spaces"));
    }
    Ok(())
}

/// `deploy.resources`: limits applied to each replica's cgroup;
/// reservations checked against what the host has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDef {
    #[serde(default)]
    pub limits: Option<ResourceSpec>,
    #[serde(default)]
    pub reservations: Option<ResourceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(default)]
    pub cpus: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub pids: Option<i64>,
}

/// A service's resources, parsed: per-replica limits and reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Memory reserved per replica, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_cpus: Option<f64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDef {
    #[serde(default)]
    pub parallelism: Option<u32>,
    #[serde(default)]
    pub delay: Option<String>,
    #[serde(default)]
    pub failure_action: Option<String>,
    #[serde(default)]
    pub monitor: Option<String>,
    #[serde(default)]
    pub max_failure_ratio: Option<f64>,
    #[serde(default)]
    pub order: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartDef {
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub delay: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub window: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServiceConfigDef {
    Short(String),
    Long(LongConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongConfig {
    pub source: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub gid: Option<String>,
    #[serde(default)]
    pub mode: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDef {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub external: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A top-level volume: ingot's own (`STACK_NAME`, made on first deploy,
/// kept after `stack rm`), or `external` (one that exists already).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub external: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A service's `volumes` entry: `SOURCE:TARGET[:ro|rw]` or the long form.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServiceVolumeDef {
    Short(String),
    Long(LongVolume),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongVolume {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub volume: Option<VolumeOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    #[serde(default)]
    pub nocopy: Option<bool>,
}

/// A declared volume: its name on this host (ingot's `STACK_KEY`, or an
/// external volume's own name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDecl {
    pub external: bool,
    /// An external volume's name, when it differs from the key.
    pub name: Option<String>,
}

/// What a service mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A named volume of the stack.
    Volume,
    /// A host directory or file.
    Bind,
    /// A fresh tmpfs.
    Tmpfs,
}

/// One mount of a service (volume key, host path as written, or none for tmpfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountDef {
    pub kind: MountType,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub nocopy: bool,
}

/// A top-level secret: its value from a file or from an environment
/// variable of the deploying process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDef {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub external: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, relative to the stack file.
    File(String),
    /// An environment variable of the deploying process.
    Environment(String),
}

/// How the service's name resolves inside its stack (`deploy.endpoint_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One stable virtual address, served by the mesh (healthy replicas).
    #[default]
    Vip,
    /// The healthy replicas' own addresses.
    Dnsrr,
}

impl EndpointMode {
    pub fn is_vip(&self) -> bool {
        *self == EndpointMode::Vip
    }
}

/// When a dependency counts as there (`depends_on.X.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Its replicas started.
    ServiceStarted,
    /// Its replicas healthy (ready: health check, else port, else running).
    ServiceHealthy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DependsDef {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    restart: Option<bool>,
    #[serde(default)]
    required: Option<bool>,
}

/// `depends_on`: a list of services, or a map of service to
/// `{condition, restart, required}`.
fn depends_on(v: Option<&serde_yaml_ng::Value>) -> std::result::Result<BTreeMap<String, Condition>, String> {
    use serde_yaml_ng::Value as V;
    let mut out = BTreeMap::new();
    match v {
        None => {}
        Some(V::Sequence(items)) => {
            for item in items {
                let name = item.as_str().ok_or_else(|| format!("{item:?} is not a service name"))?;
                out.insert(name.to_string(), Condition::ServiceStarted);
            }
        }
        Some(V::Mapping(m)) => {
            for (k, v) in m {
                let name = k.as_str().ok_or_else(|| format!("{k:?} is not a service name"))?;
                let d: DependsDef = serde_yaml_ng::from_value(v.clone()).map_err(|e| format!("{name}: {e}"))?;
                let condition = match d.condition.as_deref() {
                    None | Some("service_started") => Condition::ServiceStarted,
                    Some("service_healthy") => Condition::ServiceHealthy,
                    Some("service_completed_successfully") => {
                        return Err(format!(
                            "{name}.condition: service_completed_successfully is not supported (a one-off job is not a stack service yet)"
                        ))
                    }
                    Some(other) => {
                        return Err(format!(
                            "{name}.condition: {other:?} is not service_started or service_healthy"
                        ))
                    }
                };
                if d.restart == Some(true) {
                    return Err(format!("{name}.restart: restarting dependents is not supported"));
                }
                if d.required == Some(false) {
                    return Err(format!("{name}.required: optional dependencies are not supported"));
                }
                out.insert(name.to_string(), condition);
            }
        }
        Some(other) => return Err(format!("{other:?} is neither a list nor a map")),
    }
    Ok(out)
}

/// A cycle among `deps` (service -> the services it depends on), as the
/// path that closes it (`a -> b -> a`), if there is one.
pub fn dependency_cycle<'a>(deps: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n);
        for d in deps.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n);
        None
    }
    let mut done = std::collections::BTreeSet::new();
    deps.keys().find_map(|n| visit(n, deps, &mut Vec::new(), &mut done))
}

/// The order services start in: each after what it depends on, else by
/// name (services in a cycle, which validation refuses, last).
pub fn start_order<'a>(deps: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<&'a str> {
    let mut order: Vec<&str> = Vec::new();
    while order.len() < deps.len() {
        let next = deps
            .iter()
            .find(|(n, ds)| !order.contains(n) && ds.iter().all(|d| order.contains(d) || !deps.contains_key(d)));
        match next {
            Some((n, _)) => order.push(n),
            None => {
                let rest: Vec<&str> = deps.keys().copied().filter(|n| !order.contains(n)).collect();
                order.extend(rest);
            }
        }
    }
    order
}

/// A service's use of a config: a read-only file at `target`; with an
/// owner or mode, a copy of its own (else the shared file, root's, 0444).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUse {
    pub name: String,
    pub target: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

/// A service's use of a secret: a read-only file at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub name: String,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Where a secret is mounted when its target is a bare name (as Docker).
pub const SECRETS_DIR: &str = "/run/secrets";
/// A secret's mode when none is given (readable by its owner only).
pub const SECRET_MODE: u32 = 0o400;

/// A published port: host address and port, the replicas' target port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Port {
    pub host_ip: String,
    pub published: u16,
    pub target: u16,
    #[serde(default, skip_serializing_if = "is_tcp")]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "PortMode::is_ingress")]
    pub mode: PortMode,
    /// `ports[].app_protocol` as written (a hint; `h2c` and `grpc` are acted
    /// on: see [`Port::upstream`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl Port {
    /// The HTTP version the mesh speaks to the replicas behind this port:
    /// HTTP/2 with prior knowledge for `app_protocol: h2c` or `grpc`.
    pub fn upstream(&self) -> ingot_mesh::Upstream {
        match self.app_protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("h2c" | "grpc") => ingot_mesh::Upstream::H2c,
            _ => ingot_mesh::Upstream::Http1,
        }
    }
}

pub use ingot_runtime::net::Protocol;

fn is_tcp(p: &Protocol) -> bool {
    p.is_tcp()
}

/// Where a published port is served (`ports[].mode`, as Swarm's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// By the routing mesh, balanced over every healthy replica.
    #[default]
    Ingress,
    /// By the one replica on this node itself, no mesh in between.
    Host,
}

impl PortMode {
    pub fn is_ingress(&self) -> bool {
        *self == PortMode::Ingress
    }
}

impl Port {
    /// `IP:PUBLISHED->TARGET[/udp][ (host)]`.
    pub fn describe(&self) -> String {
        let mut d = format!("{}:{}->{}", self.host_ip, self.published, self.target);
        if !self.protocol.is_tcp() {
            d.push_str(&format!("/{}", self.protocol));
        }
        if self.mode == PortMode::Host {
            d.push_str(" (host)");
        }
        d
    }
}

/// What to do when an update fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Rollback,
    Pause,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    StartFirst,
    StopFirst,
}

/// update_config / rollback_config, with Swarm's defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    pub parallelism: u32,
    pub delay_ms: u64,
    pub failure_action: FailureAction,
    pub monitor_ms: u64,
    pub max_failure_ratio: f64,
    pub order: Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    pub max_attempts: Option<u32>,
}

/// A health check, resolved: the command (exec form) and its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
    /// How often a starting replica is probed during `start_period`
    /// (else every 100 ms, to roll out fast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval_ms: Option<u64>,
}

/// One service, checked and with defaults applied (images not yet pinned).
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub ports: Vec<Port>,
    /// `None`: the image's HEALTHCHECK (if any); `Some(None)`: disabled.
    pub health: Option<Option<Health>>,
    pub replicas: u32,
    /// `deploy.mode: global`: one replica per node (here, one).
    pub global: bool,
    pub endpoint_mode: EndpointMode,
    pub update: UpdatePolicy,
    pub rollback: UpdatePolicy,
    pub restart: RestartPolicy,
    pub configs: Vec<ConfigUse>,
    pub secrets: Vec<SecretUse>,
    pub mounts: Vec<MountDef>,
    /// Services of the stack this one starts after, and when.
    pub depends_on: BTreeMap<String, Condition>,
    pub resources: Resources,
    pub labels: BTreeMap<String, String>,
    pub placement: Placement,
    /// The networks it joins, the primary first; none: the stack's default.
    pub networks: Vec<ServiceNetwork>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stop_grace_ms: u64,
}

#[derive(Debug, Clone)]
pub struct StackDef {
    pub services: Vec<ServiceDef>,
    /// Config name -> its content source.
    pub configs: BTreeMap<String, ConfigSource>,
    /// Secret name -> where its value comes from.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Volume key -> its declaration.
    pub volumes: BTreeMap<String, VolumeDecl>,
    /// Network key -> its declaration (only when the stack names networks).
    pub networks: BTreeMap<String, NetworkDecl>,
    /// Fields accepted without effect, each named (printed by the CLI).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(String),
    Content(String),
}

/// Compose's variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?message}`, `${VAR?message}` and `$$` for `$`,
/// with values from `env`.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| {
                format!(
                    "unclosed ${{ in {:?}",
                    &text[text.len() - rest.len() - 1..].lines().next().unwrap_or("")
                )
            })?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            if name.is_empty() {
                return Err(format!("invalid interpolation ${{{expr}}}"));
            }
            let value = env(name);
            let set = value.as_deref().is_some_and(|v| !v.is_empty());
            let v = match op {
                "" => value.unwrap_or_default(),
                _ if op.starts_with(":-") => {
                    if set {
                        value.unwrap_or_default()
                    } else {
                        op[2..].to_string()
                    }
                }
                _ if op.starts_with('-') => value.unwrap_or_else(|| op[1..].to_string()),
                _ if op.starts_with(":?") => {
                    if set {
                        value.unwrap_or_default()
                    } else {
                        return Err(format!("{name}: {}", &op[2..]));
                    }
                }
                _ if op.starts_with('?') => value.ok_or_else(|| format!("{name}: {}", &op[1..]))?,
                _ => return Err(format!("invalid interpolation ${{{expr}}}")),
            };
            out.push_str(&v);
        } else {
            let n = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if n == 0 {
                out.push('$');
                continue;
            }
            out.push_str(&env(&rest[..n]).unwrap_or_default());
            rest = &rest[n..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a Compose file (after interpolating the process environment);
/// `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<StackDef> {
    let invalid = |m: String| DeployError::Compose {
        file: file.to_string(),
        message: m,
    };
    let text = interpolate(text, &|k| std::env::var(k).ok()).map_err(&invalid)?;
    let raw: ComposeFile = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    check_extensions(&raw.extensions, "top level").map_err(invalid)?;
    if raw.services.is_empty() {
        return Err(invalid("services: a stack needs at least one service".into()));
    }
    let mut configs = BTreeMap::new();
    for (name, c) in &raw.configs {
        let src = match (&c.file, &c.content, c.external) {
            (Some(f), None, None | Some(false)) => ConfigSource::File(f.clone()),
            (None, Some(t), None | Some(false)) => ConfigSource::Content(t.clone()),
            (_, _, Some(true)) => {
                return Err(invalid(format!(
                    "configs.{name}: external configs are not supported; give file or content"
                )))
            }
            _ => return Err(invalid(format!("configs.{name}: give exactly one of file or content"))),
        };
        configs.insert(name.clone(), src);
    }
    let mut volumes = BTreeMap::new();
    for (key, d) in &raw.volumes {
        let d = d.clone().unwrap_or_default();
        let at = |m: &str| invalid(format!("volumes.{key}: {m}"));
        if !ingot_store::valid_volume_name(key) {
            return Err(at(
                "a volume name is letters, digits, '_', '.' and '-', starting with a letter or digit",
            ));
        }
        if d.driver.as_deref().is_some_and(|drv| drv != "local") {
            return Err(at("only the local driver is supported"));
        }
        let external = d.external.unwrap_or(false);
        if d.name.is_some() && !external {
            return Err(at("name is for external volumes (ingot names its own STACK_KEY)"));
        }
        if let Some(n) = &d.name {
            if !ingot_store::valid_volume_name(n) {
                return Err(at(&format!("name {n:?} is not a volume name")));
            }
        }
        volumes.insert(key.clone(), VolumeDecl { external, name: d.name });
    }
    let mut networks = BTreeMap::new();
    for (key, d) in &raw.networks {
        let d = d.clone().unwrap_or_default();
        let at = |m: &str| invalid(format!("networks.{key}: {m}"));
        if !valid_name(key) {
            return Err(at(
                "a network name is letters, digits, '-' and '_', starting with a letter or digit",
            ));
        }
        if d.external == Some(true) {
            return Err(at(
                "external networks are not supported; a stack's networks are its own",
            ));
        }
        if d.driver
            .as_deref()
            .is_some_and(|drv| drv != "bridge" && drv != "overlay")
        {
            return Err(at("the driver is bridge (or overlay: the same on one host)"));
        }
        let mut subnet = None;
        if let Some(ipam) = &d.ipam {
            if ipam.driver.as_deref().is_some_and(|drv| drv != "default") {
                return Err(at("ipam.driver: only the default driver is supported"));
            }
            match ipam.config.as_slice() {
                [] => {}
                [one] => {
                    parse_subnet(&one.subnet).map_err(|e| at(&format!("ipam.config[0]: {e}")))?;
                    subnet = Some(one.subnet.clone());
                }
                _ => return Err(at("ipam.config: one subnet per network")),
            }
        }
        networks.insert(
            key.clone(),
            NetworkDecl {
                internal: d.internal.unwrap_or(false),
                subnet,
            },
        );
    }
    for (i, (a, da)) in networks.iter().enumerate() {
        for (b, db) in networks.iter().skip(i + 1) {
            if let (Some(sa), Some(sb)) = (&da.subnet, &db.subnet) {
                let net = |s: &str| -> Result<ingot_runtime::net::Network> {
                    let (subnet, prefix) = parse_subnet(s).map_err(&invalid)?;
                    Ok(ingot_runtime::net::Network {
                        bridge: String::new(),
                        subnet,
                        prefix,
                        internal: false,
                    })
                };
                if net(sa)?.overlaps(&net(sb)?) {
                    return Err(invalid(format!(
                        "networks.{b}: subnet {sb} overlaps networks.{a} ({sa})"
                    )));
                }
            }
        }
    }
    let mut secrets = BTreeMap::new();
    for (name, d) in &raw.secrets {
        if !valid_name(name) {
            return Err(invalid(format!(
                "secrets.{name}: a secret name is letters, digits, '-' and '_', starting with a letter or digit"
            )));
        }
        let src = match (&d.file, &d.environment, d.external) {
            (_, _, Some(true)) => {
                return Err(invalid(format!(
                    "secrets.{name}: external secrets are not supported; give file or environment"
                )))
            }
            (Some(f), None, _) => SecretSource::File(f.clone()),
            (None, Some(v), _) => SecretSource::Environment(v.clone()),
            _ => {
                return Err(invalid(format!(
                    "secrets.{name}: give exactly one of file or environment"
                )))
            }
        };
        if d.name.is_some() {
            return Err(invalid(format!(
                "secrets.{name}.name: only external secrets have a platform name, and those are not supported"
            )));
        }
        secrets.insert(name.clone(), src);
    }
    let mut services = Vec::new();
    let mut warnings = Vec::new();
    let mut published = BTreeMap::new();
    for (name, s) in &raw.services {
        let at = |m: String| invalid(format!("services.{name}.{m}"));
        if !valid_name(name) {
            return Err(invalid(format!(
                "services.{name}: a service name is letters, digits, '-' and '_', starting with a letter or digit"
            )));
        }
        check_extensions(&s.extensions, &format!("services.{name}")).map_err(invalid)?;
        for (field, why) in NO_MEANING_ON_DEPLOY {
            if s.extensions.contains_key(*field) {
                warnings.push(format!("services.{name}.{field} is ignored: {why}"));
            }
        }
        if s.image.trim().is_empty() {
            return Err(at("image: empty".into()));
        }
        let deploy = s.deploy.clone().unwrap_or_default();
        // global: one replica on every node; this engine is one node.
        let global = match deploy.mode.as_deref() {
            None | Some("replicated") => false,
            Some("global") if deploy.replicas.is_some() => {
                return Err(at(
                    "deploy.replicas: a global service runs one replica per node; drop replicas".into(),
                ))
            }
            Some("global") => true,
            Some(m) => return Err(at(format!("deploy.mode: {m:?} is not replicated or global"))),
        };
        let mut ports = Vec::new();
        for p in &s.ports {
            let port = parse_port(p).map_err(|e| at(format!("ports: {e}")))?;
            if let Some(other) = published.insert((port.published, port.protocol), name.clone()) {
                return Err(at(format!(
                    "ports: host port {}/{} is already published by service {other}",
                    port.published, port.protocol
                )));
            }
            ports.push(port);
        }
        let health = match &s.healthcheck {
            None => None,
            Some(h) => Some(parse_health(h).map_err(|e| at(format!("healthcheck.{e}")))?),
        };
        let mut service_configs = Vec::new();
        for c in &s.configs {
            let (source, target) = match c {
                ServiceConfigDef::Short(n) => (n.clone(), format!("/{n}")),
                ServiceConfigDef::Long(l) => (l.source.clone(), l.target.clone().unwrap_or(format!("/{}", l.source))),
            };
            if !configs.contains_key(&source) {
                return Err(at(format!(
                    "configs: {source:?} is not defined in the top-level configs"
                )));
            }
            let target = ingot_runtime::spec::clean_target(&target, "configs target")
                .ok()
                .filter(|t| t != "/")
                .ok_or_else(|| {
                    at(format!(
                        "configs: target {target:?} must be an absolute path without '..'"
                    ))
                })?;
            let owner = match c {
                ServiceConfigDef::Short(_) => (Ok(None), Ok(None), Ok(None)),
                ServiceConfigDef::Long(l) => (
                    l.uid.as_deref().map(|v| numeric_id("uid", v)).transpose(),
                    l.gid.as_deref().map(|v| numeric_id("gid", v)).transpose(),
                    l.mode.as_ref().map(octal_mode).transpose(),
                ),
            };
            let (uid, gid, mode) = match owner {
                (Ok(u), Ok(g), Ok(m)) => (u, g, m),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(at(format!("configs: {e}"))),
            };
            service_configs.push(ConfigUse {
                name: source,
                target,
                uid,
                gid,
                mode,
            });
        }
        let mut mounts: Vec<MountDef> = Vec::new();
        for (i, v) in s.volumes.iter().enumerate() {
            let m = mount_def(v).map_err(|e| at(format!("volumes[{i}]: {e}")))?;
            if m.kind == MountType::Volume && !volumes.contains_key(&m.source) {
                return Err(at(format!(
                    "volumes[{i}]: {:?} is not defined in the top-level volumes",
                    m.source
                )));
            }
            mounts.push(m);
        }
        for t in s.tmpfs.as_ref().map(shell_words).unwrap_or_default() {
            mounts.push(MountDef {
                kind: MountType::Tmpfs,
                source: String::new(),
                target: t,
                read_only: false,
                nocopy: false,
            });
        }
        for (i, m) in mounts.iter_mut().enumerate() {
            m.target = ingot_runtime::spec::clean_target(&m.target, "target")
                .ok()
                .filter(|t| t != "/")
                .ok_or_else(|| {
                    at(format!(
                        "volumes[{i}]: target {:?} must be an absolute path without '..'",
                        m.target
                    ))
                })?;
        }
        for (i, m) in mounts.iter().enumerate() {
            if mounts[..i].iter().any(|o| o.target == m.target) {
                return Err(at(format!("volumes: two mounts at {}", m.target)));
            }
        }
        let mut service_secrets: Vec<SecretUse> = Vec::new();
        for (i, d) in s.secrets.iter().enumerate() {
            let use_ = secret_use(d).map_err(|e| at(format!("secrets[{i}]: {e}")))?;
            if !secrets.contains_key(&use_.name) {
                return Err(at(format!(
                    "secrets[{i}]: {:?} is not defined in the top-level secrets",
                    use_.name
                )));
            }
            if service_secrets.iter().any(|o| o.target == use_.target) {
                return Err(at(format!("secrets[{i}]: two secrets at {}", use_.target)));
            }
            service_secrets.push(use_);
        }
        let service_nets = match &s.networks {
            None => Vec::new(),
            Some(v) => service_networks(v).map_err(|e| at(format!("networks: {e}")))?,
        };
        for n in &service_nets {
            if n.name != DEFAULT_NETWORK && !networks.contains_key(&n.name) {
                return Err(at(format!(
                    "networks: {:?} is not defined in the top-level networks",
                    n.name
                )));
            }
        }
        let update = update_policy(deploy.update_config.as_ref(), FailureAction::Pause, Order::StopFirst)
            .map_err(|e| at(format!("deploy.update_config.{e}")))?;
        let rollback = update_policy(deploy.rollback_config.as_ref(), FailureAction::Pause, Order::StopFirst)
            .map_err(|e| at(format!("deploy.rollback_config.{e}")))?;
        let restart =
            restart_policy(deploy.restart_policy.as_ref()).map_err(|e| at(format!("deploy.restart_policy.{e}")))?;
        check_host_ports(&ports, &update, &rollback).map_err(|e| at(format!("ports: {e}")))?;
        services.push(ServiceDef {
            name: name.clone(),
            image: s.image.clone(),
            command: s.command.as_ref().map(shell_words),
            entrypoint: s.entrypoint.as_ref().map(shell_words),
            env: environment(s.environment.as_ref()).map_err(|e| at(format!("environment: {e}")))?,
            ports,
            health,
            replicas: deploy.replicas.unwrap_or(1),
            global,
            endpoint_mode: match deploy.endpoint_mode.as_deref() {
                None | Some("vip") => EndpointMode::Vip,
                Some("dnsrr") => EndpointMode::Dnsrr,
                Some(other) => return Err(at(format!("deploy.endpoint_mode: {other:?} is not vip or dnsrr"))),
            },
            update,
            rollback,
            restart,
            configs: service_configs,
            secrets: service_secrets,
            mounts,
            depends_on: depends_on(s.depends_on.as_ref()).map_err(|e| at(format!("depends_on: {e}")))?,
            resources: resources(deploy.resources.as_ref()).map_err(|e| at(format!("deploy.resources.{e}")))?,
            labels: labels(deploy.labels.as_ref()).map_err(|e| at(format!("deploy.labels: {e}")))?,
            placement: match &deploy.placement {
                Some(p) => {
                    for c in &p.constraints {
                        check_constraint(c).map_err(|e| at(format!("deploy.placement.constraints: {e}")))?;
                    }
                    Placement {
                        constraints: p.constraints.clone(),
                        max_replicas_per_node: p.max_replicas_per_node,
                    }
                }
                None => Placement::default(),
            },
            networks: service_nets,
            user: s.user.clone(),
            workdir: match &s.working_dir {
                Some(w) => Some(
                    ingot_runtime::spec::clean_target(w, "working_dir")
                        .map_err(|_| at(format!("working_dir: {w:?} must be an absolute path without '..'")))?,
                ),
                None => None,
            },
            stop_grace_ms: s
                .stop_grace_period
                .as_deref()
                .map(duration)
                .transpose()
                .map_err(|e| at(format!("stop_grace_period: {e}")))?
                .unwrap_or(10_000),
        });
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &services {
        for d in s.depends_on.keys() {
            if !names.contains(&d.as_str()) || *d == s.name {
                return Err(invalid(format!(
                    "services.{}.depends_on: {d:?} is not another service of the stack",
                    s.name
                )));
            }
        }
        graph.insert(&s.name, s.depends_on.keys().map(String::as_str).collect());
    }
    if let Some(cycle) = dependency_cycle(&graph) {
        return Err(invalid(format!("depends_on: a cycle: {}", cycle.join(" -> "))));
    }
    // A stack that names networks anywhere declares every network it
    // uses; one that names none keeps the implicit default (and an
    // unchanged pinned form).
    let uses_default = services
        .iter()
        .any(|s| s.networks.is_empty() || s.networks.iter().any(|n| n.name == DEFAULT_NETWORK));
    if (!networks.is_empty() || services.iter().any(|s| !s.networks.is_empty())) && uses_default {
        networks.entry(DEFAULT_NETWORK.to_string()).or_default();
    }
    Ok(StackDef {
        services,
        configs,
        secrets,
        volumes,
        networks,
        warnings,
    })
}

/// A service's `volumes` entry: `KEY:TARGET[:ro]` (a named volume),
/// `./PATH:TARGET[:ro]` or `/PATH:TARGET[:ro]` (a bind mount), or the
/// long form with `type: volume|bind|tmpfs`.
fn mount_def(v: &ServiceVolumeDef) -> std::result::Result<MountDef, String> {
    let kind_of = |source: &str| {
        if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
            MountType::Bind
        } else {
            MountType::Volume
        }
    };
    match v {
        ServiceVolumeDef::Short(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [_] => return Err(format!("{s:?}: anonymous volumes are not supported; name one")),
                [src, dst] => (*src, *dst, "rw"),
                [src, dst, mode] => (*src, *dst, *mode),
                _ => return Err(format!("{s:?}: expected SOURCE:TARGET[:ro|rw]")),
            };
            let read_only = match mode {
                "ro" => true,
                "rw" => false,
                other => return Err(format!("{s:?}: mode {other:?} is not ro or rw")),
            };
            if source.starts_with('~') {
                return Err(format!("{s:?}: ~ is not expanded; give the path"));
            }
            Ok(MountDef {
                kind: kind_of(source),
                source: source.to_string(),
                target: target.to_string(),
                read_only,
                nocopy: false,
            })
        }
        ServiceVolumeDef::Long(l) => {
            let kind = match l.kind.as_str() {
                "volume" => MountType::Volume,
                "bind" => MountType::Bind,
                "tmpfs" => MountType::Tmpfs,
                other => return Err(format!("type {other:?} is not volume, bind or tmpfs")),
            };
            let source = l.source.clone().unwrap_or_default();
            match kind {
                MountType::Tmpfs if !source.is_empty() => return Err("a tmpfs has no source".into()),
                MountType::Volume | MountType::Bind if source.is_empty() => {
                    return Err("source: needed (anonymous volumes are not supported)".into())
                }
                MountType::Bind if !(source.starts_with('/') || source.starts_with('.')) => {
                    return Err(format!("source {source:?}: a bind mount's source is a path"))
                }
                _ => {}
            }
            if l.volume.is_some() && kind != MountType::Volume {
                return Err("volume options are for type volume".into());
            }
            Ok(MountDef {
                kind,
                source,
                target: l.target.clone(),
                read_only: l.read_only.unwrap_or(false),
                nocopy: l.volume.as_ref().and_then(|v| v.nocopy).unwrap_or(false),
            })
        }
    }
}

/// `deploy.resources`: limits (cpus, memory, pids) and reservations
/// (cpus, memory), in Compose's units.
fn resources(def: Option<&ResourcesDef>) -> std::result::Result<Resources, String> {
    let Some(def) = def else {
        return Ok(Resources::default());
    };
    let cpus = |what: &str, v: Option<&serde_yaml_ng::Value>| -> std::result::Result<Option<f64>, String> {
        let text = match v {
            None => return Ok(None),
            Some(serde_yaml_ng::Value::String(s)) => s.clone(),
            Some(serde_yaml_ng::Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("{what}.cpus: {other:?} is not a number of CPUs")),
        };
        match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && n > 0.0 && n <= 1024.0 => Ok(Some(n)),
            _ => Err(format!("{what}.cpus: {text:?} is not a number of CPUs above 0")),
        }
    };
    let memory = |what: &str, v: Option<&String>| -> std::result::Result<Option<u64>, String> {
        v.map(|m| ingot_runtime::spec::parse_memory(m).map_err(|e| format!("{what}.memory: {e}")))
            .transpose()
    };
    let mut r = Resources::default();
    if let Some(l) = &def.limits {
        r.cpus = cpus("limits", l.cpus.as_ref())?;
        r.memory = memory("limits", l.memory.as_ref())?;
        r.pids = match l.pids {
            Some(p) if p <= 0 => return Err(format!("limits.pids: {p} is not a positive number")),
            p => p,
        };
    }
    if let Some(res) = &def.reservations {
        if res.pids.is_some() {
            return Err("reservations.pids: pids can be limited, not reserved".into());
        }
        r.reserve_cpus = cpus("reservations", res.cpus.as_ref())?;
        r.reserve_memory = memory("reservations", res.memory.as_ref())?;
    }
    if let (Some(limit), Some(want)) = (r.memory, r.reserve_memory) {
        if want > limit {
            return Err("reservations.memory: more than limits.memory".into());
        }
    }
    if let (Some(limit), Some(want)) = (r.cpus, r.reserve_cpus) {
        if want > limit {
            return Err("reservations.cpus: more than limits.cpus".into());
        }
    }
    Ok(r)
}

/// `deploy.labels`, as a map or a `KEY=VALUE` list.
fn labels(v: Option<&serde_yaml_ng::Value>) -> std::result::Result<BTreeMap<String, String>, String> {
    use serde_yaml_ng::Value as V;
    let scalar = |v: &V| match v {
        V::String(s) => Some(s.clone()),
        V::Number(n) => Some(n.to_string()),
        V::Bool(b) => Some(b.to_string()),
        V::Null => Some(String::new()),
        _ => None,
    };
    let mut out = BTreeMap::new();
    match v {
        None => {}
        Some(V::Mapping(m)) => {
            for (k, v) in m {
                let (Some(k), Some(v)) = (scalar(k), scalar(v)) else {
                    return Err(format!("{k:?}: a label is a name and a text value"));
                };
                out.insert(k, v);
            }
        }
        Some(V::Sequence(items)) => {
            for item in items {
                let text = scalar(item).ok_or_else(|| format!("{item:?} is not KEY=VALUE"))?;
                let (k, v) = text.split_once('=').unwrap_or((text.as_str(), ""));
                out.insert(k.to_string(), v.to_string());
            }
        }
        Some(other) => return Err(format!("{other:?} is neither a map nor a list")),
    }
    for (k, v) in &out {
        if k.is_empty() || k.len() > 256 || v.len() > 4096 || k.chars().chain(v.chars()).any(char::is_control) {
            return Err(format!(
                "label {k:?}: a name of 1 to 256 and a value of at most 4096 printable characters"
            ));
        }
    }
    Ok(out)
}

/// A service's `secrets` entry: a name (mounted at /run/secrets/NAME), or
/// `{source, target, uid, gid, mode}` where a relative target is a name
/// under /run/secrets and mode is octal (`0440`, or `"0440"`).
fn secret_use(d: &ServiceConfigDef) -> std::result::Result<SecretUse, String> {
    let (name, target, uid, gid, mode) = match d {
        ServiceConfigDef::Short(n) => (n.clone(), n.clone(), None, None, None),
        ServiceConfigDef::Long(l) => (
            l.source.clone(),
            l.target.clone().unwrap_or_else(|| l.source.clone()),
            l.uid.as_deref(),
            l.gid.as_deref(),
            l.mode.as_ref(),
        ),
    };
    let target = if target.starts_with('/') {
        target
    } else {
        format!("{SECRETS_DIR}/{target}")
    };
    let target = ingot_runtime::spec::clean_target(&target, "target")
        .ok()
        .filter(|t| t != "/")
        .ok_or_else(|| format!("target {target:?} must be a file name or an absolute path without '..'"))?;
    let id = |what: &str, v: Option<&str>| v.map_or(Ok(0), |v| numeric_id(what, v));
    let mode = match mode {
        None => SECRET_MODE,
        Some(v) => octal_mode(v)?,
    };
    Ok(SecretUse {
        name,
        target,
        uid: id("uid", uid)?,
        gid: id("gid", gid)?,
        mode,
    })
}

/// A uid or gid: a number (names are not looked up).
fn numeric_id(what: &str, v: &str) -> std::result::Result<u32, String> {
    v.parse()
        .map_err(|_| format!("{what} {v:?} is not a number (names are not looked up)"))
}

/// A file mode written in octal: YAML reads `0440` as the number 440, so
/// a number's digits are taken as octal digits, as Compose users mean.
fn octal_mode(v: &serde_yaml_ng::Value) -> std::result::Result<u32, String> {
    let digits = match v {
        serde_yaml_ng::Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        serde_yaml_ng::Value::String(s) => Some(s.trim_start_matches("0o").to_string()),
        _ => None,
    }
    .ok_or_else(|| format!("mode {v:?} is not an octal number"))?;
    u32::from_str_radix(&digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("mode {digits:?} is not an octal mode of at most 0777"))
}

pub(crate) fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

/// Service fields with no meaning on a deploy (as `docker stack deploy`
/// says of them): accepted with a warning that names them.
const NO_MEANING_ON_DEPLOY: &[(&str, &str)] = &[
    ("build", "images are built before a deploy (ingot build)"),
    ("container_name", "replicas are named STACK.SERVICE.SLOT..."),
];

fn check_extensions(ext: &BTreeMap<String, serde_yaml_ng::Value>, at: &str) -> std::result::Result<(), String> {
    let meaningless = |k: &str| at.starts_with("services.") && NO_MEANING_ON_DEPLOY.iter().any(|(f, _)| *f == k);
    match ext.keys().find(|k| !k.starts_with("x-") && !meaningless(k)) {
        Some(k) => Err(format!("{at}: unknown field `{k}`")),
        None => Ok(()),
    }
}

fn shell_words(v: &StringOrList) -> Vec<String> {
    match v {
        StringOrList::List(l) => l.clone(),
        StringOrList::String(s) => s.split_whitespace().map(String::from).collect(),
    }
}

fn environment(env: Option<&Environment>) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    match env {
        None => {}
        Some(Environment::List(l)) => {
            for e in l {
                if e.split('=').next().is_none_or(str::is_empty) {
                    return Err(format!("{e:?} is not NAME=value"));
                }
                out.push(e.clone());
            }
        }
        Some(Environment::Map(m)) => {
            for (k, v) in m {
                let v = match v {
                    None => String::new(),
                    Some(serde_yaml_ng::Value::String(s)) => s.clone(),
                    Some(serde_yaml_ng::Value::Number(n)) => n.to_string(),
                    Some(serde_yaml_ng::Value::Bool(b)) => b.to_string(),
                    Some(other) => return Err(format!("{k}: {other:?} is not a string, number or boolean")),
                };
                out.push(format!("{k}={v}"));
            }
        }
    }
    Ok(out)
}

fn parse_port(p: &PortDef) -> std::result::Result<Port, String> {
    let num = |s: &str| -> std::result::Result<u16, String> {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?} is not a port number (1-65535)"))
    };
    match p {
        PortDef::Long(l) => {
            let protocol = match l.protocol.as_deref() {
                None | Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(p) => return Err(format!("protocol: {p:?} is not tcp or udp")),
            };
            let mode = match l.mode.as_deref() {
                None | Some("ingress") => PortMode::Ingress,
                Some("host") => PortMode::Host,
                Some(m) => return Err(format!("mode: {m:?} is not ingress or host")),
            };
            let published = match &l.published {
                Some(serde_yaml_ng::Value::Number(n)) => num(&n.to_string())?,
                Some(serde_yaml_ng::Value::String(s)) => num(s)?,
                _ => return Err("published: a host port is required (no random ports)".into()),
            };
            if l.target == 0 {
                return Err("target: 0 is not a port".into());
            }
            if let Some(a) = &l.app_protocol {
                if a.is_empty() || a.len() > 64 || !a.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!("app_protocol: {a:?} is not a protocol name"));
                }
                if protocol == Protocol::Udp && matches!(a.to_ascii_lowercase().as_str(), "h2c" | "grpc") {
                    return Err(format!("app_protocol: {a} runs over TCP, not udp"));
                }
            }
            Ok(Port {
                host_ip: l.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
                published,
                target: l.target,
                protocol,
                mode,
                app_protocol: l.app_protocol.clone(),
            })
        }
        PortDef::Short(v) => {
            let s = match v {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                // The long form (an untagged enum tries the short one first).
                serde_yaml_ng::Value::Mapping(_) => {
                    let long: LongPort = serde_yaml_ng::from_value(v.clone()).map_err(|e| e.to_string())?;
                    return parse_port(&PortDef::Long(long));
                }
                other => return Err(format!("{other:?} is not a port mapping")),
            };
            let (s, protocol) = match s.rsplit_once('/') {
                None => (s.as_str(), Protocol::Tcp),
                Some((p, "tcp")) => (p, Protocol::Tcp),
                Some((p, "udp")) => (p, Protocol::Udp),
                Some((_, other)) => return Err(format!("protocol {other:?} is not tcp or udp")),
            };
            let parts: Vec<&str> = s.rsplitn(3, ':').collect();
            let (host_ip, published, target) = match parts.as_slice() {
                [target, published] => ("127.0.0.1".to_string(), *published, *target),
                [target, published, ip] => (
                    ip.trim_matches(|c| c == '[' || c == ']').to_string(),
                    *published,
                    *target,
                ),
                _ => return Err(format!("{s:?}: give HOST:CONTAINER (a published port is required)")),
            };
            Ok(Port {
                host_ip,
                published: num(published)?,
                target: num(target)?,
                protocol,
                mode: PortMode::Ingress,
                app_protocol: None,
            })
        }
    }
}

/// On one node (the local engine), a host-mode port is served by one
/// replica.
pub fn check_host_ports_one_node(ports: &[Port], replicas: u32, global: bool) -> std::result::Result<(), String> {
    match ports.iter().find(|p| p.mode == PortMode::Host) {
        Some(p) if !global && replicas > 1 => Err(format!(
            "port {}: a host-mode port is served by one replica per node; {replicas} replicas on this node cannot all bind it (use mode ingress, or one replica)",
            p.published
        )),
        _ => Ok(()),
    }
}

/// Ports in host mode are served by the replica itself: never two at once
/// on a node (a start-first update would need both).
pub fn check_host_ports(
    ports: &[Port],
    update: &UpdatePolicy,
    rollback: &UpdatePolicy,
) -> std::result::Result<(), String> {
    let Some(p) = ports.iter().find(|p| p.mode == PortMode::Host) else {
        return Ok(());
    };
    for (what, policy) in [("update_config", update), ("rollback_config", rollback)] {
        if policy.order == Order::StartFirst {
            return Err(format!(
                "port {}: deploy.{what}.order start-first would run two replicas on a host-mode port; use stop-first",
                p.published
            ));
        }
    }
    Ok(())
}

fn parse_health(h: &HealthcheckDef) -> std::result::Result<Option<Health>, String> {
    if h.disable {
        return Ok(None);
    }
    let test = match &h.test {
        None => return Err("test: required unless disable: true".into()),
        Some(StringOrList::String(s)) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Some(StringOrList::List(l)) => match l.first().map(String::as_str) {
            Some("NONE") => return Ok(None),
            Some("CMD") if l.len() > 1 => l[1..].to_vec(),
            Some("CMD-SHELL") if l.len() == 2 => vec!["/bin/sh".into(), "-c".into(), l[1].clone()],
            _ => {
                return Err(format!(
                    "test: {l:?}: use [\"CMD\", ...], [\"CMD-SHELL\", \"...\"] or [\"NONE\"]"
                ))
            }
        },
    };
    let d = |v: &Option<String>, field: &str, default: u64| -> std::result::Result<u64, String> {
        v.as_deref()
            .map(duration)
            .transpose()
            .map_err(|e| format!("{field}: {e}"))
            .map(|x| x.unwrap_or(default))
    };
    Ok(Some(Health {
        test,
        interval_ms: d(&h.interval, "interval", 30_000)?.max(1),
        timeout_ms: d(&h.timeout, "timeout", 30_000)?.max(1),
        retries: h.retries.unwrap_or(3).max(1),
        start_period_ms: d(&h.start_period, "start_period", 0)?,
        start_interval_ms: h
            .start_interval
            .as_deref()
            .map(duration)
            .transpose()
            .map_err(|e| format!("start_interval: {e}"))?
            .map(|ms| ms.max(1)),
    }))
}

fn update_policy(
    u: Option<&UpdateDef>,
    default_action: FailureAction,
    default_order: Order,
) -> std::result::Result<UpdatePolicy, String> {
    let u = u.cloned().unwrap_or_default();
    let failure_action = match u.failure_action.as_deref() {
        None => default_action,
        Some("rollback") => FailureAction::Rollback,
        Some("pause") => FailureAction::Pause,
        Some("continue") => FailureAction::Continue,
        Some(o) => return Err(format!("failure_action: {o:?} is not rollback, pause or continue")),
    };
    let order = match u.order.as_deref() {
        None => default_order,
        Some("start-first") => Order::StartFirst,
        Some("stop-first") => Order::StopFirst,
        Some(o) => return Err(format!("order: {o:?} is not start-first or stop-first")),
    };
    let ratio = u.max_failure_ratio.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("max_failure_ratio: {ratio} is not between 0 and 1"));
    }
    Ok(UpdatePolicy {
        parallelism: u.parallelism.unwrap_or(1), // 0: all at once
        delay_ms: u
            .delay
            .as_deref()
            .map(duration)
            .transpose()
            .map_err(|e| format!("delay: {e}"))?
            .unwrap_or(0),
        failure_action,
        monitor_ms: u
            .monitor
            .as_deref()
            .map(duration)
            .transpose()
            .map_err(|e| format!("monitor: {e}"))?
            .unwrap_or(5_000),
        max_failure_ratio: ratio,
        order,
    })
}

fn restart_policy(r: Option<&RestartDef>) -> std::result::Result<RestartPolicy, String> {
    let r = r.cloned().unwrap_or_default();
    Ok(RestartPolicy {
        condition: match r.condition.as_deref() {
            None | Some("any") => RestartCondition::Any,
            Some("on-failure") => RestartCondition::OnFailure,
            Some("none") => RestartCondition::None,
            Some(o) => return Err(format!("condition: {o:?} is not none, on-failure or any")),
        },
        delay_ms: r
            .delay
            .as_deref()
            .map(duration)
            .transpose()
            .map_err(|e| format!("delay: {e}"))?
            .unwrap_or(0),
        max_attempts: r.max_attempts,
    })
}

/// A Compose duration (`1m30s`, `500ms`, `2h`, `10s`, `1.5s`) in milliseconds.
pub fn duration(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (like 10s, 500ms, 1m30s)");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Ok(total.round() as u64)
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env = |k: &str| match k {
            "PORT" => Some("9090".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let i = |t: &str| interpolate(t, &env);
        assert_eq!(i("a ${PORT} $PORT $$PORT").unwrap(), "a 9090 9090 $PORT");
        assert_eq!(
            i("${NOPE:-8080} ${EMPTY:-x} ${EMPTY-y} ${NOPE-z}").unwrap(),
            "8080 x  z"
        );
        assert!(i("${NOPE:?set it}").unwrap_err().contains("set it"));
        assert!(i("${PORT").is_err());
        assert!(i("${:-x}").is_err());
        assert_eq!(i("cost: 5$").unwrap(), "cost: 5$");
    }

    #[test]
    fn app_protocol_chooses_how_the_mesh_speaks_to_replicas() {
        let text = "services:\n  api:\n    image: api:1\n    ports:\n      - {target: 50051, published: 50051, app_protocol: grpc}\n      - {target: 8080, published: 8080, app_protocol: h2c}\n      - {target: 9090, published: 9090, app_protocol: http}\n      - \"7070:70\"\n";
        let s = parse("stack.yml", text).unwrap();
        let ports = &s.services[0].ports;
        let up: Vec<_> = ports.iter().map(Port::upstream).collect();
        use ingot_mesh::Upstream::{H2c, Http1};
        assert_eq!(up, [H2c, H2c, Http1, Http1]);
        assert_eq!(ports[2].app_protocol.as_deref(), Some("http"));
        // Absent, it is absent from the pinned JSON too (digests of stacks
        // written before it are unchanged).
        let json = serde_json::to_string(&ports[3]).unwrap();
        assert!(!json.contains("app_protocol"), "{json}");
        let json = serde_json::to_string(&ports[0]).unwrap();
        assert!(json.contains("\"app_protocol\":\"grpc\""), "{json}");

        let bad = |port: &str| {
            let text = format!("services:\n  api:\n    image: api:1\n    ports:\n      - {port}\n");
            parse("stack.yml", &text).unwrap_err().to_string()
        };
        let e = bad("{target: 53, published: 53, protocol: udp, app_protocol: h2c}");
        assert!(e.contains("app_protocol: h2c runs over TCP"), "{e}");
        let e = bad("{target: 80, published: 80, app_protocol: \"two words\"}");
        assert!(e.contains("is not a protocol name"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("1m30s"), Ok(90_000));
        assert_eq!(duration("500ms"), Ok(500));
        assert_eq!(duration("1.5s"), Ok(1500));
        assert!(duration("ten").is_err());
        assert!(duration("10").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn a_stack_and_its_errors() {
        let text = "services:\n  web:\n    image: hello:1\n    ports: [\"8080:80\"]\n    environment: {A: 1, B: x}\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n    deploy:\n      replicas: 3\n      update_config: {parallelism: 1, order: start-first, failure_action: rollback, monitor: 2s}\n    configs: [site]\n    x-note: fine\nconfigs:\n  site: {content: hi}\n";
        let s = parse("stack.yml", text).unwrap();
        let w = &s.services[0];
        assert_eq!((w.replicas, w.ports[0].published, w.ports[0].target), (3, 8080, 80));
        assert_eq!(w.env, ["A=1", "B=x"]);
        assert_eq!(w.update.order, Order::StartFirst);
        assert_eq!(w.update.failure_action, FailureAction::Rollback);
        assert_eq!(w.health.as_ref().unwrap().as_ref().unwrap().test, ["true"]);
        assert_eq!(
            (w.configs[0].name.as_str(), w.configs[0].target.as_str()),
            ("site", "/site")
        );
        assert_eq!((w.configs[0].uid, w.configs[0].mode), (None, None));

        let text = "services:\n  web:\n    image: a\n    healthcheck: {test: [CMD, x], start_period: 30s, start_interval: 2s}\n";
        let h = parse("stack.yml", text).unwrap().services[0]
            .health
            .clone()
            .unwrap()
            .unwrap();
        assert_eq!((h.start_period_ms, h.start_interval_ms), (30_000, Some(2_000)));

        let text = "services:\n  web:\n    image: a\n    deploy:\n      labels: {team: web, tier: 1}\n      resources:\n        limits: {cpus: '0.5', memory: 64M, pids: 50}\n        reservations: {cpus: 0.25, memory: 16m}\n    secrets: [pw, {source: key, target: /etc/key, uid: '1', gid: '2', mode: 0440}]\nsecrets:\n  pw: {file: ./pw}\n  key: {environment: KEY}\n";
        let w = &parse("stack.yml", text).unwrap().services[0];
        let r = &w.resources;
        assert_eq!((r.cpus, r.memory, r.pids), (Some(0.5), Some(64 << 20), Some(50)));
        assert_eq!((r.reserve_cpus, r.reserve_memory), (Some(0.25), Some(16 << 20)));
        assert_eq!(w.labels.get("tier").map(String::as_str), Some("1"));
        assert_eq!(w.secrets[0].target, "/run/secrets/pw");
        assert_eq!((w.secrets[0].uid, w.secrets[0].mode), (0, 0o400));
        assert_eq!(
            (w.secrets[1].target.as_str(), w.secrets[1].gid, w.secrets[1].mode),
            ("/etc/key", 2, 0o440)
        );

        // Fields with no meaning on a deploy: a warning naming each.
        let text = "services:\n  web:\n    image: a\n    build: ./web\n    container_name: w\n";
        assert_eq!(
            parse("stack.yml", text).unwrap().warnings,
            [
                "services.web.build is ignored: images are built before a deploy (ingot build)",
                "services.web.container_name is ignored: replicas are named STACK.SERVICE.SLOT..."
            ]
        );
        // Ports: both syntaxes, UDP, host mode; networks with aliases.
        let text = "services:\n  dns:\n    image: a\n    ports:\n      - \"5353:53/udp\"\n      - {target: 80, published: 8080, mode: host}\n    networks:\n      back: {aliases: [resolver]}\nnetworks:\n  back: {internal: true, ipam: {config: [{subnet: 10.99.0.0/24}]}}\n";
        let st = parse("stack.yml", text).unwrap();
        let p = &st.services[0].ports;
        assert_eq!(
            (p[0].protocol, p[0].mode, p[0].published),
            (Protocol::Udp, PortMode::Ingress, 5353)
        );
        assert_eq!(
            (p[1].protocol, p[1].mode, p[1].target),
            (Protocol::Tcp, PortMode::Host, 80)
        );
        assert_eq!(st.services[0].networks[0].aliases, ["resolver"]);
        assert_eq!(st.networks["back"].subnet.as_deref(), Some("10.99.0.0/24"));
        assert!(st.networks["back"].internal && !st.networks.contains_key("default"));

        for (bad, want) in [
            ("services:\n  web:\n    image: a\n    imagee: b\n", "imagee"),
            (
                "services:\n  web:\n    image: a\n    ports: [{target: 80, published: 80, mode: sideways}]\n",
                "mode: \"sideways\" is not ingress or host",
            ),
            (
                "services:\n  web:\n    image: a\n    ports: [\"80:80/sctp\"]\n",
                "protocol \"sctp\" is not tcp or udp",
            ),
            (
                "services:\n  web:\n    image: a\n    networks: [x]\nnetworks:\n  x: {ipam: {config: [{subnet: 10.0.0.1/24}]}}\n",
                "host part of the address is not zero",
            ),
            (
                "services:\n  web:\n    image: a\n    ports: [\"x:80\"]\n",
                "services.web.ports",
            ),
            (
                "services:\n  web:\n    image: a\n    deploy: {update_config: {order: sideways}}\n",
                "order",
            ),
            ("services:\n  web:\n    image: a\n    configs: [nope]\n", "nope"),
            (
                "services:\n  a:\n    image: a\n    ports: [\"80:80\"]\n  b:\n    image: b\n    ports: [\"80:81\"]\n",
                "already published",
            ),
            ("services: [\n", "line"),
            ("services: {}\n", "at least one"),
            (
                "services:\n  web:\n    image: a\n    deploy: {resources: {reservations: {pids: 5}}}\n",
                "services.web.deploy.resources.reservations.pids",
            ),
            (
                "services:\n  web:\n    image: a\n    deploy: {resources: {limits: {memory: 1k}}}\n",
                "services.web.deploy.resources.limits.memory",
            ),
            (
                "services:\n  web:\n    image: a\n    deploy: {resources: {limits: {cpus: lots}}}\n",
                "limits.cpus",
            ),
            (
                "services:\n  web:\n    image: a\n    deploy: {resources: {limits: {memory: 8M}, reservations: {memory: 16M}}}\n",
                "reservations.memory: more than limits.memory",
            ),
            (
                "services:\n  web:\n    image: a\n    deploy: {resources: {limits: {devices: []}}}\n",
                "devices",
            ),
            ("services:\n  web:\n    image: a\n    deploy: {labels: [{a: b}]}\n", "deploy.labels"),
            ("services:\n  web:\n    image: a\n    secrets: [nope]\n", "secrets[0]"),
            (
                "services:\n  web:\n    image: a\n    secrets: [{source: s, mode: 0999}]\nsecrets:\n  s: {file: x}\n",
                "mode",
            ),
            (
                "services:\n  web:\n    image: a\nsecrets:\n  s: {file: x, environment: Y}\n",
                "secrets.s: give exactly one",
            ),
            (
                "services:\n  web:\n    image: a\nsecrets:\n  s: {external: true}\n",
                "external secrets",
            ),
            (
                "services:\n  a:\n    image: a\n    depends_on: [b]\n  b:\n    image: b\n    depends_on: {c: {condition: service_healthy}}\n  c:\n    image: c\n    depends_on: [a]\n",
                "depends_on: a cycle: a -> b -> c -> a",
            ),
            ("services:\n  a:\n    image: a\n    depends_on: [nope]\n", "services.a.depends_on: \"nope\""),
            ("services:\n  a:\n    image: a\n    depends_on: [a]\n", "services.a.depends_on: \"a\""),
            ("services:\n  a:\n    image: a\n    volumes: [\"nope:/data\"]\n", "services.a.volumes[0]: \"nope\""),
            ("services:\n  a:\n    image: a\n    volumes: [\"/data\"]\n", "anonymous volumes"),
            ("services:\n  a:\n    image: a\n    volumes: [\"./x:/data:rx\"]\n", "\"rx\""),
            ("services:\n  a:\n    image: a\nvolumes:\n  d: {driver: nfs}\n", "volumes.d: only the local driver"),
            (
                "services:\n  a:\n    image: a\n    deploy: {mode: global, replicas: 2}\n",
                "services.a.deploy.replicas: a global service",
            ),
            ("services:\n  a:\n    image: a\n    deploy: {mode: everywhere}\n", "\"everywhere\""),
            ("services:\n  a:\n    image: a\nvolumes:\n  d: {name: other}\n", "volumes.d: name is for external"),
            (
                "services:\n  a:\n    image: a\n    volumes: [\"d:/x\", \"./y:/x\"]\nvolumes:\n  d:\n",
                "two mounts at /x",
            ),
            (
                "services:\n  a:\n    image: a\n    volumes: [{type: tmpfs, target: /t, tmpfs: {size: 1000}}]\n",
                "services.a",
            ),
            (
                "services:\n  a:\n    image: a\n    depends_on: {b: {condition: service_completed_successfully}}\n  b:\n    image: b\n",
                "service_completed_successfully is not supported",
            ),
            (
                "services:\n  a:\n    image: a\n    depends_on: {b: {condition: whenever}}\n  b:\n    image: b\n",
                "\"whenever\"",
            ),
        ] {
            let e = parse("stack.yml", bad).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("stack.yml"), "{bad}: {e}");
        }
    }
}
