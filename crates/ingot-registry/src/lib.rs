//! ingot's registry: an OCI distribution-spec 1.1 server over the store
//! ([`server`]), its online GC ([`gc`]), and a client that pushes and pulls
//! images to and from any conformant registry ([`client`]).

pub mod client;
mod error;
pub mod gc;
pub mod names;
pub mod server;

pub use error::{ApiError, ClientError};
pub use server::{router, serve, ServeOptions};
