//! ingot's vulnerability scanner: OSV advisories imported offline into the
//! store ([`import`]), matched against an image's packages (from
//! `ingot-sbom`'s catalogers) with each ecosystem's own version order
//! ([`version`]).
//!
//! Matching follows the OSV schema: an explicit `versions` list, or
//! `ranges` of type ECOSYSTEM or SEMVER whose events (introduced, fixed,
//! last_affected, limit) are evaluated in version order; withdrawn
//! advisories are ignored. Severity is the CVSS v3/v4 base score's band
//! where a vector is given, else the advisory's own label, else "unknown".

pub mod version;

use std::cmp::Ordering;
use std::path::Path;

use ingot_sbom::{normalize_pypi, Package};
use ingot_store::{AdvisoryRow, Store};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] ingot_store::StoreError),
    #[error(transparent)]
    Catalog(#[from] ingot_sbom::CatalogError),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ScanError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl std::str::FromStr for Severity {
    type Err = ScanError;

    fn from_str(s: &str) -> Result<Severity> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" => Severity::Low,
            "none" => Severity::None,
            "unknown" => Severity::Unknown,
            _ => {
                return Err(ScanError::Invalid(format!(
                    "invalid severity {s:?}: expected critical, high, medium, low, none or unknown"
                )))
            }
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

fn band(score: f64) -> Severity {
    match score {
        s if s >= 9.0 => Severity::Critical,
        s if s >= 7.0 => Severity::High,
        s if s >= 4.0 => Severity::Medium,
        s if s > 0.0 => Severity::Low,
        _ => Severity::None,
    }
}

/// An advisory's severity and score.
pub fn severity(adv: &Value) -> (Severity, Option<f64>) {
    for s in adv["severity"].as_array().into_iter().flatten() {
        let vector = s["score"].as_str().unwrap_or_default();
        let score = match s["type"].as_str() {
            Some("CVSS_V3") => vector.parse::<cvss::v3::Base>().ok().map(|b| b.score().value()),
            Some("CVSS_V4") => vector.parse::<cvss::v4::Vector>().ok().map(|v| v.score().value()),
            _ => None,
        };
        if let Some(score) = score {
            return (band(score), Some(score));
        }
    }
    match adv["database_specific"]["severity"]
        .as_str()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => (s, None),
        None => (Severity::Unknown, None),
    }
}

/// The name an ecosystem's advisories use for a package.
pub fn normalize(ecosystem: &str, name: &str) -> String {
    match ecosystem {
        "PyPI" => normalize_pypi(name),
        _ => name.to_string(),
    }
}

/// Reads every `.json`, `.yaml` and `.yml` advisory under `path` (a file,
/// a directory tree or a zip archive) and imports them into the store in one transaction.
/// Returns (advisories read, advisories in the database).
pub fn import(store: &mut Store, path: &Path) -> Result<(usize, u64)> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    if files.is_empty() {
        return Err(ScanError::File {
            path: path.display().to_string(),
            message: "no .json, .yaml or .yml advisories found".into(),
        });
    }
    let mut rows = Vec::new();
    for (name, text) in &files {
        let file_err = |m: String| ScanError::File {
            path: name.clone(),
            message: m,
        };
        let v: Value = if name.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| file_err(format!("invalid JSON: {e}")))?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| file_err(format!("invalid YAML: {e}")))?
        };
        let id = v["id"]
            .as_str()
            .ok_or_else(|| file_err("no \"id\": not an OSV advisory".into()))?;
        let affected = v["affected"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let eco = a["package"]["ecosystem"].as_str()?;
                // "Debian:12" counts as Debian.
                let eco = eco.split(':').next().unwrap_or(eco);
                Some((eco.to_string(), normalize(eco, a["package"]["name"].as_str()?)))
            })
            .collect();
        rows.push(AdvisoryRow {
            id: id.to_string(),
            modified: v["modified"].as_str().map(String::from),
            json: v.to_string(),
            affected,
        });
    }
    let total = store.advisories_import(&rows)?;
    Ok((rows.len(), total))
}

