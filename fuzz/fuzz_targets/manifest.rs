//! Manifest and config parsing never panics, and what parses re-parses the same.
#![no_main]
use ingot_oci::config::ImageConfig;
use ingot_oci::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for hint in [None, Some("application/vnd.docker.distribution.manifest.v2+json"), Some("application/vnd.oci.image.index.v1+json")] {
        if let Ok(m) = Manifest::parse(data.to_vec(), hint) {
            let refs = m.references().expect("references validated by parse");
            let again = Manifest::parse(m.bytes.clone(), Some(&m.media_type)).expect("re-parse");
            assert_eq!(again.references().unwrap(), refs);
        }
    }
    let _ = ImageConfig::parse(data);
});
