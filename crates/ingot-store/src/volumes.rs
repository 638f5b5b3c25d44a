//! Named volumes: directories that outlive containers, `<root>/volumes/
//! <name>/_data`, recorded with the stack that declared them. A volume in
//! use by a container (running or not) is never removed.

use std::path::PathBuf;

use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeRecord {
    pub name: String,
    /// The stack that declared it; none for `ingot volume create`.
    pub stack: Option<String>,
    pub created_at: String,
    /// Where its data is.
    pub mountpoint: PathBuf,
}

/// Whether `name` can name a volume (it becomes a directory name).
pub fn valid_volume_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Where volume `name` of the store at `root` keeps its data:
/// `<root>/volumes/<name>/_data`.
pub fn volume_path(root: &std::path::Path, name: &str) -> PathBuf {
    root.join("volumes").join(name).join("_data")
}

impl Store {
    pub fn volume_path(&self, name: &str) -> PathBuf {
        volume_path(self.root(), name)
    }

    /// Creates volume `name` (declared by `stack`) unless it exists; returns it.
    pub fn create_volume(&self, name: &str, stack: Option<&str>) -> Result<VolumeRecord> {
        if !valid_volume_name(name) {
            return Err(StoreError::VolumeName(name.to_string()));
        }
        let data = self.volume_path(name);
        let all = self.root().join("volumes");
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io { path, source }
        };
        if !all.exists() {
            use std::os::unix::fs::DirBuilderExt;
            // Volumes hold containers' data, setuid files among them.
            std::fs::DirBuilder::new().mode(0o700).create(&all).map_err(io(&all))?;
        }
        std::fs::create_dir_all(&data).map_err(io(&data))?;
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.db
            .execute(
                "INSERT OR IGNORE INTO volumes (name, stack, created_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![name, stack, now],
            )
            .map_err(self.db_err())?;
        self.volume(name)
    }

    pub fn volume(&self, name: &str) -> Result<VolumeRecord> {
        self.db
            .query_row(
                "SELECT name, stack, created_at FROM volumes WHERE name = ?1",
                [name],
                |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.db_err())?
            .map(|(name, stack, created_at)| VolumeRecord {
                mountpoint: self.volume_path(&name),
                name,
                stack,
                created_at,
            })
            .ok_or_else(|| StoreError::VolumeNotFound(name.to_string()))
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let mut st = self
            .db
            .prepare("SELECT name FROM volumes ORDER BY name")
            .map_err(self.db_err())?;
        let names: Vec<String> = st
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())?;
        names.iter().map(|n| self.volume(n)).collect()
    }

    /// The containers (running or not) that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        let path = self.volume_path(name);
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let same = |s: &str| {
            let p = std::path::Path::new(s);
            p == path || std::fs::canonicalize(p).is_ok_and(|c| c == path)
        };
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| {
                serde_json::from_str::<serde_json::Value>(&c.spec).is_ok_and(|spec| {
                    spec["binds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|b| b["source"].as_str().is_some_and(same))
                })
            })
            .map(|c| c.name)
            .collect())
    }

    /// Removes volume `name` and its data; refused while a container uses it.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        self.volume(name)?;
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(StoreError::VolumeInUse {
                name: name.to_string(),
                containers: users,
            });
        }
        let dir = self.root().join("volumes").join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path: dir, source }),
        }
        self.db
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .map_err(self.db_err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn volumes_are_created_once_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let v = store.create_volume("demo_data", Some("demo")).unwrap();
        std::fs::write(v.mountpoint.join("x"), "kept").unwrap();
        let again = store.create_volume("demo_data", Some("demo")).unwrap();
        assert_eq!(again, v);
        assert_eq!(std::fs::read_to_string(again.mountpoint.join("x")).unwrap(), "kept");
        assert_eq!(store.volumes().unwrap(), std::slice::from_ref(&v));
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(store.create_volume(bad, None), Err(crate::StoreError::VolumeName(_))),
                "{bad}"
            );
        }
        store.remove_volume("demo_data").unwrap();
        assert!(!v.mountpoint.exists());
        assert!(matches!(
            store.volume("demo_data"),
            Err(crate::StoreError::VolumeNotFound(_))
        ));
    }
}
