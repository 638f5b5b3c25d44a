//! The vulnerability database: OSV advisories kept as their JSON, indexed
//! by (ecosystem, package) of everything they affect. An import is one
//! transaction: the database holds the old set or the new one, never half.
//! Also the per-layer catalog cache of ingot-sbom (keyed by layer blob).

use rusqlite::params;

use crate::error::Result;
use crate::Store;

/// One advisory to import.
#[derive(Debug, Clone)]
pub struct AdvisoryRow {
    pub id: String,
    pub modified: Option<String>,
    /// The advisory as JSON.
    pub json: String,
    /// (ecosystem, normalised package name) of every affected package.
    pub affected: Vec<(String, String)>,
}

impl Store {
    /// Imports `rows` atomically; an advisory already there is replaced.
    /// Returns how many there are after the import.
    pub fn advisories_import(&mut self, rows: &[AdvisoryRow]) -> Result<u64> {
        let path = self.root.join("ingot.db");
        let db_err = |source| crate::StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        for r in rows {
            tx.execute("DELETE FROM osv_affected WHERE id = ?1", [&r.id])
                .map_err(db_err)?;
            tx.execute(
                "INSERT OR REPLACE INTO osv_advisories (id, modified, json) VALUES (?1, ?2, ?3)",
                params![r.id, r.modified, r.json],
            )
            .map_err(db_err)?;
            for (eco, pkg) in &r.affected {
                tx.execute(
                    "INSERT INTO osv_affected (id, ecosystem, package) VALUES (?1, ?2, ?3)",
                    params![r.id, eco, pkg],
                )
                .map_err(db_err)?;
            }
        }
        let n: i64 = tx
            .query_row("SELECT COUNT(*) FROM osv_advisories", [], |r| r.get(0))
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(n as u64)
    }

    /// The JSON of every advisory affecting (`ecosystem`, `package`).
    pub fn advisories_for(&self, ecosystem: &str, package: &str) -> Result<Vec<String>> {
        let mut st = self
            .db
            .prepare_cached(
                "SELECT DISTINCT a.json FROM osv_affected f JOIN osv_advisories a ON a.id = f.id
                 WHERE f.ecosystem = ?1 AND f.package = ?2 ORDER BY a.id",
            )
            .map_err(self.db_err())?;
        st.query_map([ecosystem, package], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// The cached catalog entries of layer blob `digest`, if computed by
    /// cataloger `version`.
    pub fn layer_catalog(&self, digest: &ingot_oci::Digest, version: i64) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        self.db
            .query_row(
                "SELECT entries FROM layer_catalog WHERE digest = ?1 AND version = ?2",
                params![digest.to_string(), version],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())
    }

    /// Remembers what layer blob `digest` contributes to a catalog.
    pub fn set_layer_catalog(&self, digest: &ingot_oci::Digest, version: i64, entries: &str) -> Result<()> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO layer_catalog (digest, version, entries) VALUES (?1, ?2, ?3)",
                params![digest.to_string(), version, entries],
            )
            .map(drop)
            .map_err(self.db_err())
    }

    /// Forgets the cached catalogs of blobs that are gone.
    pub(crate) fn forget_layer_catalogs(&self, digests: &[ingot_oci::Digest]) -> Result<()> {
        for d in digests {
            self.db
                .execute("DELETE FROM layer_catalog WHERE digest = ?1", [d.to_string()])
                .map_err(self.db_err())?;
        }
        Ok(())
    }
}
