//! A real multi-node Docker Swarm on this one machine, for the Swarm
//! backend's tests: N `dockerd`s, each in a network namespace of its own,
//! joined as one swarm (node 1 the manager). Learnt from
//! `../shared/swarm-lab` (what it found is why this is shaped so):
//!
//! - the nodes' bridge lives in a namespace of its own (`<tag>-hub`), not
//!   the host's, where br_netfilter and the system engine's FORWARD DROP
//!   would drop node-to-node frames; the host reaches the nodes through one
//!   veth (`<tag>h`, `PREFIX.1`), so a registry the test serves there is
//!   what the nodes pull from;
//! - each dockerd runs under `nsenter --net` plus `unshare --mount --uts
//!   --propagation slave` with a fresh sysfs and the host's cgroup mounts
//!   bound back (`ip netns exec` would lose the cgroup v1 mounts), its own
//!   `--config-file` (else /etc/docker/daemon.json applies), its own cgroup
//!   parent, and the default bridge (host-mode ports need it);
//! - the nodes have no default route: nothing leaves the machine.
//!
//! Everything is named after the test process (`isw<pid>`), so labs of
//! concurrent tests do not meet. Dropping the lab stops every dockerd (by
//! pid), kills what is left in its cgroups, removes its namespaces, cgroups
//! and files, and fails the test if any process naming its directory
//! survives.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct SwarmLab {
    /// Short (docker socket paths must stay short): `/run/isw<pid>`.
    pub dir: PathBuf,
    tag: String,
    /// `10.79.N`: the host is `.1`, node i is `.1i`.
    pub prefix: String,
    nodes: usize,
    /// Whether dropping it asserts that nothing is left (not while the
    /// failure of its own start is being reported).
    check: bool,
}

