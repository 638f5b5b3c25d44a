//! Privileges: Docker's default capability set and a default seccomp filter.

use std::collections::BTreeMap;

use caps::{CapSet, Capability};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

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

/// Syscalls a container may not make (EPERM), as `("SYS_name", number)`:
/// what Docker's default profile leaves out of its allow list for a
/// container without extra capabilities. Both backends use this one list.
pub const DENIED: &[(&str, i64)] = syscalls![
    SYS_acct,
    SYS_add_key,
    SYS_bpf,
    SYS_clock_adjtime,
    SYS_clock_settime,
    SYS_delete_module,
    SYS_finit_module,
    SYS_get_mempolicy,
    SYS_init_module,
    SYS_ioperm,
    SYS_iopl,
    SYS_kcmp,
    SYS_kexec_file_load,
    SYS_kexec_load,
    SYS_keyctl,
    SYS_lookup_dcookie,
    SYS_mbind,
    SYS_mount,
    SYS_move_pages,
    SYS_name_to_handle_at,
    SYS_nfsservctl,
    SYS_open_by_handle_at,
    SYS_perf_event_open,
    SYS_pivot_root,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_ptrace,
    SYS_quotactl,
    SYS_reboot,
    SYS_request_key,
    SYS_set_mempolicy,
    SYS_setns,
    SYS_settimeofday,
    SYS_swapon,
    SYS_swapoff,
    SYS_sysfs,
    SYS__sysctl,
    SYS_umount2,
    SYS_unshare,
    SYS_uselib,
    SYS_userfaultfd,
    SYS_ustat,
    SYS_vhangup,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_move_mount,
    SYS_open_tree,
];

/// The kernel's name of a [`DENIED`] entry (`SYS_acct` -> `acct`).
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

/// The default filters, compiled before fork so the child only installs them.
pub fn default_seccomp() -> Result<Vec<BpfProgram>> {
    let err = |e: &dyn std::fmt::Display| RuntimeError::Setup(format!("seccomp filter: {e}"));
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(&e))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&(_, n)| (n, Vec::new())).collect();
    let clone_rules = NS_FLAGS
        .iter()
        .map(|&flag| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(|e| err(&e))?])
            .map_err(|e| err(&e))
        })
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| err(&e))?;
    // clone3 carries its flags in memory a filter cannot read: report it as
    // missing so that libc falls back to clone, which is filtered above.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| err(&e))?;
    Ok(vec![
        deny.try_into().map_err(|e: seccompiler::BackendError| err(&e))?,
        clone3.try_into().map_err(|e: seccompiler::BackendError| err(&e))?,
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_compile() {
        let progs = super::default_seccomp().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs[0].len() > super::DENIED.len());
    }
}
