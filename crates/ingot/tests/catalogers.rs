//! Catalogers against the tools' own views: a real Go binary (its build
//! info must equal what `go version -m` prints), a real Rust binary built
//! with `cargo auditable` (its packages must equal its Cargo.lock), and a
//! Debian rootfs from `debootstrap --variant=minbase` (the package count
//! must equal `dpkg-query -W` run inside it).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use ingot_testsupport::{have, skip, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn packages(ingot: &Ingot, image: &str, ecosystem: &str) -> BTreeSet<(String, String)> {
    ingot
        .json(&["packages", image])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ecosystem"] == ecosystem)
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A FROM-scratch image holding one file at /app.
fn image_of(ingot: &Ingot, file: &Path, tag: &str) {
    let ctx = ingot.path(&format!("ctx-{tag}"));
    fs::create_dir_all(&ctx).unwrap();
    fs::copy(file, ctx.join("app")).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY app /app\n").unwrap();
    ingot.ok(&["build", "-q", "--no-sbom", "-t", tag, ctx.to_str().unwrap()]);
}

#[test]
fn go_build_info_equals_go_version_m() {
    if !have("go") {
        skip(
            "go_build_info_equals_go_version_m",
            "no Go toolchain (Debian's golang-go)",
        );
        return;
    }
    let ingot = Ingot::new(BIN);
    let src = ingot.path("gosrc");
    fs::create_dir_all(src.join("lib")).unwrap();
    fs::write(
        src.join("go.mod"),
        "module example.com/hello\n\ngo 1.19\n\nrequire example.com/lib v1.2.3\n\nreplace example.com/lib => ./lib\n",
    )
    .unwrap();
    fs::write(
        src.join("main.go"),
        "package main\n\nimport \"example.com/lib\"\n\nfunc main() { println(lib.Hello()) }\n",
    )
    .unwrap();
    fs::write(src.join("lib/go.mod"), "module example.com/lib\n\ngo 1.19\n").unwrap();
    fs::write(
        src.join("lib/lib.go"),
        "package lib\n\nfunc Hello() string { return \"hi\" }\n",
    )
    .unwrap();
    let out = Command::new("go")
        .args(["build", "-o", "hello", "."])
        .current_dir(&src)
        .env("CGO_ENABLED", "0")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPATH", ingot.path("gopath"))
        .env("GOCACHE", ingot.path("gocache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bin = src.join("hello");
    // The peer's own reading: `go version -m`.
    let m = Command::new("go").args(["version", "-m"]).arg(&bin).output().unwrap();
    let text = String::from_utf8_lossy(&m.stdout);
    let mut want = BTreeSet::new();
    for line in text.lines() {
        if let Some((_, go)) = line.rsplit_once(": go1") {
            want.insert(("stdlib".to_string(), format!("1{go}")));
            continue;
        }
        let f: Vec<&str> = line.split('\t').map(str::trim).filter(|s| !s.is_empty()).collect();
        if let ["mod" | "dep", path, version, ..] = f.as_slice() {
            want.insert((path.to_string(), version.to_string()));
        }
    }
    assert!(want.contains(&("example.com/lib".into(), "v1.2.3".into())), "{text}");
    image_of(&ingot, &bin, "goapp:1");
    assert_eq!(packages(&ingot, "goapp:1", "Go"), want, "go version -m:\n{text}");
    let p = ingot.json(&["packages", "goapp:1"]);
    let lib = p
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "example.com/lib")
        .unwrap();
    assert_eq!(lib["purl"], "pkg:golang/example.com/lib@v1.2.3");
    assert_eq!(lib["path"], "/app");
}

#[test]
fn cargo_auditable_packages_equal_cargo_lock() {
    let has = Command::new("cargo")
        .args(["auditable", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        skip(
            "cargo_auditable_packages_equal_cargo_lock",
            "cargo-auditable is not installed",
        );
        return;
    }
    let ingot = Ingot::new(BIN);
    let src = ingot.path("rsrc");
    fs::create_dir_all(src.join("src")).unwrap();
    fs::write(
        src.join("Cargo.toml"),
        "[package]\nname = \"audited\"\nversion = \"0.3.1\"\nedition = \"2021\"\n\n[dependencies]\nitoa = \"1\"\n\n[workspace]\n",
    )
    .unwrap();
    fs::write(
        src.join("src/main.rs"),
        "fn main() { println!(\"{}\", itoa::Buffer::new().format(42)); }\n",
    )
    .unwrap();
    let out = Command::new("cargo")
        .args(["auditable", "build", "--quiet"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", src.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lock: String = fs::read_to_string(src.join("Cargo.lock")).unwrap();
    let mut want = BTreeSet::new();
    let (mut name, mut version) = (None, None);
    for line in lock.lines().chain(["[[package]]"]) {
        if line == "[[package]]" {
            if let (Some(n), Some(v)) = (name.take(), version.take()) {
                want.insert((n, v));
            }
        } else if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ") {
            version = Some(v.trim_matches('"').to_string());
        }
    }
    assert!(want.len() >= 2, "{lock}");
    image_of(&ingot, &src.join("target/debug/audited"), "rsapp:1");
    assert_eq!(packages(&ingot, "rsapp:1", "crates.io"), want);
}

#[test]
fn dpkg_count_equals_dpkg_query_in_a_debootstrap_rootfs() {
    let test = "dpkg_count_equals_dpkg_query_in_a_debootstrap_rootfs";
    // scripts/test makes it once per machine (debootstrap needs root and Debian's mirror).
    let dir = std::env::var("INGOT_DEBOOTSTRAP").unwrap_or_else(|_| "/var/tmp/ingot-debootstrap".into());
    let dir = Path::new(&dir);
    if !dir.join("var/lib/dpkg/status").is_file() {
        skip(
            test,
            &format!("no debootstrap rootfs at {} (scripts/test makes it)", dir.display()),
        );
        return;
    }
    let q = Command::new("chroot")
        .arg(dir)
        .args(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let want: BTreeSet<(String, String)> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let ingot = Ingot::new(BIN);
    let tar = ingot.path("debian.tar");
    let st = Command::new("tar")
        .args(["-C"])
        .arg(dir)
        .args([
            "--numeric-owner",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-cf",
        ])
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    ingot.ok(&["import", "-q", tar.to_str().unwrap(), "debian:minbase"]);
    let got = packages(&ingot, "debian:minbase", "Debian");
    assert!(want.len() > 50, "a minbase system has ~90 packages: {}", want.len());
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    let all: Value = ingot.json(&["packages", "debian:minbase"]);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["purl"].as_str().unwrap().starts_with("pkg:deb/debian/")));
}

#[test]
fn a_corrupt_dpkg_database_is_an_error_naming_it() {
    let ingot = Ingot::new(BIN);
    let ctx = ingot.path("ctx-corrupt");
    fs::create_dir_all(ctx.join("var/lib/dpkg")).unwrap();
    fs::write(
        ctx.join("var/lib/dpkg/status"),
        b"\x00\x01\x02 this is not a status file\n",
    )
    .unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY var/ /var/\n").unwrap();
    ingot.ok(&["build", "-q", "--no-sbom", "-t", "corrupt:1", ctx.to_str().unwrap()]);
    let err = ingot.fails(&["packages", "corrupt:1"]);
    assert!(
        err.contains("/var/lib/dpkg/status") && err.contains("not a dpkg status"),
        "{err}"
    );
    assert!(ingot.fails(&["scan", "corrupt:1"]).contains("/var/lib/dpkg/status"));
}
