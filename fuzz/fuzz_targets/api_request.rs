//! Hostile daemon API bodies never panic the request parsing; a deploy
//! body that parses has typed digests and passes through unchanged, and
//! its secret values match the digests the stack names.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ingot_deploy::api::Deploy { stack, secrets, reason }) = ingot_deploy::api::parse_deploy(data) {
        // A secret value is accepted only under its own digest.
        for v in &secrets {
            let d = ingot_oci::Digest::sha256(&v.0);
            assert!(stack.secrets.values().any(|s| s.digest == d));
        }
        for s in stack.services.values() {
            assert_eq!(s.digest.to_string().parse::<ingot_oci::Digest>().ok().as_ref(), Some(&s.digest));
        }
        if let Some(r) = reason {
            assert!(r.len() <= ingot_deploy::api::MAX_REASON);
        }
        // The canonical form (what the ledger records) is always producible.
        assert!(!stack.canonical().is_empty());
    }
    let _ = ingot_deploy::api::parse_body::<ingot_deploy::api::ScaleRequest>(data);
    let _ = ingot_deploy::api::parse_body::<ingot_deploy::api::ReasonRequest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ingot_deploy::pin::check_container_path(text);
        let _ = ingot_deploy::pin::check_stack_name(text);
    }
});
