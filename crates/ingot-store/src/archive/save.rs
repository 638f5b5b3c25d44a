//! Writing image archives.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use ingot_oci::config::canonical_json;
use ingot_oci::layout::{self, DockerArchiveImage, OciLayout, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use ingot_oci::manifest::{Content, Role};
use ingot_oci::{Digest, Reference};
use serde_json::json;

use crate::error::{Result, StoreError};
use crate::images::Image;
use crate::Store;

/// Writes the images named by `inputs` to `out` as one archive. Returns
/// the manifest digests written, in input order.
pub fn save<W: Write>(store: &Store, inputs: &[String], out: W) -> Result<Vec<Digest>> {
    save_with(store, inputs, false, out)
}

/// [`save`], and with `referrers` every manifest in the store that refers
/// to one of them (signatures, SBOMs, provenance) too, unnamed in the
/// index (`load` records them as referrers again). Artifacts (manifests
/// whose config is not an image config) are in the OCI index only, not
/// in the `docker save` view.
pub fn save_with<W: Write>(store: &Store, inputs: &[String], referrers: bool, out: W) -> Result<Vec<Digest>> {
    // A reader too: GC must not sweep blobs of an image untagged meanwhile.
    let _lease = store.lease()?;
    let mut inputs = inputs.to_vec();
    let named = inputs.len();
    if referrers {
        for input in inputs.clone() {
            let digest = store.resolve(&input)?.digest;
            for r in store.referrers(&digest)? {
                if !inputs.contains(&r.to_string()) {
                    inputs.push(r.to_string());
                }
            }
        }
    }
    let mut images: Vec<(Image, Option<Reference>)> = Vec::new();
    for input in &inputs {
        let image = store.resolve(input)?;
        // Keep the name only when the user named a tag.
        let name = input
            .parse::<Reference>()
            .ok()
            .and_then(|r| r.with_tag(r.tag_or_default()?).ok())
            .filter(|r| image.tags.contains(&r.to_string()));
        images.push((image, name));
    }

    let mut blobs = BTreeSet::new();
    for (image, _) in &images {
        collect(store, &image.digest, None, &mut blobs)?;
    }

    let mut tar = tar::Builder::new(out);
    let w = |e: io::Error| StoreError::archive("save", e.to_string());
    append_bytes(&mut tar, layout::OCI_LAYOUT_FILE, &json_bytes(&OciLayout::default())?).map_err(w)?;
    append_dir(&mut tar, "blobs/").map_err(w)?;
    for alg in blobs.iter().map(|d| d.algorithm()).collect::<BTreeSet<_>>() {
        append_dir(&mut tar, &format!("blobs/{alg}/")).map_err(w)?;
    }
    for d in &blobs {
        let size = store.blobs().size(d)?;
        let mut h = header(size, 0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let path = store.blobs().path(d);
        let reader = store.blobs().open(d)?;
        tar.append_data(&mut h, layout::blob_path(d), reader)
            .map_err(|e| store.blobs().read_error(d, &path, e))?;
    }

    let mut index_manifests = Vec::new();
    let mut docker: BTreeMap<Digest, DockerArchiveImage> = BTreeMap::new();
    let mut docker_order = Vec::new();
    for (image, name) in &images {
        let mut desc = json!({
            "mediaType": image.manifest.media_type,
            "digest": image.digest,
            "size": image.manifest.bytes.len(),
        });
        if let Some(r) = name {
            desc["annotations"] = json!({
                REF_NAME_ANNOTATION: r.tag().unwrap_or("latest"),
                IMAGE_NAME_ANNOTATION: r.to_string(),
            });
        }
        if !index_manifests.contains(&desc) {
            index_manifests.push(desc);
        }
        let image_config = match &image.manifest.content {
            Content::Image(m) => matches!(
                m.config().media_type().to_string().as_str(),
                ingot_oci::media::OCI_CONFIG | ingot_oci::media::DOCKER_CONFIG
            ),
            Content::Index(_) => false,
        };
        if image_config {
            let refs = image.manifest.references().map_err(|source| StoreError::Manifest {
                digest: image.digest.clone(),
                source,
            })?;
            let entry = docker.entry(image.digest.clone()).or_insert_with(|| {
                docker_order.push(image.digest.clone());
                DockerArchiveImage {
                    config: refs
                        .iter()
                        .find(|r| r.role == Role::Config)
                        .map(|r| layout::blob_path(&r.digest))
                        .unwrap_or_default(),
                    repo_tags: Some(Vec::new()),
                    layers: refs
                        .iter()
                        .filter(|r| r.role == Role::Layer)
                        .map(|r| layout::blob_path(&r.digest))
                        .collect(),
                }
            });
            if let (Some(r), Some(tags)) = (name, entry.repo_tags.as_mut()) {
                if !tags.contains(&r.to_string()) {
                    tags.push(r.to_string());
                }
            }
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": ingot_oci::media::OCI_INDEX,
        "manifests": index_manifests,
    });
    append_bytes(&mut tar, layout::INDEX_FILE, &json_bytes(&index)?).map_err(w)?;
    let docker_list: Vec<&DockerArchiveImage> = docker_order.iter().map(|d| &docker[d]).collect();
    append_bytes(&mut tar, layout::DOCKER_MANIFEST_FILE, &json_bytes(&docker_list)?).map_err(w)?;
    tar.into_inner().map_err(w)?.flush().map_err(w)?;
    Ok(images.into_iter().take(named).map(|(i, _)| i.digest).collect())
}

fn json_bytes<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    canonical_json(v).map_err(|e| StoreError::archive("save", e.to_string()))
}

/// Adds `digest` and everything it references to `out`.
fn collect(store: &Store, digest: &Digest, media_type: Option<&str>, out: &mut BTreeSet<Digest>) -> Result<()> {
    if !out.insert(digest.clone()) {
        return Ok(());
    }
    let m = store.manifest(digest, media_type)?;
    for r in m.references().map_err(|source| StoreError::Manifest {
        digest: digest.clone(),
        source,
    })? {
        match r.role {
            Role::Manifest => collect(store, &r.digest, Some(&r.media_type), out)?,
            Role::Subject => {}
            Role::Config | Role::Layer => {
                out.insert(r.digest);
            }
        }
    }
    Ok(())
}

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut h, path, io::empty())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(data.len() as u64, 0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
}
