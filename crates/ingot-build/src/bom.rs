//! The bill of materials every built image carries: the answers to "why,
//! where, when, from what, how to start / validate / monitor / update, which
//! source, which tags, which project, what else", stored in the image's own
//! config labels and manifest annotations, so the image answers by itself.
//!
//! Keys: OCI's `org.opencontainers.image.*` where OCI has one (created,
//! source, revision, ref.name, title, base.name, base.digest), and
//! `dev.ingot.bom` holding the whole record as canonical JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::git::GitInfo;

/// The label/annotation holding the whole record.
pub const BOM_KEY: &str = ingot_oci::media::BOM_LABEL;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ancestor {
    /// The stage that used it (its name, or its index).
    pub stage: String,
    /// As written in FROM (after ARG substitution).
    pub name: String,
    /// Manifest digest; `None` for `scratch`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bom {
    /// Why: `--reason`.
    pub reason: Option<String>,
    /// Where: the builder.
    pub builder: Builder,
    /// When: RFC 3339, from SOURCE_DATE_EPOCH.
    pub created: String,
    pub ancestors: Vec<Ancestor>,
    pub start: Start,
    /// Validate: the HEALTHCHECK, as in the config.
    pub validate: Option<Value>,
    pub monitor: Monitor,
    /// Update: the update policy label's value, if given.
    pub update: Option<String>,
    pub git: Option<GitInfo>,
    pub tags: Vec<String>,
    pub project: String,
    /// Any metadata: every label of the image (the Dockerfile's LABELs,
    /// those it inherits) and every `--label`, which wins.
    pub labels: BTreeMap<String, String>,
    /// The RUN steps that had a network: such an image is reproducible only
    /// as far as what they downloaded is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<NetworkedStep>,
}

/// A RUN step that ran with a network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkedStep {
    /// Its stage (name, or index).
    pub stage: String,
    /// The instruction line as written.
    pub step: String,
    /// `bridge` (egress NAT) or `host`.
    pub network: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    pub host: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: String,
    pub workdir: String,
    /// Names only: values can be secrets.
    pub env: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
    /// `--label` entries whose key starts with `monitor.`.
    pub hints: BTreeMap<String, String>,
}

/// The `org.opencontainers.image.*` keys [`Bom::annotations`] writes.
const OWN_OCI_KEYS: [&str; 7] = [
    "created",
    "title",
    "source",
    "revision",
    "ref.name",
    "base.name",
    "base.digest",
];

/// The label that carries the update policy (`--label update.policy=...`).
pub const UPDATE_LABEL: &str = "update.policy";

