//! `exec`: a process inside a running container, confined as its first
//! process is (as `docker exec`): the container's namespaces (ipc, uts,
//! net, pid, mount) and root, its cgroup, its user, Docker's capabilities,
//! no_new_privs and the same seccomp filter. Used for health checks.
//!
//! The joining process is not dumpable (nothing in the container can
//! ptrace it or read its memory through /proc while it holds host
//! descriptors); the command runs in a process group of its own and dies
//! with it (PDEATHSIG); with a timeout, the whole group is killed when it
//! expires, so a hung probe leaves nothing behind.

use std::fs::File;

use ingot_store::{ContainerState, Store};
use nix::sched::{setns, CloneFlags};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, setpgid, ForkResult, Pid};

use crate::{spec_of, Result, RuntimeError};

/// Runs `args` in container `key` and returns its exit code (125 if it
/// could not be started there, 126/127 as Docker; 137 when `timeout`
/// expired and its process group was killed). The calling process must be
/// single-threaded (the `ingot exec` command is): it enters the
/// container's namespaces itself.
pub fn exec(store: &Store, key: &str, args: &[String], timeout: Option<Duration>) -> Result<i32> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| RuntimeError::Setup(format!("prctl: {e}")))?;
    let rec = store.container(key)?;
    let pid = match (rec.state, rec.pid) {
        (ContainerState::Running, Some(p)) if crate::alive(rec.pid) => p,
        _ => return Err(RuntimeError::NotRunning(rec.name)),
    };
    let spec = spec_of(&rec)?;
    let seccomp = crate::security::default_seccomp()?;
    let shim = crate::sealed::Shim::new()?;
    let open = |what: &str| -> Result<File> {
        let path = format!("/proc/{pid}/{what}");
        File::open(&path).map_err(RuntimeError::io(&path))
    };
    // Open everything first: after the mount namespace changes, /proc is the container's.
    let mut namespaces = vec![
        (open("ns/ipc")?, CloneFlags::CLONE_NEWIPC),
        (open("ns/uts")?, CloneFlags::CLONE_NEWUTS),
    ];
    if spec.network != crate::spec::NetworkMode::Host {
        namespaces.push((open("ns/net")?, CloneFlags::CLONE_NEWNET));
    }
    namespaces.push((open("ns/pid")?, CloneFlags::CLONE_NEWPID));
    namespaces.push((open("ns/mnt")?, CloneFlags::CLONE_NEWNS));
    let root = open("root")?;
    let cgroup = crate::cgroups::Cgroup::for_container(&rec.id);
    // Join the cgroup so the check counts against the container's limits.
    let _ = cgroup.add(std::process::id() as i32);
    for (f, kind) in &namespaces {
        setns(f, *kind).map_err(|e| RuntimeError::Setup(format!("exec in {}: setns {kind:?}: {e}", rec.name)))?;
    }
    nix::unistd::fchdir(&root)
        .and_then(|_| nix::unistd::chroot("."))
        .map_err(|e| RuntimeError::Setup(format!("exec in {}: chroot: {e}", rec.name)))?;
    // The pid namespace applies to children: fork.
    // SAFETY: single-threaded caller; the child only calls async-signal-safe
    // functions or execs (become_and_exec) or _exits.
    match unsafe { fork() }.map_err(|e| RuntimeError::Setup(format!("fork: {e}")))? {
        ForkResult::Child => {
            // Its own process group (killed as one), dying with us.
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            crate::init::become_and_exec(&spec, args, &seccomp, &shim, None)
        }
        ForkResult::Parent { child } => {
            // Both sides set the group, so it exists before either goes on.
            let _ = setpgid(child, child);
            wait_child(child, timeout)
        }
    }
}

fn wait_child(child: Pid, timeout: Option<Duration>) -> Result<i32> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let flags = deadline.map(|_| WaitPidFlag::WNOHANG);
        match waitpid(child, flags) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let _ = killpg(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    return Ok(128 + Signal::SIGKILL as i32);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::Setup(format!("wait: {e}"))),
        }
    }
}