fn sh(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    sh(Command::new("ip").args(args))
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        if Instant::now() > end {
            return Err(format!("{what}: not within {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Why a swarm cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("a swarm needs root (network namespaces, dockerd)".into());
    }
    for p in ["dockerd", "docker", "nsenter", "unshare", "ip"] {
        if !crate::have(p) {
            return Some(format!("{p} is not installed"));
        }
    }
    if !Path::new("/sys/fs/cgroup/pids").is_dir() {
        return Some("the lab expects cgroup v1 hierarchies (memory, pids)".into());
    }
    None
}

impl SwarmLab {
    /// Starts `nodes` dockerds and joins them: node 1 the manager, the rest
    /// workers. Panics (after cleaning up) when that fails.
    pub fn start(nodes: usize) -> SwarmLab {
        reap_stale();
        let mut lab = SwarmLab::named(std::process::id(), nodes);
        let t0 = Instant::now();
        if let Err(e) = lab.up() {
            let logs: String = (1..=nodes)
                .map(|n| {
                    let log = std::fs::read_to_string(lab.node_dir(n).join("dockerd.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    format!(
                        "--- node {n}:\n{}\n",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            lab.check = false;
            drop(lab);
            panic!("swarm lab: {e}\n{logs}");
        }
        eprintln!("swarm lab: {nodes} nodes up in {:.1} s", t0.elapsed().as_secs_f64());
        lab
    }

    fn named(pid: u32, nodes: usize) -> SwarmLab {
        SwarmLab {
            dir: PathBuf::from(format!("/run/isw{pid}")),
            tag: format!("isw{pid}"),
            prefix: format!("10.79.{}", pid % 250 + 1),
            nodes,
            check: true,
        }
    }

    fn node_dir(&self, n: usize) -> PathBuf {
        self.dir.join(format!("n{n}"))
    }

    fn netns(&self, n: usize) -> String {
        format!("{}-n{n}", self.tag)
    }

    /// The address the nodes reach the host at (serve a registry here).
    pub fn host_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    pub fn node_ip(&self, n: usize) -> String {
        format!("{}.1{n}", self.prefix)
    }

    /// `DOCKER_HOST` of node `n` (1 is the manager).
    pub fn docker_host(&self, n: usize) -> String {
        format!("unix://{}/docker.sock", self.node_dir(n).display())
    }

    /// `docker -H <node n> ARGS`.
    pub fn docker(&self, n: usize, args: &[&str]) -> Result<String, String> {
        sh(Command::new("docker").arg("-H").arg(self.docker_host(n)).args(args))
    }

    /// Node `n` goes down hard: its dockerd is killed (SIGKILL), and its
    /// containers with it; the rest of the swarm finds out by heartbeat.
    pub fn kill_node(&self, n: usize) {
        if let Some(pid) = std::fs::read_to_string(self.node_dir(n).join("docker.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            signal(pid, "KILL");
        }
        for cg in self.cgroups(n).iter().filter(|c| c.starts_with("/sys/fs/cgroup/pids")) {
            for p in cgroup_procs(cg) {
                signal(p, "KILL");
            }
        }
    }

    fn up(&self) -> Result<(), String> {
        if !ip(&["route", "show", &format!("{}.0/24", self.prefix)])?
            .trim()
            .is_empty()
        {
            return Err(format!("{}.0/24 is already routed on this host", self.prefix));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        self.network()?;
        for n in 1..=self.nodes {
            self.start_node(n)?;
        }
        for n in 1..=self.nodes {
            wait_for(&format!("dockerd of node {n}"), 60, || {
                self.docker(n, &["info"]).is_ok()
            })?;
        }
        let manager = self.node_ip(1);
        self.docker(
            1,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &manager,
                "--listen-addr",
                &format!("{manager}:2377"),
            ],
        )?;
        let token = self.docker(1, &["swarm", "join-token", "-q", "worker"])?;
        for n in 2..=self.nodes {
            let me = self.node_ip(n);
            self.docker(
                n,
                &[
                    "swarm",
                    "join",
                    "--token",
                    token.trim(),
                    "--advertise-addr",
                    &me,
                    "--listen-addr",
                    &format!("{me}:2377"),
                    &format!("{manager}:2377"),
                ],
            )?;
        }
        wait_for("every node Ready", 60, || {
            self.docker(1, &["node", "ls", "--format", "{{.Status}}"])
                .map(|s| s.lines().filter(|l| *l == "Ready").count() == self.nodes)
                .unwrap_or(false)
        })
    }

    fn network(&self) -> Result<(), String> {
        let hub = format!("{}-hub", self.tag);
        let host_if = format!("{}h", self.tag);
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "host", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{}/24", self.host_ip()), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        for n in 1..=self.nodes {
            let ns = self.netns(n);
            let port = format!("n{n}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.node_ip(n)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The lab's cgroups of node `n` in every v1 hierarchy (its daemon's
    /// `<tag>-nN.d`, and `<tag>-nN`, dockerd's cgroup parent).
    fn cgroups(&self, n: usize) -> Vec<PathBuf> {
        let names = [format!("{}-n{n}.d", self.tag), format!("{}-n{n}", self.tag)];
        let mut out = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            for name in &names {
                let p = h.path().join(name);
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
        out
    }

    fn start_node(&self, n: usize) -> Result<(), String> {
        let d = self.node_dir(n);
        for sub in ["data", "x", "cg"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
        }
        let config = serde_json::json!({
            "data-root": d.join("data"),
            "exec-root": d.join("x"),
            "pidfile": d.join("docker.pid"),
            "hosts": [self.docker_host(n)],
            "storage-driver": "overlay2",
            "cgroup-parent": format!("/{}-n{n}", self.tag),
            "insecure-registries": [format!("{}.0/24", self.prefix)],
            "log-driver": "json-file",
            "log-opts": {"max-size": "1m", "max-file": "1"},
        });
        std::fs::write(d.join("daemon.json"), config.to_string()).map_err(|e| e.to_string())?;
        // The daemon, its containerd and shims live in <tag>-nN.d: a complete
        // list of what to kill at the end.
        let mut join = String::new();
        for c in ["memory", "pids"] {
            let cg = format!("/sys/fs/cgroup/{c}/{}-n{n}.d", self.tag);
            std::fs::create_dir_all(&cg).map_err(|e| format!("{cg}: {e}"))?;
            join.push_str(&format!("echo $$ > {cg}/cgroup.procs; "));
        }
        let d = d.display();
        let inner = format!(
            "set -e; hostname {tag}-n{n}; mount --rbind /sys/fs/cgroup {d}/cg; umount -l /sys; \
             mount -t sysfs sysfs /sys; mount --rbind {d}/cg /sys/fs/cgroup; umount -l {d}/cg; \
             exec dockerd --config-file {d}/daemon.json",
            tag = self.tag
        );
        let script = format!(
            "{join}exec nsenter --net=/run/netns/{ns} unshare --mount --uts --propagation slave sh -c '{inner}' >>{d}/dockerd.log 2>&1 </dev/null",
            ns = self.netns(n)
        );
        sh(Command::new("setsid").args(["-f", "sh", "-c", &script]))?;
        Ok(())
    }

    fn down(&self) {
        let pid_of = |n: usize| -> Option<i32> {
            std::fs::read_to_string(self.node_dir(n).join("docker.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
        };
        // Gracefully first: each dockerd stops its containers.
        for n in 1..=self.nodes {
            if let Some(p) = pid_of(n) {
                signal(p, "TERM");
            }
        }
        for n in 1..=self.nodes {
            if let Some(p) = pid_of(n) {
                let _ = wait_for("dockerd to stop", 30, || !Path::new(&format!("/proc/{p}")).exists());
            }
        }
        // Then whatever is left in the lab's cgroups, by pid.
        for _ in 0..3 {
            for n in 1..=self.nodes {
                for cg in self
                    .cgroups(n)
                    .iter()
                    .filter(|c| c.to_string_lossy().contains("/pids/"))
                {
                    for procs in cgroup_procs(cg) {
                        signal(procs, "KILL");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for n in 1..=self.nodes {
            for cg in self.cgroups(n) {
                remove_cgroup(&cg);
            }
            let _ = ip(&["netns", "del", &self.netns(n)]);
        }
        let _ = ip(&["netns", "del", &format!("{}-hub", self.tag)]);
        let _ = ip(&["link", "del", &format!("{}h", self.tag)]);
        crate::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Tears down the labs of test processes that died without dropping
/// theirs (killed by a timeout): their dockerds would otherwise run on, and
/// hold the address range a later test with the same pid modulo 250 needs.
fn reap_stale() {
    let listed = ip(&["netns", "list"]).unwrap_or_default();
    for line in listed.lines() {
        let Some(pid) = line
            .split_whitespace()
            .next()
            .and_then(|n| n.strip_prefix("isw"))
            .and_then(|n| n.strip_suffix("-hub"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("swarm lab: tearing down the lab of dead test process {pid}");
            let mut stale = SwarmLab::named(pid, 9);
            stale.check = false;
            drop(stale);
        }
    }
}

/// Every pid in a cgroup and its children.
fn cgroup_procs(cg: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(cg).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(cgroup_procs(&e.path()));
        }
    }
    out
}

fn remove_cgroup(cg: &Path) {
    for e in std::fs::read_dir(cg).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroup(&e.path());
        }
    }
    let _ = std::fs::remove_dir(cg);
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

impl Drop for SwarmLab {
    fn drop(&mut self) {
        self.down();
        let needle = self.dir.to_string_lossy().into_owned();
        let left = crate::processes_naming(&needle);
        let mine = format!("{}-", self.tag);
        let netns_left = ip(&["netns", "list"])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&mine))
            .count();
        let cgroups_left: Vec<PathBuf> = (1..=self.nodes).flat_map(|n| self.cgroups(n)).collect();
        if self.check && !std::thread::panicking() {
            assert!(left.is_empty(), "swarm lab: processes left: {left:?}");
            assert_eq!(netns_left, 0, "swarm lab: network namespaces left");
            assert!(cgroups_left.is_empty(), "swarm lab: cgroups left: {cgroups_left:?}");
            assert!(!self.dir.exists(), "swarm lab: {} left", self.dir.display());
        }
    }
}
