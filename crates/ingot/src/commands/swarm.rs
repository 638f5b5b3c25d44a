//! `--engine swarm`: deploy, services, service ps|scale, rollback, stack
//! rm and drift against the Docker Swarm whose manager DOCKER_HOST names.
//! The ledger is this root's; ingot_deploy::swarm carries changes out.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ingot_deploy::backend::{self, Backend, Registry};
use ingot_deploy::ledger;
use ingot_deploy::pin::{EngineKind, PinnedStack};
use ingot_deploy::swarm::{self, Swarm};
use ingot_store::Store;
use serde_json::json;

use super::deploy::{json_or_table, rt, short, text};
use crate::cli::{Cli, Format};
use crate::output;

/// What `deploy --engine swarm` was given besides the stack.
pub struct Target<'a> {
    pub registry: Option<&'a str>,
    pub insecure: bool,
    pub policy: Option<&'a Path>,
}

fn connect() -> Result<Swarm> {
    Ok(Swarm::connect(&swarm::docker_host())?)
}

/// The user running this command, as the ledger names actors.
fn actor() -> String {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    ingot_deploy::peer::unix_actor(uid)
}

fn progress(cli: &Cli) -> impl Fn(&str) + Sync {
    let show = !cli.quiet && cli.format == Format::Table;
    move |m: &str| {
        if show {
            // Never a panic mid-change for a closed stderr.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "ingot: {m}");
        }
    }
}

