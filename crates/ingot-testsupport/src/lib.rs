//! Helpers shared by ingot's tests. Nothing here is used by the product.

pub mod swarm;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes tar archives header by header, without the validation that
/// `tar::Builder` applies, so tests can produce hostile archives.
#[derive(Default)]
pub struct RawTar {
    buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }

    /// One entry with a raw name (at most 100 bytes), type and content.
    pub fn entry(&mut self, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) -> &mut Self {
        self.entry_sized(name, kind, data, link, data.len() as u64)
    }

    /// Like [`RawTar::entry`] but with a declared size that may lie.
    pub fn entry_sized(&mut self, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8], size: u64) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), tar::EntryType::Regular, data, b"")
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), tar::EntryType::Directory, b"", b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), tar::EntryType::Symlink, b"", target.as_bytes())
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), tar::EntryType::Link, b"", target.as_bytes())
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    /// The archive without the end marker and cut `cut` bytes short.
    pub fn truncated(&mut self, cut: usize) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.truncate(out.len().saturating_sub(cut));
        out
    }
}

/// A small deterministic rootfs tarball: a few directories and files and
/// `size` bytes of pseudo-random data in `data/blob` (seeded by `seed`).
pub fn sample_rootfs(size: usize, seed: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let add_dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    };
    for d in ["bin", "etc", "data", "tmp"] {
        add_dir(&mut b, d);
    }
    let file = |b: &mut tar::Builder<Vec<u8>>, p: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, p, data).unwrap();
    };
    file(&mut b, "etc/hostname", b"ingot\n", 0o644);
    file(&mut b, "etc/motd", format!("seed {seed}\n").as_bytes(), 0o644);
    file(&mut b, "data/blob", &pseudo_random(size, seed), 0o600);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, "bin/sh", "/bin/busybox").unwrap();
    b.into_inner().unwrap()
}

/// xorshift64* bytes: fast, deterministic, incompressible enough.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A temporary ingot root and a way to run the real binary against it.
pub struct Ingot {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Ingot {
    /// `bin` is `env!("CARGO_BIN_EXE_ingot")` of the calling test.
    pub fn new(bin: &str) -> Self {
        Ingot {
            bin: PathBuf::from(bin),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path for scratch files next to the root.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(data).expect("write");
        p
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root());
        c.env_remove("INGOT_ROOT").env_remove("RUST_LOG");
        c
    }

    /// Runs `ingot ARGS` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("spawn ingot")
    }

    /// Runs `ingot ARGS`, panics with stderr unless it succeeded, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ingot {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs `ingot ARGS`, panics unless it failed, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "ingot {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }

    /// `ingot ARGS --format json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }
}

impl Drop for Ingot {
    /// Every container of this root is removed (a deploy test's replicas
    /// outlive its daemon by design), then its stacks' networks (bridges
    /// and firewall rules), and nothing of the root may be left:
    /// no process whose command line names it, no mount under the test's
    /// directory. What is left is killed or unmounted, and the test fails.
    fn drop(&mut self) {
        let root = self.root();
        if !root.join("ingot.db").exists() {
            return;
        }
        if let Ok(out) = self.command().args(["ps", "-a", "--format", "json"]).output() {
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for c in list.as_array().into_iter().flatten() {
                if let Some(id) = c["id"].as_str() {
                    let _ = self.command().args(["rm", "-f", id]).output();
                }
            }
        }
        // The stacks' networks: their bridges and firewall rules are the host's.
        let networks = |ingot: &Ingot| -> Vec<String> {
            ingot
                .command()
                .args(["-q", "network", "ls"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect())
                .unwrap_or_default()
        };
        for name in networks(self) {
            let _ = self.command().args(["network", "rm", &name]).output();
        }
        let nets_left = networks(self);
        let needle = root.to_string_lossy().into_owned();
        let mut left = Vec::new();
        for _ in 0..50 {
            left = processes_naming(&needle);
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for (pid, _) in &left {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mounts = unmount_under(self.dir.path());
        if !std::thread::panicking() {
            assert!(left.is_empty(), "processes of {needle} were left running: {left:?}");
            assert!(mounts.is_empty(), "mounts under {dir} were left: {mounts:?}");
            assert!(nets_left.is_empty(), "networks of {needle} were left: {nets_left:?}");
        }
    }
}

/// Lazily unmounts every mount under `dir` (deepest first); returns them.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(String::from)
        .collect();
    for m in mounts.iter().rev() {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    mounts
}

/// (pid, command line) of every process whose command line contains `needle`.
pub fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd.trim().to_string()));
        }
    }
    out
}

/// Whether a program is on PATH; tests that need it print why they skip.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Prints a visible skip notice for a test whose peer is absent.
///
/// With `INGOT_REQUIRE_ALL=1` (set by `scripts/test`, so in CI) a test that
/// cannot run fails instead: nothing passes by not running.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("INGOT_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test} cannot run here ({why}) and INGOT_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("SKIP {test}: {why}");
}

