//! Image configs: the read view ingot needs, and deterministic JSON writing.
//!
//! Configs are stored byte-exact like every blob. For reading, [`ImageConfig`]
//! picks out the fields ingot uses and keeps the rest untouched in `extra`, so
//! Docker-only fields (Healthcheck, StopSignal, ...) survive. Everything ingot
//! writes goes through [`canonical_json`]: object keys sorted, no whitespace,
//! so the same content always gives the same digest, whatever the map types
//! inside the value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Serialises `value` with every object's keys sorted and no insignificant
/// whitespace.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    // serde_json's Map is a BTreeMap (the preserve_order feature is off), so
    // the round trip through Value sorts keys at every level.
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

/// The parts of an image config ingot reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// A config for a single-layer image made from a root filesystem.
    pub fn for_rootfs(diff_id: Digest, created: &str, created_by: &str) -> ImageConfig {
        ImageConfig {
            created: Some(created.to_string()),
            architecture: host_architecture().to_string(),
            os: "linux".to_string(),
            config: Some(serde_json::json!({})),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: vec![diff_id],
            },
            history: vec![serde_json::json!({ "created": created, "created_by": created_by })],
            extra: BTreeMap::new(),
        }
    }
}

/// The GOARCH name of the architecture this binary runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["zeta", "alpha", "mid"] {
            m.insert(k, 1);
        }
        assert_eq!(canonical_json(&m).unwrap(), br#"{"alpha":1,"mid":1,"zeta":1}"#);
    }

    #[test]
    fn keeps_unknown_fields() {
        let raw = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Healthcheck":{"Test":["NONE"]}},"container":"abc"}"#;
        let c = ImageConfig::parse(raw).unwrap();
        assert_eq!(c.extra["container"], "abc");
        let again = canonical_json(&c).unwrap();
        assert!(String::from_utf8(again).unwrap().contains("Healthcheck"));
    }
}
