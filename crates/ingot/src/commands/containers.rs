//! Container commands: run, ps, logs, stop, kill, rm, and the monitor.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use ingot_runtime::monitor::{self, Output};
use ingot_runtime::{RunOptions, RuntimeError};
use ingot_store::{ContainerRecord, ContainerState, Store};
use serde_json::json;

use crate::cli::{Cli, Format, RunArgs};
use crate::output;

/// `ingot run`. Errors exit 125 (126/127 when the command cannot run), as docker.
pub fn run(root: &Path, args: &RunArgs) -> Result<ExitCode> {
    match run_inner(root, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            let code = e.downcast_ref::<RuntimeError>().map_or(125, RuntimeError::exit_code);
            let msg = e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ");
            eprintln!("ingot: error: {msg}");
            Ok(ExitCode::from(code))
        }
    }
}

fn options(args: &RunArgs) -> Result<RunOptions> {
    Ok(RunOptions {
        publish: args.publish.clone(),
        runtime: args.runtime.parse()?,
        name: args.name.clone(),
        env: args.env.clone(),
        env_files: args.env_file.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        entrypoint: args.entrypoint.clone(),
        command: args.command.clone(),
        network: args.network.parse()?,
        networks: Vec::new(),
        memory: args.memory.clone(),
        cpus: args.cpus.clone(),
        pids_limit: args.pids_limit,
        volumes: args.volume.clone(),
        tmpfs: args.tmpfs.clone(),
        files: Vec::new(),
        mounts: Vec::new(),
        dns: Vec::new(),
        read_write: args.read_write,
        hostname: args.hostname.clone(),
        auto_remove: args.rm,
        detach: args.detach,
    })
}

