//! Layer tarballs: one safe reader shared by rewriting and unpacking.
//!
//! Every entry goes through [`inspect_entry`], which refuses what could
//! escape or harm the target: absolute paths, `..` components, device
//! nodes, unknown entry types, absurd sizes and counts. Unpacking then also
//! refuses to write through a symlink or to hard-link to anything outside
//! the target, and applies OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) to
//! what earlier layers left in the target directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Name prefix of an OCI whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Bounds on what one layer may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entry_size: u64,
    pub max_total_size: u64,
    pub max_entries: u64,
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_size: 64 << 30,
            max_total_size: 1 << 40,
            max_entries: 10_000_000,
            max_path_len: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("corrupt or truncated tar: {0}")]
    Tar(#[source] io::Error),
    #[error("refused tar entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("tar entry {entry:?}: {what}")]
    Limit { entry: String, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LayerError {
    fn unsafe_entry(entry: &Path, reason: impl Into<String>) -> Self {
        LayerError::Unsafe {
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kinds of entry a layer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
}

/// A validated entry header.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// Relative, normalised path: no root, no `.` or `..` components.
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Symlink target as written (it is never followed), or the normalised
    /// in-archive path of a hard link's target.
    pub link: Option<PathBuf>,
}

/// Running totals checked against [`Limits`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
}

/// Normalises an archive path: strips `./` and a trailing `/`, refuses
/// absolute paths, `..` components and empty names.
pub fn clean_path(raw: &[u8], limits: &Limits) -> Result<PathBuf, LayerError> {
    let shown = || PathBuf::from(OsStr::from_bytes(raw));
    if raw.len() > limits.max_path_len {
        return Err(LayerError::Limit {
            entry: String::from_utf8_lossy(&raw[..64.min(raw.len())]).into_owned() + "...",
            what: format!("path longer than {} bytes", limits.max_path_len),
        });
    }
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(LayerError::unsafe_entry(&shown(), "absolute path"))
            }
            Component::ParentDir => return Err(LayerError::unsafe_entry(&shown(), "path contains '..'")),
        }
    }
    Ok(out)
}

/// Validates one entry's header and updates the running totals.
pub fn inspect_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<EntryInfo, LayerError> {
    let path = clean_path(&entry.path_bytes(), limits)?;
    let header = entry.header();
    let kind = match header.entry_type() {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Link => Kind::Hardlink,
        EntryType::Fifo => Kind::Fifo,
        EntryType::Char | EntryType::Block => {
            return Err(LayerError::unsafe_entry(
                &path,
                "device nodes are not allowed in layers",
            ))
        }
        other => {
            return Err(LayerError::unsafe_entry(
                &path,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            ))
        }
    };
    if path.as_os_str().is_empty() && kind != Kind::Dir {
        return Err(LayerError::unsafe_entry(&path, "empty name"));
    }
    let size = entry.size();
    let limit = |what: String| LayerError::Limit {
        entry: path.display().to_string(),
        what,
    };
    if size > limits.max_entry_size {
        return Err(limit(format!(
            "size {size} exceeds the {}-byte entry limit",
            limits.max_entry_size
        )));
    }
    stats.entries += 1;
    stats.bytes = stats.bytes.saturating_add(size);
    if stats.entries > limits.max_entries {
        return Err(limit(format!("more than {} entries", limits.max_entries)));
    }
    if stats.bytes > limits.max_total_size {
        return Err(limit(format!(
            "layer exceeds the {}-byte total limit",
            limits.max_total_size
        )));
    }
    let link = match kind {
        Kind::Symlink | Kind::Hardlink => {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| LayerError::unsafe_entry(&path, "link without a target"))?;
            if raw.is_empty() || raw.len() > limits.max_path_len {
                return Err(LayerError::unsafe_entry(&path, "link target empty or too long"));
            }
            Some(if kind == Kind::Hardlink {
                let target = clean_path(&raw, limits)
                    .map_err(|_| LayerError::unsafe_entry(&path, "hard link target outside the archive"))?;
                if target.as_os_str().is_empty() {
                    return Err(LayerError::unsafe_entry(&path, "hard link to the root"));
                }
                target
            } else {
                PathBuf::from(OsStr::from_bytes(&raw))
            })
        }
        _ => None,
    };
    let id = |v: io::Result<u64>, what: &str| -> Result<u32, LayerError> {
        let v = v.map_err(LayerError::Tar)?;
        u32::try_from(v).map_err(|_| LayerError::unsafe_entry(&path, format!("{what} {v} out of range")))
    };
    Ok(EntryInfo {
        kind,
        size: if matches!(kind, Kind::File) { size } else { 0 },
        mode: header.mode().map_err(LayerError::Tar)? & 0o7777,
        uid: id(header.uid(), "uid")?,
        gid: id(header.gid(), "gid")?,
        mtime: header.mtime().map_err(LayerError::Tar)?,
        link,
        path,
    })
}

