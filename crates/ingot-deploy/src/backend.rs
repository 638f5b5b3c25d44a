//! The seam between what every engine shares and what executes a change.
//!
//! Shared: pinning (`pin`), the image policy (`check_policy`), the ledger
//! (append before, seal after, one pending entry, the hash chain), the
//! desired state and drift's view of it, the registry push (every image by
//! digest, with its referrers), the CLI. A [`Backend`] executes: it checks
//! it can be used, maps a pinned stack onto its own objects (refusing what
//! it cannot honour, by field), applies a stack and waits for it to
//! converge or roll back, removes one, and reports drift. [`carry_out`]
//! is the one change flow over any backend.
//!
//! Backends: `crate::swarm` (Docker Swarm, through the Engine API). The
//! local engine is the daemon (`crate::engine`), which owns its ledger
//! writes and carries out changes a dead daemon left pending; its seam is
//! `engine::Runtime`. ARCHITECTURE.md maps the same trait onto Kubernetes.

use std::collections::BTreeMap;
use std::path::Path;

use ingot_store::{LedgerRow, Store};
use serde::Serialize;

use crate::drift::Difference;
use crate::ledger;
use crate::pin::{EngineKind, PinnedService, PinnedStack, SecretValue};
use crate::{DeployError, Result};

/// An engine that carries out changes to stacks.
#[allow(async_fn_in_trait)] // used by the CLI through generics only, never boxed
pub trait Backend {
    /// The engine the ledger records for its stacks.
    const KIND: EngineKind;
    /// Where it is (a manager's address), for messages and the ledger.
    fn place(&self) -> String;
    /// Whether it can be used now; a line describing it.
    async fn check(&self) -> Result<String>;
    /// Refuses, naming the field, what it cannot honour of `stack`.
    fn validate(&self, stack: &PinnedStack, registry: &str) -> Result<()>;
    /// Whether its nodes can pull `image` (before anything changes).
    async fn check_image(&self, image: &str) -> Result<()>;
    /// Applies `next` (recorded as ledger entry `entry`), its images pulled
    /// from `registry`; waits for it to converge, or rolls the whole change
    /// back.
    async fn apply(
        &self,
        next: &PinnedStack,
        entry: i64,
        registry: &str,
        secrets: &BTreeMap<String, SecretValue>,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome>;
    /// Removes everything of `stack` it made.
    async fn remove(&self, stack: &str) -> Result<Outcome>;
    /// What runs, against the ledger's stacks on this engine.
    async fn drift(&self, desired: &BTreeMap<String, PinnedStack>) -> Result<Vec<Difference>>;
}

/// The registry an engine's nodes pull from: `HOST[:PORT]`, plain HTTP
/// when `insecure` (as `ingot push --insecure`).
#[derive(Debug, Clone)]
pub struct Registry {
    pub host: String,
    pub insecure: bool,
}

impl Registry {
    /// `HOST[:PORT]` or `http(s)://HOST[:PORT]`.
    pub fn parse(s: &str, insecure: bool) -> Result<Registry> {
        let (host, insecure) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
            (Some(h), _) => (h, true),
            (_, Some(h)) => (h, insecure),
            _ => (s, insecure),
        };
        let host = host.trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DeployError::Invalid(format!(
                "--registry {s:?}: expected HOST[:PORT] (the registry the engine's nodes pull from)"
            )));
        }
        Ok(Registry {
            host: host.to_string(),
            insecure,
        })
    }

    fn remote(&self, reference: &str) -> Result<ingot_registry::client::Remote> {
        // As `ingot push`: plain HTTP when insecure or on loopback.
        ingot_registry::client::Remote::parse(reference, self.insecure).map_err(|e| DeployError::Invalid(e.to_string()))
    }
}

/// How one service of a change ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceReport {
    /// created, updated, unchanged, removed, rolled-back, not-started
    pub action: String,
    /// The engine's own update state (Swarm's completed,
    /// rollback_completed, paused, ...) or how ingot saw it end.
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ServiceReport {
    pub fn new(action: &str, state: &str, message: impl Into<String>) -> ServiceReport {
        ServiceReport {
            action: action.into(),
            state: state.into(),
            message: message.into(),
        }
    }
}

