//! Online GC, while the server runs and without stopping it: upload
//! sessions idle past the grace window are dropped (their files deleted),
//! and blob links older than the grace window that no manifest of their
//! repository references are removed. Blobs nothing links or references
//! any more are then swept by the store's GC, which waits for writers and
//! never takes the server down. An upload in flight is never touched: its
//! bytes are in `uploads/`, not in the blob store, until it completes.

use std::collections::HashSet;
use std::time::Duration;

use ingot_oci::manifest::Role;

use crate::server::Shared;

/// One pass; returns (sessions dropped, links removed, blobs swept).
pub fn pass(
    store: &ingot_store::Store,
    uploads_dir: &std::path::Path,
    grace: Duration,
) -> ingot_store::Result<(usize, usize, usize)> {
    let grace_s = grace.as_secs() as i64;
    let stale = store.reg_stale_uploads(grace_s)?;
    for uuid in &stale {
        let _ = std::fs::remove_file(uploads_dir.join(uuid));
        store.reg_upload_end(uuid)?;
    }
    let mut referenced: HashSet<(String, String)> = HashSet::new();
    for (repo, digest, media_type) in store.reg_all_manifests()? {
        referenced.insert((repo.clone(), digest.clone()));
        if let Ok(d) = digest.parse() {
            if let Ok(m) = store.manifest(&d, Some(&media_type)) {
                for r in m.references().unwrap_or_default() {
                    if r.role != Role::Subject {
                        referenced.insert((repo.clone(), r.digest.to_string()));
                    }
                }
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut unlinked = 0;
    for (repo, digest, linked_at) in store.reg_blob_links()? {
        if now - linked_at > grace_s && !referenced.contains(&(repo.clone(), digest.clone())) {
            store.reg_unlink_blob(&repo, &digest)?;
            unlinked += 1;
        }
    }
    let swept = match ingot_store::gc(store, false, false)? {
        Some(report) => report.removed.len(),
        None => 0,
    };
    Ok((stale.len(), unlinked, swept))
}

pub(crate) async fn run(app: Shared) {
    let every = (app.opts.grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        tokio::time::sleep(every).await;
        crate::server::auth::expire(&mut app.grants.lock().unwrap_or_else(|p| p.into_inner()));
        let a = app.clone();
        let result = tokio::task::spawn_blocking(move || {
            let s = a.store.lock().unwrap_or_else(|p| p.into_inner());
            pass(&s, &a.uploads_dir, a.opts.grace)
        })
        .await;
        match result {
            Ok(Ok((sessions, links, blobs))) if sessions + links + blobs > 0 => {
                tracing::info!(sessions, links, blobs, "registry gc")
            }
            Ok(Err(e)) => tracing::warn!(%e, "registry gc"),
            _ => {}
        }
    }
}
