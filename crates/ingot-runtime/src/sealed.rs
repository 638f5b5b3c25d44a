//! The last step into a container runs from a sealed memfd (CVE-2019-5736).
//!
//! A container whose command is a script starting `#!/proc/self/exe` makes
//! the kernel run, inside the container, the binary of the process that
//! execs the command: were that the host's `ingot` (a container's first
//! process and `ingot exec` are forks of it until they exec), another
//! process of the container could open it through `/proc/PID/exe` and,
//! once no process runs it, overwrite it: the next `ingot` anyone starts on
//! the host would be the attacker's.
//!
//! runc re-executes itself from a sealed memfd copy. ingot does the same
//! with a binary made for that one step: a small static exec shim
//! (`shim/exec.c`, built with the crate and embedded), copied into a memfd
//! sealed against writes, shrinking and growing before the fork. The
//! process entering the container execs the shim from that memfd and the
//! shim execs the container's command. What `/proc/self/exe` names on the
//! way is the sealed copy (writes through it fail with EPERM), so the
//! host's binary is never reachable from inside; and the shim, started as
//! an interpreter, does nothing. Copying its 9 KB and one more exec cost
//! far less than re-executing the whole of ingot (bench/RESULTS.md).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::{Result, RuntimeError};

static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exec-shim"));

/// The seals the shim's memfd carries: no write, shrink, grow or new seal.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// Whether `file` is a memfd sealed as the shim's is (the tests ask).
#[cfg(test)]
fn is_sealed(file: &File) -> bool {
    fcntl(file, FcntlArg::F_GET_SEALS).is_ok_and(|bits| SealFlag::from_bits_truncate(bits).contains(seals()))
}

/// The exec shim in a sealed memfd (close-on-exec). Make it before fork.
pub struct Shim(OwnedFd);

impl Shim {
    pub fn new() -> Result<Shim> {
        let err = |what: &str, e: &dyn std::fmt::Display| RuntimeError::Setup(format!("exec shim: {what}: {e}"));
        let base = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        // Kernels with vm.memfd_noexec want MFD_EXEC said; older ones refuse the flag.
        let fd = memfd_create(c"ingot-exec", base | MFdFlags::from_bits_retain(libc::MFD_EXEC))
            .or_else(|_| memfd_create(c"ingot-exec", base))
            .map_err(|e| err("memfd_create", &e))?;
        let mut file = File::from(fd);
        file.write_all(SHIM).map_err(|e| err("write", &e))?;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals())).map_err(|e| err("seal", &e))?;
        Ok(Shim(file.into()))
    }

    /// In the child: executes `path` (with `argv`, `envp`) through the
    /// shim. `err_fd` stays open until the command itself is executed, so
    /// a failure is reported on it as `CODE\nMESSAGE`. Returns only if the
    /// shim could not be executed.
    pub(crate) fn exec(&self, path: &CStr, argv: &[CString], envp: &[CString], err_fd: Option<RawFd>) -> nix::Error {
        // Nothing of the host's beyond stdio crosses into the command: every
        // other descriptor (a socket of the daemon that started the
        // monitor, say) closes on exec, whoever forgot CLOEXEC on it.
        // SAFETY: close_range only sets flags on descriptors of this
        // process; no memory is passed.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        if rc != 0 {
            return nix::Error::last();
        }
        if let Some(fd) = err_fd {
            // The shim closes it again (close-on-exec) before executing the command.
            // SAFETY: the caller's descriptor, open for as long as this call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if let Err(e) = fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())) {
                return e;
            }
        }
        let mut args: Vec<&CStr> = Vec::with_capacity(argv.len() + 3);
        let fd = CString::new(err_fd.map_or_else(|| "stderr".to_string(), |fd| fd.to_string())).unwrap_or_default();
        args.push(c"ingot-exec");
        args.push(&fd);
        args.push(path);
        args.extend(argv.iter().map(CString::as_c_str));
        match nix::unistd::fexecve(self.0.as_fd(), &args, envp) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn the_shim_is_sealed_against_writes() {
        let shim = super::Shim::new().unwrap();
        let file = std::fs::File::from(shim.0.try_clone().unwrap());
        assert!(super::is_sealed(&file));
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)))
            .unwrap();
        let e = w.write_all(b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }
}
