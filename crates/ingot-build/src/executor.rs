//! The stage executor: runs a parsed Dockerfile's stages in order, each
//! step on the state the previous one left, and writes the target stage as
//! an image with its bill of materials.
//!
//! Cache: every step has a key chained from its parent's (FROM: the base's
//! manifest digest), its instruction after substitution and the digest of
//! its inputs (the files COPY/ADD would write; the environment of RUN). A
//! step that writes a layer looks its key up in the store's build cache and
//! reuses the layer when its blob is still there; steps that only change the
//! config are recomputed, which costs nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use ingot_oci::config::canonical_json;
use ingot_oci::manifest::Role;
use ingot_oci::{Algorithm, Digest, Manifest, Reference};
use ingot_registry::client::{Platform, Remote};
use ingot_runtime::NetworkMode;
use ingot_store::Store;
use serde_json::{json, Map, Value};

use crate::bom::{Ancestor, Bom, Builder, NetworkedStep};
use crate::context::Context;
use crate::dockerfile::{self, words, Command, Dockerfile, Instruction, RunNetwork, Stage, Step};
use crate::error::{BuildError, Result};
use crate::layer::LayerRef;
use crate::{copy, run};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// Default: `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    /// Default: the context directory's name.
    pub project: Option<String>,
    pub no_cache: bool,
    /// Default: SOURCE_DATE_EPOCH, else the context's last commit time, else 0.
    pub epoch: Option<i64>,
    /// RUN's network where a step names none, or names `default`
    /// (`--network`): by default a bridge with NAT, as `docker build`.
    pub network: NetworkMode,
    /// `--allow network.host`: a Dockerfile may ask for the host's network
    /// (`RUN --network=host`); `--network host` allows it too.
    pub allow_host_network: bool,
    /// `--pull`: resolve every base image that names a registry again,
    /// even when the store has it.
    pub pull: bool,
    /// `--secret id=...`: what `RUN --mount=type=secret,id=...` reads.
    pub secrets: BTreeMap<String, Secret>,
}

/// A build secret's value: handed to the RUN steps that mount it, kept in
/// no layer, cache key, bill of materials, store or log.
#[derive(Clone, Default)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Hears about each step.
pub trait Progress {
    fn step(&mut self, n: usize, total: usize, text: &str);
    /// The step finished (from the cache or after `secs`).
    fn done(&mut self, cached: bool, secs: f64);
    /// Output of a RUN step.
    fn output(&mut self, text: &str);
}

/// A progress sink that hears nothing.
pub struct Silent;

impl Progress for Silent {
    fn step(&mut self, _: usize, _: usize, _: &str) {}
    fn done(&mut self, _: bool, _: f64) {}
    fn output(&mut self, _: &str) {}
}

#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Manifest,
    pub steps: usize,
    pub cached: usize,
    pub bom: Bom,
    /// SLSA provenance v1 (an in-toto statement) of this build.
    pub provenance: Value,
}

fn wall_clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    ingot_store::rfc3339(now)
}

/// A stage's state between steps.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub layers: Vec<LayerRef>,
    /// The image config's `config` object (Docker's keys).
    pub config: Map<String, Value>,
    pub history: Vec<Value>,
    /// Cache chain key (hex).
    pub key: String,
    /// ARG values declared in this stage.
    pub args: BTreeMap<String, String>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    pub architecture: String,
    /// This stage's RUN steps that had a network (instruction, network).
    pub networked: Vec<(String, &'static str)>,
}

fn hash(parts: &[&str]) -> String {
    let mut h = Algorithm::Sha256.hasher();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\0");
    }
    h.finish().hex().to_string()
}

impl State {
    /// Variables for substitution: ARGs, overridden by ENV (as Docker).
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        for e in self.env() {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    pub fn env(&self) -> Vec<String> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env: Vec<String> = self
            .env()
            .into_iter()
            .filter(|e| e.split('=').next() != Some(key))
            .collect();
        env.push(format!("{key}={value}"));
        self.config.insert("Env".into(), json!(env));
    }

    pub fn string(&self, key: &str) -> String {
        self.config
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    pub fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .filter(|v: &Vec<String>| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn chain(&mut self, text: &str, input: &str) {
        self.key = hash(&[&self.key, text, input]);
    }

    fn history(&mut self, created: &str, text: &str, empty: bool) {
        let mut h = json!({"created": created, "created_by": text});
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }

    /// An in-container path: absolute as is, else under WORKDIR.
    pub fn in_container(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            let wd = self.string("WorkingDir");
            format!("{}/{p}", if wd.is_empty() { "" } else { wd.trim_end_matches('/') })
        }
    }
}

/// Everything a step can reach.
pub(crate) struct Env<'a> {
    pub store: &'a Store,
    pub context: &'a Context,
    pub file: String,
    pub epoch: i64,
    pub created: String,
    pub escape: char,
    pub no_cache: bool,
    /// Finished stages: index, name, state.
    pub stages: Vec<(usize, Option<String>, State)>,
}

