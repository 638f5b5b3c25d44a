//! What to run: the container spec, made once from the image config and the
//! user's options, stored as JSON with the container record.

use std::path::PathBuf;

use ingot_oci::config::ImageConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, RuntimeError};
pub use crate::net::{NetworkMode, PortMap};

/// PATH when the image sets none, as Docker's.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which runtime starts the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// ingot's own (namespaces, overlay, cgroups, seccomp in-process).
    #[default]
    Ingot,
    /// runc, through a generated OCI bundle.
    Runc,
}

impl std::str::FromStr for Runtime {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ingot" => Ok(Runtime::Ingot),
            "runc" => Ok(Runtime::Runc),
            _ => Err(RuntimeError::invalid("runtime", s, "expected ingot or runc")),
        }
    }
}

/// A host directory or file bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// A named volume seen empty for the first time gets the image's
    /// content at `target` (owners and modes kept), as Docker does.
    #[serde(default)]
    pub copy_up: bool,
}

/// A file ingot puts in the container: content named by `digest` on a
/// tmpfs of the container's own, read-only at `target`, owned by
/// `uid`:`gid` with `mode`. The spec names the digest only; the monitor
/// reads the content just before starting the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    pub source: FileSource,
    pub digest: ingot_oci::Digest,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Where a [`FileMount`]'s content is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSource {
    /// The store's secret values (`Store::secret`).
    Secret,
    /// A deployed config, `<root>/configs/<hex>` (re-hashed when read).
    Config,
    /// Handed to [`crate::monitor::run_with`] by the process that runs
    /// the container in the foreground (a build's secrets: kept in no
    /// store); `digest` then only names it.
    Given,
}

impl std::str::FromStr for Bind {
    type Err = RuntimeError;

    /// `HOSTPATH:CONTAINERPATH[:ro|rw]`
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [src, dst] => (*src, *dst, "rw"),
            [src, dst, mode] => (*src, *dst, *mode),
            _ => return Err(RuntimeError::invalid("volume", s, "expected HOSTPATH:PATH[:ro]")),
        };
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            _ => return Err(RuntimeError::invalid("volume", s, "mode must be ro or rw")),
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(RuntimeError::invalid(
                "volume",
                s,
                "both paths must be absolute (named volumes are not supported yet)",
            ));
        }
        let source =
            std::fs::canonicalize(source).map_err(|e| RuntimeError::invalid("volume", s, format!("host path: {e}")))?;
        Ok(Bind {
            source,
            target: clean_target(target, "volume")?,
            read_only,
            copy_up: false,
        })
    }
}

/// Normalises an absolute in-container path, refusing `..`.
pub fn clean_target(p: &str, what: &'static str) -> Result<String> {
    if !p.starts_with('/') {
        return Err(RuntimeError::invalid(what, p, "must be an absolute path"));
    }
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(RuntimeError::invalid(what, p, "must not contain '..'")),
            c => out.push(c),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// The fully resolved description of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// argv: entrypoint followed by command.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]` as names or ids; empty means root.
    pub user: String,
    pub hostname: String,
    pub network: NetworkMode,
    /// The bridge networks joined (network mode bridge); none in a record
    /// written before networks existed: the default bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::net::Network>,
    /// Published ports (bridge network only).
    pub ports: Vec<PortMap>,
    pub read_only: bool,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileMount>,
    /// Name servers for /etc/resolv.conf (else the host's file).
    #[serde(default)]
    pub dns: Vec<String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub stop_signal: String,
    pub auto_remove: bool,
    /// Removed at exit and attached (a foreground `run --rm`): with a
    /// read-only root, nothing of it outlives the container, not even logs
    /// (its output goes to the caller), so its directory may go on the
    /// host's tmpfs (`container_dir`). Decided at creation; not stored.
    #[serde(skip)]
    pub transient: bool,
    pub runtime: Runtime,
    /// A build step (RUN): no tmpfs on /tmp and /run and no /etc binds, so
    /// everything it writes lands in its upper directory, the new layer.
    #[serde(default)]
    pub build_step: bool,
    /// diff IDs (hex) of the image's layers, bottom first.
    pub layers: Vec<String>,
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub name: Option<String>,
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<String>,
    pub command: Vec<String>,
    pub network: NetworkMode,
    /// The bridge networks to join, first the primary (its address is the
    /// one published ports and /etc/hosts use); none: ingot's default bridge.
    pub networks: Vec<crate::net::Network>,
    /// `-p [IP:]HOST:CTR` as given.
    pub publish: Vec<String>,
    pub memory: Option<String>,
    pub cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub volumes: Vec<String>,
    pub tmpfs: Vec<String>,
    pub files: Vec<FileMount>,
    /// Binds ready made (a deployer's volumes and bind mounts), after `volumes`.
    pub mounts: Vec<Bind>,
    /// Name servers (addresses) for the container's /etc/resolv.conf.
    pub dns: Vec<std::net::IpAddr>,
    pub read_write: bool,
    pub hostname: Option<String>,
    pub auto_remove: bool,
    pub detach: bool,
    pub runtime: Runtime,
}

