//! Image references: `[host[:port]/]path[:tag][@digest]`.
//!
//! The grammar is the distribution project's: lowercase path components
//! joined by `.`, `_`, `__` or runs of `-`, an optional registry host first,
//! a tag of at most 128 characters. Names are kept as written (no implicit
//! `docker.io/library/` prefix); a reference with neither tag nor digest
//! means `:latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The longest repository name the distribution spec allows.
pub const MAX_NAME_LEN: usize = 255;
/// The default tag of a reference that names none.
pub const DEFAULT_TAG: &str = "latest";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {0:?}: empty")]
    Empty(String),
    #[error("invalid reference {input:?}: repository name component {component:?} must be lowercase letters and digits joined by '.', '_', '__' or '-'")]
    Component { input: String, component: String },
    #[error("invalid reference {input:?}: registry host {host:?} is malformed")]
    Host { input: String, host: String },
    #[error("invalid reference {0:?}: name longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("invalid reference {input:?}: tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    Tag { input: String, tag: String },
    #[error("invalid reference {input:?}: {source}")]
    Digest {
        input: String,
        #[source]
        source: DigestError,
    },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    name: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The repository name, including any registry host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag as written, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag to use when the reference is resolved by tag: the given one,
    /// or `latest` when neither tag nor digest was given.
    pub fn tag_or_default(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// The same name with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        format!("{}:{tag}", self.name).parse()
    }

    /// Splits off a registry host, if the first component is one.
    pub fn host(&self) -> Option<&str> {
        let (first, _) = self.name.split_once('/')?;
        is_host_like(first).then_some(first)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ReferenceError::Empty(input.into()));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse().map_err(|source| ReferenceError::Digest {
                    input: input.into(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::Tag {
                    input: input.into(),
                    tag: tag.into(),
                });
            }
        }
        validate_name(input, name)?;
        let name = familiar(name);
        Ok(Reference {
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

/// Docker Hub names in their familiar form, as `docker` shows them:
/// `docker.io/library/x` is `x`, `docker.io/a/b` is `a/b`.
fn familiar(name: &str) -> &str {
    for hub in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(hub) {
            // Keep the host when what follows would itself read as a host.
            if rest.split_once('/').is_some_and(|(first, _)| is_host_like(first)) {
                return name;
            }
            return match rest.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short,
                _ => rest,
            };
        }
    }
    name
}

/// Checks a repository name (no tag, no digest).
pub fn validate_name(input: &str, name: &str) -> Result<(), ReferenceError> {
    if name.is_empty() {
        return Err(ReferenceError::Empty(input.into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ReferenceError::TooLong(input.into()));
    }
    let mut parts = name.split('/').peekable();
    let mut first = true;
    while let Some(part) = parts.next() {
        let is_last = parts.peek().is_none();
        if first && !is_last && is_host_like(part) {
            if !valid_host(part) {
                return Err(ReferenceError::Host {
                    input: input.into(),
                    host: part.into(),
                });
            }
        } else if !valid_component(part) {
            return Err(ReferenceError::Component {
                input: input.into(),
                component: part.into(),
            });
        }
        first = false;
    }
    Ok(())
}

fn is_host_like(part: &str) -> bool {
    part.contains('.') || part.contains(':') || part == "localhost" || part.bytes().any(|b| b.is_ascii_uppercase())
}

fn valid_host(part: &str) -> bool {
    let (host, port) = match part.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (part, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// One path component of a repository name:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn valid_component(part: &str) -> bool {
    let b = part.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_common_forms() {
        let a = r("busybox");
        assert_eq!(
            (a.name(), a.tag(), a.tag_or_default()),
            ("busybox", None, Some("latest"))
        );
        let b = r("localhost:5000/team/app:v1.2");
        assert_eq!((b.name(), b.tag()), ("localhost:5000/team/app", Some("v1.2")));
        assert_eq!(b.host(), Some("localhost:5000"));
        let dg = format!("sha256:{}", "a".repeat(64));
        let c = r(&format!("app@{dg}"));
        assert_eq!(c.digest().unwrap().to_string(), dg);
        assert_eq!(c.tag_or_default(), None);
        let d = r(&format!("reg.example.com/a/b:t@{dg}"));
        assert_eq!(d.to_string(), format!("reg.example.com/a/b:t@{dg}"));
        assert_eq!(r("a__b/c-d---e.f:_x").name(), "a__b/c-d---e.f");
        assert_eq!(r("docker.io/library/busybox:1").name(), "busybox");
        assert_eq!(r("docker.io/team/app").name(), "team/app");
        assert_eq!(r("docker.io/library/a/b").name(), "library/a/b");
        // Found by fuzzing: stripping must not leave a host-like first component.
        let odd = r("index.docker.io/a.b/c");
        assert_eq!(odd.name(), "index.docker.io/a.b/c");
        assert_eq!(odd.to_string().parse::<Reference>().unwrap(), odd);
    }

    #[test]
    fn refuses_path_tricks_and_bad_names() {
        for bad in [
            "",
            "../etc",
            "a/../b",
            "a//b",
            "/abc",
            "abc/",
            "Upper",
            "a:b:c",
            "a@sha256:zz",
            "a/.b",
            "a/b_",
            "a:",
            "a:-x",
            "a/b c",
            "a\0b",
            "a/%2e%2e",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "accepted {bad:?}");
        }
        assert!(format!("a:{}", "t".repeat(129)).parse::<Reference>().is_err());
        assert!("a/".repeat(200).parse::<Reference>().is_err());
    }
}
