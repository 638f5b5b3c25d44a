//! The deterministic layer writer: entries in, one gzip layer blob out.
//!
//! Entries are sorted by path; every header is a fresh GNU header with the
//! build's epoch as mtime, numeric owners and no user or group names, and
//! gzip carries no name or time. The same entries therefore give the same
//! diff ID and blob digest on any machine.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ingot_oci::digest::HashingWriter;
use ingot_oci::{media, Algorithm, Digest};
use ingot_store::Store;
use tar::{EntryType, Header};

use crate::error::{BuildError, Result};

/// What one entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir,
    /// A regular file, read from this host path when the layer is written.
    File(PathBuf),
    Symlink(PathBuf),
    /// `.wh.NAME`: NAME is deleted from the layers below.
    Whiteout,
    /// `.wh..wh..opq` in a directory: its lower contents are hidden.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// Entries by path inside the image (relative, no leading `/`).
pub type Entries = BTreeMap<String, Entry>;

/// A layer written to the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRef {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub media_type: String,
}

/// Adds `path`'s missing parent directories (root-owned, 0755).
pub fn add_parents(entries: &mut Entries, path: &str) {
    let mut p = Path::new(path).parent();
    while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
        entries.entry(dir.display().to_string()).or_insert(Entry {
            content: Content::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
        });
        p = dir.parent();
    }
}

/// Writes `entries` as a gzip layer into the store.
pub fn write(store: &Store, entries: &Entries, epoch: i64) -> Result<LayerRef> {
    let writer = store.blobs().writer(None)?;
    let gz = flate2::GzBuilder::new().write(writer, flate2::Compression::fast());
    let mut tar = tar::Builder::new(HashingWriter::new(gz, Algorithm::Sha256));
    let mtime = epoch.max(0) as u64;
    for (path, e) in entries {
        let mut h = Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mode(e.mode & 0o7777);
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |e: io::Error| BuildError::Io { path: p, source: e }
        };
        match &e.content {
            Content::Dir => {
                h.set_entry_type(EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(io_err(Path::new(path)))?;
            }
            Content::File(src) => {
                let f = File::open(src).map_err(io_err(src))?;
                let len = f.metadata().map_err(io_err(src))?.len();
                h.set_entry_type(EntryType::Regular);
                h.set_size(len);
                tar.append_data(&mut h, path, io::Read::take(f, len))
                    .map_err(io_err(src))?;
            }
            Content::Symlink(target) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, path, target).map_err(io_err(Path::new(path)))?;
            }
            Content::Whiteout | Content::Opaque => {
                // An opaque marker's key is its own path; a whiteout's key is
                // the path it deletes.
                let p = Path::new(path);
                let full = match (&e.content, p.file_name()) {
                    (Content::Opaque, _) => p.to_path_buf(),
                    (_, Some(n)) => p.with_file_name(format!(".wh.{}", n.to_string_lossy())),
                    _ => continue,
                };
                h.set_entry_type(EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                tar.append_data(&mut h, full, io::empty())
                    .map_err(io_err(Path::new(path)))?;
            }
        }
    }
    let hashed = tar.into_inner().map_err(|e| BuildError::Io {
        path: "layer".into(),
        source: e,
    })?;
    let (gz, diff_id, _) = hashed.finish();
    let mut w = gz.finish().map_err(|e| BuildError::Io {
        path: "layer".into(),
        source: e,
    })?;
    w.flush().map_err(|e| BuildError::Io {
        path: "layer".into(),
        source: e,
    })?;
    let (digest, size) = w.commit()?;
    Ok(LayerRef {
        digest,
        size,
        diff_id,
        media_type: media::OCI_LAYER_GZIP.to_string(),
    })
}

/// Entries for a directory tree on the host (an overlay upper directory or
/// an unpacked archive), mapped under `dest` (relative). Overlay whiteouts
/// (0/0 character devices, `trusted.overlay.opaque`) become OCI whiteouts
/// when `overlay` is set. Owners are kept unless `owner` is given.
pub fn from_tree(
    root: &Path,
    dest: &str,
    overlay: bool,
    owner: Option<(u64, u64)>,
    entries: &mut Entries,
) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| BuildError::Io {
                path: dir.clone(),
                source: e,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).map_err(|e| BuildError::Io {
                path: p.clone(),
                source: e,
            })?;
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let path = join(dest, &rel.display().to_string());
            let (uid, gid) = owner.unwrap_or((md.uid().into(), md.gid().into()));
            let mode = md.permissions().mode() & 0o7777;
            let ft = md.file_type();
            let content = if ft.is_dir() {
                if overlay && opaque(&p) {
                    entries.insert(
                        format!("{path}/.wh..wh..opq"),
                        Entry {
                            content: Content::Opaque,
                            mode: 0o644,
                            uid: 0,
                            gid: 0,
                        },
                    );
                }
                stack.push(p.clone());
                Content::Dir
            } else if ft.is_symlink() {
                Content::Symlink(fs::read_link(&p).map_err(|e| BuildError::Io {
                    path: p.clone(),
                    source: e,
                })?)
            } else if ft.is_file() {
                Content::File(p.clone())
            } else if overlay && ft.is_char_device() && md.rdev() == 0 {
                Content::Whiteout
            } else {
                return Err(BuildError::Invalid(format!(
                    "{}: device nodes, sockets and fifos cannot go into a layer",
                    p.display()
                )));
            };
            entries.insert(
                path,
                Entry {
                    content,
                    mode,
                    uid,
                    gid,
                },
            );
        }
    }
    Ok(())
}

/// Whether an unpacked overlay directory is opaque (hides the layers below).
pub(crate) fn opaque(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 2];
    // SAFETY: c is NUL-terminated and buf is a local buffer of its stated size.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// `dest` and `rel` joined, relative, normalised.
pub fn join(dest: &str, rel: &str) -> String {
    let joined: Vec<&str> = dest
        .split('/')
        .chain(rel.split('/'))
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    joined.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalises() {
        assert_eq!(join("/app/", "a/b"), "app/a/b");
        assert_eq!(join("", "./x"), "x");
    }

    #[test]
    fn parents_are_added_once() {
        let mut e = Entries::new();
        add_parents(&mut e, "a/b/c.txt");
        assert_eq!(e.keys().collect::<Vec<_>>(), ["a", "a/b"]);
    }
}
