//! The ledger: every change to the deployed stacks, in order, each entry
//! holding the pinned stack after the change and chained to the previous
//! entry by hash:
//!
//! `hash = sha256(canonical JSON of {seq, time, actor, reason, kind, stack,
//! digest, prev, outcome[, detail]})` (`detail` only when an entry has one,
//! so entries sealed before it existed keep their hashes), `digest = sha256(body)`, `prev` = the
//! previous entry's hash (64 zeros for the first).
//!
//! An entry is appended with outcome "pending" before the change is carried
//! out; its outcome (and so its hash) is set once, when the change ends.
//! Only the last entry may still change, so every sealed entry is covered
//! by its successor's `prev`. [`verify`] recomputes everything and names
//! the first entry that was edited, removed or reordered. [`desired`] folds
//! the entries into the desired state; the same entries in the same order
//! give the same desired state on any host ([`state_digest`]).

use std::collections::BTreeMap;

use ingot_oci::Digest;
use ingot_store::{LedgerRow, Store};
use serde::Serialize;

use crate::pin::{EngineKind, PinnedStack};
use crate::{DeployError, Result};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Entry kinds.
pub const DEPLOY: &str = "deploy";
pub const SCALE: &str = "scale";
pub const ROLLBACK: &str = "rollback";
pub const RM: &str = "rm";

/// Outcomes.
pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const ROLLED_BACK: &str = "rolled-back";
pub const PAUSED: &str = "paused";
pub const FAILED: &str = "failed";

pub fn hash(row: &LedgerRow) -> String {
    #[derive(Serialize)]
    struct Hashed<'a> {
        seq: i64,
        time: &'a str,
        actor: &'a str,
        reason: &'a Option<String>,
        kind: &'a str,
        stack: &'a str,
        digest: &'a str,
        prev: &'a str,
        outcome: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: &'a Option<String>,
    }
    let h = Hashed {
        seq: row.seq,
        time: &row.time,
        actor: &row.actor,
        reason: &row.reason,
        kind: &row.kind,
        stack: &row.stack,
        digest: &row.digest,
        prev: &row.prev,
        outcome: &row.outcome,
        detail: &row.detail,
    };
    let bytes = ingot_oci::config::canonical_json(&h).unwrap_or_default();
    Digest::sha256(&bytes).hex().to_string()
}

/// Whether an entry for `stack` could be appended after `rows`: no change
/// is in progress, and the stack does not live on another engine.
pub fn check_append(rows: &[LedgerRow], stack: &PinnedStack) -> Result<()> {
    if let Some(last) = rows.last() {
        if last.outcome == PENDING {
            let engine = stack_of(last).map(|s| s.engine).unwrap_or_default();
            let hint = match engine {
                EngineKind::Local => String::new(),
                other => format!(
                    " on the {other} engine (if its client died, the next `--engine {other}` command from this root seals it)"
                ),
            };
            return Err(DeployError::Ledger {
                seq: last.seq,
                why: format!("{} of stack {} is still in progress{hint}", last.kind, last.stack),
            });
        }
    }
    // One stack, one engine: moving it means removing it first.
    if let Some(there) = desired(rows)?.get(&stack.name) {
        if there.engine != stack.engine {
            return Err(DeployError::Invalid(format!(
                "stack {} is deployed on the {} engine, not {}: remove it there first (`ingot stack rm {} --engine {}`)",
                stack.name, there.engine, stack.engine, stack.name, there.engine
            )));
        }
    }
    Ok(())
}

/// Appends a pending entry for `kind` of `stack`; returns it.
pub fn append(
    store: &mut Store,
    kind: &str,
    stack: &PinnedStack,
    actor: &str,
    reason: Option<&str>,
) -> Result<LedgerRow> {
    let rows = store.ledger_rows()?;
    check_append(&rows, stack)?;
    let body = String::from_utf8(stack.canonical()).unwrap_or_default();
    let mut row = LedgerRow {
        seq: rows.last().map_or(1, |r| r.seq + 1),
        time: crate::now(),
        actor: actor.to_string(),
        reason: reason.map(String::from),
        kind: kind.to_string(),
        stack: stack.name.clone(),
        digest: Digest::sha256(body.as_bytes()).to_string(),
        body,
        prev: rows.last().map_or(GENESIS.to_string(), |r| r.hash.clone()),
        hash: String::new(),
        outcome: PENDING.to_string(),
        detail: None,
    };
    row.hash = hash(&row);
    store.ledger_append(&row)?;
    Ok(row)
}

