//! The store's typed errors. Each names the object that failed and what was
//! expected of it.

use std::io;
use std::path::PathBuf;

use ingot_oci::layer::LayerError;
use ingot_oci::{Digest, ManifestError, ReferenceError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {0} not found in the store")]
    BlobMissing(Digest),
    #[error("blob {expected}: digest mismatch (content hashes to {actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: size mismatch (expected {expected} bytes, got {actual})")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    #[error("image reference {0:?} is ambiguous: matches {1} images")]
    Ambiguous(String, usize),
    #[error("image {image} is tagged in {tags} places; use force to remove all tags")]
    Conflict { image: Digest, tags: usize },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("image {image} is used by container {container}; remove the container first")]
    ImageInUse { image: Digest, container: String },
    #[error("container name {0:?} is already in use")]
    NameInUse(String),
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    #[error("volume {name} is in use by {}; remove {} first", containers.join(", "), if containers.len() == 1 { "it" } else { "them" })]
    VolumeInUse { name: String, containers: Vec<String> },
    #[error("volume name {0:?}: expected [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters")]
    VolumeName(String),
    #[error("manifest {digest}: {source}")]
    Manifest {
        digest: Digest,
        #[source]
        source: ManifestError,
    },
    #[error("config {digest}: {source}")]
    Config {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Layer {
        what: String,
        #[source]
        source: LayerError,
    },
    #[error("archive {what}: {why}")]
    Archive { what: String, why: String },
    #[error("{0}")]
    Ledger(String),
    /// A referrer recorded against a subject other than the one it names.
    #[error("manifest {manifest} refers to {named}, not {subject}")]
    WrongSubject {
        manifest: Digest,
        named: String,
        subject: Digest,
    },
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }

    pub(crate) fn archive(what: impl Into<String>, why: impl Into<String>) -> StoreError {
        StoreError::Archive {
            what: what.into(),
            why: why.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