/// The most one advisory file may hold.
const MAX_ADVISORY: u64 = 16 << 20;

fn is_advisory(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Reads at most [`MAX_ADVISORY`] bytes of UTF-8 from `r`.
fn read_limited(r: impl std::io::Read, name: &str) -> Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    r.take(MAX_ADVISORY + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ScanError::File {
            path: name.to_string(),
            message: e.to_string(),
        })?;
    if buf.len() as u64 > MAX_ADVISORY {
        return Err(ScanError::File {
            path: name.to_string(),
            message: format!("larger than {MAX_ADVISORY} bytes"),
        });
    }
    String::from_utf8(buf).map_err(|_| ScanError::File {
        path: name.to_string(),
        message: "not UTF-8".into(),
    })
}

/// Every advisory under `path` (a file, a directory tree or a zip archive,
/// as osv.dev's `all.zip`), as (name, text), in name order.
fn collect(path: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let io_err = |e: std::io::Error| ScanError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let md = std::fs::metadata(path).map_err(io_err)?;
    if md.is_file() {
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "zip") {
            return collect_zip(path, out);
        }
        let text = read_limited(std::fs::File::open(path).map_err(io_err)?, &name)?;
        out.push((name, text));
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(io_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() || is_advisory(&p.to_string_lossy()) || p.extension().is_some_and(|e| e == "zip") {
            collect(&p, out)?;
        }
    }
    Ok(())
}

fn collect_zip(path: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let zip_err = |m: String| ScanError::File {
        path: path.display().to_string(),
        message: m,
    };
    let file = std::fs::File::open(path).map_err(|e| zip_err(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| zip_err(format!("not a readable zip archive: {e}")))?;
    let mut found = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(|e| zip_err(e.to_string()))?;
        let inner = entry.name().map_err(|e| zip_err(e.to_string()))?.into_owned();
        if !entry.is_file() || !is_advisory(&inner) {
            continue;
        }
        let name = format!("{}:{inner}", path.display());
        if entry.size() > MAX_ADVISORY {
            return Err(ScanError::File {
                path: name,
                message: format!("{} bytes is larger than {MAX_ADVISORY}", entry.size()),
            });
        }
        let text = read_limited(entry, &name)?;
        found.push((name, text));
    }
    found.sort();
    out.extend(found);
    Ok(())
}

/// One vulnerable package.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub package: String,
    pub ecosystem: String,
    pub installed: String,
    /// The first fixed version above the installed one, if any.
    pub fixed: Option<String>,
    pub id: String,
    pub aliases: Vec<String>,
    pub severity: Severity,
    pub score: Option<f64>,
    pub layer: String,
    pub path: String,
}

/// Whether `version` is affected by one `affected` entry of an advisory,
/// and the fix above it.
fn affected(eco: &str, version: &str, entry: &Value) -> (bool, Option<String>) {
    let eq = |v: &str| version::compare(eco, version, v) == Some(Ordering::Equal);
    if entry["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(eq)
    {
        return (true, fixed_above(eco, version, entry));
    }
    for range in entry["ranges"].as_array().into_iter().flatten() {
        if !matches!(range["type"].as_str(), Some("ECOSYSTEM") | Some("SEMVER")) {
            continue;
        }
        let cmp = |v: &str| -> Option<Ordering> {
            if v == "0" {
                return Some(Ordering::Greater);
            }
            version::compare(eco, version, v)
        };
        // Events in version order; "0" is below everything.
        let mut events: Vec<(&str, &str)> = range["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e.as_object()?
                    .iter()
                    .next()
                    .and_then(|(k, v)| Some((k.as_str(), v.as_str()?)))
            })
            .collect();
        events.sort_by(|a, b| match (a.1, b.1) {
            ("0", "0") => Ordering::Equal,
            ("0", _) => Ordering::Less,
            (_, "0") => Ordering::Greater,
            (x, y) => version::compare(eco, x, y).unwrap_or(Ordering::Equal),
        });
        let mut hit = false;
        for (kind, v) in events {
            let Some(o) = cmp(v) else { continue };
            match kind {
                "introduced" if o != Ordering::Less => hit = true,
                "fixed" | "limit" if o != Ordering::Less => hit = false,
                "last_affected" if o == Ordering::Greater => hit = false,
                _ => {}
            }
        }
        if hit {
            return (true, fixed_above(eco, version, entry));
        }
    }
    (false, None)
}

