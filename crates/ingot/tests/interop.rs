//! Interoperability with real peers: skopeo and the Docker engine.
//! Each test prints why it skips when its peer is absent.

use std::path::Path;
use std::process::Command;

use ingot_testsupport::{have, sample_rootfs, skip, Ingot};

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sha256_of_file(path: &Path) -> String {
    let out = sh(Command::new("sha256sum").arg(path));
    format!("sha256:{}", &out[..64])
}

/// A rootfs with a static busybox when the host has one, so engines can run it.
fn busybox_rootfs(ingot: &Ingot) -> std::path::PathBuf {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return ingot.write("rootfs.tar", &sample_rootfs(10_000, 5));
    }
    let dir = ingot.path("rootfs-dir");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join("etc/motd"), "hello from ingot\n").unwrap();
    let tar = ingot.path("rootfs.tar");
    sh(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

#[test]
fn skopeo_reads_and_writes_what_ingot_does() {
    if !have("skopeo") {
        return skip(
            "skopeo_reads_and_writes_what_ingot_does",
            "skopeo is not installed (apt-get install skopeo)",
        );
    }
    let ingot = Ingot::new(BIN);
    let rootfs = ingot.write("r.tar", &sample_rootfs(200_000, 11));
    let digest = ingot
        .ok(&["import", "-q", rootfs.to_str().unwrap(), "interop/app:1"])
        .trim()
        .to_string();
    let archive = ingot.path("saved.tar");
    ingot.ok(&["save", "interop/app:1", "-o", archive.to_str().unwrap()]);

    // skopeo reads the archive; the manifest digest is unchanged.
    let layout = ingot.path("layout");
    sh(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:copied", layout.display())));
    let raw = ingot.path("raw.json");
    let manifest = sh(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:copied", layout.display())));
    std::fs::write(&raw, manifest.as_bytes()).unwrap();
    assert_eq!(sha256_of_file(&raw), digest, "skopeo changed the manifest");

    // skopeo writes an OCI archive and a docker archive; ingot loads both.
    let back = ingot.path("back.tar");
    sh(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:copied", layout.display()))
        .arg(format!("oci-archive:{}:interop/back:2", back.display())));
    let other = Ingot::new(BIN);
    let out = other.ok(&["load", "-i", back.to_str().unwrap()]);
    assert!(out.contains("interop/back:2"), "{out}");
    assert_eq!(other.json(&["inspect", "interop/back:2"])[0]["digest"], digest.as_str());

    let config = ingot.json(&["inspect", "interop/app:1"])[0]["config_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let darchive = ingot.path("docker.tar");
    sh(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker-archive:{}:interop/dock:3", darchive.display())));
    other.ok(&["load", "-i", darchive.to_str().unwrap()]);
    assert_eq!(
        other.json(&["inspect", "interop/dock:3"])[0]["config_digest"],
        config.as_str()
    );
    assert_eq!(other.json(&["fsck"])["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn docker_loads_ingot_archives_and_ingot_loads_docker_save() {
    if !have("docker")
        || !Command::new("docker")
            .arg("info")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    {
        return skip(
            "docker_loads_ingot_archives_and_ingot_loads_docker_save",
            "no Docker engine answers",
        );
    }
    let ingot = Ingot::new(BIN);
    let rootfs = busybox_rootfs(&ingot);
    // A tag unique to this run, removed at the end.
    let tag = format!("ingot-interop-test:{}", std::process::id());
    ingot.ok(&["import", rootfs.to_str().unwrap(), &tag]);
    let config = ingot.json(&["inspect", &tag])[0]["config_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let archive = ingot.path("for-docker.tar");
    ingot.ok(&["save", &tag, "-o", archive.to_str().unwrap()]);

    let loaded = sh(Command::new("docker").arg("load").arg("-i").arg(&archive));
    assert!(loaded.contains(&tag), "{loaded}");
    let id = sh(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &tag]));
    assert_eq!(id.trim(), config, "docker's image ID is the config digest");
    if Path::new("/bin/busybox").exists() {
        let out = sh(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            &tag,
            "/bin/busybox",
            "cat",
            "/etc/motd",
        ]));
        assert_eq!(out, "hello from ingot\n");
    } else {
        skip(
            "docker run part",
            "/bin/busybox is absent (apt-get install busybox-static)",
        );
    }

    let saved = ingot.path("from-docker.tar");
    sh(Command::new("docker").args(["save", &tag, "-o"]).arg(&saved));
    let other = Ingot::new(BIN);
    other.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(other.json(&["inspect", &tag])[0]["config_digest"], config.as_str());
    let _ = Command::new("docker").args(["rmi", &tag]).output();
}