impl Env<'_> {
    pub fn step_error(&self, step: &Step, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            pos: step.pos,
            text: step.text.clone(),
            message: message.into(),
        }
    }

    /// The finished stage named (or numbered) `name`.
    pub fn stage(&self, name: &str) -> Option<&State> {
        let lower = name.to_ascii_lowercase();
        let index = name.parse::<usize>().ok();
        self.stages
            .iter()
            .find(|(_, n, _)| n.as_deref() == Some(lower.as_str()))
            .or_else(|| self.stages.iter().find(|(i, _, _)| Some(*i) == index))
            .map(|(_, _, s)| s)
    }

    /// Whether a step with `key` ran before (and records that it has now):
    /// how config-only steps and FROM report CACHED.
    pub fn seen(&self, key: &str) -> Result<bool> {
        if !self.no_cache && self.store.cache_get(key)?.is_some() {
            return Ok(true);
        }
        self.store.cache_put(key, "{}")?;
        Ok(false)
    }

    /// A layer-writing step's result: from the cache under `state.key`, or
    /// made by `make` and recorded.
    pub fn cached_layer(&self, key: &str, make: impl FnOnce() -> Result<LayerRef>) -> Result<(LayerRef, bool)> {
        if !self.no_cache {
            if let Some(text) = self.store.cache_get(key)? {
                if let Ok(l) = serde_json::from_str::<LayerRef>(&text) {
                    if self.store.blobs().exists(&l.digest) {
                        return Ok((l, true));
                    }
                }
            }
        }
        let l = make()?;
        let text = serde_json::to_string(&l).map_err(|e| BuildError::Invalid(e.to_string()))?;
        self.store.cache_put(key, &text)?;
        Ok((l, false))
    }
}

/// The build's time: SOURCE_DATE_EPOCH, else the last commit's, else 0.
fn epoch(opts: &BuildOptions, git: Option<&crate::git::GitInfo>) -> i64 {
    opts.epoch
        .or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
        .or_else(|| git.and_then(|g| g.commit_time))
        .unwrap_or(0)
}

