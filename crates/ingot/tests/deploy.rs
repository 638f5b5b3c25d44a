//! Deploy end to end: a real daemon on a real unix socket, real replicas
//! (ingot containers on the bridge), the routing mesh on loopback, and a
//! bounded load loop that counts every failed request. Needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingot_testsupport::{skip, workspace_file, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

struct Daemon(Child);

impl Daemon {
    fn start(ingot: &Ingot) -> Daemon {
        Daemon::start_with(ingot, &[])
    }

    /// `ingot daemon ARGS`, once it answers.
    fn start_with(ingot: &Ingot, args: &[&str]) -> Daemon {
        // Its log (-vv) beside the root, for a failing test to show.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ingot.path("daemon.log"))
            .expect("daemon log");
        let child = ingot
            .command()
            .arg("-vv")
            .arg("daemon")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ingot daemon");
        let d = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ingot.run(&["services"]).status.success() {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        std::mem::forget(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// One keep-alive HTTP/1.1 GET of `/`; the page's <title>.
fn get(conn: &mut Option<BufReader<TcpStream>>, port: u16) -> Result<String, String> {
    let body = get_path(conn, port, "/")?;
    Ok(body
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap_or("")
        .to_string())
}

/// One keep-alive HTTP/1.1 GET of `path`; the body, unless the status is not 200.
fn get_path(conn: &mut Option<BufReader<TcpStream>>, port: u16, path: &str) -> Result<String, String> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().unwrap();
    r.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| e.to_string())?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status {status:?}"));
    }
    let mut len = 0;
    let mut close = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| e.to_string())?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        let h = h.to_ascii_lowercase();
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        close |= h.starts_with("connection:") && h.contains("close");
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    if close {
        // As any HTTP/1.1 client: the server closes this one; the next request reconnects.
        *conn = None;
    }
    Ok(String::from_utf8_lossy(&body).to_string())
}

type Fetch = fn(&mut Option<BufReader<TcpStream>>, u16) -> Result<String, String>;

