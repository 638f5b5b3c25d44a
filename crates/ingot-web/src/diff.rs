//! What a ledger entry changed: the pinned stack before it against the one
//! it records, as a list of changed leaves (`services.web.digest: a -> b`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted path (`services.web.replicas`); array items by index.
    pub path: String,
    /// None: the leaf was added (before) or removed (after).
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The changed leaves from `a` to `b`, in path order.
pub fn diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", Some(a), Some(b), &mut out);
    out
}

fn leaf(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A non-empty object's or array's children, keyed.
fn children(v: Option<&Value>) -> Option<Vec<(String, &Value)>> {
    match v? {
        Value::Object(m) if !m.is_empty() => Some(m.iter().map(|(k, v)| (k.clone(), v)).collect()),
        Value::Array(a) if !a.is_empty() => Some(a.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect()),
        _ => None,
    }
}

fn find<'v>(side: &[(String, &'v Value)], k: &str) -> Option<&'v Value> {
    side.iter().find(|(n, _)| n == k).map(|(_, v)| *v)
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let same_shape = matches!(
        (a, b),
        (Some(Value::Object(_)), Some(Value::Object(_))) | (Some(Value::Array(_)), Some(Value::Array(_)))
    );
    if same_shape || (a.is_none() && children(b).is_some()) || (b.is_none() && children(a).is_some()) {
        let (x, y) = (children(a).unwrap_or_default(), children(b).unwrap_or_default());
        let mut keys: Vec<&String> = x.iter().chain(&y).map(|(k, _)| k).collect();
        // Array indexes in number order, object keys in name order.
        keys.sort_by(|p, q| match (p.parse::<usize>(), q.parse::<usize>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => p.cmp(q),
        });
        keys.dedup();
        for k in keys {
            walk(&join(path, k), find(&x, k), find(&y, k), out);
        }
    } else if a != b {
        out.push(Change {
            path: path.to_string(),
            before: a.map(leaf),
            after: b.map(leaf),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_added_and_removed_leaves() {
        let a = json!({"name": "s", "services": {"web": {"digest": "sha256:a", "replicas": 2, "ports": ["80"]}}});
        let b = json!({"name": "s", "services": {"web": {"digest": "sha256:b", "replicas": 2, "ports": ["80", "81"]},
            "api": {"digest": "sha256:c"}}});
        let d = diff(&a, &b);
        let show: Vec<String> = d
            .iter()
            .map(|c| format!("{} {:?} {:?}", c.path, c.before, c.after))
            .collect();
        assert_eq!(
            show,
            [
                "services.api.digest None Some(\"sha256:c\")",
                "services.web.digest Some(\"sha256:a\") Some(\"sha256:b\")",
                "services.web.ports.1 None Some(\"81\")",
            ]
        );
        assert!(diff(&b, &b).is_empty());
        let removed = diff(&b, &json!({}));
        assert!(
            removed.iter().all(|c| c.after.is_none()) && removed.len() == 6,
            "{removed:?}"
        );
    }
}
