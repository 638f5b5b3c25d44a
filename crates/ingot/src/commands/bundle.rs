//! `ingot stack bundle|push|pull`, and the bundle side of `ingot deploy
//! BUNDLE` (ingot_deploy::bundle holds the logic).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ingot_deploy::bundle::{self, Bundle};
use ingot_deploy::pin::PinnedStack;
use ingot_oci::{Digest, Reference};
use ingot_registry::client::Remote;
use ingot_store::Store;
use serde_json::json;

use super::deploy::Secrets;
use crate::cli::{Cli, Format};
use crate::output;

/// Pins `file` as stack `name` into a bundle tagged `tag`, with the
/// stack's SBOM, signed with `key` if given.
fn make(store: &mut Store, file: &Path, name: &str, tag: &str, key: Option<&Path>) -> Result<Digest> {
    // The key first: a wrong password leaves no unsigned bundle tagged.
    let key = key.map(super::trust::signing_key).transpose()?;
    let (text, def) = super::deploy::parse_file(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let pinned = ingot_deploy::pin::pin_for_bundle(store, name, &def, dir)?;
    let tag: Reference = tag.parse().with_context(|| format!("bundle name {tag:?}"))?;
    let digest = bundle::make(store, &pinned, text.as_bytes(), Some(&tag))?;
    bundle::attach_sbom(store, &digest)?;
    if let Some(key) = key {
        ingot_trust::signature::sign(store, &tag.to_string(), &key)?;
    }
    Ok(digest)
}

pub fn bundle_cmd(
    store: &mut Store,
    cli: &Cli,
    file: &Path,
    name: &str,
    tag: &str,
    key: Option<&Path>,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let digest = make(store, file, name, tag, key)?;
    let b = bundle::read(store, &digest.to_string())?;
    let mut headline = format!("Bundled stack {name} as {tag}");
    if let Some(out) = output {
        // The bundle by its name, its images by digest, and what refers to each.
        let mut inputs = vec![tag.to_string()];
        inputs.extend(b.images()?.into_iter().map(|(_, _, d)| d.to_string()));
        super::images::write_archive(store, &inputs, true, Some(out))?;
        headline.push_str(&format!(" and wrote it with its images to {}", out.display()));
    }
    report(cli, &headline, &b, json!({}))
}

pub fn push_cmd(
    store: &mut Store,
    cli: &Cli,
    file: &Path,
    name: &str,
    destination: &str,
    key: Option<&Path>,
    insecure: bool,
) -> Result<ExitCode> {
    let remote = Remote::parse(destination, insecure)?;
    if remote.digest.is_some() {
        bail!("{destination}: push to a tag (a bundle's digest is known once it is made)");
    }
    // Named in the store as in the registry: its signature's identity is
    // the repository it is pushed to, as cosign signs.
    let tag = format!(
        "{}/{}:{}",
        remote.host,
        remote.repo,
        remote.tag.as_deref().unwrap_or("latest")
    );
    let digest = make(store, file, name, &tag, key)?;
    let pushed = bundle::push(store, &digest, &remote, crate::progress::observer(cli.quiet))?;
    let b = bundle::read(store, &digest.to_string())?;
    let at = format!("{}/{}@{}", remote.host, remote.repo, digest);
    report(
        cli,
        &format!(
            "Pushed stack {name} to {tag} ({} images, {} blobs sent, {} referrers); deploy it anywhere with `ingot deploy {at}`",
            pushed.images, pushed.blobs_moved, pushed.referrers
        ),
        &b,
        json!({"pushed": at, "blobs_moved": pushed.blobs_moved, "referrers": pushed.referrers}),
    )
}

pub fn pull_cmd(store: &mut Store, cli: &Cli, source: &str, insecure: bool) -> Result<ExitCode> {
    let remote = Remote::parse(source, insecure)?;
    let p = bundle::pull(store, &remote, crate::progress::observer(cli.quiet))?;
    report(
        cli,
        &format!(
            "Pulled stack bundle {source} ({} images pulled, {} referrers)",
            p.images, p.referrers
        ),
        &p.bundle,
        json!({"images_pulled": p.images, "referrers": p.referrers}),
    )
}

/// Prints what a bundle holds (`headline` first in a table; `extra` merged
/// into the JSON).
fn report(cli: &Cli, headline: &str, b: &Bundle, extra: serde_json::Value) -> Result<ExitCode> {
    let images = b.images()?;
    match cli.format {
        Format::Json => {
            let mut v = json!({
                "digest": b.digest, "stack": b.name, "application": b.application,
                "images": images.iter().map(|(s, i, d)| json!({"service": s, "image": i, "digest": d})).collect::<Vec<_>>(),
                "secrets": b.secrets(),
            });
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            output::json(&v)?;
        }
        Format::Table if cli.quiet => println!("{}", b.digest),
        Format::Table => {
            println!("{headline}");
            println!("  bundle       {}", b.digest);
            println!("  application  {}", b.application);
            for (s, i, d) in &images {
                println!("  {s:<12} {d}  ({i})");
            }
            let secrets = b.secrets();
            if !secrets.is_empty() {
                println!(
                    "  secrets      {} (by name: their values come from the deploying host)",
                    secrets.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The stack `ingot deploy BUNDLE` sends: the bundle (pulled with its
/// images when `input` names a registry and is not a digest already in the
/// store, else from the store), with its secrets' values from `secrets`
/// (`id=NAME,src=FILE` or `id=NAME,env=VAR`): never from the bundle's own
/// Compose file, which would let whoever made the bundle choose which of
/// this host's files and variables its containers get.
pub fn for_deploy(
    root: &Path,
    cli: &Cli,
    input: &str,
    name: Option<&str>,
    secrets: &[String],
    insecure: bool,
) -> Result<(PinnedStack, Secrets)> {
    let flags = secret_flags(secrets)?;
    let mut store = Store::open(root)?;
    let local = input.contains('@') && store.resolve(input).is_ok();
    let b = if Remote::names_registry(input) && !local {
        let remote = Remote::parse(input, insecure)?;
        let p = bundle::pull(&mut store, &remote, crate::progress::observer(cli.quiet))?;
        if !cli.quiet && cli.format == Format::Table {
            eprintln!(
                "ingot: bundle {} of stack {} ({} images pulled)",
                p.bundle.digest, p.bundle.name, p.images
            );
        }
        p.bundle
    } else {
        bundle::read(&store, input)?
    };
    if let Some(n) = name.filter(|n| *n != b.name) {
        bail!(
            "bundle {} is stack {:?} (its volumes and networks are named after it), not {n:?}: deploy it without --name",
            b.digest,
            b.name
        );
    }
    let wanted = b.secrets();
    if let Some(extra) = flags.keys().find(|k| !wanted.contains(k)) {
        bail!(
            "--secret id={extra}: bundle {} has no secret {extra:?} (it has: {})",
            b.digest,
            list(&wanted)
        );
    }
    let mut values = Secrets::new();
    for name in wanted {
        let src = flags.get(&name).with_context(|| {
            format!("bundle {} needs secret {name:?}: give it with --secret id={name},src=FILE or --secret id={name},env=VARIABLE", b.digest)
        })?;
        values.insert(
            name.clone(),
            ingot_deploy::pin::secret_value(&name, src, Path::new("."))?,
        );
    }
    Ok((b.instantiate(&values)?, values))
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// `--secret id=NAME,src=FILE|env=VAR` flags, by name.
pub(super) fn secret_flags(
    flags: &[String],
) -> Result<std::collections::BTreeMap<String, ingot_deploy::compose::SecretSource>> {
    use ingot_deploy::compose::SecretSource;
    let mut out = std::collections::BTreeMap::new();
    for f in flags {
        let (mut id, mut src) = (None, None);
        for part in f.split(',') {
            match part.split_once('=') {
                Some(("id", v)) if !v.is_empty() => id = Some(v.to_string()),
                Some(("src" | "source", v)) if !v.is_empty() => src = Some(SecretSource::File(v.to_string())),
                Some(("env", v)) if !v.is_empty() => src = Some(SecretSource::Environment(v.to_string())),
                _ => bail!("--secret {f:?}: expected id=NAME,src=FILE or id=NAME,env=VARIABLE"),
            }
        }
        let (Some(id), Some(src)) = (id, src) else {
            bail!("--secret {f:?}: expected id=NAME,src=FILE or id=NAME,env=VARIABLE");
        };
        if out.insert(id.clone(), src).is_some() {
            bail!("--secret id={id}: given twice");
        }
    }
    Ok(out)
}
