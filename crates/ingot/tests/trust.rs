//! `ingot key generate`, `sign`, `verify` with the real binary; signatures
//! travel through a registry with push and pull.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use ingot_testsupport::{sample_rootfs, Ingot};

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn image(ingot: &Ingot, name: &str) -> String {
    let tar = ingot.write("rootfs.tar", &sample_rootfs(60_000, 3));
    ingot
        .ok(&["import", "-q", tar.to_str().unwrap(), name])
        .trim()
        .to_string()
}

#[test]
fn keys_sign_verify_and_refusals() {
    let ingot = Ingot::new(BIN);
    image(&ingot, "app:1");
    let k = ingot.path("k");
    ingot.ok(&["key", "generate", "--out", k.to_str().unwrap()]);
    assert!(ingot
        .fails(&["key", "generate", "--out", k.to_str().unwrap()])
        .contains("not overwriting"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ingot.path("k.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key readable by its owner only");
    let (key, public) = (ingot.path("k.key"), ingot.path("k.pub"));
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let err = ingot.fails(&["verify", "app:1", "--key", public.to_str().unwrap()]);
    assert!(
        err.contains("no valid signature") && err.contains("0 signature(s)"),
        "{err}"
    );
    let out = ingot.ok(&["sign", "app:1", "--key", key.to_str().unwrap()]);
    assert!(out.contains(".sig"), "{out}");
    let v = ingot.json(&["verify", "app:1", "--key", public.to_str().unwrap()]);
    assert_eq!(v.as_array().unwrap().len(), 1);

    // An encrypted Ed25519 key: needs its passphrase.
    let e = ingot.path("e");
    let mut c = ingot.command();
    let st = c
        .env("INGOT_KEY_PASSWORD", "pw")
        .args(["key", "generate", "--ed25519", "--out", e.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(st.status.success());
    let ekey = ingot.path("e.key");
    assert!(std::fs::read_to_string(&ekey)
        .unwrap()
        .contains("ENCRYPTED PRIVATE KEY"));
    assert!(ingot
        .fails(&["sign", "app:1", "--key", ekey.to_str().unwrap()])
        .contains("INGOT_KEY_PASSWORD"));
    let mut c = ingot.command();
    let bad = c
        .env("INGOT_KEY_PASSWORD", "nope")
        .args(["sign", "app:1", "--key", ekey.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("passphrase"));
    // The wrong public key fails; the signatures are not images of their own.
    let err = ingot.fails(&["verify", "app:1", "--key", ingot.path("e.pub").to_str().unwrap()]);
    assert!(err.contains("does not verify with this key"), "{err}");
    assert!(ingot
        .fails(&["verify", "app:1", "--key", key.to_str().unwrap()])
        .contains("public key"));
    assert_eq!(ingot.json(&["fsck"])["problems"], serde_json::json!([]));
}

#[test]
fn signatures_travel_with_push_and_pull() {
    let src = Ingot::new(BIN);
    let digest = image(&src, "app:1");
    let k = src.path("k");
    src.ok(&["key", "generate", "--out", k.to_str().unwrap()]);
    src.ok(&["sign", "app:1", "--key", src.path("k.key").to_str().unwrap()]);
    let server_root = Ingot::new(BIN);
    let mut server = server_root
        .command()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let host = line
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let out = src.ok(&["push", "app:1", &format!("{host}/team/app:1")]);
    assert!(out.contains("1 referrers"), "{out}");
    // Verified in the registry (its referrers API), nothing pulled.
    let remote_only = Ingot::new(BIN);
    let out = remote_only.ok(&[
        "verify",
        &format!("{host}/team/app@{digest}"),
        "--key",
        src.path("k.pub").to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("Verified {digest}")), "{out}");
    let dst = Ingot::new(BIN);
    let out = dst.ok(&["pull", &format!("{host}/team/app:1")]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.contains(&digest) && out.contains("1 referrers"), "{out}");
    dst.ok(&[
        "verify",
        &format!("{host}/team/app:1"),
        "--key",
        src.path("k.pub").to_str().unwrap(),
    ]);
}
