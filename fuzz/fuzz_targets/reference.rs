//! Reference and digest parsing never panics; what parses prints back to
//! something that parses to the same value and holds no path tricks.
#![no_main]
use ingot_oci::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = s.parse::<Reference>() {
        let printed = r.to_string();
        assert_eq!(printed.parse::<Reference>().unwrap(), r);
        assert!(!r.name().split('/').any(|c| c == ".." || c == "." || c.is_empty()), "{printed}");
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert!(!d.hex().contains('/') && !d.hex().contains('.'));
        assert_eq!(d.to_string(), s);
    }
});
