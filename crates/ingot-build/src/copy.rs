//! COPY and ADD: which files go where, planned before anything is written,
//! so the plan's digest can be looked up in the cache first.
//!
//! Docker's rules: a directory source copies its contents; with several
//! sources, a wildcard, or a destination ending in `/`, the destination is a
//! directory; a relative destination is under WORKDIR. ADD also unpacks
//! local tar archives (plain or gzip) into the destination. Files keep their
//! permission bits (or `--chmod`) and belong to root (or `--chown`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use ingot_oci::layer::{self as oci_layer, UnpackOptions};
use ingot_oci::media::{self, Compression};
use ingot_oci::Algorithm;

use crate::context::Context;
use crate::dockerfile::{words, Copy, Step};
use crate::error::{BuildError, Result};
use crate::executor::{Env, State};
use crate::layer::{self, Content, Entries, Entry, LayerRef};

/// A planned COPY/ADD.
pub(crate) struct Plan {
    pub entries: Entries,
    /// Digest of every entry: path, type, mode, owner, content.
    pub digest: String,
    /// Sources and destination after substitution, for the cache key.
    pub describe: String,
    /// Directories the plan reads from that must live until it is written.
    _keep: Vec<tempfile::TempDir>,
}

impl Plan {
    pub fn write(&self, env: &Env) -> Result<LayerRef> {
        layer::write(env.store, &self.entries, env.epoch)
    }
}

/// Unpacks `layers` in order into `dir` (whiteouts applied): a stage's or an
/// image's file system, for `COPY --from` and `--chown` by name.
pub(crate) fn materialize(env: &Env, layers: &[LayerRef], dir: &Path) -> Result<()> {
    for l in layers {
        let blob = std::io::BufReader::new(env.store.blobs().open(&l.digest)?);
        let reader: Box<dyn Read> = match media::layer_compression(&l.media_type) {
            Some(Compression::None) => Box::new(blob),
            Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            _ => {
                return Err(BuildError::Invalid(format!(
                    "layer {}: media type {} cannot be read",
                    l.digest, l.media_type
                )))
            }
        };
        oci_layer::unpack(reader, dir, &UnpackOptions::default())
            .map_err(|e| BuildError::Invalid(format!("layer {}: {e}", l.digest)))?;
    }
    Ok(())
}

/// Writes into `dir` the merged subtrees of `layers` (bottom first) that
/// `sources` need (each source's path up to its first wildcard), from the
/// runtime's cache of unpacked layers (overlay whiteouts and opaque
/// directories applied): a COPY --from of one binary out of a compiler
/// stage reads that binary, not the stage's hundreds of MB. Files are hard
/// links where the file system allows (never written through), else copies.
fn merge_sources(env: &Env, layers: &[LayerRef], sources: &[String], dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let lowers = layers
        .iter()
        .map(|l| ingot_runtime::layers::ensure_layer(env.store, &l.digest, &l.media_type, &l.diff_id))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let mut prefixes: Vec<String> = sources
        .iter()
        .map(|s| {
            let clean = s.trim_start_matches('/');
            let fixed: Vec<&str> = clean
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .take_while(|c| !c.contains(['*', '?', '[']))
                .collect();
            fixed.join("/")
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    if prefixes.iter().any(|p| p.split('/').any(|c| c == "..")) {
        return Err(std::io::Error::other("a source climbs"));
    }
    let is_whiteout = |m: &fs::Metadata| m.file_type().is_char_device() && m.rdev() == 0;
    let place = |from: &Path, to: &Path, md: &fs::Metadata| -> std::io::Result<()> {
        if let Ok(old) = fs::symlink_metadata(to) {
            if old.is_dir() && !md.is_dir() {
                fs::remove_dir_all(to)?;
            } else if !old.is_dir() {
                fs::remove_file(to)?;
            }
        }
        if md.is_dir() {
            fs::create_dir_all(to)?;
            fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        } else if md.is_file() {
            if fs::hard_link(from, to).is_err() {
                fs::copy(from, to)?;
                fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            }
        } else {
            return Ok(());
        }
        std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))
    };
    for layer in &lowers {
        for prefix in &prefixes {
            // The prefix's ancestors in this layer: a whiteout or a file
            // there hides what lower layers had below it.
            let mut at = PathBuf::new();
            let mut hidden = false;
            for c in prefix.split('/').filter(|c| !c.is_empty()) {
                at.push(c);
                let Ok(md) = fs::symlink_metadata(layer.join(&at)) else {
                    break;
                };
                if is_whiteout(&md) || !md.is_dir() {
                    let _ = fs::remove_dir_all(dir.join(&at)).or_else(|_| fs::remove_file(dir.join(&at)));
                    if !is_whiteout(&md) {
                        place(&layer.join(&at), &dir.join(&at), &md)?;
                    }
                    hidden = true;
                    break;
                }
                if crate::layer::opaque(&layer.join(&at)) {
                    let _ = fs::remove_dir_all(dir.join(&at));
                }
                place(&layer.join(&at), &dir.join(&at), &md)?;
            }
            if hidden {
                continue;
            }
            let root = layer.join(prefix);
            if !fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let mut stack = vec![PathBuf::from(prefix)];
            while let Some(rel) = stack.pop() {
                for e in fs::read_dir(layer.join(&rel))? {
                    let e = e?;
                    let sub = rel.join(e.file_name());
                    let md = fs::symlink_metadata(e.path())?;
                    if is_whiteout(&md) {
                        let _ = fs::remove_dir_all(dir.join(&sub)).or_else(|_| fs::remove_file(dir.join(&sub)));
                        continue;
                    }
                    if md.is_dir() {
                        if crate::layer::opaque(&e.path()) {
                            let _ = fs::remove_dir_all(dir.join(&sub));
                        }
                        stack.push(sub.clone());
                    }
                    place(&e.path(), &dir.join(&sub), &md)?;
                }
            }
        }
    }
    Ok(())
}