/// A change's outcome on a backend.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// A ledger outcome: succeeded, rolled-back, paused, failed.
    pub outcome: String,
    pub message: String,
    pub services: BTreeMap<String, ServiceReport>,
}

/// The detail sealed into an entry of a backend's change.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Detail {
    engine: String,
    manager: String,
    #[serde(default)]
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    insecure: Option<bool>,
    #[serde(default)]
    services: serde_json::Value,
}

/// Where the nodes pull a service's image: `REGISTRY/REPO@DIGEST`, the
/// repository being the image's own name without its registry and tag.
pub fn image_ref(registry: &str, svc: &PinnedService) -> String {
    format!("{registry}/{}@{}", repository(&svc.image), svc.digest)
}

/// The tag a pushed image keeps beside its digest (its own, else latest).
pub fn push_ref(registry: &str, svc: &PinnedService) -> String {
    let tag = tag_of(&svc.image).unwrap_or("latest");
    format!("{registry}/{}:{tag}", repository(&svc.image))
}

fn repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = no_digest.split('/').collect();
    if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        parts.remove(0);
    }
    let last = parts.pop().unwrap_or_default();
    let name = last.split(':').next().unwrap_or(last);
    parts.push(name);
    parts.join("/")
}

fn tag_of(image: &str) -> Option<&str> {
    let no_digest = image.split('@').next()?;
    let last = no_digest.rsplit('/').next()?;
    last.split_once(':').map(|(_, t)| t)
}

/// One change to a stack on a [`Backend`], from the ledger's point of view.
pub struct Change<'a> {
    pub kind: &'a str,
    /// The stack after the change (its `engine` is set to the backend's).
    pub stack: PinnedStack,
    pub secrets: BTreeMap<String, SecretValue>,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    /// Needed to deploy; scale and rollback reuse the stack's last one.
    pub registry: Option<Registry>,
    /// The last entry's seq the stack was derived from (scale, rollback,
    /// rm): the change is refused if the ledger moved on meanwhile.
    pub based_on: Option<i64>,
    pub policy: Option<&'a Path>,
}

/// How a change ended: the sealed entry and the outcome.
pub struct Sealed {
    pub entry: LedgerRow,
    pub outcome: Outcome,
}

/// The last registry an entry of `stack` recorded.
fn last_registry(rows: &[LedgerRow], stack: &str) -> Option<Registry> {
    rows.iter().rev().filter(|r| r.stack == stack).find_map(|r| {
        let d: Detail = serde_json::from_str(r.detail.as_deref()?).ok()?;
        Some(Registry {
            host: d.registry?,
            insecure: d.insecure.unwrap_or(false),
        })
    })
}

/// Holds `<root>/<engine>.lock` while a change to that engine runs from
/// this root: a pending entry of that engine found while it is free was
/// left by a client that died, and is sealed as failed before anything
/// else.
struct ChangeLock(#[allow(dead_code)] std::fs::File);

impl ChangeLock {
    fn take(root: &Path, engine: EngineKind) -> Result<ChangeLock> {
        let path = root.join(format!("{engine}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DeployError::Invalid(format!("{}: {e}", path.display())))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            DeployError::Invalid(format!(
                "another {engine} change is being carried out from this root; wait for it"
            ))
        })?;
        Ok(ChangeLock(f))
    }
}