/// Seals `row` with its outcome.
pub fn finish(store: &Store, row: &LedgerRow, outcome: &str) -> Result<LedgerRow> {
    finish_with(store, row, outcome, None)
}

/// Seals `row` with its outcome and what it was made of (`detail`, a JSON
/// object; `sealed`, the time, is added to it).
pub fn finish_with(store: &Store, row: &LedgerRow, outcome: &str, detail: Option<String>) -> Result<LedgerRow> {
    let mut row = row.clone();
    row.outcome = outcome.to_string();
    let mut d = detail
        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    d["sealed"] = serde_json::Value::String(crate::now());
    row.detail = Some(d.to_string());
    row.hash = hash(&row);
    store.ledger_finish(row.seq, &row.outcome, row.detail.as_deref(), &row.hash)?;
    Ok(row)
}

/// Checks the whole chain; the error names the first bad entry.
pub fn verify(rows: &[LedgerRow]) -> Result<()> {
    let mut prev = GENESIS.to_string();
    for (i, r) in rows.iter().enumerate() {
        let bad = |why: String| DeployError::Ledger { seq: r.seq, why };
        if r.seq != i as i64 + 1 {
            return Err(bad(format!(
                "sequence number {} where {} was expected (an entry was removed or reordered)",
                r.seq,
                i + 1
            )));
        }
        if r.prev != prev {
            return Err(bad("its previous-entry hash does not match the entry before it (an entry was removed, reordered or edited)".into()));
        }
        if Digest::sha256(r.body.as_bytes()).to_string() != r.digest {
            return Err(bad("its stack does not match its digest (the stack was edited)".into()));
        }
        if hash(r) != r.hash {
            return Err(bad("its hash does not match its content (the entry was edited)".into()));
        }
        if r.outcome == PENDING && i + 1 != rows.len() {
            return Err(bad("pending, but entries follow it".into()));
        }
        prev = r.hash.clone();
    }
    Ok(())
}

/// Whether an entry's change took effect.
pub fn applies(row: &LedgerRow) -> bool {
    matches!(row.outcome.as_str(), SUCCEEDED | PENDING | PAUSED)
}

/// The desired state: stack name -> pinned stack, from the entries that took effect.
/// Each stack's is its last such entry's (none after a `rm`), so only those
/// are parsed.
pub fn desired(rows: &[LedgerRow]) -> Result<BTreeMap<String, PinnedStack>> {
    let mut last: BTreeMap<&str, &LedgerRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| applies(r)) {
        last.insert(&r.stack, r);
    }
    let mut out = BTreeMap::new();
    for (stack, r) in last {
        if r.kind != RM {
            out.insert(stack.to_string(), stack_of(r)?);
        }
    }
    Ok(out)
}

/// When an entry was sealed (its detail's `sealed`), if it says.
pub fn sealed_at(row: &LedgerRow) -> Option<String> {
    let d: serde_json::Value = serde_json::from_str(row.detail.as_deref()?).ok()?;
    d["sealed"].as_str().map(String::from)
}

/// The desired state of the stacks deployed on `engine`.
pub fn desired_on(rows: &[LedgerRow], engine: EngineKind) -> Result<BTreeMap<String, PinnedStack>> {
    let mut all = desired(rows)?;
    all.retain(|_, s| s.engine == engine);
    Ok(all)
}

/// The stack of an entry.
pub fn stack_of(row: &LedgerRow) -> Result<PinnedStack> {
    serde_json::from_str(&row.body).map_err(|e| DeployError::Ledger {
        seq: row.seq,
        why: format!("its stack does not parse: {e}"),
    })
}

