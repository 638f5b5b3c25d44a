//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "ingot", version, about = "Immutable service delivery: build, sign, scan, ship and run images", long_about = None)]
pub struct Cli {
    /// Store root directory [default: /var/lib/ingot as root, else $XDG_DATA_HOME/ingot]
    #[arg(long, global = true, env = "INGOT_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Output format: table or json for listing and inspect commands; also
    /// sarif for scan, spdx-json or cyclonedx-json for sbom
    #[arg(long = "format", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output_format: OutputFormat,

    /// The table/json view of `output_format`, for commands that have only those.
    #[arg(skip)]
    pub format: Format,

    /// Print only essential output (digests, IDs)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// More logging on stderr (-v info, -vv debug, -vvv trace; before the
    /// subcommand, since `run -v` is a volume); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Where stacks run: this host's daemon, or the Docker Swarm whose
    /// manager DOCKER_HOST names (deploy, services, service, rollback,
    /// stack, drift)
    #[arg(long, global = true, env = "INGOT_ENGINE", value_enum, default_value_t = EngineArg::Local)]
    pub engine: EngineArg,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Sarif,
    SpdxJson,
    CyclonedxJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    Local,
    Swarm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

/// Each subcommand's arguments are defined when it is the one given
/// (`defer`): building all of them took a third of a millisecond of every
/// command, `ingot run` included.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Import a root filesystem tarball (tar or tar.gz) as a one-layer image
    Import {
        /// Tarball path, or - for standard input
        file: PathBuf,
        /// NAME[:TAG] to give the image
        reference: String,
        /// Layer compression
        #[arg(long, value_enum, default_value_t = Compression::Gzip)]
        compression: Compression,
    },
    /// List images
    Images,
    /// Show an image's manifest, config and layers
    Inspect {
        /// Print the bill of materials an image built by ingot carries
        #[arg(long)]
        bom: bool,
        /// Print the SLSA provenance attached to an image built by ingot (JSON)
        #[arg(long, conflicts_with = "bom")]
        provenance: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Build an image from a Dockerfile, reproducibly, with its bill of materials
    Build(Box<BuildArgs>),
    /// Point a new NAME[:TAG] at an existing image
    Tag { source: String, target: String },
    /// Remove tags or images (blobs are freed by the GC pass that follows)
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove an image by digest even if several tags point at it
        #[arg(short, long)]
        force: bool,
        /// Do not collect unreferenced blobs afterwards
        #[arg(long)]
        no_prune: bool,
    },
    /// Write images to an archive that is both an OCI layout and a docker-save tar
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file (default: standard output)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Load images from an OCI layout or docker-save archive (tar or tar.gz)
    Load {
        /// Input file (default: standard input)
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Write an image's root filesystem (all layers applied) into a directory
    Unpack {
        image: String,
        /// Empty or missing target directory
        dir: PathBuf,
    },
    /// Remove blobs no image references, and stale temp files
    Gc {
        /// Report what would be removed without removing it
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-hash every blob and check every image's references
    Fsck,
    /// Run a command in a new container
    Run(Box<RunArgs>),
    /// List containers
    Ps {
        /// Show all containers (default: running only)
        #[arg(short, long)]
        all: bool,
    },
    /// Print a container's output
    Logs {
        /// Keep printing until the container stops
        #[arg(short, long)]
        follow: bool,
        container: String,
    },
    /// Stop containers: their stop signal, then SIGKILL after a grace period
    Stop {
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers
    Kill {
        /// Signal name or number
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Kill running containers first
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Push an image to a registry
    Push {
        /// A local image
        image: String,
        /// REGISTRY/REPOSITORY[:TAG] (default: the image's own name)
        destination: Option<String>,
        /// Plain HTTP (loopback registries always are)
        #[arg(long)]
        insecure: bool,
    },
    /// Pull an image from a registry
    Pull {
        /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
        source: String,
        /// Plain HTTP (loopback registries always are)
        #[arg(long)]
        insecure: bool,
    },
    /// Serve the store as an OCI distribution-spec 1.1 registry
    Serve {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: std::net::SocketAddr,
        /// Refuse to move an existing tag to a different digest
        #[arg(long = "tag-immutability")]
        tag_immutability: bool,
        /// Seconds before idle uploads and unreferenced blobs are collected
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Authentication: none, or tokens (bearer tokens from `ingot token create`)
        #[arg(long, default_value = "none")]
        auth: String,
        /// With --auth tokens: allow pulling without a token
        #[arg(long = "anonymous-pull")]
        anonymous_pull: bool,
        /// TLS certificate chain (PEM)
        #[arg(long = "tls-cert", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM)
        #[arg(long = "tls-key", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// The vulnerability database
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Scan an image's packages against the vulnerability database (--format table|json|sarif)
    Scan {
        image: String,
        /// Exit 1 if any finding is at least this severe (critical, high, medium, low; unknown counts)
        #[arg(long = "fail-on")]
        fail_on: Option<String>,
    },
    /// Write an image's SBOM (--format spdx-json|cyclonedx-json; default spdx-json)
    Sbom {
        image: String,
        /// Also attach it to the image as an OCI referrer
        #[arg(long)]
        attach: bool,
    },
    /// List the packages installed in an image (the catalogers' view)
    Packages { image: String },
    /// Signing keys
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Sign an image (cosign format; stored as its referrer and under its sha256-<hex>.sig tag)
    Sign {
        image: String,
        /// Private key (PEM); encrypted keys take INGOT_KEY_PASSWORD
        #[arg(long)]
        key: PathBuf,
    },
    /// Verify an image's signatures against a public key, and/or evaluate a deploy policy
    Verify {
        image: String,
        /// Public key (PEM)
        #[arg(long, required_unless_present = "policy")]
        key: Option<PathBuf>,
        /// Policy file (TOML): trusted_keys, max_severity, allow, allowed_bases, require
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Registry access tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run a command in a running container: its namespaces, root, user, capabilities and seccomp filter
    Exec {
        /// Kill the command and everything it started when this expires (e.g. 1s, 500ms)
        #[arg(long)]
        timeout: Option<String>,
        container: String,
        /// The command and its arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run the deploy daemon: HTTP+JSON API on <root>/ingot.sock, the reconciler and the routing mesh
    Daemon {
        /// Unix socket path [default: <root>/ingot.sock]
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Deploy policy (TOML) every deployed image must pass
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Also listen on TCP (HOST:PORT) with mutual TLS; clients use INGOT_HOST=tcp://HOST:PORT
        #[arg(long)]
        tcp: Option<std::net::SocketAddr>,
        /// TLS directory (ca.pem, server.pem, server-key.pem, client.pem, client-key.pem); a
        /// development CA is made there if it has none [default: <root>/tls]
        #[arg(long = "tls-dir")]
        tls_dir: Option<PathBuf>,
        /// Take over from the daemon running on the socket without dropping a request: it stops
        /// changing anything, this one adopts the replicas and binds the published ports beside
        /// it, then it drains its connections and exits
        #[arg(long)]
        replace: bool,
        /// A host directory stacks may bind-mount from (repeatable; none by default: a bind
        /// mount gives a container the host's files)
        #[arg(long = "allow-bind", value_name = "DIR")]
        allow_bind: Vec<PathBuf>,
        /// Serve the web dashboard on HOST:PORT (on a loopback address anyone on this host may
        /// read it; elsewhere every request needs the token in <root>/web.token; changes always do)
        #[arg(long, value_name = "HOST:PORT")]
        web: Option<std::net::SocketAddr>,
    },
    /// Deploy a stack (a Compose file, or a bundle by digest, tag or name): follows the change until
    /// it converged or rolled back (exit 1); Ctrl-C stops following, not the change (`ingot ledger
    /// wait N` follows it again)
    Deploy {
        /// A stack bundle instead of a Compose file: REGISTRY/REPO:TAG or
        /// REGISTRY/REPO@sha256:... (pulled with its images), or one in the
        /// store (`ingot stack bundle -t NAME`)
        #[arg(value_name = "BUNDLE", conflicts_with = "file", required_unless_present = "file")]
        bundle: Option<String>,
        /// The Compose file
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Stack name (a bundle's is its own)
        #[arg(long, required_unless_present = "bundle")]
        name: Option<String>,
        /// A bundle's secret from this host: id=NAME,src=FILE or id=NAME,env=VARIABLE (one per
        /// secret the bundle names; a Compose file gives its own sources)
        #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
        secrets: Vec<String>,
        /// Why (recorded in the ledger)
        #[arg(long)]
        reason: Option<String>,
        /// Return at once instead of waiting for the rollout
        #[arg(long, short = 'd')]
        detach: bool,
        /// --engine swarm: the registry the nodes pull from (HOST:PORT);
        /// every image is pushed there and referenced by digest
        #[arg(long, value_name = "HOST:PORT")]
        registry: Option<String>,
        /// The bundle's registry and, with --engine swarm, the nodes' speak
        /// plain HTTP (or their HTTPS certificates are not verified)
        #[arg(long)]
        insecure: bool,
        /// --engine swarm: the image policy every image must pass (the
        /// local engine uses the daemon's --policy)
        #[arg(long, env = "INGOT_POLICY", value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// List deployed services
    Services,
    /// Service commands: ps, scale
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Roll a service back to its previous version
    Rollback { service: String },
    /// Stack commands: bundle, push, pull, rm
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
    /// The deploy ledger: list entries, verify the chain, replay into another root
    Ledger {
        #[command(subcommand)]
        command: Option<LedgerCommand>,
    },
    /// Compare running replicas with the ledger's desired state (exit 1 on any difference)
    Drift,
    /// Follow the daemon's events, as `docker events`: replicas started,
    /// healthy, unhealthy, died, stopped; pool joins and leaves; ledger
    /// entries appended and sealed; policy refusals (JSON lines with --format json)
    Events {
        /// Also the kept events since then: a duration back (10m, 2h) or an RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// Stop following after this long (30s, 5m); default: until Ctrl-C
        #[arg(long)]
        until: Option<String>,
    },
    /// Delivery measured from the ledger (DORA): deployment frequency, lead
    /// time for changes, change failure rate, time to restore, each with
    /// its 2024 cluster and the entries it comes from
    Dora {
        /// Only this stack
        #[arg(long)]
        stack: Option<String>,
        /// The window, back from now: 30d, 2w, 12h, 90m
        #[arg(long, default_value = "30d")]
        since: String,
        /// A deploy this soon after the stack's previous one succeeded
        /// marks that one as having needed a fix
        #[arg(long, default_value = "1h")]
        fix_window: String,
    },
    /// Named volumes: ls, create, inspect, rm, prune
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Stacks' networks on this host: ls, inspect
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// (internal) the per-container monitor process of `run -d`
    #[command(name = "__monitor", hide = true)]
    Monitor { id: String },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum ServiceCommand {
    /// The replicas of a service: state, image digest, health
    Ps { service: String },
    /// Set a service's replica count: SERVICE=N
    Scale { spec: String },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum StackCommand {
    /// Pin a stack into a bundle (one OCI artifact: the Compose file and the pinned stack, every
    /// image by digest), recorded in the store under TAG; optionally signed
    Bundle {
        /// The Compose file
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Stack name
        #[arg(long)]
        name: String,
        /// The bundle's name in the store (NAME[:TAG])
        #[arg(short = 't', long = "tag")]
        tag: String,
        /// Sign the bundle with this private key (PEM; encrypted keys take INGOT_KEY_PASSWORD)
        #[arg(long)]
        key: Option<PathBuf>,
        /// Also write it, every image and their referrers to this archive (OCI layout tar, as
        /// `ingot save`; `ingot load` it on another host, then `ingot deploy NAME[:TAG]`)
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Bundle a stack and push it, with every image it names (by digest, with their signatures
    /// and SBOMs), to REGISTRY/REPO:TAG
    Push {
        /// The Compose file
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Stack name
        #[arg(long)]
        name: String,
        /// Where: REGISTRY/REPO[:TAG]
        destination: String,
        /// Sign the bundle with this private key (PEM; encrypted keys take INGOT_KEY_PASSWORD)
        #[arg(long)]
        key: Option<PathBuf>,
        /// Plain HTTP (or do not verify the registry's certificate)
        #[arg(long)]
        insecure: bool,
    },
    /// Pull a stack bundle and every image it names
    Pull {
        /// REGISTRY/REPO[:TAG|@sha256:...]
        source: String,
        /// Plain HTTP (or do not verify the registry's certificate)
        #[arg(long)]
        insecure: bool,
    },
    /// Remove a stack: its services and replicas (its volumes stay, unless --volumes)
    Rm {
        stack: String,
        /// Also remove the volumes the stack made (not external ones)
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum VolumeCommand {
    /// List volumes
    Ls,
    /// Create a volume (stacks use it as `external: true`)
    Create { name: String },
    /// Show volumes: name, stack, mountpoint, the containers using them
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes and their data (refused while a container uses one)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses
    Prune,
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum NetworkCommand {
    /// List networks: name, stack, bridge, subnet, internal
    Ls,
    /// Show networks with the containers attached to each
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container is attached to: the bridge, its firewall rules, the record
    /// (`stack rm` removes a stack's networks itself)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum LedgerCommand {
    /// Follow ledger entry N until its change ends; exit 1 unless it succeeded
    Wait { seq: i64 },
    /// Recompute every hash; exit 1 naming the first bad entry
    Verify,
    /// Append this root's entries to another root's ledger (which must hold a prefix of them)
    Replay {
        #[arg(long = "to-root")]
        to_root: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum DbCommand {
    /// Import OSV advisories (JSON or YAML; a file, a directory tree or a zip archive), replacing same-id ones
    Import { path: PathBuf },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum KeyCommand {
    /// Write PATH.key (private, PKCS#8 PEM; encrypted with INGOT_KEY_PASSWORD when set) and PATH.pub
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Ed25519 instead of ECDSA P-256
        #[arg(long)]
        ed25519: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum TokenCommand {
    /// List tokens: ID (the start of the sha256 of the secret), repositories, rights, created
    List,
    /// Delete a token by ID; bearer tokens already issued for it expire within 5 minutes
    Revoke { id: String },
    /// Make a token; prints its secret once (give it to clients as INGOT_REGISTRY_TOKEN,
    /// or as the password of `skopeo --creds` / `docker login`)
    Create {
        /// Repositories it covers: a name, `team/*`, or `*`
        #[arg(long)]
        repo: String,
        /// May pull
        #[arg(long)]
        pull: bool,
        /// May push
        #[arg(long)]
        push: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name and tag the image (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Set a build-time variable
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Add a label (also recorded in the bill of materials)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Build up to this stage
    #[arg(long)]
    pub target: Option<String>,
    /// Why this image is built (recorded in the bill of materials)
    #[arg(long)]
    pub reason: Option<String>,
    /// Project name (default: the context directory's name)
    #[arg(long)]
    pub project: Option<String>,
    /// Do not use the build cache
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Progress output: plain or tty
    #[arg(long, default_value = "plain")]
    pub progress: String,
    /// Do not attach SPDX and CycloneDX SBOMs to the image
    #[arg(long = "no-sbom")]
    pub no_sbom: bool,
    /// Build twice (the second time without cache) and fail unless both give the same digest
    #[arg(long = "check-reproducible")]
    pub check_reproducible: bool,
    /// RUN's network where a step names none: default (ingot's bridge with NAT), none or host
    #[arg(long, default_value = "default", value_name = "MODE")]
    pub network: String,
    /// A secret for `RUN --mount=type=secret,id=NAME` (never in a layer, the cache or the BOM)
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VARIABLE")]
    pub secrets: Vec<String>,
    /// Push every tag to its registry after the build, with the image's referrers (SBOMs, provenance)
    #[arg(long)]
    pub push: bool,
    /// Also write the image out: type=oci,dest=FILE (an OCI layout tar, referrers included) or type=local,dest=DIR (its root filesystem); a bare PATH is type=local
    #[arg(short = 'o', long = "output", value_name = "type=oci|local,dest=PATH")]
    pub output: Option<String>,
    /// Pull every base image that names a registry again, even when the store has it
    #[arg(long)]
    pub pull: bool,
    /// Grant an entitlement: network.host lets `RUN --network=host` use the host's network
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// The build context directory
    pub context: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Container name
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy ingot's)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// USER[:GROUP] (names or ids) to run as
    #[arg(short, long)]
    pub user: Option<String>,
    /// Override the image's ENTRYPOINT
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Publish a port ([IP:]HOSTPORT:CONTAINERPORT)
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CTR")]
    pub publish: Vec<String>,
    /// Runtime: ingot (its own) or runc (through a generated OCI bundle)
    #[arg(long, default_value = "ingot")]
    pub runtime: String,
    /// Network: bridge (own namespace on ingot's bridge), none (loopback only) or host
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Memory limit (e.g. 256m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5)
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes (-1 for unlimited)
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Bind a host path (HOSTPATH:PATH[:ro])
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volume: Vec<String>,
    /// Mount a tmpfs at PATH
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Make the root filesystem writable (default: read-only)
    #[arg(long = "read-write")]
    pub read_write: bool,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Image to run
    pub image: String,
    /// Command and arguments (default: the image's ENTRYPOINT and CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Sets the table/json view and refuses a format the command does not have.
pub fn check_format(cli: &mut Cli) -> Result<(), String> {
    use OutputFormat as O;
    cli.format = if cli.output_format == O::Json {
        Format::Json
    } else {
        Format::Table
    };
    let ok = matches!(
        (&cli.command, cli.output_format),
        (_, O::Table | O::Json)
            | (Command::Scan { .. }, O::Sarif)
            | (Command::Sbom { .. }, O::SpdxJson | O::CyclonedxJson)
    );
    if ok {
        Ok(())
    } else {
        let name = format!("{:?}", cli.output_format).to_lowercase();
        Err(format!(
            "--format {name} does not apply here (sarif is for scan; spdx-json and cyclonedx-json for sbom)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the whole command tree (duplicate flags,
    /// conflicting names, bad defaults), deferred subcommands included:
    /// `ingot` builds only the subcommand it is given, so a broken one
    /// would otherwise show only when someone runs it.
    #[test]
    fn every_subcommand_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
