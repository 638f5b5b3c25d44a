//! ingot's package catalogers: what is installed in an image, read from its
//! layers' own package databases.
//!
//! Each layer is streamed once, bottom to top; the files catalogers read
//! (dpkg's `var/lib/dpkg/status` and `status.d/`, apk's
//! `lib/apk/db/installed`, Python's `*.dist-info/METADATA` and
//! `*.egg-info/PKG-INFO`, npm's `node_modules/**/package.json`) are kept by
//! path, a higher layer's copy replacing a lower one's, and whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) removing what they hide: the result is what
//! the merged file system holds. Executables are examined for Go build
//! info and cargo-auditable dependency lists ([`binaries`]). Every package
//! names the layer (diff ID) and path its record came from.
//!
//! What a layer contributes depends only on its bytes, so it is cached in
//! the store by layer digest: a re-scan, or a new image on known base
//! layers, reads only its new layers.

use std::collections::BTreeMap;
use std::io::Read;

use ingot_oci::manifest::Role;
use ingot_oci::media::{self, Compression};
use ingot_oci::Digest;
use ingot_store::Store;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] ingot_store::StoreError),
    #[error("layer {layer}: {message}")]
    Layer { layer: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ecosystem {
    Debian,
    Alpine,
    PyPI,
    #[serde(rename = "npm")]
    Npm,
    Go,
    #[serde(rename = "crates.io")]
    Cargo,
}

impl Ecosystem {
    /// The OSV ecosystem name.
    pub fn osv(self) -> &'static str {
        match self {
            Ecosystem::Debian => "Debian",
            Ecosystem::Alpine => "Alpine",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "Go",
            Ecosystem::Cargo => "crates.io",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub ecosystem: Ecosystem,
    pub purl: String,
    pub license: Option<String>,
    /// Diff ID of the layer the record came from.
    pub layer: Digest,
    /// Path of the record in the image.
    pub path: String,
}

/// The most a cataloged file may hold.
const MAX_FILE: u64 = 32 << 20;

fn interesting(path: &str) -> bool {
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || path == "lib/apk/db/installed"
        || path.ends_with(".dist-info/METADATA")
        || path.ends_with(".egg-info/PKG-INFO")
        || (path.ends_with("/package.json") && is_npm_manifest(path))
}

/// `.../node_modules/NAME/package.json` or `.../node_modules/@SCOPE/NAME/package.json`.
fn is_npm_manifest(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    (n >= 3 && parts[n - 3] == "node_modules")
        || (n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@'))
}

/// PEP 503: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize_pypi(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Bumped whenever what the catalogers find changes: cached layer catalogs
/// of another version are recomputed.
const CATALOG_VERSION: i64 = 3;

/// The most an executable may hold to be examined for build info.
const MAX_BINARY: u64 = 512 << 20;

/// What one layer contributes: package records by path, and whiteouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Entry {
    /// `.wh..wh..opq` in this directory: hides lower layers' content.
    Opaque(String),
    /// `.wh.NAME`: hides this path (and what is under it).
    Whiteout(String),
    /// A package database file or an executable, and what it records.
    File(String, Vec<Found>),
}

/// The packages installed in `image`.
pub fn catalog(store: &Store, image: &str) -> Result<Vec<Package>> {
    let img = store.resolve(image)?;
    let (_, config) = store
        .config(&img.manifest)?
        .ok_or_else(|| CatalogError::Invalid(format!("{image} is an index; catalog one platform's image")))?;
    let refs = img
        .manifest
        .references()
        .map_err(|e| CatalogError::Invalid(e.to_string()))?;
    let layers: Vec<_> = refs.into_iter().filter(|r| r.role == Role::Layer).collect();
    // path -> (layer index, packages)
    let mut files: BTreeMap<String, (usize, Vec<Found>)> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        let entries = match store
            .layer_catalog(&l.digest, CATALOG_VERSION)?
            .and_then(|j| serde_json::from_str::<Vec<Entry>>(&j).ok())
        {
            Some(e) => e,
            None => {
                let e = layer_entries(store, &l.digest, &l.media_type)?;
                let json = serde_json::to_string(&e).map_err(|e| CatalogError::Invalid(e.to_string()))?;
                // A read-only or busy store still catalogs; it just does not remember.
                if let Err(err) = store.set_layer_catalog(&l.digest, CATALOG_VERSION, &json) {
                    tracing::debug!("layer catalog of {} not cached: {err}", l.digest);
                }
                e
            }
        };
        for e in entries {
            match e {
                Entry::Opaque(dir) => {
                    let prefix = format!("{dir}/");
                    files.retain(|p, (layer, _)| *layer == i || !p.starts_with(&prefix));
                }
                Entry::Whiteout(gone) => {
                    let prefix = format!("{gone}/");
                    files.retain(|p, _| *p != gone && !p.starts_with(&prefix));
                }
                Entry::File(path, found) => {
                    files.insert(path, (i, found));
                }
            }
        }
    }
    let mut packages = Vec::new();
    for (path, (i, found)) in files {
        let layer = config
            .rootfs
            .diff_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| layers[i].digest.clone());
        packages.extend(found.into_iter().map(|(name, version, ecosystem, license)| Package {
            purl: purl(ecosystem, &name, &version),
            name,
            version,
            ecosystem,
            license,
            layer: layer.clone(),
            path: format!("/{path}"),
        }));
    }
    packages
        .sort_by(|a, b| (a.ecosystem, &a.name, &a.version, &a.path).cmp(&(b.ecosystem, &b.name, &b.version, &b.path)));
    Ok(packages)
}

