//! Signatures in cosign's format: a "simple signing" payload naming the
//! image's manifest digest, signed with the key; the payload is a blob with
//! media type `application/vnd.dev.cosign.simplesigning.v1+json` carrying
//! the base64 signature in the `dev.cosignproject.cosign/signature`
//! annotation, in an OCI 1.1 artifact whose subject is the image (so the
//! referrers API finds it and push/pull carry it), also tagged
//! `<name>:sha256-<hex>.sig` as cosign names signatures.
//!
//! Verification trusts nothing but the key: the payload must name exactly
//! the image's digest and the signature over the payload's exact bytes must
//! check out.

use base64::Engine;
use ingot_oci::config::canonical_json;
use ingot_oci::manifest::Content;
use ingot_oci::{media, Digest, Manifest, Reference};
use ingot_store::Store;
use serde_json::{json, Value};

use crate::error::{Result, TrustError};
use crate::keys::{SigningKey, VerifyingKey};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The simple-signing payload for `digest` known as `reference`.
pub fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    canonical_json(&v).unwrap_or_default()
}

/// A signature made by [`sign`].
#[derive(Debug, Clone)]
pub struct Signed {
    pub image: Digest,
    pub signature: Digest,
    pub tag: Option<String>,
}

/// Signs `image` with `key` and stores the signature as its referrer.
pub fn sign(store: &mut Store, image: &str, key: &SigningKey) -> Result<Signed> {
    let _lease = store.lease()?;
    let img = store.resolve(image)?;
    let name: Option<Reference> = img.tags.first().and_then(|t| t.parse().ok());
    let identity = name.as_ref().map(|r| r.name().to_string()).unwrap_or_default();
    let body = payload(&identity, &img.digest);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&body));
    let payload_digest = store.blobs().put(&body)?;
    let empty = store.blobs().put(b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": SIGNATURE_ARTIFACT,
        "config": {"mediaType": media::OCI_EMPTY, "digest": empty.to_string(), "size": 2},
        "layers": [{
            "mediaType": SIMPLE_SIGNING,
            "digest": payload_digest.to_string(),
            "size": body.len(),
            "annotations": {SIGNATURE_ANNOTATION: sig},
        }],
        "subject": {"mediaType": img.manifest.media_type, "digest": img.digest.to_string(), "size": img.manifest.bytes.len()},
    });
    let bytes = canonical_json(&manifest).map_err(|e| TrustError::Invalid(e.to_string()))?;
    let digest = store.blobs().put(&bytes)?;
    let m = Manifest::parse(bytes, Some(media::OCI_MANIFEST)).map_err(|e| TrustError::Invalid(e.to_string()))?;
    let tag = name
        .map(|r| {
            format!(
                "{}:{}-{}.sig",
                r.name(),
                img.digest.algorithm().as_str(),
                img.digest.hex()
            )
        })
        .map(|t| {
            t.parse::<Reference>()
                .map_err(|e| TrustError::Invalid(format!("{t}: {e}")))
        })
        .transpose()?;
    store.register(&m, tag.as_slice())?;
    Ok(Signed {
        image: img.digest,
        signature: digest,
        tag: tag.map(|t| t.to_string()),
    })
}

/// A signature that verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub image: Digest,
    pub signature: Digest,
    pub identity: String,
}

/// Checks that `image` has at least one signature by `key`; every
/// signature that fails says why.
pub fn verify(store: &Store, image: &str, key: &VerifyingKey) -> Result<Vec<Verified>> {
    let img = store.resolve(image)?;
    let mut referrers = Vec::new();
    for r in store.referrers(&img.digest)? {
        referrers.push(store.manifest(&r, None)?);
    }
    let read = |d: &Digest| -> Result<Vec<u8>> { Ok(store.blobs().read(d)?) };
    check(image, &img.digest, &referrers, &read, key)
}

/// The signatures among `referrers` (manifests referring to `subject`,
/// known as `image`) that `key` verifies; `blob` reads a payload (from the
/// store, or from a registry for a remote `ingot verify`). None verifying
/// is an error that says why each failed.
pub fn check(
    image: &str,
    subject: &Digest,
    referrers: &[Manifest],
    blob: &dyn Fn(&Digest) -> Result<Vec<u8>>,
    key: &VerifyingKey,
) -> Result<Vec<Verified>> {
    let mut good = Vec::new();
    let mut reasons = Vec::new();
    let mut checked = 0;
    for m in referrers {
        let r = &m.digest;
        let Content::Image(im) = &m.content else { continue };
        for layer in im.layers() {
            if layer.media_type().to_string() != SIMPLE_SIGNING {
                continue;
            }
            checked += 1;
            let Some(sig) = layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            else {
                reasons.push(format!("signature {r}: no signature annotation"));
                continue;
            };
            let pd = Digest::try_from(layer.digest()).map_err(|e| TrustError::Invalid(e.to_string()))?;
            // One unreadable payload does not hide the others.
            let body = match blob(&pd) {
                Ok(b) => b,
                Err(e) => {
                    reasons.push(format!("signature {r}: payload {pd}: {e}"));
                    continue;
                }
            };
            if !key.verify(&body, &sig) {
                reasons.push(format!(
                    "signature {r}: does not verify with this key (wrong key or changed payload)"
                ));
                continue;
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let named = v["critical"]["image"]["docker-manifest-digest"].as_str().unwrap_or("");
            if named != subject.to_string() || v["critical"]["type"] != SIGNATURE_TYPE {
                reasons.push(format!("signature {r}: signs {named:?}, not {subject}"));
                continue;
            }
            good.push(Verified {
                image: subject.clone(),
                signature: r.clone(),
                identity: v["critical"]["identity"]["docker-reference"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            });
        }
    }
    if good.is_empty() {
        return Err(TrustError::NotVerified {
            image: image.to_string(),
            checked,
            reasons,
        });
    }
    Ok(good)
}