fn owner(env: &Env, state: &State, spec: &str, keep: &mut Vec<tempfile::TempDir>) -> Result<(u64, u64)> {
    let (u, g) = spec.split_once(':').unwrap_or((spec, spec));
    if let (Ok(uid), Ok(gid)) = (u.parse::<u64>(), g.parse::<u64>()) {
        return Ok((uid, gid));
    }
    // Names: resolved against the stage's own /etc/passwd and /etc/group.
    let dir = tempfile::tempdir().map_err(|e| BuildError::Io {
        path: "tmp".into(),
        source: e,
    })?;
    materialize(env, &state.layers, dir.path())?;
    let read = |p: &str| fs::read_to_string(dir.path().join(p)).ok();
    let id = ingot_runtime::user::resolve(spec, read("etc/passwd").as_deref(), read("etc/group").as_deref())
        .map_err(|e| BuildError::Invalid(format!("--chown={spec}: {e}")))?;
    keep.push(dir);
    Ok((id.uid.into(), id.gid.into()))
}

/// Whether `path` holds a tar archive (plain or gzip), by content.
fn is_archive(path: &Path) -> bool {
    let Ok(mut f) = fs::File::open(path) else { return false };
    let mut head = [0u8; 512];
    let Ok(n) = f.read(&mut head) else { return false };
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        let Ok(f) = fs::File::open(path) else { return false };
        let mut gz = flate2::read::MultiGzDecoder::new(f);
        let mut inner = [0u8; 512];
        return gz.read_exact(&mut inner).is_ok() && &inner[257..262] == b"ustar";
    }
    n == 512 && &head[257..262] == b"ustar"
}

/// For a `--from` copy: what identifies its source without reading it
/// (the stage's cache key, which says everything the stage's files depend
/// on, or the image's digest), and the step's words and flags after
/// substitution. The step's key is made of these, so a cached COPY --from
/// never unpacks its source (a compiler stage can be hundreds of MB); only a
/// miss plans it. `None` for copies from the context or heredocs.
pub(crate) fn from_key(env: &Env, state: &State, step: &Step, c: &Copy) -> Result<Option<String>> {
    let Some(from) = &c.from else { return Ok(None) };
    if !c.heredocs.is_empty() {
        return Ok(None);
    }
    let err = |m: String| env.step_error(step, m);
    let vars = state.vars();
    let expand = |w: &str| words::expand(w, &vars, env.escape).map_err(&err);
    let from = expand(from)?;
    let source = match env.stage(&from) {
        Some(s) => format!("stage {}", s.key),
        None => format!(
            "image {}",
            env.store
                .resolve(&from)
                .map_err(|e| err(format!("--from={from}: {e}")))?
                .digest
        ),
    };
    let mut words = Vec::new();
    for w in &c.paths {
        words.push(expand(w)?);
    }
    let dest = words.pop().unwrap_or_default();
    let mut exclude = Vec::new();
    for x in &c.exclude {
        exclude.push(expand(x)?);
    }
    let chown = c.chown.as_deref().map(expand).transpose()?;
    Ok(Some(
        serde_json::json!({
            "source": source, "paths": words, "dest": dest, "in": state.in_container(&dest),
            "chown": chown, "chmod": c.chmod, "exclude": exclude, "parents": c.parents,
        })
        .to_string(),
    ))
}

