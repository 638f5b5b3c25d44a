//! `ingot daemon`, `deploy`, `services`, `service ps|scale`, `rollback`,
//! `stack rm`, `ledger [verify|replay]`, `drift`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ingot_deploy::pin::PinnedStack;
use ingot_deploy::{client, ledger};
use ingot_store::Store;
use serde_json::{json, Value};

use crate::cli::{Cli, Format, LedgerCommand};
use crate::output;

/// The daemon: INGOT_HOST (tcp://HOST:PORT with mutual TLS from
/// INGOT_TLS_DIR or <root>/tls, or unix:///PATH), else <root>/ingot.sock.
fn endpoint(root: &Path) -> Result<client::Endpoint> {
    let host = std::env::var("INGOT_HOST").ok().filter(|h| !h.is_empty());
    let tls = std::env::var_os("INGOT_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tls"));
    Ok(client::Endpoint::parse(
        host.as_deref(),
        &root.join("ingot.sock"),
        &tls,
    )?)
}

pub(super) fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn call(root: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let ep = endpoint(root)?;
    Ok(rt()?.block_on(client::request(&ep, method, path, body))?)
}

/// What `ingot daemon` was given.
pub struct DaemonOptions<'a> {
    pub sock: Option<&'a Path>,
    pub policy: Option<&'a Path>,
    pub tcp: Option<std::net::SocketAddr>,
    pub tls_dir: Option<&'a Path>,
    pub replace: bool,
    pub allow_bind: &'a [PathBuf],
    /// Where to serve the web dashboard.
    pub web: Option<std::net::SocketAddr>,
}

