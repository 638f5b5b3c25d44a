//! ingot's deployer.
//!
//! A Compose file ([`compose`]) is pinned ([`pin`]): every image resolved
//! to a manifest digest, every config to its content, health checks to
//! their final form; the pinned stack is canonical JSON with a digest. Each
//! change (deploy, scale, rollback, rm) is appended to the hash-chained
//! [`ledger`] before it is carried out, and its outcome recorded after. The
//! [`engine`] (inside `ingot daemon`) converges running replicas to the
//! ledger's desired state: rolling updates in batches, health checks
//! ([`health`]), automatic rollback, replacement of dead replicas, and the
//! routing mesh's pools (ingot-mesh). [`api`] serves the engine over HTTP
//! on a unix socket; [`client`] is the CLI's side of it. A pinned stack
//! ships as one OCI artifact, signed, through registries ([`bundle`]).

pub mod api;
pub mod backend;
pub mod bundle;
pub mod client;
pub mod compose;
pub mod dns;
pub mod dora;
pub mod drift;
pub mod engine;
pub mod events;
pub mod health;
pub mod ledger;
pub mod peer;
pub mod pin;
pub mod swarm;
pub mod tls;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{file}: {message}")]
    Compose { file: String, message: String },
    #[error(transparent)]
    Store(#[from] ingot_store::StoreError),
    #[error(transparent)]
    Runtime(#[from] ingot_runtime::RuntimeError),
    #[error("{0}")]
    Invalid(String),
    /// A field of a request (or stack) that does not pass validation.
    #[error("{field}: {why}")]
    Field { field: String, why: String },
    #[error("ledger entry {seq}: {why}")]
    Ledger { seq: i64, why: String },
    #[error("policy refused {image}: {refusals}")]
    Policy { image: String, refusals: String },
    #[error("{0}")]
    NotFound(String),
    #[error("daemon: {0}")]
    Daemon(String),
    /// The swarm manager at `host` (DOCKER_HOST) refused or failed.
    #[error("swarm at {host}: {why}")]
    Swarm { host: String, why: String },
}

pub type Result<T, E = DeployError> = std::result::Result<T, E>;

/// Evaluates the image policy at `policy` for every image of `stack`,
/// and, for a stack deployed from a bundle, its `trusted_keys` for the
/// bundle's own signature; the error names the first image (or the
/// bundle) refused and why.
pub fn check_policy(store: &ingot_store::Store, stack: &pin::PinnedStack, policy: &std::path::Path) -> Result<()> {
    let policy = ingot_trust::policy::Policy::load(policy).map_err(|e| DeployError::Invalid(e.to_string()))?;
    let today = time::OffsetDateTime::now_utc().date();
    let refused = |image: String, refusals: &[ingot_trust::policy::Refusal]| DeployError::Policy {
        image,
        refusals: refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
    };
    if let Some(b) = &stack.bundle {
        let (_, refusal) =
            ingot_trust::policy::signature_rule(store, b, &policy).map_err(|e| DeployError::Invalid(e.to_string()))?;
        if let Some(r) = refusal {
            return Err(refused(format!("bundle {b}"), &[r]));
        }
    }
    for s in stack.services.values() {
        let d = ingot_trust::policy::evaluate(store, &s.digest.to_string(), &policy, today)
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
        if !d.passed() {
            return Err(refused(s.image.clone(), &d.refusals));
        }
    }
    Ok(())
}

/// RFC 3339 UTC now.
pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
