//! cgroup v1: one directory per controller.

use std::path::{Path, PathBuf};

use super::{mkdir, read_key, write, Limits, CPU_PERIOD_US};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct V1 {
    memory: PathBuf,
    cpu: PathBuf,
    pids: PathBuf,
}

impl V1 {
    pub fn new(mount: &Path, id: &str) -> V1 {
        let dir = |ctrl: &str| mount.join(ctrl).join("ingot").join(id);
        V1 {
            memory: dir("memory"),
            cpu: dir("cpu"),
            pids: dir("pids"),
        }
    }

    pub fn dirs(&self) -> Vec<PathBuf> {
        [&self.memory, &self.cpu, &self.pids]
            .into_iter()
            .filter(|d| d.parent().and_then(Path::parent).is_some_and(Path::exists))
            .cloned()
            .collect()
    }

    pub fn create(&self, limits: &Limits) -> Result<()> {
        for dir in self.dirs() {
            if let Some(parent) = dir.parent() {
                mkdir(parent)?;
            }
            mkdir(&dir)?;
        }
        if let Some(bytes) = limits.memory {
            write(&self.memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // No swap beyond the limit, so that the limit really holds.
            let memsw = self.memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
            let swappiness = self.memory.join("memory.swappiness");
            if swappiness.exists() {
                let _ = write(&swappiness, "0");
            }
        }
        if let Some(cpus) = limits.cpus {
            write(&self.cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
            write(&self.cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(pids) = limits.pids {
            write(&self.pids.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    pub fn oom_kills(&self) -> u64 {
        read_key(&self.memory.join("memory.oom_control"), "oom_kill ")
    }
}
