//! Containers end to end: the real binary, real namespaces, real cgroups,
//! a busybox image built from Debian's busybox-static. Needs root.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ingot_testsupport::{skip, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// A root with the example busybox image as `box:1`, or `None` (and a
/// printed reason) where containers cannot run.
fn setup(test: &str) -> Option<Ingot> {
    ingot_testsupport::busybox_root(test, BIN, "box:1")
}

/// `ingot run ARGS` and its exit code, stdout, stderr.
fn run(ingot: &Ingot, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["run"];
    a.extend(args);
    let out = ingot.run(&a);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(ingot: &Ingot, opts: &[&str], script: &str) -> String {
    let mut a = vec!["--rm"];
    a.extend(opts);
    a.extend(["box:1", "sh", "-c", script]);
    let (code, out, err) = run(ingot, &a);
    assert_eq!(code, 0, "script {script:?} failed: {err}");
    out
}

fn ps(ingot: &Ingot) -> Vec<Value> {
    ingot.json(&["ps", "-a"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn isolation_pid1_hostname_readonly_root_caps_seccomp() {
    let Some(ingot) = setup("isolation_pid1_hostname_readonly_root_caps_seccomp") else {
        return;
    };
    let out = sh(
        &ingot,
        &["--hostname", "box-one"],
        "echo pid=$$; hostname; touch /x 2>/dev/null && echo root-writable || echo root-readonly; \
         touch /tmp/ok && echo tmp-writable; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
         ls /sys/class/net | tr '\\n' ' '",
    );
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("box-one\n"), "{out}");
    assert!(out.contains("root-readonly") && out.contains("tmp-writable"), "{out}");
    // Docker's default capability set, nothing more.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("eth0") && out.contains("lo"), "bridge gives eth0: {out}");

    // The seccomp filter refuses what Docker's refuses (mount, unshare).
    let out = sh(&ingot, &[], "mkdir -p /tmp/m; mount -t tmpfs x /tmp/m 2>&1; echo rc=$?");
    assert!(
        out.contains("rc=1") && out.contains("permission denied"),
        "mount must fail: {out}"
    );

    // --read-write makes the root writable; the image is not changed.
    let out = sh(&ingot, &["--read-write"], "touch /x && echo wrote");
    assert!(out.contains("wrote"), "{out}");
    let out = sh(&ingot, &[], "ls /x 2>&1 || true");
    assert!(out.contains("No such file"), "a container's writes stay in it: {out}");

    // Only loopback without a network; the host's interfaces with host.
    let out = sh(&ingot, &["--network", "none"], "ls /sys/class/net | tr '\\n' ' '");
    assert_eq!(out.trim(), "lo", "--network none: {out}");
    let out = sh(&ingot, &["--network", "host"], "ls /sys/class/net");
    assert!(
        out.contains("ingot0"),
        "--network host sees the host's interfaces: {out}"
    );
}

#[test]
fn environment_workdir_user_mounts_and_limits_are_applied() {
    let Some(ingot) = setup("environment_workdir_user_mounts_and_limits_are_applied") else {
        return;
    };
    let env_file = ingot.write("env", b"# comment\nFROM_FILE=yes\nOVER=file\n");
    let data = ingot.path("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "host data").unwrap();
    let vol_ro = format!("{}:/data:ro", data.display());
    let out = sh(
        &ingot,
        &[
            "-e",
            "GREETING=hello world",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "OVER=flag",
            "-w",
            "/tmp/work",
            "-u",
            "nobody",
            "-v",
            &vol_ro,
            "--tmpfs",
            "/scratch",
        ],
        "echo \"g=$GREETING f=$FROM_FILE o=$OVER\"; pwd; id -u; id -g; cat /data/in.txt; echo; \
         touch /data/x 2>/dev/null || echo data-readonly; grep CapEff /proc/self/status",
    );
    assert!(out.contains("g=hello world f=yes o=flag"), "{out}");
    assert!(out.contains("/tmp/work\n65534\n65534\n"), "{out}");
    assert!(out.contains("host data") && out.contains("data-readonly"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "a non-root user has no capabilities: {out}"
    );

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let vol_rw = format!("{}:/data", data.display());
    sh(
        &ingot,
        &["-v", &vol_rw, "-u", "1234:5678"],
        "id -u > /data/who; id -g >> /data/who",
    );
    assert_eq!(std::fs::read_to_string(data.join("who")).unwrap(), "1234\n5678\n");
    sh(&ingot, &["--tmpfs", "/scratch"], "touch /scratch/f");

    // pids limit: the 9th process cannot be forked (ash then gives up).
    let spawn12 = "i=0; while [ $i -lt 12 ]; do sleep 5 & i=$((i+1)); done; echo started=$(ls -d /proc/[0-9]* | wc -l)";
    let (code, out, err) = run(&ingot, &["--rm", "--pids-limit", "8", "box:1", "sh", "-c", spawn12]);
    assert!(
        code != 0 && err.contains("fork"),
        "pids limit 8 let it run: {code} {out} {err}"
    );
    let (code, out, _) = run(&ingot, &["--rm", "box:1", "sh", "-c", spawn12]);
    assert!(code == 0 && out.contains("started=1"), "without a limit: {out}");
}

#[test]
fn exit_codes_follow_docker() {
    let Some(ingot) = setup("exit_codes_follow_docker") else {
        return;
    };
    assert_eq!(run(&ingot, &["--rm", "box:1", "sh", "-c", "exit 3"]).0, 3);
    let (code, _, err) = run(&ingot, &["--rm", "box:1", "no-such-command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("no-such-command"), "{err}");
    let (code, _, err) = run(&ingot, &["--rm", "box:1", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    let (code, _, err) = run(&ingot, &["--rm", "box:1", "/etc"]);
    assert_eq!(code, 126, "{err}");
    // ingot's own errors: 125 with a message naming the problem.
    let port = ingot_testsupport::free_port();
    let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let taken = format!("{port}:80");
    for (args, needle) in [
        (vec!["--rm", "ghost:1", "true"], "ghost"),
        (vec!["--rm", "-u", "nosuchuser", "box:1", "true"], "nosuchuser"),
        (vec!["--rm", "--memory", "lots", "box:1", "true"], "memory"),
        (vec!["--rm", "--cpus", "0", "box:1", "true"], "cpus"),
        (vec!["--rm", "-p", "99999:80", "box:1", "true"], "port"),
        (vec!["--rm", "-p", &taken, "box:1", "true"], "already in use"),
        (vec!["--rm", "-w", "../x", "box:1", "true"], "workdir"),
        (vec!["--rm", "--network", "weird", "box:1", "true"], "network"),
    ] {
        let (code, _, err) = run(&ingot, &args);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: error should name {needle:?}: {err}");
    }
    assert!(
        ps(&ingot).is_empty(),
        "--rm containers that failed leave nothing: {:?}",
        ps(&ingot)
    );
    // Without --rm a failed start is listed as exited, with its error.
    let (code, _, _) = run(&ingot, &["--name", "bad", "-p", &taken, "box:1", "true"]);
    assert_eq!(code, 125);
    let v = ingot.json(&["inspect", "bad"]);
    assert_eq!(v[0]["state"], "exited");
    assert!(v[0]["error"].as_str().unwrap().contains("already in use"), "{v}");
    assert!(v[0]["address"].is_null(), "address given back: {v}");
}

#[test]
fn memory_limit_oom_kills_and_status_says_so() {
    let Some(ingot) = setup("memory_limit_oom_kills_and_status_says_so") else {
        return;
    };
    let (code, _, _) = run(
        &ingot,
        &[
            "--name",
            "hog",
            "--memory",
            "8m",
            "box:1",
            "sh",
            "-c",
            "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(code, 137, "killed by SIGKILL");
    let v = ingot.json(&["inspect", "hog"]);
    assert_eq!(v[0]["oom_killed"], true, "{v}");
    assert!(v[0]["status"].as_str().unwrap().contains("OOMKilled"), "{v}");
    // Enough memory: the same work succeeds.
    let out = sh(
        &ingot,
        &["--memory", "256m"],
        "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo survived",
    );
    assert!(out.contains("survived"));
}

#[test]
fn detached_container_logs_stop_kill_rm() {
    let Some(ingot) = setup("detached_container_logs_stop_kill_rm") else {
        return;
    };
    let id = ingot.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "box:1",
        "sh",
        "-c",
        "echo started; echo oops >&2; trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.05; done",
    ]);
    assert_eq!(id.trim().len(), 64, "run -d prints the id: {id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ingot.run(&["logs", "svc"]);
        if String::from_utf8_lossy(&out.stdout).contains("started") {
            assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
            break;
        }
        assert!(Instant::now() < deadline, "no logs from the detached container");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another process sees it running; the monitor is its parent.
    let list = ps(&ingot);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "running");
    assert!(list[0]["address"].as_str().unwrap().starts_with("10.231."), "{list:?}");
    assert!(ingot.fails(&["rm", "svc"]).contains("running"));

    ingot.ok(&["stop", "-t", "5", "svc"]);
    let v = ingot.json(&["inspect", "svc"]);
    assert_eq!(
        (v[0]["state"].as_str(), v[0]["exit_code"].as_i64()),
        (Some("exited"), Some(0)),
        "{v}"
    );
    assert!(String::from_utf8_lossy(&ingot.run(&["logs", "svc"]).stdout).contains("got TERM"));
    ingot.ok(&["rm", "svc"]);

    // A process that ignores SIGTERM is killed after the grace period.
    ingot.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "box:1",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.05; done",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    ingot.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(t.elapsed() < Duration::from_secs(8), "stop took {:?}", t.elapsed());
    assert_eq!(ingot.json(&["inspect", "stubborn"])[0]["exit_code"], 137);

    // As with Docker, pid 1 only gets the signals it handles (and KILL).
    ingot.ok(&[
        "run",
        "-d",
        "--name",
        "k",
        "box:1",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while true; do sleep 0.05; done",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    ingot.ok(&["kill", "-s", "USR1", "k"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ingot.json(&["inspect", "k"])[0]["state"] == "running" {
        assert!(Instant::now() < deadline, "kill -s USR1 did not reach the trap");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ingot.json(&["inspect", "k"])[0]["exit_code"], 42);
    // Stopping a detached --rm container: it is gone afterwards, not an error.
    let id = ingot.ok(&["run", "-d", "--rm", "box:1", "sleep", "30"]);
    ingot.ok(&["stop", "-t", "1", id.trim()]);
    assert!(ingot.fails(&["inspect", id.trim()]).contains("not found"));
    ingot.ok(&["run", "-d", "--name", "f", "box:1", "sleep", "30"]);
    ingot.ok(&["rm", "-f", "f", "k", "stubborn"]);
    assert!(ps(&ingot).is_empty());
    assert!(ingot.fails(&["logs", "f"]).contains("not found"));
}

#[test]
fn published_port_answers_through_the_proxy() {
    let Some(ingot) = setup("published_port_answers_through_the_proxy") else {
        return;
    };
    let port = ingot_testsupport::free_port();
    let map = format!("{port}:8080");
    ingot.ok(&[
        "run", "-d", "--name", "web", "-p", &map, "box:1", "httpd", "-f", "-p", "8080", "-h", "/etc",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /passwd HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        });
        match got {
            Ok(b) if b.contains("200 OK") => break b,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("published port {port} never answered: {other:?}"),
        }
    };
    assert!(body.contains("root:x:0:0"), "{body}");
    // The same port for a second container is refused.
    let out = ingot.run(&["run", "--rm", "-p", &map, "box:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    ingot.ok(&["rm", "-f", "web"]);
    // Released with the container.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} still held after rm");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a container leaves on the host: mounts under the root, veths,
/// cgroups, container directories, address leases of this root.
fn leftovers(ingot: &Ingot, ids: &[String]) -> Vec<String> {
    let root = ingot.root().display().to_string();
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(|l| format!("mount {l}"))
        .collect();
    for id in ids {
        let veth = format!("/sys/class/net/ing{}", &id[..12]);
        if Path::new(&veth).exists() {
            found.push(veth);
        }
        for ctrl in ["memory", "cpu", "pids", "unified", ""] {
            let cg = Path::new("/sys/fs/cgroup").join(ctrl).join("ingot").join(id);
            if cg.exists() {
                found.push(cg.display().to_string());
            }
        }
        let dir = ingot.root().join("containers").join(id);
        if dir.exists() {
            found.push(dir.display().to_string());
        }
        // A --rm container's directory on a tmpfs /run (see the test below).
        for per_root in std::fs::read_dir("/run/ingot").into_iter().flatten().flatten() {
            if per_root.path().join(id).exists() {
                found.push(per_root.path().join(id).display().to_string());
            }
        }
        if let Ok(entries) = std::fs::read_dir("/run/ingot/ipam") {
            for e in entries.flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(id.as_str())) {
                    found.push(format!("lease {}", e.path().display()));
                }
            }
        }
    }
    found
}

#[test]
fn a_run_rm_container_with_a_read_only_root_keeps_its_directory_on_the_hosts_tmpfs() {
    let Some(ingot) = setup("a_run_rm_container_with_a_read_only_root_keeps_its_directory_on_the_hosts_tmpfs") else {
        return;
    };
    // /run is a tmpfs on a systemd host, not on every CI machine: the test
    // gives a private mount namespace one on /run/ingot.
    let root = ingot.root().display().to_string();
    let run = |opts: &str| format!("\"{BIN}\" --root \"{root}\" run --rm {opts} box:1 cat /proc/self/mountinfo");
    let script = format!(
        "mkdir -p /run/ingot && mount -t tmpfs -o mode=0700 test /run/ingot && \
         {} && echo ---read-write && {} && echo ---kept && \
         \"{BIN}\" --root \"{root}\" run --name kept --network none box:1 cat /proc/self/mountinfo && \
         echo ---detached && \"{BIN}\" --root \"{root}\" run -d --rm --network none box:1 sleep 300 && \
         echo ---killed && \"{BIN}\" --root \"{root}\" run --rm --network none box:1 sleep 300 & \
         monitor=$!; \
         for _ in $(seq 200); do ls -d /run/ingot/*-*/* >/dev/null 2>&1 && break; sleep 0.05; done; \
         ls -d /run/ingot/*-*/*; kill -9 $monitor; wait $monitor; \
         \"{BIN}\" --root \"{root}\" ps -a >/dev/null && \
         echo ---left && ls -A /run/ingot",
        run("--network none"),
        run("--read-write --network none"),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let (rm, rest) = stdout.split_once("---read-write\n").unwrap();
    let (rw, rest) = rest.split_once("---kept\n").unwrap();
    let (kept, rest) = rest.split_once("---detached\n").unwrap();
    let (detached, rest) = rest.split_once("---killed\n").unwrap();
    let (killed, left) = rest.split_once("---left\n").unwrap();
    // A foreground --rm container whose ingot was SIGKILLed: its directory
    // was on the tmpfs, and the next command's reconcile took it away.
    assert!(killed.trim().starts_with("/run/ingot/"), "{killed}");
    // The overlay of the container's root: its upper directory says where.
    let upper = |mountinfo: &str| {
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("no root mount in {mountinfo}"))
            .to_string();
        let opts = line.rsplit(' ').next().unwrap();
        opts.split(',')
            .find_map(|o| o.strip_prefix("upperdir="))
            .unwrap_or_else(|| panic!("no upperdir in {line}"))
            .to_string()
    };
    assert!(upper(rm).starts_with("/run/ingot/"), "run --rm: {}", upper(rm));
    // A writable root's upper holds the container's writes, of any size,
    // and a kept or detached container's directory its logs: on the disk.
    let on_disk = format!("{root}/containers/");
    assert!(upper(rw).starts_with(&on_disk), "--read-write: {}", upper(rw));
    assert!(upper(kept).starts_with(&on_disk), "kept: {}", upper(kept));
    // Nothing of the --rm containers, the killed one's included, is left
    // on the tmpfs (ipam's leases live beside).
    let left: Vec<&str> = left.lines().filter(|l| *l != "ipam").collect();
    assert!(left.is_empty(), "left in /run/ingot: {left:?}");
    let dirs: Vec<_> = std::fs::read_dir(ingot.root().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let detached = detached.trim();
    assert!(
        ingot.root().join("containers").join(detached).is_dir(),
        "run -d --rm: {detached} not on disk: {dirs:?}"
    );
    assert_eq!(
        dirs.len(),
        2,
        "the kept and the detached containers' directories: {dirs:?}"
    );
    ingot.ok(&["rm", "-f", detached]);
    ingot.ok(&["rm", "kept"]);
    assert!(ps(&ingot).is_empty());
}

#[test]
fn nothing_is_left_behind_after_exit_or_sigkill_of_ingot() {
    let Some(ingot) = setup("nothing_is_left_behind_after_exit_or_sigkill_of_ingot") else {
        return;
    };
    let mut ids = Vec::new();
    // Normal exits, foreground and detached, with a published port.
    sh(
        &ingot,
        &["-p", &format!("{}:80", ingot_testsupport::free_port())],
        "true",
    );
    ingot.ok(&["run", "-d", "--rm", "--memory", "64m", "box:1", "true"]);
    // SIGKILL the foreground ingot (the container's monitor) at different
    // moments of its start, 12 times.
    for i in 0..12u64 {
        let mut child = ingot
            .command()
            .args(["run", "--rm", "--memory", "64m", "--pids-limit", "50", "-p"])
            .arg(format!("{}:80", ingot_testsupport::free_port()))
            .args(["box:1", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(i * 15));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Detached monitors killed while their container runs.
    for _ in 0..3 {
        let id = ingot
            .ok(&["run", "-d", "--rm", "box:1", "sleep", "30"])
            .trim()
            .to_string();
        let monitor = ingot.json(&["inspect", &id])[0]["monitor_pid"].as_i64().unwrap();
        // SAFETY: signalling a process this test started (through ingot).
        unsafe { libc::kill(monitor as i32, libc::SIGKILL) };
        ids.push(id);
    }
    // Containers whose monitor was killed: known by their directories until
    // reclaimed.
    if let Ok(dirs) = std::fs::read_dir(ingot.root().join("containers")) {
        ids.extend(dirs.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
    }
    assert!(ids.len() >= 3, "some containers were started: {ids:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Any command reconciles: containers of dead monitors are reclaimed.
        let list = ps(&ingot);
        ids.extend(list.iter().filter_map(|c| c["id"].as_str().map(String::from)));
        let left = leftovers(&ingot, &ids);
        let layers_only = std::fs::read_dir(ingot.root().join("containers"))
            .map(|d| d.count())
            .unwrap_or(0);
        if list.is_empty() && left.is_empty() && layers_only == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:#?}\ncontainers: {list:?}\ncontainer dirs: {layers_only}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn runc_backend_gives_the_same_container() {
    let Some(ingot) = setup("runc_backend_gives_the_same_container") else {
        return;
    };
    if !ingot_testsupport::have("runc") {
        skip(
            "runc_backend_gives_the_same_container",
            "runc is not installed (Debian package runc)",
        );
        return;
    }
    let probe = "echo pid=$$; hostname; touch /x 2>/dev/null || echo root-readonly; id -u; pwd; echo $GREETING; \
                 grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; ls /sys/class/net | tr '\\n' ' '";
    let opts = ["--hostname", "same", "-e", "GREETING=hi", "-w", "/tmp", "-u", "nobody"];
    let mut outputs = Vec::new();
    for runtime in ["ingot", "runc"] {
        let mut o = vec!["--runtime", runtime];
        o.extend(opts);
        outputs.push(sh(&ingot, &o, probe));
    }
    assert_eq!(outputs[0], outputs[1], "ingot and runc containers differ");
    assert!(
        outputs[1].contains("pid=1\nsame\nroot-readonly\n65534\n/tmp\nhi\n"),
        "{}",
        outputs[1]
    );
    for (args, code) in [
        (vec!["sh", "-c", "exit 3"], 3),
        (vec!["no-such-command"], 127),
        (vec!["/etc/passwd"], 126),
    ] {
        let mut a = vec!["--rm", "--runtime", "runc", "box:1"];
        a.extend(args.iter().copied());
        assert_eq!(run(&ingot, &a).0, code, "{args:?}");
    }
    let port = ingot_testsupport::free_port();
    let map = format!("{port}:8080");
    ingot.ok(&[
        "run",
        "-d",
        "--runtime",
        "runc",
        "--name",
        "web",
        "-p",
        &map,
        "box:1",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/etc",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        });
        if got.as_ref().is_ok_and(|b| b.contains("200 OK")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runc container's port never answered: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ingot.ok(&["stop", "-t", "2", "web"]);
    let id = ingot.json(&["inspect", "web"])[0]["id"].as_str().unwrap().to_string();
    ingot.ok(&["rm", "web"]);
    // The kernel tears a network namespace (and its veth) down a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(&ingot, std::slice::from_ref(&id));
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind by the runc container: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exec_runs_inside_the_container_as_confined_as_its_first_process() {
    let Some(ingot) = setup("exec_runs_inside_the_container_as_confined_as_its_first_process") else {
        return;
    };
    let id = ingot
        .ok(&["run", "-d", "--name", "ex", "box:1", "sleep", "30"])
        .trim()
        .to_string();
    let mine = ingot.ok(&[
        "exec",
        "ex",
        "sh",
        "-c",
        "cat /proc/self/status; hostname; cat /proc/1/cmdline",
    ]);
    let first = ingot.ok(&["exec", "ex", "cat", "/proc/1/status"]);
    let field = |text: &str, k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    // Same capabilities as the first process, no_new_privs, a seccomp filter.
    assert_eq!(field(&mine, "CapEff:"), field(&first, "CapEff:"), "{mine}");
    assert_eq!(field(&mine, "CapBnd:"), field(&first, "CapBnd:"));
    assert_ne!(field(&mine, "CapEff:"), "000001ffffffffff", "not all capabilities");
    assert_eq!(field(&mine, "NoNewPrivs:"), "1");
    assert_eq!(field(&mine, "Seccomp:"), "2");
    // Its pid namespace (pid 1 is sleep) and hostname.
    assert!(mine.contains("sleep") && mine.contains(&id[..12]), "{mine}");
    // Exit codes as docker exec: the command's, 127 for a missing one.
    assert_eq!(ingot.run(&["exec", "ex", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(ingot.run(&["exec", "ex", "nosuchcmd"]).status.code(), Some(127));
    ingot.ok(&["stop", "-t", "1", "ex"]);
    assert!(ingot.fails(&["exec", "ex", "true"]).contains("not running"));
}

/// Runs `ip ARGS`, asserting it worked.
#[test]
fn bridged_containers_reach_each_other_and_the_outside_through_nat() {
    let test = "bridged_containers_reach_each_other_and_the_outside_through_nat";
    let Some(ingot) = setup(test) else {
        return;
    };
    // (busybox wget's own -T crashes this busybox: `timeout` bounds it.)
    let outside = ingot_testsupport::Outside::start("eg", &ingot.root(), "the outside");
    let ns = outside.ns().to_string();
    let fetch = |url: &str| {
        let wget = ingot_testsupport::bounded_wget(5, url);
        let mut args = vec!["run", "--rm", "box:1"];
        args.extend(wget.iter().map(String::as_str));
        ingot.run(&args)
    };
    let url = outside.url.clone();
    let mut out = None;
    for _ in 0..50 {
        let o = fetch(&url);
        if o.status.success() {
            out = Some(String::from_utf8_lossy(&o.stdout).to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(out.as_deref(), Some("the outside"), "egress through NAT");

    // Container to container over the bridge, where the host's FORWARD
    // policy is DROP (Docker's) and br_netfilter sends bridged packets there.
    ingot.ok(&[
        "run", "-d", "--name", "srv", "box:1", "httpd", "-f", "-p", "8080", "-h", "/etc",
    ]);
    let address = ingot.json(&["inspect", "srv"])[0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let page = format!("http://{address}:8080/hostname");
    let o = fetch(&page);
    assert!(
        o.status.success(),
        "a container cannot reach another: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    ingot.ok(&["rm", "-f", "srv"]);
    drop(outside);
    assert!(!ingot_testsupport::Outside::ns_exists(&ns));
}