/// Path of a file under the workspace root (for bundled examples).
pub fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A temporary root holding the bundled busybox root filesystem
/// (`examples/rootfs/build.sh`) imported as `tag`, for tests that run
/// containers; `None` (and why, or a failure under `INGOT_REQUIRE_ALL=1`)
/// where they cannot run: not root, or no /bin/busybox.
pub fn busybox_root(test: &str, bin: &str, tag: &str) -> Option<Ingot> {
    if !is_root() {
        skip(test, "containers need root (namespaces, mounts, cgroups)");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        skip(test, "/bin/busybox is missing (Debian package busybox-static)");
        return None;
    }
    let ingot = Ingot::new(bin);
    let tar = ingot.path("rootfs.tar");
    let st = Command::new(workspace_file("examples/rootfs/build.sh"))
        .arg(&tar)
        .status()
        .expect("examples/rootfs/build.sh");
    assert!(st.success(), "examples/rootfs/build.sh failed");
    ingot.ok(&["import", "-q", tar.to_str().expect("utf-8 path"), tag]);
    Some(ingot)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback port free for UDP on every address (what a UDP listener
/// needs: a client socket bound to 0.0.0.0 holds its port on loopback
/// too), and for TCP.
pub fn free_udp_port() -> u16 {
    for _ in 0..100 {
        let Ok(port) = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
        else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on loopback")
}

/// "The outside" for egress tests: a web server in a network namespace of
/// the test's own, reachable from the host over a veth pair, with no route
/// back to any container subnet (its answers come back only if ingot
/// masquerades). Serves `page` at `/` on port 8000; everything goes when
/// dropped.
pub struct Outside {
    ns: String,
    host_if: String,
    server: Option<std::process::Child>,
    /// `http://ADDRESS:8000/`.
    pub url: String,
}

impl Outside {
    /// `tag` keeps the names of concurrent tests apart (a few letters).
    pub fn start(tag: &str, dir: &Path, page: &str) -> Outside {
        let n = std::process::id() % 250 + 1;
        let salt = tag.bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b.into())) % 60;
        let (ns, host_if) = (format!("ingot-{tag}-{n}"), format!("i{tag}{n}h"));
        let ip = |args: &[&str]| {
            let st = std::process::Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {}", args.join(" "));
        };
        let (host_ip, server_ip) = (
            format!("10.254.{n}.{}", salt * 4 + 1),
            format!("10.254.{n}.{}", salt * 4 + 2),
        );
        ip(&["netns", "add", &ns]);
        let mut out = Outside {
            ns: ns.clone(),
            host_if: host_if.clone(),
            server: None,
            url: format!("http://{server_ip}:8000/"),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{server_ip}/30"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let site = dir.join(format!("outside-{tag}"));
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("index.html"), page).unwrap();
        out.server = Some(
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "/bin/busybox", "httpd", "-f", "-p", "8000", "-h"])
                .arg(&site)
                .spawn()
                .unwrap(),
        );
        out
    }

    /// Whether its network namespace is still there.
    pub fn ns_exists(ns: &str) -> bool {
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(ns))
            })
            .unwrap_or(false)
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Some(c) = self.server.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

/// `busybox wget -q -O - URL` bounded by `busybox timeout SECS` (this
/// busybox's own `wget -T` crashes), as argv for a container.
pub fn bounded_wget(secs: u32, url: &str) -> Vec<String> {
    let mut argv: Vec<String> = [
        "/bin/busybox",
        "timeout",
        &secs.to_string(),
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(url.to_string());
    argv
}

/// `ingot serve` on a free loopback port of `ingot`'s root (with `extra`
/// arguments), once it said where it listens; killed on drop.
pub struct Served {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT` (or https, as the server said).
    pub base: String,
}

impl Served {
    pub fn start(ingot: &Ingot, extra: &[&str]) -> Served {
        use std::io::BufRead;
        let mut child = ingot
            .command()
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ingot serve");
        let mut line = String::new();
        let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        err.read_line(&mut line).expect("ingot serve's first line");
        // Keep reading, so the server never writes to a closed pipe.
        std::thread::spawn(move || {
            let mut rest = String::new();
            while err.read_line(&mut rest).is_ok_and(|n| n > 0) {
                eprint!("[ingot serve] {rest}");
                rest.clear();
            }
        });
        let (scheme, rest) = line
            .split_once("://")
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let scheme = scheme.rsplit(' ').next().unwrap_or("http");
        let addr = rest.split('/').next().unwrap_or_default().trim();
        Served {
            child,
            base: format!("{scheme}://{addr}"),
        }
    }

    /// `127.0.0.1:PORT`, as image references name it.
    pub fn host(&self) -> &str {
        self.base.split("://").nth(1).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
