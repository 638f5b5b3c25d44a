//! The image commands end to end: the real binary against temporary roots.

use std::fs;
use std::path::Path;

use ingot_testsupport::{sample_rootfs, Ingot, RawTar};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn imported(ingot: &Ingot, name: &str, seed: u64) -> String {
    let tar = ingot.write(&format!("rootfs-{seed}.tar"), &sample_rootfs(100_000, seed));
    ingot
        .ok(&["import", "-q", tar.to_str().unwrap(), name])
        .trim()
        .to_string()
}

fn fsck_clean(ingot: &Ingot) {
    let v = ingot.json(&["fsck"]);
    assert_eq!(v["problems"], Value::Array(vec![]), "fsck: {v}");
}

#[test]
fn import_list_inspect_tag_rmi() {
    let ingot = Ingot::new(BIN);
    let digest = imported(&ingot, "app:1", 1);
    assert!(digest.starts_with("sha256:"), "{digest}");

    let list = ingot.json(&["images"]);
    let row = &list[0];
    assert_eq!((row["name"].as_str(), row["tag"].as_str()), (Some("app"), Some("1")));
    assert_eq!(row["digest"], digest.as_str());
    assert!(row["size"].as_u64().unwrap() > 1000);
    assert_eq!(row["created"], "1970-01-01T00:00:00Z");

    let inspect = ingot.json(&["inspect", "app:1"]);
    let img = &inspect[0];
    assert_eq!(img["digest"], digest.as_str());
    assert_eq!(img["os"], "linux");
    assert_eq!(img["layers"].as_array().unwrap().len(), 1);
    assert!(img["layers"][0]["diff_id"].as_str().unwrap().starts_with("sha256:"));
    // Resolvable by name@digest, by digest and by a hex prefix.
    for r in [format!("app@{digest}"), digest.clone(), digest[7..19].to_string()] {
        assert_eq!(ingot.json(&["inspect", &r])[0]["digest"], digest.as_str(), "{r}");
    }
    let table = ingot.ok(&["inspect", "app:1"]);
    assert!(table.contains(&digest) && table.contains("Layers:"), "{table}");

    ingot.ok(&["tag", "app:1", "registry.local:5000/team/app:v2"]);
    let names: Vec<String> = ingot
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["name"].as_str().unwrap(), r["tag"].as_str().unwrap()))
        .collect();
    assert_eq!(names, ["app:1", "registry.local:5000/team/app:v2"]);

    // By digest with two tags: refused without -f.
    let err = ingot.fails(&["rmi", &digest]);
    assert!(err.contains("tagged in 2 places"), "{err}");
    let out = ingot.ok(&["rmi", "app:1"]);
    assert!(out.contains("Untagged: app:1") && !out.contains("Deleted"), "{out}");
    let out = ingot.ok(&["rmi", "registry.local:5000/team/app:v2"]);
    assert!(out.contains("Deleted: ") && out.contains("Freed 3 blobs"), "{out}");
    assert_eq!(ingot.json(&["images"]), Value::Array(vec![]));
    let (blobs, _) = count_blobs(&ingot.root());
    assert_eq!(blobs, 0);
    fsck_clean(&ingot);
}

fn count_blobs(root: &Path) -> (usize, usize) {
    let blobs = fs::read_dir(root.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0);
    let tmp = fs::read_dir(root.join("tmp")).map(|d| d.count()).unwrap_or(0);
    (blobs, tmp)
}

#[test]
fn same_tarball_same_digest_in_any_root() {
    let a = Ingot::new(BIN);
    let b = Ingot::new(BIN);
    assert_eq!(imported(&a, "x:1", 7), imported(&b, "y:2", 7));
    assert_ne!(imported(&a, "x:3", 8), imported(&b, "y:4", 7));
    // gzip input gives the same image as the plain tar.
    let tar = sample_rootfs(100_000, 7);
    let gz = flate_gzip(&tar);
    let p = b.write("r.tar.gz", &gz);
    let from_gz = b.ok(&["import", "-q", p.to_str().unwrap(), "z:1"]);
    assert_eq!(from_gz.trim(), imported(&a, "w:1", 7));
}

