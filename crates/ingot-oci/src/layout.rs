//! Archive formats: the OCI image layout and the `docker save` layout.
//!
//! An OCI layout is `oci-layout`, `index.json` and `blobs/<alg>/<hex>`.
//! A `docker save` archive has `manifest.json` listing, per image, a config
//! file, its layer tars and its repo tags. ingot writes both views into one
//! tar (as Docker 25 does), so `skopeo`, `docker load` and ingot all read it.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const DOCKER_MANIFEST_FILE: &str = "manifest.json";
pub const DOCKER_REPOSITORIES_FILE: &str = "repositories";
/// Annotation that names an image in an OCI layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation carrying the full image name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// The content of `oci-layout`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

impl Default for OciLayout {
    fn default() -> Self {
        OciLayout {
            image_layout_version: "1.0.0".to_string(),
        }
    }
}

/// One image of a `docker save` `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveImage {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// The in-archive path of a blob in an OCI layout.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// Parses `blobs/<alg>/<hex>` back into a digest.
pub fn parse_blob_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("./").unwrap_or(path).strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_round_trip() {
        let d = Digest::sha256(b"x");
        assert_eq!(parse_blob_path(&blob_path(&d)), Some(d.clone()));
        assert_eq!(parse_blob_path(&format!("./{}", blob_path(&d))), Some(d));
        assert_eq!(parse_blob_path("blobs/sha256/../../etc"), None);
        assert_eq!(parse_blob_path("blobs/sha256"), None);
    }
}
