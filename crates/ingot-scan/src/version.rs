//! Version order per ecosystem: PyPI by PEP 440 (`pep440_rs`, so 3.2 ==
//! 3.2.0 and 1.0rc1 < 1.0), Debian by dpkg's rules (epoch, upstream,
//! revision; `~` before everything, letters before other characters),
//! Alpine by apk's rules (numbers, a letter, `_alpha` < `_beta` < `_pre` <
//! `_rc` < none < `_cvs` < `_svn` < `_git` < `_hg` < `_p`, then `-rN`), and
//! semver precedence for npm, crates.io, Go and the rest.

use std::cmp::Ordering;
use std::str::FromStr;

/// Compares two versions of `ecosystem`; `None` if either does not parse.
pub fn compare(ecosystem: &str, a: &str, b: &str) -> Option<Ordering> {
    match ecosystem {
        "PyPI" => {
            let a = pep440_rs::Version::from_str(a.trim()).ok()?;
            let b = pep440_rs::Version::from_str(b.trim()).ok()?;
            Some(a.cmp(&b))
        }
        "Debian" | "Ubuntu" => Some(dpkg(a, b)),
        "Alpine" => apk(a, b),
        _ => semver(a, b),
    }
}

/// dpkg's comparison of `[epoch:]upstream[-revision]`.
pub fn dpkg(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb))
}

/// One dpkg part: alternating non-digit and digit runs.
fn part(a: &str, b: &str) -> Ordering {
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    let (mut a, mut b) = (a.chars().peekable(), b.chars().peekable());
    loop {
        // Non-digit run.
        loop {
            let (ca, cb) = (
                a.peek().copied().filter(|c| !c.is_ascii_digit()),
                b.peek().copied().filter(|c| !c.is_ascii_digit()),
            );
            if ca.is_none() && cb.is_none() {
                break;
            }
            let o = order(ca).cmp(&order(cb));
            if o != Ordering::Equal {
                return o;
            }
            a.next();
            b.next();
        }
        // Digit run.
        let num = |it: &mut std::iter::Peekable<std::str::Chars>| {
            let mut n: u128 = 0;
            while let Some(c) = it.peek().copied().filter(char::is_ascii_digit) {
                n = n.saturating_mul(10).saturating_add(c as u128 - '0' as u128);
                it.next();
            }
            n
        };
        let o = num(&mut a).cmp(&num(&mut b));
        if o != Ordering::Equal {
            return o;
        }
        if a.peek().is_none() && b.peek().is_none() {
            return Ordering::Equal;
        }
    }
}

/// apk's comparison of `1.2.3[a][_suffix[N]...][-rN]`; `None` if either
/// does not parse.
pub fn apk(a: &str, b: &str) -> Option<Ordering> {
    // (numbers, letter, suffixes as (rank, number), revision)
    type Key = (Vec<u64>, Option<char>, Vec<(u8, u64)>, u64);
    const NONE_RANK: u8 = 4;
    fn parse(v: &str) -> Option<Key> {
        let v = v.trim();
        let (main, rev) = match v.rsplit_once("-r") {
            Some((m, r)) if !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()) => (m, r.parse().ok()?),
            _ => (v, 0),
        };
        let mut parts = main.split('_');
        let head = parts.next()?;
        let (nums, letter) = match head.chars().last() {
            Some(c) if c.is_ascii_lowercase() => (&head[..head.len() - 1], Some(c)),
            _ => (head, None),
        };
        let nums: Vec<u64> = nums.split('.').map(|n| n.parse().ok()).collect::<Option<_>>()?;
        let mut suffixes = Vec::new();
        for s in parts {
            let digits = s.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            let name = &s[..s.len() - digits.len()];
            let rank = match name {
                "alpha" => 0,
                "beta" => 1,
                "pre" => 2,
                "rc" => 3,
                "cvs" => 5,
                "svn" => 6,
                "git" => 7,
                "hg" => 8,
                "p" => 9,
                _ => return None,
            };
            let n = if digits.is_empty() { 0 } else { digits.parse().ok()? };
            suffixes.push((rank, n));
        }
        Some((nums, letter, suffixes, rev))
    }
    let (na, la, sa, ra) = parse(a)?;
    let (nb, lb, sb, rb) = parse(b)?;
    let suffix = |s: &[(u8, u64)], i: usize| s.get(i).copied().unwrap_or((NONE_RANK, 0));
    let suffixes = (0..sa.len().max(sb.len()))
        .map(|i| suffix(&sa, i).cmp(&suffix(&sb, i)))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal);
    Some(na.cmp(&nb).then(la.cmp(&lb)).then(suffixes).then(ra.cmp(&rb)))
}

