//! RUN: the command runs in an ingot container whose root is the stage's
//! layers plus a writable upper directory; what it leaves there (with
//! overlay whiteouts turned into OCI ones) becomes the new layer.
//!
//! The container has the build's network (by default ingot's bridge with
//! egress NAT, as `docker build`; `RUN --network=none|host`), the host's
//! /etc/resolv.conf and its own /etc/hosts and /etc/hostname, and no tmpfs
//! over /tmp and /run. What the runtime made for its mounts (those files,
//! /proc, /sys, /dev where the image lacks them) is left out of the layer.

use std::fs;
use std::path::{Path, PathBuf};

use ingot_oci::Digest;
use ingot_runtime::monitor::{self, Output};
use ingot_runtime::{ContainerSpec, NetworkMode, Runtime};

use crate::dockerfile::{Copy, Mount, Sharing, Step};
use crate::error::{BuildError, Result};
use crate::executor::{Env, Progress, Secret, State};
use crate::layer::{self, Content, Entries, LayerRef};

/// The environment RUN sees: the image's ENV, then ARG values ENV does not
/// set, and PATH if neither does.
pub(crate) fn environment(state: &State) -> Vec<String> {
    let mut env = state.env();
    for (k, v) in &state.args {
        if !env.iter().any(|e| e.split('=').next() == Some(k)) {
            env.push(format!("{k}={v}"));
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={}", ingot_runtime::spec::DEFAULT_PATH));
    }
    env
}

/// How many lines of a failed step's output its error shows.
const TAIL: usize = 15;

/// What a RUN step runs, and with what.
pub(crate) struct Exec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub network: NetworkMode,
    pub mounts: Mounts,
}