/// A bounded load loop (4 keep-alive clients, at most 60 s or 200k
/// requests) until stopped; counts requests and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(port: u16) -> Load {
        Load::start_with(port, get, 4)
    }

    /// `clients` clients each calling `fetch` in a loop.
    fn start_with(port: u16, fetch: Fetch, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut conn = None;
                    let mut errors = Vec::new();
                    let t = Instant::now();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) && n < 50_000 {
                        n += 1;
                        match fetch(&mut conn, port) {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                conn = None;
                                errors.push(e);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Stops; (ok, failed, the first errors).
    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.threads {
            errors.extend(t.join().unwrap());
        }
        errors.truncate(5);
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

fn stack_file(ingot: &Ingot, name: &str, image: &str, port: u16, replicas: u32, monitor: &str) -> String {
    let dir = ingot.path("stacks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("greeting.txt"), format!("config of {name}\n")).unwrap();
    let text = format!(
        "services:\n  web:\n    image: {image}\n    stop_grace_period: 1s\n    ports: [\"127.0.0.1:{port}:8080\"]\n    deploy:\n      replicas: {replicas}\n      update_config: {{parallelism: 1, order: start-first, failure_action: rollback, monitor: {monitor}}}\n      rollback_config: {{parallelism: 3, order: start-first}}\n    configs:\n      - source: greeting\n        target: /srv/www/greeting.txt\nconfigs:\n  greeting:\n    file: ./greeting.txt\n"
    );
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A Debian root filesystem with `package` installed (scripts/debian-rootfs,
/// cached), imported as `tag`.
fn debian_image(ingot: &Ingot, package: &str, tag: &str) {
    let tar = ingot.path(&format!("{package}-rootfs.tar"));
    let st = Command::new(workspace_file("scripts/debian-rootfs"))
        .arg(&tar)
        .arg(package)
        .status()
        .unwrap();
    assert!(st.success(), "scripts/debian-rootfs {package} failed");
    ingot.ok(&["import", "-q", tar.to_str().unwrap(), tag]);
}

fn build(ingot: &Ingot, tag: &str, dockerfile: &str, title: Option<&str>) {
    let ctx = ingot.path(&format!("ctx-{}", tag.replace([':', '/'], "-")));
    let _ = std::fs::remove_dir_all(&ctx);
    Command::new("cp")
        .arg("-r")
        .arg(workspace_file("examples/hello"))
        .arg(&ctx)
        .status()
        .unwrap();
    if let Some(t) = title {
        let index = ctx.join("site/index.html");
        let page = std::fs::read_to_string(&index).unwrap().replace("hello from ingot", t);
        std::fs::write(index, page).unwrap();
    }
    if !dockerfile.is_empty() {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    }
    ingot.ok(&["build", "-q", "--no-sbom", "-t", tag, ctx.to_str().unwrap()]);
}

fn deploy(ingot: &Ingot, file: &str, reason: &str) -> (i32, Value) {
    let out = ingot.run(&[
        "deploy", "-f", file, "--name", "demo", "--reason", reason, "--format", "json",
    ]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn replicas(ingot: &Ingot) -> Vec<Value> {
    ingot
        .json(&["service", "ps", "web"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A root holding the example base and three versions of the example:
/// `hello:1`, `hello:2` (other page titles) and `hello:bad` (never healthy);
/// `None` (and a printed reason) where replicas cannot run.
fn with_versions(test: &str) -> Option<Ingot> {
    let ingot = ingot_testsupport::busybox_root(test, BIN, "example/base:latest")?;
    build(&ingot, "hello:1", "", Some("version one"));
    build(&ingot, "hello:2", "", Some("version two"));
    build(
        &ingot,
        "hello:bad",
        "FROM hello:2\nHEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD [\"/bin/false\"]\n",
        None,
    );
    Some(ingot)
}

#[test]
fn deploy_update_rollback_scale_replace_restart_ledger() {
    let Some(ingot) = with_versions("deploy_update_rollback_scale_replace_restart_ledger") else {
        return;
    };
    // Healthy, serving, then failing its check after 1.5 s (during the monitor period).
    build(
        &ingot,
        "hello:flaky",
        "FROM hello:2\nUSER root\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD test ! -e /tmp/broken && wget -q -O /dev/null http://127.0.0.1:8080/\nCMD [\"sh\", \"-c\", \"(sleep 1.5; touch /tmp/broken) & exec httpd -f -p 8080 -h /srv/www\"]\n",
        Some("flaky"),
    );
    let port = ingot_testsupport::free_port();
    let daemon = Daemon::start(&ingot);

    // Bad input: unknown image, invalid file; nothing recorded.
    let bad = stack_file(&ingot, "missing", "nosuch:1", port, 1, "1s");
    let (code, _) = deploy(&ingot, &bad, "x");
    assert_ne!(code, 0);
    assert!(ingot
        .fails(&["deploy", "-f", &bad, "--name", "demo"])
        .contains("nosuch:1"));
    let typo = ingot.write("typo.yml", b"services:\n  web:\n    image: hello:1\n    replica: 3\n");
    let err = ingot.fails(&["deploy", "-f", typo.to_str().unwrap(), "--name", "demo"]);
    assert!(err.contains("typo.yml") && err.contains("replica"), "{err}");
    assert_eq!(ingot.json(&["ledger"]).as_array().unwrap().len(), 0);
    assert!(ingot.ok(&["dora"]).contains("Nothing to measure yet"));

    // v1: three healthy replicas behind the mesh; the config is mounted.
    let v1 = stack_file(&ingot, "v1", "hello:1", port, 3, "1s");
    let (code, r) = deploy(&ingot, &v1, "first");
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["outcome"], "succeeded");
    let ps = replicas(&ingot);
    assert_eq!(ps.len(), 3);
    assert!(
        ps.iter().all(|p| p["state"] == "running" && p["health"] == "healthy"),
        "{ps:?}"
    );
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version one");
    let svc = ingot.json(&["services"]);
    assert_eq!(svc[0]["name"], "demo_web");
    assert_eq!(svc[0]["healthy"], 3);
    // Another stack on the same port: refused, naming the port and its owner; nothing recorded.
    let clash = stack_file(&ingot, "clash", "hello:1", port, 1, "1s");
    let err = ingot.fails(&["deploy", "-f", &clash, "--name", "other"]);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("demo_web"),
        "{err}"
    );
    assert_eq!(ingot.json(&["services"]).as_array().unwrap().len(), 1);
    assert_eq!(ingot.json(&["ledger"]).as_array().unwrap().len(), 1);

    // A rolling update under load: zero failed requests.
    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(300));
    let (code, r) = deploy(&ingot, &stack_file(&ingot, "v2", "hello:2", port, 3, "1s"), "second");
    assert_eq!(code, 0, "{r}");
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version two");
    // A version that never becomes healthy: rolled back, exit 1.
    let (code, r) = deploy(&ingot, &stack_file(&ingot, "bad", "hello:bad", port, 3, "1s"), "broken");
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["outcome"], "rolled-back");
    // One that fails after joining the pool: rolled back by swapping the pool back.
    let (code, r) = deploy(
        &ingot,
        &stack_file(&ingot, "flaky", "hello:flaky", port, 3, "3s"),
        "flaky",
    );
    assert_eq!(code, 1, "{r}");
    assert!(r["message"].as_str().unwrap().contains("serving all traffic"), "{r}");
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, errors) = load.finish();
    assert!(ok > 500, "the load loop ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "failed requests during update and rollbacks: {errors:?}; the daemon's log:\n{}",
        std::fs::read_to_string(ingot.path("daemon.log")).unwrap_or_default()
    );
    let mut c = None;
    for _ in 0..6 {
        assert_eq!(
            get(&mut c, port).unwrap(),
            "version two",
            "all traffic on the old version"
        );
    }
    let ps = replicas(&ingot);
    assert_eq!(ps.len(), 3);
    let v2_digest = ingot.ok(&["inspect", "-q", "hello:2"]).trim().to_string();
    assert!(
        ps.iter().all(|p| p["image"] == v2_digest.as_str()),
        "{ps:?} vs {v2_digest}"
    );

    // Scale, drift, a killed replica is replaced.
    let out = ingot.ok(&["service", "scale", "web=2"]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(replicas(&ingot).len(), 2);
    assert!(ingot.run(&["drift"]).status.success());
    let victim = replicas(&ingot)[0]["name"].as_str().unwrap().to_string();
    ingot.ok(&["kill", &victim]);
    wait_for("the killed replica's replacement", 30, || {
        let ps = replicas(&ingot);
        ps.len() == 2
            && ps
                .iter()
                .all(|p| p["state"] == "running" && p["health"] == "healthy" && p["name"] != victim.as_str())
    });

    // The daemon SIGKILLed in the middle of a rollout, then restarted: converges.
    let v1b = stack_file(&ingot, "v1b", "hello:1", port, 2, "2s");
    let mut deployer = ingot
        .command()
        .args(["deploy", "-f", &v1b, "--name", "demo"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    daemon.kill();
    let _ = deployer.wait();
    let rows = ingot.json(&["ledger"]);
    assert_eq!(rows.as_array().unwrap().last().unwrap()["outcome"], "pending", "{rows}");
    let daemon = Daemon::start(&ingot);
    // The new daemon carries the pending change out; `ledger wait` follows it.
    let seq = rows.as_array().unwrap().last().unwrap()["seq"].to_string();
    let out = ingot.ok(&["ledger", "wait", &seq]);
    assert!(out.contains("succeeded"), "{out}");
    let rows = ingot.json(&["ledger"]);
    let last = rows.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "succeeded", "{last}");
    wait_for("convergence after the restart", 30, || {
        ingot.run(&["drift"]).status.success()
    });
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version one");
    ingot.ok(&["ledger", "verify"]);

    // Manual rollback to the previous version.
    let out = ingot.ok(&["rollback", "web"]);
    assert!(out.contains("rollback") && out.contains("succeeded"), "{out}");
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version two");

    // Congruence: the same entries rebuild the same desired state elsewhere.
    let other = ingot.path("other-root");
    let out = ingot.ok(&["ledger", "replay", "--to-root", other.to_str().unwrap()]);
    assert!(out.contains("in both"), "{out}");
    let here = ingot.json(&["ledger", "verify"])["state"].clone();
    let there: Value = serde_json::from_slice(
        &Command::new(BIN)
            .args([
                "--root",
                other.to_str().unwrap(),
                "ledger",
                "verify",
                "--format",
                "json",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(here, there["state"]);

    // rm: replicas gone, entry recorded.
    ingot.ok(&["stack", "rm", "demo"]);
    assert!(ingot
        .json(&["ps", "-a"])
        .as_array()
        .unwrap()
        .iter()
        .all(|c| !c["name"].as_str().unwrap().starts_with("demo.")));
    let kinds: Vec<String> = ingot
        .json(&["ledger"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["deploy", "deploy", "deploy", "deploy", "scale", "deploy", "rollback", "rm"]
    );
    drop(daemon);

    // Delivery metrics from this ledger: five deployments; every one that
    // rolled back, or was rolled back by hand, counts as failed.
    let entries = ingot.json(&["ledger"]);
    let entries = entries.as_array().unwrap();
    let dora = ingot.json(&["dora", "--since", "1d"]);
    assert_eq!(dora["deployments"], 5, "{dora}");
    let failed: Vec<i64> = dora["change_failure_rate"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_i64().unwrap())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let by_hand = entries.get(i + 1).is_some_and(|n| n["kind"] == "rollback");
        if e["kind"] == "deploy" && (e["outcome"] == "rolled-back" || (e["outcome"] == "succeeded" && by_hand)) {
            assert!(failed.contains(&e["seq"].as_i64().unwrap()), "{e} not failed in {dora}");
        }
    }
    let ok = entries
        .iter()
        .filter(|e| e["kind"] == "deploy" && e["outcome"] == "succeeded")
        .count();
    assert_eq!(dora["deployment_frequency"]["value"].as_f64(), Some(ok as f64));
    assert!(dora["time_to_restore"]["value"].as_f64().is_some(), "{dora}");
    assert!(
        entries
            .iter()
            .all(|e| e["detail"].as_str().is_some_and(|d| d.contains("sealed"))),
        "every entry records when it was sealed"
    );

    // Tampering: an edited, a removed and a reordered entry are each named.
    let db = ingot.root().join("ingot.db");
    for (sql, seq) in [
        ("UPDATE ledger SET reason = 'edited' WHERE seq = 3", "entry 3"),
        ("DELETE FROM ledger WHERE seq = 4", "entry 5"),
        ("UPDATE ledger SET seq = 100 WHERE seq = 1; UPDATE ledger SET seq = 1 WHERE seq = 2; UPDATE ledger SET seq = 2 WHERE seq = 100", "entry 1"),
    ] {
        let copy = ingot.path("tampered");
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).unwrap();
        // A copy through SQLite's backup API: the database is ingot.db and
        // its write-ahead log.
        let st = Command::new("python3")
            .args(["-c", &format!("import sqlite3; s = sqlite3.connect({:?}); c = sqlite3.connect({:?}); s.backup(c); c.executescript({sql:?}); c.commit()", db.to_str().unwrap(), copy.join("ingot.db").to_str().unwrap())])
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new(BIN)
            .args(["--root", copy.to_str().unwrap(), "ledger", "verify"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        assert!(err.contains(seq), "{sql}: {err}");
        // No metrics from a ledger that does not verify.
        let out = Command::new(BIN)
            .args(["--root", copy.to_str().unwrap(), "dora"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("does not verify"), "{sql}: {err}");
    }
}

/// Whether this runs as root (the daemon manages containers); says why not.
fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(test, "the daemon manages containers: needs root");
    }
    root
}

#[test]
fn daemon_api_over_mutual_tls_and_metrics() {
    let test = "daemon_api_over_mutual_tls_and_metrics";
    if !root_or_skip(test) {
        return;
    }
    let ingot = Ingot::new(BIN);
    let port = ingot_testsupport::free_port();
    let tls = ingot.path("tls");
    let addr = format!("127.0.0.1:{port}");
    let _daemon = Daemon::start_with(&ingot, &["--tcp", &addr, "--tls-dir", tls.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"] {
        let mode = std::fs::metadata(tls.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077 == 0, f.ends_with("-key.pem"), "{f}: {mode:o}");
    }
    let sock_mode = std::fs::metadata(ingot.root().join("ingot.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(sock_mode, 0o660);
    let remote = |dir: &Path| {
        ingot
            .command()
            .args(["services", "--format", "json"])
            .env("INGOT_HOST", format!("tcp://127.0.0.1:{port}"))
            .env("INGOT_TLS_DIR", dir)
            .output()
            .unwrap()
    };
    // A client that connects and never starts its handshake delays nobody:
    // the call below completes while that connection is still held open.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let out = remote(&tls);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    stalled.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut one = [0u8; 1];
    let still_open = matches!(stalled.read(&mut one), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        still_open,
        "the stalled handshake was dropped before the other client got its answer"
    );

    // A client certificate from another CA is refused.
    if ingot_testsupport::have("openssl") {
        let other = ingot.path("other-tls");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::copy(tls.join("ca.pem"), other.join("ca.pem")).unwrap();
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=intruder",
            ])
            .arg("-keyout")
            .arg(other.join("client-key.pem"))
            .arg("-out")
            .arg(other.join("client.pem"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let out = remote(&other);
        assert!(!out.status.success(), "a foreign client certificate was accepted");
    } else {
        skip(test, "openssl missing: the foreign-certificate case is not run");
    }
    // Plain HTTP on the TLS port gets no answer.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // Prometheus metrics on the socket.
    let mut u = std::os::unix::net::UnixStream::connect(ingot.root().join("ingot.sock")).unwrap();
    u.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    u.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("# TYPE ingot_service_replicas gauge"),
        "{text}"
    );
}

#[test]
fn the_daemon_refuses_what_its_policy_refuses() {
    if !root_or_skip("the_daemon_refuses_what_its_policy_refuses") {
        return;
    }
    let ingot = Ingot::new(BIN);
    let tar = ingot.write("rootfs.tar", &ingot_testsupport::sample_rootfs(20_000, 7));
    ingot.ok(&["import", "-q", tar.to_str().unwrap(), "unsigned:1"]);
    ingot.ok(&["key", "generate", "--out", ingot.path("k").to_str().unwrap()]);
    let policy = ingot.write("policy.toml", b"trusted_keys = [\"k.pub\"]\nrequire = [\"sbom\"]\n");
    let _daemon = Daemon::start_with(&ingot, &["--policy", policy.to_str().unwrap()]);
    let stack = ingot.write(
        "s.yml",
        format!(
            "services:\n  web:\n    image: unsigned:1\n    ports: [\"127.0.0.1:{}:80\"]\n",
            ingot_testsupport::free_port()
        )
        .as_bytes(),
    );
    let err = ingot.fails(&["deploy", "-f", stack.to_str().unwrap(), "--name", "p"]);
    assert!(
        err.contains("policy refused unsigned:1") && err.contains("trusted_keys") && err.contains("require = sbom"),
        "{err}"
    );
    assert_eq!(
        ingot.json(&["ledger"]).as_array().unwrap().len(),
        0,
        "a refused deploy records nothing"
    );
    // The refusal is an event, replayed with --since.
    let events = ingot.ok(&["events", "--since", "5m", "--until", "1s", "--format", "json"]);
    let refused: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "policy" && e["action"] == "refuse")
        .collect();
    assert_eq!(refused.len(), 1, "{events}");
    assert_eq!(refused[0]["stack"], "p");
    assert!(refused[0]["detail"].as_str().unwrap().contains("trusted_keys"));
    let err = ingot.fails(&["events", "--since", "yesterday"]);
    assert!(err.contains("--since"), "{err}");
    assert_eq!(ingot.json(&["services"]).as_array().unwrap().len(), 0);
    assert!(
        ingot.json(&["ps", "-a"]).as_array().unwrap().is_empty(),
        "nothing started"
    );
}

#[test]
fn services_of_a_stack_roll_back_together() {
    let Some(ingot) = with_versions("services_of_a_stack_roll_back_together") else {
        return;
    };
    let (pa, pw) = (ingot_testsupport::free_port(), ingot_testsupport::free_port());
    let stack = |api: &str, web: &str| {
        let text = format!(
            "services:\n  api:\n    image: {api}\n    stop_grace_period: 1s\n    ports: [\"127.0.0.1:{pa}:8080\"]\n    deploy: {{replicas: 2, update_config: {{order: start-first, failure_action: rollback, monitor: 500ms}}}}\n  web:\n    image: {web}\n    stop_grace_period: 1s\n    ports: [\"127.0.0.1:{pw}:8080\"]\n    deploy: {{replicas: 2, update_config: {{order: start-first, failure_action: rollback, monitor: 500ms}}}}\n"
        );
        ingot
            .write(&format!("{api}-{web}.yml").replace(':', "_"), text.as_bytes())
            .to_str()
            .unwrap()
            .to_string()
    };
    let _daemon = Daemon::start(&ingot);
    // A follower of the daemon's events from before the first deploy.
    let mut follower = ingot
        .command()
        .args(["events", "--format", "json", "--until", "120s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, r) = deploy(&ingot, &stack("hello:1", "hello:1"), "both v1");
    assert_eq!(code, 0, "{r}");
    // api (first in order) updates fine, web fails: the change rolls back as a whole.
    let (code, r) = deploy(&ingot, &stack("hello:2", "hello:bad"), "api v2, web broken");
    assert_eq!((code, r["outcome"].as_str()), (1, Some("rolled-back")), "{r}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = follower.kill();
    let out = follower.wait_with_output().unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |t: &str, a: &str, svc: &str| {
        events
            .iter()
            .filter(|e| e["type"] == t && e["action"] == a && (svc.is_empty() || e["service"] == svc))
            .count()
    };
    assert_eq!(count("ledger", "append", ""), 2, "{events:?}");
    let seals: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "ledger" && e["action"] == "seal")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(seals, ["succeeded", "rolled-back"]);
    assert_eq!(
        count("replica", "start", "web"),
        3,
        "2 of v1, then a broken one: {events:?}"
    );
    assert_eq!(count("replica", "unhealthy", "web"), 1, "{events:?}");
    assert_eq!(
        count("replica", "stop", "api"),
        2,
        "v2 stopped after the rollback: {events:?}"
    );
    // api: v1 joins (2), v2 replaces it one by one (2 joins, 2 leaves), the
    // rollback's swap puts v1 back (2 joins, 2 leaves).
    assert_eq!(count("pool", "join", "api"), 6, "{events:?}");
    assert_eq!(count("pool", "leave", "api"), 4, "{events:?}");
    for port in [pa, pw] {
        let mut c = None;
        for _ in 0..4 {
            assert_eq!(get(&mut c, port).unwrap(), "version one", "port {port}");
        }
    }
    // The changes are counted and timed on /metrics (OpenMetrics text),
    // the mesh's responses by replica and status class.
    let mut u = std::os::unix::net::UnixStream::connect(ingot.root().join("ingot.sock")).unwrap();
    u.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    u.read_to_string(&mut text).unwrap();
    for line in [
        "ingot_ledger_entries_total{kind=\"deploy\",outcome=\"succeeded\"} 1",
        "ingot_ledger_entries_total{kind=\"deploy\",outcome=\"rolled-back\"} 1",
        "ingot_change_duration_seconds_count{kind=\"deploy\",outcome=\"rolled-back\"} 1",
        "ingot_service_replicas{service=\"demo_web\",state=\"healthy\"} 2",
        "# TYPE ingot_mesh_requests counter",
        "# TYPE ingot_mesh_response_seconds histogram",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    let sum = |prefix: &str, suffix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.rsplit_once(' ').is_some_and(|(k, _)| k.ends_with(suffix)))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
    };
    let web_2xx = sum(
        "ingot_mesh_responses_total{service=\"demo_web\",replica=\"demo.web.",
        "class=\"2xx\"}",
    );
    assert!(
        web_2xx >= 4,
        "web's replicas answered {web_2xx} requests with 2xx:\n{text}"
    );
    let timed = sum("ingot_mesh_response_seconds_count{service=\"demo_web\"", "}");
    assert!(timed >= web_2xx, "{timed} timed, {web_2xx} answered:\n{text}");
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    let v1 = ingot.ok(&["inspect", "-q", "hello:1"]).trim().to_string();
    for svc in ["demo_api", "demo_web"] {
        let ps = ingot.json(&["service", "ps", svc]);
        let ps = ps.as_array().unwrap();
        assert_eq!(ps.len(), 2, "{svc}: {ps:?}");
        assert!(
            ps.iter()
                .all(|p| p["image"] == v1.as_str() && p["state"] == "running" && p["health"] == "healthy"),
            "{svc}: {ps:?}"
        );
    }
    assert!(ingot.run(&["drift"]).status.success());
}

#[test]
fn restart_policy_none_leaves_a_dead_replica_dead() {
    let Some(ingot) = with_versions("restart_policy_none_leaves_a_dead_replica_dead") else {
        return;
    };
    let port = ingot_testsupport::free_port();
    let stack = ingot.write(
        "once.yml",
        format!(
            "services:\n  web:\n    image: hello:1\n    stop_grace_period: 1s\n    ports: [\"127.0.0.1:{port}:8080\"]\n    deploy:\n      replicas: 2\n      restart_policy: {{condition: none}}\n"
        )
        .as_bytes(),
    );
    let _daemon = Daemon::start(&ingot);
    // Service names are STACK_SERVICE: a stack name with '_' is refused.
    let err = ingot.fails(&["deploy", "-f", stack.to_str().unwrap(), "--name", "my_app"]);
    assert!(err.contains("\"my_app\""), "{err}");
    ingot.ok(&["deploy", "-f", stack.to_str().unwrap(), "--name", "once"]);
    let victim = replicas(&ingot)[0]["name"].as_str().unwrap().to_string();
    ingot.ok(&["kill", &victim]);
    wait_for("the dead replica to leave the service", 30, || {
        replicas(&ingot).len() == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replicas(&ingot).len(), 1, "condition none: not replaced");
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version one", "the other replica serves");
    let drift = ingot.run(&["drift"]);
    assert_eq!(drift.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&drift.stdout).contains("once_web"));
}

/// One request to the daemon's unix socket; (status, JSON body).
fn api(ingot: &Ingot, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut u = std::os::unix::net::UnixStream::connect(ingot.root().join("ingot.sock")).unwrap();
    let b = body.to_string();
    write!(
        u,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    let mut text = String::new();
    u.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[test]
fn the_api_trusts_nothing_its_clients_send() {
    if !root_or_skip("the_api_trusts_nothing_its_clients_send") {
        return;
    }
    let ingot = Ingot::new(BIN);
    let tar = ingot.write("rootfs.tar", &ingot_testsupport::sample_rootfs(20_000, 7));
    ingot.ok(&["import", "-q", tar.to_str().unwrap(), "app:1"]);
    let digest = ingot.ok(&["inspect", "-q", "app:1"]).trim().to_string();
    let _daemon = Daemon::start(&ingot);
    let content = "hello\n";
    let cfg = format!("sha256:{}", sha256_hex(content.as_bytes()));
    let stack = |svc_digest: &str, cfg_digest: &str, target: &str| {
        serde_json::json!({
            "name": "t",
            "services": {"web": {
                "image": "app:1", "digest": svc_digest, "command": ["/nothing"], "entrypoint": null,
                "env": [], "ports": [], "health": null, "replicas": 1,
                "update": {"parallelism": 1, "delay_ms": 0, "failure_action": "pause", "monitor_ms": 0, "max_failure_ratio": 0.0, "order": "stop-first"},
                "rollback": {"parallelism": 1, "delay_ms": 0, "failure_action": "pause", "monitor_ms": 0, "max_failure_ratio": 0.0, "order": "stop-first"},
                "restart": {"condition": "none", "delay_ms": 0, "max_attempts": null},
                "configs": [{"name": "g", "digest": cfg_digest, "target": target}],
                "user": null, "workdir": null, "stop_grace_ms": 0
            }},
            "configs": {"g": {"digest": cfg_digest, "content": content}}
        })
    };
    let escape = "/tmp/ingot-escape-test";
    let _ = std::fs::remove_file(escape);
    let traversal = format!("sha256:../../../..{escape}");
    for (body, field) in [
        (
            serde_json::json!({"stack": stack(&digest, &traversal, "/etc/g")}),
            "stack.configs.g.digest",
        ),
        (
            serde_json::json!({"stack": stack("app:1", &cfg, "/etc/g")}),
            "stack.services.web.digest",
        ),
        (
            serde_json::json!({"stack": stack(&format!("sha256:{}", "ab".repeat(32)), &cfg, "/etc/g")}),
            "not an image in the daemon's store",
        ),
        (
            serde_json::json!({"stack": stack(&digest, &cfg, "/etc/../../host")}),
            "stack.services.web.configs[0].target",
        ),
        (
            serde_json::json!({"stack": stack(&digest, &cfg, "/etc/g"), "actor": "somebody else entirely"}),
            "actor",
        ),
    ] {
        let (status, v) = api(&ingot, "POST", "/v1/deploy", &body);
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{field}: {v}");
    }
    assert!(
        !Path::new(escape).exists(),
        "a traversal digest wrote outside the store"
    );
    assert!(
        ingot.json(&["ledger"]).as_array().unwrap().is_empty(),
        "nothing recorded"
    );
    assert!(
        ingot.json(&["ps", "-a"]).as_array().unwrap().is_empty(),
        "nothing started"
    );

    // A valid request: the actor is the socket peer (root here), not anything the client says.
    let (status, v) = api(
        &ingot,
        "POST",
        "/v1/deploy",
        &serde_json::json!({"stack": stack(&digest, &cfg, "/etc/g"), "reason": "api test"}),
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["entry"]["actor"], "root (uid 0)", "{v}");
    assert_eq!(v["entry"]["outcome"], "pending", "{v}");
    let seq = v["entry"]["seq"].to_string();
    // The replica cannot start (/nothing): the change ends, sealed, whoever waits.
    let out = ingot.run(&["ledger", "wait", &seq, "--format", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(r["outcome"], "pending", "{r}");
    assert_eq!(ingot.json(&["ledger"])[0]["reason"], "api test");
    ingot.ok(&["ledger", "verify"]);
    assert!(ingot.fails(&["ledger", "wait", "99"]).contains("99"));
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_client_that_goes_away_leaves_no_change_pending() {
    let Some(ingot) = with_versions("a_client_that_goes_away_leaves_no_change_pending") else {
        return;
    };
    let port = ingot_testsupport::free_port();
    let daemon = Daemon::start(&ingot);
    let (code, r) = deploy(&ingot, &stack_file(&ingot, "v1", "hello:1", port, 2, "500ms"), "first");
    assert_eq!(code, 0, "{r}");
    // Ctrl-C on `ingot deploy` while its rollout waits on the monitor period.
    let v2 = stack_file(&ingot, "v2", "hello:2", port, 2, "3s");
    let client = ingot
        .command()
        .args(["deploy", "-f", &v2, "--name", "demo"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(client.id() as i32, libc::SIGINT) };
    let out = client.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("ledger entry #2"), "the client named its entry: {said}");
    // The change goes on in the daemon and ends; `ledger wait` re-attaches.
    let out = ingot.ok(&["ledger", "wait", "2"]);
    assert!(out.contains("succeeded"), "{out}");
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version two");

    // A `stack rm` sent during a rollout waits for it, then removes the stack.
    let out = ingot.ok(&[
        "deploy",
        "-d",
        "-f",
        &stack_file(&ingot, "v1b", "hello:1", port, 2, "2s"),
        "--name",
        "demo",
    ]);
    assert!(out.contains("#3") && out.contains("pending"), "{out}");
    let out = ingot.ok(&["stack", "rm", "demo"]);
    assert!(out.contains("rm of stack demo: succeeded"), "{out}");
    let rows = ingot.json(&["ledger"]);
    let outcomes: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "succeeded", "succeeded"], "{rows}");
    assert!(
        ingot.json(&["ps", "-a"]).as_array().unwrap().is_empty(),
        "the stack's replicas are gone"
    );

    // A restarted daemon serves adopted replicas' published port as soon as it answers.
    let (code, r) = deploy(&ingot, &stack_file(&ingot, "v1c", "hello:1", port, 2, "500ms"), "again");
    assert_eq!(code, 0, "{r}");
    drop(daemon);
    let mut daemon = Daemon::start(&ingot);
    let mut c = None;
    assert_eq!(
        get(&mut c, port).unwrap(),
        "version one",
        "served right after the restart"
    );
    let ps = replicas(&ingot);
    assert_eq!(ps.len(), 2, "{ps:?}");

    // `daemon --replace` under load: the old daemon hands over and drains; no request fails.
    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(500));
    let successor = Daemon::start_with(&ingot, &["--replace"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the replaced daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    assert!(ok > 200, "the load loop ran ({ok} requests)");
    assert_eq!(failed, 0, "failed requests while the daemon was replaced: {errors:?}");
    daemon.kill();
    let out = ingot.ok(&["service", "ps", "web"]);
    assert_eq!(out.lines().count(), 3, "the successor manages both replicas: {out}");
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version one");
    ingot.ok(&["stack", "rm", "demo"]);
    drop(successor);
}

#[test]
fn secrets_reach_their_replicas_as_files_and_nowhere_else() {
    let test = "secrets_reach_their_replicas_as_files_and_nowhere_else";
    let Some(ingot) = ingot_testsupport::busybox_root(test, BIN, "example/base:latest") else {
        return;
    };
    build(&ingot, "hello:1", "", Some("version one"));
    let file_value = format!("pw-from-a-file-{}", std::process::id());
    let env_value = format!("key-from-the-environment-{}", std::process::id());
    ingot.write("pw.txt", file_value.as_bytes());
    let stack = ingot.write(
        "secret.yml",
        b"services:\n  web:\n    image: hello:1\n    stop_grace_period: 1s\n    secrets:\n      - source: db_password\n        uid: \"65534\"\n      - source: api_key\n        target: key.txt\n        mode: 0440\n    configs:\n      - {source: greet, target: /etc/greet.txt, uid: \"65534\", mode: 0400}\n  other:\n    image: hello:1\n    stop_grace_period: 1s\n    configs: [greet]\nconfigs:\n  greet:\n    content: hello\nsecrets:\n  db_password:\n    file: ./pw.txt\n  api_key:\n    environment: TEST_API_KEY\n",
    );
    let stack = stack.to_str().unwrap();
    let _daemon = Daemon::start(&ingot);
    let deploy = |extra_env: Option<&str>| {
        let mut c = ingot.command();
        c.args(["deploy", "-f", stack, "--name", "sec"]);
        if let Some(v) = extra_env {
            c.env("TEST_API_KEY", v);
        }
        c.output().unwrap()
    };
    // Bad input: the variable unset; then the file missing.
    let out = deploy(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("TEST_API_KEY"), "{err}");
    std::fs::rename(ingot.path("pw.txt"), ingot.path("pw.moved")).unwrap();
    let out = deploy(Some(&env_value));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("secrets.db_password"), "{err}");
    std::fs::rename(ingot.path("pw.moved"), ingot.path("pw.txt")).unwrap();
    assert!(
        ingot.json(&["services"]).as_array().unwrap().is_empty(),
        "nothing was deployed"
    );

    let out = deploy(Some(&env_value));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let name_of = |service: &str| {
        ingot.json(&["service", "ps", service])[0]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let web = name_of("sec_web");
    // The service runs as nobody: its uid owns db_password (0400); api_key is
    // root's, 0440: unreadable to it.
    assert_eq!(ingot.ok(&["exec", &web, "cat", "/run/secrets/db_password"]), file_value);
    let listing = ingot.ok(&[
        "exec",
        &web,
        "ls",
        "-ln",
        "/run/secrets/db_password",
        "/run/secrets/key.txt",
    ]);
    let modes: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[2].to_string())
        })
        .collect();
    assert_eq!(
        modes,
        [("-r--------".into(), "65534".into()), ("-r--r-----".into(), "0".into())],
        "{listing}"
    );
    assert!(
        !ingot
            .run(&["exec", &web, "cat", "/run/secrets/key.txt"])
            .status
            .success(),
        "mode 0440, not its uid"
    );
    assert!(
        !ingot
            .run(&["exec", &web, "sh", "-c", "echo x > /run/secrets/db_password"])
            .status
            .success(),
        "a secret is read-only"
    );
    // A config's owner and mode are honoured too (a copy of its own); without
    // them it is the shared root-owned 0444 file.
    let config = ingot.ok(&["exec", &web, "ls", "-ln", "/etc/greet.txt"]);
    assert!(
        config.starts_with("-r-------- ") && config.split_whitespace().nth(2) == Some("65534"),
        "{config}"
    );
    assert_eq!(ingot.ok(&["exec", &web, "cat", "/etc/greet.txt"]), "hello");
    let other = name_of("sec_other");
    let shared = ingot.ok(&["exec", &other, "ls", "-ln", "/greet"]);
    assert!(
        shared.starts_with("-r--r--r-- ") && shared.split_whitespace().nth(2) == Some("0"),
        "{shared}"
    );
    assert!(
        !ingot
            .run(&["exec", &other, "ls", "/run/secrets/db_password"])
            .status
            .success(),
        "only where used"
    );

    // Nowhere else: not in the ledger, the container's record, the daemon's
    // log, any file of the root but the database, nor any command line.
    let values = [file_value.as_str(), env_value.as_str()];
    let ledger = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(''.join(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT body FROM ledger')))"])
        .arg(ingot.root().join("ingot.db"))
        .output()
        .unwrap();
    let ledger = String::from_utf8_lossy(&ledger.stdout).to_string();
    assert!(
        ledger.contains("db_password") && ledger.contains("sha256:"),
        "the ledger names the secret: {ledger}"
    );
    let inspect = ingot.ok(&["inspect", &web]);
    let log = std::fs::read_to_string(ingot.path("daemon.log")).unwrap_or_default();
    for v in values {
        assert!(!ledger.contains(v), "a secret value is in the ledger");
        assert!(!inspect.contains(v), "a secret value is in inspect output");
        assert!(!log.contains(v), "a secret value is in the daemon's log");
    }
    let grep = Command::new("grep")
        .args(["-rlF", "--exclude=ingot.db*", "-e", values[0], "-e", values[1]])
        .arg(ingot.root())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "secret values in files: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        for v in values {
            assert!(!cmdline.contains(v), "a secret value on a command line: {cmdline}");
        }
    }

    // The API checks a value against the digest the stack names, and a
    // digest it holds no value for.
    let pinned: Value = serde_json::from_str(&ledger_stack(&ledger)).unwrap();
    let (status, body) = api(
        &ingot,
        "POST",
        "/v1/deploy",
        &serde_json::json!({"stack": pinned, "secrets": {"db_password": "d3Jvbmc=", "api_key": b64(&env_value)}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("secrets.db_password"),
        "{body}"
    );
    let mut unknown = pinned.clone();
    let fake = format!("sha256:{}", sha256_hex(b"never sent"));
    unknown["secrets"]["api_key"]["digest"] = Value::String(fake.clone());
    unknown["services"]["web"]["secrets"][1]["digest"] = Value::String(fake);
    // Naming a digest without its value is refused, even one the daemon
    // holds (else any client could mount another stack's secret).
    let (status, body) = api(&ingot, "POST", "/v1/deploy", &serde_json::json!({"stack": pinned}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("secrets.api_key: no value sent"),
        "{body}"
    );
    let (status, body) = api(&ingot, "POST", "/v1/deploy", &serde_json::json!({"stack": unknown}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("secrets.api_key"), "{body}");

    // A new value is a new version: web rolls, other stays.
    ingot.write("pw.txt", b"the second password");
    let out = deploy(Some(&env_value));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let web2 = name_of("sec_web");
    assert_ne!(web2, web, "a changed secret replaces the replicas that use it");
    assert_eq!(
        ingot.ok(&["exec", &web2, "cat", "/run/secrets/db_password"]),
        "the second password"
    );
    assert_eq!(name_of("sec_other"), other, "a service without it is left alone");
    ingot.ok(&["stack", "rm", "sec"]);
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The stack of the ledger's first deploy entry (bodies concatenated).
fn ledger_stack(bodies: &str) -> String {
    let first: Value = serde_json::Deserializer::from_str(bodies)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    first.get("stack").cloned().unwrap_or(first).to_string()
}

#[test]
fn resources_and_labels_are_applied_and_reservations_checked() {
    let test = "resources_and_labels_are_applied_and_reservations_checked";
    let Some(ingot) = ingot_testsupport::busybox_root(test, BIN, "example/base:latest") else {
        return;
    };
    build(&ingot, "hello:1", "", Some("version one"));
    let write = |memory: &str, labels: &str, reserve_cpus: &str| {
        let limit_cpus = if reserve_cpus == "0.1" { "0.5" } else { reserve_cpus };
        let text = format!(
            "services:\n  web:\n    image: hello:1\n    stop_grace_period: 1s\n    deploy:\n      labels: {{{labels}}}\n      resources:\n        limits: {{cpus: '{limit_cpus}', memory: {memory}, pids: 50}}\n        reservations: {{cpus: '{reserve_cpus}', memory: 16M}}\n"
        );
        ingot.write("res.yml", text.as_bytes()).to_str().unwrap().to_string()
    };
    let _daemon = Daemon::start(&ingot);
    let stack = write("64M", "team: web, tier: 1", "0.1");
    ingot.ok(&["deploy", "-f", &stack, "--name", "res"]);
    let services = ingot.json(&["services"]);
    let svc = &services[0];
    assert_eq!(
        svc["labels"],
        serde_json::json!({"team": "web", "tier": "1"}),
        "{services}"
    );
    let name = ingot.json(&["service", "ps", "res_web"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let spec = &ingot.json(&["inspect", &name])[0]["spec"];
    assert_eq!(
        (
            spec["memory"].as_u64(),
            spec["cpus"].as_f64(),
            spec["pids_limit"].as_i64()
        ),
        (Some(64 << 20), Some(0.5), Some(50)),
        "{spec}"
    );
    // The pids limit holds inside the replica (exec joins its cgroup).
    let forks = ingot.run(&[
        "exec",
        &name,
        "sh",
        "-c",
        "i=0; while [ $i -lt 80 ]; do sleep 3 & i=$((i+1)); done; wait",
    ]);
    assert!(!forks.status.success(), "80 processes under pids: 50");

    // Labels are the service's: changing them replaces no replica; a limit is
    // the replicas': changing it rolls them.
    ingot.ok(&["deploy", "-f", &write("64M", "team: api", "0.1"), "--name", "res"]);
    assert_eq!(
        ingot.json(&["services"])[0]["labels"],
        serde_json::json!({"team": "api"})
    );
    assert_eq!(
        ingot.json(&["service", "ps", "res_web"])[0]["name"].as_str().unwrap(),
        name
    );
    ingot.ok(&["deploy", "-f", &write("96M", "team: api", "0.1"), "--name", "res"]);
    let rolled = ingot.json(&["service", "ps", "res_web"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rolled, name, "a new memory limit is a new version");
    assert_eq!(
        ingot.json(&["inspect", &rolled])[0]["spec"]["memory"].as_u64(),
        Some(96 << 20)
    );

    // A limit of more CPUs than the host has; then more CPUs reserved, with
    // this stack's 0.1, than the host has: refused, nothing recorded.
    let before = ingot.json(&["ledger"]).as_array().map_or(0, Vec::len);
    let err = ingot.fails(&["deploy", "-f", &write("96M", "team: api", "1000"), "--name", "res"]);
    assert!(err.contains("resources.cpus") && err.contains("1000"), "{err}");
    let host = std::thread::available_parallelism().unwrap().get().to_string();
    let err = ingot.fails(&["deploy", "-f", &write("96M", "team: api", &host), "--name", "other"]);
    assert!(err.contains("reservations") && err.contains("this host has"), "{err}");
    assert_eq!(
        ingot.json(&["ledger"]).as_array().map_or(0, Vec::len),
        before,
        "nothing recorded"
    );
    assert_eq!(
        ingot.json(&["service", "ps", "res_web"])[0]["name"].as_str().unwrap(),
        rolled
    );
    ingot.ok(&["stack", "rm", "res"]);
}

#[test]
fn volumes_keep_data_across_updates_restarts_and_stack_rm() {
    let test = "volumes_keep_data_across_updates_restarts_and_stack_rm";
    let Some(ingot) = ingot_testsupport::busybox_root(test, BIN, "example/base:latest") else {
        return;
    };
    build(&ingot, "hello:1", "", Some("version one"));
    let image = |v: u32| {
        format!("FROM hello:1\nUSER root\nRUN mkdir -p /data && echo seed > /data/seed && chown -R nobody /data\nUSER nobody\nENV V={v}\n")
    };
    build(&ingot, "store:1", &image(1), None);
    build(&ingot, "store:2", &image(2), None);
    let binds = ingot.path("binds");
    std::fs::create_dir_all(&binds).unwrap();
    std::fs::write(binds.join("hello.txt"), "from the host").unwrap();
    let stack = |tag: &str| {
        let text = format!(
            "services:\n  db:\n    image: store:{tag}\n    stop_grace_period: 1s\n    volumes:\n      - data:/data\n      - type: bind\n        source: ./binds\n        target: /srv/binds\n        read_only: true\n    tmpfs: [/scratch]\nvolumes:\n  data: {{}}\n"
        );
        ingot.write("vol.yml", text.as_bytes()).to_str().unwrap().to_string()
    };
    let daemon = Daemon::start(&ingot);
    // A bind mount needs the daemon's leave.
    let err = ingot.fails(&["deploy", "-f", &stack("1"), "--name", "vol"]);
    assert!(
        err.contains("mounts[0].source") || err.contains("mounts[1].source"),
        "{err}"
    );
    assert!(err.contains("--allow-bind"), "{err}");
    assert_eq!(
        ingot.json(&["ledger"]).as_array().map_or(0, Vec::len),
        0,
        "nothing recorded"
    );
    daemon.kill();
    let allow = binds.to_str().unwrap().to_string();
    let daemon = Daemon::start_with(&ingot, &["--allow-bind", &allow]);
    ingot.ok(&["deploy", "-f", &stack("1"), "--name", "vol"]);
    let replica = || {
        ingot.json(&["service", "ps", "vol_db"])[0]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = replica();
    // An empty volume gets the image's content, owner kept (nobody writes).
    assert_eq!(ingot.ok(&["exec", &first, "cat", "/data/seed"]), "seed\n");
    let value = format!("kept-{}", std::process::id());
    ingot.ok(&["exec", &first, "sh", "-c", &format!("echo {value} > /data/x")]);
    assert_eq!(
        ingot.ok(&["exec", &first, "cat", "/srv/binds/hello.txt"]),
        "from the host"
    );
    assert!(
        !ingot
            .run(&["exec", &first, "sh", "-c", "echo x > /srv/binds/y"])
            .status
            .success(),
        "read-only bind"
    );
    ingot.ok(&["exec", &first, "sh", "-c", "echo t > /scratch/t"]);
    let read = || ingot.ok(&["exec", &replica(), "cat", "/data/x"]);

    // A rolling update: a new replica, the same data; no copy over it.
    ingot.ok(&["deploy", "-f", &stack("2"), "--name", "vol"]);
    assert_ne!(replica(), first);
    assert_eq!(read(), format!("{value}\n"));
    assert!(
        !ingot.run(&["exec", &replica(), "cat", "/scratch/t"]).status.success(),
        "a tmpfs starts empty"
    );
    // A rollback, then a daemon restart.
    ingot.ok(&["rollback", "vol_db"]);
    assert_eq!(read(), format!("{value}\n"));
    daemon.kill();
    let daemon = Daemon::start_with(&ingot, &["--allow-bind", &allow]);
    assert_eq!(read(), format!("{value}\n"));

    // In use: not removed. stack rm keeps it; a new deploy finds the data.
    let vols = ingot.json(&["volume", "ls"]);
    assert_eq!(vols[0]["name"], "vol_data", "{vols}");
    let err = ingot.fails(&["volume", "rm", "vol_data"]);
    assert!(err.contains("belongs to deployed stack vol"), "{err}");
    ingot.ok(&["stack", "rm", "vol"]);
    assert_eq!(ingot.json(&["volume", "ls"])[0]["name"], "vol_data");
    ingot.ok(&["deploy", "-f", &stack("2"), "--name", "vol"]);
    assert_eq!(read(), format!("{value}\n"));
    // The ledger records the declaration, never the data.
    let ledger = ingot.ok(&["ledger", "--format", "json"]);
    assert!(ledger.contains("vol_data") && !ledger.contains(&value), "{ledger}");
    ingot.ok(&["stack", "rm", "--volumes", "vol"]);
    assert_eq!(ingot.json(&["volume", "ls"]), serde_json::json!([]));
    assert!(!ingot.root().join("volumes/vol_data").exists());
    drop(daemon);
}

#[test]
fn services_find_each_other_by_name_through_dns_and_virtual_addresses() {
    let test = "services_find_each_other_by_name_through_dns_and_virtual_addresses";
    let Some(ingot) = with_versions(test) else {
        return;
    };
    let stack = |api: &str| {
        let text = format!(
            "services:\n  api:\n    image: {api}\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      update_config: {{parallelism: 1, order: start-first}}\n  rr:\n    image: hello:1\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      endpoint_mode: dnsrr\n  web:\n    image: hello:1\n    stop_grace_period: 1s\n    depends_on: [api]\n"
        );
        ingot.write("disc.yml", text.as_bytes()).to_str().unwrap().to_string()
    };
    let _daemon = Daemon::start(&ingot);
    ingot.ok(&["deploy", "-f", &stack("hello:1"), "--name", "disc"]);
    let web = ingot.json(&["service", "ps", "disc_web"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // By the service's name and by STACK_SERVICE, through the mesh on its
    // virtual address (the image EXPOSEs 8080; no port is published).
    for name in ["api", "disc_api"] {
        let page = ingot.ok(&["exec", &web, "wget", "-q", "-O", "-", &format!("http://{name}:8080/")]);
        assert!(page.contains("version one"), "{name}: {page}");
    }
    // Only the daemon holds its DNS socket (no replica inherited it).
    let holders = Command::new("ss")
        .args(["-H", "-ulnp", "src", "10.233.0.0/16"])
        .output()
        .unwrap();
    let holders = String::from_utf8_lossy(&holders.stdout).to_string();
    assert!(holders.contains("\"ingot\""), "the daemon's DNS socket: {holders}");
    for users in holders.lines().filter_map(|l| l.split("users:").nth(1)) {
        assert!(
            users.matches("pid=").count() == 1 && users.contains("\"ingot\""),
            "another process holds a DNS socket: {holders}"
        );
    }
    let look = |name: &str| ingot.run(&["exec", &web, "/bin/busybox", "nslookup", name]);
    let vip = String::from_utf8_lossy(&look("api").stdout).to_string();
    assert!(vip.contains("10.232."), "a virtual address: {vip}");
    // dnsrr: the healthy replicas' own addresses.
    let rr = String::from_utf8_lossy(&look("rr").stdout).to_string();
    let addrs: Vec<String> = ingot
        .json(&["service", "ps", "disc_rr"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addrs.len(), 2);
    for a in &addrs {
        assert!(rr.contains(a.as_str()), "{a} not in {rr}");
    }

    // A rolling update of the API under a load loop from inside the web
    // replica, through the name: no request fails.
    let loop_cmd = "i=0; f=0; while [ $i -lt 150 ]; do wget -q -O /dev/null http://api:8080/ || f=$((f+1)); i=$((i+1)); done; echo failures=$f";
    let (ingot_path, root, web_c) = (BIN.to_string(), ingot.root().to_path_buf(), web.clone());
    let load = std::thread::spawn(move || {
        Command::new(ingot_path)
            .arg("--root")
            .arg(root)
            .args(["exec", &web_c, "sh", "-c", loop_cmd])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    ingot.ok(&["deploy", "-f", &stack("hello:2"), "--name", "disc"]);
    let out = load.join().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        said.trim(),
        "failures=0",
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = ingot.ok(&["exec", &web, "wget", "-q", "-O", "-", "http://api:8080/"]);
    assert!(page.contains("version two"), "{page}");

    // Another stack does not see this stack's names.
    let other = ingot.write(
        "other.yml",
        b"services:\n  x:\n    image: hello:1\n    stop_grace_period: 1s\n",
    );
    ingot.ok(&["deploy", "-f", other.to_str().unwrap(), "--name", "other"]);
    let x = ingot.json(&["service", "ps", "other_x"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = ingot.run(&["exec", &x, "/bin/busybox", "nslookup", "api"]);
    assert!(
        !String::from_utf8_lossy(&seen.stdout).contains("10.232."),
        "another stack resolved api: {}",
        String::from_utf8_lossy(&seen.stdout)
    );
    ingot.ok(&["stack", "rm", "other"]);
    ingot.ok(&["stack", "rm", "disc"]);
}

/// The bridges of this root's networks (other tests' stacks make theirs
/// at the same time), by `ingot network ls`.
fn stack_bridges(ingot: &Ingot) -> Vec<String> {
    ingot
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["bridge"].as_str().unwrap().to_string())
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn networks_keep_services_apart_and_internal_ones_have_no_egress() {
    let test = "networks_keep_services_apart_and_internal_ones_have_no_egress";
    let Some(ingot) = with_versions(test) else {
        return;
    };
    let outside = ingot_testsupport::Outside::start("nw", &ingot.root(), "the outside");
    let _daemon = Daemon::start(&ingot);
    // Bad input first: each refused naming the field, nothing recorded.
    let bad = [
        (
            "services:\n  a:\n    image: hello:1\n    networks: [nope]\n",
            "\"nope\" is not defined in the top-level networks",
        ),
        (
            "services:\n  a:\n    image: hello:1\n    networks: [x, y]\nnetworks:\n  x:\n    ipam: {config: [{subnet: 10.99.0.0/16}]}\n  y:\n    ipam: {config: [{subnet: 10.99.3.0/24}]}\n",
            "networks.y: subnet 10.99.3.0/24 overlaps networks.x (10.99.0.0/16)",
        ),
        (
            "services:\n  a:\n    image: hello:1\n    networks: [x]\nnetworks:\n  x:\n    ipam: {config: [{subnet: 10.231.7.0/24}]}\n",
            "subnet 10.231.7.0/24 overlaps 10.231.0.0/16 on ingot0",
        ),
        (
            "services:\n  a:\n    image: hello:1\nnetworks:\n  x:\n    external: true\n",
            "external networks are not supported",
        ),
    ];
    for (text, why) in bad {
        let f = ingot.write("bad.yml", text.as_bytes());
        let out = ingot.run(&["deploy", "-f", f.to_str().unwrap(), "--name", "bad"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{text}: {err}");
    }
    assert_eq!(ingot.json(&["ledger"]).as_array().map(Vec::len), Some(0));
    assert_eq!(
        stack_bridges(&ingot),
        Vec::<String>::new(),
        "a refused deploy made a network"
    );

    let text = "services:\n  web:\n    image: hello:1\n    stop_grace_period: 1s\n    networks: [front]\n  api:\n    image: hello:1\n    stop_grace_period: 1s\n    networks:\n      front:\n      back:\n        aliases: [backend]\n  db:\n    image: hello:2\n    stop_grace_period: 1s\n    networks: [back]\nnetworks:\n  front: {}\n  back:\n    internal: true\n";
    let f = ingot.write("nets.yml", text.as_bytes());
    ingot.ok(&["deploy", "-f", f.to_str().unwrap(), "--name", "nets"]);
    let made: Vec<String> = stack_bridges(&ingot);
    assert!(made.iter().all(|b| link_exists(b)), "bridges up: {made:?}");
    assert_eq!(made.len(), 2, "front and back: {made:?}");
    assert_eq!(
        made.iter().filter(|b| b.starts_with("ingi")).count(),
        1,
        "back is internal: {made:?}"
    );
    let nets = ingot.json(&["network", "ls"]);
    let names: Vec<(&str, bool)> = nets
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["internal"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("nets_back", true), ("nets_front", false)]);
    let back = ingot.ok(&["network", "inspect", "nets_back"]);
    assert!(
        back.contains("nets.api.1.") && back.contains("nets.db.1.") && !back.contains("nets.web."),
        "{back}"
    );
    // A network in use stays, whatever else was named with it.
    let err = ingot.fails(&["network", "rm", "nets_front", "nets_back"]);
    assert!(
        err.contains("network nets_front is in use by nets.") && err.contains("stack rm nets"),
        "{err}"
    );
    assert!(ingot.fails(&["network", "rm", "nope"]).contains("not found"));
    assert!(made.iter().all(|b| link_exists(b)), "bridges still up: {made:?}");
    let one = |svc: &str| -> Value { ingot.json(&["service", "ps", &format!("nets_{svc}")])[0].clone() };
    let (web, api, db) = (one("web"), one("api"), one("db"));
    let name = |v: &Value| v["name"].as_str().unwrap().to_string();
    assert_eq!(
        api["addresses"].as_array().map(Vec::len),
        Some(2),
        "api joins two networks: {api}"
    );
    // (busybox wget's own -T crashes this busybox: `timeout` bounds it.)
    let fetch = |from: &Value, url: &str| -> Option<String> {
        let argv = ingot_testsupport::bounded_wget(3, url);
        let mut args = vec!["exec".to_string(), name(from)];
        args.extend(argv);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ingot.run(&args);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let resolve = |from: &Value, host: &str| -> String {
        String::from_utf8_lossy(
            &ingot
                .run(&["exec", &name(from), "/bin/busybox", "nslookup", host])
                .stdout,
        )
        .to_string()
    };
    // Names on a shared network resolve and answer.
    assert!(fetch(&web, "http://api:8080/").is_some_and(|p| p.contains("version one")));
    assert!(fetch(&api, "http://db:8080/").is_some_and(|p| p.contains("version two")));
    assert!(
        fetch(&db, "http://backend:8080/").is_some_and(|p| p.contains("version one")),
        "an alias on back"
    );
    // web and db share no network: no name, no virtual address, no replica address.
    assert!(!resolve(&web, "db").contains("10.232."), "web resolved db");
    assert!(
        !resolve(&web, "backend").contains("10.232."),
        "web resolved back's alias"
    );
    let db_vip = resolve(&api, "db")
        .lines()
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .find(|a| a.starts_with("10.232."))
        .expect("db's virtual address");
    assert!(fetch(&api, &format!("http://{db_vip}:8080/")).is_some());
    assert_eq!(
        fetch(&web, &format!("http://{db_vip}:8080/")),
        None,
        "web reached db's virtual address"
    );
    let db_addr = db["address"].as_str().unwrap();
    assert_eq!(
        fetch(&web, &format!("http://{db_addr}:8080/")),
        None,
        "web reached db's replica"
    );
    assert!(fetch(&api, &format!("http://{db_addr}:8080/")).is_some());
    // Egress: from front yes, from the internal back no.
    let mut out = None;
    for _ in 0..30 {
        out = fetch(&web, &outside.url);
        if out.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(out.as_deref(), Some("the outside"), "egress from front");
    assert_eq!(fetch(&db, &outside.url), None, "egress from the internal network");

    // Another stack is on networks of its own.
    let other = ingot.write(
        "iso.yml",
        b"services:\n  x:\n    image: hello:1\n    stop_grace_period: 1s\n",
    );
    ingot.ok(&["deploy", "-f", other.to_str().unwrap(), "--name", "iso"]);
    let x = ingot.json(&["service", "ps", "iso_x"])[0].clone();
    let web_addr = web["address"].as_str().unwrap();
    assert_eq!(
        fetch(&x, &format!("http://{web_addr}:8080/")),
        None,
        "another stack reached web"
    );
    assert!(fetch(&x, "http://x:8080/").is_some(), "its own name");

    ingot.ok(&["stack", "rm", "iso"]);
    ingot.ok(&["stack", "rm", "nets"]);
    assert!(
        !made.iter().any(|b| link_exists(b)),
        "stack rm leaves no bridge: {made:?}"
    );
    assert_eq!(ingot.json(&["network", "ls"]), serde_json::json!([]));
    let rules = String::from_utf8_lossy(
        &Command::new("iptables")
            .args(["-S", "INGOT-NETWORKS"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    for b in &made {
        assert!(!rules.contains(b.as_str()), "a rule of {b} left: {rules}");
    }
}

/// The shop's `/cgi-bin/visit` on a connection of its own (a CGI answer has
/// no length); the body unless the status is not 200 or it counted nothing.
fn visit(_: &mut Option<BufReader<TcpStream>>, port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /cgi-bin/visit HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut all = String::new();
    s.read_to_string(&mut all).map_err(|e| e.to_string())?;
    if !all.starts_with("HTTP/1.1 200") || !all.contains("hits=") {
        return Err(format!(
            "{:?}",
            all.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>()
        ));
    }
    Ok(all)
}

/// `hits=N` of a visit's answer.
fn hits(answer: &str) -> u64 {
    answer
        .split("hits=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_three_tier_stack_serves_through_updates_rollback_restart_and_keeps_its_data() {
    let test = "a_three_tier_stack_serves_through_updates_rollback_restart_and_keeps_its_data";
    let Some(ingot) = ingot_testsupport::busybox_root(test, BIN, "example/base:latest") else {
        return;
    };
    // The database image: redis from Debian's packages (cached rootfs).
    debian_image(&ingot, "redis-server", "example/redis-rootfs:latest");
    for tier in ["web", "api", "db"] {
        let dir = workspace_file(&format!("examples/shop/{tier}"));
        ingot.ok(&[
            "build",
            "-q",
            "--no-sbom",
            "-t",
            &format!("example/shop-{tier}:latest"),
            dir.to_str().unwrap(),
        ]);
    }
    let port = ingot_testsupport::free_port();
    let password = "a-test-password-of-the-api";
    let hash = sha256_hex(password.as_bytes());
    let acl = format!("user default off\nuser api on #{hash} ~* &* +@all\nuser health on nopass -@all +ping\n");
    let stack = workspace_file("examples/shop/stack.yml");
    let deploy = |version: &str| {
        let out = ingot
            .command()
            .args(["deploy", "-f", stack.to_str().unwrap(), "--name", "shop"])
            .env("SHOP_PORT", port.to_string())
            .env("SHOP_API_VERSION", version)
            .env("SHOP_API_PASSWORD", password)
            .env("SHOP_DB_ACL", &acl)
            .output()
            .unwrap();
        assert!(out.status.success(), "deploy: {}", String::from_utf8_lossy(&out.stderr));
    };
    let daemon = Daemon::start(&ingot);
    deploy("1");
    let first = visit(&mut None, port).expect("a visit");
    assert!(first.contains("api=1"), "{first}");
    let n0 = hits(&first);

    // Under load through the web tier: an update of the API, a rollback,
    // a daemon replaced; no request fails.
    let load = Load::start_with(port, visit, 2);
    let mut phases = Vec::new();
    let mut mark =
        |what: &str, load: &Load| phases.push(format!("{what}: {} failed", load.failed.load(Ordering::Relaxed)));
    std::thread::sleep(Duration::from_millis(500));
    mark("before", &load);
    deploy("2");
    assert!(visit(&mut None, port).unwrap().contains("api=2"));
    mark("update", &load);
    ingot.ok(&["rollback", "shop_api"]);
    assert!(visit(&mut None, port).unwrap().contains("api=1"));
    mark("rollback", &load);
    let successor = Daemon::start_with(&ingot, &["--replace"]);
    let mut daemon = daemon;
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the replaced daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.kill();
    std::thread::sleep(Duration::from_millis(500));
    mark("replace", &load);
    let (ok, failed, errors) = load.finish();
    assert!(ok > 20, "the load loop ran ({ok} requests)");
    assert_eq!(
        failed, 0,
        "failed requests through the web tier ({phases:?}): {errors:?}"
    );
    let after = hits(&visit(&mut None, port).unwrap());
    assert!(after > n0 + ok, "every visit was counted: {n0} + {ok} < {after}");

    // Secrets: each readable by the one service given it.
    let first_of = |svc: &str| -> String {
        ingot.json(&["service", "ps", &format!("shop_{svc}")])[0]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (web, api, db) = (first_of("web"), first_of("api"), first_of("db"));
    let reads = |c: &str, secret: &str| ingot.run(&["exec", c, "cat", &format!("/run/secrets/{secret}")]);
    assert!(String::from_utf8_lossy(&reads(&db, "db_acl").stdout).contains(&hash));
    assert_eq!(
        String::from_utf8_lossy(&reads(&api, "api_password").stdout).trim(),
        password
    );
    for (c, secret) in [
        (&web, "db_acl"),
        (&web, "api_password"),
        (&api, "db_acl"),
        (&db, "api_password"),
    ] {
        assert!(!reads(c, secret).status.success(), "{c} read {secret}");
    }
    // web shares no network with db: no name, no connection.
    let nc = ingot.run(&[
        "exec",
        &web,
        "sh",
        "-c",
        "printf 'PING\\r\\n' | /bin/busybox timeout 3 /bin/busybox nc db 6379",
    ]);
    assert!(
        !String::from_utf8_lossy(&nc.stdout).contains("NOAUTH"),
        "web reached db"
    );

    // stack rm keeps the volume; a redeploy finds the data.
    ingot.ok(&["stack", "rm", "shop"]);
    assert!(ingot.json(&["volume", "ls"]).to_string().contains("shop_data"));
    deploy("1");
    let again = hits(&visit(&mut None, port).unwrap());
    assert!(
        again > after,
        "data survived stack rm and redeploy ({after} then {again})"
    );
    ingot.ok(&["stack", "rm", "shop"]);
    ingot.ok(&["volume", "rm", "shop_data"]);
    drop(successor);
}

/// A UDP echo server: answers each datagram with `HOSTNAME:DATAGRAM`.
const UDP_ECHO: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    char host[64] = {0}, buf[512], out[640];
    gethostname(host, sizeof host - 1);
    for (;;) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) continue;
        buf[n] = 0;
        int m = snprintf(out, sizeof out, "%s:%s", host, buf);
        sendto(s, out, m, 0, (struct sockaddr *)&from, fl);
    }
}
"#;

/// One datagram to 127.0.0.1:`port` from a fresh socket; the answer.
fn udp_ask(port: u16, what: &str) -> Option<String> {
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..20 {
        c.send_to(what.as_bytes(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 700];
        if let Ok(n) = c.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    None
}

#[test]
fn udp_ports_through_the_mesh_and_host_mode_ports_on_the_replica() {
    let test = "udp_ports_through_the_mesh_and_host_mode_ports_on_the_replica";
    let Some(ingot) = with_versions(test) else {
        return;
    };
    if !ingot_testsupport::have("gcc") {
        skip(test, "gcc (to build the static UDP server) is missing");
        return;
    }
    let ctx = ingot.path("udp-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("echo.c"), UDP_ECHO).unwrap();
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(ctx.join("udpecho"))
        .arg(ctx.join("echo.c"))
        .status()
        .unwrap();
    assert!(st.success(), "gcc -static failed (libc6-dev)");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM example/base:latest\nCOPY udpecho /udpecho\nCMD [\"/udpecho\", \"5353\"]\n",
    )
    .unwrap();
    ingot.ok(&["build", "-q", "--no-sbom", "-t", "udp:1", ctx.to_str().unwrap()]);
    let _daemon = Daemon::start(&ingot);

    // Refused: two replicas on one host-mode port; start-first on one.
    let host_port = |extra: &str| {
        format!("services:\n  s:\n    image: udp:1\n    ports:\n      - {{target: 5353, published: 5999, protocol: udp, mode: host}}\n{extra}")
    };
    for (extra, why) in [
        (
            "    deploy: {replicas: 2}\n",
            "2 replicas on this node cannot all bind it",
        ),
        (
            "    deploy: {update_config: {order: start-first}}\n",
            "start-first would run two replicas on a host-mode port",
        ),
        (
            "    deploy: {placement: {constraints: [node.role == manager]}}\n",
            "placement chooses among a cluster's nodes",
        ),
    ] {
        let f = ingot.write("bad.yml", host_port(extra).as_bytes());
        let err = ingot.fails(&["deploy", "-f", f.to_str().unwrap(), "--name", "bad"]);
        assert!(err.contains(why), "{err}");
    }

    let (mesh_udp, host_udp, host_tcp) = (
        ingot_testsupport::free_udp_port(),
        ingot_testsupport::free_udp_port(),
        ingot_testsupport::free_port(),
    );
    let stack = |title: &str| {
        let text = format!(
            "services:\n  echo:\n    image: udp:1\n    stop_grace_period: 1s\n    ports: [\"127.0.0.1:{mesh_udp}:5353/udp\"]\n    deploy: {{replicas: 2}}\n  solo:\n    image: udp:1\n    stop_grace_period: 1s\n    environment: {{T: {title}}}\n    ports:\n      - {{target: 5353, published: {host_udp}, protocol: udp, mode: host, host_ip: 127.0.0.1}}\n  page:\n    image: {title}\n    stop_grace_period: 1s\n    ports:\n      - {{target: 8080, published: {host_tcp}, mode: host, host_ip: 127.0.0.1}}\n"
        );
        ingot.write("ports.yml", text.as_bytes()).to_str().unwrap().to_string()
    };
    ingot.ok(&["deploy", "-f", &stack("hello:1"), "--name", "ports"]);
    // UDP through the mesh: each client's flow to one replica, both used.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        let Some(a) = udp_ask(mesh_udp, &format!("hi{i}")) else {
            // Once seen in CI: say what the daemon and the host knew then.
            let log = std::fs::read_to_string(ingot.path("daemon.log")).unwrap_or_default();
            let mut from = log.len().saturating_sub(6000);
            while !log.is_char_boundary(from) {
                from += 1;
            }
            let ss = Command::new("ss")
                .args(["-uanp"])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            panic!(
                "no answer through the mesh on udp {mesh_udp}; replicas: {:?}\nUDP sockets:\n{}\ndaemon log (end):\n{}",
                ingot.json(&["service", "ps", "ports_echo"]),
                String::from_utf8_lossy(&ss),
                &log[from..]
            );
        };
        let (who, what) = a.split_once(':').unwrap();
        assert_eq!(what, format!("hi{i}"));
        seen.insert(who.to_string());
    }
    assert_eq!(seen.len(), 2, "both replicas answered: {seen:?}");
    // Host mode: the replica's own port, UDP and TCP.
    assert!(udp_ask(host_udp, "solo").is_some_and(|a| a.ends_with(":solo")));
    let mut c = None;
    assert_eq!(get(&mut c, host_tcp).unwrap(), "version one");
    let services = ingot.ok(&["services"]);
    assert!(
        services.contains(&format!("127.0.0.1:{mesh_udp}->5353/udp")),
        "{services}"
    );
    assert!(
        services.contains(&format!("127.0.0.1:{host_tcp}->8080 (host)")),
        "{services}"
    );
    // A stop-first update of host-mode services: the new replicas serve there.
    ingot.ok(&["deploy", "-f", &stack("hello:2"), "--name", "ports"]);
    let mut c = None;
    assert_eq!(get(&mut c, host_tcp).unwrap(), "version two");
    assert!(udp_ask(host_udp, "again").is_some());
    ingot.ok(&["stack", "rm", "ports"]);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", host_tcp)).is_err(),
        "the host-mode port was left open"
    );
}

#[test]
fn dns_answers_too_long_for_udp_are_truncated_and_served_over_tcp() {
    let test = "dns_answers_too_long_for_udp_are_truncated_and_served_over_tcp";
    let Some(ingot) = with_versions(test) else {
        return;
    };
    let _daemon = Daemon::start(&ingot);
    // 40 replicas' addresses (16 bytes each) do not fit 512 bytes.
    let text = "services:\n  rr:\n    image: hello:1\n    stop_grace_period: 1s\n    healthcheck: {disable: true}\n    deploy: {replicas: 40, endpoint_mode: dnsrr}\n  client:\n    image: hello:1\n    stop_grace_period: 1s\n    healthcheck: {disable: true}\n";
    let f = ingot.write("many.yml", text.as_bytes());
    ingot.ok(&["deploy", "-f", f.to_str().unwrap(), "--name", "many"]);
    let client = ingot.json(&["service", "ps", "many_client"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // busybox nslookup asks over UDP only: the truncated answer has no address.
    let udp = ingot.run(&["exec", &client, "/bin/busybox", "nslookup", "rr"]);
    let udp = String::from_utf8_lossy(&udp.stdout).to_string() + &String::from_utf8_lossy(&udp.stderr);
    let answered = udp
        .lines()
        .filter(|l| l.starts_with("Address:"))
        .count()
        .saturating_sub(1);
    assert!(answered < 40, "a UDP answer with 40 addresses: {udp}");
    // The C library's resolver sees TC and asks again over TCP: the name works.
    let page = ingot.ok(&[
        "exec",
        &client,
        "/bin/busybox",
        "timeout",
        "10",
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "http://rr:8080/",
    ]);
    assert!(page.contains("version one"), "{page}");
    ingot.ok(&["stack", "rm", "many"]);
}

/// A chromedriver for the test, stopped (with every browser it started,
/// found by their profile directory) when dropped.
struct Browser {
    driver: Child,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        for (pid, _) in ingot_testsupport::processes_naming(&self.profile.to_string_lossy()) {
            // SAFETY: killing a browser process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

/// An HTTP request to the dashboard without a browser: (status, body).
fn web_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

/// The dashboard in headless Chromium through WebDriver: a token is needed
/// off loopback (401 without it), the service appears with its three
/// healthy replicas within 2 s of the deploy without a reload, the ledger
/// timeline shows the entry and its reason, an automatic rollback shows as
/// a failed change in the DORA panel, and the rollback button rolls back.
#[test]
fn the_dashboard_in_a_real_browser() {
    let test = "the_dashboard_in_a_real_browser";
    let (Some(chrome), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        skip(test, "Debian's chromium and chromium-driver are not installed");
        return;
    };
    let Some(ingot) = with_versions(test) else {
        return;
    };
    let (port, web) = (ingot_testsupport::free_port(), ingot_testsupport::free_port());
    let file = stack_file(&ingot, "v1", "hello:1", port, 3, "500ms");
    let bad = stack_file(&ingot, "bad", "hello:bad", port, 3, "500ms");
    let v2 = stack_file(&ingot, "v2", "hello:2", port, 3, "500ms");
    // Off loopback: every request needs the token.
    let daemon = Daemon::start_with(&ingot, &["--web", &format!("0.0.0.0:{web}")]);
    let token = std::fs::read_to_string(ingot.root().join("web.token")).unwrap();
    assert_eq!(token.trim().len(), 64);
    for path in ["/", "/events", "/fragments/services", "/ledger/1"] {
        let (code, _) = web_request(web, "GET", path, &[], "");
        assert_eq!(code, 401, "GET {path} without the token");
    }
    let bearer = format!("Bearer {}", token.trim());
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (code, _) = web_request(web, "POST", "/services/demo_web/rollback", &form, "csrf=x");
    assert_eq!(code, 401, "a change without the token");
    let with_token = [form[0], ("Authorization", bearer.as_str())];
    let (code, text) = web_request(web, "POST", "/services/demo_web/rollback", &with_token, "csrf=x");
    assert_eq!(code, 403, "a change without the CSRF token: {text}");
    let (code, text) = web_request(web, "GET", "/", &[("Authorization", bearer.as_str())], "");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("Nothing to measure yet") && text.contains("content-security-policy"),
        "{text}"
    );

    let driver_port = ingot_testsupport::free_port();
    let profile = ingot.path("chromium-profile");
    let browser = Browser {
        driver: Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
        profile: profile.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    rt.block_on(async {
        use fantoccini::{ClientBuilder, Locator};
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1100", format!("--user-data-dir={}", profile.display())],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{driver_port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver did not start a session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let base = format!("http://127.0.0.1:{web}");
        // Logging in through the form.
        c.goto(&format!("{base}/")).await.unwrap();
        c.find(Locator::Css("input#token")).await.unwrap().send_keys(token.trim()).await.unwrap();
        c.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
        let js = |c: &fantoccini::Client, script: &str| {
            let (c, script) = (c.clone(), script.to_string());
            async move { c.execute(&script, vec![]).await.unwrap() }
        };
        let wait = |what: &'static str, secs: u64, script: &'static str, want: Value| {
            let c = c.clone();
            async move {
                let t = Instant::now();
                loop {
                    let got = c.execute(script, vec![]).await.unwrap();
                    if got == want {
                        return t.elapsed();
                    }
                    if t.elapsed() > Duration::from_secs(secs) {
                        let page = c.execute("return location.href + '\\n' + document.body.innerText", vec![]).await;
                        panic!("{what}: {got} after {secs} s, wanted {want}; the page: {page:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        wait("the overview after logging in", 10, "return !!document.getElementById('services')", Value::Bool(true)).await;
        assert_eq!(
            js(&c, "return document.querySelector('#dora [data-dora]').dataset.dora").await,
            "empty",
            "an empty ledger has nothing to measure"
        );
        wait("the event stream", 10, "return document.getElementById('live').className", "note good".into()).await;
        js(&c, "window.ingotMarker = 42; return null").await;

        // A deploy: the page shows three healthy replicas within 2 s, live.
        let (code, r) = deploy(&ingot, &file, "first release, watched from the browser");
        assert_eq!(code, 0, "{r}");
        let took = wait(
            "three healthy replicas on the page",
            2,
            "var r = document.querySelector('tr[data-service=\"demo_web\"]'); return r ? r.dataset.healthy + '/' + r.querySelectorAll('.replica.healthy').length : null",
            "3/3".into(),
        )
        .await;
        eprintln!("{test}: the page showed 3 healthy replicas {took:?} after the deploy returned");
        assert_eq!(js(&c, "return window.ingotMarker").await, 42, "the page was reloaded");
        wait(
            "the entry and its reason on the timeline",
            2,
            "var e = document.querySelector('#ledger .entry'); return e ? e.dataset.kind + ' ' + e.dataset.outcome + ': ' + e.querySelector('.reason').textContent : null",
            "deploy succeeded: first release, watched from the browser".into(),
        )
        .await;
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(&screenshot, &png).unwrap();
        eprintln!("{test}: screenshot in {}", screenshot.display());

        // An automatic rollback is a failed change in the DORA panel.
        let (code, r) = deploy(&ingot, &bad, "a broken release");
        assert_eq!((code, r["outcome"].as_str()), (1, Some("rolled-back")), "{r}");
        wait(
            "the rolled-back entry on the timeline",
            3,
            "var e = document.querySelector('#ledger .entry'); return e ? e.dataset.outcome : null",
            "rolled-back".into(),
        )
        .await;
        wait(
            "the failure rate in the DORA panel",
            3,
            "var m = document.querySelector('#dora [data-metric=\"change_failure_rate\"]'); return !!m && parseFloat(m.dataset.value) > 0 && m.dataset.entries.split(',').indexOf(document.querySelector('#ledger .entry').dataset.seq) >= 0",
            Value::Bool(true),
        )
        .await;

        // The rollback button, for a user with the token.
        // (A reason is text, never markup.)
        let (code, r) = deploy(&ingot, &v2, "version two <script>alert(1)</script>");
        assert_eq!(code, 0, "{r}");
        wait(
            "version two on the timeline",
            3,
            "var e = document.querySelector('#ledger .entry'); return e ? e.dataset.outcome + ' ' + e.querySelector('.reason').textContent + ' ' + document.querySelectorAll('#ledger script').length : null",
            "succeeded version two <script>alert(1)</script> 0".into(),
        )
        .await;
        let row = "tr[data-service=\"demo_web\"] form.rollback";
        c.find(Locator::Css(&format!("{row} input[name=reason]")))
            .await
            .unwrap()
            .send_keys("back to one, from the browser")
            .await
            .unwrap();
        c.find(Locator::Css(&format!("{row} button"))).await.unwrap().click().await.unwrap();
        wait(
            "the rollback, sealed, on the timeline",
            60,
            "var e = document.querySelector('#ledger .entry'); return e ? [e.dataset.kind, e.dataset.outcome, e.querySelector('.reason').textContent, e.querySelector('.actor').textContent.slice(0, 4)].join(' ') : null",
            "rollback succeeded back to one, from the browser web:".into(),
        )
        .await;
        c.close().await.unwrap();
    });
    let v1 = ingot.ok(&["inspect", "-q", "hello:1"]).trim().to_string();
    let ps = replicas(&ingot);
    assert!(
        ps.len() == 3 && ps.iter().all(|p| p["image"] == v1.as_str() && p["health"] == "healthy"),
        "{ps:?}"
    );
    let mut c = None;
    assert_eq!(get(&mut c, port).unwrap(), "version one");
    // The entry and image pages, bad input to them.
    let auth = [("Authorization", bearer.as_str())];
    let (code, text) = web_request(web, "GET", "/ledger/1", &auth, "");
    assert!(
        code == 200 && text.contains("first release, watched from the browser") && text.contains("services.web.digest"),
        "{text}"
    );
    let (code, text) = web_request(web, "GET", "/ledger/3", &auth, "");
    assert!(
        code == 200 && text.contains("&lt;script&gt;") && !text.contains("<script>alert"),
        "{text}"
    );
    let (code, text) = web_request(web, "GET", &format!("/images/{v1}"), &auth, "");
    assert!(
        code == 200 && text.contains("Bill of materials") && text.contains("builder.host") && text.contains("unsigned"),
        "{text}"
    );
    assert_eq!(web_request(web, "GET", "/ledger/999", &auth, "").0, 404);
    assert_eq!(web_request(web, "GET", "/images/sha256:nothex", &auth, "").0, 400);
    assert_eq!(
        web_request(web, "GET", &format!("/images/sha256:{}", "0".repeat(64)), &auth, "").0,
        404
    );
    // A ledger changed behind the daemon's back: shown in red, no metrics.
    let db = ingot.root().join("ingot.db");
    let st = Command::new("python3")
        .args(["-c", &format!("import sqlite3; c = sqlite3.connect({:?}); c.execute(\"UPDATE ledger SET reason = 'forged' WHERE seq = 1\"); c.commit()", db.to_str().unwrap())])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, text) = web_request(web, "GET", "/", &auth, "");
    assert!(
        code == 200 && text.contains("The ledger does not verify") && text.contains("data-dora=\"refused\""),
        "{text}"
    );
    // Closing the session ended the browser (the drop kills what it left).
    wait_for("the browser to exit after its session closed", 10, || {
        ingot_testsupport::processes_naming(&profile.to_string_lossy()).is_empty()
    });
    drop(browser);
    drop(daemon);
}

/// GET a manifest from the registry at `host`: status and body.
fn registry_manifest(host: &str, repo: &str, reference: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_stack_bundle_ships_signed_and_deploys_by_digest_on_another_root() {
    let test = "a_stack_bundle_ships_signed_and_deploys_by_digest_on_another_root";
    let Some(src) = ingot_testsupport::busybox_root(test, BIN, "example/base:latest") else {
        return;
    };
    build(&src, "hello:1", "", Some("bundled version"));
    src.ok(&["sbom", "hello:1", "--attach"]);
    src.ok(&["key", "generate", "--out", src.path("k").to_str().unwrap()]);
    let key = src.path("k.key");
    let key = key.to_str().unwrap();
    src.ok(&["sign", "hello:1", "--key", key]);
    let registry_root = Ingot::new(BIN);
    let served = ingot_testsupport::Served::start(&registry_root, &[]);
    let host = served.host().to_string();
    let port = ingot_testsupport::free_port();
    let dir = src.path("stacks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("greeting.txt"), "bundled config\n").unwrap();
    let file = dir.join("shop.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  web:\n    image: hello:1\n    stop_grace_period: 1s\n    ports: [\"127.0.0.1:{port}:8080\"]\n    deploy:\n      replicas: 2\n    configs:\n      - source: greeting\n        target: /srv/www/greeting.txt\n    secrets:\n      - source: token\n        uid: \"65534\"\nconfigs:\n  greeting:\n    file: ./greeting.txt\nsecrets:\n  token:\n    environment: BUNDLE_TOKEN\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let dest = format!("{}/team/shop:1", host);

    // Pushed: no secret value is needed to bundle (secrets travel by name).
    let pushed = src.json(&["stack", "push", "-f", file, "--name", "shop", &dest, "--key", key]);
    let bundle = pushed["digest"].as_str().unwrap().to_string();
    let image = pushed["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(pushed["secrets"], serde_json::json!(["token"]), "{pushed}");
    let (status, m) = registry_manifest(&host, "team/shop", "1");
    assert_eq!(status, 200);
    assert_eq!(m["artifactType"], "application/vnd.ingot.stack.bundle.v1+json", "{m}");
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        [
            "application/vnd.docker.compose.file+yaml",
            "application/vnd.ingot.stack.pinned.v1+json"
        ]
    );
    assert_eq!(
        registry_manifest(&host, "team/shop", &image).0,
        200,
        "the image is in the bundle's repository"
    );
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    assert_eq!(
        registry_manifest(&host, "team/shop", &format!("sha256-{}.sig", hex(&bundle))).0,
        200,
        "the bundle's signature under cosign's tag"
    );
    assert_eq!(
        registry_manifest(&host, "team/shop", &format!("sha256-{}.sbom", hex(&bundle))).0,
        200,
        "the stack's SBOM under cosign's tag"
    );
    assert_eq!(
        registry_manifest(&host, "team/shop", &format!("sha256-{}.sbom", hex(&image))).0,
        200,
        "the image's own SBOM travelled with it"
    );
    // The same file bundles to the same digest.
    let again = src.ok(&[
        "-q",
        "stack",
        "bundle",
        "-f",
        file,
        "--name",
        "shop",
        "-t",
        "local/shop:1",
    ]);
    assert_eq!(again.trim(), bundle);

    // An unsigned bundle, and one naming an image the registry lacks.
    let unsigned = format!("{}/team/shop:unsigned", host);
    // (Another stack name: the same stack and file would be the signed bundle.)
    src.ok(&["stack", "push", "-f", file, "--name", "unsigned", &unsigned]);
    build(&src, "hello:2", "", Some("never pushed"));
    let lacking = dir.join("lacking.yml");
    std::fs::write(&lacking, "services:\n  web:\n    image: hello:2\n").unwrap();
    let lacking_ref = format!("{}/team/lacking:1", host);
    src.ok(&[
        "stack",
        "bundle",
        "-f",
        lacking.to_str().unwrap(),
        "--name",
        "lacking",
        "-t",
        &lacking_ref,
    ]);
    src.ok(&["push", &lacking_ref]); // the bundle alone, not its image

    // Another root: nothing but a daemon whose policy trusts the key.
    let dst = Ingot::new(BIN);
    dst.write("k.pub", &std::fs::read(src.path("k.pub")).unwrap());
    let policy = dst.write("policy.toml", b"trusted_keys = [\"k.pub\"]\n");
    let _daemon = Daemon::start_with(&dst, &["--policy", policy.to_str().unwrap()]);
    let err = dst.fails(&["stack", "pull", &lacking_ref]);
    assert!(
        err.contains("service web's image") && err.contains("cannot be pulled"),
        "{err}"
    );
    assert!(
        !dst.ok(&["images"]).contains("lacking"),
        "a bundle whose images cannot be pulled is not recorded"
    );
    let err = dst.fails(&["deploy", &format!("{}/team/shop@{image}", host)]);
    assert!(err.contains("is not a stack bundle"), "{err}");
    let by_digest = format!("{}/team/shop@{bundle}", host);
    let err = dst.fails(&["deploy", &by_digest]);
    assert!(
        err.contains("needs secret \"token\"") && err.contains("--secret id=token"),
        "a secret's value comes from the deploying host, as its operator says: {err}"
    );
    let err = dst.fails(&["deploy", &by_digest, "--secret", "id=other,env=HOME"]);
    assert!(err.contains("has no secret \"other\""), "{err}");
    let err = dst.fails(&["deploy", &by_digest, "--name", "other"]);
    assert!(err.contains("is stack \"shop\""), "{err}");
    let deploy = |root: &Ingot, reference: &str| {
        root.command()
            .env("BUNDLE_TOKEN", "t0ken")
            .args(["deploy", reference, "--reason", "from the bundle"])
            .args(["--secret", "id=token,env=BUNDLE_TOKEN"])
            .output()
            .unwrap()
    };
    let out = deploy(&dst, &unsigned);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("policy refused bundle") && err.contains("trusted_keys"),
        "{err}"
    );
    assert_eq!(dst.json(&["ledger"]).as_array().unwrap().len(), 0, "nothing recorded");

    let out = deploy(&dst, &by_digest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut conn = None;
    wait_for("the bundled page", 10, || {
        conn = None;
        get(&mut conn, port).is_ok_and(|t| t == "bundled version")
    });
    let ledger = dst.json(&["ledger"]);
    let entry = ledger.as_array().unwrap().last().unwrap().clone();
    let body: Value = serde_json::from_str(entry["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["bundle"], bundle.as_str(), "the ledger records the bundle");
    let pinned: ingot_deploy::pin::PinnedStack = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(
        ingot_deploy::bundle::application_digest(&pinned).unwrap().to_string(),
        pushed["application"].as_str().unwrap(),
        "the deployed stack is the bundle's application"
    );
    dst.ok(&["drift"]);
    let web = dst.json(&["service", "ps", "shop_web"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dst.ok(&["exec", &web, "cat", "/run/secrets/token"]), "t0ken");
    // Scaled, the stack is no longer the bundle's application: recorded without it.
    dst.ok(&["service", "scale", "shop_web=3"]);
    let scaled = dst.json(&["ledger"]);
    let scaled = scaled.as_array().unwrap().last().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string();
    let scaled: Value = serde_json::from_str(&scaled).unwrap();
    assert!(scaled.get("bundle").is_none(), "{scaled}");
    dst.ok(&["stack", "rm", "shop"]);

    // The source root deploys the same bundle from its store, by the name
    // it bundled it under: the same pinned stack, entry digest for entry digest.
    drop(_daemon);
    let _src_daemon = Daemon::start(&src);
    let out = deploy(&src, "local/shop:1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs = src.json(&["ledger"]);
    let theirs = theirs.as_array().unwrap().last().unwrap();
    assert_eq!(
        theirs["digest"], entry["digest"],
        "the same bundle, the same desired state"
    );
    src.ok(&["drift"]);
    src.ok(&["stack", "rm", "shop"]);
}

#[test]
fn a_port_marked_h2c_reaches_replicas_that_speak_only_http2() {
    let test = "a_port_marked_h2c_reaches_replicas_that_speak_only_http2";
    let Some(ingot) = ingot_testsupport::busybox_root(test, BIN, "example/base:latest") else {
        return;
    };
    // nghttpd from Debian's nghttp2-server: HTTP/2 only (h2c with prior
    // knowledge when --no-tls), as a gRPC server is.
    debian_image(&ingot, "nghttp2-server", "test/nghttpd-rootfs:1");
    build(
        &ingot,
        "h2only:1",
        "FROM test/nghttpd-rootfs:1\nCOPY site /srv/www\nCMD [\"nghttpd\", \"--no-tls\", \"-d\", \"/srv/www\", \"8080\"]\n",
        Some("spoken to in HTTP/2"),
    );
    let port = ingot_testsupport::free_port();
    let stack = |file: &str, app_protocol: &str| {
        let path = ingot.write(
            file,
            format!(
                "services:\n  web:\n    image: h2only:1\n    stop_grace_period: 1s\n    ports:\n      - {{target: 8080, published: {port}, host_ip: 127.0.0.1{app_protocol}}}\n    deploy:\n      replicas: 2\n"
            )
            .as_bytes(),
        );
        path.to_str().unwrap().to_string()
    };
    let _daemon = Daemon::start(&ingot);
    let h2c = stack("h2c.yml", ", app_protocol: h2c");
    ingot.ok(&["deploy", "-f", &h2c, "--name", "demo"]);
    // HTTP/1.1 clients, keep-alive and not, through the mesh to replicas
    // that speak nothing but HTTP/2.
    let mut conn = None;
    for _ in 0..20 {
        assert_eq!(get(&mut conn, port).unwrap(), "spoken to in HTTP/2");
        assert_eq!(get(&mut None, port).unwrap(), "spoken to in HTTP/2");
    }
    // The same replicas spoken to in HTTP/1.1 do not answer: the mesh says so.
    let http1 = stack("http1.yml", "");
    ingot.ok(&["deploy", "-f", &http1, "--name", "demo"]);
    let err = get(&mut None, port).expect_err("an HTTP/2-only replica answered HTTP/1.1");
    assert!(err.contains("502"), "{err}");
    // And back.
    ingot.ok(&["deploy", "-f", &h2c, "--name", "demo"]);
    assert_eq!(get(&mut None, port).unwrap(), "spoken to in HTTP/2");
    ingot.ok(&["stack", "rm", "demo"]);
}
