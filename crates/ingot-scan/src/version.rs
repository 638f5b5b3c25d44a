//! Version order per ecosystem: PyPI by PEP 440 (`pep440_rs`, so 3.2 ==
//! 3.2.0 and 1.0rc1 < 1.0), Debian by dpkg's rules (epoch, upstream,
//! revision; `~` before everything, letters before other characters), and
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
        "Debian" | "Ubuntu" | "Alpine" => Some(dpkg(a, b)),
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
