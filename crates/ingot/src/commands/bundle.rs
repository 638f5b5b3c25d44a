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
    let (text, def) = super::deploy::parse_file(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let pinned = ingot_deploy::pin::pin_for_bundle(store, name, &def, dir)?;
    let tag: Reference = tag.parse().with_context(|| format!("bundle name {tag:?}"))?;
    let digest = bundle::make(store, &pinned, text.as_bytes(), Some(&tag))?;
    bundle::attach_sbom(store, &digest)?;
    if let Some(key) = key {
        let text = std::fs::read_to_string(key).with_context(|| format!("cannot read key {}", key.display()))?;
        let password = std::env::var("INGOT_KEY_PASSWORD").ok().filter(|p| !p.is_empty());
        let key = ingot_trust::keys::SigningKey::from_pem(&text, password.as_deref())
            .with_context(|| format!("key {}", key.display()))?;
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
) -> Result<ExitCode> {
    let digest = make(store, file, name, tag, key)?;
    let b = bundle::read(store, &digest.to_string())?;
    report(cli, &format!("Bundled stack {name} as {tag}"), &b, json!({}))
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
/// images when `input` names a registry, else from the store), its
/// secrets' values read as its Compose file says (environment variables,
/// files relative to the current directory).
pub fn for_deploy(
    root: &Path,
    cli: &Cli,
    input: &str,
    name: Option<&str>,
    insecure: bool,
) -> Result<(PinnedStack, Secrets)> {
    let mut store = Store::open(root)?;
    let b = match Remote::parse(input, insecure) {
        Ok(remote) => {
            let p = bundle::pull(&mut store, &remote, crate::progress::observer(cli.quiet))?;
            if !cli.quiet && cli.format == Format::Table {
                eprintln!(
                    "ingot: bundle {} of stack {} ({} images pulled)",
                    p.bundle.digest, p.bundle.name, p.images
                );
            }
            p.bundle
        }
        Err(_) => bundle::read(&store, input)?,
    };
    if let Some(n) = name.filter(|n| *n != b.name) {
        bail!(
            "bundle {} is stack {:?} (its volumes and networks are named after it), not {n:?}: deploy it without --name",
            b.digest,
            b.name
        );
    }
    let values = secret_values(&b)?;
    Ok((b.instantiate(&values)?, values))
}

/// The values of the bundle's secrets, from the sources its Compose file
/// gives them.
fn secret_values(b: &Bundle) -> Result<Secrets> {
    let mut values = Secrets::new();
    let names = b.secrets();
    if names.is_empty() {
        return Ok(values);
    }
    let file = format!("bundle {} compose.yaml", b.digest);
    let text = String::from_utf8(b.compose.clone()).with_context(|| format!("{file}: not UTF-8"))?;
    let def = ingot_deploy::compose::parse(&file, &text)?;
    for name in names {
        let src = def
            .secrets
            .get(&name)
            .with_context(|| format!("{file}: secret {name:?} of the pinned stack is not defined"))?;
        values.insert(
            name.clone(),
            ingot_deploy::pin::secret_value(&name, src, Path::new("."))?,
        );
    }
    Ok(values)
}
