//! The container's first process, between fork and exec.
//!
//! Order matters: join our cgroup (where the host lets a process move
//! itself: see [`crate::cgroups::Cgroup::self_join_files`]); namespaces;
//! root filesystem and pivot; loopback; hostname; wait for the parent to
//! have wired our network (and placed us in our cgroup where we could not);
//! cgroup namespace; user lookup inside the new root; bounding
//! set; groups and ids; process capabilities; no_new_privs; seccomp; exec.
//! Where the parent moves us into the cgroup (v2), it does so right after
//! fork, while we set up the root filesystem. Any failure is written to the
//! error pipe as `CODE\nMESSAGE` and the process exits with CODE (125, or
//! 126/127 for an unusable or missing command, as Docker).

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sched::{unshare, CloneFlags};
use seccompiler::BpfProgram;

use crate::rootfs::{self, RootPlan};
use crate::sealed::Shim;
use crate::spec::{ContainerSpec, NetworkMode};
use crate::user;

/// Everything the child uses, prepared before fork.
pub struct InitPlan<'a> {
    pub spec: &'a ContainerSpec,
    pub container_dir: &'a Path,
    pub lowers: &'a [PathBuf],
    pub seccomp: &'a [BpfProgram],
    /// The contents of `spec.files`, in order.
    pub files: &'a [Vec<u8>],
    /// What execs the command (see [`crate::sealed`]).
    pub shim: &'a Shim,
    /// stdout/stderr files for a detached container; `None` inherits.
    pub logs: Option<(RawFd, RawFd)>,
    /// The cgroup files the child writes "0" to, joining its cgroup itself
    /// as its first step (see [`crate::cgroups::Cgroup::self_join_files`]);
    /// empty when the parent moves it.
    pub cgroup_tasks: &'a [CString],
}

/// Runs in the forked child; never returns.
/// `ready_write` gets one byte once the namespaces exist (the parent then
/// wires the network namespace); `sync_read` one byte back when the parent
/// is done, read once the root filesystem is ready, just before exec.
pub fn run(plan: &InitPlan, ready_write: RawFd, sync_read: RawFd, err_write: RawFd) -> ! {
    let fail = |code: i32, msg: String| -> ! {
        let text = format!("{code}\n{msg}");
        // SAFETY: writing a buffer to a pipe we own, then exiting without
        // running the parent's destructors.
        unsafe {
            libc::write(err_write, text.as_ptr().cast(), text.len());
            libc::_exit(code)
        }
    };
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if let Some((out, err)) = plan.logs {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            libc::dup2(null, 0);
            libc::dup2(out, 1);
            libc::dup2(err, 2);
        }
    }
    for file in plan.cgroup_tasks {
        // SAFETY: a NUL-terminated path; a local buffer; a descriptor we close.
        let joined = unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let e = std::io::Error::last_os_error();
            if fd >= 0 {
                libc::close(fd);
            }
            if ok {
                Ok(())
            } else {
                Err(e)
            }
        };
        if let Err(e) = joined {
            fail(125, format!("cgroup {}: cannot join: {e}", file.to_string_lossy()));
        }
    }
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if plan.spec.network != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        fail(125, format!("unshare namespaces: {e}"));
    }
    // SAFETY: writing one byte from a local buffer, then closing our end.
    unsafe {
        libc::write(ready_write, b"r".as_ptr().cast(), 1);
        libc::close(ready_write);
    }
    let root = RootPlan {
        spec: plan.spec,
        container_dir: plan.container_dir,
        lowers: plan.lowers,
        files: plan.files,
    };
    if let Err(e) = rootfs::setup(&root) {
        fail(125, e);
    }
    if plan.spec.network != NetworkMode::Host {
        if let Err(e) = crate::net::loopback_up() {
            fail(125, e);
        }
    }
    if let Err(e) = nix::unistd::sethostname(&plan.spec.hostname) {
        fail(125, format!("sethostname: {e}"));
    }
    let mut go = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    if unsafe { libc::read(sync_read, go.as_mut_ptr().cast(), 1) } != 1 {
        // The parent went away before starting us: leave quietly.
        unsafe { libc::_exit(125) }
    }
    // Now in our cgroup: make it the cgroup namespace's root.
    if unshare(CloneFlags::CLONE_NEWCGROUP).is_err() {
        tracing::debug!("no cgroup namespace on this kernel");
    }
    become_and_exec(plan.spec, &plan.spec.args, plan.seccomp, plan.shim, Some(err_write))
}