/// Re-writes a layer tar into a normalised one: every entry validated, fresh
/// GNU headers with numeric owners only, no extended attributes. Returns the
/// writer and the totals. Entry order is kept.
pub fn normalize<R: Read, W: Write>(input: R, out: W, limits: &Limits) -> Result<(W, Stats), LayerError> {
    let mut archive = tar::Archive::new(input);
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut stats = Stats::default();
    for entry in archive.entries().map_err(LayerError::Tar)? {
        let mut entry = entry.map_err(LayerError::Tar)?;
        let info = inspect_entry(&entry, limits, &mut stats)?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(info.mode);
        h.set_uid(info.uid.into());
        h.set_gid(info.gid.into());
        h.set_mtime(info.mtime);
        let path = if info.path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &info.path
        };
        let res = match info.kind {
            Kind::File => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(info.size);
                builder.append_data(&mut h, path, &mut entry)
            }
            Kind::Dir | Kind::Fifo => {
                h.set_entry_type(if info.kind == Kind::Dir {
                    EntryType::Directory
                } else {
                    EntryType::Fifo
                });
                h.set_size(0);
                builder.append_data(&mut h, path, io::empty())
            }
            Kind::Symlink | Kind::Hardlink => {
                h.set_entry_type(if info.kind == Kind::Symlink {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                });
                h.set_size(0);
                let target = info.link.as_deref().unwrap_or(Path::new(""));
                builder.append_link(&mut h, path, target)
            }
        };
        // A read error here is the input's fault (truncation); report it so.
        res.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::Other => LayerError::Tar(e),
            _ => LayerError::Io {
                path: info.path.clone(),
                source: e,
            },
        })?;
    }
    let out = builder.into_inner().map_err(LayerError::Tar)?;
    Ok((out, stats))
}

/// What [`unpack`] does with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Whiteouts {
    /// Delete what they hide from `dest` (a flattened root filesystem).
    #[default]
    Apply,
    /// Keep them as overlayfs expects in a layer directory of its own:
    /// `.wh.NAME` becomes a 0/0 character device `NAME`, and an opaque
    /// marker sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
}

/// Options for [`unpack`].
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub limits: Limits,
    /// Apply the uid/gid of each entry (only meaningful as root).
    pub same_owner: bool,
    pub whiteouts: Whiteouts,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            limits: Limits::default(),
            same_owner: rustix::process::geteuid().is_root(),
            whiteouts: Whiteouts::Apply,
        }
    }
}

