//! The ledger: every change to the deployed stacks, in order, each entry
//! holding the pinned stack after the change and chained to the previous
//! entry by hash:
//!
//! `hash = sha256(canonical JSON of {seq, time, actor, reason, kind, stack,
//! digest, prev, outcome})`, `digest = sha256(body)`, `prev` = the
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

use crate::pin::PinnedStack;
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
    };
    let bytes = ingot_oci::config::canonical_json(&h).unwrap_or_default();
    Digest::sha256(&bytes).hex().to_string()
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
    if let Some(last) = rows.last() {
        if last.outcome == PENDING {
            return Err(DeployError::Ledger {
                seq: last.seq,
                why: format!("{} of stack {} is still in progress", last.kind, last.stack),
            });
        }
    }
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
    };
    row.hash = hash(&row);
    store.ledger_append(&row)?;
    Ok(row)
}

/// Seals `row` with its outcome.
pub fn finish(store: &Store, row: &LedgerRow, outcome: &str) -> Result<LedgerRow> {
    let mut row = row.clone();
    row.outcome = outcome.to_string();
    row.hash = hash(&row);
    store.ledger_finish(row.seq, &row.outcome, &row.hash)?;
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
pub fn desired(rows: &[LedgerRow]) -> Result<BTreeMap<String, PinnedStack>> {
    let mut out = BTreeMap::new();
    for r in rows.iter().filter(|r| applies(r)) {
        if r.kind == RM {
            out.remove(&r.stack);
            continue;
        }
        let s: PinnedStack = serde_json::from_str(&r.body).map_err(|e| DeployError::Ledger {
            seq: r.seq,
            why: format!("its stack does not parse: {e}"),
        })?;
        out.insert(r.stack.clone(), s);
    }
    Ok(out)
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
