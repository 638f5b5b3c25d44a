//! ingot's content-addressed store.
//!
//! One root directory holds everything:
//!
//! ```text
//! <root>/blobs/<alg>/<hex>   immutable, verified content (manifests, configs, layers)
//! <root>/tmp/                blobs being written; never visible as blobs
//! <root>/ingot.db            SQLite: images, tags (and later containers, ledger)
//! <root>/gc.lock             writers hold it shared, GC exclusive
//! ```
//!
//! Invariants: a blob is visible only once complete and verified; an image
//! row is inserted only after every blob it references is stored, in one
//! transaction with its tags; GC never runs while a writer holds a lease.
//! Several processes may open one root at once (SQLite WAL + file locks).

mod advisories;
mod archive;
mod blobs;
mod containers;
mod db;
mod error;
mod fsck;
mod gc;
mod images;
mod import;
mod ledger;
mod networks;
mod registry;
mod secrets;
mod unpack;
mod volumes;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub use advisories::AdvisoryRow;
pub use archive::{load, save, save_with, LoadedImage};
pub use blobs::{hash_file, BlobWriter, Blobs};
pub use containers::{ContainerRecord, ContainerState};
pub use error::{Result, StoreError};
pub use fsck::{fsck, Problem};
pub use gc::{gc, GcReport};
pub use images::{Image, ImageSummary, Removed};
pub use import::{import_rootfs, write_image, ImportOptions, Imported, LayerCompression};
pub use ledger::LedgerRow;
pub use networks::NetworkRecord;
pub use registry::{RegManifest, RegToken, TagTaken};
pub use unpack::unpack_image;
pub use volumes::{valid_volume_name, volume_path, VolumeRecord};

/// A handle on one store root.
pub struct Store {
    root: PathBuf,
    blobs: Blobs,
    db: rusqlite::Connection,
}

/// Held by every writer for the whole of its operation; while any lease is
/// held, GC waits. Dropping it releases the lock.
pub struct Lease {
    _file: File,
}

/// The mode of a store root ingot creates (and that `fsck` expects).
pub const ROOT_MODE: u32 = 0o700;
/// The mode of `ingot.db` (and its -wal and -shm files).
pub const DB_MODE: u32 = 0o600;

impl Store {
    /// Opens (creating if needed) the store at `root`; a new root is 0700
    /// and its database 0600.
    pub fn open(root: &Path) -> Result<Store> {
        let root_err = |source| StoreError::Root {
            path: root.to_path_buf(),
            source,
        };
        if !root.exists() {
            // Only root reaches into a root: unpacked layers hold setuid
            // binaries, the database holds the containers' environments.
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(ROOT_MODE)
                .create(root)
                .map_err(root_err)?;
        }
        let blobs = Blobs::new(root);
        blobs.create_dirs().map_err(root_err)?;
        let db_path = root.join("ingot.db");
        if !db_path.exists() {
            // SQLite gives its -wal and -shm files the database's mode.
            // Another process opening the new root may make it first.
            use std::os::unix::fs::OpenOptionsExt;
            let made = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(DB_MODE)
                .open(&db_path);
            match made {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => drop(other.map_err(root_err)?),
            }
        }
        let db = db::open(&db_path)?;
        Ok(Store {
            root: root.to_path_buf(),
            blobs,
            db,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    fn lock_file(&self) -> Result<File> {
        let path = self.root.join("gc.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(path))
    }

    /// Takes a writer lease: GC will not run until it is dropped.
    pub fn lease(&self) -> Result<Lease> {
        let file = self.lock_file()?;
        file.lock_shared().map_err(StoreError::io(self.root.join("gc.lock")))?;
        Ok(Lease { _file: file })
    }

    /// Takes the exclusive GC lock, waiting for writers when `wait` is set;
    /// `None` if not waiting and a writer holds a lease.
    pub(crate) fn gc_lock(&self, wait: bool) -> Result<Option<File>> {
        let file = self.lock_file()?;
        let path = self.root.join("gc.lock");
        if wait {
            file.lock().map_err(StoreError::io(path))?;
            return Ok(Some(file));
        }
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::io(path)(e)),
        }
    }

    pub(crate) fn db_err(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Db {
            path: self.root.join("ingot.db"),
            source,
        }
    }
}

/// RFC 3339 UTC time of `secs` since the epoch.
pub fn rfc3339(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// The build/import time: `SOURCE_DATE_EPOCH` if set and valid, else 0, so
/// the same input gives the same digest anywhere.
pub fn source_date_epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
