//! Bridge addresses, unique across the whole host.
//!
//! Bridges are shared by the host's store roots (and networks' subnets
//! never overlap), so addresses cannot come from a root's database. Each address in use is a lease file
//! `/run/ingot/ipam/<address>` naming its holder: the monitor process (pid
//! and start time, so a reused pid is not mistaken for it) and the
//! container. A lease whose holder is gone is free: a container's processes
//! never outlive its monitor (PDEATHSIG), nor its network namespace them.
//! Allocation is serialised by an exclusive lock on `ipam.lock`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::Network;
use crate::error::{Result, RuntimeError};

/// Host-wide runtime state (tmpfs: gone at reboot, as every lease is).
pub const RUN_DIR: &str = "/run/ingot";

/// One address held by this process for one container.
#[derive(Debug)]
pub struct Lease {
    pub address: Ipv4Addr,
    path: PathBuf,
}

impl Lease {
    /// Gives the address back (as dropping the lease does).
    pub fn release(self) {}
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `(pid, start time)` of process `pid`, from /proc/PID/stat.
fn start_time(pid: u32) -> Option<u64> {
    crate::start_time(pid.into())
}

fn holder_alive(text: &str) -> bool {
    let mut it = text.split_whitespace();
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Leases an address on `net` for container `id`, held by the calling
/// process.
pub fn acquire(id: &str, net: &Network) -> Result<Lease> {
    acquire_in(Path::new(RUN_DIR), id, net)
}

/// Removes the leases whose holders are gone (as [`acquire`] does).
pub fn sweep() -> Result<()> {
    if !Path::new(RUN_DIR).join("ipam").is_dir() {
        return Ok(());
    }
    let (_lock, _) = live_leases(Path::new(RUN_DIR))?;
    Ok(())
}

/// Takes the allocation lock, drops stale leases, returns the addresses
/// in use (and the lock, held until dropped).
fn live_leases(run_dir: &Path) -> Result<(File, HashSet<String>)> {
    let dir = run_dir.join("ipam");
    fs::create_dir_all(&dir).map_err(RuntimeError::io(&dir))?;
    let lock_path = run_dir.join("ipam.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(RuntimeError::io(&lock_path))?;
    lock.lock().map_err(RuntimeError::io(&lock_path))?;
    let mut taken = HashSet::new();
    for entry in fs::read_dir(&dir).map_err(RuntimeError::io(&dir))? {
        let entry = entry.map_err(RuntimeError::io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match fs::read_to_string(entry.path()) {
            Ok(text) if holder_alive(&text) => {
                taken.insert(name);
            }
            // A stale lease: its holder died without giving it back.
            Ok(_) => {
                let _ = fs::remove_file(entry.path());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io(entry.path())(e)),
        }
    }
    Ok((lock, taken))
}

fn acquire_in(run_dir: &Path, id: &str, net: &Network) -> Result<Lease> {
    let dir = run_dir.join("ipam");
    let (lock, taken) = live_leases(run_dir)?;
    let address = net
        .candidates()
        .map(|a| a.to_string())
        .find(|a| !taken.contains(a))
        .ok_or_else(|| {
            RuntimeError::Setup(format!(
                "no free address left on network {} ({})",
                net.bridge,
                net.cidr()
            ))
        })?;
    let me = std::process::id();
    let start = start_time(me).ok_or_else(|| RuntimeError::Setup("cannot read our own /proc/self/stat".into()))?;
    let path = dir.join(&address);
    fs::write(&path, format!("{me} {start} {id}\n")).map_err(RuntimeError::io(&path))?;
    drop(lock);
    Ok(Lease {
        address: address
            .parse()
            .map_err(|_| RuntimeError::Setup(format!("bad address {address}")))?,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_stale_ones_are_reclaimed() {
        let t = tempfile::tempdir().unwrap();
        let net = Network::default_bridge();
        let a = acquire_in(t.path(), "a", &net).unwrap();
        let b = acquire_in(t.path(), "b", &net).unwrap();
        assert_eq!(a.address.to_string(), "10.231.0.2");
        assert_eq!(b.address.to_string(), "10.231.0.3");
        // A lease of a process that is gone (pid 1 with the wrong start time).
        fs::write(t.path().join("ipam/10.231.0.4"), "1 1 ghost\n").unwrap();
        fs::write(t.path().join("ipam/10.231.0.5"), "garbage").unwrap();
        let c = acquire_in(t.path(), "c", &net).unwrap();
        assert_eq!(c.address.to_string(), "10.231.0.4");
        a.release();
        let d = acquire_in(t.path(), "d", &net).unwrap();
        assert_eq!(d.address.to_string(), "10.231.0.2");
        assert!(!t.path().join("ipam/10.231.0.5").exists());
        // Another network: its own range.
        let small = Network {
            bridge: "ingn1".into(),
            subnet: Ipv4Addr::new(10, 240, 9, 0),
            prefix: 29,
            internal: false,
        };
        let held: Vec<Lease> = (0..5)
            .map(|i| acquire_in(t.path(), &format!("s{i}"), &small).unwrap())
            .collect();
        assert_eq!(held[0].address.to_string(), "10.240.9.2");
        assert_eq!(held[4].address.to_string(), "10.240.9.6");
        let full = acquire_in(t.path(), "s5", &small).unwrap_err().to_string();
        assert!(
            full.contains("no free address left on network ingn1 (10.240.9.0/29)"),
            "{full}"
        );
    }
}
