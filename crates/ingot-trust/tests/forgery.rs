//! Forged signatures fail: a changed payload under a real signature, and a
//! real signature of one image attached to another.

use base64::Engine;
use ingot_oci::config::canonical_json;
use ingot_oci::{media, Manifest, Reference};
use ingot_store::{import_rootfs, ImportOptions, Store};
use ingot_testsupport::sample_rootfs;
use ingot_trust::keys::{KeyKind, SigningKey};
use ingot_trust::signature::{self, SIGNATURE_ANNOTATION, SIMPLE_SIGNING};
use serde_json::json;

fn image(store: &mut Store, name: &str, seed: u64) -> ingot_oci::Digest {
    let r: Reference = name.parse().unwrap();
    let tar = sample_rootfs(50_000, seed);
    import_rootfs(store, &tar[..], "t", &r, &ImportOptions::default())
        .unwrap()
        .manifest
        .digest
}

/// Attaches a signature artifact with `payload` and `sig` to `subject`.
fn attach(store: &mut Store, subject: &ingot_oci::Digest, payload: &[u8], sig: &[u8]) {
    let pd = store.blobs().put(payload).unwrap();
    let empty = store.blobs().put(b"{}").unwrap();
    let subj = store.manifest(subject, None).unwrap();
    let m = json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": signature::SIGNATURE_ARTIFACT,
        "config": {"mediaType": media::OCI_EMPTY, "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": SIMPLE_SIGNING, "digest": pd.to_string(), "size": payload.len(),
                    "annotations": {SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(sig)}}],
        "subject": {"mediaType": subj.media_type, "digest": subject.to_string(), "size": subj.bytes.len()},
    });
    let bytes = canonical_json(&m).unwrap();
    store.blobs().put(&bytes).unwrap();
    let parsed = Manifest::parse(bytes, Some(media::OCI_MANIFEST)).unwrap();
    store.register(&parsed, &[]).unwrap();
}

#[test]
fn changed_payload_and_moved_signature_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let key = SigningKey::generate(KeyKind::EcdsaP256);
    let public = key.verifying_key();
    let x = image(&mut store, "x:1", 1);
    let y = image(&mut store, "y:1", 2);

    // A payload for y, signed, then changed by one byte: fails.
    let good = signature::payload("y", &y);
    let sig = key.sign(&good);
    let mut changed = good.clone();
    changed.insert(1, b' ');
    attach(&mut store, &y, &changed, &sig);
    let err = signature::verify(&store, "y:1", &public).unwrap_err().to_string();
    assert!(err.contains("does not verify"), "{err}");

    // A genuine signature of x attached to y: valid bytes, wrong image.
    let px = signature::payload("x", &x);
    attach(&mut store, &y, &px, &key.sign(&px));
    let err = signature::verify(&store, "y:1", &public).unwrap_err().to_string();
    assert!(err.contains(&format!("not {y}")), "{err}");
    assert!(err.contains("2 signature(s) checked"), "{err}");

    // The real thing verifies, with the other key it does not.
    signature::sign(&mut store, "y:1", &key).unwrap();
    assert_eq!(signature::verify(&store, "y:1", &public).unwrap().len(), 1);
    let other = SigningKey::generate(KeyKind::Ed25519).verifying_key();
    assert!(signature::verify(&store, "y:1", &other).is_err());
    // x has no signature of its own.
    assert!(signature::verify(&store, "x:1", &public).is_err());
}
