//! `ingot db import`, `ingot scan`, `ingot packages`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use ingot_scan::{Finding, Severity};
use ingot_store::Store;
use serde_json::json;

use crate::cli::{Cli, Format, OutputFormat};
use crate::output;

pub fn import(store: &mut Store, cli: &Cli, path: &Path) -> Result<ExitCode> {
    let (read, total) = ingot_scan::import(store, path)?;
    if !cli.quiet {
        println!(
            "Imported {read} advisories from {}; the database holds {total}",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn packages(store: &Store, cli: &Cli, image: &str) -> Result<ExitCode> {
    let pkgs = ingot_sbom::catalog(store, image)?;
    match cli.format {
        Format::Json => output::json(&pkgs)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = pkgs
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.version.clone(),
                        p.ecosystem.osv().to_string(),
                        p.license.clone().unwrap_or_default(),
                        p.path.clone(),
                    ]
                })
                .collect();
            output::table(&["NAME", "VERSION", "TYPE", "LICENSE", "PATH"], &rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sarif(image: &str, findings: &[Finding]) -> serde_json::Value {
    let level = |s: Severity| match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        _ => "note",
    };
    json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {"name": "ingot", "version": env!("CARGO_PKG_VERSION"),
                "rules": findings.iter().map(|f| json!({"id": f.id, "shortDescription": {"text": format!("{} in {}", f.id, f.package)}})).collect::<Vec<_>>()}},
            "results": findings.iter().map(|f| json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": {"text": format!("{} {} is affected by {} ({}); fixed in {}", f.package, f.installed, f.id, f.severity, f.fixed.as_deref().unwrap_or("no release"))},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": format!("{image}{}", f.path)}}}],
            })).collect::<Vec<_>>(),
        }],
    })
}

pub fn scan(store: &Store, cli: &Cli, image: &str, fail_on: Option<&str>) -> Result<ExitCode> {
    let threshold: Option<Severity> = fail_on.map(str::parse).transpose()?;
    let (packages, findings) = ingot_scan::scan(store, image)?;
    match cli.output_format {
        OutputFormat::Json => output::json(&json!({"image": image, "packages": packages.len(), "findings": findings}))?,
        OutputFormat::Sarif => output::json(&sarif(image, &findings))?,
        _ if !cli.quiet => {
            let rows: Vec<Vec<String>> = findings
                .iter()
                .map(|f| {
                    vec![
                        f.package.clone(),
                        f.installed.clone(),
                        f.fixed.clone().unwrap_or_else(|| "-".into()),
                        f.id.clone(),
                        f.aliases.join(","),
                        f.severity.to_string(),
                        f.path.clone(),
                    ]
                })
                .collect();
            output::table(
                &["PACKAGE", "INSTALLED", "FIXED", "ID", "ALIASES", "SEVERITY", "PATH"],
                &rows,
            )?;
            eprintln!("{} packages, {} findings", packages.len(), findings.len());
        }
        _ => {}
    }
    if let Some(t) = threshold {
        // Unknown severity counts: nothing is known to make it safe.
        let failing = findings
            .iter()
            .filter(|f| f.severity >= t || f.severity == Severity::Unknown)
            .count();
        if failing > 0 {
            eprintln!("ingot: {failing} finding(s) at or above {t} (or of unknown severity)");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sbom(store: &mut Store, cli: &Cli, image: &str, attach: bool) -> Result<ExitCode> {
    let format = match cli.output_format {
        OutputFormat::CyclonedxJson => ingot_sbom::documents::Format::CycloneDx,
        _ => ingot_sbom::documents::Format::Spdx,
    };
    let (doc, digest) = ingot_sbom::documents::document(store, image, format)?;
    if attach {
        let d = ingot_sbom::documents::attach(store, &digest, format, &doc)?;
        if !cli.quiet {
            eprintln!("attached to {digest} as referrer {d}");
        }
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&doc)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
