//! Who a request comes from, and whether it may change anything.

use std::io::Write;
use std::path::Path;

use axum::http::{header, HeaderMap, HeaderValue};
use sha2::{Digest as _, Sha256};

/// The cookie that carries the token.
pub const COOKIE: &str = "ingot_web";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (reads only, and only on a loopback listener).
    Anonymous,
    /// Presented the daemon's token (cookie or bearer).
    Token,
}

/// The daemon's web token: read from `<root>/web.token`, or made there
/// (32 random bytes, hex, mode 0600) at first start.
pub fn load_or_make_token(root: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = crate::token_path(root);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{}: too short to be a token (delete it to have a new one made)",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension(format!("new-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    // Two daemons starting at once: the first one's token stands.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            load_or_make_token(root)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Equal, in time that depends only on the lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The access a request's headers give it.
pub fn access(token: &str, headers: &HeaderMap) -> Access {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v);
    if bearer.or(cookie).is_some_and(|t| same(t, token)) {
        Access::Token
    } else {
        Access::Anonymous
    }
}

/// Whether the request names this host by a loopback name (`localhost`,
/// `127.x.x.x`, `[::1]`, any port).
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The form token of a session: derived from the daemon's token, so only
/// pages served to a holder of the token carry it.
pub fn csrf(token: &str) -> String {
    let h = Sha256::new()
        .chain_update(b"ingot-web csrf\0")
        .chain_update(token.as_bytes())
        .finalize();
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a request may change something: the token, the form's CSRF
/// token, and no foreign `Origin`.
pub fn may_change(token: &str, access: Access, headers: &HeaderMap, form_csrf: &str) -> Result<(), &'static str> {
    if access != Access::Token {
        return Err("Changes need the daemon's token: log in first.");
    }
    if !same(form_csrf, &csrf(token)) {
        return Err("The form's CSRF token is missing or wrong: reload the page and try again.");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o == host);
        if !own {
            return Err("The request came from another site's page.");
        }
    }
    Ok(())
}

pub fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("ingot_web=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_token_as_cookie_or_bearer_and_nothing_else() {
        let t = "a".repeat(64);
        assert_eq!(access(&t, &headers(&[])), Access::Anonymous);
        assert_eq!(
            access(&t, &headers(&[("cookie", &format!("x=1; ingot_web={t}"))])),
            Access::Token
        );
        assert_eq!(
            access(&t, &headers(&[("authorization", &format!("Bearer {t}"))])),
            Access::Token
        );
        assert_eq!(access(&t, &headers(&[("cookie", "ingot_web=aaaa")])), Access::Anonymous);
        assert_eq!(
            access(&t, &headers(&[("cookie", &format!("other={t}"))])),
            Access::Anonymous
        );
        assert_eq!(
            access(&t, &headers(&[("authorization", &format!("Basic {t}"))])),
            Access::Anonymous
        );
    }

    #[test]
    fn open_reads_only_for_loopback_names() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:80",
            "LOCALHOST",
        ] {
            assert!(loopback_host(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:80",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(!loopback_host(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!loopback_host(&headers(&[])));
    }

    #[test]
    fn changes_need_token_csrf_and_own_origin() {
        let t = "b".repeat(64);
        let c = csrf(&t);
        assert_ne!(c, t, "the form never carries the token itself");
        let h = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert!(may_change(&t, Access::Token, &h, &c).is_ok());
        assert!(may_change(&t, Access::Anonymous, &h, &c).is_err());
        assert!(may_change(&t, Access::Token, &h, "").is_err());
        assert!(may_change(&t, Access::Token, &h, &csrf("other")).is_err());
        let foreign = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]);
        assert!(may_change(&t, Access::Token, &foreign, &c).is_err());
        // No Origin (an older browser, curl): the CSRF token decides.
        assert!(may_change(&t, Access::Token, &headers(&[("host", "h")]), &c).is_ok());
    }

    #[test]
    fn a_token_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ingot-web-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = load_or_make_token(&dir).unwrap();
        let b = load_or_make_token(&dir).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(crate::token_path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(crate::token_path(&dir), "short").unwrap();
        assert!(load_or_make_token(&dir).unwrap_err().to_string().contains("too short"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
