//! The metadata database: schema and migrations.
//!
//! Migrations are applied in order and recorded in `PRAGMA user_version`;
//! each runs in its own transaction, so a crash leaves the previous version.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: images and tags
    "CREATE TABLE images (
        digest     TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        size       INTEGER NOT NULL,
        created    TEXT,
        added_at   TEXT NOT NULL
     );
     CREATE TABLE tags (
        name   TEXT NOT NULL,
        tag    TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
        PRIMARY KEY (name, tag)
     );
     CREATE INDEX tags_digest ON tags(digest);",
    // 2: containers; the spec is the runtime's JSON, opaque to the store
    "CREATE TABLE containers (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        image       TEXT NOT NULL,
        image_ref   TEXT NOT NULL,
        spec        TEXT NOT NULL,
        state       TEXT NOT NULL,
        pid         INTEGER,
        monitor_pid INTEGER,
        exit_code   INTEGER,
        oom_killed  INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        created_at  TEXT NOT NULL,
        started_at  TEXT,
        finished_at TEXT,
        address     TEXT
     );",
    // 3: the build cache: step key -> result (the builder's JSON)
    "CREATE TABLE build_cache (
        key     TEXT PRIMARY KEY,
        value   TEXT NOT NULL,
        used_at TEXT NOT NULL
     );",
    // 4: the registry's view: blobs linked to repositories, manifests (bytes
    // are blobs), tags, upload sessions
    "CREATE TABLE reg_blobs (
        repo   TEXT NOT NULL,
        digest TEXT NOT NULL,
        linked_at INTEGER NOT NULL,
        PRIMARY KEY (repo, digest)
     );
     CREATE TABLE reg_manifests (
        repo          TEXT NOT NULL,
        digest        TEXT NOT NULL,
        media_type    TEXT NOT NULL,
        size          INTEGER NOT NULL,
        artifact_type TEXT,
        subject       TEXT,
        annotations   TEXT,
        PRIMARY KEY (repo, digest)
     );
     CREATE INDEX reg_manifests_subject ON reg_manifests(repo, subject);
     CREATE TABLE reg_tags (
        repo   TEXT NOT NULL,
        tag    TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (repo, tag)
     );
     CREATE TABLE reg_uploads (
        uuid    TEXT PRIMARY KEY,
        repo    TEXT NOT NULL,
        started INTEGER NOT NULL
     );",
    // 5: registry access tokens (only their sha256 is kept)
    "CREATE TABLE reg_tokens (
        hash    TEXT PRIMARY KEY,
        pattern TEXT NOT NULL,
        pull    INTEGER NOT NULL,
        push    INTEGER NOT NULL,
        created TEXT NOT NULL
     );",
    // 6: referrers (signatures, SBOMs, ...) know their subject
    "ALTER TABLE images ADD COLUMN subject TEXT;
     CREATE INDEX images_subject ON images(subject);",
    // 7: vulnerability advisories (OSV JSON), by the packages they affect
    "CREATE TABLE osv_advisories (
        id       TEXT PRIMARY KEY,
        modified TEXT,
        json     TEXT NOT NULL
     );
     CREATE TABLE osv_affected (
        id        TEXT NOT NULL REFERENCES osv_advisories(id) ON DELETE CASCADE,
        ecosystem TEXT NOT NULL,
        package   TEXT NOT NULL
     );
     CREATE INDEX osv_affected_package ON osv_affected(ecosystem, package);",
    // 8: what each layer blob contributes to a package catalog (a cache)
    "CREATE TABLE layer_catalog (
        digest  TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        entries TEXT NOT NULL
     );",
    // 9: the deploy ledger: every change, hash-chained
    "CREATE TABLE ledger (
        seq     INTEGER PRIMARY KEY,
        time    TEXT NOT NULL,
        actor   TEXT NOT NULL,
        reason  TEXT,
        kind    TEXT NOT NULL,
        stack   TEXT NOT NULL,
        digest  TEXT NOT NULL,
        body    TEXT NOT NULL,
        prev    TEXT NOT NULL,
        hash    TEXT NOT NULL,
        outcome TEXT NOT NULL
     );",
    // 10: secret values by digest (the ledger names digests only)
    "CREATE TABLE secrets (
        digest  TEXT PRIMARY KEY,
        value   BLOB NOT NULL
     );",
    // 11: named volumes (their data is <root>/volumes/<name>/_data)
    "CREATE TABLE volumes (
        name       TEXT PRIMARY KEY,
        stack      TEXT,
        created_at TEXT NOT NULL
     );",
    // 12: stacks' networks (bridges and subnets on this host)
    "CREATE TABLE networks (
        name       TEXT PRIMARY KEY,
        stack      TEXT NOT NULL,
        bridge     TEXT NOT NULL UNIQUE,
        subnet     TEXT NOT NULL,
        internal   INTEGER NOT NULL,
        created_at TEXT NOT NULL
     );",
    // 13: what a change's outcome was made of (per-service states of a
    // Swarm update), sealed with the outcome
    "ALTER TABLE ledger ADD COLUMN detail TEXT;",
];

pub(crate) fn open(path: &Path) -> Result<Connection> {
    let err = |source| StoreError::Db {
        path: path.to_path_buf(),
        source,
    };
    // While one process turns a new database into WAL mode, others can get
    // SQLITE_BUSY at once, without the busy handler: retry the whole open.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(2);
    loop {
        match try_open(path) {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other.map_err(err),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn try_open(path: &Path) -> rusqlite::Result<Connection> {
    let mut db = Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(30))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    // The last connection to close would checkpoint and delete the WAL,
    // and the next process recreate it: four fsyncs per short-lived
    // command (`ingot run --rm`) for nothing durability needs. The WAL stays
    // (ingot.db-wal is part of the database) and is checkpointed as it grows
    // past 100 pages: the first process to open the database after the last
    // one closed reads the whole WAL to rebuild its index, so it stays small.
    db.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    db.pragma_update(None, "wal_autocheckpoint", 100)?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut db)?;
    Ok(db)
}

fn migrate(db: &mut Connection) -> rusqlite::Result<()> {
    // Up to date (every open but the first of a new build): no write lock.
    let version: usize = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= MIGRATIONS.len() {
        return Ok(());
    }
    loop {
        // IMMEDIATE: two processes opening a new root must not both migrate.
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}
