//! Resolving `USER` (`name`, `uid`, `name:group`, `uid:gid`) against the
//! container's own /etc/passwd and /etc/group, as Docker does.

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `spec` with the text of passwd and group files (either may be
/// missing). Errors read like Docker's.
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users: Vec<Vec<&str>> = passwd
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 7)
        .collect();
    let groups: Vec<Vec<&str>> = group
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let user = if user.is_empty() { "0" } else { user };
    let entry = users
        .iter()
        .find(|f| f[0] == user || (f[2] == user && user.parse::<u32>().is_ok()));
    let (uid, mut gid, home, name) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| format!("invalid uid in passwd entry for {user:?}"))?,
            f[3].parse()
                .map_err(|_| format!("invalid gid in passwd entry for {user:?}"))?,
            f[5].to_string(),
            Some(f[0]),
        ),
        (None, Ok(uid)) => (uid, uid, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(g) = grp {
        gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| format!("invalid gid in group entry for {g:?}"))?,
            None => g
                .parse()
                .map_err(|_| format!("unable to find group {g}: no matching entries in group file"))?,
        };
    }
    let mut supplementary = vec![gid];
    if let Some(name) = name {
        for f in &groups {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    if !supplementary.contains(&g) {
                        supplementary.push(g);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\n";

    #[test]
    fn resolves_like_docker() {
        let r = resolve("", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let a = resolve("app", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((a.uid, a.gid, a.groups.clone()), (1000, 1000, vec![1000, 10]));
        let n = resolve("nobody:app", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((n.uid, n.gid), (65534, 1000));
        let raw = resolve("4242:4343", None, None).unwrap();
        assert_eq!((raw.uid, raw.gid), (4242, 4343));
        let err = resolve("ghost", Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(err.contains("unable to find user ghost"), "{err}");
        assert!(resolve("app:ghosts", Some(PASSWD), Some(GROUP)).is_err());
    }
}