pub(crate) fn run(env: &Env, state: &State, step: &Step, exec: &Exec, progress: &mut dyn Progress) -> Result<LayerRef> {
    let mounts = &exec.mounts;
    if state.layers.is_empty() {
        return Err(env.step_error(
            step,
            "RUN needs a base with files (this stage is FROM scratch with no layers)",
        ));
    }
    let host = ingot_oci::config::host_architecture();
    if !state.architecture.is_empty() && state.architecture != host {
        return Err(env.step_error(
            step,
            format!(
                "RUN in a {arch} stage: this {host} machine runs no {arch} programs (no emulation); \
                 a stage of another platform can only be copied from",
                arch = state.architecture
            ),
        ));
    }
    let mut diff_ids = Vec::new();
    let mut lowers = Vec::new();
    for l in &state.layers {
        lowers.push(ingot_runtime::layers::ensure_layer(
            env.store,
            &l.digest,
            &l.media_type,
            &l.diff_id,
        )?);
        diff_ids.push(l.diff_id.hex().to_string());
    }
    // Held until the step is done: cache locks, bind sources. Each cache id
    // is locked once (its strictest sharing), in one order for every step
    // (by the directory's name), so steps running at once cannot deadlock.
    let mut held = Held::default();
    let mut caches: std::collections::BTreeMap<String, (&str, Sharing, Owner)> = Default::default();
    for m in &mounts.items {
        if let Item::Cache {
            id,
            sharing,
            mode,
            uid,
            gid,
            ..
        } = m
        {
            let name = Digest::sha256(id.as_bytes()).hex().to_string();
            let entry = caches.entry(name).or_insert((id, *sharing, (*mode, *uid, *gid)));
            entry.1 = match (entry.1, *sharing) {
                (Sharing::Locked, _) | (_, Sharing::Locked) => Sharing::Locked,
                (Sharing::Private, _) | (_, Sharing::Private) => Sharing::Private,
                _ => Sharing::Shared,
            };
        }
    }
    let mut cache_dirs = std::collections::BTreeMap::new();
    for (id, sharing, owner) in caches.values() {
        let dir = cache_dir(env, id, *sharing, *owner, &mut held)
            .map_err(|e| env.step_error(step, format!("cache mount {id}: {e}")))?;
        cache_dirs.insert(id.to_string(), dir);
    }
    let (mut binds, mut files, mut given, mut tmpfs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in &mounts.items {
        match m {
            Item::Cache {
                target, id, read_only, ..
            } => {
                let below = lowers.iter().rev().find_map(|l| in_layer(l, target));
                if below.is_some_and(|m| !m.is_dir()) {
                    return Err(env.step_error(
                        step,
                        format!("cache mount target {target} is a file in the image, not a directory"),
                    ));
                }
                binds.push(ingot_runtime::spec::Bind {
                    source: cache_dirs[id].clone(),
                    target: target.clone(),
                    read_only: *read_only,
                    copy_up: false,
                });
            }
            Item::Secret {
                target,
                value,
                mode,
                uid,
                gid,
                id,
            } => {
                files.push(ingot_runtime::spec::FileMount {
                    source: ingot_runtime::spec::FileSource::Given,
                    // Names it only: a digest of the value could be guessed.
                    digest: Digest::sha256(format!("build secret {id}").as_bytes()),
                    target: target.clone(),
                    uid: *uid,
                    gid: *gid,
                    mode: *mode,
                });
                given.push(value.0.clone());
            }
            Item::Bind {
                target,
                copy,
                plan,
                read_write,
            } => {
                let planned;
                let plan = match plan {
                    Some(p) => &**p,
                    None => {
                        planned = crate::copy::plan(env, state, step, copy, false)?;
                        &planned
                    }
                };
                let dir = tempfile::tempdir().map_err(|e| env.step_error(step, format!("bind mount {target}: {e}")))?;
                let source = write_tree(&plan.entries, dir.path())
                    .map_err(|e| env.step_error(step, format!("bind mount {target}: {e}")))?;
                binds.push(ingot_runtime::spec::Bind {
                    source,
                    target: target.clone(),
                    read_only: !read_write,
                    copy_up: false,
                });
                held.dirs.push(dir);
            }
            Item::Tmpfs { target } => tmpfs.push(target.clone()),
        }
    }
    let wd = state.string("WorkingDir");
    let spec = ContainerSpec {
        args: exec.args.clone(),
        env: exec.env.clone(),
        cwd: if wd.is_empty() { "/".into() } else { wd },
        user: state.string("User"),
        hostname: "ingot-build".into(),
        network: exec.network,
        networks: Vec::new(),
        ports: Vec::new(),
        read_only: false,
        binds,
        tmpfs,
        files,
        dns: Vec::new(),
        memory: None,
        cpus: None,
        pids_limit: None,
        stop_signal: "SIGKILL".into(),
        auto_remove: false,
        transient: false,
        runtime: Runtime::Ingot,
        build_step: true,
        layers: diff_ids,
    };
    let id = ingot_runtime::random_id()?;
    let name = format!("build-{}", &id[..12]);
    let state_digest: Digest = format!("sha256:{}", state.key)
        .parse()
        .map_err(|e| BuildError::Invalid(format!("cache key: {e}")))?;
    let rec = ingot_runtime::create_with_spec(
        env.store,
        id.clone(),
        name,
        &state_digest,
        "(build step)",
        spec,
        std::process::id(),
    )?;
    let result = monitor::run_with(env.store, &rec.id, Output::Files, &given, &mut |_| {});
    drop(held);
    let (out_path, err_path) = ingot_runtime::log_paths(env.store, &rec);
    let mut output = fs::read_to_string(&out_path).unwrap_or_default();
    output.push_str(&fs::read_to_string(&err_path).unwrap_or_default());
    progress.output(&output);
    let finish = |e: BuildError| {
        let _ = ingot_runtime::remove(env.store, &rec.id, true);
        e
    };
    let tail = || {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(TAIL)..].join("\n")
    };
    match result {
        Ok(exit) if exit.code == 0 => {}
        Ok(exit) => {
            let oom = if exit.oom_killed { " (out of memory)" } else { "" };
            return Err(finish(env.step_error(
                step,
                format!(
                    "command returned exit code {}{oom}; last output:\n{}",
                    exit.code,
                    tail()
                ),
            )));
        }
        Err(e) => return Err(finish(env.step_error(step, format!("{e}; last output:\n{}", tail())))),
    }
    let dir = ingot_runtime::container_dir(env.store.root(), &rec.id);
    let mut entries = Entries::new();
    if let Err(e) = layer::from_tree(&dir.join("upper"), "", true, None, &mut entries) {
        return Err(finish(e));
    }
    drop_made(&mut entries, &ingot_runtime::rootfs::made(&dir), &lowers);
    let layer = layer::write(env.store, &entries, env.epoch);
    let _ = ingot_runtime::remove(env.store, &rec.id, true);
    layer
}

/// What `path` (inside the image) is in the unpacked layer `layer`: looked
/// up with the image's symlinks resolved inside the layer, never on the
/// host.
fn in_layer(layer: &Path, path: &str) -> Option<fs::Metadata> {
    let p = ingot_runtime::rootfs::secure_join(layer, path).ok()?;
    fs::symlink_metadata(p).ok()
}

