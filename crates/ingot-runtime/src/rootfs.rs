//! The container's root filesystem, set up inside its new mount namespace.
//!
//! Overlay of the cached layers (top first) with a per-container upper
//! directory; `/proc`, a minimal `/dev`, read-only `/sys`, tmpfs on `/tmp`
//! and `/run`, the hostname/hosts/resolv.conf files, user binds and tmpfs
//! mounts; Docker's masked and read-only `/proc` paths; `pivot_root`; then
//! the root is remounted read-only unless `--read-write`. Every mount target
//! is resolved inside the new root ([`secure_join`]), so a symlink in an
//! image can never point a mount at the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::spec::ContainerSpec;

type R<T> = std::result::Result<T, String>;

/// What the child needs to build the root.
pub struct RootPlan<'a> {
    pub spec: &'a ContainerSpec,
    pub container_dir: &'a Path,
    /// Layer directories, bottom first.
    pub lowers: &'a [PathBuf],
    /// The contents of `spec.files`, in order.
    pub files: &'a [Vec<u8>],
}

/// Files ingot writes for the container before it starts.
/// `address` is the container's bridge address, if it has one.
pub fn write_etc_files(dir: &Path, spec: &ContainerSpec, address: Option<&str>) -> std::io::Result<()> {
    fs::write(dir.join("hostname"), format!("{}\n", spec.hostname))?;
    let hosts = match spec.network {
        crate::spec::NetworkMode::Host => fs::read_to_string("/etc/hosts").unwrap_or_default(),
        _ => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            address.unwrap_or("127.0.1.1"),
            spec.hostname
        ),
    };
    fs::write(dir.join("hosts"), hosts)?;
    let resolv = if spec.dns.is_empty() {
        fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        let mut text: String = spec.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        // A question lost while a replacing daemon takes over (a datagram
        // queued on the old socket when it closes) is asked again after a
        // second, not five.
        text.push_str("options ndots:0 timeout:1 attempts:3\n");
        text
    };
    fs::write(dir.join("resolv.conf"), resolv)?;
    Ok(())
}

fn m(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> R<()> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {}: {e}",
            fstype.or(src).unwrap_or("bind"),
            target.display()
        )
    })
}

