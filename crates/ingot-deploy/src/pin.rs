//! Pinning: a parsed stack with every image resolved to its manifest
//! digest, every config to its content and digest, and every health check
//! to its final form (the image's HEALTHCHECK when the stack gives none).
//! The pinned stack is what the ledger records and what replicas run.

use std::collections::BTreeMap;
use std::path::Path;

use ingot_oci::Digest;
use ingot_store::Store;
use serde::{Deserialize, Serialize};

use crate::compose::{ConfigSource, Health, Port, RestartPolicy, StackDef, UpdatePolicy};
use crate::{DeployError, Result};

/// The most a config may hold (Swarm's limit is 500 KiB).
pub const MAX_CONFIG: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedStack {
    pub name: String,
    pub services: BTreeMap<String, PinnedService>,
    pub configs: BTreeMap<String, PinnedConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedConfig {
    pub digest: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigMount {
    pub name: String,
    pub digest: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedService {
    /// As written in the stack file.
    pub image: String,
    /// Its manifest digest.
    pub digest: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub ports: Vec<Port>,
    pub health: Option<Health>,
    pub replicas: u32,
    pub update: UpdatePolicy,
    pub rollback: UpdatePolicy,
    pub restart: RestartPolicy,
    pub configs: Vec<ConfigMount>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stop_grace_ms: u64,
}

impl PinnedService {
    /// What a replica runs: everything but counts and rollout policies. Two
    /// services with the same version run identical replicas.
    pub fn version(&self) -> String {
        let v = serde_json::json!({
            "digest": self.digest, "command": self.command, "entrypoint": self.entrypoint,
            "env": self.env, "health": self.health, "configs": self.configs,
            "user": self.user, "workdir": self.workdir,
        });
        let bytes = ingot_oci::config::canonical_json(&v).unwrap_or_default();
        Digest::sha256(&bytes).hex()[..12].to_string()
    }
}

impl PinnedStack {
    pub fn canonical(&self) -> Vec<u8> {
        ingot_oci::config::canonical_json(self).unwrap_or_default()
    }

    pub fn digest(&self) -> String {
        Digest::sha256(&self.canonical()).to_string()
    }
}

/// Pins `def` as stack `name`; config files are read relative to `dir`.
pub fn pin(store: &Store, name: &str, def: &StackDef, dir: &Path) -> Result<PinnedStack> {
    // Services are named STACK_SERVICE, so a stack name has no '_'.
    if !crate::compose::valid_name(name) || name.contains('_') {
        return Err(DeployError::Invalid(format!(
            "stack name {name:?}: letters, digits and '-', starting with a letter or digit"
        )));
    }
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
                digest: Digest::sha256(content.as_bytes()).to_string(),
                content,
            },
        );
    }
    let mut services = BTreeMap::new();
    for s in &def.services {
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
        services.insert(
            s.name.clone(),
            PinnedService {
                image: s.image.clone(),
                digest: img.digest.to_string(),
                command: s.command.clone(),
                entrypoint: s.entrypoint.clone(),
                env: s.env.clone(),
                ports: s.ports.clone(),
                health,
                replicas: s.replicas,
                update: s.update.clone(),
                rollback: s.rollback.clone(),
                restart: s.restart.clone(),
                configs: s
                    .configs
                    .iter()
                    .map(|(n, t)| ConfigMount {
                        name: n.clone(),
                        digest: configs[n].digest.clone(),
                        target: t.clone(),
                    })
                    .collect(),
                user: s.user.clone(),
                workdir: s.workdir.clone(),
                stop_grace_ms: s.stop_grace_ms,
            },
        );
    }
    Ok(PinnedStack {
        name: name.to_string(),
        services,
        configs,
    })
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
    }))
}
