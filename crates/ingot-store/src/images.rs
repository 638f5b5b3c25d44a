//! Images and tags: the store's references.
//!
//! An image row names a manifest digest whose blobs are all present; it is a
//! GC root. Tags (`name:tag`) point at image rows. `name@digest` and bare
//! digests (or a unique hex prefix of at least 12 characters) resolve
//! straight to image rows.

use ingot_oci::config::ImageConfig;
use ingot_oci::manifest::{Content, Role};
use ingot_oci::{Digest, Manifest, Reference};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::Store;

/// One row of `ingot images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Repository name, `<none>` for an untagged image.
    pub name: String,
    pub tag: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Bytes stored: manifest, config and layers.
    pub size: u64,
    /// Creation time from the image config (RFC 3339), if recorded.
    pub created: Option<String>,
    pub media_type: String,
}

/// A resolved image with its parsed manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: Digest,
    pub manifest: Manifest,
    pub tags: Vec<String>,
    pub size: u64,
    pub created: Option<String>,
}

/// What `remove` did.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Option<Digest>,
}

impl Store {
    /// Resolves `input` (`name[:tag]`, `name@digest`, `sha256:...`, or a hex
    /// prefix of at least 12 characters) to a stored image.
    pub fn resolve(&self, input: &str) -> Result<Image> {
        let digest = self.resolve_digest(input)?;
        self.image(&digest)
    }

    fn resolve_digest(&self, input: &str) -> Result<Digest> {
        if let Ok(d) = input.parse::<Digest>() {
            return self.known_image(&d, input);
        }
        let is_hex =
            input.len() >= 12 && input.len() <= 64 && input.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_hex {
            let mut st = self
                .db
                .prepare("SELECT digest FROM images WHERE digest LIKE ?1")
                .map_err(self.db_err())?;
            let found: Vec<String> = st
                .query_map([format!("sha256:{input}%")], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(self.db_err())?;
            match found.len() {
                0 => {}
                1 => return parse_db_digest(&found[0]),
                n => return Err(StoreError::Ambiguous(input.to_string(), n)),
            }
        }
        let r: Reference = input.parse()?;
        if let Some(d) = r.digest() {
            return self.known_image(d, input);
        }
        let tag = r.tag_or_default().unwrap_or(ingot_oci::reference::DEFAULT_TAG);
        let found: Option<String> = self
            .db
            .query_row(
                "SELECT digest FROM tags WHERE name = ?1 AND tag = ?2",
                params![r.name(), tag],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.db_err())?;
        match found {
            Some(d) => parse_db_digest(&d),
            None => Err(StoreError::ImageNotFound(format!("{}:{tag}", r.name()))),
        }
    }

    fn known_image(&self, d: &Digest, input: &str) -> Result<Digest> {
        let found: Option<String> = self
            .db
            .query_row("SELECT digest FROM images WHERE digest = ?1", [d.to_string()], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.db_err())?;
        match found {
            Some(_) => Ok(d.clone()),
            None => Err(StoreError::ImageNotFound(input.to_string())),
        }
    }

    /// Loads the image row `digest` and parses its manifest.
    pub fn image(&self, digest: &Digest) -> Result<Image> {
        let row: Option<(String, i64, Option<String>)> = self
            .db
            .query_row(
                "SELECT media_type, size, created FROM images WHERE digest = ?1",
                [digest.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.db_err())?;
        let (media_type, size, created) = row.ok_or_else(|| StoreError::ImageNotFound(digest.to_string()))?;
        let manifest = self.manifest(digest, Some(&media_type))?;
        Ok(Image {
            digest: digest.clone(),
            manifest,
            tags: self.tags_of(digest)?,
            size: size as u64,
            created,
        })
    }

    /// Reads, verifies and parses the manifest blob `digest`.
    pub fn manifest(&self, digest: &Digest, media_type: Option<&str>) -> Result<Manifest> {
        let bytes = self.blobs.read(digest)?;
        Manifest::parse(bytes, media_type).map_err(|source| StoreError::Manifest {
            digest: digest.clone(),
            source,
        })
    }

    /// Reads and parses the config of an image manifest (`None` for an index).
    pub fn config(&self, manifest: &Manifest) -> Result<Option<(Digest, ImageConfig)>> {
        let Content::Image(m) = &manifest.content else {
            return Ok(None);
        };
        let digest = Digest::try_from(m.config().digest()).map_err(|e| StoreError::Manifest {
            digest: manifest.digest.clone(),
            source: ingot_oci::ManifestError::Reference {
                what: "config".into(),
                source: e,
            },
        })?;
        let bytes = self.blobs.read(&digest)?;
        let cfg = ImageConfig::parse(&bytes).map_err(|source| StoreError::Config {
            digest: digest.clone(),
            source,
        })?;
        Ok(Some((digest, cfg)))
    }

    /// `name:tag` strings pointing at `digest`, sorted.
    pub fn tags_of(&self, digest: &Digest) -> Result<Vec<String>> {
        let mut st = self
            .db
            .prepare("SELECT name || ':' || tag FROM tags WHERE digest = ?1 ORDER BY name, tag")
            .map_err(self.db_err())?;
        st.query_map([digest.to_string()], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())
    }

    /// Every image, one row per tag, untagged images as `<none>`.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let mut st = self
            .db
            .prepare(
                "SELECT COALESCE(t.name, '<none>'), COALESCE(t.tag, '<none>'), i.digest, i.size, i.created, i.media_type
                 FROM images i LEFT JOIN tags t ON t.digest = i.digest
                 WHERE i.subject IS NULL OR t.name IS NOT NULL
                 ORDER BY t.name IS NULL, t.name, t.tag, i.added_at DESC",
            )
            .map_err(self.db_err())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.db_err())?;
        rows.into_iter()
            .map(|(name, tag, digest, size, created, media_type)| {
                Ok(ImageSummary {
                    name,
                    tag,
                    digest: parse_db_digest(&digest)?,
                    size: size as u64,
                    created,
                    media_type,
                })
            })
            .collect()
    }

