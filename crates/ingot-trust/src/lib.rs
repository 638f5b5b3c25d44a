//! ingot's trust: keys ([`keys`]), cosign-compatible signatures stored as
//! OCI referrers ([`signature`]). Policy evaluation joins next.

mod error;
pub mod keys;
pub mod signature;

pub use error::{Result, TrustError};