/// Applies one layer onto `dest`, which holds the layers below it (or is
/// empty). Whiteouts remove what lower layers left; nothing is ever written
/// through a symlink or outside `dest`.
pub fn unpack<R: Read>(input: R, dest: &Path, opts: &UnpackOptions) -> Result<Stats, LayerError> {
    let mut archive = tar::Archive::new(input);
    let mut stats = Stats::default();
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    // Directories this call made or found to be real directories: their
    // children need no walk from the root again. Forgotten at any removal.
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    // Into an empty directory, only what this call made can be there:
    // every path it made (entries, the parents it made for them, overlay
    // whiteouts) is in `made` then, and nothing else needs a lookup.
    let fresh = fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none());
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; 256 << 10];
    for entry in archive.entries().map_err(LayerError::Tar)? {
        let mut entry = entry.map_err(LayerError::Tar)?;
        let info = inspect_entry(&entry, &opts.limits, &mut stats)?;
        let Some(name) = info.path.file_name() else {
            // The archive root itself: only its metadata could apply.
            continue;
        };
        let name_bytes = name.as_bytes();
        if opts.whiteouts == Whiteouts::Overlay && name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            dirs.clear();
            overlay_whiteout(dest, &info.path, name_bytes, fresh.then_some(&mut made))?;
            continue;
        }
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            dirs.clear();
            let dir = info.path.parent().unwrap_or(Path::new(""));
            if let Some(abs) = walk_parents(dest, &info.path, false, None, None)? {
                clear_dir(&abs, dir, &created)?;
            }
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(LayerError::unsafe_entry(&info.path, "malformed whiteout"));
            }
            dirs.clear();
            if let Some(parent) = walk_parents(dest, &info.path, false, None, None)? {
                remove_any(&parent.join(OsStr::from_bytes(hidden)))?;
            }
            continue;
        }
        let parent = walk_parents(dest, &info.path, true, Some(&mut dirs), fresh.then_some(&mut made))?
            .expect("parents are created");
        let target = parent.join(name);
        let existing = if fresh && !made.contains(&info.path) {
            None
        } else {
            fs::symlink_metadata(&target).ok()
        };
        match (&existing, info.kind) {
            (Some(m), Kind::Dir) if m.is_dir() => {}
            (Some(_), _) => {
                dirs.clear();
                remove_any(&target)?
            }
            (None, _) => {}
        }
        match info.kind {
            Kind::Dir => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&target).map_err(io_at(&target))?;
                }
                fs::set_permissions(&target, Permissions::from_mode(info.mode)).map_err(io_at(&target))?;
                dirs.insert(info.path.clone());
                dir_times.push((target.clone(), info.mtime));
            }
            Kind::File => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&target)
                    .map_err(io_at(&target))?;
                let n = copy_with(&mut entry, &mut f, &mut buf).map_err(LayerError::Tar)?;
                if n != info.size {
                    return Err(LayerError::Tar(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{}: {n} of {} bytes", info.path.display(), info.size),
                    )));
                }
                // Owner, mode (chown clears set-id bits, so after it) and
                // times through the open file: no path walk each.
                if opts.same_owner {
                    rustix::fs::fchown(&f, Some(uid(info.uid)), Some(gid(info.gid)))
                        .map_err(|e| io_at(&target)(e.into()))?;
                }
                f.set_permissions(Permissions::from_mode(info.mode))
                    .map_err(io_at(&target))?;
                rustix::fs::futimens(&f, &timestamps(info.mtime)).map_err(|e| io_at(&target)(e.into()))?;
                if fresh {
                    made.insert(info.path.clone());
                }
                created.insert(info.path);
                continue;
            }
            Kind::Symlink => {
                let link = info.link.as_deref().unwrap_or(Path::new(""));
                std::os::unix::fs::symlink(link, &target).map_err(io_at(&target))?;
            }
            Kind::Hardlink => {
                let rel = info.link.as_deref().unwrap_or(Path::new(""));
                let src_parent = walk_parents(dest, rel, false, None, None)?
                    .ok_or_else(|| LayerError::unsafe_entry(&info.path, "hard link target does not exist"))?;
                let src = src_parent.join(rel.file_name().unwrap_or_default());
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => {
                        return Err(LayerError::unsafe_entry(
                            &info.path,
                            "hard link target is not a regular file",
                        ))
                    }
                    Err(_) => return Err(LayerError::unsafe_entry(&info.path, "hard link target does not exist")),
                }
                fs::hard_link(&src, &target).map_err(io_at(&target))?;
                if fresh {
                    made.insert(info.path.clone());
                }
                created.insert(info.path.clone());
                continue; // a hard link shares its target's owner and times
            }
            Kind::Fifo => {
                use rustix::fs::{mknodat, FileType, Mode, CWD};
                mknodat(CWD, &target, FileType::Fifo, Mode::from_raw_mode(info.mode & 0o7777), 0)
                    .map_err(|e| io_at(&target)(e.into()))?;
            }
        }
        if opts.same_owner {
            std::os::unix::fs::lchown(&target, Some(info.uid), Some(info.gid)).map_err(io_at(&target))?;
        }
        if info.kind != Kind::Dir {
            set_mtime(&target, info.mtime)?;
        }
        if fresh {
            made.insert(info.path.clone());
        }
        created.insert(info.path);
    }
    // Directory times last: creating children changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    Ok(stats)
}

