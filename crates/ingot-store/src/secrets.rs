//! Secret values, by digest. The database is the one place they rest (the
//! root is 0700 and `ingot.db` 0600); the ledger, container specs and
//! command lines name a secret's digest, never its value.

use ingot_oci::Digest;
use rusqlite::OptionalExtension;

use crate::{Result, Store};

impl Store {
    /// Keeps `value` under its digest (a value kept already is left alone).
    pub fn put_secret(&self, value: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256(value);
        self.db
            .execute(
                "INSERT OR IGNORE INTO secrets (digest, value) VALUES (?1, ?2)",
                rusqlite::params![digest.to_string(), value],
            )
            .map_err(self.db_err())?;
        Ok(digest)
    }

    /// The value kept under `digest`.
    pub fn secret(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        self.db
            .query_row(
                "SELECT value FROM secrets WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_kept_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let d = store.put_secret(b"hunter2").unwrap();
        assert_eq!(d, ingot_oci::Digest::sha256(b"hunter2"));
        assert_eq!(store.put_secret(b"hunter2").unwrap(), d);
        assert_eq!(store.secret(&d).unwrap().as_deref(), Some(&b"hunter2"[..]));
        assert_eq!(store.secret(&ingot_oci::Digest::sha256(b"other")).unwrap(), None);
    }
}
