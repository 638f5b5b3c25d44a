//! The registry's metadata: which blobs and manifests each repository
//! holds, its tags, and open upload sessions. Content lives in the one blob
//! store; a repository only links to it (as the distribution registry does),
//! so a blob pushed to two repositories, built or pulled is stored once.

use rusqlite::{params, OptionalExtension};

use crate::error::Result;
use crate::Store;

/// A manifest as a repository holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegManifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// JSON object, or `None`.
    pub annotations: Option<String>,
}

/// Pushing a tag that exists with another digest, with tag immutability on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTaken {
    pub existing: String,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn manifest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegManifest> {
    Ok(RegManifest {
        digest: r.get(0)?,
        media_type: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        artifact_type: r.get(3)?,
        subject: r.get(4)?,
        annotations: r.get(5)?,
    })
}

const MANIFEST_COLUMNS: &str = "digest, media_type, size, artifact_type, subject, annotations";

impl Store {
    pub fn reg_link_blob(&self, repo: &str, digest: &str) -> Result<()> {
        self.db
            .execute(
                "INSERT OR IGNORE INTO reg_blobs (repo, digest, linked_at) VALUES (?1, ?2, ?3)",
                params![repo, digest, now()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    pub fn reg_has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        self.db
            .query_row(
                "SELECT 1 FROM reg_blobs WHERE repo = ?1 AND digest = ?2",
                [repo, digest],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(self.db_err())
    }

    /// Unlinks a blob from a repository; whether it was linked.
    pub fn reg_unlink_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        self.db
            .execute("DELETE FROM reg_blobs WHERE repo = ?1 AND digest = ?2", [repo, digest])
            .map(|n| n > 0)
            .map_err(self.db_err())
    }

    /// Records a manifest in `repo` and points `tag` at it, in one
    /// transaction; with `immutable`, an existing tag may only be pushed
    /// again with the same digest.
    pub fn reg_put_manifest(
        &self,
        repo: &str,
        m: &RegManifest,
        tag: Option<&str>,
        immutable: bool,
    ) -> Result<std::result::Result<(), TagTaken>> {
        let tx = rusqlite::Transaction::new_unchecked(&self.db, rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        if let Some(tag) = tag {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT digest FROM reg_tags WHERE repo = ?1 AND tag = ?2",
                    [repo, tag],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.db_err())?;
            if let Some(existing) = existing.filter(|e| immutable && *e != m.digest) {
                return Ok(Err(TagTaken { existing }));
            }
        }
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO reg_manifests (repo, {MANIFEST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                repo,
                m.digest,
                m.media_type,
                m.size as i64,
                m.artifact_type,
                m.subject,
                m.annotations
            ],
        )
        .map_err(self.db_err())?;
        if let Some(tag) = tag {
            tx.execute(
                "INSERT OR REPLACE INTO reg_tags (repo, tag, digest) VALUES (?1, ?2, ?3)",
                [repo, tag, &m.digest],
            )
            .map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())?;
        Ok(Ok(()))
    }

    pub fn reg_manifest(&self, repo: &str, digest: &str) -> Result<Option<RegManifest>> {
        self.db
            .query_row(
                &format!("SELECT {MANIFEST_COLUMNS} FROM reg_manifests WHERE repo = ?1 AND digest = ?2"),
                [repo, digest],
                manifest_row,
            )
            .optional()
            .map_err(self.db_err())
    }

    pub fn reg_tag(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        self.db
            .query_row(
                "SELECT digest FROM reg_tags WHERE repo = ?1 AND tag = ?2",
                [repo, tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())
    }

    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub fn reg_tags(&self, repo: &str, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        let mut st = self
            .db
            .prepare("SELECT tag FROM reg_tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3")
            .map_err(self.db_err())?;
        let limit = n.map_or(-1, |n| n as i64);
        st.query_map(params![repo, last.unwrap_or(""), limit], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Whether `repo` holds anything at all.
    pub fn reg_repo_exists(&self, repo: &str) -> Result<bool> {
        self.db
            .query_row(
                "SELECT 1 FROM reg_manifests WHERE repo = ?1 UNION SELECT 1 FROM reg_blobs WHERE repo = ?1 LIMIT 1",
                [repo],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(self.db_err())
    }

    /// Repositories in lexical order, after `last`, at most `n`.
    pub fn reg_repos(&self, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        let mut st = self
            .db
            .prepare(
                "SELECT DISTINCT repo FROM (SELECT repo FROM reg_manifests UNION SELECT repo FROM reg_blobs)
                 WHERE repo > ?1 ORDER BY repo LIMIT ?2",
            )
            .map_err(self.db_err())?;
        let limit = n.map_or(-1, |n| n as i64);
        st.query_map(params![last.unwrap_or(""), limit], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Deletes a manifest and every tag pointing at it; whether it existed.
    pub fn reg_delete_manifest(&self, repo: &str, digest: &str) -> Result<bool> {
        let tx = rusqlite::Transaction::new_unchecked(&self.db, rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        let n = tx
            .execute(
                "DELETE FROM reg_manifests WHERE repo = ?1 AND digest = ?2",
                [repo, digest],
            )
            .map_err(self.db_err())?;
        tx.execute("DELETE FROM reg_tags WHERE repo = ?1 AND digest = ?2", [repo, digest])
            .map_err(self.db_err())?;
        tx.commit().map_err(self.db_err())?;
        Ok(n > 0)
    }

    pub fn reg_delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        self.db
            .execute("DELETE FROM reg_tags WHERE repo = ?1 AND tag = ?2", [repo, tag])
            .map(|n| n > 0)
            .map_err(self.db_err())
    }

    /// Manifests in `repo` whose subject is `subject`, optionally of one
    /// artifact type, by digest.
    pub fn reg_referrers(&self, repo: &str, subject: &str, artifact_type: Option<&str>) -> Result<Vec<RegManifest>> {
        let mut st = self
            .db
            .prepare(&format!(
                "SELECT {MANIFEST_COLUMNS} FROM reg_manifests WHERE repo = ?1 AND subject = ?2
                 AND (?3 IS NULL OR artifact_type = ?3) ORDER BY digest"
            ))
            .map_err(self.db_err())?;
        st.query_map(params![repo, subject, artifact_type], manifest_row)
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Records an access token by the sha256 of its secret.
    pub fn reg_token_create(&self, hash: &str, pattern: &str, pull: bool, push: bool) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO reg_tokens (hash, pattern, pull, push, created) VALUES (?1, ?2, ?3, ?4, datetime('now'))",
                params![hash, pattern, pull, push],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Every token, oldest first.
    pub fn reg_tokens(&self) -> Result<Vec<RegToken>> {
        let mut st = self
            .db
            .prepare("SELECT hash, pattern, pull, push, created FROM reg_tokens ORDER BY created, hash")
            .map_err(self.db_err())?;
        st.query_map([], |r| {
            Ok(RegToken {
                hash: r.get(0)?,
                pattern: r.get(1)?,
                pull: r.get(2)?,
                push: r.get(3)?,
                created: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(self.db_err())
    }

    /// Deletes the token whose hash starts with `id` (at least 8 hex
    /// digits); how many matched (only one is ever deleted).
    pub fn reg_token_revoke(&self, id: &str) -> Result<usize> {
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(0);
        }
        let pattern = format!("{}%", id.to_ascii_lowercase());
        let n: usize = self
            .db
            .query_row("SELECT COUNT(*) FROM reg_tokens WHERE hash LIKE ?1", [&pattern], |r| {
                r.get(0)
            })
            .map_err(self.db_err())?;
        if n == 1 {
            self.db
                .execute("DELETE FROM reg_tokens WHERE hash LIKE ?1", [&pattern])
                .map_err(self.db_err())?;
        }
        Ok(n)
    }

    /// The repository pattern and rights (pull, push) of a token.
    pub fn reg_token(&self, hash: &str) -> Result<Option<(String, bool, bool)>> {
        self.db
            .query_row(
                "SELECT pattern, pull, push FROM reg_tokens WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.db_err())
    }

    pub fn reg_upload_start(&self, uuid: &str, repo: &str) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO reg_uploads (uuid, repo, started) VALUES (?1, ?2, ?3)",
                params![uuid, repo, now()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Marks upload `uuid` active now (idle time counts from here).
    pub fn reg_upload_touch(&self, uuid: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE reg_uploads SET started = ?2 WHERE uuid = ?1",
                params![uuid, now()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The repository of upload `uuid`, if it is open.
    pub fn reg_upload(&self, uuid: &str) -> Result<Option<String>> {
        self.db
            .query_row("SELECT repo FROM reg_uploads WHERE uuid = ?1", [uuid], |r| r.get(0))
            .optional()
            .map_err(self.db_err())
    }

    pub fn reg_upload_end(&self, uuid: &str) -> Result<()> {
        self.db
            .execute("DELETE FROM reg_uploads WHERE uuid = ?1", [uuid])
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Uploads idle (no chunk) for more than `secs` seconds.
    pub fn reg_stale_uploads(&self, secs: i64) -> Result<Vec<String>> {
        let mut st = self
            .db
            .prepare("SELECT uuid FROM reg_uploads WHERE started < ?1")
            .map_err(self.db_err())?;
        st.query_map([now() - secs], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Every blob link, as (repo, digest, linked at), for GC.
    pub fn reg_blob_links(&self) -> Result<Vec<(String, String, i64)>> {
        let mut st = self
            .db
            .prepare("SELECT repo, digest, linked_at FROM reg_blobs")
            .map_err(self.db_err())?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Every manifest of every repository, as (repo, digest, media type).
    pub fn reg_all_manifests(&self) -> Result<Vec<(String, String, String)>> {
        let mut st = self
            .db
            .prepare("SELECT repo, digest, media_type FROM reg_manifests")
            .map_err(self.db_err())?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }
}

/// A registry access token as stored: the sha256 of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegToken {
    pub hash: String,
    /// The repositories it covers: a name, `team/*` or `*`.
    pub pattern: String,
    pub pull: bool,
    pub push: bool,
    pub created: String,
}
