//! The monitor: starts a container's first process and stays its parent
//! until it exits, then records the status and cleans up.
//!
//! For `ingot run` in the foreground the `ingot` process itself is the
//! monitor; for `-d` a detached `ingot` process is (like conmon or a
//! containerd shim). Mounts live only in the container's mount namespace
//! and its first process dies with the monitor (PDEATHSIG), so a killed
//! monitor leaves no mount behind; cgroups and directories it leaves are
//! reclaimed by [`crate::reconcile`].

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use ingot_store::{ContainerState, Store};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::cgroups::{Cgroup, Limits};
use crate::error::{Result, RuntimeError};
use crate::init::{self, InitPlan};
use crate::net::ipam::Lease;
use crate::net::proxy::Published;
use crate::{container_dir, now, spec_of};

/// Where a container's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The monitor's own stdin/stdout/stderr (foreground run).
    Inherit,
    /// `stdout.log` and `stderr.log` in the container directory.
    Files,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub oom_killed: bool,
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// What the child wrote on its error pipe before it failed (`CODE\nMESSAGE`,
/// see [`crate::init`]), read to the end; `None` if it wrote nothing (it
/// exec'd its command).
fn child_report(err_r: std::os::fd::OwnedFd) -> Option<RuntimeError> {
    let mut report = String::new();
    let _ = File::from(err_r).read_to_string(&mut report);
    if report.is_empty() {
        return None;
    }
    let (code, msg) = report.split_once('\n').unwrap_or(("125", report.as_str()));
    Some(match code {
        "126" => RuntimeError::CannotExecute(msg.to_string()),
        "127" => RuntimeError::NotFound(msg.to_string()),
        _ => RuntimeError::Setup(msg.to_string()),
    })
}

/// Starts container `id` and waits for it. `started` is called once the
/// command has been exec'd (with its pid) or has failed to start.
pub fn run(
    store: &Store,
    id: &str,
    output: Output,
    started: &mut dyn FnMut(Result<i32, &RuntimeError>),
) -> Result<Exit> {
    run_with(store, id, output, &[], started)
}

/// [`run`], with the contents of the spec's [`crate::spec::FileSource::Given`]
/// files, in their order.
pub fn run_with(
    store: &Store,
    id: &str,
    output: Output,
    given: &[Vec<u8>],
    started: &mut dyn FnMut(Result<i32, &RuntimeError>),
) -> Result<Exit> {
    let rec = store.container(id)?;
    let spec = spec_of(&rec)?;
    let result = match spec.runtime {
        crate::Runtime::Ingot => start_and_wait(store, rec.clone(), &spec, output, given, started),
        crate::Runtime::Runc => crate::runc::start_and_wait(store, rec.clone(), &spec, output, started),
    };
    if let Err(e) = &result {
        if spec.auto_remove {
            // A --rm container that never ran leaves nothing behind either.
            crate::remove_files(store, id);
            let _ = store.delete_container(id);
        } else if let Ok(mut now) = store.container(id) {
            // As `docker ps -a` shows a container that could not start.
            if now.state == ContainerState::Created {
                now.state = ContainerState::Exited;
                now.exit_code = Some(e.exit_code().into());
                now.error = Some(e.to_string());
                now.finished_at = Some(crate::now());
                let _ = store.update_container(&now);
            }
            let _ = std::fs::remove_dir_all(container_dir(store.root(), id).join("work"));
        }
    }
    result
}

