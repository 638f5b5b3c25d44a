//! Hostile image archives: `load` never panics, and whatever it refuses
//! leaves no image listed and a store that passes fsck.
#![no_main]
use ingot_store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("root")).unwrap();
    let result = ingot_store::load(&mut store, data, "fuzz");
    if result.is_err() {
        assert!(store.list().unwrap().is_empty());
    }
    let (_, problems) = ingot_store::fsck(&store).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
});
