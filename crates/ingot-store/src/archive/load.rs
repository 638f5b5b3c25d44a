//! Reading image archives.
//!
//! The archive is streamed once. Blobs under `blobs/<alg>/<hex>` are written
//! to the store as they come and verified against their names; the small
//! metadata files are kept in memory; `docker save` layer tars and configs
//! are stored under the digest of their content. Only when the stream has
//! ended are images assembled, checked complete and registered, in one
//! transaction each, so an interrupted load lists nothing.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ingot_oci::config::ImageConfig;
use ingot_oci::layer::{clean_path, Limits};
use ingot_oci::layout::{self, DockerArchiveImage, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use ingot_oci::manifest::Content;
use ingot_oci::{media, Digest, Manifest, Reference};

use crate::error::{Result, StoreError};
use crate::import::{decompress, write_image};
use crate::Store;

/// Largest metadata file (index.json, manifest.json, ...) read into memory.
const MAX_METADATA: u64 = 16 << 20;

/// One image a load registered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedImage {
    pub digest: Digest,
    pub tags: Vec<String>,
}

enum Stored {
    Blob(Digest, u64),
    Link(PathBuf),
}

/// Loads every image in the archive read from `input` (`source` names it in
/// errors).
pub fn load<R: Read>(store: &mut Store, input: R, source: &str) -> Result<Vec<LoadedImage>> {
    let _lease = store.lease()?;
    let src = Path::new(source);
    let input = decompress(BufReader::with_capacity(1 << 20, input), src)?;
    let bad = |why: String| StoreError::archive(source, why);
    let mut files: HashMap<PathBuf, Stored> = HashMap::new();
    let mut metadata: HashMap<String, Vec<u8>> = HashMap::new();
    let limits = Limits::default();

    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated tar: {e}")))?;
        let path = clean_path(&entry.path_bytes(), &limits).map_err(|e| bad(e.to_string()))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // docker save links duplicate layers to one copy.
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("{}: link without target", path.display())))?;
            let base = if kind.is_symlink() {
                path.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                PathBuf::new()
            };
            files.insert(path, Stored::Link(normalize_join(&base, &target)));
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let name = path.to_string_lossy().into_owned();
        if [
            layout::OCI_LAYOUT_FILE,
            layout::INDEX_FILE,
            layout::DOCKER_MANIFEST_FILE,
            layout::DOCKER_REPOSITORIES_FILE,
        ]
        .contains(&name.as_str())
        {
            if entry.size() > MAX_METADATA {
                return Err(bad(format!(
                    "{name}: {} bytes is too large for a metadata file",
                    entry.size()
                )));
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(|e| bad(format!("{name}: {e}")))?;
            metadata.insert(name, buf);
            continue;
        }
        let expected = layout::parse_blob_path(&name);
        let in_blobs = name.starts_with("blobs/");
        if in_blobs && expected.is_none() {
            return Err(bad(format!("{name}: blob path is not blobs/<algorithm>/<hex>")));
        }
        let legacy = !in_blobs && (name.ends_with(".tar") || (name.ends_with(".json") && !name.contains('/')));
        if expected.is_none() && !legacy {
            continue; // legacy `docker save` bookkeeping (VERSION, json)
        }
        if let Some(d) = &expected {
            if store.blobs().exists(d) && store.blobs().size(d).ok() == Some(entry.size()) {
                files.insert(path, Stored::Blob(d.clone(), entry.size()));
                continue; // already stored and verified when it was written
            }
        }
        let mut w = store.blobs().writer(expected.clone())?;
        std::io::copy(&mut entry, &mut w).map_err(|e| bad(format!("{name}: {e}")))?;
        let (digest, size) = w.commit().map_err(|e| match e {
            StoreError::DigestMismatch { actual, .. } => {
                bad(format!("{name}: digest mismatch (content hashes to {actual})"))
            }
            other => other,
        })?;
        files.insert(path, Stored::Blob(digest, size));
    }

    let resolve = |p: &Path| -> Result<(Digest, u64)> {
        let mut cur = p.to_path_buf();
        for _ in 0..16 {
            match files.get(&cur) {
                Some(Stored::Blob(d, s)) => return Ok((d.clone(), *s)),
                Some(Stored::Link(t)) => cur = t.clone(),
                None => break,
            }
        }
        Err(bad(format!("{} is referenced but not in the archive", p.display())))
    };

    let mut loaded = Vec::new();
    if let Some(index) = metadata.get(layout::INDEX_FILE) {
        let index =
            Manifest::parse(index.clone(), Some(media::OCI_INDEX)).map_err(|e| bad(format!("index.json: {e}")))?;
        let Content::Index(ix) = &index.content else {
            return Err(bad("index.json is not an image index".into()));
        };
        for desc in ix.manifests() {
            let d = Digest::try_from(desc.digest()).map_err(|e| bad(format!("index.json: {e}")))?;
            let manifest = store.manifest(&d, Some(desc.media_type().as_ref()))?;
            let annotations = desc.annotations().clone().unwrap_or_default();
            let name = annotations
                .get(IMAGE_NAME_ANNOTATION)
                .or_else(|| annotations.get(REF_NAME_ANNOTATION))
                .and_then(|n| n.parse::<Reference>().ok())
                // A bare tag such as "latest" names no repository.
                .filter(|r| {
                    r.tag().is_some() || r.name().contains('/') || annotations.contains_key(IMAGE_NAME_ANNOTATION)
                });
            let tags: Vec<Reference> = name.into_iter().collect();
            store.register(&manifest, &tags)?;
            loaded.push(LoadedImage {
                digest: d,
                tags: tags.iter().map(ToString::to_string).collect(),
            });
        }
    } else if let Some(list) = metadata.get(layout::DOCKER_MANIFEST_FILE) {
        let images: Vec<DockerArchiveImage> =
            serde_json::from_slice(list).map_err(|e| bad(format!("manifest.json: {e}")))?;
        for img in images {
            let (config_digest, _) = resolve(Path::new(&img.config))?;
            let config =
                ImageConfig::parse(&store.blobs().read(&config_digest)?).map_err(|source| StoreError::Config {
                    digest: config_digest.clone(),
                    source,
                })?;
            if config.rootfs.diff_ids.len() != img.layers.len() {
                return Err(bad(format!(
                    "image config {}: {} diff_ids for {} layers",
                    img.config,
                    config.rootfs.diff_ids.len(),
                    img.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in img.layers.iter().zip(&config.rootfs.diff_ids) {
                let (d, size) = resolve(Path::new(path))?;
                let gzip = {
                    let mut head = [0u8; 2];
                    let mut r = store.blobs().open(&d)?;
                    r.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b]
                };
                if !gzip && d != *diff_id {
                    return Err(bad(format!(
                        "layer {path}: content {d} does not match the config's diff_id {diff_id}"
                    )));
                }
                layers.push((
                    if gzip {
                        media::OCI_LAYER_GZIP
                    } else {
                        media::OCI_LAYER_TAR
                    },
                    d,
                    size,
                ));
            }
            // The config is stored as-is: its digest is the image ID docker shows.
            let manifest = write_image_with_config(store, &config_digest, &layers)?;
            let mut tags = Vec::new();
            for t in img.repo_tags.unwrap_or_default() {
                tags.push(t.parse::<Reference>().map_err(|e| bad(format!("manifest.json: {e}")))?);
            }
            store.register(&manifest, &tags)?;
            loaded.push(LoadedImage {
                digest: manifest.digest.clone(),
                tags: tags.iter().map(ToString::to_string).collect(),
            });
        }
    } else {
        return Err(bad(
            "neither index.json (OCI layout) nor manifest.json (docker save) found".into(),
        ));
    }
    Ok(loaded)
}

/// An OCI manifest over an already stored config blob.
fn write_image_with_config(store: &Store, config: &Digest, layers: &[(&str, Digest, u64)]) -> Result<Manifest> {
    let size = store.blobs().size(config)?;
    write_image(store, config, size, layers, Default::default())
}

/// Joins `target` to `base` lexically, dropping `..` at the top.
fn normalize_join(base: &Path, target: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(target).components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
