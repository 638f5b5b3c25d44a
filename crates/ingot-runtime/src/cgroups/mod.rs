//! Resource limits through cgroups, v1 and v2 behind one interface.
//!
//! Each container gets `ingot/<id>` in every hierarchy it uses. On a pure v2
//! host that is one directory under `/sys/fs/cgroup`; on v1 and hybrid hosts
//! (v1 controllers, v2 mounted at `/sys/fs/cgroup/unified` without them) it
//! is one directory per controller: memory, cpu, pids.

mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, RuntimeError};

/// The limits a container asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
}

/// The CFS period used for CPU quotas, as Docker's.
pub const CPU_PERIOD_US: u64 = 100_000;

/// One container's cgroup(s).
#[derive(Debug, Clone)]
pub enum Cgroup {
    V1(v1::V1),
    V2(v2::V2),
}

/// Which cgroup layout the host has.
pub fn is_v2_host(mount: &Path) -> bool {
    mount.join("cgroup.controllers").exists()
}

const MOUNT: &str = "/sys/fs/cgroup";

impl Cgroup {
    /// The cgroup of container `id` (created or not).
    pub fn for_container(id: &str) -> Cgroup {
        let mount = Path::new(MOUNT);
        if is_v2_host(mount) {
            Cgroup::V2(v2::V2::new(mount, id))
        } else {
            Cgroup::V1(v1::V1::new(mount, id))
        }
    }

    /// Creates the cgroup and applies `limits`.
    pub fn create(&self, limits: &Limits) -> Result<()> {
        match self {
            Cgroup::V1(c) => c.create(limits),
            Cgroup::V2(c) => c.create(limits),
        }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        for dir in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The files a single-threaded process writes "0" to in order to move
    /// itself into this cgroup, where the host allows it (v1: each
    /// hierarchy's `tasks`). Moving oneself as one thread skips the
    /// kernel's global threadgroup lock, whose first writer after a quiet
    /// spell waits for an RCU grace period (3 to 20 ms); `add` from the
    /// parent pays that on every container start. `None` on v2, where
    /// `cgroup.threads` cannot cross domains: the parent uses `add`.
    pub fn self_join_files(&self) -> Option<Vec<PathBuf>> {
        match self {
            Cgroup::V1(c) => Some(c.dirs().into_iter().map(|d| d.join("tasks")).collect()),
            Cgroup::V2(_) => None,
        }
    }

    /// Whether the kernel OOM-killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        match self {
            Cgroup::V1(c) => c.oom_kills() > 0,
            Cgroup::V2(c) => c.oom_kills() > 0,
        }
    }

    /// Every directory this cgroup has, one per hierarchy used.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(c) => c.dirs(),
            Cgroup::V2(c) => vec![c.dir().to_path_buf()],
        }
    }

    /// Removes the cgroup once its processes are gone; retries briefly
    /// because the kernel releases a cgroup a moment after its last task.
    pub fn destroy(&self) -> Result<()> {
        for dir in self.dirs() {
            let mut tries = 0;
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if tries < 50 && e.raw_os_error() == Some(libc::EBUSY) => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(RuntimeError::io(&dir)(e)),
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value)
        .map_err(|e| RuntimeError::Setup(format!("cgroup {}: cannot write {value:?}: {e}", path.display())))
}

pub(crate) fn mkdir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RuntimeError::Setup(format!("cgroup {}: {e}", path.display()))),
    }
}

/// Reads `key value` lines (memory.events, memory.oom_control) for `key`.
pub(crate) fn read_key(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}
