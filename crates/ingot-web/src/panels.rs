//! What the pages show, read from the engine and the store (on the
//! blocking pool: SQLite and the blobs are files).

use std::collections::BTreeMap;
use std::path::Path;

use ingot_deploy::dora::{self, Report};
use ingot_deploy::drift::Difference;
use ingot_deploy::engine::{Engine, Replica, ServiceStatus};
use ingot_deploy::ledger;
use ingot_store::{LedgerRow, Store};
use serde_json::Value;

use crate::diff::{diff, Change};

/// How far back the DORA panel looks, and the fix window it uses (the
/// `ingot dora` defaults).
pub const DORA_DAYS: i64 = 30;
pub const FIX_WINDOW_HOURS: i64 = 1;
/// Weeks in each metric's trend.
pub const TREND_WEEKS: i64 = 12;
/// Entries on the overview's timeline.
pub const TIMELINE: usize = 50;

pub fn open(root: &Path) -> Result<Store, String> {
    Store::open(root).map_err(|e| e.to_string())
}

/// The ledger and whether it verifies.
pub struct Ledger {
    pub rows: Vec<LedgerRow>,
    pub broken: Option<String>,
}

pub fn ledger(store: &Store) -> Result<Ledger, String> {
    let rows = store.ledger_rows().map_err(|e| e.to_string())?;
    let broken = ledger::verify(&rows).err().map(|e| e.to_string());
    Ok(Ledger { rows, broken })
}

/// One service with its replicas and any drift.
pub struct Service {
    pub status: ServiceStatus,
    pub replicas: Vec<Replica>,
    pub drift: Vec<Difference>,
}

/// The services, each with its drift; then drift of no service the engine
/// runs (replicas the ledger does not know, stacks it wants but the engine
/// has not started); then why drift could not be checked, if so.
pub type Services = (Vec<Service>, Vec<Difference>, Option<String>);

pub fn services(engine: &Engine, store: &Store) -> Services {
    let (mut drift, drift_error) = match ingot_deploy::drift::drift(store) {
        Ok(d) => (d, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut out: Vec<Service> = engine
        .services()
        .into_iter()
        .map(|status| {
            let replicas = engine.replicas(&status.name).unwrap_or_default();
            let (mine, rest): (Vec<_>, Vec<_>) = drift.drain(..).partition(|d| d.service == status.name);
            drift = rest;
            Service {
                status,
                replicas,
                drift: mine,
            }
        })
        .collect();
    out.sort_by(|a, b| a.status.name.cmp(&b.status.name));
    (out, drift, drift_error)
}

/// The DORA panel: the last [`DORA_DAYS`] and one report per week before.
pub struct Dora {
    pub now: Report,
    /// Oldest first: (the week's last day, its report over 7 days).
    pub trend: Vec<(String, Report)>,
}

/// Over `l`'s rows; refused (the error) when they do not verify.
pub fn dora(store: &Store, l: &Ledger) -> Result<Dora, String> {
    if let Some(e) = &l.broken {
        return Err(e.clone());
    }
    let rows = &l.rows;
    let cache = std::cell::RefCell::new(BTreeMap::new());
    let commit_time = |d: &ingot_oci::Digest| -> Option<i64> {
        *cache
            .borrow_mut()
            .entry(d.to_string())
            .or_insert_with(|| ingot_build::executor::commit_time(store, d))
    };
    let now = time::OffsetDateTime::now_utc();
    let window = |end: time::OffsetDateTime, days: i64| dora::Window {
        now: end,
        since: time::Duration::days(days),
        stack: None,
        fix_window: time::Duration::hours(FIX_WINDOW_HOURS),
    };
    let ends: Vec<time::OffsetDateTime> = (0..TREND_WEEKS).rev().map(|w| now - time::Duration::weeks(w)).collect();
    let windows: Vec<dora::Window> = std::iter::once(window(now, DORA_DAYS))
        .chain(ends.iter().map(|end| window(*end, 7)))
        .collect();
    let mut reports = dora::compute_windows_verified(rows, &commit_time, &windows).map_err(|e| e.to_string())?;
    let trend = ends
        .iter()
        .map(|e| e.date().to_string())
        .zip(reports.split_off(1))
        .collect();
    Ok(Dora {
        now: reports.remove(0),
        trend,
    })
}

/// A ledger entry and what it changed in its stack.
pub struct Entry {
    pub row: LedgerRow,
    pub changes: Vec<Change>,
    /// Nothing of its stack took effect before it.
    pub new_stack: bool,
    /// The services of the stack it records.
    pub services: Vec<String>,
}

fn body(row: &LedgerRow) -> Value {
    serde_json::from_str(&row.body).unwrap_or(Value::Null)
}

/// `rows[i]` against the last earlier entry of its stack that took effect.
pub fn entry(rows: &[LedgerRow], i: usize) -> Entry {
    let row = &rows[i];
    let before = rows[..i]
        .iter()
        .rev()
        .find(|r| r.stack == row.stack && ledger::applies(r))
        .map(body);
    let after = body(row);
    let services = after["services"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    Entry {
        row: row.clone(),
        changes: diff(before.as_ref().unwrap_or(&Value::Object(Default::default())), &after),
        new_stack: before.is_none(),
        services,
    }
}

/// The newest [`TIMELINE`] entries, newest first.
pub fn timeline(rows: &[LedgerRow]) -> Vec<Entry> {
    (0..rows.len()).rev().take(TIMELINE).map(|i| entry(rows, i)).collect()
}

/// An image as the image page shows it.
pub struct Image {
    pub digest: String,
    pub tags: Vec<String>,
    /// The bill of materials as JSON leaves.
    pub bom: Vec<Change>,
    pub packages: Result<Vec<ingot_sbom::Package>, String>,
    pub findings: Vec<ingot_scan::Finding>,
    /// Referrers that are cosign-format signatures.
    pub signatures: usize,
    /// The daemon's policy on it: None without a policy.
    pub policy: Option<Result<ingot_trust::policy::Decision, String>>,
}

pub fn image(store: &Store, digest: &ingot_oci::Digest, policy: Option<&Path>) -> Result<Image, String> {
    let d = digest.to_string();
    let img = store.resolve(&d).map_err(|e| e.to_string())?;
    let bom = ingot_build::executor::read_bom(store, &d)
        .map_err(|e| e.to_string())?
        .and_then(|b| serde_json::to_value(b).ok())
        .map(|b| diff(&Value::Object(Default::default()), &b))
        .unwrap_or_default();
    let (packages, findings) = match ingot_scan::scan(store, &d) {
        Ok((p, f)) => (Ok(p), f),
        Err(e) => (Err(e.to_string()), Vec::new()),
    };
    let signatures = store
        .referrers(&img.digest)
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            store
                .blobs()
                .read(r)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|m| m["artifactType"] == ingot_trust::signature::SIGNATURE_ARTIFACT)
        })
        .count();
    let policy = policy.map(|p| {
        ingot_trust::policy::Policy::load(p)
            .and_then(|pol| ingot_trust::policy::evaluate(store, &d, &pol, time::OffsetDateTime::now_utc().date()))
            .map_err(|e| e.to_string())
    });
    let tags = store.tags_of(&img.digest).unwrap_or_default();
    Ok(Image {
        digest: d,
        tags,
        bom,
        packages,
        findings,
        signatures,
        policy,
    })
}
