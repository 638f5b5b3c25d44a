//! `ingot verify --policy`: every rule refuses with its name and the
//! offending value, exceptions expire, and a passing image exits 0.

use std::fs;

use ingot_testsupport::{sample_rootfs, skip, workspace_file, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn verify(ingot: &Ingot, policy: &str) -> (i32, Value, String) {
    let p = ingot.write("policy.toml", policy.as_bytes());
    let out = ingot.run(&["verify", "app:1", "--policy", p.to_str().unwrap(), "--format", "json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rules(v: &Value) -> Vec<(String, String)> {
    v["policy"]["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn policy_rules_refuse_by_name_and_pass_when_met() {
    let osv = workspace_file("examples/osv");
    if !osv.is_dir() {
        skip(
            "policy_rules_refuse_by_name_and_pass_when_met",
            "examples/osv is not present",
        );
        return;
    }
    let ingot = Ingot::new(BIN);
    let base = ingot.write("base.tar", &sample_rootfs(20_000, 1));
    ingot.ok(&["import", "-q", base.to_str().unwrap(), "base:1"]);
    let ctx = ingot.path("ctx");
    let d = ctx.join("site/requests-2.19.1.dist-info");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("METADATA"),
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.19.1\n\nx\n",
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nCOPY site/ /usr/lib/python3/site-packages/\n",
    )
    .unwrap();
    ingot.ok(&[
        "build",
        "-q",
        "-t",
        "app:1",
        "--reason",
        "policy test",
        ctx.to_str().unwrap(),
    ]);
    ingot.ok(&["db", "import", osv.to_str().unwrap()]);
    let findings = ingot.json(&["scan", "app:1"])["findings"].as_array().unwrap().clone();
    // Every finding would refuse under the passing policy below (above
    // "high", or of unknown severity with allow_unknown_severity false), so
    // every one gets an exception there.
    let refused: Vec<&str> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("critical") | Some("unknown")))
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert!(
        !findings.is_empty(),
        "requests 2.19.1 has advisories in the bundled data"
    );
    let k = ingot.path("k");
    ingot.ok(&["key", "generate", "--out", k.to_str().unwrap()]);

    // Unsigned, no git, vulnerable: each rule refuses and names itself.
    let (code, v, err) = verify(
        &ingot,
        "trusted_keys = [\"k.pub\"]\nmax_severity = \"none\"\nallowed_bases = [\"base:*\"]\nrequire = [\"reason\", \"git.commit\", \"git.clean\", \"sbom\", \"provenance\"]\n",
    );
    assert_eq!(code, 1, "{err}");
    let r = rules(&v);
    assert!(r.contains(&("trusted_keys".into(), "k.pub".into())), "{r:?}");
    assert!(r.contains(&("require".into(), "git.commit".into())), "{r:?}");
    assert!(r.contains(&("require".into(), "git.clean".into())), "{r:?}");
    assert!(
        !r.iter()
            .any(|(k, v)| k == "require" && (v == "reason" || v == "sbom" || v == "provenance")),
        "{r:?}"
    );
    let sev = r
        .iter()
        .filter(|(k, _)| k == "max_severity" || k == "allow_unknown_severity")
        .count();
    assert_eq!(
        sev,
        findings.len(),
        "with max_severity none every finding is refused: {r:?}"
    );
    assert!(!r.iter().any(|(k, _)| k == "allowed_bases"), "base:1 is allowed: {r:?}");
    assert!(err.contains("policy refused app:1: trusted_keys = k.pub"), "{err}");

    // Signed, critical findings excepted until a future date: passes.
    let key = ingot.path("k.key");
    ingot.ok(&["sign", "-q", "app:1", "--key", key.to_str().unwrap()]);
    let allow: String = refused
        .iter()
        .map(|id| format!("{{ id = \"{id}\", until = 2099-01-01 }},"))
        .collect();
    let pass = format!(
        "trusted_keys = [\"k.pub\"]\nmax_severity = \"high\"\nallow = [{allow}]\nallowed_bases = [\"base:*\"]\nrequire = [\"reason\", \"sbom\", \"provenance\", \"signature\"]\n"
    );
    let (code, v, err) = verify(&ingot, &pass);
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["policy"]["allowed"].as_array().unwrap().len(), refused.len());

    // The same exception after its date refuses, naming the advisory.
    let id = refused
        .first()
        .expect("requests 2.19.1 has a critical or unknown-severity advisory in the bundled data");
    let expired = pass.replace("2099-01-01", "2020-01-01");
    let (code, v, _) = verify(&ingot, &expired);
    assert_eq!(code, 1);
    assert!(rules(&v).contains(&("allow".into(), id.to_string())), "{v}");
    // A base outside the list.
    let (code, v, _) = verify(&ingot, "allowed_bases = [\"debian:*\", \"sha256:00\"]\n");
    assert_eq!(code, 1);
    assert_eq!(rules(&v), [("allowed_bases".to_string(), "base:1".to_string())]);

    // Bad policies are refused with the file and field named.
    for (text, want) in [
        ("max_severity = \"severe\"\n", "\"severe\""),
        ("trusted = []\n", "unknown field `trusted`"),
        ("trusted_keys = [\"missing.pub\"]\n", "missing.pub"),
        ("allow = [{ id = \"X\", until = \"soon\" }]\n", "\"soon\""),
        ("max_severity = \n", "line 1"),
        // A signature counts only if a trusted key verified it.
        ("require = [\"signature\"]\n", "needs trusted_keys"),
    ] {
        let (code, _, err) = verify(&ingot, text);
        assert_eq!(
            code, 2,
            "a broken policy is a usage error, not a refusal: {text}: {err}"
        );
        assert!(err.contains(want) && err.contains("policy"), "{text}: {err}");
    }
}
