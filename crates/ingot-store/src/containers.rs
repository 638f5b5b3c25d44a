//! Container records: what the runtime persists so that any process sharing
//! the root sees the same containers. The spec is the runtime's JSON; the
//! store only keeps it.

use ingot_oci::Digest;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::Store;

/// Lifecycle states, as `docker ps` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// The monitor died while the container was running: its status is lost.
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> ContainerState {
        match s {
            "running" => ContainerState::Running,
            "exited" => ContainerState::Exited,
            "created" => ContainerState::Created,
            _ => ContainerState::Dead,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: Digest,
    pub image_ref: String,
    /// The runtime's spec, JSON.
    pub spec: String,
    pub state: ContainerState,
    pub pid: Option<i64>,
    pub monitor_pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Bridge addresses while the container runs: one per network it
    /// joined, separated by spaces, the primary first (see [`Self::addresses`]).
    pub address: Option<String>,
}

impl ContainerRecord {
    /// The container's addresses, the primary first.
    pub fn addresses(&self) -> Vec<String> {
        self.address
            .as_deref()
            .map(|a| a.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// The address published ports and /etc/hosts use.
    pub fn primary_address(&self) -> Option<String> {
        self.addresses().into_iter().next()
    }
}

/// Columns written on insert; `address` is assigned separately.
const INSERT_COLUMNS: &str = "id, name, image, image_ref, spec, state, pid, monitor_pid, exit_code, oom_killed, error, created_at, started_at, finished_at";
const COLUMNS: &str = "id, name, image, image_ref, spec, state, pid, monitor_pid, exit_code, oom_killed, error, created_at, started_at, finished_at, address";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ContainerRecord> {
    let image: String = r.get(2)?;
    let image = image
        .parse::<Digest>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(ContainerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        image,
        image_ref: r.get(3)?,
        spec: r.get(4)?,
        state: ContainerState::parse(&r.get::<_, String>(5)?),
        pid: r.get(6)?,
        monitor_pid: r.get(7)?,
        exit_code: r.get(8)?,
        oom_killed: r.get::<_, i64>(9)? != 0,
        error: r.get(10)?,
        created_at: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        address: r.get(14)?,
    })
}

/// Restores full durability when dropped (see [`Store::relaxed`]).
struct Relaxed<'a>(&'a rusqlite::Connection);

impl Drop for Relaxed<'_> {
    fn drop(&mut self) {
        let _ = self.0.pragma_update(None, "synchronous", "FULL");
    }
}

impl Store {
    /// Container rows are committed without waiting for the disk (WAL with
    /// `synchronous=NORMAL` for that statement, FULL again after it): a
    /// container does not outlive a power loss and `reconcile` mends its
    /// row, while the next fully synchronous commit (a ledger entry, an
    /// image) makes everything before it durable too. Saves an fsync per
    /// write on a container's start and exit.
    fn relaxed(&self) -> Relaxed<'_> {
        let _ = self.db.pragma_update(None, "synchronous", "NORMAL");
        Relaxed(&self.db)
    }

    /// Records a new container; its name must be unused.
    pub fn insert_container(&self, rec: &ContainerRecord) -> Result<()> {
        let _relaxed = self.relaxed();
        let res = self.db.execute(
            &format!("INSERT INTO containers ({INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
            params![
                rec.id,
                rec.name,
                rec.image.to_string(),
                rec.image_ref,
                rec.spec,
                rec.state.as_str(),
                rec.pid,
                rec.monitor_pid,
                rec.exit_code,
                rec.oom_killed as i64,
                rec.error,
                rec.created_at,
                rec.started_at,
                rec.finished_at
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("containers.name") =>
            {
                Err(StoreError::NameInUse(rec.name.clone()))
            }
            Err(e) => Err(self.db_err()(e)),
        }
    }

    /// Records (or clears) the bridge address container `id` holds; the
    /// runtime allocates it host-wide.
    pub fn set_address(&self, id: &str, address: Option<&str>) -> Result<()> {
        let _relaxed = self.relaxed();
        self.db
            .execute("UPDATE containers SET address = ?2 WHERE id = ?1", params![id, address])
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Writes the mutable fields of `rec` back (not the address).
    pub fn update_container(&self, rec: &ContainerRecord) -> Result<()> {
        let _relaxed = self.relaxed();
        self.db
            .execute(
                "UPDATE containers SET state = ?2, pid = ?3, monitor_pid = ?4, exit_code = ?5, oom_killed = ?6,
                 error = ?7, started_at = ?8, finished_at = ?9 WHERE id = ?1",
                params![
                    rec.id,
                    rec.state.as_str(),
                    rec.pid,
                    rec.monitor_pid,
                    rec.exit_code,
                    rec.oom_killed as i64,
                    rec.error,
                    rec.started_at,
                    rec.finished_at
                ],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let mut st = self
            .db
            .prepare(&format!(
                "SELECT {COLUMNS} FROM containers ORDER BY created_at DESC, id"
            ))
            .map_err(self.db_err())?;
        st.query_map([], from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.db_err())
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn container(&self, key: &str) -> Result<ContainerRecord> {
        let by_name = self
            .db
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE name = ?1"),
                [key],
                from_row,
            )
            .optional()
            .map_err(self.db_err())?;
        if let Some(rec) = by_name {
            return Ok(rec);
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::ContainerNotFound(key.to_string()));
        }
        let mut st = self
            .db
            .prepare(&format!("SELECT {COLUMNS} FROM containers WHERE id LIKE ?1"))
            .map_err(self.db_err())?;
        let mut rows = st
            .query_map([format!("{key}%")], from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.db_err())?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            0 => Err(StoreError::ContainerNotFound(key.to_string())),
            n => Err(StoreError::Ambiguous(key.to_string(), n)),
        }
    }

    /// The build cache entry for `key`, if any.
    pub fn cache_get(&self, key: &str) -> Result<Option<String>> {
        self.db
            .query_row("SELECT value FROM build_cache WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.db_err())
    }

    /// Records a build cache entry (replacing an older one).
    pub fn cache_put(&self, key: &str, value: &str) -> Result<()> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO build_cache (key, value, used_at) VALUES (?1, ?2, datetime('now'))",
                [key, value],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    pub fn delete_container(&self, id: &str) -> Result<()> {
        let _relaxed = self.relaxed();
        self.db
            .execute("DELETE FROM containers WHERE id = ?1", [id])
            .map_err(self.db_err())?;
        Ok(())
    }
}
