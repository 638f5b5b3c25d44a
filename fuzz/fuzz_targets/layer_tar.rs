//! Hostile layer tarballs: normalising and unpacking never panic and never
//! write outside the target directory.
#![no_main]
use ingot_oci::layer::{normalize, unpack, Limits, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_entry_size: 1 << 20, max_total_size: 8 << 20, max_entries: 1000, max_path_len: 4096 };
    let _ = normalize(data, Vec::new(), &limits);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let _ = unpack(data, &dest, &UnpackOptions { limits, same_owner: false, ..Default::default() });
    // Nothing may appear beside the target.
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("dest")]);
});
