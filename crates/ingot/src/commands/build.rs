//! `ingot build` and `ingot inspect --bom`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ingot_build::bom::Bom;
use ingot_build::{BuildOptions, Progress};
use ingot_oci::Reference;
use ingot_store::Store;

use crate::cli::{BuildArgs, Cli, Format};
use crate::output;

/// Step lines on stderr: `[n/m] INSTRUCTION`, then `CACHED` or the time.
struct Lines {
    quiet: bool,
    /// A step line is printed without its end yet.
    open: bool,
}

impl Progress for Lines {
    fn step(&mut self, n: usize, total: usize, text: &str) {
        if !self.quiet {
            eprint!("[{n}/{total}] {text}");
            let _ = std::io::stderr().flush();
            self.open = true;
        }
    }

    fn done(&mut self, cached: bool, secs: f64) {
        self.open = false;
        if !self.quiet {
            if cached {
                eprintln!("  CACHED");
            } else {
                eprintln!("  {secs:.2}s");
            }
        }
    }

    fn output(&mut self, text: &str) {
        if !self.quiet && !text.is_empty() {
            eprintln!();
            for line in text.lines() {
                eprintln!("    | {line}");
            }
        }
    }
}

fn pairs(what: &str, list: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for kv in list {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                map.insert(k.to_string(), v.to_string());
            }
            // `--build-arg NAME` takes the value from ingot's environment.
            _ if what == "build-arg" && !kv.is_empty() => {
                map.insert(kv.clone(), std::env::var(kv).unwrap_or_default());
            }
            _ => bail!("invalid --{what} {kv:?}: expected KEY=VALUE"),
        }
    }
    Ok(map)
}

/// `--allow` entitlements: whether network.host is granted (the only one).
fn entitlements(allow: &[String]) -> Result<bool> {
    let mut host = false;
    for a in allow.iter().flat_map(|a| a.split(',')) {
        match a.trim() {
            "network.host" => host = true,
            other => bail!("invalid --allow {other:?}: the entitlement ingot knows is network.host"),
        }
    }
    Ok(host)
}

/// Where `--output` writes the built image.
enum Export {
    /// An OCI layout tar (also a docker-save archive), referrers included.
    Oci(PathBuf),
    /// The root filesystem, into a directory that is absent or empty.
    Local(PathBuf),
}

/// `--output type=oci,dest=FILE | type=local,dest=DIR | PATH`, checked
/// before anything is built.
fn export_flag(flag: &str) -> Result<Export> {
    let bad = || anyhow::anyhow!("invalid --output {flag:?}: expected type=oci,dest=FILE or type=local,dest=DIR");
    let (kind, dest) = if !flag.contains('=') {
        ("local", flag)
    } else {
        let (mut kind, mut dest) = (None, None);
        for part in flag.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v),
                Some(("dest", v)) if !v.is_empty() => dest = Some(v),
                _ => return Err(bad()),
            }
        }
        (kind.ok_or_else(bad)?, dest.ok_or_else(bad)?)
    };
    let dest = PathBuf::from(dest);
    match kind {
        "oci" | "docker" | "tar" => Ok(Export::Oci(dest)),
        "local" => {
            let empty = match std::fs::read_dir(&dest) {
                Ok(mut d) => d.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => bail!("--output dest {}: {e}", dest.display()),
            };
            if !empty {
                bail!("--output dest {} is not empty", dest.display());
            }
            Ok(Export::Local(dest))
        }
        other => bail!("invalid --output type {other:?}: expected oci or local"),
    }
}

/// Makes an exported root filesystem safe to leave on the host: no setuid
/// or setgid bit, and, run through sudo, owned by the user who ran it (as
/// BuildKit's local exporter writes files as its client). Links are never
/// followed.
fn defuse(root: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let owner = std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse::<u32>().ok())
        .zip(std::env::var("SUDO_GID").ok().and_then(|g| g.parse::<u32>().ok()));
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let md = std::fs::symlink_metadata(&p)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
            }
            if md.is_dir() {
                stack.push(p.clone());
            }
            if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() & 0o1777))?;
            }
        }
    }
    Ok(())
}

