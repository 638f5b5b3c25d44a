//! `ingot import`: a root filesystem tarball becomes a one-layer image.
//!
//! The tarball (plain or gzip) is streamed once: every entry is validated and
//! re-written into a normalised layer, hashed uncompressed (the diff ID) and
//! compressed (the blob digest) on the way into the store. Created times come
//! from `SOURCE_DATE_EPOCH` (default 0), so the same tarball gives the same
//! image digest in any root.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use ingot_oci::config::{canonical_json, ImageConfig};
use ingot_oci::digest::HashingWriter;
use ingot_oci::layer::{self, Limits};
use ingot_oci::{media, Algorithm, Digest, Manifest, Reference};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

use crate::error::{Result, StoreError};
use crate::Store;

/// How the imported layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    /// gzip at the fastest level: interoperable and cheap to write.
    #[default]
    Gzip,
    /// Uncompressed tar.
    None,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub compression: LayerCompression,
    pub limits: Limits,
    /// Image creation time, seconds since the epoch.
    pub created: i64,
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    pub manifest: Manifest,
    pub layer: Digest,
    pub diff_id: Digest,
    pub entries: u64,
}

/// Imports the rootfs tarball read from `input` as `reference`; `source`
/// names the input in errors and in the image history.
pub fn import_rootfs<R: Read>(
    store: &mut Store,
    input: R,
    source: &str,
    reference: &Reference,
    opts: &ImportOptions,
) -> Result<Imported> {
    let _lease = store.lease()?;
    let path = Path::new(source);
    let input = decompress(BufReader::with_capacity(1 << 20, input), path)?;
    let what = format!("import {}", path.display());

    let writer = store.blobs().writer(None)?;
    let (writer, diff_id, stats) = match opts.compression {
        LayerCompression::Gzip => {
            let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
            let (tar_out, stats) = layer::normalize(input, HashingWriter::new(gz, Algorithm::Sha256), &opts.limits)
                .map_err(|source| StoreError::Layer {
                    what: what.clone(),
                    source,
                })?;
            let (gz, diff_id, _) = tar_out.finish();
            let w = gz.finish().map_err(StoreError::io(path))?;
            (w, diff_id, stats)
        }
        LayerCompression::None => {
            let (tar_out, stats) = layer::normalize(input, HashingWriter::new(writer, Algorithm::Sha256), &opts.limits)
                .map_err(|source| StoreError::Layer {
                    what: what.clone(),
                    source,
                })?;
            let (w, diff_id, _) = tar_out.finish();
            (w, diff_id, stats)
        }
    };
    let (layer_digest, layer_size) = writer.commit()?;
    let layer_type = match opts.compression {
        LayerCompression::Gzip => media::OCI_LAYER_GZIP,
        LayerCompression::None => media::OCI_LAYER_TAR,
    };
    let created = crate::rfc3339(opts.created);
    let config = ImageConfig::for_rootfs(diff_id.clone(), &created, "ingot import");
    let config_bytes = canonical_json(&config).map_err(|e| StoreError::archive("config", e.to_string()))?;
    let config_digest = store.blobs().put(&config_bytes)?;
    let layers = [(layer_type, layer_digest.clone(), layer_size)];
    let manifest = write_image(
        store,
        &config_digest,
        config_bytes.len() as u64,
        &layers,
        Default::default(),
    )?;
    store.register(&manifest, std::slice::from_ref(reference))?;
    Ok(Imported {
        manifest,
        layer: layer_digest,
        diff_id,
        entries: stats.entries,
    })
}

/// Stores an OCI manifest over the stored config blob and `layers`
/// (media type, digest, size), with `annotations`; returns the stored
/// manifest (canonical JSON, so the same inputs give the same digest).
pub fn write_image(
    store: &Store,
    config: &Digest,
    config_size: u64,
    layers: &[(&str, Digest, u64)],
    annotations: std::collections::HashMap<String, String>,
) -> Result<Manifest> {
    let mut builder = ImageManifestBuilder::default();
    if !annotations.is_empty() {
        builder = builder.annotations(annotations);
    }
    let manifest = builder
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(MediaType::ImageConfig, config_size, config.to_oci()))
        .layers(
            layers
                .iter()
                .map(|(mt, d, size)| Descriptor::new(MediaType::from(*mt), *size, d.to_oci()))
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| StoreError::archive("manifest", e.to_string()))?;
    let bytes = canonical_json(&manifest).map_err(|e| StoreError::archive("manifest", e.to_string()))?;
    let digest = store.blobs().put(&bytes)?;
    Manifest::parse(bytes, Some(media::OCI_MANIFEST)).map_err(|source| StoreError::Manifest { digest, source })
}

/// Wraps `input` in a gzip decoder when it starts with the gzip magic.
pub(crate) fn decompress<'a, R: BufRead + 'a>(mut input: R, path: &Path) -> Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf().map_err(StoreError::io(path))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(StoreError::archive(
            path.display().to_string(),
            "zstd-compressed input is not supported (expected tar or tar.gz)",
        ))
    } else {
        Ok(Box::new(input))
    }
}
