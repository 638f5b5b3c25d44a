//! `ingot key generate`, `ingot sign`, `ingot verify`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ingot_store::Store;
use ingot_trust::keys::{KeyKind, SigningKey, VerifyingKey};
use ingot_trust::policy::Policy;

use crate::cli::{Cli, Format};
use crate::output;

const PASSWORD_ENV: &str = "INGOT_KEY_PASSWORD";

fn password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}

/// Writes `text` to a new file (never over an existing key), mode `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub fn generate(cli: &Cli, out: &Path, ed25519: bool) -> Result<ExitCode> {
    let kind = if ed25519 { KeyKind::Ed25519 } else { KeyKind::EcdsaP256 };
    let key = SigningKey::generate(kind);
    let private = out.with_extension("key");
    let public = out.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    write_new(&private, &key.to_pem(password().as_deref())?, 0o600)?;
    if let Err(e) = write_new(&public, &key.verifying_key().to_pem()?, 0o644) {
        let _ = fs::remove_file(&private);
        return Err(e);
    }
    if !cli.quiet {
        println!(
            "Wrote {} ({}{}) and {}",
            private.display(),
            if ed25519 { "Ed25519" } else { "ECDSA P-256" },
            if password().is_some() { ", encrypted" } else { "" },
            public.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The private key at `path` (PEM; an encrypted one takes INGOT_KEY_PASSWORD).
pub(super) fn signing_key(path: &Path) -> Result<SigningKey> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read key {}", path.display()))?;
    SigningKey::from_pem(&text, password().as_deref()).with_context(|| format!("key {}", path.display()))
}

pub fn sign(store: &mut Store, cli: &Cli, image: &str, key: &Path) -> Result<ExitCode> {
    let key = signing_key(key)?;
    let signed = ingot_trust::signature::sign(store, image, &key)?;
    if cli.quiet {
        println!("{}", signed.signature);
    } else {
        println!(
            "Signed {} with signature {}{}",
            signed.image,
            signed.signature,
            signed.tag.map(|t| format!(" (tag {t})")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(store: &Store, cli: &Cli, image: &str, key: Option<&Path>, policy: Option<&Path>) -> Result<ExitCode> {
    let mut good = Vec::new();
    if let Some(key) = key {
        let text = fs::read_to_string(key).with_context(|| format!("cannot read key {}", key.display()))?;
        let key = VerifyingKey::from_pem(&text).with_context(|| format!("key {}", key.display()))?;
        good = match store.resolve(image) {
            // Not in the store but a registry's: asked of the registry.
            Err(ingot_store::StoreError::ImageNotFound(_))
                if ingot_registry::client::Remote::parse(image, false).is_ok() =>
            {
                if policy.is_some() {
                    anyhow::bail!("--policy needs {image} in the store (its SBOM, its scan): `ingot pull` it first");
                }
                verify_remote(image, &key)?
            }
            _ => ingot_trust::signature::verify(store, image, &key)?,
        };
    }
    let decision = match policy {
        Some(p) => {
            let policy = Policy::load(p)?;
            Some(ingot_trust::policy::evaluate(
                store,
                image,
                &policy,
                time::OffsetDateTime::now_utc().date(),
            )?)
        }
        None => None,
    };
    match cli.format {
        // Without a policy, the list of verified signatures (as before).
        Format::Json if decision.is_none() => output::json(&good)?,
        Format::Json => output::json(&serde_json::json!({"signatures": good, "policy": decision}))?,
        Format::Table if !cli.quiet => {
            for v in &good {
                println!(
                    "Verified {} : signature {} by this key ({})",
                    v.image, v.signature, v.identity
                );
            }
            if let Some(d) = &decision {
                for a in &d.allowed {
                    println!("Allowed by exception: {a}");
                }
                if d.passed() {
                    println!("Policy passed for {} ({})", d.image, d.digest);
                }
            }
        }
        Format::Table => {}
    }
    if let Some(d) = decision.filter(|d| !d.passed()) {
        for r in &d.refusals {
            eprintln!("ingot: policy refused {}: {r}", d.image);
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Verifies an image in its registry without pulling it: its manifest, the
/// manifests that refer to it (referrers API or cosign's tags) and each
/// signature's payload (at most 1 MiB), nothing else.
fn verify_remote(image: &str, key: &VerifyingKey) -> Result<Vec<ingot_trust::signature::Verified>> {
    use ingot_registry::client::{get_blob, referrers, Client, Remote};
    let remote = Remote::parse(image, false)?;
    let client = Client::new(remote.insecure);
    let (bytes, media_type) = client.get_manifest(&remote, &remote.reference())?;
    let m = ingot_oci::Manifest::parse(bytes, Some(&media_type)).with_context(|| format!("{image}: its manifest"))?;
    if let Some(d) = remote.digest.as_ref().filter(|d| **d != m.digest) {
        anyhow::bail!("{image}: the registry's manifest hashes to {}, not {d}", m.digest);
    }
    let refs = referrers(&client, &remote, &m.digest)?;
    let read = |d: &ingot_oci::Digest| {
        get_blob(&client, &remote, d, 1 << 20).map_err(|e| ingot_trust::TrustError::Invalid(e.to_string()))
    };
    Ok(ingot_trust::signature::check(image, &m.digest, &refs, &read, key)?)
}