pub(crate) fn plan(env: &Env, state: &State, step: &Step, c: &Copy, add: bool) -> Result<Plan> {
    let err = |m: String| env.step_error(step, m);
    let vars = state.vars();
    let mut paths = Vec::new();
    for w in &c.paths {
        paths.push(words::expand(w, &vars, env.escape).map_err(&err)?);
    }
    let dest_raw = paths.pop().unwrap_or_default();
    let dest = state.in_container(&dest_raw);
    let wildcard = paths.iter().any(|p| p.contains(['*', '?', '[']));
    // `.`, `..` and a trailing `/` (or `/.`) name a directory, as Docker reads them.
    let names_dir = dest_raw.ends_with('/') || matches!(dest_raw.rsplit('/').next(), Some("." | ".."));
    let dest_is_dir = names_dir || paths.len() > 1 || wildcard;
    let mut keep = Vec::new();
    let own = match &c.chown {
        Some(spec) => Some(owner(
            env,
            state,
            &words::expand(spec, &vars, env.escape).map_err(&err)?,
            &mut keep,
        )?),
        None => None,
    };
    let chmod = match &c.chmod {
        Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| err(format!("invalid --chmod {m:?}: expected octal")))?),
        None => None,
    };

    // Where sources come from: the context, or a stage's or image's files,
    // or the step's here-documents.
    let source_ctx = match &c.from {
        // (The parser made every source one of them.)
        None if !c.heredocs.is_empty() => {
            let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
            for h in &c.heredocs {
                let content = match h.expand {
                    true => words::substitute(&h.content, &vars, env.escape).map_err(&err)?,
                    false => h.content.clone(),
                };
                let path = dir.path().join(&h.name);
                fs::write(&path, content).map_err(|e| err(format!("heredoc <<{}: {e}", h.name)))?;
                fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .map_err(|e| err(format!("heredoc <<{}: {e}", h.name)))?;
            }
            let ctx = Context::plain(dir.path()).map_err(|e| err(format!("heredocs: {e}")))?;
            keep.push(dir);
            Some(ctx)
        }
        Some(_) if !c.heredocs.is_empty() => {
            return Err(err("--from and heredocs: a heredoc is the step's own content".into()));
        }
        None => None,
        Some(from) => {
            let from = words::expand(from, &vars, env.escape).map_err(&err)?;
            let layers = match env.stage(&from) {
                Some(s) => s.layers.clone(),
                None => image_layers(env, &from).map_err(|e| err(format!("--from={from}: {e}")))?,
            };
            // Only the sources' subtrees, merged from the unpacked layer
            // cache; the whole file system when a source is not found
            // there (a path through a symlink, say).
            // Beside the layer cache, so files can be hard links.
            let beside = ingot_runtime::layers::cache_dir(env.store.root()).join("tmp");
            let dir = fs::create_dir_all(&beside)
                .and_then(|_| tempfile::Builder::new().prefix("from-").tempdir_in(&beside))
                .or_else(|_| tempfile::tempdir())
                .map_err(|e| err(e.to_string()))?;
            let found = merge_sources(env, &layers, &paths, dir.path()).is_ok() && {
                let ctx = Context::plain(dir.path())?;
                paths.iter().all(|p| is_url(p) || ctx.sources(p).is_ok())
            };
            if !found {
                let _ = fs::remove_dir_all(dir.path());
                fs::create_dir_all(dir.path()).map_err(|e| err(e.to_string()))?;
                materialize(env, &layers, dir.path())?;
            }
            let ctx = Context::plain(dir.path())?;
            keep.push(dir);
            Some(ctx)
        }
    };
    let ctx = source_ctx.as_ref().unwrap_or(env.context);

    let mut entries = Entries::new();
    let mut archived = std::collections::BTreeSet::new();
    let target = layer::join("", &dest);
    if dest_is_dir && !target.is_empty() {
        entries.insert(
            target.clone(),
            Entry {
                content: Content::Dir,
                mode: 0o755,
                uid: own.map_or(0, |o| o.0),
                gid: own.map_or(0, |o| o.1),
            },
        );
    }
    let mut excludes = Vec::new();
    for x in &c.exclude {
        let x = words::expand(x, &vars, env.escape).map_err(&err)?;
        let cleaned = x.trim_start_matches("./").trim_start_matches('/').to_string();
        excludes.push(glob::Pattern::new(&cleaned).map_err(|e| err(format!("--exclude={x}: {e}")))?);
    }
    // A path is excluded when it, or a directory it is in, matches.
    let excluded = |rel: &str| {
        let mut prefix = String::new();
        rel.split('/').any(|part| {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            excludes.iter().any(|p| p.matches_with(&prefix, crate::context::MATCH))
        })
    };
    if c.checksum.is_some() && !paths.iter().all(|p| is_url(p)) {
        return Err(err("--checksum is for ADD of a URL".into()));
    }
    for src in &paths {
        if add && is_url(src) {
            let (name, file) =
                download(src, c.checksum.as_deref(), &mut keep).map_err(|e| err(format!("ADD {src}: {e}")))?;
            let path = if dest_is_dir {
                layer::join(&target, &name)
            } else {
                target.clone()
            };
            if path.is_empty() {
                return Err(err("cannot copy a file onto /".into()));
            }
            // As Docker: a downloaded file is readable by its owner only.
            entries.insert(
                path,
                Entry {
                    content: Content::File(file),
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                },
            );
            continue;
        }
        for (rel, host) in ctx.sources(src).map_err(|e| err(e.to_string()))? {
            if excluded(&rel) {
                continue;
            }
            // --parents: the source keeps its path from the context.
            let base = if c.parents {
                layer::join(&target, &rel)
            } else {
                target.clone()
            };
            let md = fs::symlink_metadata(&host).map_err(|e| err(format!("{rel}: {e}")))?;
            if md.is_dir() {
                if !base.is_empty() {
                    entries.entry(base.clone()).or_insert(Entry {
                        content: Content::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    });
                }
                ctx.walk(&host, &mut |_, p| {
                    let sub = p
                        .strip_prefix(&host)
                        .map(|s| s.display().to_string())
                        .unwrap_or_default();
                    if excluded(&sub) {
                        return;
                    }
                    if let Some(e) = entry_for(p) {
                        entries.insert(layer::join(&base, &sub), e);
                    }
                })?;
            } else if add && c.heredocs.is_empty() && is_archive(&host) {
                let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
                let f = fs::File::open(&host).map_err(|e| err(format!("{rel}: {e}")))?;
                let mut buf = std::io::BufReader::new(f);
                let head = std::io::BufRead::fill_buf(&mut buf).map_err(|e| err(e.to_string()))?;
                let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
                    Box::new(flate2::bufread::MultiGzDecoder::new(buf))
                } else {
                    Box::new(buf)
                };
                let opts = UnpackOptions {
                    same_owner: true,
                    ..Default::default()
                };
                oci_layer::unpack(reader, dir.path(), &opts).map_err(|e| err(format!("ADD {rel}: {e}")))?;
                let before: std::collections::BTreeSet<String> = entries.keys().cloned().collect();
                layer::from_tree(dir.path(), &target, false, None, &mut entries)?;
                // An archive's entries keep its owners (unless --chown).
                archived.extend(entries.keys().filter(|k| !before.contains(*k)).cloned());
                keep.push(dir);
            } else {
                let name = Path::new(&rel)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let path = if c.parents {
                    base
                } else if dest_is_dir {
                    layer::join(&target, &name)
                } else {
                    target.clone()
                };
                if path.is_empty() {
                    return Err(err("cannot copy a file onto /".into()));
                }
                if let Some(e) = entry_for(&host) {
                    entries.insert(path, e);
                }
            }
        }
    }
    for (path, e) in entries.iter_mut() {
        if let Some((uid, gid)) = own {
            e.uid = uid;
            e.gid = gid;
        } else if matches!(e.content, Content::File(_) | Content::Dir | Content::Symlink(_))
            && c.from.is_none()
            && !archived.contains(path)
        {
            // Context files belong to root in the image, as with Docker.
            e.uid = 0;
            e.gid = 0;
        }
        if let (Some(m), Content::File(_) | Content::Dir) = (chmod, &e.content) {
            e.mode = m;
        }
    }
    let paths_in: Vec<String> = entries.keys().cloned().collect();
    for p in paths_in {
        layer::add_parents(&mut entries, &p);
    }
    let digest = digest_entries(&entries)?;
    Ok(Plan {
        entries,
        digest,
        describe: format!("{} {}", paths.join(" "), dest),
        _keep: keep,
    })
}

