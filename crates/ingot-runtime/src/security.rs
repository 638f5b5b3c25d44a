//! Privileges: Docker's default capability set and a default seccomp filter.

use caps::{CapSet, Capability};
use seccompiler::BpfProgram;

use crate::error::{Result, RuntimeError};

/// The capabilities Docker grants a container by default.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Drops every capability outside [`DEFAULT_CAPS`] from the bounding set.
/// Must run before changing user.
pub fn drop_bounding() -> std::result::Result<(), String> {
    for cap in caps::all() {
        if !DEFAULT_CAPS.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| format!("drop {cap} from bounding set: {e}"))?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets to the default (for
/// root); a non-root user keeps none, as with Docker.
pub fn set_process_caps(uid: u32) -> std::result::Result<(), String> {
    let set: caps::CapsHashSet = if uid == 0 {
        DEFAULT_CAPS.into_iter().collect()
    } else {
        Default::default()
    };
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, &set).map_err(|e| format!("set inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, &set).map_err(|e| format!("set effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &set).map_err(|e| format!("set permitted capabilities: {e}"))?;
    Ok(())
}

/// `[("SYS_name", number), ...]` from libc's syscall constants.
macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        &[$((stringify!($sys), libc::$sys)),*]
    };
}

/// Syscalls a container may make unconditionally, as `("SYS_name",
/// number)`: the allow list of Docker's default profile for a container
/// with Docker's default capabilities (so also `chroot`), without what
/// Docker has since removed (the `io_uring_*` calls). Everything else is
/// refused with EPERM, but for the conditional rules below ([`NS_FLAGS`]
/// for clone, [`PERSONALITIES`], sockets other than AF_VSOCK) and clone3,
/// which answers ENOSYS. Both backends use this one list.
pub const ALLOWED: &[(&str, i64)] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_access,
    SYS_adjtimex,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chmod,
    SYS_chown,
    SYS_chroot,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_creat,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_wait,
    SYS_eventfd,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fanotify_mark,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fork,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_futimesat,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpgrp,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_get_robust_list,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_get_thread_area,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_ioctl,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_io_setup,
    SYS_io_submit,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lchown,
    SYS_lgetxattr,
    SYS_link,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_lstat,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_mincore,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_mknod,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_modify_ldt,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_pause,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe,
    SYS_pipe2,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_mrelease,
    SYS_pselect6,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlink,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rmdir,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_select,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_set_robust_list,
    SYS_setsid,
    SYS_setsockopt,
    SYS_set_thread_area,
    SYS_set_tid_address,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd,
    SYS_signalfd4,
    SYS_socketpair,
    SYS_splice,
    SYS_stat,
    SYS_statfs,
    SYS_statx,
    SYS_symlink,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_time,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlink,
    SYS_unlinkat,
    SYS_utime,
    SYS_utimensat,
    SYS_utimes,
    SYS_vfork,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
    SYS_clone3,
];

/// The kernel's name of an [`ALLOWED`] entry (`SYS_acct` -> `acct`).
pub fn syscall_name(sys: &str) -> &str {
    sys.strip_prefix("SYS_").unwrap_or(sys)
}

/// clone() flags that create namespaces: refused, as Docker refuses them
/// without CAP_SYS_ADMIN.
pub const NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// personality() personas a container may set (as Docker): PER_LINUX,
/// PER_LINUX32, UNAME26 with either, and the query 0xffffffff. Anything
/// else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) is refused.
pub const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The one address family socket() refuses (as Docker): AF_VSOCK.
pub const REFUSED_FAMILY: u64 = libc::AF_VSOCK as u64;

/// What the filter does with one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// EPERM, as Docker's default action.
    Refuse,
    /// ENOSYS: clone3, whose flags are in memory a filter cannot read;
    /// libc then falls back to clone, whose flags are checked.
    Enosys,
    /// clone: allowed without [`NS_FLAGS`].
    Clone,
    /// personality: allowed for [`PERSONALITIES`].
    Personality,
    /// socket: allowed but for [`REFUSED_FAMILY`].
    Socket,
}