fn start_and_wait(
    store: &Store,
    mut rec: ingot_store::ContainerRecord,
    spec: &crate::ContainerSpec,
    output: Output,
    given: &[Vec<u8>],
    started: &mut dyn FnMut(Result<i32, &RuntimeError>),
) -> Result<Exit> {
    let dir = container_dir(store.root(), &rec.id);
    let cgroup = Cgroup::for_container(&rec.id);
    let id = rec.id.clone();
    let fail = |e: RuntimeError, started: &mut dyn FnMut(Result<i32, &RuntimeError>)| {
        started(Err(&e));
        let _ = cgroup.destroy();
        release(store, &id);
        e
    };
    let lowers = match lower_dirs(store, spec) {
        Ok(l) => l,
        Err(e) => return Err(fail(e, started)),
    };
    if let Err(e) = cgroup.create(&Limits {
        memory: spec.memory,
        cpus: spec.cpus,
        pids: spec.pids_limit,
    }) {
        return Err(fail(e, started));
    }
    let seccomp = match crate::security::default_seccomp() {
        Ok(s) => s,
        Err(e) => return Err(fail(e, started)),
    };
    let files = match file_contents(store, spec, given) {
        Ok(s) => s,
        Err(e) => return Err(fail(e, started)),
    };
    let shim = match crate::sealed::Shim::new() {
        Ok(s) => s,
        Err(e) => return Err(fail(e, started)),
    };
    let logs = match open_logs(&dir, output) {
        Ok(l) => l,
        Err(e) => return Err(fail(e, started)),
    };
    let network = match prepare_network(store, &mut rec, spec, &dir) {
        Ok(n) => n,
        Err(e) => return Err(fail(e, started)),
    };
    let (ready_r, ready_w) = pipe().map_err(|e| fail(e, started))?;
    let (sync_r, sync_w) = pipe().map_err(|e| fail(e, started))?;
    let (err_r, err_w) = pipe().map_err(|e| fail(e, started))?;
    // unshare(NEWPID) puts our *next* child in a new pid namespace, and
    // every later one too: keep a handle on ours to switch back after fork,
    // so helpers we run later (ip, the proxy) stay outside the container.
    let own_pid_ns =
        File::open("/proc/self/ns/pid").map_err(|e| fail(RuntimeError::io("/proc/self/ns/pid")(e), started))?;
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return Err(fail(
            RuntimeError::Setup(format!("unshare pid namespace: {e}")),
            started,
        ));
    }
    // The child joins its cgroup itself where the host allows it; else
    // (`None`) the parent moves it.
    let self_join = match cgroup
        .self_join_files()
        .map(|files| {
            files
                .into_iter()
                .map(|p| {
                    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                        .map_err(|_| RuntimeError::Setup(format!("cgroup path {} holds a NUL byte", p.display())))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()
    {
        Ok(j) => j,
        Err(e) => return Err(fail(e, started)),
    };
    let plan = InitPlan {
        cgroup_tasks: self_join.as_deref().unwrap_or_default(),
        spec,
        container_dir: &dir,
        lowers: &lowers,
        seccomp: &seccomp,
        shim: &shim,
        files: &files,
        logs: logs.as_ref().map(|(o, e)| (o.as_raw_fd(), e.as_raw_fd())),
    };
    // SAFETY: ingot is single-threaded here; the child only runs init::run,
    // which ends in exec or _exit.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(sync_w);
            drop(err_r);
            drop(ready_r);
            init::run(&plan, ready_w.as_raw_fd(), sync_r.as_raw_fd(), err_w.as_raw_fd())
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(fail(RuntimeError::Setup(format!("fork: {e}")), started)),
    };
    if let Err(e) = nix::sched::setns(&own_pid_ns, CloneFlags::CLONE_NEWPID) {
        tracing::warn!(%e, "cannot return to our pid namespace");
    }
    drop(own_pid_ns);
    drop(sync_r);
    drop(err_w);
    drop(ready_w);
    drop(logs);
    // Into the cgroup, unless the child joins it itself (v1): at once, as
    // this write can wait for an RCU grace period while the child makes its
    // namespaces and root filesystem. Then wait for the child's namespaces
    // (EOF instead means it already failed, and its report follows on the
    // error pipe) and wire its network.
    let wire = || -> Result<()> {
        if self_join.is_none() {
            cgroup.add(child.as_raw())?;
        }
        let mut ready = [0u8; 1];
        let namespaces_ready = matches!(nix::unistd::read(&ready_r, &mut ready), Ok(1));
        if let (true, Some((_, leases))) = (namespaces_ready, &network) {
            crate::net::bridge::attach(&rec.id, child.as_raw(), &links(spec, leases))?;
        }
        Ok(())
    };
    let wired = wire();
    drop(ready_r);
    if let Err(e) = wired {
        let _ = signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        // A child that failed on its own said why: that comes first.
        drop(sync_w);
        let e = child_report(err_r).unwrap_or(e);
        return Err(fail(e, started));
    }
    // Let the child go on; then learn whether its exec succeeded.
    let _ = nix::unistd::write(&sync_w, b"g");
    drop(sync_w);
    if let Some(err) = child_report(err_r) {
        let _ = waitpid(child, None);
        rec.state = ContainerState::Exited;
        rec.exit_code = Some(err.exit_code().into());
        rec.error = Some(err.to_string());
        rec.finished_at = Some(now());
        let _ = store.update_container(&rec);
        return Err(fail(err, started));
    }

    CHILD.store(child.as_raw(), Ordering::SeqCst);
    if output == Output::Inherit {
        for sig in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            // SAFETY: the handler only reads an atomic and calls kill.
            let _ = unsafe { signal::signal(sig, SigHandler::Handler(forward)) };
        }
    }
    rec.state = ContainerState::Running;
    rec.pid = Some(child.as_raw().into());
    rec.monitor_pid = Some(std::process::id().into());
    crate::record_process(store.root(), &rec.id, rec.pid.unwrap_or(0));
    rec.started_at = Some(now());
    store.update_container(&rec)?;
    let leases = network.map(|(published, leases)| {
        published.serve(leases[0].address.into());
        leases
    });
    started(Ok(child.as_raw()));

    let code = wait_exit(child);
    let oom_killed = cgroup.oom_killed();
    let _ = cgroup.destroy();
    if spec.auto_remove {
        // No exit to record and no address to release (it is a column of
        // the row) for a row about to go. Until it goes, the row says
        // Running with a reaped pid: `owned` refuses it once the
        // directory (and its pid record) is gone. The address lease goes
        // with the row, so no two rows show one address.
        crate::remove_files(store, &rec.id);
        store.delete_container(&rec.id)?;
    } else {
        rec.state = ContainerState::Exited;
        rec.exit_code = Some(code.into());
        rec.oom_killed = oom_killed;
        rec.finished_at = Some(now());
        store.update_container(&rec)?;
        release(store, &rec.id);
    }
    drop(leases);
    Ok(Exit { code, oom_killed })
}

/// The spec's cached layer directories, bottom first.
pub(crate) fn lower_dirs(store: &Store, spec: &crate::ContainerSpec) -> Result<Vec<PathBuf>> {
    let lowers: Vec<PathBuf> = spec
        .layers
        .iter()
        .map(|h| crate::layers::cache_dir(store.root()).join("sha256").join(h))
        .collect();
    if let Some(missing) = lowers.iter().find(|l| !l.is_dir()) {
        return Err(RuntimeError::Setup(format!(
            "layer cache {} is missing",
            missing.display()
        )));
    }
    Ok(lowers)
}

/// `stdout.log` and `stderr.log` for [`Output::Files`].
pub(crate) fn open_logs(dir: &Path, output: Output) -> Result<Option<(File, File)>> {
    if output == Output::Inherit {
        return Ok(None);
    }
    let open = |name: &str| {
        File::options()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .map_err(RuntimeError::io(dir.join(name)))
    };
    Ok(Some((open("stdout.log")?, open("stderr.log")?)))
}

/// For a bridged container: its networks' bridges exist, its published
/// ports are bound, it holds an address on each network (recorded, the
/// primary one written to its /etc/hosts).
pub(crate) fn prepare_network(
    store: &Store,
    rec: &mut ingot_store::ContainerRecord,
    spec: &crate::ContainerSpec,
    dir: &Path,
) -> Result<Option<(Published, Vec<Lease>)>> {
    let nets = spec.bridges();
    if nets.is_empty() {
        return Ok(None);
    }
    let mut leases = Vec::new();
    for net in &nets {
        crate::net::bridge::ensure(net)?;
        leases.push(crate::net::ipam::acquire(&rec.id, net)?);
    }
    let published = crate::net::proxy::bind(&spec.ports)?;
    let addresses: Vec<String> = leases.iter().map(|l| l.address.to_string()).collect();
    let joined = addresses.join(" ");
    store.set_address(&rec.id, Some(&joined))?;
    rec.address = Some(joined);
    crate::rootfs::write_etc_files(dir, spec, Some(&addresses[0])).map_err(RuntimeError::io(dir))?;
    Ok(Some((published, leases)))
}

/// The (network, address) pairs a prepared container joins.
pub(crate) fn links(spec: &crate::ContainerSpec, leases: &[Lease]) -> Vec<(crate::net::Network, std::net::Ipv4Addr)> {
    spec.bridges()
        .into_iter()
        .zip(leases.iter().map(|l| l.address))
        .collect()
}

/// Forgets the container's bridge address; its veth went with its network
/// namespace and its lease goes with the monitor.
pub(crate) fn release(store: &Store, id: &str) {
    if let Err(e) = store.set_address(id, None) {
        tracing::warn!(%e, id, "cannot release the container's address");
    }
}

/// Waits for `child`; its exit code, or 128 + the signal that killed it.
pub(crate) fn wait_exit(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// The contents of the spec's files, read just before the container
/// starts (a secret's value is in no spec and on no command line).
fn file_contents(store: &Store, spec: &crate::ContainerSpec, given: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let mut given = given.iter();
    spec.files
        .iter()
        .map(|f| {
            let missing = |what: &str| RuntimeError::Setup(format!("{what} {} for {} is missing", f.digest, f.target));
            match f.source {
                crate::spec::FileSource::Given => given.next().cloned().ok_or_else(|| missing("content")),
                crate::spec::FileSource::Secret => store.secret(&f.digest)?.ok_or_else(|| missing("secret")),
                crate::spec::FileSource::Config => {
                    let data = std::fs::read(store.root().join("configs").join(f.digest.hex()))
                        .map_err(|_| missing("config"))?;
                    if ingot_oci::Digest::sha256(&data) != f.digest {
                        return Err(RuntimeError::Setup(format!(
                            "config {} does not match its digest",
                            f.digest
                        )));
                    }
                    Ok(data)
                }
            }
        })
        .collect()
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Setup(format!("pipe: {e}")))
}

/// The command that starts container `id` under a detached monitor (`exe
/// --root ROOT __monitor ID`, in a session of its own so that it outlives
/// whoever started it). Its stdout, piped, carries one report line; read
/// it with [`parse_report`]. `ingot run -d` and the deploy daemon both
/// start containers this way.
pub fn detached_command(exe: &Path, root: &Path, id: &str) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(root).arg("__monitor").arg(id);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the monitor from the
    // caller's session, so it outlives the caller and its terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd
}

/// The monitor's report line: `started PID` or `error CODE MESSAGE`.
pub fn parse_report(line: &str, name: &str) -> Result<i32> {
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("started ") {
        return pid
            .parse()
            .map_err(|_| RuntimeError::Setup(format!("container {name}: bad monitor report {line:?}")));
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
        return Err(RuntimeError::Reported {
            code: code.parse::<u8>().unwrap_or(125),
            message: msg.to_string(),
        });
    }
    Err(RuntimeError::Setup(format!(
        "container monitor for {name} exited without starting it"
    )))
}
