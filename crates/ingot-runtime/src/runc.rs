//! The `runc` backend (`ingot run --runtime runc`): the same container spec
//! rendered as an OCI runtime bundle and run by runc, for compatibility
//! checks against the reference runtime.
//!
//! The monitor joins a mount namespace of its own and mounts the overlay
//! root there, so the mount dies with the monitor and the container, never
//! on the host. Bridged and `none` containers get their network namespace
//! from a small holder process that the monitor forks (and that dies with
//! it), wired exactly like the native backend's, and handed to runc by path.
//! runc creates and removes its own cgroup (`/ingot-runc/<id>`).

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ingot_store::{ContainerRecord, ContainerState, Store};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use serde_json::{json, Value};

use crate::error::{Result, RuntimeError};
use crate::monitor::{self, Exit, Output};
use crate::net::{bridge, NetworkMode};
use crate::rootfs::{self, MASKED_PATHS, READONLY_PATHS};
use crate::security::{self, ALLOWED, DEFAULT_CAPS, NS_FLAGS, PERSONALITIES, REFUSED_FAMILY};
use crate::spec::ContainerSpec;
use crate::user::{self, Identity};
use crate::{container_dir, now};

/// The runc binary (`INGOT_RUNC` overrides).
fn runc_bin() -> String {
    std::env::var("INGOT_RUNC").unwrap_or_else(|_| "runc".into())
}

pub(crate) fn start_and_wait(
    store: &Store,
    mut rec: ContainerRecord,
    spec: &ContainerSpec,
    output: Output,
    started: &mut dyn FnMut(Result<i32, &RuntimeError>),
) -> Result<Exit> {
    let dir = container_dir(store.root(), &rec.id);
    let id = rec.id.clone();
    let mut holder: Option<Pid> = None;
    let fail = |e: RuntimeError, started: &mut dyn FnMut(Result<i32, &RuntimeError>), holder: Option<Pid>| {
        started(Err(&e));
        monitor::release(store, &id);
        if let Some(h) = holder {
            let _ = kill(h, Signal::SIGKILL);
            let _ = waitpid(h, None);
        }
        e
    };
    let prepared = (|| -> Result<_> {
        if !spec.files.is_empty() {
            return Err(RuntimeError::Setup(
                "secrets and configs with an owner or mode are mounted by ingot's own runtime only, not runc".into(),
            ));
        }
        let lowers = monitor::lower_dirs(store, spec)?;
        let logs = monitor::open_logs(&dir, output)?;
        let network = monitor::prepare_network(store, &mut rec, spec, &dir)?;
        if spec.network != NetworkMode::Host {
            let pid = netns_holder()?;
            holder = Some(pid);
            match &network {
                Some((_, leases)) => bridge::attach(&rec.id, pid.as_raw(), &monitor::links(spec, leases))?,
                None => bridge::loopback(pid.as_raw())?,
            }
        }
        // Our own mount namespace: the overlay never shows on the host.
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| RuntimeError::Setup(format!("unshare mount namespace: {e}")))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::Setup(format!("make / a slave mount: {e}")))?;
        let merged = rootfs::mount_overlay(&dir, &lowers).map_err(RuntimeError::Setup)?;
        rootfs::mkdirs(&merged, &spec.cwd).map_err(RuntimeError::Setup)?;
        for b in spec.binds.iter().filter(|b| b.copy_up) {
            let at = rootfs::secure_join(&merged, &b.target).map_err(RuntimeError::Setup)?;
            rootfs::copy_up(&at, &b.source).map_err(RuntimeError::Setup)?;
        }
        let read = |p: &str| {
            rootfs::secure_join(&merged, p)
                .ok()
                .and_then(|f| fs::read_to_string(f).ok())
        };
        let who = user::resolve(
            &spec.user,
            read("/etc/passwd").as_deref(),
            read("/etc/group").as_deref(),
        )
        .map_err(RuntimeError::Setup)?;
        let bundle = dir.join("bundle");
        fs::create_dir_all(&bundle).map_err(RuntimeError::io(&bundle))?;
        let netns = holder.map(|p| format!("/proc/{}/ns/net", p.as_raw()));
        let config = oci_config(spec, &dir, &who, netns.as_deref());
        let text = serde_json::to_vec_pretty(&config).map_err(|e| RuntimeError::Setup(e.to_string()))?;
        fs::write(bundle.join("config.json"), text).map_err(RuntimeError::io(bundle.join("config.json")))?;
        Ok((logs, network, bundle))
    })();
    let (logs, network, bundle) = match prepared {
        Ok(p) => p,
        Err(e) => return Err(fail(e, started, holder)),
    };

    let state_dir = store.root().join("runc");
    let pid_file = dir.join("runc.pid");
    let log_file = dir.join("runc.log");
    let _ = fs::remove_file(&pid_file);
    let _ = fs::remove_file(&log_file);
    let mut cmd = Command::new(runc_bin());
    cmd.arg("--root")
        .arg(&state_dir)
        .arg("--log")
        .arg(&log_file)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(&bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&rec.id);
    // runc's own complaints go to its log; the container's output to ours.
    match logs {
        Some((out, err)) => cmd.stdin(Stdio::null()).stdout(out).stderr(err),
        None => cmd.stderr(Stdio::inherit()),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let e = RuntimeError::Setup(format!("cannot run {}: {e}", runc_bin()));
            return Err(fail(e, started, holder));
        }
    };
    // Started once runc has written the container's pid; an early exit of
    // runc instead is a failure to start, explained in its log.
    let pid = loop {
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            break pid;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let e = start_error(&log_file, status.code());
            rec.state = ContainerState::Exited;
            rec.exit_code = Some(e.exit_code().into());
            rec.error = Some(e.to_string());
            rec.finished_at = Some(now());
            let _ = store.update_container(&rec);
            return Err(fail(e, started, holder));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    rec.state = ContainerState::Running;
    rec.pid = Some(pid.into());
    rec.monitor_pid = Some(std::process::id().into());
    crate::record_process(store.root(), &rec.id, rec.pid.unwrap_or(0));
    rec.started_at = Some(now());
    store.update_container(&rec)?;
    let leases = network.map(|(published, leases)| {
        published.serve(leases[0].address.into());
        leases
    });
    started(Ok(pid));

    let code = match child.wait() {
        Ok(s) => s.code().unwrap_or(255),
        Err(_) => 255,
    };
    if let Some(h) = holder {
        let _ = kill(h, Signal::SIGKILL);
        let _ = waitpid(h, None);
    }
    rec.state = ContainerState::Exited;
    rec.exit_code = Some(code.into());
    rec.finished_at = Some(now());
    store.update_container(&rec)?;
    monitor::release(store, &rec.id);
    drop(leases);
    if spec.auto_remove {
        crate::remove_files(store, &rec.id);
        store.delete_container(&rec.id)?;
    }
    Ok(Exit {
        code,
        oom_killed: false,
    })
}

