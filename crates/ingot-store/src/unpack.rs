//! Applying an image's layers, in order, into a directory.

use std::fs;
use std::io::{BufReader, Read};
use std::path::Path;

use ingot_oci::layer::{self, UnpackOptions};
use ingot_oci::manifest::{Content, Role};
use ingot_oci::media::{self, Compression};
use ingot_oci::readahead::ReadAhead;

use crate::error::{Result, StoreError};
use crate::images::Image;
use crate::Store;

/// Writes the merged root filesystem of `image` into `dir`, which must be
/// missing or empty. Each layer is verified against its digest as it is read.
pub fn unpack_image(store: &Store, image: &Image, dir: &Path) -> Result<u64> {
    let _lease = store.lease()?;
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(StoreError::io(dir))?;
        if entries.next().is_some() {
            return Err(StoreError::io(dir)(std::io::Error::other(
                "target directory is not empty",
            )));
        }
    } else {
        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    }
    let Content::Image(_) = &image.manifest.content else {
        return Err(StoreError::archive(
            image.digest.to_string(),
            "is an index; unpack one of its platform manifests",
        ));
    };
    let refs = image.manifest.references().map_err(|source| StoreError::Manifest {
        digest: image.digest.clone(),
        source,
    })?;
    let opts = UnpackOptions::default();
    let mut entries = 0;
    for r in refs.into_iter().filter(|r| r.role == Role::Layer) {
        let compression = media::layer_compression(&r.media_type).ok_or_else(|| {
            StoreError::archive(
                format!("layer {}", r.digest),
                format!("unknown layer media type {:?}", r.media_type),
            )
        })?;
        let blob = BufReader::with_capacity(1 << 20, store.blobs().open(&r.digest)?);
        let reader: Box<dyn Read + Send> = match compression {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => {
                return Err(StoreError::archive(
                    format!("layer {}", r.digest),
                    "zstd layers are not supported yet",
                ))
            }
        };
        // Decompressing goes on a thread of its own, beside the file creation.
        let mut reader = ReadAhead::new(reader).map_err(StoreError::io(dir))?;
        let stats = layer::unpack(&mut reader, dir, &opts).map_err(|source| StoreError::Layer {
            what: format!("layer {}", r.digest),
            source,
        })?;
        // The rest of the stream (tar's end padding) is read too, so the
        // blob's digest is checked to its end.
        reader.finish().map_err(|e| StoreError::Layer {
            what: format!("layer {}", r.digest),
            source: layer::LayerError::Tar(e),
        })?;
        entries += stats.entries;
    }
    Ok(entries)
}