fn carry_out(root: &Path, cli: &Cli, change: backend::Change<'_>) -> Result<ExitCode> {
    let swarm = connect()?;
    let rt = rt()?;
    let mut store = Store::open(root)?;
    let sealed = backend::carry_out(&rt, &mut store, &swarm, change, &progress(cli))?;
    let (e, o) = (&sealed.entry, &sealed.outcome);
    match cli.format {
        Format::Json => output::json(&json!({
            "entry": e, "outcome": o.outcome, "message": o.message, "services": o.services,
        }))?,
        Format::Table if !cli.quiet => {
            println!(
                "Ledger entry #{} {} of stack {} on the swarm: {} ({})",
                e.seq, e.kind, e.stack, o.outcome, o.message
            );
            println!("  stack digest {}  hash {}", e.digest, e.hash);
            for (name, r) in &o.services {
                let msg = if r.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.message)
                };
                println!("  {}_{name}: {} ({}){msg}", e.stack, r.action, r.state);
            }
        }
        Format::Table => {}
    }
    if o.outcome != ledger::SUCCEEDED {
        eprintln!("ingot: {}: {}", o.outcome, o.message);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn deploy(
    root: &Path,
    cli: &Cli,
    mut stack: PinnedStack,
    secrets: super::deploy::Secrets,
    reason: Option<&str>,
    t: &Target,
) -> Result<ExitCode> {
    stack.engine = EngineKind::Swarm;
    let registry = t.registry.map(|r| Registry::parse(r, t.insecure)).transpose()?;
    let actor = actor();
    carry_out(
        root,
        cli,
        backend::Change {
            kind: ledger::DEPLOY,
            stack,
            secrets,
            actor: &actor,
            reason,
            registry,
            policy: t.policy,
            based_on: None,
        },
    )
}

/// The swarm stacks as the ledger leaves them, and its entries.
fn desired(root: &Path) -> Result<(BTreeMap<String, PinnedStack>, Vec<ingot_store::LedgerRow>)> {
    let rows = Store::open(root)?.ledger_rows()?;
    ledger::verify(&rows)?;
    Ok((ledger::desired_on(&rows, EngineKind::Swarm)?, rows))
}

/// A change derived from the ledger's `rows` (scale, rollback, rm): no
/// new images or secrets, refused if the ledger moves on meanwhile.
fn follow_up(
    root: &Path,
    cli: &Cli,
    kind: &str,
    stack: PinnedStack,
    reason: &str,
    rows: &[ingot_store::LedgerRow],
) -> Result<ExitCode> {
    let actor = actor();
    carry_out(
        root,
        cli,
        backend::Change {
            kind,
            stack,
            secrets: BTreeMap::new(),
            actor: &actor,
            reason: Some(reason),
            registry: None,
            policy: None,
            based_on: Some(rows.last().map_or(0, |r| r.seq)),
        },
    )
}

/// `STACK_SERVICE` -> (stack, service) among the swarm stacks.
fn find(desired: &BTreeMap<String, PinnedStack>, service: &str) -> Result<(String, String)> {
    for (stack, p) in desired {
        if let Some(name) = service.strip_prefix(&format!("{stack}_")) {
            if p.services.contains_key(name) {
                return Ok((stack.clone(), name.to_string()));
            }
        }
    }
    bail!("no service {service:?} in the ledger's swarm stacks (names are STACK_SERVICE)")
}

pub fn scale(root: &Path, cli: &Cli, spec: &str) -> Result<ExitCode> {
    let Some((service, n)) = spec.split_once('=') else {
        bail!("invalid scale {spec:?}: expected SERVICE=REPLICAS");
    };
    let n: u32 = n.parse().with_context(|| format!("invalid replica count {n:?}"))?;
    if n > ingot_deploy::pin::MAX_REPLICAS {
        bail!("replicas: {n} is more than {}", ingot_deploy::pin::MAX_REPLICAS);
    }
    let (desired, rows) = desired(root)?;
    let (stack, name) = find(&desired, service)?;
    let mut pinned = desired[&stack].clone();
    let svc = pinned.services.get_mut(&name).expect("found above");
    if svc.global {
        bail!("service {service} is global (one task per node): it cannot be scaled");
    }
    svc.replicas = n;
    // Scaled: no longer the bundle's application (ingot_deploy::bundle::check).
    pinned.bundle = None;
    follow_up(root, cli, ledger::SCALE, pinned, &format!("scale {service}={n}"), &rows)
}

pub fn rollback(root: &Path, cli: &Cli, service: &str) -> Result<ExitCode> {
    let (desired, rows) = desired(root)?;
    let (stack, name) = find(&desired, service)?;
    let pinned = ledger::rollback_target(&rows, &stack, &name, service)?;
    follow_up(
        root,
        cli,
        ledger::ROLLBACK,
        pinned,
        &format!("rollback {service}"),
        &rows,
    )
}

pub fn stack_rm(root: &Path, cli: &Cli, stack: &str) -> Result<ExitCode> {
    let (mut desired, rows) = desired(root)?;
    let Some(pinned) = desired.remove(stack) else {
        bail!("stack {stack} is not deployed on the swarm (see `ingot ledger`)");
    };
    follow_up(root, cli, ledger::RM, pinned, "stack rm", &rows)
}

/// A JSON array of strings, comma-separated.
fn strings(v: &serde_json::Value) -> String {
    let all: Vec<&str> = v.as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
    all.join(",")
}

pub fn services(cli: &Cli) -> Result<ExitCode> {
    let swarm = connect()?;
    let rt = rt()?;
    rt.block_on(swarm.manager())?;
    let v = serde_json::to_value(rt.block_on(swarm.services(None))?)?;
    json_or_table(
        cli,
        &v,
        &["NAME", "MODE", "REPLICAS", "DIGEST", "UPDATE", "PORTS"],
        |s| {
            let ports: Vec<&str> = s["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .collect();
            vec![
                text(&s["name"]),
                text(&s["mode"]),
                format!("{}/{}", s["running"], s["desired"]),
                short(&s["digest"]),
                text(&s["update"]),
                ports.join(","),
            ]
        },
    )
}

pub fn service_ps(cli: &Cli, service: &str) -> Result<ExitCode> {
    let swarm = connect()?;
    let rt = rt()?;
    rt.block_on(swarm.manager())?;
    let v = serde_json::to_value(rt.block_on(swarm.tasks(service))?)?;
    json_or_table(
        cli,
        &v,
        &[
            "ID", "SLOT", "NODE", "DESIRED", "STATE", "HEALTH", "DIGEST", "PORTS", "ERROR",
        ],
        |t| {
            vec![
                text(&t["id"]).chars().take(12).collect(),
                t["slot"].to_string(),
                text(&t["node"]),
                text(&t["desired"]),
                text(&t["state"]),
                text(&t["health"]),
                short(&t["digest"]),
                strings(&t["ports"]),
                text(&t["error"]),
            ]
        },
    )
}

pub fn drift(root: &Path, cli: &Cli) -> Result<ExitCode> {
    let (desired, _) = desired(root)?;
    let swarm = connect()?;
    let rt = rt()?;
    rt.block_on(swarm.manager())?;
    let diffs = rt.block_on(swarm.drift(&desired))?;
    super::deploy::print_drift(cli, &diffs, "the swarm's services match the ledger")
}