fn bind(src: &Path, target: &Path, read_only: bool) -> R<()> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} on {}: {e}", src.display(), target.display()))?;
    if read_only {
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("remount {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

/// Builds the root and pivots into it. Runs in the container's first
/// process, in its own mount namespace.
pub fn setup(plan: &RootPlan) -> R<()> {
    let spec = plan.spec;
    let dir = plan.container_dir;
    m(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    let merged = mount_overlay(dir, plan.lowers)?;
    let mut made = Made {
        root: merged.clone(),
        paths: Vec::new(),
        record: spec.build_step,
    };

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = made.dir("/proc")?;
    m(Some("proc"), &proc_dir, Some("proc"), nosuid_nodev_noexec, None)?;
    let dev = made.dir("/dev")?;
    m(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(&dev)?;
    let sys = made.dir("/sys")?;
    if m(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )
    .is_err()
    {
        bind(Path::new("/sys"), &sys, true)?;
    }
    let defaults: &[(&str, &str)] = if spec.build_step {
        &[]
    } else {
        &[("/tmp", "1777"), ("/run", "755")]
    };
    for &(path, mode) in defaults {
        let target = made.dir(path)?;
        m(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&format!("mode={mode}")),
        )?;
    }
    for name in ["hostname", "hosts", "resolv.conf"] {
        let target = made.file(&format!("/etc/{name}"))?;
        bind(&dir.join(name), &target, false)?;
    }
    // Shallower targets first (as Docker), so a mount inside another's
    // target lands on top of it, whatever its kind.
    enum Item<'b> {
        Bind(&'b crate::spec::Bind),
        File(usize),
        Tmpfs(&'b str),
    }
    let mut items: Vec<(&str, Item)> = spec.binds.iter().map(|b| (b.target.as_str(), Item::Bind(b))).collect();
    items.extend(
        spec.files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.target.as_str(), Item::File(i))),
    );
    items.extend(spec.tmpfs.iter().map(|t| (t.as_str(), Item::Tmpfs(t))));
    items.sort_by_key(|(target, _)| target.split('/').filter(|c| !c.is_empty()).count());
    let files = write_files(plan)?;
    for (_, item) in items {
        match item {
            Item::Bind(b) => {
                // The source is opened refusing symlinks anywhere in its path
                // and mounted through that descriptor: a link swapped in after
                // the deployer checked the path cannot lead elsewhere.
                let src = open_no_symlinks(&b.source)?;
                let is_dir = fs::metadata(&src).map(|m| m.is_dir()).unwrap_or(false);
                let target = if is_dir {
                    made.dir(&b.target)?
                } else {
                    made.file(&b.target)?
                };
                if b.copy_up {
                    copy_up(&target, &b.source)?;
                }
                let src = if b.copy_up { open_no_symlinks(&b.source)? } else { src };
                bind(&src, &target, b.read_only)?;
            }
            Item::File(i) => {
                let f = &spec.files[i];
                let src = files
                    .as_ref()
                    .map(|d| d.join(i.to_string()))
                    .ok_or("no files directory")?;
                bind(&src, &made.file(&f.target)?, true)?;
            }
            Item::Tmpfs(t) => {
                let target = made.dir(t)?;
                m(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777"),
                )?;
            }
        }
    }
    mask_paths(&merged)?;
    mkdirs(&merged, &spec.cwd)?;
    if spec.build_step {
        // The working directory is the image's (WORKDIR makes it), even
        // where a mount's target made it first.
        let cwd = Path::new(spec.cwd.trim_start_matches('/'));
        made.paths.retain(|p| !cwd.starts_with(p));
        made.save(&dir.join(MADE))?;
    }

    // pivot_root(".", ".") stacks the old root under the new one; detach it.
    nix::unistd::chdir(&merged).map_err(|e| format!("chdir {}: {e}", merged.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    if spec.read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        m(None, Path::new("/"), None, flags, None).map_err(|e| format!("read-only root: {e}"))?;
    }
    Ok(())
}

/// Writes the files (secrets, configs with an owner or mode) on a tmpfs of
/// their own (mounted in the container's mount namespace only: the host
/// never sees it, and it goes with the container); `setup` binds each,
/// read-only, at its target. Returns that directory.
fn write_files(plan: &RootPlan) -> R<Option<PathBuf>> {
    let files = &plan.spec.files;
    if files.is_empty() {
        return Ok(None);
    }
    if plan.files.len() != files.len() {
        return Err(format!("{} files, {} contents", files.len(), plan.files.len()));
    }
    let dir = plan.container_dir.join("files");
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let size: usize = plan.files.iter().map(|v| v.len() + 4096).sum();
    m(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(&format!("mode=700,size={size}")),
    )?;
    for (i, (f, value)) in files.iter().zip(plan.files).enumerate() {
        let src = dir.join(i.to_string());
        let fail = |e: std::io::Error| format!("file {}: {e}", f.target);
        fs::write(&src, value).map_err(fail)?;
        std::os::unix::fs::chown(&src, Some(f.uid), Some(f.gid)).map_err(fail)?;
        fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(f.mode)).map_err(fail)?;
    }
    Ok(Some(dir))
}

/// `/proc/self/fd/N` of `path` opened with no symlink followed anywhere in
/// it (openat2 RESOLVE_NO_SYMLINKS); the descriptor stays open (the child
/// execs or exits soon, and it is close-on-exec).
fn open_no_symlinks(path: &Path) -> R<PathBuf> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    let fd = openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| format!("bind source {}: {e} (a symbolic link in it is refused)", path.display()))?;
    let proc = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
    std::mem::forget(fd);
    Ok(proc)
}

