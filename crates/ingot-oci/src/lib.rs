//! OCI formats for ingot.
//!
//! This crate owns the vocabulary every other ingot crate speaks: content
//! [`digest`]s, [`media`] types, [`manifest`] parsing (OCI and Docker
//! schema2), image [`reference`]s, image [`config`] and archive [`layout`]
//! types, and safe [`layer`] tar handling. It does no I/O beyond the readers
//! and writers it is handed, except [`layer::unpack`], which writes only
//! below the directory it is given, and [`readahead`], which reads a
//! given reader on a thread of its own.

pub mod config;
pub mod digest;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod readahead;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError};
pub use manifest::{Manifest, ManifestError};
pub use reference::{Reference, ReferenceError};
