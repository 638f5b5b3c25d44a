//! Garbage collection: mark from image rows, sweep every other blob.
//!
//! GC holds the exclusive lock on `gc.lock`; every writer holds it shared for
//! the whole of its operation, so nothing a writer has stored but not yet
//! registered can be swept. With the lock held no writer is active, so every
//! temp file is an orphan of a killed writer and is removed too.

use std::collections::HashSet;
use std::fs;

use ingot_oci::manifest::Role;
use ingot_oci::Digest;
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::Store;

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed: Vec<Digest>,
    pub bytes_freed: u64,
    pub temp_files_removed: usize,
    pub kept: usize,
}

/// Collects garbage. With `wait` unset, returns `None` at once if a writer
/// is active.
pub fn gc(store: &Store, dry_run: bool, wait: bool) -> Result<Option<GcReport>> {
    let Some(_lock) = store.gc_lock(wait)? else {
        return Ok(None);
    };
    let marked = mark(store)?;
    let (blobs, _) = store.blobs().list()?;
    let mut report = GcReport::default();
    for d in blobs {
        if marked.contains(&d) {
            report.kept += 1;
            continue;
        }
        if dry_run {
            report.bytes_freed += store.blobs().size(&d).unwrap_or(0);
        } else {
            report.bytes_freed += store.blobs().remove(&d)?;
        }
        report.removed.push(d);
    }
    report.removed.sort();
    if !dry_run {
        store.forget_layer_catalogs(&report.removed)?;
    }
    let tmp = store.blobs().tmp_dir();
    for e in fs::read_dir(tmp).map_err(StoreError::io(tmp))? {
        let e = e.map_err(StoreError::io(tmp))?;
        if !dry_run {
            fs::remove_file(e.path()).map_err(StoreError::io(e.path()))?;
        }
        report.temp_files_removed += 1;
    }
    tracing::info!(removed = report.removed.len(), bytes = report.bytes_freed, "gc done");
    Ok(Some(report))
}

/// Every blob reachable from an image row. Fails rather than guess if a root
/// cannot be read: sweeping with an incomplete mark set would lose data.
fn mark(store: &Store) -> Result<HashSet<Digest>> {
    let mut marked = HashSet::new();
    let mut stack: Vec<(Digest, Option<String>)> = store.image_digests()?.into_iter().map(|d| (d, None)).collect();
    // The registry's content is live too: its manifests (and what they
    // reference) and every blob linked to a repository (uploads in progress
    // become links only once complete; the server unlinks unreferenced ones).
    for (_, digest, media_type) in store.reg_all_manifests()? {
        if let Ok(d) = digest.parse::<Digest>() {
            stack.push((d, Some(media_type)));
        }
    }
    for (_, digest, _) in store.reg_blob_links()? {
        if let Ok(d) = digest.parse::<Digest>() {
            marked.insert(d);
        }
    }
    while let Some((d, media_type)) = stack.pop() {
        if !marked.insert(d.clone()) {
            continue;
        }
        let m = store.manifest(&d, media_type.as_deref())?;
        let refs = m.references().map_err(|source| StoreError::Manifest {
            digest: d.clone(),
            source,
        })?;
        for r in refs {
            match r.role {
                Role::Manifest => stack.push((r.digest, Some(r.media_type))),
                Role::Subject => {}
                Role::Config | Role::Layer => {
                    marked.insert(r.digest);
                }
            }
        }
    }
    Ok(marked)
}
