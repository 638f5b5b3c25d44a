//! Image commands.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ingot_oci::manifest::{Content, Role};
use ingot_oci::Reference;
use ingot_store::{ImportOptions, LayerCompression, Store};
use serde_json::json;

use crate::cli::{Cli, Compression, Format};
use crate::output;

pub fn import(
    store: &mut Store,
    cli: &Cli,
    file: &Path,
    reference: &str,
    compression: Compression,
) -> Result<ExitCode> {
    let r: Reference = reference.parse()?;
    if r.digest().is_some() {
        bail!("import target {reference:?} must be NAME[:TAG], not a digest");
    }
    let r = r.with_tag(r.tag_or_default().unwrap_or("latest"))?;
    let opts = ImportOptions {
        compression: match compression {
            Compression::Gzip => LayerCompression::Gzip,
            Compression::None => LayerCompression::None,
        },
        created: ingot_store::source_date_epoch(),
        ..Default::default()
    };
    let imported = if file == Path::new("-") {
        ingot_store::import_rootfs(store, io::stdin().lock(), "stdin", &r, &opts)?
    } else {
        let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        ingot_store::import_rootfs(store, f, &file.display().to_string(), &r, &opts)?
    };
    if cli.quiet {
        println!("{}", imported.manifest.digest);
    } else {
        println!(
            "Imported {r} {} ({} entries, layer {})",
            imported.manifest.digest, imported.entries, imported.layer
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn images(store: &Store, cli: &Cli) -> Result<ExitCode> {
    let list = store.list()?;
    if cli.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in &list {
            if seen.insert(i.digest.clone()) {
                println!("{}", i.digest);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match cli.format {
        Format::Json => output::json(&list)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.tag.clone(),
                        i.digest.short().to_string(),
                        i.created.clone().unwrap_or_else(|| "-".into()),
                        output::human_size(i.size),
                    ]
                })
                .collect();
            output::table(&["REPOSITORY", "TAG", "DIGEST", "CREATED", "SIZE"], &rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The inspect document of one image.
pub fn inspect_image(store: &Store, input: &str) -> Result<serde_json::Value> {
    {
        let image = store.resolve(input)?;
        let refs = image.manifest.references()?;
        // Artifacts (signatures, SBOMs) have configs that are not image configs.
        let config = store.config(&image.manifest).ok().flatten();
        let referrers: Vec<_> = store
            .referrers(&image.digest)?
            .iter()
            .map(|d| {
                let artifact_type = store
                    .manifest(d, None)
                    .ok()
                    .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m.bytes).ok())
                    .and_then(|v| v["artifactType"].as_str().map(String::from));
                json!({"digest": d, "artifact_type": artifact_type})
            })
            .collect();
        let layers: Vec<_> = refs
            .iter()
            .filter(|r| r.role == Role::Layer)
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "digest": r.digest,
                    "size": r.size,
                    "media_type": r.media_type,
                    "diff_id": config.as_ref().and_then(|(_, c)| c.rootfs.diff_ids.get(i)),
                })
            })
            .collect();
        let manifests: Vec<_> = refs
            .iter()
            .filter(|r| r.role == Role::Manifest)
            .map(|r| json!({"digest": r.digest, "size": r.size, "media_type": r.media_type}))
            .collect();
        let annotations = match &image.manifest.content {
            Content::Image(m) => m.annotations().clone(),
            Content::Index(ix) => ix.annotations().clone(),
        };
        let mut v = json!({
            "digest": image.digest,
            "tags": image.tags,
            "media_type": image.manifest.media_type,
            "size": image.size,
            "created": image.created,
            "annotations": annotations.map(|a| a.into_iter().collect::<std::collections::BTreeMap<_, _>>()),
            "manifest": serde_json::from_slice::<serde_json::Value>(&image.manifest.bytes)?,
            "referrers": referrers,
        });
        if let Some((cd, c)) = &config {
            v["config_digest"] = json!(cd);
            v["architecture"] = json!(c.architecture);
            v["os"] = json!(c.os);
            v["config"] = c.config.clone().unwrap_or(json!({}));
            v["history"] = json!(c.history);
            v["layers"] = json!(layers);
        } else {
            v["manifests"] = json!(manifests);
        }
        Ok(v)
    }
}

