//! The deploy ledger's rows. The store keeps them and appends only at the
//! end; what a row means and how its hash is computed is ingot-deploy's.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::Store;

/// One ledger entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub reason: Option<String>,
    pub kind: String,
    pub stack: String,
    /// Digest of `body` (the pinned stack after the change).
    pub digest: String,
    pub body: String,
    pub prev: String,
    pub hash: String,
    pub outcome: String,
    /// What the outcome was made of (JSON; e.g. each Swarm service's update
    /// state), set with the outcome; covered by the hash when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

const COLUMNS: &str = "seq, time, actor, reason, kind, stack, digest, body, prev, hash, outcome, detail";

impl Store {
    /// Every entry, in sequence order.
    pub fn ledger_rows(&self) -> Result<Vec<LedgerRow>> {
        let mut st = self
            .db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM ledger ORDER BY seq"))
            .map_err(self.db_err())?;
        st.query_map([], ledger_row)
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Entry `seq`, if there is one.
    pub fn ledger_row(&self, seq: i64) -> Result<Option<LedgerRow>> {
        let mut st = self
            .db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM ledger WHERE seq = ?1"))
            .map_err(self.db_err())?;
        st.query_row([seq], ledger_row).optional().map_err(self.db_err())
    }

    /// Appends `row`; its `seq` must be one more than the last (or 1).
    pub fn ledger_append(&mut self, row: &LedgerRow) -> Result<()> {
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| crate::StoreError::Db {
                path: self.root.join("ingot.db"),
                source,
            })?;
        let last: i64 = tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM ledger", [], |r| r.get(0))
            .map_err(|source| crate::StoreError::Db {
                path: self.root.join("ingot.db"),
                source,
            })?;
        if row.seq != last + 1 {
            return Err(crate::StoreError::Ledger(format!(
                "ledger: entry {} does not follow entry {last}",
                row.seq
            )));
        }
        tx.execute(
            &format!("INSERT INTO ledger ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                row.seq,
                row.time,
                row.actor,
                row.reason,
                row.kind,
                row.stack,
                row.digest,
                row.body,
                row.prev,
                row.hash,
                row.outcome,
                row.detail
            ],
        )
        .and_then(|_| tx.commit())
        .map_err(|source| crate::StoreError::Db {
            path: self.root.join("ingot.db"),
            source,
        })
    }

    /// Records the outcome of the last entry (its detail, its new hash).
    pub fn ledger_finish(&self, seq: i64, outcome: &str, detail: Option<&str>, hash: &str) -> Result<()> {
        let changed = self
            .db
            .execute(
                "UPDATE ledger SET outcome = ?2, hash = ?3, detail = ?4 WHERE seq = ?1 AND seq = (SELECT MAX(seq) FROM ledger)",
                params![seq, outcome, hash, detail],
            )
            .map_err(self.db_err())?;
        if changed != 1 {
            return Err(crate::StoreError::Ledger(format!(
                "ledger: entry {seq} is not the last entry; only the last one's outcome can be recorded"
            )));
        }
        Ok(())
    }
}

fn ledger_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        seq: r.get(0)?,
        time: r.get(1)?,
        actor: r.get(2)?,
        reason: r.get(3)?,
        kind: r.get(4)?,
        stack: r.get(5)?,
        digest: r.get(6)?,
        body: r.get(7)?,
        prev: r.get(8)?,
        hash: r.get(9)?,
        outcome: r.get(10)?,
        detail: r.get(11)?,
    })
}