/// Streams one layer and parses every package record in it.
fn layer_entries(store: &Store, digest: &Digest, media_type: &str) -> Result<Vec<Entry>> {
    let err = |m: String| CatalogError::Layer {
        layer: digest.to_string(),
        message: m,
    };
    let blob = std::io::BufReader::new(store.blobs().open(digest)?);
    let reader: Box<dyn Read> = match media::layer_compression(media_type) {
        Some(Compression::None) => Box::new(blob),
        Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        _ => return Err(err(format!("media type {media_type} cannot be read"))),
    };
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| err(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            out.push(Entry::Opaque(dir.to_string()));
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            out.push(Entry::Whiteout(if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            }));
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        if interesting(&path) {
            if entry.size() > MAX_FILE {
                return Err(err(format!("{path}: {} bytes is too large to catalog", entry.size())));
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(|e| err(format!("{path}: {e}")))?;
            let found = parse(&path, &String::from_utf8_lossy(&buf)).map_err(|e| err(format!("/{path}: {e}")))?;
            out.push(Entry::File(path, found));
        } else if executable && entry.size() >= 64 && entry.size() <= MAX_BINARY {
            let mut magic = [0u8; 4];
            if entry.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
                continue;
            }
            let mut buf = magic.to_vec();
            buf.reserve(entry.size() as usize);
            entry.read_to_end(&mut buf).map_err(|e| err(format!("{path}: {e}")))?;
            let found = binaries::packages(&buf);
            if !found.is_empty() {
                out.push(Entry::File(path, found));
            }
        }
    }
    Ok(out)
}

/// The packages an executable's own records name (Go build info,
/// cargo-auditable), as (name, version, ecosystem); for the fuzzers.
pub fn binary_packages(data: &[u8]) -> Vec<(String, String, Ecosystem)> {
    binaries::packages(data)
        .into_iter()
        .map(|(n, v, e, _)| (n, v, e))
        .collect()
}

/// Parses one package-database file by its path.
fn parse(path: &str, text: &str) -> Result<Vec<Found>, String> {
    Ok(
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            dpkg(text)?
        } else if path == "lib/apk/db/installed" {
            apk(text)
        } else if path.ends_with("/package.json") {
            npm(text).into_iter().collect()
        } else {
            python(text).into_iter().collect()
        },
    )
}

type Found = (String, String, Ecosystem, Option<String>);

/// `Key: value` paragraphs (dpkg status, RFC 822 headers); continuation
/// lines (leading space) are skipped.
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.entry(k.trim().to_string()).or_insert_with(|| v.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// dpkg's status database: every paragraph must name its package, and an
/// installed one its version; anything else is a corrupt database, not an
/// empty one.
fn dpkg(text: &str) -> Result<Vec<Found>, String> {
    let paras = paragraphs(text);
    if paras.is_empty() && !text.trim().is_empty() {
        return Err("no package records (not a dpkg status file)".into());
    }
    let mut out = Vec::new();
    for (i, p) in paras.iter().enumerate() {
        let Some(name) = p.get("Package") else {
            return Err(format!("record {}: no Package field", i + 1));
        };
        if p.get("Status").is_some_and(|s| s != "install ok installed") {
            continue;
        }
        let Some(version) = p.get("Version") else {
            return Err(format!("record {} ({name}): installed but no Version field", i + 1));
        };
        out.push((name.clone(), version.clone(), Ecosystem::Debian, None));
    }
    Ok(out)
}

fn apk(text: &str) -> Vec<Found> {
    let mut out = Vec::new();
    for record in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut license = None;
        for line in record.lines() {
            match line.split_once(':') {
                Some(("P", v)) => name = Some(v.to_string()),
                Some(("V", v)) => version = Some(v.to_string()),
                Some(("L", v)) => license = Some(v.to_string()),
                _ => {}
            }
        }
        if let (Some(n), Some(v)) = (name, version) {
            out.push((n, v, Ecosystem::Alpine, license));
        }
    }
    out
}