/// Checks files: absolute targets without '..', at most 0777, no two at
/// one target.
fn files(files: &[FileMount]) -> Result<Vec<FileMount>> {
    let mut out: Vec<FileMount> = Vec::new();
    for f in files {
        let target = clean_target(&f.target, "file target")?;
        if target == "/" {
            return Err(RuntimeError::invalid("file target", &f.target, "a file path, not /"));
        }
        if f.mode > 0o777 {
            return Err(RuntimeError::invalid(
                "file mode",
                &format!("{:o}", f.mode),
                "at most 0777",
            ));
        }
        if out.iter().any(|o| o.target == target) {
            return Err(RuntimeError::invalid("file target", &target, "two files at one path"));
        }
        out.push(FileMount { target, ..f.clone() });
    }
    Ok(out)
}

impl ContainerSpec {
    /// The bridge networks the container joins, first the primary (a record
    /// from before networks existed: the default bridge).
    pub fn bridges(&self) -> Vec<crate::net::Network> {
        match (self.network, self.networks.is_empty()) {
            (NetworkMode::Bridge, true) => vec![crate::net::Network::default_bridge()],
            (NetworkMode::Bridge, false) => self.networks.clone(),
            _ => Vec::new(),
        }
    }

    /// Combines the image's config with the user's options, as `docker run`.
    pub fn new(config: &ImageConfig, opts: &RunOptions, id: &str) -> Result<ContainerSpec> {
        let c = config.config.clone().unwrap_or(Value::Null);
        let strings = |key: &str| -> Vec<String> {
            c.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let string = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default().to_string();

        let (entrypoint, cmd) = match &opts.entrypoint {
            Some(e) if e.is_empty() => (Vec::new(), opts.command.clone()),
            Some(e) => (vec![e.clone()], opts.command.clone()),
            None => (
                strings("Entrypoint"),
                if opts.command.is_empty() {
                    strings("Cmd")
                } else {
                    opts.command.clone()
                },
            ),
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() {
            return Err(RuntimeError::invalid(
                "command",
                "",
                "no command specified and the image has no CMD or ENTRYPOINT",
            ));
        }

        let mut env = strings("Env");
        let mut set = |kv: String| {
            let key = kv.split('=').next().unwrap_or_default().to_string();
            env.retain(|e| e.split('=').next() != Some(key.as_str()));
            env.push(kv);
        };
        for file in &opts.env_files {
            let text = std::fs::read_to_string(file).map_err(RuntimeError::io(file))?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                set(env_entry(line)?);
            }
        }
        for e in &opts.env {
            set(env_entry(e)?);
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let hostname = opts.hostname.clone().unwrap_or_else(|| id[..12].to_string());
        if hostname.is_empty()
            || hostname.len() > 64
            || !hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(RuntimeError::invalid(
                "hostname",
                &hostname,
                "expected at most 64 letters, digits, '-' or '.'",
            ));
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={hostname}"));
        }

        let cwd = match opts.workdir.as_deref().filter(|w| !w.is_empty()) {
            Some(w) => clean_target(w, "workdir")?,
            None => {
                let w = string("WorkingDir");
                if w.is_empty() {
                    "/".to_string()
                } else {
                    clean_target(&w, "workdir")?
                }
            }
        };
        let mut binds = Vec::new();
        for v in &opts.volumes {
            binds.push(v.parse::<Bind>()?);
        }
        for m in &opts.mounts {
            if !m.source.is_absolute() {
                return Err(RuntimeError::invalid(
                    "mount",
                    &m.source.display().to_string(),
                    "the host path must be absolute",
                ));
            }
            binds.push(Bind {
                target: clean_target(&m.target, "mount")?,
                ..m.clone()
            });
        }
        let mut tmpfs = Vec::new();
        for t in &opts.tmpfs {
            tmpfs.push(clean_target(t.split(':').next().unwrap_or_default(), "tmpfs")?);
        }
        let ports = opts
            .publish
            .iter()
            .map(|p| p.parse::<PortMap>())
            .collect::<Result<Vec<_>>>()?;
        if !ports.is_empty() && opts.network != NetworkMode::Bridge {
            return Err(RuntimeError::invalid(
                "port mapping",
                &opts.publish[0],
                "publishing ports needs --network bridge",
            ));
        }
        let stop_signal = match string("StopSignal") {
            s if s.is_empty() => "SIGTERM".to_string(),
            s => s,
        };
        parse_signal(&stop_signal)?;
        if let Some(p) = opts.pids_limit {
            if p == 0 || p < -1 {
                return Err(RuntimeError::invalid(
                    "pids-limit",
                    &p.to_string(),
                    "expected a positive number or -1 (unlimited)",
                ));
            }
        }
        Ok(ContainerSpec {
            args,
            env,
            cwd,
            user: opts.user.clone().unwrap_or_else(|| string("User")),
            hostname,
            network: opts.network,
            networks: match opts.network {
                NetworkMode::Bridge if opts.networks.is_empty() => vec![crate::net::Network::default_bridge()],
                NetworkMode::Bridge => {
                    for n in &opts.networks {
                        n.validate()?;
                    }
                    opts.networks.clone()
                }
                _ if !opts.networks.is_empty() => {
                    return Err(RuntimeError::invalid(
                        "network",
                        &opts.networks[0].bridge,
                        "networks are joined in network mode bridge only",
                    ))
                }
                _ => Vec::new(),
            },
            ports,
            read_only: !opts.read_write,
            binds,
            tmpfs,
            files: files(&opts.files)?,
            dns: opts.dns.iter().map(ToString::to_string).collect(),
            memory: opts.memory.as_deref().map(parse_memory).transpose()?,
            cpus: opts.cpus.as_deref().map(parse_cpus).transpose()?,
            pids_limit: opts.pids_limit.filter(|p| *p > 0),
            stop_signal,
            auto_remove: opts.auto_remove,
            transient: opts.auto_remove && !opts.detach,
            runtime: opts.runtime,
            build_step: false,
            layers: config.rootfs.diff_ids.iter().map(|d| d.hex().to_string()).collect(),
        })
    }
}

/// `KEY=VALUE`, or `KEY` to take the value from ingot's own environment.
fn env_entry(e: &str) -> Result<String> {
    let key = e.split('=').next().unwrap_or_default();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(RuntimeError::invalid("environment variable", e, "expected KEY=VALUE"));
    }
    if e.contains('=') {
        return Ok(e.to_string());
    }
    Ok(format!("{key}={}", std::env::var(key).unwrap_or_default()))
}

