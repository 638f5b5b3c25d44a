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

use crate::dockerfile::Step;
use crate::error::{BuildError, Result};
use crate::executor::{BuildNetwork, Env, Progress, State};
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

pub(crate) fn run(
    env: &Env,
    state: &State,
    step: &Step,
    args: Vec<String>,
    run_env: Vec<String>,
    network: BuildNetwork,
    progress: &mut dyn Progress,
) -> Result<LayerRef> {
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
    let wd = state.string("WorkingDir");
    let spec = ContainerSpec {
        args,
        env: run_env,
        cwd: if wd.is_empty() { "/".into() } else { wd },
        user: state.string("User"),
        hostname: "ingot-build".into(),
        network: match network {
            BuildNetwork::Bridge => NetworkMode::Bridge,
            BuildNetwork::None => NetworkMode::None,
            BuildNetwork::Host => NetworkMode::Host,
        },
        networks: Vec::new(),
        ports: Vec::new(),
        read_only: false,
        binds: Vec::new(),
        tmpfs: Vec::new(),
        files: Vec::new(),
        dns: Vec::new(),
        memory: None,
        cpus: None,
        pids_limit: None,
        stop_signal: "SIGKILL".into(),
        auto_remove: false,
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
    let result = monitor::run(env.store, &rec.id, Output::Files, &mut |_| {});
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
        let below = lowers.iter().rev().find_map(|l| l.join(parent).symlink_metadata().ok());
        let unchanged = below.is_some_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.mode() & 0o7777 == e.mode & 0o7777 && m.uid() as u64 == e.uid && m.gid() as u64 == e.gid
        });
        if unchanged {
            entries.remove(&k);
        }
    }
}