fn python(text: &str) -> Option<Found> {
    // Only the header block: the description follows the first blank line.
    let head = paragraphs(text.split("\n\n").next().unwrap_or(""));
    let h = head.first()?;
    let license = h
        .get("License-Expression")
        .or_else(|| h.get("License"))
        .filter(|l| !l.is_empty() && l.as_str() != "UNKNOWN")
        .cloned();
    Some((
        normalize_pypi(h.get("Name")?),
        h.get("Version")?.clone(),
        Ecosystem::PyPI,
        license,
    ))
}

fn npm(text: &str) -> Option<Found> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let license = match &v["license"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("type").and_then(|t| t.as_str()).map(String::from),
        _ => None,
    };
    Some((
        v["name"].as_str()?.to_string(),
        v["version"].as_str()?.to_string(),
        Ecosystem::Npm,
        license,
    ))
}

/// Package URLs as the purl spec writes them.
pub fn purl(eco: Ecosystem, name: &str, version: &str) -> String {
    let enc = |s: &str| s.replace('%', "%25").replace('@', "%40").replace(' ', "%20");
    match eco {
        Ecosystem::Debian => format!("pkg:deb/debian/{}@{}", enc(name), enc(version)),
        Ecosystem::Alpine => format!("pkg:apk/alpine/{}@{}", enc(name), enc(version)),
        Ecosystem::PyPI => format!("pkg:pypi/{}@{}", enc(name), enc(version)),
        Ecosystem::Npm => match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
            Some((scope, n)) => format!("pkg:npm/%40{}/{}@{}", enc(scope), enc(n), enc(version)),
            None => format!("pkg:npm/{}@{}", enc(name), enc(version)),
        },
        Ecosystem::Go => format!(
            "pkg:golang/{}@{}",
            name.split('/').map(enc).collect::<Vec<_>>().join("/"),
            enc(version)
        ),
        Ecosystem::Cargo => format!("pkg:cargo/{}@{}", enc(name), enc(version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let status = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nDescription: x\n continued\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n";
        let d: Vec<_> = dpkg(status).unwrap().into_iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(
            d,
            [
                ("libc6".into(), "2.36-9+deb12u4".into()),
                ("bash".into(), "5.2.15-2+b2".into())
            ]
        );
        assert!(dpkg("\u{0}\u{1} garbage without fields")
            .unwrap_err()
            .contains("not a dpkg status"));
        assert!(dpkg("Status: install ok installed\nVersion: 1\n")
            .unwrap_err()
            .contains("no Package"));
        assert!(dpkg("Package: x\nStatus: install ok installed\n")
            .unwrap_err()
            .contains("no Version"));
        assert_eq!(dpkg("").unwrap().len(), 0);
        let a = apk("C:Q1x=\nP:musl\nV:1.2.4-r2\nL:MIT\n\nP:busybox\nV:1.36.1-r5\n");
        assert_eq!((a[0].0.as_str(), a[0].3.as_deref(), a.len()), ("musl", Some("MIT"), 2));
        let p = python(
            "Metadata-Version: 2.1\nName: Django_REST.framework\nVersion: 3.2\nLicense: BSD\n\nName: not-this\n",
        )
        .unwrap();
        assert_eq!(
            (p.0.as_str(), p.1.as_str(), p.3.as_deref()),
            ("django-rest-framework", "3.2", Some("BSD"))
        );
        let n = npm(r#"{"name":"@scope/pkg","version":"1.0.0","license":{"type":"MIT"}}"#).unwrap();
        assert_eq!(purl(Ecosystem::Npm, &n.0, &n.1), "pkg:npm/%40scope/pkg@1.0.0");
        assert!(is_npm_manifest("app/node_modules/left-pad/package.json"));
        assert!(is_npm_manifest("node_modules/@a/b/package.json"));
        assert!(!is_npm_manifest("app/package.json"));
        assert_eq!(normalize_pypi("Foo__Bar.baz"), "foo-bar-baz");
    }
}
mod binaries;
pub mod documents;
