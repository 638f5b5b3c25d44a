//! Hostile stack bundles: a manifest that claims to be one, and a pinned
//! stack layer of any bytes, never panic; a pinned stack that is accepted
//! is canonical, instantiates with this host's secrets, and its
//! application is exactly the bytes it came from.
#![no_main]
use libfuzzer_sys::fuzz_target;

use ingot_deploy::bundle;
use ingot_oci::Digest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ingot_oci::Manifest::parse(data.to_vec(), None) {
        let _ = bundle::is_bundle(&m);
    }
    let claimed = Digest::sha256(data);
    let manifest = Digest::sha256(b"manifest");
    if let Ok(b) = bundle::from_parts(&manifest, "shop", &claimed, data, Vec::new()) {
        assert_eq!(b.application, claimed);
        let values = b
            .secrets()
            .into_iter()
            .map(|s| (s, ingot_deploy::pin::SecretValue(b"value".to_vec())))
            .collect();
        let stack = b.instantiate(&values).expect("an accepted bundle instantiates");
        assert_eq!(bundle::application(&stack).unwrap(), data);
        assert_eq!(stack.bundle.as_ref(), Some(&manifest));
        let _ = b.images();
    }
});