/// Mounts the overlay of `lowers` (bottom first) under the container's
/// upper directory at `<dir>/merged`, in the caller's mount namespace.
pub(crate) fn mount_overlay(dir: &Path, lowers: &[PathBuf]) -> R<PathBuf> {
    let merged = dir.join("merged");
    let lower: Vec<String> = lowers.iter().rev().map(|p| p.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    m(Some("overlay"), &merged, Some("overlay"), MsFlags::empty(), Some(&opts))?;
    Ok(merged)
}

/// A minimal /dev: the usual character devices, pts, shm and the fd links.
fn populate_dev(dev: &Path) -> R<()> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", p.display()))?;
        // mknod is subject to the umask.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    for d in ["pts", "shm", "mqueue"] {
        fs::create_dir(dev.join(d)).map_err(|e| format!("mkdir /dev/{d}: {e}"))?;
    }
    m(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    m(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    m(
        Some("mqueue"),
        &dev.join("mqueue"),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .ok();
    Ok(())
}

/// Docker's masked paths: hidden from the container.
pub const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Hides [`MASKED_PATHS`] and makes [`READONLY_PATHS`] read-only.
fn mask_paths(root: &Path) -> R<()> {
    for p in MASKED_PATHS {
        let target = root.join(&p[1..]);
        match fs::symlink_metadata(&target) {
            Ok(md) if md.is_dir() => m(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => bind(Path::new("/dev/null"), &target, false)?,
            Err(_) => {}
        }
    }
    for p in READONLY_PATHS {
        let target = root.join(&p[1..]);
        if target.exists() {
            bind(&target, &target, true)?;
        }
    }
    Ok(())
}

/// Resolves `path` inside `root` as if `root` were `/`: symlinks are
/// followed but can never lead outside it, `..` stops at it.
pub fn secure_join(root: &Path, path: &str) -> R<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: VecDeque<OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        match fs::symlink_metadata(root.join(&candidate)) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 255 {
                    return Err(format!("{path}: too many levels of symbolic links"));
                }
                let target = fs::read_link(root.join(&candidate)).map_err(|e| format!("{path}: {e}"))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut next: VecDeque<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(p) => Some(p.to_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                next.extend(pending);
                pending = next;
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Fills an empty volume directory `volume` with what the image has at
/// `image_dir` (files, directories and symlinks, owners and modes kept),
/// as Docker does the first time a volume is mounted; a volume with
/// anything in it is left alone.
///
/// The copy is made beside the volume's data directory, where no container
/// sees it, then renamed over the empty directory in one step: nothing is
/// written through a path a container could change, and when a container
/// uses the volume already (the rename fails, EBUSY) or another start
/// filled it first (ENOTEMPTY), the copy is dropped.
pub(crate) fn copy_up(image_dir: &Path, volume: &Path) -> R<()> {
    let empty = fs::read_dir(volume)
        .map(|mut d| d.next().is_none())
        .map_err(|e| format!("volume {}: {e}", volume.display()))?;
    if !empty || !image_dir.is_dir() {
        return Ok(());
    }
    let parent = volume.parent().ok_or("a volume directory has a parent")?;
    let staging = parent.join(format!(".fill-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let copied = fs::create_dir(&staging).and_then(|_| copy_tree(image_dir, &staging));
    if copied.is_ok() && fs::rename(&staging, volume).is_ok() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&staging);
    copied.map_err(|e| format!("copy {} into its volume: {e}", image_dir.display()))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(from)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let m = fs::symlink_metadata(&src)?;
        let kind = m.file_type();
        if kind.is_dir() {
            fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            continue; // devices, fifos, sockets: not data
        }
        std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()))?;
        if !kind.is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// Creates directory `path` inside `root` (safely) and returns it.
pub(crate) fn mkdirs(root: &Path, path: &str) -> R<PathBuf> {
    let p = secure_join(root, path)?;
    fs::create_dir_all(&p).map_err(|e| format!("create {path} in the container: {e}"))?;
    Ok(p)
}

/// The file in a build step's container directory listing what [`setup`]
/// made inside the root for mounts (paths relative to it, each ending in
/// a NUL byte, parents first): the step leaves them out of its layer, as
/// `docker build` leaves out /etc/hosts and mount points.
pub const MADE: &str = "made";

/// Makes mount targets inside the root, noting every path that was not
/// there before.
struct Made {
    root: PathBuf,
    paths: Vec<PathBuf>,
    /// Only a build step needs the list: other starts skip the lookups.
    record: bool,
}

impl Made {
    /// Notes the components of `p` (inside the root) that do not exist yet.
    fn note(&mut self, p: &Path) {
        if !self.record {
            return;
        }
        let mut missing = Vec::new();
        let mut cur = Some(p);
        while let Some(c) = cur.filter(|c| *c != self.root && c.symlink_metadata().is_err()) {
            missing.push(c);
            cur = c.parent();
        }
        for m in missing.into_iter().rev() {
            if let Ok(rel) = m.strip_prefix(&self.root) {
                self.paths.push(rel.to_path_buf());
            }
        }
    }

    /// A directory at `path` (for a mount).
    fn dir(&mut self, path: &str) -> R<PathBuf> {
        let p = secure_join(&self.root, path)?;
        self.note(&p);
        fs::create_dir_all(&p).map_err(|e| format!("create {path} in the container: {e}"))?;
        Ok(p)
    }

    /// A file at `path` (for a bind target).
    fn file(&mut self, path: &str) -> R<PathBuf> {
        let p = secure_join(&self.root, path)?;
        self.note(&p);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("create {path} in the container: {e}"))?;
        }
        if !p.exists() {
            fs::write(&p, b"").map_err(|e| format!("create {path} in the container: {e}"))?;
        }
        Ok(p)
    }

    fn save(&self, to: &Path) -> R<()> {
        let mut out = Vec::new();
        for p in &self.paths {
            out.extend_from_slice(p.as_os_str().as_encoded_bytes());
            out.push(0);
        }
        fs::write(to, out).map_err(|e| format!("write {}: {e}", to.display()))
    }
}

/// What a build step's [`setup`] made inside its root (see [`MADE`]).
pub fn made(container_dir: &Path) -> Vec<PathBuf> {
    let bytes = fs::read(container_dir.join(MADE)).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_never_leaves_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        symlink("../../../../..", root.join("usr/up")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        assert_eq!(secure_join(root, "/etc-link/hosts").unwrap(), root.join("etc/hosts"));
        assert_eq!(secure_join(root, "/usr/up/x").unwrap(), root.join("x"));
        assert_eq!(secure_join(root, "/lib/x").unwrap(), root.join("usr/lib/x"));
        assert_eq!(secure_join(root, "/../../a").unwrap(), root.join("a"));
        assert!(secure_join(root, "/loop1").is_err());
    }
}