/// Records `change` in the ledger and carries it out on `backend`; blocks
/// until every service converged or the stack was rolled back. Nothing is
/// recorded when a check before it fails (engine, policy, mapping, push,
/// pull).
pub fn carry_out<B: Backend>(
    rt: &tokio::runtime::Runtime,
    store: &mut Store,
    backend: &B,
    change: Change<'_>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Sealed> {
    let Change {
        kind,
        mut stack,
        secrets,
        actor,
        reason,
        registry,
        policy,
        based_on,
    } = change;
    stack.engine = B::KIND;
    progress(&rt.block_on(backend.check())?);
    let _lock = ChangeLock::take(store.root(), B::KIND)?;
    let rows = store.ledger_rows()?;
    ledger::verify(&rows)?;
    if let Some(last) = rows.last().filter(|r| r.outcome == ledger::PENDING) {
        if ledger::stack_of(last)?.engine == B::KIND {
            let detail = serde_json::json!({"engine": B::KIND, "interrupted": true}).to_string();
            ledger::finish_with(store, last, ledger::FAILED, Some(detail))?;
            progress(&format!(
                "sealed entry #{} as failed: the client carrying it out stopped before it ended",
                last.seq
            ));
        }
    }
    let rows = store.ledger_rows()?;
    let last = rows.last().map_or(0, |r| r.seq);
    if based_on.is_some_and(|b| b != last) {
        return Err(DeployError::Invalid(format!(
            "the ledger moved on (entry #{last}) while this {kind} was prepared from it; run it again"
        )));
    }
    ledger::check_append(&rows, &stack)?;
    let registry = match (kind, registry) {
        (ledger::RM, r) => r,
        (_, Some(r)) => Some(r),
        (_, None) => Some(last_registry(&rows, &stack.name).ok_or_else(|| {
            DeployError::Invalid(
                "--registry HOST:PORT is needed: the registry the engine's nodes pull the images from".into(),
            )
        })?),
    };
    if kind != ledger::RM {
        stack.validate(store)?;
        if let Some(p) = policy {
            crate::check_policy(store, &stack, p)?;
        }
        let registry = registry.as_ref().expect("set above for every kind but rm");
        // Every service maps onto the engine (or is refused, naming why)
        // before anything is pushed or recorded.
        backend.validate(&stack, &registry.host)?;
        for (name, svc) in &stack.services {
            let dest = registry.remote(&push_ref(&registry.host, svc))?;
            progress(&format!("pushing {name}: {}", push_ref(&registry.host, svc)));
            ingot_registry::client::push(
                store,
                &svc.digest.to_string(),
                &dest,
                std::sync::Arc::new(ingot_registry::client::Quiet),
            )
            .map_err(|e| DeployError::Invalid(format!("pushing the image of {name} to {}: {e}", registry.host)))?;
        }
        for svc in stack.services.values() {
            rt.block_on(backend.check_image(&image_ref(&registry.host, svc)))?;
        }
    }
    let entry = ledger::append(store, kind, &stack, actor, reason)?;
    progress(&format!(
        "ledger entry #{}: {kind} of stack {} pending",
        entry.seq, stack.name
    ));
    let run = async {
        tokio::select! {
            r = async {
                if kind == ledger::RM {
                    backend.remove(&stack.name).await
                } else {
                    let host = &registry.as_ref().expect("set for every kind but rm").host;
                    backend.apply(&stack, entry.seq, host, &secrets, progress).await
                }
            } => r,
            _ = tokio::signal::ctrl_c() => Ok(Outcome {
                outcome: ledger::FAILED.into(),
                message: format!("interrupted (Ctrl-C): the {} engine may still be converging; `ingot drift --engine {}` shows where it stands", B::KIND, B::KIND),
                services: BTreeMap::new(),
            }),
        }
    };
    let outcome = match rt.block_on(run) {
        Ok(o) => o,
        Err(e) => Outcome {
            outcome: ledger::FAILED.into(),
            message: e.to_string(),
            services: BTreeMap::new(),
        },
    };
    let detail = Detail {
        engine: B::KIND.to_string(),
        manager: backend.place(),
        registry: registry.as_ref().map(|r| r.host.clone()),
        insecure: registry.as_ref().map(|r| r.insecure),
        services: serde_json::to_value(&outcome.services).unwrap_or_default(),
        message: outcome.message.clone(),
    };
    let detail = serde_json::to_string(&detail).unwrap_or_default();
    let entry = ledger::finish_with(store, &entry, &outcome.outcome, Some(detail))?;
    Ok(Sealed { entry, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_tags() {
        assert_eq!(repository("web:v1"), "web");
        assert_eq!(repository("shop/web:v1"), "shop/web");
        assert_eq!(repository("localhost:5000/shop/web:v1"), "shop/web");
        assert_eq!(repository("reg.example/web@sha256:ab"), "web");
        assert_eq!(tag_of("localhost:5000/web"), None);
        assert_eq!(tag_of("localhost:5000/web:v2"), Some("v2"));
    }

    #[test]
    fn registries() {
        let r = Registry::parse("http://10.0.0.1:5000/", false).unwrap();
        assert_eq!((r.host.as_str(), r.insecure), ("10.0.0.1:5000", true));
        assert!(Registry::parse("reg.example/path", false).is_err());
        assert!(Registry::parse("", false).is_err());
    }
}