fn flate_gzip(data: &[u8]) -> Vec<u8> {
    // A stored-block gzip stream written by hand keeps this test free of a
    // compression dependency: header, deflate stored blocks, crc32, size.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn save_load_round_trip_keeps_digests_and_names() {
    let a = Ingot::new(BIN);
    let d1 = imported(&a, "one:1", 1);
    let d2 = imported(&a, "two:2", 2);
    let archive = a.path("both.tar");
    a.ok(&["save", "one:1", "two:2", "-o", archive.to_str().unwrap()]);
    let b = Ingot::new(BIN);
    let loaded = b.json(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded.as_array().unwrap().len(), 2);
    assert_eq!(b.json(&["inspect", "one:1"])[0]["digest"], d1.as_str());
    assert_eq!(b.json(&["inspect", "two:2"])[0]["digest"], d2.as_str());
    // Saving twice gives the same bytes.
    let again = a.path("again.tar");
    a.ok(&["save", "one:1", "two:2", "-o", again.to_str().unwrap()]);
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&again).unwrap());
    fsck_clean(&b);
}

#[test]
fn load_docker_save_layout() {
    // A classic docker-save archive: <id>/layer.tar, <config>.json, manifest.json.
    let layer = sample_rootfs(10_000, 3);
    let diff_id = sha256_hex(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let config_hex = sha256_hex(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{config_hex}.json","RepoTags":["legacy:v1"],"Layers":["abc/layer.tar","dup/layer.tar"]}}]"#
    );
    let config2 = config.replace(r#""diff_ids":["#, &format!(r#""diff_ids":["sha256:{diff_id}","#));
    let config2_hex = sha256_hex(config2.as_bytes());
    let manifest = manifest.replace(&format!("{config_hex}.json"), &format!("{config2_hex}.json"));
    let mut t = RawTar::new();
    t.file(&format!("{config2_hex}.json"), config2.as_bytes())
        .dir("abc")
        .file("abc/layer.tar", &layer)
        .file("abc/VERSION", b"1.0")
        .dir("dup")
        .symlink("dup/layer.tar", "../abc/layer.tar")
        .file("manifest.json", manifest.as_bytes());
    let ingot = Ingot::new(BIN);
    let p = ingot.write("docker.tar", &t.finish());
    let out = ingot.ok(&["load", "-i", p.to_str().unwrap()]);
    assert!(out.contains("Loaded image: legacy:v1"), "{out}");
    let img = &ingot.json(&["inspect", "legacy:v1"])[0];
    assert_eq!(img["config_digest"], format!("sha256:{config2_hex}"));
    assert_eq!(img["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(img["layers"].as_array().unwrap().len(), 2);
    fsck_clean(&ingot);

    // A layer that does not match its diff_id is refused and nothing is listed.
    let bad = config2.replace(&diff_id, &"0".repeat(64));
    let bad_hex = sha256_hex(bad.as_bytes());
    let mut t = RawTar::new();
    t.file(&format!("{bad_hex}.json"), bad.as_bytes())
        .file("abc/layer.tar", &layer)
        .file(
            "manifest.json",
            manifest
                .replace(&config2_hex, &bad_hex)
                .replace("dup/layer.tar", "abc/layer.tar")
                .as_bytes(),
        );
    let other = Ingot::new(BIN);
    let p = other.write("bad.tar", &t.finish());
    let err = other.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(err.contains("does not match the config's diff_id"), "{err}");
    assert_eq!(other.json(&["images"]), Value::Array(vec![]));
    fsck_clean(&other);
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn bad_input_gives_one_line_errors_and_a_consistent_store() {
    let ingot = Ingot::new(BIN);
    let digest = imported(&ingot, "good:1", 1);

    // Missing ref.
    let err = ingot.fails(&["inspect", "nope:1"]);
    assert_eq!(err.trim(), "ingot: error: image \"nope:1\" not found");
    // Bad reference syntax.
    let err = ingot.fails(&["tag", "good:1", "Bad/../name"]);
    assert!(err.contains("invalid reference"), "{err}");
    // Truncated tar: refused, nothing listed.
    let full = sample_rootfs(20_000, 9);
    let p = ingot.write("trunc.tar", &full[..full.len() / 2]);
    let err = ingot.fails(&["import", p.to_str().unwrap(), "trunc:1"]);
    assert!(err.contains("corrupt or truncated tar"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Hostile tar: refused, named.
    let p = ingot.write("evil.tar", &RawTar::new().file("../../evil", b"x").finish());
    let err = ingot.fails(&["import", p.to_str().unwrap(), "evil:1"]);
    assert!(err.contains("refused tar entry") && err.contains("'..'"), "{err}");
    assert!(!ingot.path("evil").exists());
    // Not an archive at all.
    let p = ingot.write(
        "junk.tar",
        b"this is not a tar archive at all, not even close................",
    );
    ingot.fails(&["load", "-i", p.to_str().unwrap()]);
    // An archive whose blob does not match its name.
    let blob = b"{}";
    let wrong = format!("blobs/sha256/{}", "1".repeat(64));
    let p = ingot.write(
        "mismatch.tar",
        &RawTar::new()
            .entry(wrong.as_bytes(), tar::EntryType::Regular, blob, b"")
            .finish(),
    );
    let err = ingot.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(err.contains("digest mismatch"), "{err}");
    // An index pointing at a manifest of an unknown media type.
    let m = br#"{"schemaVersion":2,"mediaType":"application/x-unknown","config":{}}"#;
    let mh = sha256_hex(m);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{}}}]}}"#,
        m.len()
    );
    let p = ingot.write(
        "unknown.tar",
        &RawTar::new()
            .file(&format!("blobs/sha256/{mh}"), m)
            .file("index.json", index.as_bytes())
            .finish(),
    );
    let err = ingot.fails(&["load", "-i", p.to_str().unwrap()]);
    assert!(err.contains("application/x-unknown"), "{err}");

    let names: Vec<Value> = ingot
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from("good")]);
    ingot.ok(&["gc"]);
    fsck_clean(&ingot);

    // Corrupt a blob: fsck names it and exits non-zero; reads refuse it.
    let layer = ingot.json(&["inspect", "good:1"])[0]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = ingot.root().join("blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let out = ingot.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("blob {layer}: digest mismatch")), "{stderr}");
    assert!(stderr.contains(&format!("manifest {digest}")), "{stderr}");
    let err = ingot.fails(&["save", "good:1", "-o", ingot.path("out.tar").to_str().unwrap()]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!ingot.path("out.tar").exists(), "a failed save must not leave a file");
}