/// `256m`, `1g`, `512k`, `1048576` (bytes); at least 6 MiB as docker.
pub fn parse_memory(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| RuntimeError::invalid("memory", s, "expected a number with an optional unit b, k, m, g"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(RuntimeError::invalid("memory", s, "must be positive"));
    }
    let bytes = (n * mult as f64) as u64;
    if bytes < 6 << 20 {
        return Err(RuntimeError::invalid("memory", s, "minimum memory limit is 6m"));
    }
    Ok(bytes)
}

/// `0.5`, `2`: a number of CPUs, above zero and at most the host's count.
pub fn parse_cpus(s: &str) -> Result<f64> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| RuntimeError::invalid("cpus", s, "expected a decimal number such as 0.5"))?;
    let max = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    if !n.is_finite() || n <= 0.0 || n > max {
        return Err(RuntimeError::invalid(
            "cpus",
            s,
            format!("must be above 0 and at most {max}"),
        ));
    }
    Ok(n)
}

/// `SIGTERM`, `TERM`, `15`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| RuntimeError::invalid("signal", s, "unknown signal number"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| RuntimeError::invalid("signal", s, "unknown signal name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ImageConfig {
        ImageConfig::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn memory_and_cpus() {
        assert_eq!(parse_memory("256m").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        for bad in ["", "abc", "-1m", "1k", "12x", "nan"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        for bad in ["0", "-1", "x", "1000"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entrypoint_cmd_env_and_workdir_follow_docker() {
        let c = config(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["A=1","PATH=/bin"],"WorkingDir":"/srv","User":"nobody"}}"#,
        );
        let id = "0123456789abcdef0123456789abcdef";
        let s = ContainerSpec::new(&c, &RunOptions::default(), id).unwrap();
        assert_eq!(s.args, ["/bin/app", "--serve"]);
        assert_eq!(
            (s.cwd.as_str(), s.user.as_str(), s.hostname.as_str()),
            ("/srv", "nobody", "0123456789ab")
        );
        assert!(s.read_only);
        let opts = RunOptions {
            command: vec!["--once".into()],
            env: vec!["A=2".into()],
            workdir: Some("/tmp/../x".into()),
            ..Default::default()
        };
        assert!(
            ContainerSpec::new(&c, &opts, id).is_err(),
            "workdir with .. must be refused"
        );
        let opts = RunOptions {
            command: vec!["--once".into()],
            env: vec!["A=2".into()],
            ..Default::default()
        };
        let s = ContainerSpec::new(&c, &opts, id).unwrap();
        assert_eq!(s.args, ["/bin/app", "--once"]);
        assert!(s.env.contains(&"A=2".to_string()) && !s.env.contains(&"A=1".to_string()));
        let opts = RunOptions {
            entrypoint: Some("/bin/sh".into()),
            ..Default::default()
        };
        assert_eq!(ContainerSpec::new(&c, &opts, id).unwrap().args, ["/bin/sh"]);
        let empty = config(r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
        assert!(ContainerSpec::new(&empty, &RunOptions::default(), id).is_err());
    }

    #[test]
    fn binds_and_signals() {
        assert!("/tmp:/data:ro".parse::<Bind>().unwrap().read_only);
        assert!("relative:/data".parse::<Bind>().is_err());
        assert!("/tmp:/data/../etc".parse::<Bind>().is_err());
        assert!("/tmp:/data:rx".parse::<Bind>().is_err());
        assert_eq!(parse_signal("TERM").unwrap(), nix::sys::signal::Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), nix::sys::signal::Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
