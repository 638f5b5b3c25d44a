//! Package records from hostile bytes never panic: executables' build info
//! (Go, cargo-auditable), version ordering per ecosystem, and deploy
//! policies. Orders are antisymmetric.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ingot_sbom::binary_packages(data);
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = ingot_trust::policy::Policy::parse(s);
    let (a, b) = s.split_once('\n').unwrap_or((s, "1.0"));
    for eco in ["Alpine", "Debian", "PyPI", "Go"] {
        if let (Some(x), Some(y)) = (
            ingot_scan::version::compare(eco, a, b),
            ingot_scan::version::compare(eco, b, a),
        ) {
            assert_eq!(x, y.reverse(), "{eco}: {a:?} vs {b:?}");
        }
    }
});
