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

/// Syscalls a container may not make (EPERM): what Docker's default profile
/// leaves out of its allow list for a container without extra capabilities.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    libc::SYS_ustat,
    libc::SYS_vhangup,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
];

/// clone() flags that create namespaces: refused, as Docker refuses them
/// without CAP_SYS_ADMIN.
const NS_FLAGS: [u64; 7] = [
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
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&n| (n, Vec::new())).collect();
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
