//! The layer cache: each layer unpacked once, shared by every container.
//!
//! `<root>/layers/sha256/<diff_id>` holds one layer's files with whiteouts
//! kept the way overlayfs reads them. A layer is unpacked into a temp
//! directory, its uncompressed content checked against its diff ID, and only
//! then renamed into place, so a cached layer is always complete.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use ingot_oci::digest::HashingReader;
use ingot_oci::layer::{self, UnpackOptions, Whiteouts};
use ingot_oci::manifest::{Content, Role};
use ingot_oci::media::{self, Compression};
use ingot_oci::readahead::ReadAhead;
use ingot_oci::{Algorithm, Digest};
use ingot_store::{Image, Store};

use crate::error::{Result, RuntimeError};

/// Where cached layers live.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join("layers")
}

/// Ensures every layer of `image` is unpacked; returns their directories,
/// bottom layer first.
pub fn ensure(store: &Store, image: &Image) -> Result<Vec<PathBuf>> {
    let Content::Image(_) = &image.manifest.content else {
        return Err(RuntimeError::Setup(format!(
            "{} is an index, not a runnable image",
            image.digest
        )));
    };
    let (_, config) = store
        .config(&image.manifest)?
        .ok_or_else(|| RuntimeError::Setup(format!("{} has no config", image.digest)))?;
    let refs = image
        .manifest
        .references()
        .map_err(|e| RuntimeError::Setup(format!("{}: {e}", image.digest)))?;
    let layers: Vec<_> = refs.into_iter().filter(|r| r.role == Role::Layer).collect();
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(RuntimeError::Setup(format!(
            "{}: {} layers but {} diff_ids",
            image.digest,
            layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(desc, diff_id)| ensure_layer(store, &desc.digest, &desc.media_type, diff_id))
        .collect()
}

/// Ensures the layer blob `digest` (of `media_type`, uncompressing to
/// `diff_id`) is unpacked in the cache; returns its directory.
pub fn ensure_layer(store: &Store, digest: &Digest, media_type: &str, diff_id: &Digest) -> Result<PathBuf> {
    let base = cache_dir(store.root());
    let dir = base.join("sha256").join(diff_id.hex());
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp_base = base.join("tmp");
    if !base.exists() {
        // Unpacked layers keep their setuid binaries: only root may reach them.
        use std::os::unix::fs::DirBuilderExt;
        match fs::DirBuilder::new().mode(0o700).create(&base) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(RuntimeError::io(&base)(e)),
            _ => {}
        }
    }
    fs::create_dir_all(base.join("sha256")).map_err(RuntimeError::io(&base))?;
    fs::create_dir_all(&tmp_base).map_err(RuntimeError::io(&tmp_base))?;
    let compression = media::layer_compression(media_type)
        .ok_or_else(|| RuntimeError::Setup(format!("layer {digest}: unknown media type {media_type:?}")))?;
    // Unique to this process and call: threads of one build may unpack
    // the same layer at once (the first rename wins).
    static UNPACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = tmp_base.join(format!("{}-{}-{n}", diff_id.hex(), std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(RuntimeError::io(&tmp))?;
    let result = (|| -> Result<()> {
        let blob = BufReader::with_capacity(1 << 20, store.blobs().open(digest)?);
        let decoded: Box<dyn Read + Send> = match compression {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => {
                return Err(RuntimeError::Setup(format!(
                    "layer {digest}: zstd layers are not supported yet"
                )))
            }
        };
        // Decompressing and hashing go on a thread of their own, beside
        // the file creation here.
        let mut ahead = ReadAhead::new(HashingReader::new(decoded, Algorithm::Sha256))
            .map_err(|e| RuntimeError::Setup(format!("layer {digest}: {e}")))?;
        let opts = UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            ..Default::default()
        };
        layer::unpack(&mut ahead, &tmp, &opts).map_err(|e| RuntimeError::Setup(format!("layer {digest}: {e}")))?;
        // Hash the rest of the stream (tar's end padding).
        let hashed = ahead
            .finish()
            .map_err(|e| RuntimeError::Setup(format!("layer {digest}: {e}")))?;
        let (_, got, _) = hashed.finish();
        if got != *diff_id {
            return Err(RuntimeError::Setup(format!(
                "layer {digest}: content hashes to {got}, expected diff_id {diff_id}"
            )));
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        let _ = fs::remove_dir_all(&tmp);
        // Another process finished the same layer first: that is fine.
        if !dir.is_dir() {
            return Err(RuntimeError::io(&dir)(e));
        }
    }
    Ok(dir)
}
