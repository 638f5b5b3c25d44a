//! The registry's request-path router, repository/tag grammar, the client's
//! remote-reference parser and its challenge parser never panic, and a
//! routed repository name always satisfies the spec's grammar.
#![no_main]
use ingot_registry::client::{challenge_params, Remote};
use ingot_registry::names::{valid_repo, valid_tag};
use ingot_registry::server::{route, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = route(s) {
        let name = match &r {
            Route::Tags(n) | Route::Manifest(n, _) | Route::Blob(n, _) | Route::UploadStart(n) | Route::Upload(n, _) | Route::Referrers(n, _) => Some(n),
            Route::Base | Route::Catalog => None,
        };
        if let Some(n) = name {
            assert!(valid_repo(n), "routed an invalid name {n:?}");
            assert!(!n.contains(".."), "{n:?}");
        }
    }
    let _ = valid_tag(s);
    if let Ok(r) = Remote::parse(s, false) {
        assert!(valid_repo(&r.repo));
    }
    let _ = challenge_params(s);
});
