//! `ingot fsck`: re-hash every blob and check every image's references.

use std::fmt;

use ingot_oci::config::ImageConfig;
use ingot_oci::manifest::{Content, Role};
use ingot_oci::Digest;
use serde::Serialize;

use crate::blobs::hash_file;
use crate::error::{Result, StoreError};
use crate::Store;

/// One inconsistency, naming the object and what was expected of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.problem)
    }
}

/// Checks the whole store; an empty list means consistent.
pub fn fsck(store: &Store) -> Result<(usize, Vec<Problem>)> {
    let mut problems = Vec::new();
    let (blobs, odd) = store.blobs().list()?;
    for path in odd {
        problems.push(Problem {
            object: path.display().to_string(),
            problem: "file in the blob area whose name is not a digest".into(),
        });
    }
    let mut bad = std::collections::HashSet::new();
    for d in &blobs {
        let path = store.blobs().path(d);
        match hash_file(&path, d.algorithm()) {
            Ok(actual) if actual == *d => {}
            Ok(actual) => {
                bad.insert(d.clone());
                problems.push(Problem {
                    object: format!("blob {d}"),
                    problem: format!("digest mismatch (content hashes to {actual})"),
                });
            }
            Err(e) => problems.push(Problem {
                object: format!("blob {d}"),
                problem: format!("unreadable: {e}"),
            }),
        }
    }
    problems.extend(modes(store));
    let mut checked = std::collections::HashSet::new();
    for image in store.image_digests()? {
        check_manifest(store, &image, None, &bad, &mut checked, &mut problems);
    }
    Ok((blobs.len(), problems))
}

fn check_manifest(
    store: &Store,
    digest: &Digest,
    media_type: Option<&str>,
    bad: &std::collections::HashSet<Digest>,
    checked: &mut std::collections::HashSet<Digest>,
    problems: &mut Vec<Problem>,
) {
    if !checked.insert(digest.clone()) || bad.contains(digest) {
        return;
    }
    let mut report = |object: String, problem: String| problems.push(Problem { object, problem });
    let manifest = match store.manifest(digest, media_type) {
        Ok(m) => m,
        Err(StoreError::BlobMissing(_)) => return report(format!("manifest {digest}"), "blob missing".into()),
        Err(e) => return report(format!("manifest {digest}"), e.to_string()),
    };
    let refs = match manifest.references() {
        Ok(r) => r,
        Err(e) => return report(format!("manifest {digest}"), e.to_string()),
    };
    let mut children = Vec::new();
    for r in &refs {
        if r.role == Role::Subject {
            continue;
        }
        let what = format!("manifest {digest}: {:?} {}", r.role, r.digest).to_lowercase();
        match store.blobs().size(&r.digest) {
            Ok(size) if size != r.size => {
                report(what, format!("size mismatch (expected {} bytes, got {size})", r.size))
            }
            Ok(_) if bad.contains(&r.digest) => report(what, "referenced blob is corrupt".into()),
            Ok(_) => {
                if r.role == Role::Manifest {
                    children.push(r.clone());
                }
            }
            Err(_) => report(what, "referenced blob missing".into()),
        }
    }
    if let Content::Image(m) = &manifest.content {
        // Artifacts (signatures, SBOMs) carry other kinds of config.
        let image_config = |r: &&ingot_oci::manifest::Reference| {
            r.role == Role::Config
                && matches!(
                    r.media_type.as_str(),
                    ingot_oci::media::OCI_CONFIG | ingot_oci::media::DOCKER_CONFIG
                )
        };
        if let Some(cfg) = refs.iter().find(image_config) {
            if !bad.contains(&cfg.digest) {
                match store.blobs().read(&cfg.digest).map(|b| ImageConfig::parse(&b)) {
                    Ok(Ok(c)) if c.rootfs.diff_ids.len() != m.layers().len() => report(
                        format!("config {}", cfg.digest),
                        format!("{} diff_ids for {} layers", c.rootfs.diff_ids.len(), m.layers().len()),
                    ),
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(e)) => report(format!("config {}", cfg.digest), format!("invalid JSON: {e}")),
                }
            }
        }
    }
    for c in children {
        check_manifest(store, &c.digest, Some(&c.media_type), bad, checked, problems);
    }
}

/// Files at rest that others than root could reach: the root, the layer
/// cache and the containers' directories (setuid binaries of unpacked
/// layers, the CVE-2021-41091 pattern), and the database.
pub fn modes(store: &Store) -> Vec<Problem> {
    use std::os::unix::fs::PermissionsExt;
    let root = store.root();
    let mut out = Vec::new();
    let checks = [
        (root.to_path_buf(), crate::ROOT_MODE),
        (root.join("layers"), 0o700),
        (root.join("containers"), 0o700),
        (root.join("ingot.db"), crate::DB_MODE),
        (root.join("ingot.db-wal"), crate::DB_MODE),
        (root.join("ingot.db-shm"), crate::DB_MODE),
    ];
    for (path, want) in checks {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            out.push(Problem {
                object: path.display().to_string(),
                problem: format!(
                    "mode {mode:04o} lets other users in (expected {want:04o}: chmod {want:o} {})",
                    path.display()
                ),
            });
        }
    }
    out
}
