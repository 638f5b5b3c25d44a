//! RUN: the command runs in an ingot container whose root is the stage's
//! layers plus a writable upper directory; what it leaves there (with
//! overlay whiteouts turned into OCI ones) becomes the new layer.
//!
//! The container has no network and no tmpfs over /tmp and /run, so the
//! step's result depends on the stage's files and the command alone.

use std::fs;

use ingot_oci::Digest;
use ingot_runtime::monitor::{self, Output};
use ingot_runtime::{ContainerSpec, NetworkMode, Runtime};

use crate::dockerfile::Step;
use crate::error::{BuildError, Result};
use crate::executor::{Env, Progress, State};
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
    progress: &mut dyn Progress,
) -> Result<LayerRef> {
    if state.layers.is_empty() {
        return Err(env.step_error(
            step,
            "RUN needs a base with files (this stage is FROM scratch with no layers)",
        ));
    }
    let mut diff_ids = Vec::new();
    for l in &state.layers {
        ingot_runtime::layers::ensure_layer(env.store, &l.digest, &l.media_type, &l.diff_id)?;
        diff_ids.push(l.diff_id.hex().to_string());
    }
    let wd = state.string("WorkingDir");
    let spec = ContainerSpec {
        args,
        env: run_env,
        cwd: if wd.is_empty() { "/".into() } else { wd },
        user: state.string("User"),
        hostname: "ingot-build".into(),
        network: NetworkMode::None,
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
    let upper = ingot_runtime::container_dir(env.store.root(), &rec.id).join("upper");
    let mut entries = Entries::new();
    let made = layer::from_tree(&upper, "", true, None, &mut entries);
    if let Err(e) = made {
        return Err(finish(e));
    }
    // Mount points the runtime made in an image without them.
    for top in ["proc", "sys", "dev"] {
        let only_dir = entries.get(top).is_some_and(|e| e.content == Content::Dir)
            && !entries.keys().any(|k| k.starts_with(&format!("{top}/")));
        if only_dir {
            entries.remove(top);
        }
    }
    let layer = layer::write(env.store, &entries, env.epoch);
    let _ = ingot_runtime::remove(env.store, &rec.id, true);
    layer
}