/// Whether an ADD source is a URL.
pub(crate) fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// The most an ADD of a URL downloads.
const MAX_DOWNLOAD: u64 = 4 << 30;

/// Downloads `url` into a temporary directory kept in `keep`: the file's
/// name (the URL path's last part) and where it is. Checked against
/// `checksum` (`sha256:...`) when given.
fn download(
    url: &str,
    checksum: Option<&str>,
    keep: &mut Vec<tempfile::TempDir>,
) -> std::result::Result<(String, std::path::PathBuf), String> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let name = path
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(_, p)| p.rsplit('/').next())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or("the URL names no file (its path ends in /)")?
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("download");
    let mut out = fs::File::create(&file).map_err(|e| e.to_string())?;
    let mut hasher = ingot_oci::digest::HashingWriter::new(&mut out, Algorithm::Sha256);
    let mut body = resp.body_mut().with_config().limit(MAX_DOWNLOAD).reader();
    std::io::copy(&mut body, &mut hasher).map_err(|e| e.to_string())?;
    let (_, digest, _) = hasher.finish();
    if let Some(want) = checksum {
        if digest.to_string() != want {
            return Err(format!("the download hashes to {digest}, not --checksum={want}"));
        }
    }
    keep.push(dir);
    Ok((name, file))
}

