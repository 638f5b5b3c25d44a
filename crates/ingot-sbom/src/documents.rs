//! SBOM documents: SPDX 2.3 JSON and CycloneDX 1.5 JSON, written from the
//! catalogers' packages, and attached to the image as OCI 1.1 referrer
//! artifacts (`application/spdx+json`, `application/vnd.cyclonedx+json`).
//!
//! Documents are deterministic: their time is the image's creation time,
//! their identifiers derive from the image digest, packages are sorted, and
//! JSON keys are canonical; the same image gives the same SBOM bytes.

use ingot_oci::config::canonical_json;
use ingot_oci::{media, Digest, Manifest};
use ingot_store::Store;
use serde_json::{json, Value};

use crate::{CatalogError, Package, Result};

pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Spdx,
    CycloneDx,
}

impl std::str::FromStr for Format {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Format> {
        match s {
            "spdx-json" | "spdx" => Ok(Format::Spdx),
            "cyclonedx-json" | "cyclonedx" => Ok(Format::CycloneDx),
            _ => Err(CatalogError::Invalid(format!(
                "invalid SBOM format {s:?}: expected spdx-json or cyclonedx-json"
            ))),
        }
    }
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Spdx => SPDX_MEDIA_TYPE,
            Format::CycloneDx => CYCLONEDX_MEDIA_TYPE,
        }
    }
}

/// What the document describes.
pub struct Subject<'a> {
    pub name: &'a str,
    pub digest: &'a Digest,
    /// RFC 3339, the image's creation time.
    pub created: &'a str,
}

fn tool() -> String {
    format!("ingot-{}", env!("CARGO_PKG_VERSION"))
}

/// `pkg:oci/NAME@sha256%3A...`
fn image_purl(s: &Subject) -> String {
    let name = s
        .name
        .rsplit('/')
        .next()
        .unwrap_or(s.name)
        .split(':')
        .next()
        .unwrap_or("image");
    format!("pkg:oci/{}@{}", name, s.digest.to_string().replace(':', "%3A"))
}

/// A license string SPDX accepts as a license id, else NOASSERTION.
fn spdx_license(l: &Option<String>) -> String {
    const KNOWN: &[&str] = &[
        "MIT",
        "Apache-2.0",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "ISC",
        "MPL-2.0",
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "LGPL-2.1-only",
        "LGPL-2.1-or-later",
        "LGPL-3.0-only",
        "PSF-2.0",
        "Unlicense",
        "0BSD",
        "Zlib",
        "CC0-1.0",
        "Python-2.0",
    ];
    match l.as_deref() {
        Some(id) if KNOWN.contains(&id) => id.to_string(),
        _ => "NOASSERTION".to_string(),
    }
}

pub fn spdx(s: &Subject, packages: &[Package]) -> Value {
    let mut pkgs = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": s.name,
        "versionInfo": s.digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": image_purl(s)}],
    })];
    let mut rels = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Image"}),
    ];
    for (i, p) in packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}", i + 1);
        let mut v = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": spdx_license(&p.license),
            "sourceInfo": format!("found in layer {} at {}", p.layer, p.path),
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p.purl}],
        });
        if let Some(l) = &p.license {
            v["licenseComments"] = json!(format!("declared by the package as: {l}"));
        }
        pkgs.push(v);
        rels.push(json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": s.name,
        "documentNamespace": format!("https://ingot.invalid/spdx/{}", s.digest.hex()),
        "creationInfo": {"created": s.created, "creators": [format!("Tool: {}", tool())]},
        "packages": pkgs,
        "relationships": rels,
    })
}

pub fn cyclonedx(s: &Subject, packages: &[Package]) -> Value {
    let h = s.digest.hex();
    let serial = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let components: Vec<Value> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("pkg-{}", i + 1),
                "name": p.name,
                "version": p.version,
                "purl": p.purl,
                "properties": [
                    {"name": "ingot:layer", "value": p.layer.to_string()},
                    {"name": "ingot:path", "value": p.path},
                    {"name": "ingot:ecosystem", "value": p.ecosystem.osv()},
                ],
            });
            if let Some(l) = &p.license {
                c["licenses"] = json!([{"license": {"name": l}}]);
            }
            c
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": s.created,
            "tools": {"components": [{"type": "application", "name": "ingot", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {"type": "container", "bom-ref": "image", "name": s.name, "version": s.digest.to_string(), "purl": image_purl(s)},
        },
        "components": components,
    })
}

/// The document (first layer) of the referrer of `image` with `artifact_type`.
pub fn attached_document(store: &Store, image: &Digest, artifact_type: &str) -> Result<Option<Vec<u8>>> {
    for r in store.referrers(image)? {
        let m = store.manifest(&r, None)?;
        let v: Value = serde_json::from_slice(&m.bytes).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        if v["artifactType"] != artifact_type {
            continue;
        }
        if let Some(d) = v["layers"][0]["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
            return Ok(Some(store.blobs().read(&d)?));
        }
    }
    Ok(None)
}

/// Catalogs `image` and writes its SBOM in `format`: (document bytes, image digest).
pub fn document(store: &Store, image: &str, format: Format) -> Result<(Vec<u8>, Digest)> {
    let img = store.resolve(image)?;
    let packages = crate::catalog(store, image)?;
    let created = store
        .config(&img.manifest)?
        .and_then(|(_, c)| c.created)
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string());
    let name = img.tags.first().cloned().unwrap_or_else(|| img.digest.to_string());
    let subject = Subject {
        name: &name,
        digest: &img.digest,
        created: &created,
    };
    let doc = match format {
        Format::Spdx => spdx(&subject, &packages),
        Format::CycloneDx => cyclonedx(&subject, &packages),
    };
    let bytes = canonical_json(&doc).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    Ok((bytes, img.digest))
}

/// Stores `doc` as a referrer artifact of `image`; returns its digest.
pub fn attach(store: &mut Store, image: &Digest, format: Format, doc: &[u8]) -> Result<Digest> {
    attach_document(store, image, format.media_type(), doc)
}

/// Stores `doc` (of `media_type`, also the artifact type) as a referrer
/// artifact of `image`; returns the artifact manifest's digest.
pub fn attach_document(store: &mut Store, image: &Digest, media_type: &str, doc: &[u8]) -> Result<Digest> {
    let subject = store.manifest(image, None)?;
    let layer = store.blobs().put(doc)?;
    let empty = store.blobs().put(b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": media_type,
        "config": {"mediaType": media::OCI_EMPTY, "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": media_type, "digest": layer.to_string(), "size": doc.len()}],
        "subject": {"mediaType": subject.media_type, "digest": image.to_string(), "size": subject.bytes.len()},
    });
    let bytes = canonical_json(&manifest).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    let digest = store.blobs().put(&bytes)?;
    let m = Manifest::parse(bytes, Some(media::OCI_MANIFEST)).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    store.register(&m, &[])?;
    Ok(digest)
}
