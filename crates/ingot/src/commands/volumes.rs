//! `ingot volume`: named volumes in the store; `ingot network`: the
//! stacks' networks on this host.

use std::process::ExitCode;

use anyhow::Result;
use ingot_store::Store;
use serde_json::json;

use crate::cli::{Cli, Format, NetworkCommand, VolumeCommand};
use crate::output;

/// Volumes a deployed stack declares (by its ledger): not removed, even
/// between two replicas (a stop-first update), until `stack rm`.
fn declared(store: &Store) -> Result<std::collections::BTreeMap<String, String>> {
    let rows = store.ledger_rows()?;
    Ok(
        ingot_deploy::ledger::desired_on(&rows, ingot_deploy::pin::EngineKind::Local)?
            .into_values()
            .flat_map(|s| {
                let stack = s.name.clone();
                s.volumes.into_values().map(move |v| (v.name, stack.clone()))
            })
            .collect(),
    )
}

fn check_local() -> Result<()> {
    if std::env::var("INGOT_HOST").is_ok_and(|h| !h.is_empty()) {
        anyhow::bail!("volumes are managed on the daemon's host (INGOT_HOST is set): run this there");
    }
    Ok(())
}

pub fn volume(store: &Store, cli: &Cli, command: &VolumeCommand) -> Result<ExitCode> {
    check_local()?;
    match command {
        VolumeCommand::Ls => {
            let all = store.volumes()?;
            match cli.format {
                Format::Json => output::json(&all)?,
                Format::Table if cli.quiet => all.iter().for_each(|v| println!("{}", v.name)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|v| {
                            vec![
                                v.name.clone(),
                                v.stack.clone().unwrap_or_default(),
                                v.created_at.clone(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "STACK", "CREATED"], &rows)?;
                }
            }
        }
        VolumeCommand::Create { name } => {
            let v = store.create_volume(name, None)?;
            println!("{}", v.name);
        }
        VolumeCommand::Inspect { names } => {
            let mut all = Vec::new();
            for n in names {
                let v = store.volume(n)?;
                let users = store.volume_users(n)?;
                all.push(json!({
                    "name": v.name, "stack": v.stack, "created_at": v.created_at,
                    "mountpoint": v.mountpoint, "used_by": users,
                }));
            }
            output::json(&all)?;
        }
        VolumeCommand::Rm { names } => {
            // Each named, the first failure stops (as docker volume rm).
            let declared = declared(store)?;
            for n in names {
                if let Some(stack) = declared.get(n) {
                    anyhow::bail!(
                        "volume {n} belongs to deployed stack {stack}; `ingot stack rm --volumes {stack}` removes both"
                    );
                }
                store.remove_volume(n)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune => {
            let declared = declared(store)?;
            for v in store.volumes()? {
                if !declared.contains_key(&v.name) && store.volume_users(&v.name)?.is_empty() {
                    store.remove_volume(&v.name)?;
                    println!("{}", v.name);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ingot network ls|inspect`: the networks the store records (made by
/// deploys, removed by `stack rm`).
pub fn network(store: &Store, cli: &Cli, command: &NetworkCommand) -> Result<ExitCode> {
    check_local()?;
    let all = store.networks()?;
    match command {
        NetworkCommand::Ls => match cli.format {
            Format::Json => output::json(&all)?,
            Format::Table if cli.quiet => all.iter().for_each(|n| println!("{}", n.name)),
            Format::Table => {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            n.stack.clone(),
                            n.bridge.clone(),
                            n.subnet.clone(),
                            n.internal.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "STACK", "BRIDGE", "SUBNET", "INTERNAL"], &rows)?;
            }
        },
        NetworkCommand::Inspect { names } => {
            let containers = store.containers()?;
            let mut out = Vec::new();
            for name in names {
                let n = find(&all, name)?;
                let net = ingot_deploy::engine::networks::record_network(n);
                let attached: Vec<serde_json::Value> = attached(net.as_ref(), &containers)
                    .into_iter()
                    .map(|(name, addr)| json!({"name": name, "address": addr}))
                    .collect();
                out.push(json!({
                    "name": n.name, "stack": n.stack, "bridge": n.bridge, "subnet": n.subnet,
                    "gateway": net.as_ref().map(|n| n.gateway().to_string()),
                    "internal": n.internal, "created_at": n.created_at, "containers": attached,
                }));
            }
            output::json(&out)?;
        }
        NetworkCommand::Rm { names } => {
            let containers = store.containers()?;
            // Every name checked before anything is removed.
            let mut nets = Vec::new();
            for name in names {
                let n = find(&all, name)?;
                let net = ingot_deploy::engine::networks::record_network(n)
                    .ok_or_else(|| anyhow::anyhow!("network {name}: its record has no valid subnet ({})", n.subnet))?;
                let on = attached(Some(&net), &containers);
                if !on.is_empty() {
                    let list: Vec<String> = on.into_iter().map(|(c, _)| c).collect();
                    anyhow::bail!(
                        "network {name} is in use by {} (remove them, or `ingot stack rm {}`)",
                        list.join(", "),
                        n.stack
                    );
                }
                nets.push((name, net));
            }
            for (name, net) in nets {
                ingot_runtime::net::bridge::remove(&net)?;
                store.delete_network(name)?;
                if !cli.quiet {
                    println!("{name}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn find<'a>(all: &'a [ingot_store::NetworkRecord], name: &str) -> Result<&'a ingot_store::NetworkRecord> {
    all.iter()
        .find(|n| n.name == name)
        .ok_or_else(|| anyhow::anyhow!("network {name:?} not found (ingot network ls)"))
}

/// The containers on `net` (holding an address in it), with that address.
fn attached(
    net: Option<&ingot_runtime::net::Network>,
    containers: &[ingot_store::ContainerRecord],
) -> Vec<(String, String)> {
    let Some(net) = net else { return Vec::new() };
    containers
        .iter()
        .filter_map(|c| {
            let addr = c
                .addresses()
                .into_iter()
                .find(|a| a.parse().is_ok_and(|ip| net.contains(ip)))?;
            Some((c.name.clone(), addr))
        })
        .collect()
}
