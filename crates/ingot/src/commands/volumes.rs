//! `ingot volume`: named volumes in the store.

use std::process::ExitCode;

use anyhow::Result;
use ingot_store::Store;
use serde_json::json;

use crate::cli::{Cli, Format, VolumeCommand};
use crate::output;

pub fn volume(store: &Store, cli: &Cli, command: &VolumeCommand) -> Result<ExitCode> {
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
            for n in names {
                store.remove_volume(n)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune => {
            for v in store.volumes()? {
                if store.volume_users(&v.name)?.is_empty() {
                    store.remove_volume(&v.name)?;
                    println!("{}", v.name);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