/// Leaves out of a step's layer what the runtime made inside its root for
/// mounts (`made`, parents first): files always (a mount covered them, so
/// the step never wrote to them), directories when nothing the step wrote
/// is under them; then the directories overlay copied up only to hold
/// them (their ancestors, deepest first), when the step left nothing else in them and their owner and mode
/// are still those of the layers below (`lowers`, bottom first).
fn drop_made(entries: &mut Entries, made: &[PathBuf], lowers: &[PathBuf]) {
    let key = |p: &Path| p.to_string_lossy().into_owned();
    let holds_nothing = |entries: &Entries, k: &str| {
        let prefix = format!("{k}/");
        !entries.keys().any(|e| e.starts_with(&prefix))
    };
    for p in made.iter().rev() {
        let k = key(p);
        match entries.get(&k).map(|e| &e.content) {
            Some(Content::Dir) if !holds_nothing(entries, &k) => {}
            Some(_) => {
                entries.remove(&k);
            }
            None => {}
        }
    }
    let mut parents: Vec<&Path> = made
        .iter()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|p| !p.as_os_str().is_empty() && !made.iter().any(|m| m == p))
        .collect();
    parents.sort();
    parents.dedup();
    for parent in parents.into_iter().rev() {
        let k = key(parent);
        let Some(e) = entries.get(&k) else { continue };
        if e.content != Content::Dir || !holds_nothing(entries, &k) {
            continue;
        }
        let below = lowers.iter().rev().find_map(|l| in_layer(l, &parent.to_string_lossy()));
        let unchanged = below.is_some_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.mode() & 0o7777 == e.mode & 0o7777 && m.uid() as u64 == e.uid && m.gid() as u64 == e.gid
        });
        if unchanged {
            entries.remove(&k);
        }
    }
}

/// A RUN's mounts, resolved before the cache is asked: what its key says
/// of them (never a secret's value) and how to make them.
#[derive(Default)]
pub(crate) struct Mounts {
    pub key: String,
    items: Vec<Item>,
}

