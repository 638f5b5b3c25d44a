//! Catalogers for executables that carry their own dependency list: Go's
//! build info (the `.go.buildinfo` blob, Go 1.18+ inline format) and Rust
//! binaries built with cargo-auditable (the zlib-compressed JSON in the
//! `.dep-v0` section, read with the `auditable-info` crate).

use crate::{Ecosystem, Found};

/// The magic at the start of Go's build info, 16-byte aligned.
const GO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Packages recorded in an executable, if it records any.
pub(crate) fn packages(data: &[u8]) -> Vec<Found> {
    let mut out = go(data).unwrap_or_default();
    out.extend(rust(data).unwrap_or_default());
    out
}

/// Go build info: the toolchain (as `stdlib`), the main module and every
/// dependency (a `=>` replacement keeps the required version, as
/// `go version -m` shows it first).
pub(crate) fn go(data: &[u8]) -> Option<Vec<Found>> {
    let at = (0..data.len().saturating_sub(32))
        .step_by(16)
        .find(|&i| data[i..].starts_with(GO_MAGIC))?;
    let header = &data[at..];
    let flags = header[15];
    if flags & 2 == 0 {
        // Before Go 1.18 the strings are pointers into the data segment.
        return None;
    }
    let mut rest = &header[32..];
    let version = varint_str(&mut rest)?;
    let mut modinfo = varint_str(&mut rest)?;
    // The module info is framed by 16-byte sentinels.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let version = std::str::from_utf8(version).ok()?;
    let modinfo = String::from_utf8_lossy(modinfo);
    let mut out: Vec<Found> = Vec::new();
    if let Some(v) = version.strip_prefix("go") {
        let v = v.split(' ').next().unwrap_or(v);
        out.push((
            "stdlib".into(),
            v.to_string(),
            Ecosystem::Go,
            Some("BSD-3-Clause".into()),
        ));
    }
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod" | "dep", path, version, ..] => {
                out.push((path.to_string(), version.to_string(), Ecosystem::Go, None));
            }
            ["mod", path] => out.push((path.to_string(), "(devel)".into(), Ecosystem::Go, None)),
            _ => {}
        }
    }
    Some(out)
}

fn varint_str<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut n: u64 = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = *buf.get(i)?;
        i += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let n = usize::try_from(n).ok()?;
    let s = buf.get(i..i.checked_add(n)?)?;
    *buf = &buf[i + n..];
    Some(s)
}

/// cargo-auditable's dependency list: every package but build-only ones.
pub(crate) fn rust(data: &[u8]) -> Option<Vec<Found>> {
    let info = auditable_info::audit_info_from_slice(data, 8 << 20).ok()?;
    Some(
        info.packages
            .into_iter()
            .filter(|p| p.kind != auditable_serde::DependencyKind::Build)
            .map(|p| (p.name, p.version.to_string(), Ecosystem::Cargo, None))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b.extend_from_slice(GO_MAGIC);
        b.extend_from_slice(&[8, 2]);
        b.extend_from_slice(&[0; 16]);
        for s in [version.as_bytes(), modinfo.as_bytes()] {
            let mut n = s.len();
            while n >= 0x80 {
                b.push((n as u8) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b.extend_from_slice(s);
        }
        b.extend_from_slice(&[0; 64]);
        b
    }

    #[test]
    fn go_inline_build_info() {
        let sentinel = "0123456789abcdef";
        let mi = format!(
            "{sentinel}path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.7\th1:x=\n=>\t./text\t(devel)\t\nbuild\t-compiler=gc\n{sentinel}"
        );
        let found = go(&go_blob("go1.19.8", &mi)).unwrap();
        let got: Vec<(&str, &str)> = found.iter().map(|f| (f.0.as_str(), f.1.as_str())).collect();
        assert_eq!(
            got,
            [
                ("stdlib", "1.19.8"),
                ("example.com/app", "(devel)"),
                ("golang.org/x/text", "v0.3.7")
            ]
        );
        // Unaligned magic, truncated strings, old formats: nothing, no panic.
        let mut shifted = vec![0u8];
        shifted.extend(go_blob("go1.19", &mi));
        assert!(go(&shifted).is_none());
        let mut truncated = go_blob("go1.19", &mi);
        truncated.truncate(48 + 33);
        assert!(go(&truncated).is_none_or(|v| v.is_empty()));
        let mut old = go_blob("go1.17", &mi);
        old[48 + 15] = 0;
        assert!(go(&old).is_none());
        assert!(rust(b"\x7fELF not really").is_none());
    }
}