/// The stack that rolls `name` of `stack` (called `service` in errors)
/// back to the version it ran before its current one, with its
/// rollback_config as the update policy; on any engine.
pub fn rollback_target(rows: &[LedgerRow], stack: &str, name: &str, service: &str) -> Result<PinnedStack> {
    let current = desired(rows)?.remove(stack);
    let cur_version = current
        .as_ref()
        .and_then(|c| c.services.get(name))
        .map(crate::pin::PinnedService::version);
    // The latest earlier state of the stack in which this service ran another version.
    let mut target = None;
    let mut state: BTreeMap<String, PinnedStack> = BTreeMap::new();
    for r in rows.iter().filter(|r| applies(r)) {
        if r.kind == RM {
            state.remove(&r.stack);
            if r.stack == stack {
                // A removed stack's past is not its rollback target.
                target = None;
            }
        } else if let Ok(s) = serde_json::from_str::<PinnedStack>(&r.body) {
            state.insert(r.stack.clone(), s);
        }
        if let Some(s) = state.get(stack) {
            if s.services.get(name).map(crate::pin::PinnedService::version) != cur_version
                && s.services.contains_key(name)
            {
                target = Some(s.clone());
            }
        }
    }
    let Some(prev) = target else {
        return Err(DeployError::Invalid(format!(
            "service {service} has no previous version to roll back to"
        )));
    };
    let mut pinned = current.ok_or_else(|| DeployError::NotFound(format!("stack {stack} is not deployed")))?;
    let mut svc = prev.services[name].clone();
    svc.replicas = pinned.services.get(name).map_or(svc.replicas, |s| s.replicas);
    svc.update = svc.rollback.clone();
    for c in &svc.configs {
        if let Some(pc) = prev.configs.get(&c.name) {
            pinned.configs.insert(c.name.clone(), pc.clone());
        }
    }
    for m in &svc.secrets {
        if let Some(ps) = prev.secrets.get(&m.name) {
            pinned.secrets.insert(m.name.clone(), ps.clone());
        }
    }
    pinned.services.insert(name.to_string(), svc);
    // No longer any bundle's application (crate::bundle::check).
    pinned.bundle = None;
    Ok(pinned)
}

/// The digest of a desired state (equal on every host that replayed the same entries).
pub fn state_digest(state: &BTreeMap<String, PinnedStack>) -> String {
    let bytes = ingot_oci::config::canonical_json(state).unwrap_or_default();
    Digest::sha256(&bytes).to_string()
}

/// Copies `from`'s entries into `to`, which must hold a prefix of them.
/// Returns how many were appended.
pub fn replay(from: &Store, to: &mut Store) -> Result<usize> {
    let rows = from.ledger_rows()?;
    verify(&rows)?;
    let have = to.ledger_rows()?;
    verify(&have)?;
    for (a, b) in have.iter().zip(&rows) {
        if a != b {
            return Err(DeployError::Ledger {
                seq: a.seq,
                why: "the target root's ledger diverges from the source's here".into(),
            });
        }
    }
    if have.len() > rows.len() {
        return Err(DeployError::Invalid(format!(
            "the target root's ledger has {} entries, more than the source's {}",
            have.len(),
            rows.len()
        )));
    }
    for r in &rows[have.len()..] {
        to.ledger_append(r)?;
    }
    Ok(rows.len() - have.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(name: &str) -> PinnedStack {
        PinnedStack {
            name: name.into(),
            services: BTreeMap::new(),
            configs: BTreeMap::new(),
            secrets: BTreeMap::new(),
            volumes: BTreeMap::new(),
            networks: BTreeMap::new(),
            engine: Default::default(),
            bundle: None,
        }
    }

    #[test]
    fn chain_detects_edits_removals_and_reorders() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        for (i, n) in ["a", "b", "a"].iter().enumerate() {
            let r = append(&mut store, DEPLOY, &stack(n), "test", Some(&format!("change {i}"))).unwrap();
            assert!(
                append(&mut store, DEPLOY, &stack(n), "test", None).is_err(),
                "one change at a time"
            );
            finish(&store, &r, SUCCEEDED).unwrap();
        }
        let rows = store.ledger_rows().unwrap();
        verify(&rows).unwrap();
        assert_eq!(desired(&rows).unwrap().len(), 2);

        let mut edited = rows.clone();
        edited[1].reason = Some("something else".into());
        assert!(matches!(verify(&edited), Err(DeployError::Ledger { seq: 2, .. })));
        let mut removed = rows.clone();
        removed.remove(1);
        assert!(matches!(verify(&removed), Err(DeployError::Ledger { seq: 3, .. })));
        let mut swapped = rows.clone();
        swapped.swap(0, 1);
        assert!(matches!(verify(&swapped), Err(DeployError::Ledger { seq: 2, .. })));
        let mut body = rows.clone();
        body[0].body = body[0].body.replace("\"a\"", "\"z\"");
        assert!(matches!(verify(&body), Err(DeployError::Ledger { seq: 1, .. })));
    }
}
