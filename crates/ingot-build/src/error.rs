//! Build errors: each names the Dockerfile position, file or value that failed.

use std::path::PathBuf;

use ingot_runtime::RuntimeError;
use ingot_store::StoreError;

use crate::dockerfile::{ParseError, Pos};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An instruction that cannot be carried out, at its position.
    #[error("{file}:{pos}: {message}: {text}")]
    Step {
        file: String,
        pos: Pos,
        text: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
