//! ingot's trust: keys ([`keys`]), cosign-compatible signatures stored as
//! OCI referrers ([`signature`]), and the deploy policy ([`policy`]) that
//! joins signatures, scan findings and the bill of materials.

mod error;
pub mod keys;
pub mod policy;
pub mod signature;

pub use error::{Result, TrustError};