fn entry_for(p: &Path) -> Option<Entry> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = fs::symlink_metadata(p).ok()?;
    let content = if md.is_dir() {
        Content::Dir
    } else if md.file_type().is_symlink() {
        Content::Symlink(fs::read_link(p).ok()?)
    } else if md.is_file() {
        Content::File(p.to_path_buf())
    } else {
        return None;
    };
    Some(Entry {
        content,
        mode: md.permissions().mode() & 0o7777,
        uid: md.uid().into(),
        gid: md.gid().into(),
    })
}

fn image_layers(env: &Env, name: &str) -> Result<Vec<LayerRef>> {
    let image = env.store.resolve(name)?;
    let (_, config) = env
        .store
        .config(&image.manifest)?
        .ok_or_else(|| BuildError::Invalid(format!("{name} is an index")))?;
    let refs = image
        .manifest
        .references()
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    Ok(refs
        .iter()
        .filter(|r| r.role == ingot_oci::manifest::Role::Layer)
        .zip(&config.rootfs.diff_ids)
        .map(|(r, d)| LayerRef {
            digest: r.digest.clone(),
            size: r.size,
            diff_id: d.clone(),
            media_type: r.media_type.clone(),
        })
        .collect())
}

/// The digest of what a layer of `entries` would hold.
pub(crate) fn digest_entries(entries: &Entries) -> Result<String> {
    let mut h = Algorithm::Sha256.hasher();
    for (path, e) in entries {
        h.update(path.as_bytes());
        h.update(format!("\0{}\0{:o}\0{}\0{}\0", kind(&e.content), e.mode, e.uid, e.gid).as_bytes());
        match &e.content {
            Content::File(src) => {
                let mut f = fs::File::open(src).map_err(|e| BuildError::Io {
                    path: src.clone(),
                    source: e,
                })?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).map_err(|e| BuildError::Io {
                        path: src.clone(),
                        source: e,
                    })?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            Content::Symlink(t) => h.update(t.as_os_str().as_encoded_bytes()),
            _ => {}
        }
        h.update(b"\n");
    }
    Ok(h.finish().hex().to_string())
}

fn kind(c: &Content) -> &'static str {
    match c {
        Content::Dir => "dir",
        Content::File(_) => "file",
        Content::Symlink(_) => "symlink",
        Content::Whiteout => "whiteout",
        Content::Opaque => "opaque",
    }
}
