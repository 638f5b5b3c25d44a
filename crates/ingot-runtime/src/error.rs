//! Runtime errors, each with the exit code `docker run` would give.

use std::io;
use std::path::PathBuf;

use ingot_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("{0}")]
    Setup(String),
    /// The command exists but cannot be executed (docker: 126).
    #[error("{0}")]
    CannotExecute(String),
    /// The command was not found (docker: 127).
    #[error("{0}")]
    NotFound(String),
    #[error("container {0} is running; stop it first or use force")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    /// A detached monitor's report of why the container did not start.
    #[error("{message}")]
    Reported { code: u8, message: String },
}

impl RuntimeError {
    /// The exit code of `ingot run` for this error, as docker's.
    pub fn exit_code(&self) -> u8 {
        match self {
            RuntimeError::CannotExecute(_) => 126,
            RuntimeError::NotFound(_) => 127,
            RuntimeError::Reported { code, .. } => *code,
            _ => 125,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io { path, source }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> RuntimeError {
        RuntimeError::Invalid {
            what,
            value: value.to_string(),
            why: why.into(),
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