/// From inside the container's root: the user (looked up in its
/// /etc/passwd and /etc/group), the bounding set, groups and ids, process
/// capabilities, working directory, no_new_privs, seccomp, then exec of
/// `args` with the spec's environment, through the sealed exec shim. Shared by a container's first
/// process and by [`crate::exec`]. Never returns.
/// A failure is written to `err_write` as `CODE\nMESSAGE` (else to
/// stderr) and the process exits with CODE.
pub(crate) fn become_and_exec(
    spec: &ContainerSpec,
    args: &[String],
    seccomp: &[BpfProgram],
    shim: &Shim,
    err_write: Option<RawFd>,
) -> ! {
    let fail = |code: i32, msg: String| -> ! {
        match err_write {
            Some(fd) => {
                let text = format!("{code}\n{msg}");
                // SAFETY: writing a buffer to a pipe we own.
                unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
            }
            None => eprintln!("ingot: exec: {msg}"),
        }
        // SAFETY: leaving without running the parent's destructors.
        unsafe { libc::_exit(code) }
    };
    if args.is_empty() {
        fail(125, "no command".into());
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let group = std::fs::read_to_string("/etc/group").ok();
    let id = user::resolve(&spec.user, passwd.as_deref(), group.as_deref()).unwrap_or_else(|e| fail(125, e));
    if let Err(e) = crate::security::drop_bounding() {
        fail(125, e);
    }
    let gids: Vec<nix::unistd::Gid> = id.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&gids) {
        fail(125, format!("setgroups: {e}"));
    }
    if let Err(e) = nix::unistd::setgid(nix::unistd::Gid::from_raw(id.gid)) {
        fail(125, format!("setgid {}: {e}", id.gid));
    }
    if let Err(e) = nix::unistd::setuid(nix::unistd::Uid::from_raw(id.uid)) {
        fail(125, format!("setuid {}: {e}", id.uid));
    }
    if id.uid == 0 {
        if let Err(e) = crate::security::set_process_caps(0) {
            fail(125, e);
        }
    }
    if let Err(e) = std::env::set_current_dir(&spec.cwd) {
        fail(125, format!("chdir to {}: {e}", spec.cwd));
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        fail(125, format!("no_new_privs: {e}"));
    }
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", if id.home.is_empty() { "/" } else { &id.home }));
    }
    let program = find_program(&args[0], &env).unwrap_or_else(|(code, msg)| fail(code, msg));
    let to_c = |s: &str| CString::new(s).unwrap_or_else(|_| fail(125, format!("NUL byte in {s:?}")));
    let argv: Vec<CString> = args.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let path = CString::new(program.as_os_str().as_bytes()).unwrap_or_else(|_| fail(125, "NUL byte in path".into()));
    for prog in seccomp {
        if let Err(e) = seccompiler::apply_filter(prog) {
            fail(125, format!("seccomp: {e}"));
        }
    }
    let err = shim.exec(&path, &argv, &envp, err_write);
    fail(126, format!("exec {:?} through the exec shim: {err}", args[0]))
}

/// Finds the command as execvp would, in the container's PATH.
fn find_program(cmd: &str, env: &[String]) -> Result<PathBuf, (i32, String)> {
    let check = |p: &Path| -> Result<PathBuf, (i32, String)> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err((126, format!("exec {cmd:?}: is a directory"))),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Err((126, format!("exec {cmd:?}: permission denied"))),
            Ok(_) => Ok(p.to_path_buf()),
            Err(_) => Err((127, format!("exec {cmd:?}: no such file or directory"))),
        }
    };
    if cmd.contains('/') {
        return check(Path::new(cmd));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        match check(&Path::new(dir).join(cmd)) {
            Ok(p) => return Ok(p),
            Err(e) if e.0 == 126 => denied = Some(e),
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or((127, format!("exec {cmd:?}: executable file not found in $PATH"))))
}