pub fn print_inspect_table(v: &serde_json::Value) {
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("Digest:        {}", s("digest"));
    let tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
        .unwrap_or_default();
    println!(
        "Tags:          {}",
        if tags.is_empty() {
            "<none>".into()
        } else {
            tags.join(", ")
        }
    );
    println!("Media type:    {}", s("media_type"));
    println!(
        "Size:          {} ({} bytes)",
        output::human_size(v["size"].as_u64().unwrap_or(0)),
        s("size")
    );
    println!("Created:       {}", s("created"));
    if v.get("config_digest").is_some() {
        println!("Platform:      {}/{}", s("os"), s("architecture"));
        println!("Config:        {}", s("config_digest"));
        let cfg = &v["config"];
        for (label, key) in [
            ("Entrypoint", "Entrypoint"),
            ("Cmd", "Cmd"),
            ("Env", "Env"),
            ("WorkingDir", "WorkingDir"),
            ("User", "User"),
        ] {
            if let Some(val) = cfg.get(key).filter(|x| !x.is_null()) {
                println!("{:<15}{}", format!("{label}:"), val);
            }
        }
        println!("Layers:");
        for l in v["layers"].as_array().into_iter().flatten() {
            println!(
                "  {}  {:>10}  {}",
                l["digest"].as_str().unwrap_or("?"),
                output::human_size(l["size"].as_u64().unwrap_or(0)),
                l["media_type"].as_str().unwrap_or("?")
            );
        }
    } else {
        println!("Manifests:");
        for m in v["manifests"].as_array().into_iter().flatten() {
            println!(
                "  {}  {}",
                m["digest"].as_str().unwrap_or("?"),
                m["media_type"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(a) = v["annotations"].as_object() {
        println!("Annotations:");
        for (k, val) in a {
            println!("  {k}={}", val.as_str().unwrap_or_default());
        }
    }
}

pub fn rmi(store: &mut Store, cli: &Cli, inputs: &[String], force: bool, no_prune: bool) -> Result<ExitCode> {
    for input in inputs {
        let removed = store.remove(input, force)?;
        if !cli.quiet {
            for t in &removed.untagged {
                println!("Untagged: {t}");
            }
            if let Some(d) = &removed.deleted {
                println!("Deleted: {d}");
            }
        }
    }
    if !no_prune {
        // Free blobs now if no writer is busy; otherwise a later `ingot gc` will.
        match ingot_store::gc(store, false, false)? {
            Some(r) if !cli.quiet && !r.removed.is_empty() => {
                println!("Freed {} blobs, {}", r.removed.len(), output::human_size(r.bytes_freed))
            }
            Some(_) => {}
            None => tracing::info!("store busy; blobs left for a later `ingot gc`"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn save(store: &Store, images: &[String], output: Option<&Path>) -> Result<ExitCode> {
    write_archive(store, images, false, output)?;
    Ok(ExitCode::SUCCESS)
}

/// Saves `images` (and with `referrers`, what refers to them) to `output`
/// (standard output when absent or `-`): a file is whole or absent.
pub(super) fn write_archive(store: &Store, images: &[String], referrers: bool, output: Option<&Path>) -> Result<()> {
    match output.filter(|p| *p != Path::new("-")) {
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal; use -o FILE or redirect standard output");
            }
            let mut out = io::BufWriter::new(stdout.lock());
            ingot_store::save_with(store, images, referrers, &mut out)?;
            out.flush()?;
        }
        Some(path) => {
            // Write beside the target and rename, so the file is whole or absent.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = dir.join(format!(
                ".{}.ingot-tmp-{}",
                path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                std::process::id()
            ));
            let result = (|| -> Result<()> {
                let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
                let mut out = io::BufWriter::with_capacity(1 << 20, f);
                ingot_store::save_with(store, images, referrers, &mut out)?;
                let f = out.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
                Ok(())
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
        }
    }
    Ok(())
}

pub fn load(store: &mut Store, cli: &Cli, input: Option<&Path>) -> Result<ExitCode> {
    let (reader, name): (Box<dyn Read>, String) = match input.filter(|p| *p != Path::new("-")) {
        Some(p) => (
            Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
            p.display().to_string(),
        ),
        None => {
            if io::stdin().is_terminal() {
                bail!("no archive given: use -i FILE or pipe one to standard input");
            }
            (Box::new(io::stdin().lock()), "stdin".to_string())
        }
    };
    let loaded = ingot_store::load(store, reader, &name)?;
    match cli.format {
        Format::Json => output::json(&loaded)?,
        Format::Table => {
            for l in &loaded {
                if cli.quiet {
                    println!("{}", l.digest);
                } else if l.tags.is_empty() {
                    println!("Loaded image: {}", l.digest);
                } else {
                    for t in &l.tags {
                        println!("Loaded image: {t} ({})", l.digest);
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(store: &Store, cli: &Cli, dry_run: bool) -> Result<ExitCode> {
    let report = ingot_store::gc(store, dry_run, true)?.context("gc lock not acquired")?;
    match cli.format {
        Format::Json => output::json(&report)?,
        Format::Table => {
            if cli.quiet {
                return Ok(ExitCode::SUCCESS);
            }
            for d in &report.removed {
                println!("{} {d}", if dry_run { "Would remove" } else { "Removed" });
            }
            println!(
                "{} {} blobs ({}), {} temp files; kept {} blobs",
                if dry_run { "Would free" } else { "Freed" },
                report.removed.len(),
                output::human_size(report.bytes_freed),
                report.temp_files_removed,
                report.kept
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(store: &Store, cli: &Cli) -> Result<ExitCode> {
    let (blobs, problems) = ingot_store::fsck(store)?;
    match cli.format {
        Format::Json => output::json(&json!({"blobs": blobs, "problems": problems}))?,
        Format::Table => {
            for p in &problems {
                eprintln!("{p}");
            }
            if !cli.quiet {
                println!("checked {blobs} blobs: {} problems", problems.len());
            }
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
