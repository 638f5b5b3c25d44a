//! Crash safety and concurrency: SIGKILL at random moments, GC against a
//! live writer, several processes on one root.

use std::io::Write;
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ingot_testsupport::{sample_rootfs, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

fn listed(ingot: &Ingot) -> Vec<String> {
    ingot
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["name"].as_str().unwrap(), r["tag"].as_str().unwrap()))
        .collect()
}

fn assert_consistent(ingot: &Ingot) {
    let v = ingot.json(&["fsck"]);
    assert_eq!(v["problems"], Value::Array(vec![]), "fsck after crashes: {v}");
}

#[test]
fn sigkill_during_import_and_load_leaves_a_consistent_store() {
    let ingot = Ingot::new(BIN);
    let rootfs = ingot.write("big.tar", &sample_rootfs(24 << 20, 42));
    // An archive to load: saved from a separate root.
    let src = Ingot::new(BIN);
    src.ok(&[
        "import",
        src.write("other.tar", &sample_rootfs(24 << 20, 43)).to_str().unwrap(),
        "src:1",
    ]);
    let archive = ingot.path("archive.tar");
    src.ok(&["save", "src:1", "-o", archive.to_str().unwrap()]);

    // How long a whole run of each takes, to spread the kills across it.
    let t = Instant::now();
    ingot.ok(&["import", rootfs.to_str().unwrap(), "warmup:1"]);
    let full_import = t.elapsed();
    ingot.ok(&["rmi", "warmup:1"]);
    let t = Instant::now();
    ingot.ok(&["load", "-i", archive.to_str().unwrap()]);
    let full_load = t.elapsed();
    ingot.ok(&["rmi", "src:1"]);

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}, full import {full_import:?}, full load {full_load:?}");
    let mut completed = Vec::new();
    let mut killed = 0;
    let mut runs = 0;
    for i in 0..150 {
        if killed >= 60 {
            break;
        }
        runs += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let full = if i % 2 == 0 { full_import } else { full_load };
        let delay = full.mul_f64((seed % 1000) as f64 / 1000.0);
        let tag = format!("crash:{i}");
        let mut cmd = ingot.command();
        if i % 2 == 0 {
            cmd.args(["import", rootfs.to_str().unwrap(), &tag]);
        } else {
            cmd.args(["load", "-i", archive.to_str().unwrap()]);
        }
        let mut child: Child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            completed.push(if i % 2 == 0 { tag } else { "src:1".to_string() });
        } else {
            killed += 1;
        }
    }
    eprintln!("{killed} of {runs} runs killed mid-way");
    assert!(
        killed >= 50,
        "only {killed} runs were killed mid-way; the test must kill at least 50"
    );

    assert_consistent(&ingot);
    let now = listed(&ingot);
    for c in &completed {
        assert!(now.contains(c), "{c} completed but is not listed: {now:?}");
    }
    // Every listed image is whole: its root filesystem unpacks.
    for (n, name) in now.iter().enumerate() {
        let dir = ingot.path(&format!("unpacked-{n}"));
        ingot.ok(&["unpack", name, dir.to_str().unwrap()]);
        assert_eq!(std::fs::metadata(dir.join("data/blob")).unwrap().len(), 24 << 20);
    }
    // GC sweeps what the killed runs left behind.
    ingot.ok(&["gc"]);
    assert_eq!(std::fs::read_dir(ingot.root().join("tmp")).unwrap().count(), 0);
    assert_consistent(&ingot);
}

#[test]
fn gc_waits_for_a_writer_in_flight() {
    let ingot = Ingot::new(BIN);
    // Leave garbage: an image removed without pruning.
    ingot.ok(&[
        "import",
        ingot.write("g.tar", &sample_rootfs(1000, 1)).to_str().unwrap(),
        "garbage:1",
    ]);
    ingot.ok(&["rmi", "--no-prune", "garbage:1"]);
    let data = sample_rootfs(4 << 20, 2);

    let mut import = ingot
        .command()
        .args(["import", "-", "live:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    stdin.flush().unwrap();
    sleep(Duration::from_millis(300));
    let mut gc = ingot.command().args(["gc"]).stdout(Stdio::piped()).spawn().unwrap();
    sleep(Duration::from_millis(700));
    assert!(gc.try_wait().unwrap().is_none(), "gc ran while an import was in flight");
    stdin.write_all(&data[data.len() / 2..]).unwrap();
    drop(stdin);
    assert!(import.wait().unwrap().success());
    let out = gc.wait_with_output().unwrap();
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("Freed 3 blobs"),
        "gc should have freed the garbage image: {report}"
    );
    assert_eq!(listed(&ingot), ["live:1"]);
    assert_consistent(&ingot);
}

#[test]
fn several_processes_share_one_root() {
    let ingot = Ingot::new(BIN);
    let files: Vec<_> = (0..4)
        .map(|i| ingot.write(&format!("r{i}.tar"), &sample_rootfs(1 << 20, i)))
        .collect();
    // All start at once on a root that does not exist yet.
    let children: Vec<Child> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            ingot
                .command()
                .args(["import", f.to_str().unwrap(), &format!("par:{i}")])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(listed(&ingot), ["par:0", "par:1", "par:2", "par:3"]);
    assert_consistent(&ingot);
}