impl Bom {
    /// Fills the start/validate/monitor answers and the labels from the
    /// final image config (a base image's bill of materials is not this
    /// one's metadata: its keys are left out).
    pub fn describe_config(&mut self, config: &serde_json::Map<String, Value>) {
        if let Some(labels) = config.get("Labels").and_then(Value::as_object) {
            for (k, v) in labels {
                let own = k == BOM_KEY
                    || OWN_OCI_KEYS
                        .iter()
                        .any(|o| k.strip_prefix("org.opencontainers.image.") == Some(o));
                if let (false, Some(v)) = (own, v.as_str()) {
                    self.labels.entry(k.clone()).or_insert_with(|| v.to_string());
                }
            }
        }
        let strings = |k: &str| -> Vec<String> {
            config
                .get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let string = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        self.start = Start {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            user: string("User"),
            workdir: string("WorkingDir"),
            env: strings("Env")
                .iter()
                .map(|e| e.split('=').next().unwrap_or_default().to_string())
                .collect(),
        };
        self.validate = config.get("Healthcheck").cloned();
        self.monitor = Monitor {
            exposed_ports: config
                .get("ExposedPorts")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            stop_signal: config.get("StopSignal").and_then(Value::as_str).map(String::from),
            hints: self
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with("monitor."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        self.update = self.labels.get(UPDATE_LABEL).cloned();
    }

    /// How to validate it, as a person reads it: the health check's
    /// command, then its timing (Docker's defaults where unset).
    pub fn validate_text(&self) -> String {
        let Some(h) = &self.validate else {
            return "-".into();
        };
        let test: Vec<&str> = h["Test"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let command = match test.split_first() {
            Some((&"NONE", _)) => return "none (HEALTHCHECK NONE)".into(),
            Some((&"CMD-SHELL", rest)) => rest.join(" "),
            Some((&"CMD", rest)) => rest
                .iter()
                .map(
                    |w| match w.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                        true => format!("'{}'", w.replace('\'', "'\\''")),
                        false => w.to_string(),
                    },
                )
                .collect::<Vec<_>>()
                .join(" "),
            _ => return h.to_string(),
        };
        let secs = |key: &str, default: f64| h[key].as_f64().map_or(default, |ns| ns / 1e9);
        let human = |s: f64| match s {
            s if s >= 60.0 && s % 60.0 == 0.0 => format!("{}m", s / 60.0),
            s if s >= 1.0 || s == 0.0 => format!("{s}s"),
            s => format!("{}ms", (s * 1000.0).round()),
        };
        let mut text = format!(
            "{command}  (every {}, timeout {}, {} retries",
            human(secs("Interval", 30.0)),
            human(secs("Timeout", 30.0)),
            h["Retries"].as_u64().unwrap_or(3)
        );
        let start = secs("StartPeriod", 0.0);
        if start > 0.0 {
            text.push_str(&format!(", start period {}", human(start)));
        }
        text.push(')');
        text
    }

    /// The labels/annotations that carry this record.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let oci = |k: &str| format!("org.opencontainers.image.{k}");
        a.insert(oci("created"), self.created.clone());
        a.insert(oci("title"), self.project.clone());
        if let Some(g) = &self.git {
            if let Some(r) = &g.remote {
                a.insert(oci("source"), r.clone());
            }
            if let Some(c) = &g.commit {
                a.insert(oci("revision"), c.clone());
            }
        }
        if let Some(t) = self.tags.first() {
            a.insert(oci("ref.name"), t.clone());
        }
        if let Some(base) = self.ancestors.last() {
            a.insert(oci("base.name"), base.name.clone());
            if let Some(d) = &base.digest {
                a.insert(oci("base.digest"), d.clone());
            }
        }
        let json = ingot_oci::config::canonical_json(self).unwrap_or_default();
        a.insert(BOM_KEY.to_string(), String::from_utf8_lossy(&json).into_owned());
        a
    }

    /// Reads the record back from an image config's labels.
    pub fn from_labels(labels: &serde_json::Map<String, Value>) -> Option<Bom> {
        serde_json::from_str(labels.get(BOM_KEY)?.as_str()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_of_the_dockerfile_join_the_flags_and_health_checks_read_as_text() {
        let mut bom = Bom {
            labels: [("team".to_string(), "flag".to_string())].into(),
            ..Default::default()
        };
        let config = json!({
            "Labels": {"team": "dockerfile", "maintainer": "ops@example.invalid", "monitor.dashboard": "d1",
                       "dev.ingot.bom": "{}", "org.opencontainers.image.created": "x",
                       "org.opencontainers.image.vendor": "acme"},
            "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- localhost:8080/health"],
                            "Interval": 5_000_000_000u64, "Timeout": 2_000_000_000u64, "Retries": 3,
                            "StartPeriod": 500_000_000u64},
        });
        bom.describe_config(config.as_object().unwrap());
        assert_eq!(
            bom.labels.keys().collect::<Vec<_>>(),
            [
                "maintainer",
                "monitor.dashboard",
                "org.opencontainers.image.vendor",
                "team"
            ]
        );
        assert_eq!(bom.labels["team"], "flag", "a --label wins");
        assert_eq!(bom.monitor.hints["monitor.dashboard"], "d1");
        assert_eq!(
            bom.validate_text(),
            "wget -q -O- localhost:8080/health  (every 5s, timeout 2s, 3 retries, start period 500ms)"
        );
        bom.validate = Some(
            json!({"Test": ["CMD", "/bin/check", "a b"], "Interval": 90_000_000_000u64, "Timeout": 120_000_000_000u64}),
        );
        assert_eq!(
            bom.validate_text(),
            "/bin/check 'a b'  (every 90s, timeout 2m, 3 retries)"
        );
        bom.validate = Some(json!({"Test": ["NONE"]}));
        assert_eq!(bom.validate_text(), "none (HEALTHCHECK NONE)");
        bom.validate = None;
        assert_eq!(bom.validate_text(), "-");
    }
}
