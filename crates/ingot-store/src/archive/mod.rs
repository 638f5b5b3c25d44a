//! `ingot save` and `ingot load`: image archives.
//!
//! `save` writes one tar that is both an OCI image layout and a `docker save`
//! archive. `load` reads OCI layouts (ingot's, skopeo's, Docker 25's) and
//! classic `docker save` archives, plain or gzip-compressed.

mod load;
mod save;

pub use load::{load, LoadedImage};
pub use save::{save, save_with};
