//! cgroup v2: one directory in the unified hierarchy.

use std::path::{Path, PathBuf};

use super::{mkdir, read_key, write, Limits, CPU_PERIOD_US};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct V2 {
    parent: PathBuf,
    dir: PathBuf,
}

impl V2 {
    pub fn new(mount: &Path, id: &str) -> V2 {
        let parent = mount.join("ingot");
        V2 {
            dir: parent.join(id),
            parent,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn create(&self, limits: &Limits) -> Result<()> {
        mkdir(&self.parent)?;
        // Controllers must be enabled from the root down to our parent.
        if let Some(root) = self.parent.parent() {
            let _ = write(&root.join("cgroup.subtree_control"), "+memory +cpu +pids");
        }
        let _ = write(&self.parent.join("cgroup.subtree_control"), "+memory +cpu +pids");
        mkdir(&self.dir)?;
        if let Some(bytes) = limits.memory {
            write(&self.dir.join("memory.max"), &bytes.to_string())?;
            let swap = self.dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(cpus) = limits.cpus {
            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
            write(&self.dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        if let Some(pids) = limits.pids {
            write(&self.dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    pub fn oom_kills(&self) -> u64 {
        read_key(&self.dir.join("memory.events"), "oom_kill ")
    }
}