fn run_inner(root: &Path, args: &RunArgs) -> Result<ExitCode> {
    let opts = options(args)?;
    let store = Store::open(root)?;
    let rec = ingot_runtime::create(&store, &args.image, &opts, std::process::id())?;
    if !args.detach {
        let exit = monitor::run(&store, &rec.id, Output::Inherit, &mut |_| {})?;
        return Ok(ExitCode::from(exit.code.clamp(0, 255) as u8));
    }
    // Detached: a monitor process of its own starts the container and
    // reports one line: "started PID" or "error CODE MESSAGE".
    // The monitor runs this same (protected) binary.
    let exe = std::path::Path::new("/proc/self/exe");
    let mut child = monitor::detached_command(exe, root, &rec.id)
        .spawn()
        .context("cannot start the container monitor")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    match monitor::parse_report(&line, &rec.name) {
        Ok(pid) => {
            tracing::info!(pid, "container started");
            println!("{}", rec.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = child.wait();
            eprintln!("ingot: error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// The hidden `__monitor` command behind `run -d`.
pub fn monitor(store: &Store, id: &str) -> Result<ExitCode> {
    let reported = std::cell::Cell::new(false);
    let report = |r: Result<i32, &RuntimeError>| {
        let line = match r {
            Ok(pid) => format!("started {pid}\n"),
            Err(e) => format!("error {} {}\n", e.exit_code(), e.to_string().replace('\n', " ")),
        };
        let mut out = io::stdout();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        // Close our end so `run -d` sees EOF and returns.
        // SAFETY: replacing fd 1 with /dev/null.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            libc::dup2(null, 1);
        }
        reported.set(true);
    };
    let result = monitor::run(store, id, Output::Files, &mut |r| report(r));
    if let Err(e) = &result {
        if !reported.get() {
            report(Err(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(rec: &ContainerRecord) -> String {
    match rec.state {
        ContainerState::Running => format!("Up since {}", rec.started_at.as_deref().unwrap_or("?")),
        ContainerState::Created => "Created".into(),
        ContainerState::Exited if rec.oom_killed => format!("Exited ({}) OOMKilled", rec.exit_code.unwrap_or(-1)),
        ContainerState::Exited => format!("Exited ({})", rec.exit_code.unwrap_or(-1)),
        ContainerState::Dead => "Dead (monitor died)".into(),
    }
}

pub fn ps(store: &Store, cli: &Cli, all: bool) -> Result<ExitCode> {
    ingot_runtime::reconcile(store)?;
    let list: Vec<ContainerRecord> = store
        .containers()?
        .into_iter()
        .filter(|c| all || c.state == ContainerState::Running)
        .collect();
    if cli.quiet {
        for c in &list {
            println!("{}", &c.id[..12]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match cli.format {
        Format::Json => {
            let rows: Vec<_> = list
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id, "name": c.name, "image": c.image_ref, "image_digest": c.image,
                        "command": command_of(c), "state": c.state, "status": status(c),
                        "exit_code": c.exit_code, "oom_killed": c.oom_killed, "pid": c.pid, "address": c.primary_address(), "addresses": c.addresses(),
                        "created": c.created_at, "started": c.started_at, "finished": c.finished_at,
                    })
                })
                .collect();
            output::json(&rows)?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.id[..12].to_string(),
                        c.image_ref.clone(),
                        command_of(c),
                        c.created_at.clone(),
                        status(c),
                        c.name.clone(),
                    ]
                })
                .collect();
            output::table(
                &["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"],
                &rows,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn command_of(c: &ContainerRecord) -> String {
    serde_json::from_str::<ingot_runtime::ContainerSpec>(&c.spec)
        .map(|s| s.args.join(" "))
        .unwrap_or_default()
}

pub fn logs(store: &Store, key: &str, follow: bool) -> Result<ExitCode> {
    let rec = store.container(key)?;
    let (out_path, err_path) = ingot_runtime::log_paths(store, &rec);
    let open = |p: &Path| File::open(p).ok();
    let (mut out, mut err) = (open(&out_path), open(&err_path));
    let mut pos = (0u64, 0u64);
    let mut buf = Vec::new();
    let mut copy = |f: &mut Option<File>, pos: &mut u64, to: &mut dyn Write| -> io::Result<()> {
        if let Some(f) = f {
            f.seek(SeekFrom::Start(*pos))?;
            buf.clear();
            f.read_to_end(&mut buf)?;
            *pos += buf.len() as u64;
            to.write_all(&buf)?;
            to.flush()?;
        }
        Ok(())
    };
    loop {
        let running = follow && ingot_runtime::is_running(store, &rec.id).unwrap_or(false);
        if out.is_none() {
            out = open(&out_path);
        }
        if err.is_none() {
            err = open(&err_path);
        }
        copy(&mut out, &mut pos.0, &mut io::stdout())?;
        copy(&mut err, &mut pos.1, &mut io::stderr())?;
        if !running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn each(cli: &Cli, keys: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<ExitCode> {
    let mut failed = false;
    for key in keys {
        match f(key) {
            Ok(()) if !cli.quiet => println!("{key}"),
            Ok(()) => {}
            Err(e) => {
                eprintln!("ingot: error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub fn stop(store: &Store, cli: &Cli, keys: &[String], secs: u64) -> Result<ExitCode> {
    each(cli, keys, |k| {
        Ok(ingot_runtime::stop(store, k, Duration::from_secs(secs)).map(drop)?)
    })
}

pub fn kill(store: &Store, cli: &Cli, keys: &[String], signal: &str) -> Result<ExitCode> {
    let sig = ingot_runtime::spec::parse_signal(signal)?;
    each(cli, keys, |k| Ok(ingot_runtime::kill(store, k, sig).map(drop)?))
}

pub fn rm(store: &Store, cli: &Cli, keys: &[String], force: bool) -> Result<ExitCode> {
    each(cli, keys, |k| Ok(ingot_runtime::remove(store, k, force).map(drop)?))
}

pub fn inspect_value(store: &Store, rec: &ContainerRecord) -> Result<serde_json::Value> {
    ingot_runtime::reconcile(store)?;
    let rec = store.container(&rec.id)?;
    let spec: serde_json::Value = serde_json::from_str(&rec.spec)?;
    Ok(json!({
        "container": true,
        "id": rec.id, "name": rec.name, "image": rec.image_ref, "image_digest": rec.image,
        "state": rec.state, "status": status(&rec), "pid": rec.pid, "monitor_pid": rec.monitor_pid,
        "exit_code": rec.exit_code, "oom_killed": rec.oom_killed, "error": rec.error, "address": rec.primary_address(), "addresses": rec.addresses(),
        "created": rec.created_at, "started": rec.started_at, "finished": rec.finished_at,
        "spec": spec,
    }))
}

pub fn print_inspect_table(v: &serde_json::Value) {
    for key in [
        "id",
        "name",
        "image",
        "image_digest",
        "state",
        "status",
        "pid",
        "address",
        "exit_code",
        "oom_killed",
        "error",
        "created",
        "started",
        "finished",
    ] {
        let val = match &v[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!("{:<14}{val}", format!("{key}:"));
    }
    println!("{:<14}{}", "command:", v["spec"]["args"]);
}