/// Unpacks `image` into `dest` through a sibling directory renamed into
/// place, so `dest` is whole or as it was.
fn export_local(store: &Store, image: &str, dest: &Path) -> Result<u64> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.ingot-tmp-{}",
        dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot write beside {}", dest.display()))?;
    let written = (|| -> Result<u64> {
        let img = store.resolve(image)?;
        let n = ingot_store::unpack_image(store, &img, &tmp)?;
        defuse(&tmp)?;
        if dest.exists() {
            std::fs::remove_dir(dest).with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        std::fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(n)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

pub fn build(store: &mut Store, cli: &Cli, args: &BuildArgs) -> Result<ExitCode> {
    if !matches!(args.progress.as_str(), "plain" | "tty" | "auto") {
        bail!("invalid --progress {:?}: expected plain or tty", args.progress);
    }
    let mut tags = Vec::new();
    for t in &args.tags {
        let r: Reference = t.parse()?;
        if r.digest().is_some() {
            bail!("build tag {t:?} must be NAME[:TAG], not a digest");
        }
        tags.push(r.with_tag(r.tag_or_default().unwrap_or("latest"))?);
    }
    let export = args.output.as_deref().map(export_flag).transpose()?;
    if args.push {
        if tags.is_empty() {
            bail!("--push needs a tag naming a registry (-t HOST[:PORT]/REPO:TAG)");
        }
        for t in &tags {
            if !ingot_registry::client::Remote::names_registry(&t.to_string()) {
                bail!("--push: tag {t} names no registry (-t HOST[:PORT]/REPO:TAG)");
            }
        }
    }
    let opts = BuildOptions {
        context: args.context.clone(),
        dockerfile: args.file.clone(),
        tags,
        build_args: pairs("build-arg", &args.build_args)?,
        labels: pairs("label", &args.labels)?,
        target: args.target.clone(),
        reason: args.reason.clone(),
        project: args.project.clone(),
        no_cache: args.no_cache,
        epoch: None,
        network: args.network.parse()?,
        allow_host_network: entitlements(&args.allow)?,
        pull: args.pull,
        secrets: super::bundle::secret_flags(&args.secrets)?
            .into_iter()
            .map(|(id, src)| {
                let v = ingot_deploy::pin::secret_value(&id, &src, std::path::Path::new("."))?;
                Ok((id, ingot_build::Secret(v.0)))
            })
            .collect::<Result<_>>()?,
    };
    let mut progress = Lines {
        quiet: cli.quiet,
        open: false,
    };
    let result = ingot_build::build(store, &opts, &mut progress);
    if progress.open {
        // End the failed step's line before the error.
        eprintln!();
    }
    let built = result?;
    if args.check_reproducible {
        if !cli.quiet {
            eprintln!("== second build without cache, to compare");
        }
        let again = ingot_build::build(
            store,
            &BuildOptions {
                no_cache: true,
                ..opts.clone()
            },
            &mut progress,
        );
        if progress.open {
            eprintln!();
        }
        let again = again?;
        if again.manifest.digest != built.manifest.digest {
            bail!(
                "not reproducible: the first build gave {}, the second {}",
                built.manifest.digest,
                again.manifest.digest
            );
        }
        if !cli.quiet {
            eprintln!("reproducible: both builds gave {}", built.manifest.digest);
        }
    }
    let statement = ingot_oci::config::canonical_json(&built.provenance)?;
    ingot_sbom::documents::attach_document(
        store,
        &built.manifest.digest,
        ingot_build::provenance::MEDIA_TYPE,
        &statement,
    )?;
    if !args.no_sbom {
        use ingot_sbom::documents::{attach, document, Format as SbomFormat};
        for format in [SbomFormat::Spdx, SbomFormat::CycloneDx] {
            let (doc, digest) = document(store, &built.manifest.digest.to_string(), format)?;
            attach(store, &digest, format, &doc)?;
        }
    }
    if cli.quiet {
        println!("{}", built.manifest.digest);
    } else {
        eprintln!(
            "built {} ({} steps, {} cached){}",
            built.manifest.digest,
            built.steps,
            built.cached,
            if opts.tags.is_empty() {
                String::new()
            } else {
                format!(", tagged {}", built.bom.tags.join(", "))
            }
        );
        println!("{}", built.manifest.digest);
    }
    let digest = built.manifest.digest.to_string();
    match &export {
        Some(Export::Oci(file)) => {
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            super::images::write_archive(store, std::slice::from_ref(&digest), true, Some(file))?;
            if !cli.quiet {
                eprintln!("wrote {digest} and its referrers to {}", file.display());
            }
        }
        Some(Export::Local(dir)) => {
            let n = export_local(store, &digest, dir)?;
            if !cli.quiet {
                eprintln!(
                    "wrote the root filesystem of {digest} ({n} entries) to {}",
                    dir.display()
                );
            }
        }
        None => {}
    }
    if args.push {
        for tag in &opts.tags {
            let name = tag.to_string();
            let remote = ingot_registry::client::Remote::parse(&name, false)?;
            let t = ingot_registry::client::push(store, &name, &remote, crate::progress::observer(cli.quiet))
                .with_context(|| format!("the image is built ({digest}) but pushing {name} failed"))?;
            if !cli.quiet {
                eprintln!(
                    "pushed {name} ({} blobs sent, {} already there, {} referrers)",
                    t.blobs_moved, t.blobs_skipped, t.referrers
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect_bom(store: &Store, cli: &Cli, images: &[String]) -> Result<ExitCode> {
    let mut all = Vec::new();
    for image in images {
        match ingot_build::read_bom(store, image)? {
            Some(b) => all.push((image.clone(), b)),
            None => bail!("{image} carries no ingot bill of materials (not built by ingot build)"),
        }
    }
    match cli.format {
        Format::Json => output::json(&all.iter().map(|(_, b)| b).collect::<Vec<_>>())?,
        Format::Table => {
            for (i, (image, b)) in all.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_bom(image, b);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_bom(image: &str, b: &Bom) {
    let none = || "-".to_string();
    println!("Bill of materials of {image}");
    println!("Why was it built?        {}", b.reason.clone().unwrap_or_else(none));
    println!(
        "Where was it built?      host {}, ingot {}",
        b.builder.host, b.builder.version
    );
    println!("When was it built?       {}", b.created);
    println!("What is it built from?");
    for a in &b.ancestors {
        println!(
            "  stage {:<10} {} {}",
            a.stage,
            a.name,
            a.digest.clone().unwrap_or_default()
        );
    }
    if b.network.is_empty() {
        println!("Did a step use the network? no");
    } else {
        println!("Did a step use the network? yes: reproducible only as far as its downloads are");
        for n in &b.network {
            println!("  stage {:<10} {} ({})", n.stage, n.step, n.network);
        }
    }
    println!("How to start it?");
    println!("  entrypoint {:?}  cmd {:?}", b.start.entrypoint, b.start.cmd);
    println!(
        "  user {:?}  workdir {:?}  env {}",
        b.start.user,
        b.start.workdir,
        b.start.env.join(" ")
    );
    println!("How to validate it?      {}", b.validate_text());
    println!(
        "How to monitor it?       ports {}  stop signal {}  hints {:?}",
        if b.monitor.exposed_ports.is_empty() {
            none()
        } else {
            b.monitor.exposed_ports.join(" ")
        },
        b.monitor.stop_signal.clone().unwrap_or_else(none),
        b.monitor.hints
    );
    println!("How to update it?        {}", b.update.clone().unwrap_or_else(none));
    match &b.git {
        Some(g) => println!(
            "Which source?            {} {}{}",
            g.remote.clone().unwrap_or_else(none),
            g.commit.clone().unwrap_or_else(none),
            if g.dirty { " (dirty)" } else { "" }
        ),
        None => println!("Which source?            - (not a git repository)"),
    }
    println!("Which tags?              {}", b.tags.join(" "));
    println!("Which project?           {}", b.project);
    if b.labels.is_empty() {
        println!("What else?                -");
    } else {
        println!("What else?");
        for (k, v) in &b.labels {
            println!("  {k} = {v}");
        }
    }
}

pub fn inspect_provenance(store: &Store, images: &[String]) -> Result<ExitCode> {
    let mut all = Vec::new();
    for image in images {
        let img = store.resolve(image)?;
        match ingot_sbom::documents::attached_document(store, &img.digest, ingot_build::provenance::MEDIA_TYPE)? {
            Some(doc) => all.push(serde_json::from_slice::<serde_json::Value>(&doc)?),
            None => bail!("{image} has no provenance attached (it was not built by ingot build)"),
        }
    }
    output::json(&all)?;
    Ok(ExitCode::SUCCESS)
}
