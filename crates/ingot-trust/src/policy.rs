//! Deploy policy: a TOML file that says which images may run.
//!
//! ```toml
//! trusted_keys = ["keys/release.pub"]        # at least one valid signature by one of them
//! max_severity = "high"                      # critical|high|medium|low|none
//! allow_unknown_severity = false             # unknown severity counts as refused unless true
//! allow = [{ id = "PYSEC-2018-28", until = "2027-01-01" }]
//! allowed_bases = ["base:*", "sha256:..."]   # every external FROM of the build
//! require = ["git.commit", "git.clean", "reason", "sbom", "provenance"]
//! ```
//!
//! [`evaluate`] gathers the evidence (signatures, scan findings, the bill of
//! materials, attached referrers) for one image and returns every refusal,
//! each naming its rule and the offending value. `ingot verify --policy`
//! and the deploy path call the same function.

use std::path::{Path, PathBuf};

use ingot_scan::Severity;
use ingot_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::VerifyingKey;
use crate::{Result, TrustError};

use ingot_oci::media::{BOM_LABEL, IN_TOTO};
use ingot_sbom::documents::{CYCLONEDX_MEDIA_TYPE as CYCLONEDX, SPDX_MEDIA_TYPE as SPDX};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    pub max_severity: Option<String>,
    #[serde(default)]
    pub allow_unknown_severity: bool,
    #[serde(default)]
    pub allow: Vec<Allow>,
    pub allowed_bases: Option<Vec<String>>,
    #[serde(default)]
    pub require: Vec<String>,
    /// Where relative key paths are resolved from.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    pub id: String,
    /// A date (`2027-01-01`, quoted or a TOML date); the entry no longer
    /// applies after it.
    pub until: Option<toml::Value>,
}

/// One rule that refused the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub rule: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.rule, self.value, self.reason)
    }
}

/// The result of evaluating a policy against one image.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub image: String,
    pub digest: String,
    pub refusals: Vec<Refusal>,
    /// Findings the allow list let through.
    pub allowed: Vec<String>,
}

impl Decision {
    pub fn passed(&self) -> bool {
        self.refusals.is_empty()
    }
}

const REQUIRABLE: &str = "a bill-of-materials path (git.commit, git.remote, reason, project, labels.KEY, ...), git.clean, sbom, provenance or signature";

impl Policy {
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::Policy(format!("{}: {e}", path.display())))?;
        let mut p = Policy::parse(&text).map_err(|e| TrustError::Policy(format!("{}: {e}", path.display())))?;
        p.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(p)
    }

    /// Parses and checks a policy; errors name the field.
    pub fn parse(text: &str) -> std::result::Result<Policy, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if let Some(s) = &p.max_severity {
            let sev: Severity = s
                .parse()
                .map_err(|e: ingot_scan::ScanError| format!("max_severity: {e}"))?;
            if sev == Severity::Unknown {
                return Err("max_severity: \"unknown\" is not a limit; use allow_unknown_severity".into());
            }
        }
        for a in &p.allow {
            if a.id.trim().is_empty() {
                return Err("allow: an entry has an empty id".into());
            }
            if let Some(u) = &a.until {
                until_date(u).map_err(|e| format!("allow {}: until: {e}", a.id))?;
            }
        }
        for r in &p.require {
            if r.is_empty() || r.split('.').any(str::is_empty) {
                return Err(format!("require: {r:?} is not {REQUIRABLE}"));
            }
            if r == "signature" && p.trusted_keys.is_empty() {
                return Err(
                    "require: \"signature\" needs trusted_keys (a signature counts only if a trusted key verifies it)"
                        .into(),
                );
            }
        }
        Ok(p)
    }
}

