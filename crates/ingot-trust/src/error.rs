//! Trust errors: each names the key, image or signature that failed.

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] ingot_store::StoreError),
    #[error("key: {0}")]
    Key(String),
    #[error("{image}: no valid signature by this key ({checked} signature(s) checked{})", if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join("; ")) })]
    NotVerified {
        image: String,
        checked: usize,
        reasons: Vec<String>,
    },
    #[error("policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = TrustError> = std::result::Result<T, E>;
