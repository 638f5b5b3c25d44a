//! The `ingot` command: parses arguments, calls the libraries, prints.

mod cli;
mod commands;
mod output;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use cli::Cli;

fn main() -> ExitCode {
    let mut cli = parse();
    init_logging(cli.verbose);
    if let Err(e) = cli::check_format(&mut cli) {
        eprintln!("ingot: error: {e}");
        return ExitCode::from(2);
    }
    match commands::run(cli) {
        Ok(code) => code,
        // A reader that went away (`ingot ps | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: the error and its causes, outermost first.
            let msg = e.chain().map(ToString::to_string).collect::<Vec<_>>();
            let mut line = String::new();
            for m in msg {
                if !line.contains(&m) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&m);
                }
            }
            eprintln!("ingot: error: {line}");
            // A broken policy file is a usage error (2), distinct from a refusal (1).
            let usage = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(ingot_trust::TrustError::Policy(_))));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// [`Cli::parse`], without dropping the parser: building and freeing the
/// whole command tree is a tenth of a millisecond of every `ingot run`.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m));
    match parsed {
        Ok(cli) => {
            std::mem::forget(command);
            cli
        }
        Err(e) => e.format(&mut command).exit(),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// The store root when neither --root nor INGOT_ROOT is given.
pub fn default_root() -> PathBuf {
    // The owner of /proc/self is our effective uid.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/ingot");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("ingot");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/ingot")
}
