//! ingot's container runtime.
//!
//! Containers are built from the store's images: each layer is unpacked once
//! into a shared cache ([`layers`]) and stacked with overlayfs under a
//! per-container upper directory ([`rootfs`]); the first process gets new
//! pid, mount, uts, ipc, net and cgroup namespaces ([`init`]), resource
//! limits ([`cgroups`], v1 and v2), Docker's default capabilities, no new
//! privileges and a default seccomp filter ([`security`]). A monitor
//! ([`monitor`]) waits for it and records its status in the store database,
//! so every process sharing the root sees the same containers.
//!
//! Invariant: a container's mounts exist only inside its own mount
//! namespace, so they disappear with it, whatever kills ingot. Its cgroup
//! and directory are removed by the monitor, or by [`reconcile`] if the
//! monitor died.

pub mod cgroups;
mod error;
mod exec;
mod init;
pub mod layers;
pub mod monitor;
pub mod net;
pub mod rootfs;
mod runc;
pub mod sealed;
pub mod security;
pub mod spec;
pub mod user;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ingot_store::{ContainerRecord, ContainerState, Store};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

pub use error::{Result, RuntimeError};
pub use exec::exec;
pub use spec::{ContainerSpec, NetworkMode, RunOptions, Runtime};

/// A container's directory: upper, work, merged, etc files, pid and logs.
/// `<root>/containers/<id>` on disk, or, for a container whose whole
/// life is one run ([`runtime_dir`]), its directory on the host's tmpfs.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    runtime_dir(root, id)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| disk_dir(root, id))
}

/// `<root>/containers/<id>`.
fn disk_dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

/// Where the host keeps state that must not outlive a boot: a tmpfs on
/// every systemd host (as `/run/docker`, `/run/containerd`).
const RUN_BASE: &str = "/run/ingot";

/// `/run/ingot/<dev>-<inode of the root, hex>/<id>`: the directory of a
/// foreground `run --rm` container with a read-only root (the default).
/// Nothing of it outlives the container, not even logs (its output goes
/// to the caller), so nothing of it needs the disk: on ext4, creating and
/// removing its ~17 files and directories (overlay upper and work, mount
/// points, etc files, pid) cost 3 ms of a 9 ms start, a tmpfs next to
/// nothing. A read-write root's upper (the container's writes, any size)
/// and a detached or kept container's logs stay under the store root. The root is
/// named by device and inode, so every path to one root finds the same
/// directory; two roots alive at once never share one (container ids are
/// random, so a directory left by a deleted root is no other's).
fn runtime_dir(root: &Path, id: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(root).ok()?;
    Some(
        Path::new(RUN_BASE)
            .join(format!("{:x}-{:x}", meta.dev(), meta.ino()))
            .join(id),
    )
}

/// Whether [`RUN_BASE`] (or `/run`, before the first container) is a
/// tmpfs. Where it is not (a host without systemd), a container's
/// directory stays under the store root: on a disk, one place is as good
/// as another, and the root is where a user looks.
fn run_is_tmpfs() -> bool {
    rustix::fs::statfs(RUN_BASE)
        .or_else(|_| rustix::fs::statfs("/run"))
        .is_ok_and(|s| s.f_type == libc::TMPFS_MAGIC)
}

/// Makes the directory of a new container (see [`container_dir`]): on
/// tmpfs when `spec` allows it and the host has `/run`, else on disk.
fn make_container_dir(root: &Path, id: &str, spec: &ContainerSpec) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // Made (root-only) whichever place this container's goes: `fsck`
    // checks its mode.
    let all = root.join("containers");
    if !all.exists() {
        // Containers' roots (overlay mounts) hold setuid binaries.
        let _ = fs::DirBuilder::new().mode(0o700).create(&all);
    }
    if spec.transient && spec.read_only && run_is_tmpfs() {
        if let Some(dir) = runtime_dir(root, id) {
            // Parents only root can enter: upper and merged lead to the
            // image's setuid binaries. A removal of the per-root parent
            // by another container's exit can race this: try again.
            for _ in 0..3 {
                match fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
                    Ok(()) => return Ok(dir),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        tracing::debug!(%e, dir = %dir.display(), "no runtime directory; the container's goes on disk");
                        break;
                    }
                }
            }
        }
    }
    let dir = disk_dir(root, id);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(crate) fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn spec_of(rec: &ContainerRecord) -> Result<ContainerSpec> {
    serde_json::from_str(&rec.spec).map_err(|e| RuntimeError::Setup(format!("container {}: bad spec: {e}", rec.id)))
}