enum Item {
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        read_only: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Secret {
        id: String,
        target: String,
        value: Secret,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Bind {
        target: String,
        /// The files, as COPY would take them (with `.dockerignore`).
        copy: Copy,
        /// Planned already (from the context); a stage's or image's files
        /// are planned only when the step runs.
        plan: Option<Box<crate::copy::Plan>>,
        read_write: bool,
    },
    Tmpfs {
        target: String,
    },
}

/// A cache directory's mode, uid and gid when it is made.
type Owner = (u32, u32, u32);

/// What a step holds while it runs: cache locks, bind sources.
#[derive(Default)]
struct Held {
    locks: Vec<fs::File>,
    dirs: Vec<tempfile::TempDir>,
}

/// Resolves `mounts` of a RUN: variables substituted, targets under
/// WORKDIR and clean, secrets found among `secrets`, bind sources planned
/// (their content digest goes into the cache key, as a COPY's does).
pub(crate) fn prepare(
    env: &Env,
    state: &State,
    step: &Step,
    mounts: &[Mount],
    secrets: &std::collections::BTreeMap<String, Secret>,
) -> Result<Mounts> {
    let vars = state.vars();
    let err = |m: String| env.step_error(step, m);
    let expand = |w: &str| crate::dockerfile::words::expand(w, &vars, env.escape).map_err(&err);
    let target = |t: &str| -> Result<String> {
        let t = state.in_container(&expand(t)?);
        ingot_runtime::spec::clean_target(&t, "mount target").map_err(|e| err(e.to_string()))
    };
    let mut out = Mounts::default();
    let mut seen = std::collections::BTreeSet::new();
    for m in mounts {
        let item = match m {
            Mount::Cache {
                target: t,
                id,
                sharing,
                read_only,
                mode,
                uid,
                gid,
            } => {
                let target = target(t)?;
                let id = match id {
                    Some(id) => expand(id)?,
                    None => target.clone(),
                };
                out.key.push_str(&format!(" cache:{target}:{id}:{read_only}"));
                Item::Cache {
                    target,
                    id,
                    sharing: *sharing,
                    read_only: *read_only,
                    mode: mode.unwrap_or(0o755),
                    uid: uid.unwrap_or(0),
                    gid: gid.unwrap_or(0),
                }
            }
            Mount::Secret {
                id,
                target: t,
                mode,
                uid,
                gid,
            } => {
                let id = expand(id)?;
                let target = match t {
                    Some(t) => target(t)?,
                    None => format!("/run/secrets/{id}"),
                };
                let value = secrets.get(&id).cloned().ok_or_else(|| {
                    err(format!(
                        "secret {id:?} is not given: ingot build --secret id={id},src=FILE (or env=VARIABLE)"
                    ))
                })?;
                out.key.push_str(&format!(" secret:{id}:{target}"));
                Item::Secret {
                    id,
                    target,
                    value,
                    mode: mode.unwrap_or(0o400),
                    uid: uid.unwrap_or(0),
                    gid: gid.unwrap_or(0),
                }
            }
            Mount::Bind {
                target: t,
                source,
                from,
                read_write,
            } => {
                let target = target(t)?;
                let source = match source {
                    Some(s) => expand(s)?,
                    None => ".".into(),
                };
                if source.contains(['*', '?', '[']) {
                    return Err(err(format!("bind mount source {source:?}: a path, not a pattern")));
                }
                // Planned as COPY SOURCE /bind: the one entry `bind` is the
                // source, a directory's contents under it.
                let copy = Copy {
                    from: from.clone(),
                    paths: vec![source.clone(), "/bind".into()],
                    ..Default::default()
                };
                let (input, plan) = match crate::copy::from_key(env, state, step, &copy)? {
                    Some(k) => (k, None),
                    None => {
                        let plan = crate::copy::plan(env, state, step, &copy, false)?;
                        (plan.digest.clone(), Some(Box::new(plan)))
                    }
                };
                out.key.push_str(&format!(
                    " bind:{target}:{}:{source}:{read_write}:{input}",
                    from.as_deref().unwrap_or("context"),
                ));
                Item::Bind {
                    target,
                    copy,
                    plan,
                    read_write: *read_write,
                }
            }
            Mount::Tmpfs { target: t } => {
                let target = target(t)?;
                out.key.push_str(&format!(" tmpfs:{target}"));
                Item::Tmpfs { target }
            }
        };
        let t = match &item {
            Item::Cache { target, .. }
            | Item::Secret { target, .. }
            | Item::Bind { target, .. }
            | Item::Tmpfs { target } => target.clone(),
        };
        if !seen.insert(t.clone()) {
            return Err(err(format!("two mounts at {t}")));
        }
        out.items.push(item);
    }
    Ok(out)
}

/// The directory a cache mount `id` uses in this root
/// (`<root>/build-cache/<sha256 of id>`, made with `mode`, `uid`, `gid`),
/// locked as `sharing` says: shared by many, one at a time (locked), or,
/// when another holds it, a fresh one of this step's own (private).
fn cache_dir(
    env: &Env,
    id: &str,
    sharing: Sharing,
    (mode, uid, gid): Owner,
    held: &mut Held,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let all = env.store.root().join("build-cache");
    if !all.exists() {
        fs::DirBuilder::new().mode(0o700).recursive(true).create(&all)?;
    }
    let name = Digest::sha256(id.as_bytes()).hex().to_string();
    let lock = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(all.join(format!("{name}.lock")))?;
    // Made once: another step may be making it at this moment.
    let make = |dir: &Path| -> std::io::Result<()> {
        match fs::create_dir(dir) {
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777))?;
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    };
    let dir = all.join(&name);
    match sharing {
        Sharing::Shared => lock.lock_shared()?,
        Sharing::Locked => lock.lock()?,
        Sharing::Private => {
            if lock.try_lock().is_err() {
                let own = tempfile::Builder::new().prefix("private-").tempdir_in(&all)?;
                let dir = own.path().join("cache");
                make(&dir)?;
                held.dirs.push(own);
                return Ok(dir);
            }
        }
    }
    held.locks.push(lock);
    make(&dir)?;
    Ok(dir)
}

/// Writes a bind mount's planned entries (`bind`, and what is under it)
/// into `dir`; returns the host path of `bind`.
fn write_tree(entries: &Entries, dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for (path, e) in entries {
        let host = dir.join(path);
        match &e.content {
            Content::Dir => fs::create_dir_all(&host)?,
            Content::File(src) => {
                fs::copy(src, &host)?;
            }
            Content::Symlink(to) => std::os::unix::fs::symlink(to, &host)?,
            Content::Whiteout | Content::Opaque => continue,
        }
        if !matches!(e.content, Content::Symlink(_)) {
            fs::set_permissions(&host, fs::Permissions::from_mode(e.mode & 0o7777))?;
        }
        std::os::unix::fs::lchown(&host, Some(e.uid as u32), Some(e.gid as u32))?;
    }
    let bind = dir.join("bind");
    if fs::symlink_metadata(&bind).is_err() {
        fs::create_dir_all(&bind)?;
    }
    Ok(bind)
}