/// Maps runc's reason for not starting to docker's exit codes.
fn start_error(log: &Path, code: Option<i32>) -> RuntimeError {
    let text = fs::read_to_string(log).unwrap_or_default();
    // runc logs JSON lines; the last error message is the reason.
    let msg = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .next_back()
        .unwrap_or_else(|| format!("runc exited with {code:?} before starting the container"));
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        RuntimeError::NotFound(msg)
    } else if msg.contains("permission denied") || msg.contains("is a directory") {
        RuntimeError::CannotExecute(msg)
    } else {
        RuntimeError::Setup(format!("runc: {msg}"))
    }
}

/// Forks a process that only holds a new network namespace until killed
/// (or until we die: PDEATHSIG).
fn netns_holder() -> Result<Pid> {
    let (r, w) = monitor::pipe()?;
    // SAFETY: the child only makes async-signal-safe calls and never returns.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let ok = libc::unshare(libc::CLONE_NEWNET) == 0;
            if ok {
                libc::write(w.as_raw_fd(), b"n".as_ptr().cast(), 1);
            }
            libc::close(w.as_raw_fd());
            if !ok {
                libc::_exit(1);
            }
            loop {
                libc::pause();
            }
        },
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let mut b = [0u8; 1];
            if File::from(r).read(&mut b).ok() != Some(1) {
                let _ = waitpid(child, None);
                return Err(RuntimeError::Setup("cannot create a network namespace".into()));
            }
            Ok(child)
        }
        Err(e) => Err(RuntimeError::Setup(format!("fork: {e}"))),
    }
}

/// libseccomp's names of this machine's architectures.
fn seccomp_arches() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        // x32 numbers are refused: no x32 in the filter.
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        other => vec![match other {
            "riscv64" => "SCMP_ARCH_RISCV64",
            "s390x" => "SCMP_ARCH_S390X",
            _ => "SCMP_ARCH_NATIVE",
        }],
    }
}

/// The OCI runtime config for `spec`.
pub fn oci_config(spec: &ContainerSpec, dir: &Path, who: &Identity, netns: Option<&str>) -> Value {
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", if who.home.is_empty() { "/" } else { &who.home }));
    }
    let caps: Vec<String> = if who.uid == 0 {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    } else {
        Vec::new()
    };
    let bounding: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}),
    ];
    for name in ["hostname", "hosts", "resolv.conf"] {
        mounts.push(json!({"destination": format!("/etc/{name}"), "type": "bind",
                           "source": dir.join(name), "options": ["rbind", "rw"]}));
    }
    for b in &spec.binds {
        let mode = if b.read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": b.target, "type": "bind", "source": b.source,
                           "options": ["rbind", mode]}));
    }
    for t in &spec.tmpfs {
        mounts.push(json!({"destination": t, "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=1777"]}));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
        json!({"type": "cgroup"}),
    ];
    if let Some(path) = netns {
        namespaces.push(json!({"type": "network", "path": path}));
    }
    let mut resources = json!({});
    if let Some(m) = spec.memory {
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(c) = spec.cpus {
        let period = crate::cgroups::CPU_PERIOD_US;
        resources["cpu"] = json!({"quota": ((c * period as f64) as i64).max(1000), "period": period});
    }
    if let Some(p) = spec.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    // The same allow list as the native backend: default EPERM.
    let ns_mask = NS_FLAGS.iter().fold(0, |m, f| m | f);
    // (The args of one entry must all hold: one entry per allowed persona.)
    let mut syscalls = vec![
        json!({"names": ALLOWED.iter().map(|(n, _)| security::syscall_name(n)).filter(|n| *n != "clone3").collect::<Vec<_>>(),
               "action": "SCMP_ACT_ALLOW"}),
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": ns_mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}),
        json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": REFUSED_FAMILY, "op": "SCMP_CMP_NE"}]}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
    ];
    for p in PERSONALITIES {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                             "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": who.uid, "gid": who.gid, "additionalGids": who.groups},
            "args": spec.args,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": bounding, "effective": caps, "permitted": caps, "inheritable": caps,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": dir.join("merged"), "readonly": spec.read_only},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("/ingot-runc/{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")),
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": libc::EPERM,
                "architectures": seccomp_arches(),
                "syscalls": syscalls,
            },
        },
    })
}
