//! Repository names and tags, as the distribution spec defines them (the
//! grammar itself is ingot-oci's, shared with image references).

use ingot_oci::reference::valid_component;
pub use ingot_oci::reference::valid_tag;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 characters in all.
pub fn valid_repo(name: &str) -> bool {
    name.len() <= 255 && !name.is_empty() && name.split('/').all(valid_component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["a", "library/ubuntu", "my-app", "a.b_c__d--e/f", "x/y/z", "0"] {
            assert!(valid_repo(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "../a", "a/..", "a/.", "-a", "a-", "a___b", "a..b", "a b", "a/B", "a%2f",
        ] {
            assert!(!valid_repo(bad), "{bad}");
        }
        assert!(!valid_repo(&"a".repeat(256)));
    }

    #[test]
    fn tags() {
        assert!(valid_tag("v1.0_rc-1") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        assert!(
            !valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag("a/b") && !valid_tag(&"a".repeat(129))
        );
    }
}