pub fn daemon(root: &Path, cli: &Cli, o: &DaemonOptions) -> Result<ExitCode> {
    let DaemonOptions {
        sock,
        policy,
        tcp,
        tls_dir,
        replace,
        allow_bind,
        web,
    } = *o;
    let allow_bind = allow_bind
        .iter()
        .map(|d| std::fs::canonicalize(d).with_context(|| format!("--allow-bind {}", d.display())))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    // Open once: creates or migrates the store before anything else.
    Store::open(root)?;
    if let Some(p) = policy {
        ingot_trust::policy::Policy::load(p)?;
    }
    // Replicas talk to each other and out through the bridge, whatever the
    // host's FORWARD policy (rules in ingot's own chains, re-checked here).
    ingot_runtime::net::bridge::ensure_bridge()?;
    ingot_runtime::net::bridge::ensure_forwarding()?;
    ingot_runtime::net::bridge::ensure_vip_route()?;
    if !ingot_runtime::net::migrate_listeners() {
        tracing::warn!("net.ipv4.tcp_migrate_req cannot be set (Linux < 5.14?): a daemon --replace may reset connections still in the accept queue");
    }
    // Monitors and health checks run this same (protected) binary.
    let exe = std::path::PathBuf::from("/proc/self/exe");
    let sock = sock.map(Path::to_path_buf).unwrap_or_else(|| root.join("ingot.sock"));
    let engine = ingot_deploy::engine::Engine::new(root.to_path_buf(), exe, policy.map(Path::to_path_buf))?;
    engine.allow_binds(allow_bind);
    engine.serve_vips();
    // Service discovery for the replicas (ingot_deploy::dns): bound now, so
    // a daemon that cannot answer their names does not start.
    let dns_sockets = ingot_deploy::dns::bind(root).with_context(|| {
        format!(
            "service discovery: cannot bind DNS on {}",
            ingot_deploy::dns::address(root)
        )
    })?;
    let tcp = match tcp {
        Some(addr) => {
            let dir = tls_dir.map(Path::to_path_buf).unwrap_or_else(|| root.join("tls"));
            let mut hosts = vec!["localhost".to_string(), addr.ip().to_string()];
            if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                hosts.push(h.trim().to_string());
            }
            if ingot_deploy::tls::ensure_dev_ca(&dir, &hosts)? && !cli.quiet {
                eprintln!("ingot: made a development CA and certificates in {}", dir.display());
            }
            Some((addr, dir))
        }
        None => None,
    };
    let quiet = cli.quiet;
    rt()?.block_on(async move {
        // Service discovery for the replicas (crate ingot_deploy::dns).
        let dns = engine.clone();
        tokio::spawn(async move {
            if let Err(e) = ingot_deploy::dns::serve(dns, dns_sockets).await {
                tracing::error!("service discovery: the DNS server stopped: {e}");
            }
        });
        if let Some(addr) = web {
            // Bound beside a predecessor's (--replace) like the published ports.
            let bind = || -> std::io::Result<tokio::net::TcpListener> {
                let s = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                s.set_reuseaddr(true)?;
                s.set_reuseport(replace)?;
                s.bind(addr)?;
                s.listen(128)
            };
            let listener = bind().with_context(|| format!("--web {addr}: cannot listen"))?;
            // The token exists before anyone is told where to find it.
            ingot_web::auth::load_or_make_token(&engine.root)
                .with_context(|| format!("--web: {}", ingot_web::token_path(&engine.root).display()))?;
            if !quiet {
                eprintln!(
                    "ingot: dashboard on http://{addr}/ ({}; token in {})",
                    if addr.ip().is_loopback() {
                        "open to this host"
                    } else {
                        "token required"
                    },
                    ingot_web::token_path(&engine.root).display()
                );
            }
            let e = engine.clone();
            tokio::spawn(async move {
                if let Err(err) = ingot_web::serve(e, listener).await {
                    tracing::error!("the web dashboard stopped: {err}");
                }
            });
        }
        if !quiet {
            eprintln!("ingot: daemon listening on {}", sock.display());
            if let Some((addr, dir)) = &tcp {
                eprintln!("ingot: and on tcp://{addr} (mutual TLS, {})", dir.display());
            }
        }
        ingot_deploy::api::serve(engine, &sock, tcp, replace).await?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Parses the stack file `file` (warnings printed): its text and definition.
pub(super) fn parse_file(file: &Path) -> Result<(String, ingot_deploy::compose::StackDef)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let def = ingot_deploy::compose::parse(&file.display().to_string(), &text)?;
    for w in &def.warnings {
        eprintln!("ingot: warning: {}: {w}", file.display());
    }
    Ok((text, def))
}

/// Parses and pins the stack file `file` as stack `name`.
pub(super) fn pin_file(store: &Store, file: &Path, name: &str) -> Result<(PinnedStack, Secrets)> {
    let (_, def) = parse_file(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    Ok(ingot_deploy::pin::pin(store, name, &def, dir)?)
}

pub(super) type Secrets = std::collections::BTreeMap<String, ingot_deploy::pin::SecretValue>;

/// Sends `pinned` (from a Compose file or a bundle) to the daemon.
pub fn deploy(
    root: &Path,
    cli: &Cli,
    pinned: PinnedStack,
    secrets: Secrets,
    reason: Option<&str>,
    detach: bool,
) -> Result<ExitCode> {
    // The values travel beside the stack (which names their digests only);
    // the daemon keeps them in its store, never in the ledger.
    let secrets: serde_json::Map<String, Value> = secrets
        .into_iter()
        .map(|(n, v)| (n, Value::String(base64::engine::general_purpose::STANDARD.encode(v.0))))
        .collect();
    let body = json!({"stack": pinned, "secrets": secrets, "reason": reason});
    change(root, cli, "POST", "/v1/deploy", Some(&body), detach)
}

/// Submits a change; unless `detach`, follows it to its outcome (Ctrl-C
/// stops following, never the change: the daemon carries it out).
fn change(root: &Path, cli: &Cli, method: &str, path: &str, body: Option<&Value>, detach: bool) -> Result<ExitCode> {
    let ep = endpoint(root)?;
    let rt = rt()?;
    let r = rt.block_on(client::request(&ep, method, path, body))?;
    let e = &r["entry"];
    let seq = e["seq"].as_i64().context("the daemon's answer names no ledger entry")?;
    let (kind, stack) = (text(&e["kind"]), text(&e["stack"]));
    if detach {
        match cli.format {
            Format::Json => output::json(&r)?,
            Format::Table if !cli.quiet => {
                println!(
                    "Ledger entry #{seq} {kind} of stack {stack}: pending (follow it with `ingot ledger wait {seq}`)"
                )
            }
            Format::Table => {}
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.format == Format::Table && !cli.quiet {
        eprintln!("ingot: ledger entry #{seq}: {kind} of stack {stack} in progress (Ctrl-C stops waiting, not the change; `ingot ledger wait {seq}` follows it)");
    }
    wait(&ep, &rt, cli, seq)
}

fn wait(ep: &client::Endpoint, rt: &tokio::runtime::Runtime, cli: &Cli, seq: i64) -> Result<ExitCode> {
    let done = rt.block_on(client::request(ep, "GET", &format!("/v1/ledger/{seq}/wait"), None))?;
    report(cli, &done)
}

/// Prints a change's result; exit 1 unless it succeeded.
fn report(cli: &Cli, r: &Value) -> Result<ExitCode> {
    let outcome = r["outcome"].as_str().unwrap_or_default();
    let e = &r["entry"];
    match cli.format {
        Format::Json => output::json(r)?,
        Format::Table if !cli.quiet => {
            println!(
                "Ledger entry #{} {} of stack {}: {} ({})",
                e["seq"],
                e["kind"].as_str().unwrap_or_default(),
                e["stack"].as_str().unwrap_or_default(),
                outcome,
                r["message"].as_str().unwrap_or_default()
            );
            println!(
                "  stack digest {}  hash {}",
                e["digest"].as_str().unwrap_or_default(),
                e["hash"].as_str().unwrap_or_default()
            );
            let pinned: Option<ingot_deploy::pin::PinnedStack> =
                e["body"].as_str().and_then(|b| serde_json::from_str(b).ok());
            let live = outcome == ledger::SUCCEEDED && e["kind"] != ledger::RM;
            for (svc, s) in pinned.iter().filter(|_| live).flat_map(|p| &p.services) {
                for p in &s.ports {
                    println!(
                        "  {}_{svc}: http://{}:{}/  ({} replicas of {})",
                        e["stack"].as_str().unwrap_or_default(),
                        p.host_ip,
                        p.published,
                        s.replicas,
                        s.digest
                    );
                }
            }
        }
        Format::Table => {}
    }
    if outcome != ledger::SUCCEEDED {
        eprintln!("ingot: {}: {}", outcome, r["message"].as_str().unwrap_or_default());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the daemon's JSON answer `v` as JSON, or as a table of `header`
/// with one row per array element.
pub(super) fn json_or_table(
    cli: &Cli,
    v: &Value,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> Result<ExitCode> {
    match cli.format {
        Format::Json => output::json(v)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = v.as_array().into_iter().flatten().map(row).collect();
            output::table(header, &rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

pub(super) fn short(v: &Value) -> String {
    v.as_str().unwrap_or_default().chars().take(19).collect()
}

pub fn services(root: &Path, cli: &Cli) -> Result<ExitCode> {
    let v = call(root, "GET", "/v1/services", None)?;
    json_or_table(cli, &v, &["NAME", "REPLICAS", "IMAGE", "DIGEST", "PORTS"], |s| {
        let ports: Vec<&str> = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        vec![
            text(&s["name"]),
            format!("{}/{}", s["healthy"], s["replicas"]),
            text(&s["image"]),
            short(&s["digest"]),
            ports.join(","),
        ]
    })
}

pub fn service_ps(root: &Path, cli: &Cli, service: &str) -> Result<ExitCode> {
    let v = call(root, "GET", &format!("/v1/services/{service}/ps"), None)?;
    json_or_table(cli, &v, &["NAME", "SLOT", "STATE", "HEALTH", "IMAGE", "ADDRESS"], |r| {
        vec![
            text(&r["name"]),
            r["slot"].to_string(),
            text(&r["state"]),
            text(&r["health"]),
            short(&r["image"]),
            text(&r["address"]),
        ]
    })
}

pub fn scale(root: &Path, cli: &Cli, spec: &str) -> Result<ExitCode> {
    let Some((service, n)) = spec.split_once('=') else {
        bail!("invalid scale {spec:?}: expected SERVICE=REPLICAS");
    };
    let n: u32 = n.parse().with_context(|| format!("invalid replica count {n:?}"))?;
    let body = json!({"replicas": n});
    change(
        root,
        cli,
        "POST",
        &format!("/v1/services/{service}/scale"),
        Some(&body),
        false,
    )
}

pub fn rollback(root: &Path, cli: &Cli, service: &str) -> Result<ExitCode> {
    change(
        root,
        cli,
        "POST",
        &format!("/v1/services/{service}/rollback"),
        None,
        false,
    )
}

/// Removes a stack; with `volumes`, once that succeeded, the volumes it
/// made (as `ingot volume rm` would: refused while a container uses one).
pub fn stack_rm(root: &Path, cli: &Cli, stack: &str, volumes: bool) -> Result<ExitCode> {
    let code = change(root, cli, "DELETE", &format!("/v1/stacks/{stack}"), None, false)?;
    if !volumes || code != ExitCode::SUCCESS {
        return Ok(code);
    }
    if std::env::var("INGOT_HOST").is_ok_and(|h| !h.is_empty()) {
        bail!("stack {stack} removed; its volumes are on the daemon's host: run `ingot volume rm` there");
    }
    let store = Store::open(root)?;
    for v in store
        .volumes()?
        .into_iter()
        .filter(|v| v.stack.as_deref() == Some(stack))
    {
        store.remove_volume(&v.name)?;
        if !cli.quiet && cli.format == Format::Table {
            eprintln!("ingot: removed volume {}", v.name);
        }
    }
    Ok(code)
}

pub fn ledger(root: &Path, cli: &Cli, command: Option<&LedgerCommand>) -> Result<ExitCode> {
    let store = Store::open(root)?;
    let rows = store.ledger_rows()?;
    match command {
        None => match cli.format {
            Format::Json => output::json(&rows)?,
            Format::Table => {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.seq.to_string(),
                            r.time.clone(),
                            r.actor.clone(),
                            r.kind.clone(),
                            r.stack.clone(),
                            r.outcome.clone(),
                            r.digest.chars().take(19).collect(),
                            r.hash.chars().take(12).collect(),
                            r.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "SEQ",
                        "TIME",
                        "ACTOR",
                        "KIND",
                        "STACK",
                        "OUTCOME",
                        "STACK DIGEST",
                        "HASH",
                        "REASON",
                    ],
                    &t,
                )?;
            }
        },
        Some(LedgerCommand::Wait { seq }) => {
            drop(store);
            let ep = endpoint(root)?;
            return wait(&ep, &rt()?, cli, *seq);
        }
        Some(LedgerCommand::Verify) => {
            ledger::verify(&rows)?;
            let state = ledger::state_digest(&ledger::desired(&rows)?);
            if cli.format == Format::Json {
                output::json(&json!({"entries": rows.len(), "state": state}))?;
            } else if !cli.quiet {
                println!("Ledger intact: {} entries; desired state {state}", rows.len());
            }
        }
        Some(LedgerCommand::Replay { to_root }) => {
            let mut other = Store::open(to_root)?;
            let n = ledger::replay(&store, &mut other)?;
            let a = ledger::state_digest(&ledger::desired(&rows)?);
            let b = ledger::state_digest(&ledger::desired(&other.ledger_rows()?)?);
            if a != b {
                bail!("replayed state {b} differs from this root's {a}");
            }
            if cli.format == Format::Json {
                output::json(&json!({"appended": n, "state": a}))?;
            } else if !cli.quiet {
                println!(
                    "Replayed {n} entries into {}; desired state {a} in both",
                    to_root.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn drift(root: &Path, cli: &Cli) -> Result<ExitCode> {
    let store = Store::open(root)?;
    ingot_runtime::reconcile(&store)?;
    let diffs = ingot_deploy::drift::drift(&store)?;
    print_drift(cli, &diffs, "running replicas match the ledger")
}

/// Prints differences (`none`: what matches when there are none); exit 1
/// on any.
pub(super) fn print_drift(cli: &Cli, diffs: &[ingot_deploy::drift::Difference], none: &str) -> Result<ExitCode> {
    match cli.format {
        Format::Json => output::json(&diffs)?,
        Format::Table if diffs.is_empty() => {
            if !cli.quiet {
                println!("No drift: {none}");
            }
        }
        Format::Table => {
            let t: Vec<Vec<String>> = diffs
                .iter()
                .map(|d| vec![d.service.clone(), d.what.clone(), d.desired.clone(), d.actual.clone()])
                .collect();
            output::table(&["SERVICE", "WHAT", "DESIRED", "ACTUAL"], &t)?;
        }
    }
    Ok(if diffs.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `ingot dora`: the four delivery metrics over the ledger.
pub fn dora(store: &Store, cli: &Cli, stack: Option<&str>, since: &str, fix_window: &str) -> Result<ExitCode> {
    use ingot_deploy::dora;
    let since = dora::parse_since(since)?;
    let fix_ms =
        ingot_deploy::compose::duration(fix_window).map_err(|e| anyhow::anyhow!("--fix-window {fix_window:?}: {e}"))?;
    let window = dora::Window {
        now: time::OffsetDateTime::now_utc(),
        since,
        stack: stack.map(String::from),
        fix_window: time::Duration::milliseconds(i64::try_from(fix_ms).unwrap_or(i64::MAX)),
    };
    let rows = store.ledger_rows()?;
    let commit_time = |d: &ingot_oci::Digest| ingot_build::executor::commit_time(store, d);
    let r = dora::compute(&rows, &commit_time, &window)
        .map_err(|e| anyhow::anyhow!("{e}: the ledger does not verify, so nothing is measured from it"))?;
    if cli.format == Format::Json {
        output::json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    if cli.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let scope = stack.map_or("every stack".to_string(), |s| format!("stack {s}"));
    if r.deployments == 0 {
        println!(
            "Nothing to measure yet: no deployment of {scope} from {} to {}",
            r.from, r.to
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Delivery of {scope} from {} to {}: {} deployments",
        r.from, r.to, r.deployments
    );
    let row = |name: &str, m: &dora::Metric| {
        let entries: Vec<String> = m.entries.iter().map(|e| format!("#{e}")).collect();
        vec![
            name.to_string(),
            m.value.map_or("-".into(), |v| format!("{v:.2} {}", m.unit)),
            m.band.map_or("-".into(), |b| {
                serde_json::to_value(b)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            }),
            m.samples.to_string(),
            entries.join(" "),
        ]
    };
    output::table(
        &["METRIC", "VALUE", "BAND (DORA 2024)", "SAMPLES", "ENTRIES"],
        &[
            row("deployment frequency", &r.deployment_frequency),
            row("lead time for changes", &r.lead_time),
            row("change failure rate", &r.change_failure_rate),
            row("time to restore", &r.time_to_restore),
        ],
    )?;
    if r.images_without_commit_time > 0 {
        println!(
            "({} deployed images name no git commit time in their bill of materials: not in the lead time)",
            r.images_without_commit_time
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ingot events`: the daemon's events, as they happen.
pub fn events(root: &Path, cli: &Cli, since: Option<&str>, until: Option<&str>) -> Result<ExitCode> {
    use time::format_description::well_known::Rfc3339;
    let since = match since {
        None => None,
        Some(s) => Some(match time::OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => t.to_offset(time::UtcOffset::UTC).format(&Rfc3339)?,
            Err(_) => (time::OffsetDateTime::now_utc() - ingot_deploy::dora::parse_since(s)?).format(&Rfc3339)?,
        }),
    };
    let until = match until {
        Some(u) => Some(std::time::Duration::from_millis(
            ingot_deploy::compose::duration(u).map_err(|e| anyhow::anyhow!("--until {u:?}: {e}"))?,
        )),
        None => None,
    };
    let path = match &since {
        Some(t) => format!("/v1/events?since={t}"),
        None => "/v1/events".to_string(),
    };
    let ep = endpoint(root)?;
    let json = cli.format == Format::Json;
    let print = |line: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let written = if json {
            writeln!(out, "{line}")
        } else {
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            let what = match (text(&v["stack"]), text(&v["service"])) {
                (st, sv) if sv.is_empty() => st,
                (st, sv) => format!("{st}_{sv}"),
            };
            writeln!(
                out,
                "{} {} {} {} {} {}",
                text(&v["time"]),
                text(&v["type"]),
                text(&v["action"]),
                what,
                text(&v["subject"]),
                text(&v["detail"])
            )
        };
        // A closed stdout (`| head`) ends the following.
        written.and_then(|_| out.flush()).is_ok()
    };
    let rt = rt()?;
    rt.block_on(async {
        let follow = client::follow(&ep, &path, print);
        match until {
            Some(d) => match tokio::time::timeout(d, follow).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            },
            None => tokio::select! {
                r = follow => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            },
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