fn until_date(v: &toml::Value) -> std::result::Result<time::Date, String> {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => return Err(format!("{other:?} is not a date")),
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(&s, &fmt).map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

/// The `trusted_keys` rule alone, for any signed manifest (an image, a
/// stack bundle): the first trusted key with a valid signature on
/// `subject`, or the refusal saying why none verified. A policy without
/// trusted keys refuses nothing.
pub fn signature_rule(
    store: &Store,
    subject: &ingot_oci::Digest,
    policy: &Policy,
) -> Result<(Option<String>, Option<Refusal>)> {
    if policy.trusted_keys.is_empty() {
        return Ok((None, None));
    }
    let mut reasons = Vec::new();
    for k in &policy.trusted_keys {
        let key = load_key(&policy.dir, k)?;
        match crate::signature::verify(store, &subject.to_string(), &key) {
            Ok(_) => return Ok((Some(k.clone()), None)),
            Err(TrustError::NotVerified {
                checked, reasons: r, ..
            }) => {
                reasons.push(format!(
                    "{k}: {checked} signature(s) checked{}",
                    if r.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.join("; "))
                    }
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((
        None,
        Some(Refusal {
            rule: "trusted_keys".into(),
            value: policy.trusted_keys.join(", "),
            reason: format!("no valid signature by a trusted key: {}", reasons.join("; ")),
        }),
    ))
}

/// Evaluates `policy` against `image` as of `today`.
pub fn evaluate(store: &Store, image: &str, policy: &Policy, today: time::Date) -> Result<Decision> {
    let img = store.resolve(image)?;
    // Signatures.
    let (signed_by, refused) = signature_rule(store, &img.digest, policy)?;
    let mut refusals: Vec<Refusal> = refused.into_iter().collect();
    let mut refuse = |rule: &str, value: &str, reason: String| {
        refusals.push(Refusal {
            rule: rule.to_string(),
            value: value.to_string(),
            reason,
        })
    };

    // Vulnerabilities.
    let mut allowed = Vec::new();
    if let Some(max) = &policy.max_severity {
        let max: Severity = max
            .parse()
            .map_err(|e: ingot_scan::ScanError| TrustError::Policy(e.to_string()))?;
        let (_, findings) =
            ingot_scan::scan(store, &img.digest.to_string()).map_err(|e| TrustError::Invalid(e.to_string()))?;
        for f in findings {
            let entry = policy.allow.iter().find(|a| a.id == f.id || f.aliases.contains(&a.id));
            if let Some(a) = entry {
                let until = a.until.as_ref().and_then(|u| until_date(u).ok());
                match until {
                    Some(u) if u < today => {
                        refuse(
                            "allow",
                            &a.id,
                            format!(
                                "the exception for {} expired on {u}; {} {} has it ({})",
                                a.id, f.package, f.installed, f.severity
                            ),
                        );
                    }
                    _ => allowed.push(f.id.clone()),
                }
                continue;
            }
            let what = format!("{} in {} {}", f.id, f.package, f.installed);
            if f.severity == Severity::Unknown {
                if !policy.allow_unknown_severity {
                    refuse(
                        "allow_unknown_severity",
                        "false",
                        format!("{what} has no known severity"),
                    );
                }
                continue;
            }
            let over = if max == Severity::None {
                f.severity >= Severity::None
            } else {
                f.severity > max
            };
            if over {
                refuse("max_severity", &max.to_string(), format!("{what} is {}", f.severity));
            }
        }
    }

    // Bill of materials.
    let bom = store
        .config(&img.manifest)?
        .and_then(|(_, c)| c.config)
        .and_then(|c| c["Labels"][BOM_LABEL].as_str().map(String::from))
        .and_then(|s| serde_json::from_str::<Value>(&s).ok());
    if let Some(bases) = &policy.allowed_bases {
        match &bom {
            None => refuse(
                "allowed_bases",
                &bases.join(", "),
                "the image has no bill of materials, so its base is unknown".into(),
            ),
            Some(b) => {
                for a in b["ancestors"].as_array().into_iter().flatten() {
                    let name = a["name"].as_str().unwrap_or_default();
                    let Some(digest) = a["digest"].as_str() else { continue };
                    if !bases.iter().any(|p| p == digest || glob(p, name)) {
                        refuse(
                            "allowed_bases",
                            name,
                            format!("base {name} ({digest}) matches none of {}", bases.join(", ")),
                        );
                    }
                }
            }
        }
    }

    // Requirements.
    let artifacts = referrer_types(store, &img.digest)?;
    for r in &policy.require {
        let missing = match r.as_str() {
            "sbom" => {
                (!artifacts.iter().any(|t| t == SPDX || t == CYCLONEDX)).then(|| "no SBOM is attached".to_string())
            }
            "provenance" => (!artifacts.iter().any(|t| t == IN_TOTO)).then(|| "no provenance is attached".to_string()),
            // Only a signature that verified with a trusted key counts.
            "signature" => signed_by.is_none().then(|| "no signature by a trusted key".to_string()),
            _ => match &bom {
                None => Some("the image has no bill of materials".to_string()),
                Some(b) if r == "git.clean" => match b["git"]["dirty"].as_bool() {
                    Some(false) => None,
                    Some(true) => Some("built from a work tree with uncommitted changes".to_string()),
                    None => Some("built outside a git work tree".to_string()),
                },
                Some(b) => {
                    let v = r.split('.').fold(b, |v, k| &v[k]);
                    let empty = match v {
                        Value::Null => true,
                        Value::String(s) => s.is_empty(),
                        Value::Bool(b) => !b,
                        Value::Array(a) => a.is_empty(),
                        Value::Object(o) => o.is_empty(),
                        Value::Number(_) => false,
                    };
                    empty.then(|| format!("the bill of materials has no {r}"))
                }
            },
        };
        if let Some(why) = missing {
            refuse("require", r, why);
        }
    }

    Ok(Decision {
        image: image.to_string(),
        digest: img.digest.to_string(),
        refusals,
        allowed,
    })
}

fn load_key(dir: &Path, k: &str) -> Result<VerifyingKey> {
    if k.trim_start().starts_with("-----BEGIN") {
        return VerifyingKey::from_pem(k);
    }
    let path = dir.join(k);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TrustError::Policy(format!("trusted_keys: {}: {e}", path.display())))?;
    VerifyingKey::from_pem(&text).map_err(|e| TrustError::Policy(format!("trusted_keys: {}: {e}", path.display())))
}

fn referrer_types(store: &Store, digest: &ingot_oci::Digest) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in store.referrers(digest)? {
        let m = store.manifest(&r, None)?;
        let v: Value = serde_json::from_slice(&m.bytes).unwrap_or(Value::Null);
        let t = v["artifactType"]
            .as_str()
            .or_else(|| v["config"]["mediaType"].as_str())
            .unwrap_or_default();
        out.push(t.to_string());
    }
    Ok(out)
}

/// `*` matches any run of characters (including `/` and `:`).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field() {
        let e = Policy::parse("max_severity = \"severe\"").unwrap_err();
        assert!(e.contains("max_severity") && e.contains("severe"), "{e}");
        let e = Policy::parse("trusted_key = []").unwrap_err();
        assert!(e.contains("trusted_key"), "{e}");
        let e = Policy::parse("allow = [{ id = \"X\", until = \"next year\" }]").unwrap_err();
        assert!(e.contains("allow X") && e.contains("next year"), "{e}");
        let e = Policy::parse("require = [\"git.\"]").unwrap_err();
        assert!(e.contains("git."), "{e}");
        let p = Policy::parse("allow = [{ id = \"X\", until = 2027-01-01 }, { id = \"Y\", until = \"2026-01-01\" }]")
            .unwrap();
        assert_eq!(
            until_date(p.allow[0].until.as_ref().unwrap()).unwrap().to_string(),
            "2027-01-01"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("base:*", "base:1"));
        assert!(glob("*/library/*:1", "registry.local/library/debian:1"));
        assert!(!glob("base:*", "other:1"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(glob("exact", "exact"));
    }
}