fn host_name() -> String {
    std::env::var("INGOT_BUILD_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        })
}

/// Builds the Dockerfile of `opts` into an image in `store`, tagged with
/// every `opts.tags` only if the whole build succeeds.
pub fn build(store: &mut Store, opts: &BuildOptions, progress: &mut dyn Progress) -> Result<Built> {
    let _lease = store.lease()?;
    let started = wall_clock();
    let context = Context::open(&opts.context)?;
    let df_path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| context.root().join("Dockerfile"));
    let text = std::fs::read_to_string(&df_path).map_err(|e| BuildError::Io {
        path: df_path.clone(),
        source: e,
    })?;
    let file = df_path.display().to_string();
    // As the provenance names it: relative to the context when inside it.
    let env_file = df_path
        .strip_prefix(context.root())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.clone());
    let df = dockerfile::parse(&text, &file)?;
    if let Some(syntax) = &df.syntax {
        progress.output(&format!(
            "note: `# syntax={syntax}` is ignored: ingot's own frontend reads this Dockerfile\n"
        ));
    }
    let globals = global_args(&df, opts)?;
    let target = match &opts.target {
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| BuildError::Invalid(format!("target stage {t:?} not found in {file}")))?,
        None => df.stages.len() - 1,
    };
    let deps = stage_deps(&df, target, &globals);
    let needed = needed_stages(&deps, target);
    let bases = resolve_bases(store, &df, &needed, &globals, opts, &file, progress)?;
    let git = crate::git::detect(context.root());
    let epoch = epoch(opts, git.as_ref());
    let created = ingot_store::rfc3339(epoch);
    let mut env = Env {
        store,
        context: &context,
        file,
        epoch,
        created: created.clone(),
        escape: df.escape,
        no_cache: opts.no_cache,
        stages: Vec::new(),
    };
    // Step numbers by file order, whatever order stages run in.
    let mut first = vec![0; needed.len()];
    let mut total = 0;
    for (i, stage) in df.stages[..=target].iter().enumerate() {
        if needed[i] {
            first[i] = total + 1;
            total += stage.steps.len() + 1;
        }
    }
    let run = StageRun {
        globals: &globals,
        opts,
        total,
    };
    let mut cached = 0;
    let mut built: Vec<(usize, Ancestor, Vec<NetworkedStep>)> = Vec::new();
    for wave in waves(&deps, &needed) {
        let outs: Vec<(usize, Result<StageOut>)> = if wave.len() == 1 {
            let i = wave[0];
            vec![(
                i,
                build_stage(&env, &df.stages[i], i, &bases[i], first[i], &run, progress),
            )]
        } else {
            // Independent stages at once, each with a store handle of its
            // own; their progress is told after the wave, in file order.
            let root = env.store.root().to_path_buf();
            let (run_ref, bases_ref, first_ref) = (&run, &bases, &first);
            let (context, escape, no_cache, epoch) = (env.context, env.escape, env.no_cache, env.epoch);
            let results: Vec<(usize, Result<StageOut>, Buffered)> = std::thread::scope(|scope| {
                let handles: Vec<_> = wave
                    .iter()
                    .map(|&i| {
                        let root = root.clone();
                        let stage = &df.stages[i];
                        let (file, created, finished) = (env.file.clone(), env.created.clone(), env.stages.clone());
                        scope.spawn(move || {
                            let mut buffered = Buffered::default();
                            let out = Store::open(&root).map_err(BuildError::from).and_then(|store| {
                                let env = Env {
                                    store: &store,
                                    context,
                                    file,
                                    epoch,
                                    created,
                                    escape,
                                    no_cache,
                                    stages: finished,
                                };
                                build_stage(&env, stage, i, &bases_ref[i], first_ref[i], run_ref, &mut buffered)
                            });
                            (i, out, buffered)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            results
                .into_iter()
                .map(|(i, out, buffered)| {
                    buffered.replay(progress);
                    (i, out)
                })
                .collect()
        };
        for (i, out) in outs {
            let out = out?;
            cached += out.cached;
            let stage_name = df.stages[i].name.clone().unwrap_or_else(|| i.to_string());
            let networked = out
                .state
                .networked
                .iter()
                .map(|(step, network)| NetworkedStep {
                    stage: stage_name.clone(),
                    step: step.clone(),
                    network: network.to_string(),
                })
                .collect();
            built.push((i, out.ancestor, networked));
            env.stages.push((i, df.stages[i].name.clone(), out.state));
        }
    }
    built.sort_by_key(|(i, _, _)| *i);
    let mut ancestors = Vec::new();
    let mut networked = Vec::new();
    for (_, a, n) in built {
        ancestors.push(a);
        networked.extend(n);
    }
    let state = match env.stages.iter().position(|(i, _, _)| *i == target) {
        Some(at) => env.stages.swap_remove(at).2,
        None => State::default(),
    };
    let project = opts.project.clone().unwrap_or_else(|| {
        context
            .root()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut bom = Bom {
        reason: opts.reason.clone(),
        builder: Builder {
            host: host_name(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        created: created.clone(),
        ancestors,
        git,
        tags: opts.tags.iter().map(|t| t.to_string()).collect(),
        project,
        labels: opts.labels.clone(),
        network: networked,
        ..Default::default()
    };
    bom.describe_config(&state.config);
    let manifest = write(store, state, &bom, &created)?;
    store.register(&manifest, &opts.tags)?;
    let provenance = crate::provenance::statement(&crate::provenance::Inputs {
        image: &manifest.digest,
        dockerfile: &env_file,
        dockerfile_digest: &Digest::sha256(text.as_bytes()),
        build_args: &opts.build_args,
        target: opts.target.as_deref(),
        bom: &bom,
        started: &started,
        finished: &wall_clock(),
    });
    Ok(Built {
        manifest,
        steps: total,
        cached,
        bom,
        provenance,
    })
}

/// Global ARGs (before the first FROM), with `--build-arg` values, over
/// BuildKit's automatic platform ARGs (`BUILDPLATFORM`, `TARGETPLATFORM`,
/// their `OS`/`ARCH`/`VARIANT` parts: this machine's), which FROM lines may
/// use and a stage gets by declaring `ARG NAME`.
fn global_args(df: &Dockerfile, opts: &BuildOptions) -> Result<BTreeMap<String, String>> {
    let arch = ingot_oci::config::host_architecture();
    let mut vars = BTreeMap::new();
    for prefix in ["BUILD", "TARGET"] {
        for (k, v) in [
            ("PLATFORM", format!("linux/{arch}")),
            ("OS", "linux".into()),
            ("ARCH", arch.to_string()),
            ("VARIANT", String::new()),
        ] {
            let name = format!("{prefix}{k}");
            let value = opts.build_args.get(&name).cloned().unwrap_or(v);
            vars.insert(name, value);
        }
    }
    for (name, default) in &df.global_args {
        let value = match (opts.build_args.get(name), default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => words::expand(d, &vars, df.escape).map_err(BuildError::Invalid)?,
            (None, None) => String::new(),
        };
        vars.insert(name.clone(), value);
    }
    Ok(vars)
}

/// The earlier stages each stage (up to the target) names: by its FROM,
/// a `COPY --from` or a `RUN --mount=...,from=` (a name holding a variable
/// names every earlier stage).
fn stage_deps(df: &Dockerfile, target: usize, globals: &BTreeMap<String, String>) -> Vec<Vec<usize>> {
    let stages = &df.stages[..=target];
    let index_of = |name: &str, before: usize| -> Vec<usize> {
        if name.contains('$') {
            return (0..before).collect();
        }
        let lower = name.to_ascii_lowercase();
        let by_name = stages[..before]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lower.as_str()));
        by_name
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
            .into_iter()
            .collect()
    };
    stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let mut names = vec![words::expand(&stage.base, globals, df.escape).unwrap_or_else(|_| stage.base.clone())];
            for step in &stage.steps {
                match &step.instruction {
                    Instruction::Copy(c) | Instruction::Add(c) => names.extend(c.from.clone()),
                    Instruction::Run(r) => names.extend(r.mounts.iter().filter_map(|m| match m {
                        dockerfile::Mount::Bind { from, .. } => from.clone(),
                        _ => None,
                    })),
                    _ => {}
                }
            }
            let mut deps: Vec<usize> = names.iter().flat_map(|n| index_of(n, i)).collect();
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect()
}

/// Which stages the target needs, as BuildKit decides: the target and,
/// from it, every stage one it needs names ([`stage_deps`]). The others
/// are not built.
fn needed_stages(deps: &[Vec<usize>], target: usize) -> Vec<bool> {
    let mut needed = vec![false; deps.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !std::mem::replace(&mut needed[i], true) {
            todo.extend(&deps[i]);
        }
    }
    needed
}

/// The needed stages in waves: each wave's stages need only stages of
/// earlier waves, so they can run at once.
fn waves(deps: &[Vec<usize>], needed: &[bool]) -> Vec<Vec<usize>> {
    let mut level = vec![0usize; deps.len()];
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in (0..deps.len()).filter(|i| needed[*i]) {
        level[i] = deps[i].iter().map(|d| level[*d] + 1).max().unwrap_or(0);
        if out.len() <= level[i] {
            out.resize(level[i] + 1, Vec::new());
        }
        out[level[i]].push(i);
    }
    out
}

/// What every stage of a build shares.
struct StageRun<'a> {
    globals: &'a BTreeMap<String, String>,
    opts: &'a BuildOptions,
    total: usize,
}

/// A built stage.
struct StageOut {
    state: State,
    ancestor: Ancestor,
    cached: usize,
}

/// Progress kept to be told later (a stage run beside others).
#[derive(Default)]
struct Buffered {
    events: Vec<Event>,
}

enum Event {
    Step(usize, usize, String),
    Done(bool, f64),
    Output(String),
}

impl Progress for Buffered {
    fn step(&mut self, n: usize, total: usize, text: &str) {
        self.events.push(Event::Step(n, total, text.to_string()));
    }
    fn done(&mut self, cached: bool, secs: f64) {
        self.events.push(Event::Done(cached, secs));
    }
    fn output(&mut self, text: &str) {
        self.events.push(Event::Output(text.to_string()));
    }
}

impl Buffered {
    fn replay(self, to: &mut dyn Progress) {
        for e in self.events {
            match e {
                Event::Step(n, total, text) => to.step(n, total, &text),
                Event::Done(cached, secs) => to.done(cached, secs),
                Event::Output(text) => to.output(&text),
            }
        }
    }
}

/// Builds stage `i` (FROM, its base's ONBUILD triggers, its steps), its
/// steps numbered from `first`.
fn build_stage(
    env: &Env,
    stage: &Stage,
    i: usize,
    base: &Base,
    first: usize,
    run: &StageRun,
    progress: &mut dyn Progress,
) -> Result<StageOut> {
    let (opts, globals, total) = (run.opts, run.globals, run.total);
    let mut n = first;
    let mut cached = 0;
    progress.step(n, total, &stage.text);
    let t = Instant::now();
    let (mut state, ancestor) = from(env, stage, i, globals, base)?;
    let hit = env.seen(&state.key)?;
    cached += usize::from(hit);
    progress.done(hit, t.elapsed().as_secs_f64());
    // The base's ONBUILD triggers (an image's or an earlier stage's) run
    // first, as Docker runs them, and are not passed on.
    let triggers: Vec<String> = match state.config.remove("OnBuild") {
        Some(Value::Array(t)) => t.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    for trigger in triggers {
        let instruction =
            dockerfile::parse_trigger(&trigger, env.escape).map_err(|m| from_error(&env.file, stage, m))?;
        let step = Step {
            pos: stage.pos,
            text: format!("ONBUILD {trigger}"),
            instruction,
        };
        progress.step(n, total, &step.text);
        let t = Instant::now();
        let was_cached = apply(env, &mut state, &step, opts, globals, progress)?;
        progress.done(was_cached, t.elapsed().as_secs_f64());
    }
    for step in &stage.steps {
        n += 1;
        progress.step(n, total, &step.text);
        let t = Instant::now();
        let was_cached = apply(env, &mut state, step, opts, globals, progress)?;
        cached += usize::from(was_cached);
        progress.done(was_cached, t.elapsed().as_secs_f64());
    }
    Ok(StageOut {
        state,
        ancestor,
        cached,
    })
}

/// What a stage's FROM names, found before any step runs.
pub(crate) enum Base {
    Scratch,
    /// An earlier stage (its name or index as written).
    Stage,
    /// An image in the store (pulled from its registry if need be).
    Image(ingot_store::Image),
}

/// The error of a FROM line.
fn from_error(file: &str, stage: &Stage, message: String) -> BuildError {
    BuildError::Step {
        file: file.to_string(),
        pos: stage.pos,
        text: stage.text.clone(),
        message,
    }
}

/// The stage's `--platform`, when it names another than this machine's.
fn stage_platform(
    stage: &Stage,
    globals: &BTreeMap<String, String>,
    escape: char,
) -> std::result::Result<Option<Platform>, String> {
    let Some(p) = &stage.platform else { return Ok(None) };
    let p: Platform = words::expand(p, globals, escape)?
        .parse()
        .map_err(|e: ingot_registry::ClientError| e.to_string())?;
    Ok((!p.is_host()).then_some(p))
}

/// Resolves every stage's base before any step runs: `scratch`, an earlier
/// stage, or an image: from the store, else (or with `--pull` always)
/// pulled from the registry its name starts with (as `ingot pull`, with
/// `--platform` choosing in an index). A name without a registry must be
/// in the store.
fn resolve_bases(
    store: &mut Store,
    df: &Dockerfile,
    needed: &[bool],
    globals: &BTreeMap<String, String>,
    opts: &BuildOptions,
    file: &str,
    progress: &mut dyn Progress,
) -> Result<Vec<Base>> {
    // `needed` covers the stages up to the target.
    let (stages, escape) = (&df.stages[..needed.len()], df.escape);
    let mut bases = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        let err = |m: String| from_error(file, stage, m);
        let base = words::expand(&stage.base, globals, escape).map_err(err)?;
        if !needed[i] {
            // Not built: its base is never looked at (nor pulled).
            bases.push(Base::Scratch);
            continue;
        }
        if base.eq_ignore_ascii_case("scratch") {
            bases.push(Base::Scratch);
            continue;
        }
        let lower = base.to_ascii_lowercase();
        let earlier = stages[..i]
            .iter()
            .enumerate()
            .any(|(j, s)| s.name.as_deref() == Some(lower.as_str()) || base.parse::<usize>().ok() == Some(j));
        if earlier {
            bases.push(Base::Stage);
            continue;
        }
        let platform = stage_platform(stage, globals, escape).map_err(err)?;
        let remote = Remote::names_registry(&base);
        let fits = |img: &ingot_store::Image| match (&platform, store.config(&img.manifest)) {
            (None, _) => true,
            (Some(p), Ok(Some((_, c)))) => c.architecture == p.architecture && c.os == p.os,
            _ => false,
        };
        if !(opts.pull && remote) {
            if let Some(img) = store.resolve(&base).ok().filter(|img| fits(img)) {
                bases.push(Base::Image(img));
                continue;
            }
        }
        if !remote {
            return Err(err(match &platform {
                Some(p) => format!("base image {base:?}: no {p} image of that name in the store"),
                None => format!(
                    "base image {base:?} is not in the store and names no registry \
                     (ingot pull or build it first, or name its registry: HOST[:PORT]/{base})"
                ),
            }));
        }
        let r = Remote::parse(&base, false).map_err(|e| err(e.to_string()))?;
        let pulled = ingot_registry::client::pull_platform(
            store,
            &r,
            platform.as_ref(),
            std::sync::Arc::new(ingot_registry::client::Quiet),
        )
        .map_err(|e| err(format!("cannot pull base image {base:?}: {e}")))?;
        let digest = pulled
            .digest
            .ok_or_else(|| err(format!("pulling {base:?} gave no manifest")))?;
        progress.output(&format!(
            "pulled {base} as {digest} ({} blobs fetched, {} already here)\n",
            pulled.blobs_moved, pulled.blobs_skipped
        ));
        bases.push(Base::Image(store.image(&digest)?));
    }
    Ok(bases)
}

/// FROM: an empty state (`scratch`), an earlier stage's, or an image's
/// (resolved by [`resolve_bases`]).
fn from(
    env: &Env,
    stage: &Stage,
    index: usize,
    globals: &BTreeMap<String, String>,
    resolved: &Base,
) -> Result<(State, Ancestor)> {
    let err = |m: String| from_error(&env.file, stage, m);
    let base = words::expand(&stage.base, globals, env.escape).map_err(&err)?;
    let stage_name = stage.name.clone().unwrap_or_else(|| index.to_string());
    let platform = stage_platform(stage, globals, env.escape).map_err(&err)?;
    let image = match resolved {
        Base::Image(image) => image,
        Base::Stage => {
            let s = env
                .stage(&base)
                .ok_or_else(|| err(format!("stage {base:?} is not built")))?;
            let mut state = s.clone();
            state.args.clear();
            state.cmd_set = false;
            state.networked.clear();
            return Ok((
                state,
                Ancestor {
                    stage: stage_name,
                    name: base.clone(),
                    digest: None,
                },
            ));
        }
        Base::Scratch => {
            let state = State {
                key: hash(&["FROM scratch"]),
                architecture: platform.map_or_else(
                    || ingot_oci::config::host_architecture().to_string(),
                    |p| p.architecture,
                ),
                ..Default::default()
            };
            return Ok((
                state,
                Ancestor {
                    stage: stage_name,
                    name: "scratch".into(),
                    digest: None,
                },
            ));
        }
    };
    let (_, config) = env
        .store
        .config(&image.manifest)?
        .ok_or_else(|| err(format!("base image {base:?} is an index; name one platform's image")))?;
    let refs = image.manifest.references().map_err(|e| err(e.to_string()))?;
    let layers: Vec<LayerRef> = refs
        .iter()
        .filter(|r| r.role == Role::Layer)
        .zip(&config.rootfs.diff_ids)
        .map(|(r, diff_id)| LayerRef {
            digest: r.digest.clone(),
            size: r.size,
            diff_id: diff_id.clone(),
            media_type: r.media_type.clone(),
        })
        .collect();
    let state = State {
        layers,
        config: config
            .config
            .clone()
            .and_then(|c| c.as_object().cloned())
            .unwrap_or_default(),
        history: config.history.clone(),
        key: hash(&["FROM", &image.digest.to_string()]),
        architecture: config.architecture.clone(),
        ..Default::default()
    };
    Ok((
        state,
        Ancestor {
            stage: stage_name,
            name: base,
            digest: Some(image.digest.to_string()),
        },
    ))
}

/// Runs one step; whether it came from the cache.
fn apply(
    env: &Env,
    state: &mut State,
    step: &Step,
    opts: &BuildOptions,
    globals: &BTreeMap<String, String>,
    progress: &mut dyn Progress,
) -> Result<bool> {
    let vars = state.vars();
    let expand = |w: &str| words::expand(w, &vars, env.escape).map_err(|m| env.step_error(step, m));
    let mut empty = true;
    let mut was_cached = false;
    match &step.instruction {
        Instruction::Env(pairs) => {
            for (k, v) in pairs {
                let value = expand(v)?;
                state.set_env(k, &value);
            }
        }
        Instruction::Arg(args) => {
            for (name, default) in args {
                let value = match (opts.build_args.get(name), default, globals.get(name)) {
                    (Some(v), _, _) => v.clone(),
                    (None, Some(d), _) => expand(d)?,
                    (None, None, Some(g)) => g.clone(),
                    (None, None, None) => String::new(),
                };
                state.args.insert(name.clone(), value);
            }
        }
        Instruction::Label(pairs) => {
            let mut labels = state
                .config
                .get("Labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in pairs {
                labels.insert(expand(k)?, json!(expand(v)?));
            }
            state.config.insert("Labels".into(), Value::Object(labels));
        }
        Instruction::Workdir(p) => {
            let p = state.in_container(&expand(p)?);
            let clean =
                ingot_runtime::spec::clean_target(&p, "WORKDIR").map_err(|e| env.step_error(step, e.to_string()))?;
            state.config.insert("WorkingDir".into(), json!(clean));
        }
        Instruction::User(u) => {
            state.config.insert("User".into(), json!(expand(u)?));
        }
        Instruction::Expose(ports) => {
            let mut keys = Vec::new();
            for p in ports {
                let p = expand(p)?;
                let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(env.step_error(step, format!("invalid port {p:?}")));
                }
                keys.push(format!("{num}/{proto}"));
            }
            add_keys(&mut state.config, "ExposedPorts", keys);
        }
        Instruction::Volume(vols) => {
            let keys = vols.iter().map(|v| expand(v)).collect::<Result<Vec<_>, _>>()?;
            add_keys(&mut state.config, "Volumes", keys);
        }
        Instruction::StopSignal(s) => {
            let s = expand(s)?;
            ingot_runtime::spec::parse_signal(&s).map_err(|e| env.step_error(step, e.to_string()))?;
            state.config.insert("StopSignal".into(), json!(s));
        }
        Instruction::Shell(sh) => {
            state.config.insert("Shell".into(), json!(sh));
        }
        Instruction::Onbuild(trigger) => {
            let mut triggers = state
                .config
                .get("OnBuild")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            triggers.push(json!(trigger));
            state.config.insert("OnBuild".into(), Value::Array(triggers));
        }
        Instruction::Cmd(c) => {
            state.config.insert("Cmd".into(), json!(argv(state, c)));
            state.cmd_set = true;
        }
        Instruction::Entrypoint(c) => {
            state.config.insert("Entrypoint".into(), json!(argv(state, c)));
            if !state.cmd_set {
                state.config.insert("Cmd".into(), Value::Null);
            }
        }
        Instruction::Healthcheck(h) => {
            let v = match &h.command {
                None => json!({"Test": ["NONE"]}),
                Some(c) => {
                    let test = match c {
                        Command::Exec(a) => std::iter::once("CMD".to_string()).chain(a.iter().cloned()).collect(),
                        Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                    };
                    let mut o = json!({"Test": test});
                    for (key, val) in [
                        ("Interval", &h.interval),
                        ("Timeout", &h.timeout),
                        ("StartPeriod", &h.start_period),
                    ] {
                        if let Some(d) = val {
                            let ns = duration_ns(d)
                                .ok_or_else(|| env.step_error(step, format!("invalid duration {d:?}")))?;
                            o[key] = json!(ns);
                        }
                    }
                    if let Some(r) = &h.retries {
                        let n: u32 = r
                            .parse()
                            .map_err(|_| env.step_error(step, format!("invalid retries {r:?}")))?;
                        o["Retries"] = json!(n);
                    }
                    o
                }
            };
            state.config.insert("Healthcheck".into(), v);
        }
        Instruction::Copy(c) | Instruction::Add(c) => {
            let add = matches!(step.instruction, Instruction::Add(_));
            let keyword = if add { "ADD" } else { "COPY" };
            if let Some(input) = copy::from_key(env, state, step, c)? {
                state.chain(keyword, &input);
                let key = state.key.clone();
                let (layer, hit) = env.cached_layer(&key, || copy::plan(env, state, step, c, add)?.write(env))?;
                state.layers.push(layer);
                state.history(&env.created, &step.text, false);
                return Ok(hit);
            }
            let plan = copy::plan(env, state, step, c, add)?;
            let downloads = c
                .paths
                .iter()
                .any(|p| words::expand(p, &vars, env.escape).is_ok_and(|p| copy::is_url(&p)));
            if add && c.checksum.is_none() && downloads {
                state.networked.push((step.text.clone(), "download"));
            }
            let text = format!("{keyword} {}", plan.describe);
            state.chain(&text, &plan.digest);
            let (layer, hit) = env.cached_layer(&state.key, || plan.write(env))?;
            state.layers.push(layer);
            empty = false;
            was_cached = hit;
        }
        Instruction::Run(r) => {
            let network = match r.network {
                None | Some(RunNetwork::Default) => opts.network,
                Some(RunNetwork::None) => NetworkMode::None,
                Some(RunNetwork::Host) if opts.allow_host_network || opts.network == NetworkMode::Host => {
                    NetworkMode::Host
                }
                Some(RunNetwork::Host) => {
                    return Err(env.step_error(
                        step,
                        "RUN --network=host needs the builder's consent: ingot build --allow network.host",
                    ))
                }
            };
            let exec = run::Exec {
                args: argv(state, &r.command),
                env: run::environment(state),
                network,
                mounts: run::prepare(env, state, step, &r.mounts, &opts.secrets)?,
            };
            // The network and the mounts are part of the step: the same
            // command with another network is another step (as BuildKit's
            // cache); a mount's key holds no secret value.
            state.chain(
                &format!(
                    "RUN {} --network={}{}",
                    serde_json::to_string(&exec.args).unwrap_or_default(),
                    network.name(),
                    exec.mounts.key
                ),
                &exec.env.join("\n"),
            );
            if network != NetworkMode::None {
                state.networked.push((step.text.clone(), network.name()));
            }
            let (layer, hit) = env.cached_layer(&state.key, || run::run(env, state, step, &exec, progress))?;
            state.layers.push(layer);
            empty = false;
            was_cached = hit;
        }
    }
    if empty {
        // Config-only steps still move the key: later steps depend on them.
        let snapshot = canonical_json(&state.config).unwrap_or_default();
        state.chain(&step.text, &String::from_utf8_lossy(&snapshot));
        was_cached = env.seen(&state.key)?;
    }
    state.history(&env.created, &step.text, empty);
    Ok(was_cached)
}

/// argv of CMD/ENTRYPOINT/RUN: exec form as is, shell form through SHELL.
fn argv(state: &State, c: &Command) -> Vec<String> {
    match c {
        Command::Exec(a) => a.clone(),
        Command::Shell(s) => {
            let mut v = state.shell();
            v.push(s.clone());
            v
        }
    }
}

/// `30s`, `1m30s`, `500ms`, `1h` -> nanoseconds.
fn duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then_some(total as i64)
}

/// Writes the final config and manifest (both carrying the BOM).
fn write(store: &Store, mut state: State, bom: &Bom, created: &str) -> Result<Manifest> {
    let annotations = bom.annotations();
    let mut labels = state
        .config
        .get("Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in &bom.labels {
        labels.insert(k.clone(), json!(v));
    }
    for (k, v) in &annotations {
        labels.insert(k.clone(), json!(v));
    }
    state.config.insert("Labels".into(), Value::Object(labels));
    let config = json!({
        "architecture": if state.architecture.is_empty() { ingot_oci::config::host_architecture() } else { &state.architecture },
        "os": "linux",
        "created": created,
        "config": state.config,
        "rootfs": {"type": "layers", "diff_ids": state.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "history": state.history,
    });
    let bytes = canonical_json(&config).map_err(|e| BuildError::Invalid(e.to_string()))?;
    let config_digest = store.blobs().put(&bytes)?;
    let layers: Vec<(&str, Digest, u64)> = state
        .layers
        .iter()
        .map(|l| (l.media_type.as_str(), l.digest.clone(), l.size))
        .collect();
    let annotations: HashMap<String, String> = annotations.into_iter().collect();
    Ok(ingot_store::write_image(
        store,
        &config_digest,
        bytes.len() as u64,
        &layers,
        annotations,
    )?)
}

/// Reads a built image's bill of materials back from its config labels.
pub fn read_bom(store: &Store, image: &str) -> Result<Option<Bom>> {
    let img = store.resolve(image)?;
    let Some((_, config)) = store.config(&img.manifest)? else {
        return Ok(None);
    };
    Ok(config
        .config
        .as_ref()
        .and_then(|c| c.get("Labels"))
        .and_then(Value::as_object)
        .and_then(Bom::from_labels))
}

/// When the commit an image was built from was made (Unix seconds), from
/// its bill of materials: where a change's lead time starts.
pub fn commit_time(store: &Store, image: &ingot_oci::Digest) -> Option<i64> {
    read_bom(store, &image.to_string())
        .ok()
        .flatten()
        .and_then(|b| b.git)
        .and_then(|g| g.commit_time)
}

/// Adds `keys` (each mapping to `{}`) to the config's object `field`
/// (ExposedPorts, Volumes), keeping what earlier instructions put there.
fn add_keys(config: &mut serde_json::Map<String, Value>, field: &str, keys: Vec<String>) {
    let mut map = config
        .get(field)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in keys {
        map.insert(k, json!({}));
    }
    config.insert(field.into(), Value::Object(map));
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(super::duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(super::duration_ns("500ms"), Some(500_000_000));
        assert_eq!(super::duration_ns("5"), None);
        assert_eq!(super::duration_ns("5x"), None);
    }
}