fn fixed_above(eco: &str, version: &str, entry: &Value) -> Option<String> {
    entry["ranges"]
        .as_array()
        .into_iter()
        .flatten()
        // GIT ranges name commits, not versions.
        .filter(|r| matches!(r["type"].as_str(), Some("ECOSYSTEM") | Some("SEMVER")))
        .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["fixed"].as_str().map(String::from))
        .filter(|f| version::compare(eco, f, version) == Some(Ordering::Greater))
        .min_by(|a, b| version::compare(eco, a, b).unwrap_or(Ordering::Equal))
}

/// Matches `packages` against the advisories in the store.
pub fn matches(store: &Store, packages: &[Package]) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    for p in packages {
        let eco = p.ecosystem.osv();
        let name = normalize(eco, &p.name);
        for text in store.advisories_for(eco, &name)? {
            let adv: Value = serde_json::from_str(&text).map_err(|e| ScanError::Invalid(e.to_string()))?;
            if adv.get("withdrawn").is_some_and(|w| !w.is_null()) {
                continue;
            }
            let mut hit = None;
            for entry in adv["affected"].as_array().into_iter().flatten() {
                let e_eco = entry["package"]["ecosystem"].as_str().unwrap_or("");
                let e_eco = e_eco.split(':').next().unwrap_or(e_eco);
                if e_eco != eco || normalize(eco, entry["package"]["name"].as_str().unwrap_or("")) != name {
                    continue;
                }
                if let (true, fixed) = affected(eco, &p.version, entry) {
                    hit = Some(fixed);
                    break;
                }
            }
            let Some(fixed) = hit else { continue };
            let (severity, score) = severity(&adv);
            out.push(Finding {
                package: p.name.clone(),
                ecosystem: eco.to_string(),
                installed: p.version.clone(),
                fixed,
                id: adv["id"].as_str().unwrap_or_default().to_string(),
                aliases: adv["aliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect(),
                severity,
                score,
                layer: p.layer.to_string(),
                path: p.path.clone(),
            });
        }
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(out)
}

/// Catalogs `image` and matches it.
pub fn scan(store: &Store, image: &str) -> Result<(Vec<Package>, Vec<Finding>)> {
    let packages = ingot_sbom::catalog(store, image)?;
    let findings = matches(store, &packages)?;
    Ok((packages, findings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_and_lists() {
        let e = json!({"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}, {"introduced": "3.0"}, {"last_affected": "3.1"}]}],
                       "versions": ["5.0"]});
        assert_eq!(affected("PyPI", "1.5", &e), (true, Some("2.0".into())));
        assert!(!affected("PyPI", "2.0", &e).0);
        assert!(!affected("PyPI", "2.5", &e).0);
        assert!(affected("PyPI", "3.1", &e).0);
        assert!(affected("PyPI", "3.1.0", &e).0, "3.1.0 == 3.1 under PEP 440");
        assert!(!affected("PyPI", "3.2", &e).0);
        assert!(affected("PyPI", "5.0.0", &e).0, "the explicit list, PEP 440-equal");
    }

    #[test]
    fn severities() {
        let adv = json!({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]});
        assert_eq!(severity(&adv), (Severity::Critical, Some(9.8)));
        assert_eq!(
            severity(&json!({"database_specific": {"severity": "MODERATE"}})).0,
            Severity::Medium
        );
        assert_eq!(severity(&json!({})).0, Severity::Unknown);
    }
}
