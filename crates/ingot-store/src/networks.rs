//! Stacks' networks: the bridge and subnet each has on this host. The
//! runtime makes the bridges; the record keeps a network's subnet stable
//! while it exists (and lets a restarted daemon find its bridges).

use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkRecord {
    /// `STACK_KEY`.
    pub name: String,
    pub stack: String,
    /// The bridge interface.
    pub bridge: String,
    /// `ADDRESS/PREFIX`.
    pub subnet: String,
    pub internal: bool,
    pub created_at: String,
}

impl Store {
    /// Records network `rec` (its name and bridge must be unused).
    pub fn put_network(&self, rec: &NetworkRecord) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO networks (name, stack, bridge, subnet, internal, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![rec.name, rec.stack, rec.bridge, rec.subnet, rec.internal as i64, rec.created_at],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    pub fn network(&self, name: &str) -> Result<Option<NetworkRecord>> {
        self.db
            .query_row(
                "SELECT name, stack, bridge, subnet, internal, created_at FROM networks WHERE name = ?1",
                [name],
                row,
            )
            .optional()
            .map_err(self.db_err())
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        let mut st = self
            .db
            .prepare("SELECT name, stack, bridge, subnet, internal, created_at FROM networks ORDER BY name")
            .map_err(self.db_err())?;
        let rows = st
            .query_map([], row)
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())?;
        Ok(rows)
    }

    pub fn delete_network(&self, name: &str) -> Result<()> {
        self.db
            .execute("DELETE FROM networks WHERE name = ?1", [name])
            .map_err(self.db_err())?;
        Ok(())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NetworkRecord> {
    Ok(NetworkRecord {
        name: r.get(0)?,
        stack: r.get(1)?,
        bridge: r.get(2)?,
        subnet: r.get(3)?,
        internal: r.get::<_, i64>(4)? != 0,
        created_at: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_recorded_once() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let rec = NetworkRecord {
            name: "shop_back".into(),
            stack: "shop".into(),
            bridge: "ingi0123456789a".into(),
            subnet: "10.240.7.0/24".into(),
            internal: true,
            created_at: "now".into(),
        };
        s.put_network(&rec).unwrap();
        assert!(s.put_network(&rec).is_err());
        assert_eq!(s.network("shop_back").unwrap(), Some(rec.clone()));
        assert_eq!(s.networks().unwrap(), vec![rec]);
        s.delete_network("shop_back").unwrap();
        assert_eq!(s.network("shop_back").unwrap(), None);
    }
}
