//! Attacks on what SECURITY.md promises, each against the real binary and
//! real containers. Needs root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ingot_testsupport::{skip, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// A root with the example busybox image as `box:1`; `None` (and why) where
/// containers cannot run.
fn setup(test: &str) -> Option<Ingot> {
    ingot_testsupport::busybox_root(test, BIN, "box:1")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs `args` as the unprivileged user nobody; whether it succeeded.
fn as_nobody(args: &[&str]) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

fn sql(db: &Path, statement: &str) {
    let st = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sqlite3; c = sqlite3.connect({:?}); c.execute({statement:?}); c.commit()",
                db.to_str().unwrap()
            ),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "{statement}");
}

#[test]
fn files_at_rest_are_root_only_and_fsck_says_when_not() {
    let Some(ingot) = setup("files_at_rest_are_root_only_and_fsck_says_when_not") else {
        return;
    };
    // The layer cache gets filled by running a container.
    ingot.ok(&["run", "--rm", "box:1", "true"]);
    let root = ingot.root();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("ingot.db")), 0o600);
    assert_eq!(mode(&root.join("layers")), 0o700);
    assert_eq!(mode(&root.join("containers")), 0o700);
    // Only the root's own mode protects it: its parent is open to all.
    std::fs::set_permissions(ingot.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let layer = std::fs::read_dir(root.join("layers/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let busybox = layer.join("bin/busybox");
    assert!(busybox.exists());
    assert!(
        !as_nobody(&["stat", busybox.to_str().unwrap()]),
        "an unprivileged user reached an unpacked layer's binary"
    );
    assert!(
        as_nobody(&["stat", ingot.dir.path().to_str().unwrap()]),
        "the check itself works"
    );
    let out = ingot.run(&["fsck"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A root opened up is reported, naming the path and the fix.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = ingot.fails(&["fsck"]);
    assert!(err.contains("mode 0755") && err.contains("chmod 700"), "{err}");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
}

#[test]
fn kill_stop_and_rm_never_signal_a_process_that_reused_the_pid() {
    let Some(ingot) = setup("kill_stop_and_rm_never_signal_a_process_that_reused_the_pid") else {
        return;
    };
    ingot.ok(&["run", "-d", "--name", "victim", "box:1", "sleep", "300"]);
    let rec: Value = ingot.json(&["ps"])[0].clone();
    let real = rec["pid"].as_i64().unwrap();
    let id = rec["id"].as_str().unwrap().to_string();
    let monitor = ingot_testsupport::processes_naming(&format!("__monitor {id}"))[0].0;
    // An unrelated process, and the record pointing at it as if its pid had been reused.
    let mut bystander = Command::new("sleep").arg("300").spawn().unwrap();
    let db = ingot.root().join("ingot.db");
    sql(
        &db,
        &format!("UPDATE containers SET pid = {} WHERE name = 'victim'", bystander.id()),
    );
    let _ = ingot.run(&["kill", "victim"]);
    let _ = ingot.run(&["stop", "-t", "1", "victim"]);
    let _ = ingot.run(&["rm", "-f", "victim"]);
    std::thread::sleep(Duration::from_millis(300));
    let survived = alive(bystander.id());
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        survived,
        "kill/stop/rm -f signalled a process that is not the container's"
    );
    // The real container (its record is gone): its monitor takes it down with it.
    let _ = Command::new("kill").args(["-9", &monitor.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(real as u32) {
        assert!(Instant::now() < deadline, "the container outlived its monitor");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_probe_that_times_out_is_killed_with_everything_it_started() {
    let Some(ingot) = setup("a_probe_that_times_out_is_killed_with_everything_it_started") else {
        return;
    };
    ingot.ok(&["run", "-d", "--name", "svc", "box:1", "sleep", "300"]);
    let t = Instant::now();
    let out = ingot.run(&[
        "exec",
        "--timeout",
        "500ms",
        "svc",
        "sh",
        "-c",
        "sleep 1001 & sleep 1002",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(5), "the timeout was not enforced");
    std::thread::sleep(Duration::from_millis(200));
    for left in ["sleep 1001", "sleep 1002"] {
        assert!(
            ingot_testsupport::processes_naming(left).is_empty(),
            "{left} outlived the probe that started it"
        );
    }
    // Without a timeout, the command's status is passed through.
    let out = ingot.run(&["exec", "svc", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    ingot.ok(&["rm", "-f", "svc"]);
}

/// 200 slow-loris connections (one header byte every 2 s) against `addr`:
/// a normal request is answered meanwhile (`normal` says so), and every
/// slow connection is closed by the server within `limit`.
fn slow_loris(addr: std::net::SocketAddr, limit: Duration, normal: impl Fn() -> bool) {
    use std::io::{Read, Write};
    let mut slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let mut served = false;
    let mut open = slow.len();
    let mut byte = 0;
    while open > 0 && start.elapsed() < limit + Duration::from_secs(5) {
        for s in &mut slow {
            let _ = s.write_all(&[b"GET / HTTP/1.1\r\nX-Slow: "[byte % 25]]);
        }
        byte += 1;
        if !served {
            let t = Instant::now();
            served = normal();
            assert!(
                served,
                "a normal client was not served while slow clients held connections"
            );
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "the normal client waited {:?}",
                t.elapsed()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
        open = 0;
        for s in &mut slow {
            let mut b = [0u8; 64];
            let still = match s.read(&mut b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            };
            open += usize::from(still);
        }
    }
    assert_eq!(open, 0, "slow clients still connected after {:?}", start.elapsed());
    assert!(
        start.elapsed() <= limit + Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn slow_loris_clients_are_cut_off_and_do_not_starve_others() {
    let ingot = Ingot::new(BIN);
    let port = ingot_testsupport::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = ingot
        .command()
        .args(["serve", "--addr", &addr.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "ingot serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let normal = || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    };
    slow_loris(addr, Duration::from_secs(10), normal);
    let _ = server.kill();
    let _ = server.wait();
}

const PROBE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CLONE_NEWUSER 0x10000000
static void t(const char *name, long r) { printf("%s %ld %d\n", name, r, r < 0 ? errno : 0); }
int main(int argc, char **argv) {
    if (argc > 1) {
        /* An x32 number: refused (EPERM), or the process killed (SIGSYS). */
        t("x32_getpid", syscall(0x40000000 | 39));
        return 0;
    }
    t("io_uring_setup", syscall(425, 1, (void *)0));
    t("syslog", syscall(SYS_syslog, 10, 0, 0));
    t("personality_unsafe", syscall(SYS_personality, 0x0040000));
    t("personality_query", syscall(SYS_personality, 0xffffffffUL));
    t("socket_vsock", syscall(SYS_socket, 40, SOCK_STREAM, 0));
    t("socket_inet", syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    t("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    t("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    t("getpid", syscall(SYS_getpid));
    return 0;
}
"#;

/// A root with `box:1` and `source` built as a static binary `name` beside
/// it; `None` (and why) where that cannot be.
fn with_probe(test: &str, name: &str, source: &str) -> Option<(Ingot, std::path::PathBuf)> {
    let ingot = setup(test)?;
    if !ingot_testsupport::have("gcc") {
        skip(test, "gcc (to build the static probe) is missing");
        return None;
    }
    let src = ingot.write(&format!("{name}.c"), source.as_bytes());
    let probe = ingot.path(name);
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc -static failed (libc6-dev)");
    Some((ingot, probe))
}

#[test]
fn seccomp_allows_what_docker_allows_and_refuses_the_rest() {
    let test = "seccomp_allows_what_docker_allows_and_refuses_the_rest";
    let Some((ingot, probe)) = with_probe(test, "probe", PROBE) else {
        return;
    };
    let bind = format!("{}:/probe:ro", probe.display());
    let mut runtimes = vec!["ingot"];
    if ingot_testsupport::have("runc") {
        runtimes.push("runc");
    }
    for runtime in runtimes {
        let out = ingot.ok(&["run", "--rm", "--runtime", runtime, "-v", &bind, "box:1", "/probe"]);
        let results: std::collections::BTreeMap<&str, (i64, i32)> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?, (w.next()?.parse().ok()?, w.next()?.parse().ok()?)))
            })
            .collect();
        let refused = |name: &str| {
            let (r, errno) = results[name];
            assert!(
                r < 0 && (errno == libc::EPERM || errno == libc::ENOSYS),
                "{runtime}: {name} allowed: {out}"
            );
        };
        for name in [
            "io_uring_setup",
            "syslog",
            "personality_unsafe",
            "socket_vsock",
            "unshare_user",
            "keyctl",
        ] {
            refused(name);
        }
        let x32 = ingot.run(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "-v",
            &bind,
            "box:1",
            "/probe",
            "x32",
        ]);
        let said = String::from_utf8_lossy(&x32.stdout);
        let killed = x32.status.code() == Some(128 + libc::SIGSYS);
        let errno = said.split_whitespace().nth(2).and_then(|e| e.parse::<i32>().ok());
        assert!(
            killed || errno == Some(libc::EPERM),
            "{runtime}: an x32 syscall was not refused: {said}"
        );
        for name in ["personality_query", "socket_inet", "getpid"] {
            assert!(results[name].0 >= 0, "{runtime}: {name} refused: {out}");
        }
    }
}

/// Inside a container: waits for another process of the container to run
/// a binary it may open (`/proc/PID/exe`), keeps that handle until the
/// process is gone, then says whether the binary could be opened for
/// writing (it never writes). Output: `ready`, `caught PID`, then
/// `verdict ERRNO SEALED` (ERRNO 0: opened for writing).
const EXE_PROBE: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    pid_t self = getpid();
    printf("ready\n");
    fflush(stdout);
    time_t until = time(NULL) + 60;
    while (time(NULL) < until) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == self) continue;
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int fd = open(path, O_PATH | O_CLOEXEC);
            if (fd < 0) continue;
            printf("caught %d\n", pid);
            fflush(stdout);
            snprintf(path, sizeof path, "/proc/%d", pid);
            while (access(path, F_OK) == 0) usleep(1000);
            usleep(100000);
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            int w = open(path, O_WRONLY | O_CLOEXEC);
            int err = w < 0 ? errno : 0;
            int seals = w < 0 ? 0 : fcntl(w, F_GET_SEALS);
            printf("verdict %d %d\n", err, seals > 0 && (seals & F_SEAL_WRITE) ? 1 : 0);
            fflush(stdout);
            return 0;
        }
        if (d) closedir(d);
    }
    printf("nothing caught\n");
    return 1;
}
"#;

#[test]
fn the_host_binary_cannot_be_written_from_inside_a_container() {
    let test = "the_host_binary_cannot_be_written_from_inside_a_container";
    let Some((ingot, probe)) = with_probe(test, "exe_probe", EXE_PROBE) else {
        return;
    };
    // CVE-2019-5736: a command that is a script run by /proc/self/exe runs,
    // inside the container, the binary of whoever execs it.
    let evil = ingot.write("evil", b"#!/proc/self/exe\n");
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(BIN).unwrap();
    ingot.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "-v",
        &format!("{}:/probe:ro", probe.display()),
        "-v",
        &format!("{}:/evil:ro", evil.display()),
        "box:1",
        "/probe",
    ]);
    let logs = || ingot.ok(&["logs", "victim"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs().contains("ready") {
        assert!(Instant::now() < deadline, "the probe did not start: {}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // `ingot exec victim /evil`: the kernel runs /proc/self/exe, that is the
    // `ingot exec` binary, inside the container, where the probe opens it.
    let mut tries = 0;
    while !logs().contains("caught") {
        tries += 1;
        assert!(tries <= 20, "the probe never saw the exec'd binary: {}", logs());
        let out = ingot.run(&["exec", "victim", "/evil"]);
        assert!(
            !out.status.success(),
            "ingot ran as a script inside the container succeeded"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let verdict = loop {
        let l = logs();
        if let Some(v) = l.lines().find_map(|l| l.strip_prefix("verdict ")) {
            break v.to_string();
        }
        assert!(Instant::now() < deadline, "no verdict: {l}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut words = verdict.split_whitespace().map(|w| w.parse::<i32>().unwrap());
    let (errno, sealed) = (words.next().unwrap(), words.next().unwrap());
    assert!(
        errno == libc::EROFS || (errno == 0 && sealed == 1),
        "the binary ingot exec ran was reachable for writing from the container \
         (errno {errno}; ETXTBSY only lasts while some ingot runs it)"
    );
    ingot.ok(&["rm", "-f", "victim"]);
    assert!(std::fs::read(BIN).unwrap() == before, "the host's ingot binary changed");
}