    /// Every image digest (the GC roots).
    /// Manifests in the store whose subject is `subject` (its signatures,
    /// SBOMs, ...), by digest.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Digest>> {
        let mut st = self
            .db
            .prepare("SELECT digest FROM images WHERE subject = ?1 ORDER BY digest")
            .map_err(self.db_err())?;
        let rows: Vec<String> = st
            .query_map([subject.to_string()], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())?;
        rows.iter().map(|d| parse_db_digest(d)).collect()
    }

    pub fn image_digests(&self) -> Result<Vec<Digest>> {
        let mut st = self.db.prepare("SELECT digest FROM images").map_err(self.db_err())?;
        let rows: Vec<String> = st
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.db_err())?;
        rows.iter().map(|d| parse_db_digest(d)).collect()
    }

    /// Points `target` (`name[:tag]`) at the image `source` resolves to.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference> {
        let image = self.resolve(source)?;
        let r: Reference = target.parse()?;
        if r.digest().is_some() {
            return Err(StoreError::Reference(ingot_oci::ReferenceError::Tag {
                input: target.into(),
                tag: "a digest cannot be a tag target".into(),
            }));
        }
        let tag = r.tag_or_default().unwrap_or("latest").to_string();
        self.db
            .execute(
                "INSERT INTO tags (name, tag, digest) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, tag) DO UPDATE SET digest = excluded.digest",
                params![r.name(), tag, image.digest.to_string()],
            )
            .map_err(self.db_err())?;
        r.with_tag(&tag).map_err(Into::into)
    }

    /// Removes a tag, or (by digest) an image and its tags. An image whose
    /// last tag goes is deleted too. Blobs are left to GC.
    pub fn remove(&mut self, input: &str, force: bool) -> Result<Removed> {
        let by_tag = match input.parse::<Reference>() {
            Ok(r) if r.digest().is_none() && input.parse::<Digest>().is_err() => {
                let tag = r.tag_or_default().unwrap_or("latest").to_string();
                Some((r.name().to_string(), tag))
            }
            _ => None,
        };
        let digest = self.resolve_digest(input)?;
        let tags = self.tags_of(&digest)?;
        let tx = self.db.transaction().map_err(|source| StoreError::Db {
            path: self.root.join("ingot.db"),
            source,
        })?;
        let db_err = |source| StoreError::Db {
            path: self.root.join("ingot.db"),
            source,
        };
        let mut removed = Removed {
            untagged: Vec::new(),
            deleted: None,
        };
        match by_tag {
            Some((name, tag)) if !tags.is_empty() => {
                tx.execute("DELETE FROM tags WHERE name = ?1 AND tag = ?2", params![name, tag])
                    .map_err(db_err)?;
                removed.untagged.push(format!("{name}:{tag}"));
            }
            _ => {
                if tags.len() > 1 && !force {
                    return Err(StoreError::Conflict {
                        image: digest,
                        tags: tags.len(),
                    });
                }
                tx.execute("DELETE FROM tags WHERE digest = ?1", [digest.to_string()])
                    .map_err(db_err)?;
                removed.untagged = tags;
            }
        }
        let user: Option<String> = tx
            .query_row(
                "SELECT name FROM containers WHERE image = ?1 LIMIT 1",
                [digest.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let left: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM tags WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if left == 0 {
            if let Some(container) = user {
                return Err(StoreError::ImageInUse {
                    image: digest,
                    container,
                });
            }
            tx.execute("DELETE FROM images WHERE digest = ?1", [digest.to_string()])
                .map_err(db_err)?;
            removed.deleted = Some(digest);
        }
        tx.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Records an image whose blobs are all stored, with its tags, in one
    /// transaction. Checks the references first so that no image row ever
    /// points at missing content.
    pub fn register(&mut self, manifest: &Manifest, tags: &[Reference]) -> Result<()> {
        self.register_as(manifest, tags, None)
    }

    /// Records a manifest as referring to `subject` (its signature, SBOM,
    /// ...) even when it names no subject itself (as cosign's tag scheme
    /// writes them); one that names another subject is refused.
    pub fn register_referrer(&mut self, manifest: &Manifest, subject: &Digest) -> Result<()> {
        self.register_as(manifest, &[], Some(subject))
    }

    fn register_as(&mut self, manifest: &Manifest, tags: &[Reference], referring_to: Option<&Digest>) -> Result<()> {
        let size = self.check_complete(manifest)?;
        // Artifacts (signatures, SBOMs) have configs that are not image configs.
        let image_config = match &manifest.content {
            Content::Image(m) => matches!(
                m.config().media_type().to_string().as_str(),
                ingot_oci::media::OCI_CONFIG | ingot_oci::media::DOCKER_CONFIG
            ),
            Content::Index(_) => false,
        };
        let created = match image_config {
            true => self.config(manifest)?.and_then(|(_, cfg)| cfg.created),
            false => None,
        };
        let subject = manifest
            .references()
            .map_err(|source| StoreError::Manifest {
                digest: manifest.digest.clone(),
                source,
            })?
            .into_iter()
            .find(|r| r.role == ingot_oci::manifest::Role::Subject)
            .map(|r| r.digest.to_string());
        let subject = match (subject, referring_to) {
            (Some(named), Some(s)) if named != s.to_string() => {
                return Err(StoreError::WrongSubject {
                    manifest: manifest.digest.clone(),
                    named,
                    subject: s.clone(),
                })
            }
            (named, s) => named.or_else(|| s.map(Digest::to_string)),
        };
        let now = crate::rfc3339(time::OffsetDateTime::now_utc().unix_timestamp());
        let path = self.root.join("ingot.db");
        let db_err = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO images (digest, media_type, size, created, added_at, subject) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (digest) DO NOTHING",
            params![
                manifest.digest.to_string(),
                manifest.media_type,
                size as i64,
                created,
                now,
                subject
            ],
        )
        .map_err(db_err)?;
        for r in tags {
            let tag = r.tag_or_default().unwrap_or("latest");
            tx.execute(
                "INSERT INTO tags (name, tag, digest) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, tag) DO UPDATE SET digest = excluded.digest",
                params![r.name(), tag, manifest.digest.to_string()],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Verifies that every blob `manifest` reaches is stored with the
    /// declared size; returns the total size.
    pub fn check_complete(&self, manifest: &Manifest) -> Result<u64> {
        let mut total = manifest.bytes.len() as u64;
        let refs = manifest.references().map_err(|source| StoreError::Manifest {
            digest: manifest.digest.clone(),
            source,
        })?;
        for r in refs {
            if r.role == Role::Subject {
                continue; // a referrer's subject may live elsewhere
            }
            let actual = self.blobs.size(&r.digest)?;
            if actual != r.size {
                return Err(StoreError::SizeMismatch {
                    digest: r.digest,
                    expected: r.size,
                    actual,
                });
            }
            if r.role == Role::Manifest {
                let child = self.manifest(&r.digest, Some(&r.media_type))?;
                total += self.check_complete(&child)?;
            } else {
                total += actual;
            }
        }
        Ok(total)
    }
}

pub(crate) fn parse_db_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e| StoreError::archive("database", format!("bad digest {s:?}: {e}")))
}
