//! SBOMs: `ingot build` attaches SPDX 2.3 and CycloneDX 1.5 documents as
//! referrers; `ingot sbom` writes them deterministically; both validate
//! with the official tools from PyPI (spdx-tools, cyclonedx-python-lib).

use std::fs;
use std::process::Command;

use ingot_testsupport::{sample_rootfs, skip, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn image_with_python_packages(ingot: &Ingot, extra: &[&str]) {
    let base = ingot.write("base.tar", &sample_rootfs(20_000, 4));
    ingot.ok(&["import", "-q", base.to_str().unwrap(), "base:1"]);
    let ctx = ingot.path("ctx");
    for (name, version, license) in [
        ("requests", "2.31.0", "Apache-2.0"),
        ("Flask", "3.0.0", "BSD-3-Clause"),
        ("weird", "1.0", "Custom Licence"),
    ] {
        let d = ctx.join(format!("site/{name}-{version}.dist-info"));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("METADATA"),
            format!("Name: {name}\nVersion: {version}\nLicense: {license}\n"),
        )
        .unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nCOPY site/ /usr/lib/python3/site-packages/\n",
    )
    .unwrap();
    let mut args = vec!["build", "-q", "-t", "py:1"];
    args.extend(extra);
    args.push(ctx.to_str().unwrap());
    ingot.ok(&args);
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn build_attaches_valid_deterministic_sboms() {
    let ingot = Ingot::new(BIN);
    image_with_python_packages(&ingot, &[]);
    let referrers = ingot.json(&["inspect", "py:1"])[0]["referrers"].clone();
    let types: Vec<&str> = referrers
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["artifact_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"application/spdx+json") && types.contains(&"application/vnd.cyclonedx+json"),
        "{referrers}"
    );

    let spdx = ingot.ok(&["sbom", "py:1"]);
    assert_eq!(
        spdx,
        ingot.ok(&["sbom", "py:1", "--format", "spdx-json"]),
        "deterministic"
    );
    let cdx = ingot.ok(&["sbom", "py:1", "--format", "cyclonedx-json"]);
    let s: Value = serde_json::from_str(&spdx).unwrap();
    assert_eq!(s["spdxVersion"], "SPDX-2.3");
    let purls: Vec<String> = s["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["externalRefs"][0]["referenceLocator"].as_str().unwrap().to_string())
        .collect();
    for want in ["pkg:pypi/requests@2.31.0", "pkg:pypi/flask@3.0.0", "pkg:pypi/weird@1.0"] {
        assert!(purls.iter().any(|p| p == want), "{want} in {purls:?}");
    }
    let c: Value = serde_json::from_str(&cdx).unwrap();
    assert_eq!(
        (c["bomFormat"].as_str(), c["specVersion"].as_str()),
        (Some("CycloneDX"), Some("1.5"))
    );
    assert_eq!(c["components"].as_array().unwrap().len(), 3);
    assert!(ingot.fails(&["images", "--format", "sarif"]).contains("does not apply"));

    if !python_has("spdx_tools") || !python_has("cyclonedx.validation") {
        skip(
            "build_attaches_valid_deterministic_sboms (schema validation)",
            "pip packages spdx-tools and cyclonedx-python-lib[json-validation] are not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spdx_file = dir.path().join("image.spdx.json");
    fs::write(&spdx_file, &spdx).unwrap();
    let out = Command::new("pyspdxtools").arg("-i").arg(&spdx_file).output().unwrap();
    assert!(
        out.status.success(),
        "SPDX invalid: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does fail on a broken document.
    let broken = spdx.replace("\"SPDX-2.3\"", "\"SPDX-9.9\"");
    let broken_file = dir.path().join("broken.spdx.json");
    fs::write(&broken_file, broken).unwrap();
    assert!(!Command::new("pyspdxtools")
        .arg("-i")
        .arg(&broken_file)
        .output()
        .unwrap()
        .status
        .success());
    let check = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
                 e = JsonStrictValidator(SchemaVersion.V1_5).validate_str(sys.stdin.read())\nprint(e or '')\nsys.exit(1 if e else 0)\n";
    for (doc, valid) in [
        (cdx.clone(), true),
        (cdx.replace("\"library\"", "\"no-such-type\""), false),
    ] {
        let mut child = Command::new("python3")
            .args(["-c", check])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.success(),
            valid,
            "CycloneDX validation: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn no_sbom_attaches_only_the_provenance() {
    let ingot = Ingot::new(BIN);
    image_with_python_packages(&ingot, &["--no-sbom"]);
    let count = || {
        ingot.json(&["inspect", "py:1"])[0]["referrers"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(), 1, "the provenance only");
    ingot.ok(&["sbom", "--attach", "py:1"]);
    assert_eq!(count(), 2);
    assert_eq!(ingot.json(&["fsck"])["problems"], serde_json::json!([]));
}

#[test]
fn every_build_carries_slsa_provenance() {
    let ingot = Ingot::new(BIN);
    image_with_python_packages(
        &ingot,
        &[
            "--no-sbom",
            "--build-arg",
            "FLAVOUR=mild",
            "--reason",
            "provenance test",
        ],
    );
    let image = ingot.json(&["inspect", "py:1"])[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let base = ingot.json(&["inspect", "base:1"])[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let p = &ingot.json(&["inspect", "--provenance", "py:1"])[0];
    assert_eq!(p["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(p["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(p["subject"][0]["digest"]["sha256"], image[7..]);
    let def = &p["predicate"]["buildDefinition"];
    let dockerfile = fs::read(ingot.path("ctx/Dockerfile")).unwrap();
    assert_eq!(
        def["externalParameters"]["dockerfile"]["digest"]["sha256"],
        ingot_oci::Digest::sha256(&dockerfile).hex()
    );
    assert_eq!(def["externalParameters"]["buildArgs"]["FLAVOUR"], "mild");
    assert_eq!(def["externalParameters"]["reason"], "provenance test");
    assert_eq!(def["resolvedDependencies"][0]["digest"]["sha256"], base[7..]);
    assert_eq!(def["resolvedDependencies"][0]["uri"], "oci://base:1");
    let run = &p["predicate"]["runDetails"];
    assert!(run["builder"]["id"].as_str().unwrap().contains("ingot"));
    assert!(run["metadata"]["startedOn"].as_str().unwrap() <= run["metadata"]["finishedOn"].as_str().unwrap());
    // With --no-sbom only the provenance is attached.
    let referrers = ingot.json(&["inspect", "py:1"])[0]["referrers"].clone();
    assert_eq!(referrers.as_array().unwrap().len(), 1);
    assert_eq!(referrers[0]["artifact_type"], "application/vnd.in-toto+json");
}
