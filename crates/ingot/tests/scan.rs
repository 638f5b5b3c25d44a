//! `ingot db import` and `ingot scan` against real OSV advisories (the
//! subset of ../shared/osv bundled in examples/osv): an image with Python packages of known versions, and the
//! expected matches computed independently from each advisory's own
//! `versions` list.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use ingot_testsupport::{sample_rootfs, skip, workspace_file, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// The bundled advisories (a subset of ../shared/osv, kept in the repository
/// so that a fresh clone tests the same).
fn osv_dir() -> Option<PathBuf> {
    let d = workspace_file("examples/osv/pypi/vulns");
    d.is_dir().then_some(d)
}

/// Advisory ids whose own `versions` list names `version` of `package`
/// (withdrawn ones left out).
fn expected(dir: &std::path::Path, package: &str, version: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for e in fs::read_dir(dir.join(package)).unwrap() {
        let text = fs::read_to_string(e.unwrap().path()).unwrap();
        let v: Value = serde_yaml_ng::from_str(&text).unwrap();
        if v.get("withdrawn").is_some_and(|w| !w.is_null()) {
            continue;
        }
        let listed = v["affected"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["versions"].as_array().cloned().unwrap_or_default())
            .any(|x| x.as_str() == Some(version));
        if listed {
            ids.insert(v["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

const PACKAGES: &[(&str, &str, &str)] = &[
    ("requests", "requests", "2.19.1"),
    ("jinja2", "Jinja2", "2.10"),
    ("pyyaml", "PyYAML", "5.3"),
    ("django", "Django", "3.2"),
    ("urllib3", "urllib3", "1.26.4"),
];

#[test]
fn scan_matches_the_advisories_own_version_lists() {
    let Some(osv) = osv_dir() else {
        skip(
            "scan_matches_the_advisories_own_version_lists",
            "examples/osv is not present",
        );
        return;
    };
    let ingot = Ingot::new(BIN);
    let base = ingot.write("base.tar", &sample_rootfs(20_000, 1));
    ingot.ok(&["import", "-q", base.to_str().unwrap(), "base:1"]);
    let ctx = ingot.path("ctx");
    for (_, dist, version) in PACKAGES {
        let d = ctx.join(format!("site/{dist}-{version}.dist-info"));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("METADATA"),
            format!("Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n\ntext\n"),
        )
        .unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nCOPY site/ /usr/lib/python3/site-packages/\n",
    )
    .unwrap();
    ingot.ok(&["build", "-q", "-t", "py:1", ctx.to_str().unwrap()]);
    let pkgs = ingot.json(&["packages", "py:1"]);
    assert_eq!(pkgs.as_array().unwrap().len(), PACKAGES.len(), "{pkgs}");

    let out = ingot.ok(&["db", "import", osv.parent().unwrap().to_str().unwrap()]);
    assert!(out.contains("Imported"), "{out}");
    let report = ingot.json(&["scan", "py:1"]);
    let findings = report["findings"].as_array().unwrap();
    for (name, _, version) in PACKAGES {
        let got: BTreeSet<String> = findings
            .iter()
            .filter(|f| f["package"] == *name)
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect();
        let want = expected(&osv, name, version);
        assert!(
            !want.is_empty() || *name == "urllib3",
            "{name} {version} should have advisories in the data"
        );
        assert_eq!(got, want, "{name} {version}");
        for f in findings.iter().filter(|f| f["package"] == *name) {
            assert_eq!(f["installed"], *version);
            assert!(f["path"].as_str().unwrap().ends_with("/METADATA"));
            assert!(f["layer"].as_str().unwrap().starts_with("sha256:"));
        }
    }
    // Fixed versions sit above the installed one; --fail-on exits 1.
    let f = findings
        .iter()
        .find(|f| f["package"] == "requests" && f["id"] == "PYSEC-2018-28")
        .expect("requests CVE-2018-18074");
    assert_eq!(f["fixed"], "2.20.0");
    assert!(f["aliases"].as_array().unwrap().iter().any(|a| a == "CVE-2018-18074"));
    let out = ingot.run(&["scan", "py:1", "--fail-on", "critical"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at or above critical"),
        "a refusal, not an error"
    );
    let sarif: Value = serde_json::from_str(&ingot.ok(&["scan", "py:1", "--format", "sarif"])).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), findings.len());
}

#[test]
fn db_import_refuses_bad_input_and_keeps_the_old_database() {
    let ingot = Ingot::new(BIN);
    let dir = ingot.path("osv");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("A-1.json"),
        r#"{"id":"A-1","affected":[{"package":{"ecosystem":"PyPI","name":"Foo_Bar"},"versions":["1.0"]}]}"#,
    )
    .unwrap();
    fs::write(dir.join("W-1.json"), r#"{"id":"W-1","withdrawn":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"foo-bar"},"versions":["1.0"]}]}"#).unwrap();
    assert!(ingot.ok(&["db", "import", dir.to_str().unwrap()]).contains("holds 2"));
    // A broken file: the whole import is refused, naming it; nothing changes.
    fs::write(dir.join("B-1.yaml"), "id: [unclosed\n").unwrap();
    let err = ingot.fails(&["db", "import", dir.to_str().unwrap()]);
    assert!(err.contains("B-1.yaml") && err.contains("YAML"), "{err}");
    fs::write(dir.join("B-1.yaml"), "not_osv: true\n").unwrap();
    assert!(ingot
        .fails(&["db", "import", dir.to_str().unwrap()])
        .contains("not an OSV advisory"));
    assert!(ingot.fails(&["db", "import", "/nonexistent"]).contains("/nonexistent"));
    // An image with foo-bar 1.0 (named Foo.Bar in its metadata): one finding, not the withdrawn one.
    let base = ingot.write("base.tar", &sample_rootfs(20_000, 2));
    ingot.ok(&["import", "-q", base.to_str().unwrap(), "base:1"]);
    let ctx = ingot.path("ctx");
    fs::create_dir_all(ctx.join("site/Foo.Bar-1.0.dist-info")).unwrap();
    fs::write(
        ctx.join("site/Foo.Bar-1.0.dist-info/METADATA"),
        "Name: Foo.Bar\nVersion: 1.0.0\n",
    )
    .unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM base:1\nCOPY site/ /lib/python/\n").unwrap();
    ingot.ok(&["build", "-q", "-t", "f:1", ctx.to_str().unwrap()]);
    let ids: Vec<String> = ingot.json(&["scan", "f:1"])["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["A-1"], "1.0.0 == 1.0 under PEP 440; withdrawn ignored");
    assert!(ingot
        .fails(&["scan", "f:1", "--fail-on", "severe"])
        .contains("invalid severity"));

    // A zip archive (as osv.dev's all.zip): read like a tree; a corrupt one
    // or one with a broken member is refused, naming it, and changes nothing.
    fs::remove_file(dir.join("B-1.yaml")).unwrap();
    let zip = ingot.path("osv.zip");
    let py = format!(
        "import zipfile\nz = zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED)\nz.writestr('x/Z-1.json', '{{\"id\":\"Z-1\",\"affected\":[{{\"package\":{{\"ecosystem\":\"PyPI\",\"name\":\"foo-bar\"}},\"versions\":[\"1.0\"]}}]}}')\nz.writestr('x/README', 'ignored')\nz.close()\n",
        zip.to_str().unwrap()
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &py])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(ingot.ok(&["db", "import", zip.to_str().unwrap()]).contains("holds 3"));
    let ids = ingot.json(&["scan", "f:1"])["findings"].as_array().unwrap().len();
    assert_eq!(ids, 2, "A-1 and Z-1");
    let bad = ingot.write("bad.zip", b"PK\x03\x04 this is not a zip");
    let err = ingot.fails(&["db", "import", bad.to_str().unwrap()]);
    assert!(err.contains("bad.zip") && err.contains("zip"), "{err}");
    let py = format!(
        "import zipfile\nz = zipfile.ZipFile({:?}, 'w')\nz.writestr('ok/Y-1.json', '{{\"id\":\"Y-1\"}}')\nz.writestr('bad/Y-2.json', '{{nope')\nz.close()\n",
        zip.to_str().unwrap()
    );
    assert!(std::process::Command::new("python3")
        .args(["-c", &py])
        .status()
        .unwrap()
        .success());
    let err = ingot.fails(&["db", "import", zip.to_str().unwrap()]);
    assert!(err.contains("osv.zip:bad/Y-2.json") && err.contains("JSON"), "{err}");
    assert!(
        ingot.ok(&["db", "import", dir.to_str().unwrap()]).contains("holds 3"),
        "Y-1 was not imported"
    );
}