/// Semver precedence (a leading `v` allowed; build metadata ignored;
/// missing minor/patch are zero).
pub fn semver(a: &str, b: &str) -> Option<Ordering> {
    fn parse(v: &str) -> Option<(Vec<u64>, Vec<String>)> {
        let v = v.trim().trim_start_matches('v');
        let v = v.split('+').next()?;
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, p.split('.').map(String::from).collect()),
            None => (v, Vec::new()),
        };
        let mut nums: Vec<u64> = core.split('.').map(|n| n.parse().ok()).collect::<Option<_>>()?;
        nums.resize(3.max(nums.len()), 0);
        Some((nums, pre))
    }
    let (na, pa) = parse(a)?;
    let (nb, pb) = parse(b)?;
    Some(na.cmp(&nb).then_with(|| match (pa.is_empty(), pb.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            for (x, y) in pa.iter().zip(&pb) {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(i), Ok(j)) => i.cmp(&j),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            pa.len().cmp(&pb.len())
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn pep440() {
        assert_eq!(compare("PyPI", "3.2", "3.2.0"), Some(Equal));
        assert_eq!(compare("PyPI", "1.0rc1", "1.0"), Some(Less));
        assert_eq!(compare("PyPI", "1.0.post1", "1.0"), Some(Greater));
        assert_eq!(compare("PyPI", "1!0.1", "2.0"), Some(Greater));
        assert_eq!(compare("PyPI", "1.0.dev1", "1.0a1"), Some(Less));
    }

    #[test]
    fn apk_rules() {
        let order = [
            "1.2_alpha",
            "1.2_alpha2",
            "1.2_beta",
            "1.2_pre1",
            "1.2_rc1",
            "1.2",
            "1.2-r1",
            "1.2-r10",
            "1.2_p1",
            "1.2a",
            "1.2.1",
            "1.10",
        ];
        for w in order.windows(2) {
            assert_eq!(apk(w[0], w[1]), Some(Less), "{} < {}", w[0], w[1]);
            assert_eq!(apk(w[1], w[0]), Some(Greater), "{} > {}", w[1], w[0]);
        }
        assert_eq!(compare("Alpine", "1.36.1-r5", "1.36.1-r5"), Some(Equal));
        assert_eq!(
            compare("Alpine", "3.0.8-r0", "3.0.10-r0"),
            Some(Less),
            "numeric, not dpkg-textual"
        );
        assert_eq!(apk("1.0_bogus", "1.0"), None);
        assert_eq!(apk("x.y", "1.0"), None);
    }

    #[test]
    fn dpkg_rules() {
        assert_eq!(dpkg("1.0~rc1", "1.0"), Less);
        assert_eq!(dpkg("1:0.9", "2.0"), Greater);
        assert_eq!(dpkg("2.36-9+deb12u4", "2.36-9+deb12u10"), Less);
        assert_eq!(dpkg("1.0a", "1.0+"), Less);
        assert_eq!(dpkg("1.0-1", "1.0-1"), Equal);
        assert_eq!(dpkg("1.10", "1.9"), Greater);
    }

    #[test]
    fn semver_precedence() {
        assert_eq!(semver("1.0.0-alpha", "1.0.0"), Some(Less));
        assert_eq!(semver("1.0.0-alpha.1", "1.0.0-alpha.beta"), Some(Less));
        assert_eq!(semver("v1.2", "1.2.0"), Some(Equal));
        assert_eq!(semver("1.10.0", "1.9.9"), Some(Greater));
        assert_eq!(semver("x", "1"), None);
    }
}