#[test]
fn unwritable_root_is_reported() {
    let ingot = Ingot::new(BIN);
    let file = ingot.write("plainfile", b"x");
    let out = std::process::Command::new(BIN)
        .args(["--root", file.join("root").to_str().unwrap(), "images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store root") && err.contains("plainfile"), "{err}");
}

#[test]
fn unpack_applies_layers_and_whiteouts() {
    // Two layers: the second deletes a file and makes a directory opaque.
    let lower = RawTar::new()
        .dir("etc")
        .file("etc/keep", b"1")
        .file("etc/gone", b"2")
        .dir("var")
        .file("var/old", b"3")
        .finish();
    let upper = RawTar::new()
        .file("etc/.wh.gone", b"")
        .dir("var")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"4")
        .finish();
    let ingot = Ingot::new(BIN);
    let archive = two_layer_oci_archive(&lower, &upper);
    let p = ingot.write("layers.tar", &archive);
    let out = ingot.ok(&["load", "-i", p.to_str().unwrap()]);
    assert!(out.contains("stack:1"), "{out}");
    let dir = ingot.path("rootfs");
    ingot.ok(&["unpack", "stack:1", dir.to_str().unwrap()]);
    assert_eq!(fs::read(dir.join("etc/keep")).unwrap(), b"1");
    assert!(!dir.join("etc/gone").exists());
    assert!(!dir.join("var/old").exists());
    assert_eq!(fs::read(dir.join("var/new")).unwrap(), b"4");
    // A non-empty target is refused.
    let err = ingot.fails(&["unpack", "stack:1", dir.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
}

fn two_layer_oci_archive(lower: &[u8], upper: &[u8]) -> Vec<u8> {
    let (l1, l2) = (sha256_hex(lower), sha256_hex(upper));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{l1}","sha256:{l2}"]}}}}"#
    );
    let ch = sha256_hex(config.as_bytes());
    let tar_type = "application/vnd.oci.image.layer.v1.tar";
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{ch}","size":{}}},"layers":[{{"mediaType":"{tar_type}","digest":"sha256:{l1}","size":{}}},{{"mediaType":"{tar_type}","digest":"sha256:{l2}","size":{}}}]}}"#,
        config.len(),
        lower.len(),
        upper.len()
    );
    let mh = sha256_hex(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"stack:1"}}}}]}}"#,
        manifest.len()
    );
    RawTar::new()
        .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file(&format!("blobs/sha256/{l1}"), lower)
        .file(&format!("blobs/sha256/{l2}"), upper)
        .file(&format!("blobs/sha256/{ch}"), config.as_bytes())
        .file(&format!("blobs/sha256/{mh}"), manifest.as_bytes())
        .file("index.json", index.as_bytes())
        .finish()
}