/// Copies a file's content through one buffer reused for every entry.
fn copy_with(from: &mut impl Read, to: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn uid(id: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id)
}

fn gid(id: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id)
}

/// Records a whiteout the way overlayfs reads it from a lower layer.
fn overlay_whiteout(
    dest: &Path,
    rel: &Path,
    name: &[u8],
    mut made: Option<&mut HashSet<PathBuf>>,
) -> Result<(), LayerError> {
    let parent = walk_parents(dest, rel, true, None, made.as_deref_mut())?.expect("parents are created");
    if name == OPAQUE_MARKER.as_bytes() {
        rustix::fs::lsetxattr(&parent, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .map_err(|e| io_at(&parent)(e.into()))?;
        return Ok(());
    }
    let hidden = &name[WHITEOUT_PREFIX.len()..];
    if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
        return Err(LayerError::unsafe_entry(rel, "malformed whiteout"));
    }
    let target = parent.join(OsStr::from_bytes(hidden));
    remove_any(&target)?;
    // A 0/0 character device is overlayfs' whiteout.
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(
        CWD,
        &target,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .map_err(|e| io_at(&target)(e.into()))?;
    if let Some(m) = made {
        m.insert(rel.with_file_name(OsStr::from_bytes(hidden)));
    }
    Ok(())
}

/// Resolves the parent directory of `rel` inside `root` without following any
/// symlink; creates missing directories when `create` is set, else returns
/// `None` if one is missing. `known` holds directories already resolved
/// (relative to `root`): they are not looked at again, and those resolved
/// here join them.
fn walk_parents(
    root: &Path,
    rel: &Path,
    create: bool,
    mut known: Option<&mut HashSet<PathBuf>>,
    mut made: Option<&mut HashSet<PathBuf>>,
) -> Result<Option<PathBuf>, LayerError> {
    let Some(parent) = rel.parent() else {
        return Ok(Some(root.to_path_buf()));
    };
    if parent.as_os_str().is_empty() || known.as_ref().is_some_and(|k| k.contains(parent)) {
        return Ok(Some(root.join(parent)));
    }
    let mut cur = root.to_path_buf();
    let mut cur_rel = PathBuf::new();
    for comp in parent.components() {
        cur.push(comp);
        cur_rel.push(comp);
        if known.as_ref().is_some_and(|k| k.contains(&cur_rel)) {
            continue;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                let shown = cur.strip_prefix(root).unwrap_or(&cur).display().to_string();
                return Err(LayerError::unsafe_entry(
                    rel,
                    format!("would write through symlink {shown:?}"),
                ));
            }
            Ok(_) => {
                let shown = cur.strip_prefix(root).unwrap_or(&cur).display().to_string();
                return Err(LayerError::unsafe_entry(
                    rel,
                    format!("parent {shown:?} is not a directory"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                fs::create_dir(&cur).map_err(io_at(&cur))?;
                fs::set_permissions(&cur, Permissions::from_mode(0o755)).map_err(io_at(&cur))?;
                if let Some(m) = made.as_deref_mut() {
                    m.insert(cur_rel.clone());
                }
            }
            Err(e) => return Err(io_at(&cur)(e)),
        }
        if let Some(k) = known.as_deref_mut() {
            k.insert(cur_rel.clone());
        }
    }
    Ok(Some(cur))
}

/// Removes a file, symlink or whole directory; never follows symlinks.
fn remove_any(path: &Path) -> Result<(), LayerError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_at(path)),
        Ok(_) => fs::remove_file(path).map_err(io_at(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Empties `abs` (the directory `rel`) of everything a lower layer put there.
fn clear_dir(abs: &Path, rel: &Path, created: &HashSet<PathBuf>) -> Result<(), LayerError> {
    for child in fs::read_dir(abs).map_err(io_at(abs))? {
        let child = child.map_err(io_at(abs))?;
        if !created.contains(&rel.join(child.file_name())) {
            remove_any(&child.path())?;
        }
    }
    Ok(())
}

fn timestamps(mtime: u64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_mtime(path: &Path, mtime: u64) -> Result<(), LayerError> {
    use rustix::fs::{utimensat, AtFlags, CWD};
    utimensat(CWD, path, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_at(path)(e.into()))
}

#[cfg(test)]
mod tests;