fn verdict(nr: i64) -> Verdict {
    match nr {
        libc::SYS_clone3 => Verdict::Enosys,
        libc::SYS_clone => Verdict::Clone,
        libc::SYS_personality => Verdict::Personality,
        libc::SYS_socket => Verdict::Socket,
        _ if ALLOWED.iter().any(|&(_, n)| n == nr) => Verdict::Allow,
        _ => Verdict::Refuse,
    }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("ingot's seccomp filter knows x86_64 and aarch64");
#[cfg(not(target_endian = "little"))]
compile_error!("the filter reads the low word of a syscall argument at offset 16");

// Classic BPF as seccomp runs it (linux/filter.h, linux/seccomp.h).
const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const AND: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K
/// Offsets in `struct seccomp_data`: nr, arch, the low word of args[0].
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// The leaf for one run of syscall numbers (the number is in A).
fn leaf(v: Verdict) -> Vec<seccompiler::sock_filter> {
    match v {
        Verdict::Allow => vec![op(RET, 0, 0, ALLOW)],
        Verdict::Refuse => vec![op(RET, 0, 0, EPERM)],
        Verdict::Enosys => vec![op(RET, 0, 0, ENOSYS)],
        Verdict::Clone => {
            // Namespace flags live in the low word of the flags argument.
            let mask = NS_FLAGS.iter().fold(0, |m, f| m | f) as u32;
            vec![
                op(LD_ABS, 0, 0, ARG0_LOW),
                op(AND, 0, 0, mask),
                op(JEQ, 0, 1, 0),
                op(RET, 0, 0, ALLOW),
                op(RET, 0, 0, EPERM),
            ]
        }
        Verdict::Personality => {
            let n = PERSONALITIES.len();
            let mut prog = vec![op(LD_ABS, 0, 0, ARG0_LOW)];
            for (i, &p) in PERSONALITIES.iter().enumerate() {
                // Past the other checks and the refusal, to the ALLOW.
                prog.push(op(JEQ, (n - i) as u8, 0, p as u32));
            }
            prog.push(op(RET, 0, 0, EPERM));
            prog.push(op(RET, 0, 0, ALLOW));
            prog
        }
        Verdict::Socket => vec![
            op(LD_ABS, 0, 0, ARG0_LOW),
            op(JEQ, 0, 1, REFUSED_FAMILY as u32),
            op(RET, 0, 0, EPERM),
            op(RET, 0, 0, ALLOW),
        ],
    }
}

/// A binary search over `runs` (each the first number of a run of
/// numbers with one verdict, in order), so a syscall costs a handful of
/// comparisons and the kernel's per-number cache is built quickly.
fn search(runs: &[(u32, Verdict)]) -> Vec<seccompiler::sock_filter> {
    if runs.len() == 1 {
        return leaf(runs[0].1);
    }
    let mid = runs.len() / 2;
    let (below, from) = (search(&runs[..mid]), search(&runs[mid..]));
    let mut prog = Vec::with_capacity(below.len() + from.len() + 2);
    match u8::try_from(below.len()) {
        Ok(skip) => prog.push(op(JGE, skip, 0, runs[mid].0)),
        Err(_) => {
            // Too far for a conditional jump: through an unconditional one.
            prog.push(op(JGE, 0, 1, runs[mid].0));
            prog.push(op(JA, 0, 0, below.len() as u32));
        }
    }
    prog.extend(below);
    prog.extend(from);
    prog
}

/// The default filter, compiled before fork so the child only installs
/// it: the allow list (default EPERM), the conditional rules, clone3
/// answering ENOSYS; another architecture's calls (x86's int 0x80) kill
/// the process, x32 numbers are refused. A binary search rather than a
/// chain of comparisons: installing it costs microseconds, not the
/// millisecond a 1,500-instruction chain did.
pub fn default_seccomp() -> Result<Vec<BpfProgram>> {
    let top = ALLOWED.iter().map(|&(_, n)| n).max().unwrap_or(0) + 1;
    let mut runs: Vec<(u32, Verdict)> = Vec::new();
    for nr in 0..=top {
        let v = verdict(nr);
        if runs.last().is_none_or(|&(_, last)| last != v) {
            runs.push((nr as u32, v));
        }
    }
    let mut prog = vec![
        op(LD_ABS, 0, 0, ARCH),
        op(JEQ, 1, 0, AUDIT_ARCH),
        op(RET, 0, 0, KILL),
        op(LD_ABS, 0, 0, NR),
    ];
    prog.extend(search(&runs));
    // The kernel's BPF_MAXINSNS.
    if prog.len() > 4096 {
        return Err(RuntimeError::Setup(format!(
            "seccomp filter: {} instructions, more than BPF allows",
            prog.len()
        )));
    }
    Ok(vec![prog])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` as the kernel would on (arch, nr, low word of args[0]).
    fn run(prog: &[seccompiler::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                LD_ABS => {
                    a = match i.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0_LOW => arg0,
                        k => panic!("load of offset {k}"),
                    }
                }
                AND => a &= i.k,
                JA => pc += i.k as usize,
                JEQ => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGE => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                RET => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn the_filter_decides_every_number_as_the_lists_say() {
        let progs = default_seccomp().unwrap();
        assert_eq!(progs.len(), 1);
        let prog = &progs[0];
        assert!(prog.len() < 600, "{} instructions", prog.len());
        let ns = NS_FLAGS.iter().fold(0, |m, f| m | f) as u32;
        for nr in 0..2000u32 {
            let allowed = ALLOWED.iter().any(|&(_, n)| n == i64::from(nr));
            for arg0 in [
                0,
                1,
                ns,
                libc::CLONE_NEWUSER as u32,
                0x8,
                0x20008,
                0x0040_0000,
                REFUSED_FAMILY as u32,
                2,
            ] {
                let expect = match i64::from(nr) {
                    libc::SYS_clone3 => ENOSYS,
                    libc::SYS_clone if arg0 & ns == 0 => ALLOW,
                    libc::SYS_personality if PERSONALITIES.contains(&u64::from(arg0)) => ALLOW,
                    libc::SYS_socket if u64::from(arg0) != REFUSED_FAMILY => ALLOW,
                    libc::SYS_clone | libc::SYS_personality | libc::SYS_socket => EPERM,
                    _ if allowed => ALLOW,
                    _ => EPERM,
                };
                assert_eq!(run(prog, AUDIT_ARCH, nr, arg0), expect, "syscall {nr}, arg0 {arg0:#x}");
            }
        }
        // x32 numbers, and numbers far past the table.
        for nr in [0x4000_0000, 0x4000_0000 | libc::SYS_getpid as u32, u32::MAX] {
            assert_eq!(run(prog, AUDIT_ARCH, nr, 0), EPERM, "{nr:#x}");
        }
        // Another architecture's calls (x86's int 0x80).
        assert_eq!(run(prog, 0x4000_0003, libc::SYS_getpid as u32, 0), KILL);
    }

    #[test]
    fn docker_refusals_are_not_on_the_list() {
        for refused in [
            "ptrace",
            "mount",
            "io_uring_setup",
            "syslog",
            "keyctl",
            "bpf",
            "unshare",
            "setns",
        ] {
            assert!(!ALLOWED.iter().any(|(n, _)| syscall_name(n) == refused), "{refused}");
        }
    }
}
