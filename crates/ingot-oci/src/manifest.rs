//! Manifests and indexes, parsed from their exact bytes.
//!
//! A [`Manifest`] keeps the bytes it was parsed from: ingot stores and serves
//! manifests byte-exact, because their digest is over those bytes. Parsing
//! accepts OCI image manifests and indexes and Docker schema2 manifests and
//! manifest lists; any other media type is refused by name.

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::{Digest, DigestError};
use crate::media::{self, ManifestKind};

/// Largest manifest accepted, as the distribution spec recommends.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, above the {MAX_MANIFEST_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown manifest media type {0:?} (expected an OCI or Docker schema2 manifest or index)")]
    UnknownMediaType(String),
    #[error("manifest has no mediaType and its shape is neither an image manifest nor an index")]
    NoMediaType,
    #[error("manifest declares mediaType {declared:?} but was served as {given:?}")]
    MediaTypeConflict { declared: String, given: String },
    #[error("unsupported schemaVersion {0} (expected 2)")]
    SchemaVersion(u32),
    #[error("manifest references {what}: {source}")]
    Reference {
        what: String,
        #[source]
        source: DigestError,
    },
}

/// One referenced blob or manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub role: Role,
}

/// Why a manifest references a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Config,
    Layer,
    /// A child manifest of an index.
    Manifest,
    /// The `subject` of a referrer.
    Subject,
}

/// A parsed manifest or index together with its exact bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub content: Content,
}

#[derive(Debug, Clone)]
pub enum Content {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses `bytes`. `given_type` is the media type the bytes arrived with
    /// (an HTTP Content-Type or a descriptor), if any.
    pub fn parse(bytes: Vec<u8>, given_type: Option<&str>) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let probe: Probe = serde_json::from_slice(&bytes)?;
        if let Some(v) = probe.schema_version {
            if v != 2 {
                return Err(ManifestError::SchemaVersion(v));
            }
        }
        let media_type = match (&probe.media_type, given_type) {
            (Some(declared), Some(given)) if declared != given && manifest_kind_ok(given) => {
                return Err(ManifestError::MediaTypeConflict {
                    declared: declared.clone(),
                    given: given.to_string(),
                })
            }
            (Some(declared), _) => declared.clone(),
            (None, Some(given)) if manifest_kind_ok(given) => given.to_string(),
            // The OCI spec lets mediaType be absent; infer from the shape.
            (None, _) => match (probe.config.is_some(), probe.manifests.is_some()) {
                (true, false) => media::OCI_MANIFEST.to_string(),
                (false, true) => media::OCI_INDEX.to_string(),
                _ => return Err(ManifestError::NoMediaType),
            },
        };
        let content = match media::manifest_kind(&media_type) {
            Some(ManifestKind::Image) => Content::Image(Box::new(serde_json::from_slice(&bytes)?)),
            Some(ManifestKind::Index) => Content::Index(Box::new(serde_json::from_slice(&bytes)?)),
            None => return Err(ManifestError::UnknownMediaType(media_type)),
        };
        let digest = Digest::sha256(&bytes);
        let manifest = Manifest {
            media_type,
            digest,
            bytes,
            content,
        };
        // Surface bad digests now, so callers can rely on references().
        manifest.references()?;
        Ok(manifest)
    }

    /// Every descriptor this manifest points at, config first.
    pub fn references(&self) -> Result<Vec<Reference>, ManifestError> {
        let mut out = Vec::new();
        let mut push = |d: &oci_spec::image::Descriptor, role: Role, what: String| {
            let digest = Digest::try_from(d.digest()).map_err(|source| ManifestError::Reference { what, source })?;
            out.push(Reference {
                media_type: d.media_type().to_string(),
                digest,
                size: d.size(),
                role,
            });
            Ok::<(), ManifestError>(())
        };
        match &self.content {
            Content::Image(m) => {
                push(m.config(), Role::Config, "config".into())?;
                for (i, l) in m.layers().iter().enumerate() {
                    push(l, Role::Layer, format!("layer {i}"))?;
                }
                if let Some(s) = m.subject() {
                    push(s, Role::Subject, "subject".into())?;
                }
            }
            Content::Index(ix) => {
                for (i, m) in ix.manifests().iter().enumerate() {
                    push(m, Role::Manifest, format!("manifest {i}"))?;
                }
                if let Some(s) = ix.subject() {
                    push(s, Role::Subject, "subject".into())?;
                }
            }
        }
        Ok(out)
    }

    pub fn is_index(&self) -> bool {
        matches!(self.content, Content::Index(_))
    }
}

fn manifest_kind_ok(media_type: &str) -> bool {
    media::manifest_kind(media_type).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn docker_manifest() -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7,"digest":"{}"}},"layers":[{{"mediaType":"{}","size":9,"digest":"{}"}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            d('a'),
            media::DOCKER_LAYER_GZIP,
            d('b')
        )
        .into_bytes()
    }

    #[test]
    fn docker_schema2_is_accepted() {
        let m = Manifest::parse(docker_manifest(), None).unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
        let refs = m.references().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].role, Role::Config);
        assert_eq!(refs[1].size, 9);
        assert_eq!(m.digest, Digest::sha256(&m.bytes));
    }

    #[test]
    fn docker_manifest_list_is_accepted() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
                {{"mediaType":"{}","size":7,"digest":"{}","platform":{{"architecture":"amd64","os":"linux"}}}},
                {{"mediaType":"{}","size":8,"digest":"{}","platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            media::DOCKER_MANIFEST_LIST,
            media::DOCKER_MANIFEST,
            d('a'),
            media::DOCKER_MANIFEST,
            d('b')
        );
        let m = Manifest::parse(bytes.into_bytes(), None).unwrap();
        assert!(m.is_index());
        assert_eq!(m.media_type, media::DOCKER_MANIFEST_LIST);
        let refs = m.references().unwrap();
        assert_eq!(refs.len(), 2);
        assert!(refs.iter().all(|r| r.role == Role::Manifest));
        assert_eq!((refs[0].size, refs[1].size), (7, 8));
    }

    #[test]
    fn index_without_media_type_is_inferred() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","size":3,"digest":"{}"}}]}}"#,
            media::OCI_MANIFEST,
            d('c')
        );
        let m = Manifest::parse(bytes.into_bytes(), None).unwrap();
        assert!(m.is_index());
        assert_eq!(m.references().unwrap()[0].role, Role::Manifest);
    }

    #[test]
    fn unknown_media_type_is_named() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/x-nope","config":{}}"#.to_vec();
        let err = Manifest::parse(bytes, None).unwrap_err();
        assert!(err.to_string().contains("application/x-nope"), "{err}");
    }

    #[test]
    fn bad_reference_digest_is_refused() {
        let bytes = String::from_utf8(docker_manifest())
            .unwrap()
            .replace(&d('b'), "sha256:1234");
        assert!(Manifest::parse(bytes.into_bytes(), None).is_err());
    }

    #[test]
    fn too_large_and_garbage() {
        assert!(matches!(
            Manifest::parse(vec![b' '; MAX_MANIFEST_SIZE + 1], None),
            Err(ManifestError::TooLarge(_))
        ));
        assert!(matches!(
            Manifest::parse(b"{".to_vec(), None),
            Err(ManifestError::Json(_))
        ));
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#.to_vec(), None).is_err());
    }
}