/// A fresh 64-hex-digit container id.
pub fn random_id() -> Result<String> {
    let mut buf = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(RuntimeError::io("/dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Creates a container from `image` (not started): resolves the image,
/// makes the spec, unpacks missing layers, records it, prepares its
/// directory. `monitor_pid` is the process that will start it.
pub fn create(store: &Store, image: &str, opts: &RunOptions, monitor_pid: u32) -> Result<ContainerRecord> {
    reconcile(store)?;
    let img = store.resolve(image)?;
    let (_, config) = store
        .config(&img.manifest)?
        .ok_or_else(|| RuntimeError::Setup(format!("{image} is an index; run one of its platform images")))?;
    let id = random_id()?;
    let name = opts.name.clone().unwrap_or_else(|| format!("c-{}", &id[..12]));
    if !valid_name(&name) {
        return Err(RuntimeError::invalid(
            "container name",
            &name,
            "expected [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        ));
    }
    let spec = ContainerSpec::new(&config, opts, &id)?;
    layers::ensure(store, &img)?;
    create_with_spec(store, id, name, &img.digest, image, spec, monitor_pid)
}

/// Records a container for a ready `spec` (its layers already cached) and
/// prepares its directory. The builder runs its RUN steps this way.
pub fn create_with_spec(
    store: &Store,
    id: String,
    name: String,
    image: &ingot_oci::Digest,
    image_ref: &str,
    spec: ContainerSpec,
    monitor_pid: u32,
) -> Result<ContainerRecord> {
    let rec = ContainerRecord {
        id: id.clone(),
        name,
        image: image.clone(),
        image_ref: image_ref.to_string(),
        spec: serde_json::to_string(&spec).map_err(|e| RuntimeError::Setup(e.to_string()))?,
        state: ContainerState::Created,
        pid: None,
        monitor_pid: Some(monitor_pid.into()),
        exit_code: None,
        oom_killed: false,
        error: None,
        created_at: now(),
        started_at: None,
        finished_at: None,
        address: None,
    };
    store.insert_container(&rec)?;
    let made = (|| {
        let dir = make_container_dir(store.root(), &id, &spec)?;
        for sub in ["upper", "work", "merged"] {
            fs::create_dir(dir.join(sub))?;
        }
        rootfs::write_etc_files(&dir, &spec, None)
    })();
    if let Err(e) = made {
        let dir = container_dir(store.root(), &id);
        remove_files(store, &id);
        let _ = store.delete_container(&id);
        return Err(RuntimeError::io(&dir)(e));
    }
    Ok(rec)
}

/// Whether process `pid` exists.
fn alive(pid: Option<i64>) -> bool {
    match pid {
        Some(p) if p > 0 => matches!(
            signal::kill(Pid::from_raw(p as i32), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        ),
        _ => false,
    }
}

/// Marks containers whose monitor died as dead and reclaims their cgroups
/// and (for `--rm` containers) everything else.
pub fn reconcile(store: &Store) -> Result<()> {
    net::ipam::sweep()?;
    for mut rec in store.containers()? {
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) || alive(rec.monitor_pid) {
            continue;
        }
        let _ = cgroups::Cgroup::for_container(&rec.id).destroy();
        let auto_remove = spec_of(&rec).map(|s| s.auto_remove).unwrap_or(false);
        if auto_remove {
            remove_files(store, &rec.id);
            store.delete_container(&rec.id)?;
            continue;
        }
        let _ = fs::remove_dir_all(container_dir(store.root(), &rec.id).join("work"));
        store.set_address(&rec.id, None)?;
        rec.state = ContainerState::Dead;
        rec.error = Some("monitor process died; exit status unknown".into());
        rec.finished_at.get_or_insert_with(now);
        store.update_container(&rec)?;
    }
    Ok(())
}

pub(crate) fn remove_files(store: &Store, id: &str) {
    match runtime_dir(store.root(), id).filter(|d| d.is_dir()) {
        Some(dir) => {
            let _ = fs::remove_dir_all(&dir);
            // The root's runtime directory goes with its last container.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        None => {
            let _ = fs::remove_dir_all(disk_dir(store.root(), id));
        }
    }
    let _ = cgroups::Cgroup::for_container(id).destroy();
}

/// The start time of process `pid` (clock ticks since boot, field 22 of
/// `/proc/PID/stat`): with the pid, what names one process for good.
pub fn start_time(pid: i64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Records which process a container's first process is (its pid and
/// start time, in `<container>/pid`), so that a pid reused by another
/// process is never mistaken for it.
pub(crate) fn record_process(root: &Path, id: &str, pid: i64) {
    if let Some(t) = start_time(pid) {
        let _ = fs::write(container_dir(root, id).join("pid"), format!("{pid} {t}\n"));
    }
}

/// Whether the container's first process still runs: its pid is alive and
/// is the same process (start time) the monitor recorded.
fn owned(store: &Store, rec: &ContainerRecord) -> bool {
    let Some(pid) = rec.pid.filter(|p| *p > 0) else {
        return false;
    };
    let dir = container_dir(store.root(), &rec.id);
    let recorded = fs::read_to_string(dir.join("pid")).ok();
    match recorded
        .as_deref()
        .and_then(|r| r.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        Some(t) => start_time(pid) == Some(t),
        // Recorded by an older ingot: the pid alone. No directory: the
        // container is being removed (its pid already reaped, maybe reused).
        None => dir.is_dir() && alive(Some(pid)),
    }
}

/// Sends `sig` to a running container's first process, through a pidfd
/// opened before the process is checked to be the container's: a pid
/// that an unrelated process reused is never signalled.
pub fn kill(store: &Store, key: &str, sig: Signal) -> Result<ContainerRecord> {
    reconcile(store)?;
    let rec = store.container(key)?;
    let pid = rec.pid.unwrap_or(0);
    let not_running = || RuntimeError::NotRunning(rec.name.clone());
    if rec.state != ContainerState::Running || pid <= 0 {
        return Err(not_running());
    }
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or_else(not_running)?;
    let fd = rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty()).map_err(|_| not_running())?;
    if !owned(store, &rec) {
        return Err(not_running());
    }
    let sig = rustix::process::Signal::from_named_raw(sig as i32)
        .ok_or_else(|| RuntimeError::Setup(format!("kill {}: signal {sig} unknown", rec.name)))?;
    rustix::process::pidfd_send_signal(&fd, sig).map_err(|e| RuntimeError::Setup(format!("kill {}: {e}", rec.name)))?;
    Ok(rec)
}

/// Waits until the container is no longer running, up to `timeout`.
fn wait_stopped(store: &Store, id: &str, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let rec = match store.container(id) {
            Ok(r) => r,
            // A --rm container is gone once its monitor recorded the exit.
            Err(ingot_store::StoreError::ContainerNotFound(_)) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        if rec.state != ContainerState::Running || !owned(store, &rec) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a container: its stop signal, then SIGKILL after `timeout`.
/// Stopping a container that is not running is not an error.
pub fn stop(store: &Store, key: &str, timeout: Duration) -> Result<ContainerRecord> {
    reconcile(store)?;
    let rec = store.container(key)?;
    if rec.state != ContainerState::Running {
        return Ok(rec);
    }
    let sig = spec::parse_signal(&spec_of(&rec)?.stop_signal)?;
    let _ = kill(store, &rec.id, sig);
    if !wait_stopped(store, &rec.id, timeout)? {
        let _ = kill(store, &rec.id, Signal::SIGKILL);
        wait_stopped(store, &rec.id, Duration::from_secs(10))?;
    }
    // The monitor records the exit (and removes a --rm container); give it
    // a moment to do so, so that what `stop` returns is what others see.
    let auto_remove = spec_of(&rec).map(|s| s.auto_remove).unwrap_or(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = match store.container(&rec.id) {
            Ok(r) => r,
            Err(ingot_store::StoreError::ContainerNotFound(_)) => {
                return Ok(ContainerRecord {
                    state: ContainerState::Exited,
                    ..rec
                })
            }
            Err(e) => return Err(e.into()),
        };
        if (now.state != ContainerState::Running && !auto_remove) || Instant::now() >= deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes a stopped container (with `force`, kills it first).
pub fn remove(store: &Store, key: &str, force: bool) -> Result<ContainerRecord> {
    reconcile(store)?;
    let rec = store.container(key)?;
    if rec.state == ContainerState::Running {
        if !force {
            return Err(RuntimeError::Running(rec.name));
        }
        let _ = kill(store, &rec.id, Signal::SIGKILL);
        wait_stopped(store, &rec.id, Duration::from_secs(10))?;
    }
    remove_files(store, &rec.id);
    store.delete_container(&rec.id)?;
    Ok(rec)
}

/// Paths of a container's stdout and stderr logs.
pub fn log_paths(store: &Store, rec: &ContainerRecord) -> (PathBuf, PathBuf) {
    let dir = container_dir(store.root(), &rec.id);
    (dir.join("stdout.log"), dir.join("stderr.log"))
}

/// Whether the container is still running (re-read from the store).
pub fn is_running(store: &Store, id: &str) -> Result<bool> {
    let rec = store.container(id)?;
    Ok(rec.state == ContainerState::Running && owned(store, &rec))
}
