//! One function per subcommand: call the libraries, print the result.

mod build;
mod bundle;
mod containers;
mod deploy;
mod images;
mod scan;
mod swarm;
mod trust;
mod volumes;

use std::process::ExitCode;

use anyhow::Result;
use ingot_store::Store;

use crate::cli::{Cli, Command, Format};
use crate::output;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let root = cli.root.clone().unwrap_or_else(crate::default_root);
    let swarm = cli.engine == crate::cli::EngineArg::Swarm;
    let open = || Store::open(&root);
    match cli.command {
        Command::Import {
            ref file,
            ref reference,
            compression,
        } => {
            let mut store = open()?;
            images::import(&mut store, &cli, file, reference, compression)
        }
        Command::Images => images::images(&open()?, &cli),
        Command::Inspect {
            ref images,
            provenance: true,
            ..
        } => build::inspect_provenance(&open()?, images),
        Command::Inspect {
            ref images, bom: true, ..
        } => build::inspect_bom(&open()?, &cli, images),
        Command::Inspect { ref images, .. } => inspect(&open()?, &cli, images),
        Command::Build(ref args) => build::build(&mut open()?, &cli, args),
        Command::Tag { ref source, ref target } => {
            let r = open()?.tag(source, target)?;
            if !cli.quiet {
                println!("Tagged {r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rmi {
            ref images,
            force,
            no_prune,
        } => images::rmi(&mut open()?, &cli, images, force, no_prune),
        Command::Save { ref images, ref output } => images::save(&open()?, images, output.as_deref()),
        Command::Load { ref input } => images::load(&mut open()?, &cli, input.as_deref()),
        Command::Unpack { ref image, ref dir } => {
            let store = open()?;
            let img = store.resolve(image)?;
            let n = ingot_store::unpack_image(&store, &img, dir)?;
            if !cli.quiet {
                println!("Unpacked {} ({n} entries) into {}", img.digest, dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { dry_run } => images::gc(&open()?, &cli, dry_run),
        Command::Fsck => images::fsck(&open()?, &cli),
        Command::Run(ref args) => containers::run(&root, args),
        Command::Ps { all } => containers::ps(&open()?, &cli, all),
        Command::Logs { follow, ref container } => containers::logs(&open()?, container, follow),
        Command::Stop { time, ref containers } => containers::stop(&open()?, &cli, containers, time),
        Command::Kill {
            ref signal,
            ref containers,
        } => containers::kill(&open()?, &cli, containers, signal),
        Command::Rm { force, ref containers } => containers::rm(&open()?, &cli, containers, force),
        Command::Db {
            command: crate::cli::DbCommand::Import { ref path },
        } => scan::import(&mut open()?, &cli, path),
        Command::Scan { ref image, ref fail_on } => scan::scan(&open()?, &cli, image, fail_on.as_deref()),
        Command::Sbom { ref image, attach } => scan::sbom(&mut open()?, &cli, image, attach),
        Command::Packages { ref image } => scan::packages(&open()?, &cli, image),
        Command::Key {
            command: crate::cli::KeyCommand::Generate { ref out, ed25519 },
        } => trust::generate(&cli, out, ed25519),
        Command::Sign { ref image, ref key } => trust::sign(&mut open()?, &cli, image, key),
        Command::Verify {
            ref image,
            ref key,
            ref policy,
        } => trust::verify(&open()?, &cli, image, key.as_deref(), policy.as_deref()),
        Command::Token {
            command: crate::cli::TokenCommand::Create { ref repo, pull, push },
        } => {
            if !pull && !push {
                anyhow::bail!("a token needs --pull, --push or both");
            }
            if repo.is_empty() || repo.contains(char::is_whitespace) {
                anyhow::bail!("invalid --repo {repo:?}: expected a name, PREFIX/* or *");
            }
            let secret = ingot_registry::server::auth::new_secret();
            let hash = ingot_registry::server::auth::hash_secret(&secret);
            open()?.reg_token_create(&hash, repo, pull, push)?;
            println!("{secret}");
            if !cli.quiet {
                eprintln!(
                    "ingot: token {} (revoke it with `ingot token revoke {}`)",
                    &hash[..12],
                    &hash[..12]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: crate::cli::TokenCommand::List,
        } => {
            let rows: Vec<serde_json::Value> = open()?
                .reg_tokens()?
                .into_iter()
                .map(|t| {
                    serde_json::json!({"id": &t.hash[..12.min(t.hash.len())], "repositories": t.pattern,
                        "pull": t.pull, "push": t.push, "created": t.created})
                })
                .collect();
            match cli.format {
                crate::cli::Format::Json => crate::output::json(&rows)?,
                crate::cli::Format::Table => {
                    let t: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            let rights = match (r["pull"].as_bool(), r["push"].as_bool()) {
                                (Some(true), Some(true)) => "pull,push",
                                (_, Some(true)) => "push",
                                _ => "pull",
                            };
                            vec![
                                r["id"].as_str().unwrap_or_default().to_string(),
                                r["repositories"].as_str().unwrap_or_default().to_string(),
                                rights.to_string(),
                                r["created"].as_str().unwrap_or_default().to_string(),
                            ]
                        })
                        .collect();
                    crate::output::table(&["ID", "REPOSITORIES", "RIGHTS", "CREATED"], &t)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: crate::cli::TokenCommand::Revoke { ref id },
        } => match open()?.reg_token_revoke(id)? {
            1 => {
                if !cli.quiet {
                    println!("Revoked token {id}");
                }
                Ok(ExitCode::SUCCESS)
            }
            0 => anyhow::bail!("no token {id:?} (give at least 8 hex digits of its ID; see `ingot token list`)"),
            n => anyhow::bail!("token ID {id:?} is ambiguous ({n} tokens); give more of it"),
        },
        Command::Monitor { ref id } => containers::monitor(&open()?, id),
        Command::Push {
            ref image,
            ref destination,
            insecure,
        } => {
            let store = open()?;
            let dest = destination.as_deref().unwrap_or(image);
            let remote = ingot_registry::client::Remote::parse(dest, insecure)?;
            let t = ingot_registry::client::push(&store, image, &remote, crate::progress::observer(cli.quiet))?;
            let digest = t.digest.map(|d| d.to_string()).unwrap_or_default();
            if cli.quiet {
                println!("{digest}");
            } else {
                println!(
                    "Pushed {dest} {digest} ({} blobs sent, {} already there, {} referrers)",
                    t.blobs_moved, t.blobs_skipped, t.referrers
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { ref source, insecure } => {
            let mut store = open()?;
            let remote = ingot_registry::client::Remote::parse(source, insecure)?;
            let t = ingot_registry::client::pull(&mut store, &remote, crate::progress::observer(cli.quiet))?;
            let digest = t.digest.map(|d| d.to_string()).unwrap_or_default();
            if cli.quiet {
                println!("{digest}");
            } else {
                println!(
                    "Pulled {source} {digest} ({} blobs fetched, {} already here, {} referrers)",
                    t.blobs_moved, t.blobs_skipped, t.referrers
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            addr,
            tag_immutability,
            grace,
            ref auth,
            anonymous_pull,
            ref tls_cert,
            ref tls_key,
        } => {
            let auth = match auth.as_str() {
                "none" if !anonymous_pull => None,
                "none" => anyhow::bail!("--anonymous-pull needs --auth tokens"),
                "tokens" => Some(ingot_registry::server::AuthOptions { anonymous_pull }),
                other => anyhow::bail!("invalid --auth {other:?}: expected none or tokens"),
            };
            let opts = ingot_registry::ServeOptions {
                addr,
                tag_immutability,
                grace: std::time::Duration::from_secs(grace),
                auth,
                tls: tls_cert.clone().zip(tls_key.clone()),
            };
            let scheme = if opts.tls.is_some() { "https" } else { "http" };
            let quiet = cli.quiet;
            tokio::runtime::Runtime::new()?.block_on(ingot_registry::serve(&root, opts, |a| {
                if !quiet {
                    eprintln!("ingot: serving the OCI distribution API on {scheme}://{a}/v2/");
                }
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon {
            ref socket,
            ref policy,
            tcp,
            ref tls_dir,
            replace,
            ref allow_bind,
            web,
        } => deploy::daemon(
            &root,
            &cli,
            &deploy::DaemonOptions {
                sock: socket.as_deref(),
                policy: policy.as_deref(),
                tcp,
                tls_dir: tls_dir.as_deref(),
                replace,
                allow_bind,
                web,
            },
        ),
        Command::Deploy {
            ref bundle,
            ref file,
            ref name,
            ref secrets,
            ref reason,
            detach,
            ref registry,
            insecure,
            ref policy,
        } => {
            if swarm && detach {
                anyhow::bail!("--detach: a swarm deploy is carried out by this command; it cannot detach");
            }
            if !swarm && (registry.is_some() || policy.is_some()) {
                anyhow::bail!("--registry and --policy are for --engine swarm (the local engine uses the daemon's store and --policy)");
            }
            let (stack, secrets) = match (bundle, file, name) {
                (Some(b), _, _) => bundle::for_deploy(&root, &cli, b, name.as_deref(), secrets, insecure)?,
                (None, Some(_), Some(_)) if !secrets.is_empty() => {
                    anyhow::bail!("--secret is for bundles: a Compose file gives its secrets' sources itself")
                }
                (None, Some(f), Some(n)) => deploy::pin_file(&open()?, f, n)?,
                _ => anyhow::bail!("give a Compose file (-f FILE --name STACK) or a bundle"),
            };
            if swarm {
                let target = swarm::Target {
                    registry: registry.as_deref(),
                    insecure,
                    policy: policy.as_deref(),
                };
                swarm::deploy(&root, &cli, stack, secrets, reason.as_deref(), &target)
            } else {
                deploy::deploy(&root, &cli, stack, secrets, reason.as_deref(), detach)
            }
        }
        Command::Services if swarm => swarm::services(&cli),
        Command::Services => deploy::services(&root, &cli),
        Command::Exec {
            ref container,
            ref command,
            ref timeout,
        } => {
            let timeout = match timeout {
                Some(t) => Some(std::time::Duration::from_millis(
                    ingot_deploy::compose::duration(t).map_err(|e| anyhow::anyhow!("--timeout {t:?}: {e}"))?,
                )),
                None => None,
            };
            let code = ingot_runtime::exec(&open()?, container, command, timeout)?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::Service {
            command: crate::cli::ServiceCommand::Ps { ref service },
        } if swarm => swarm::service_ps(&cli, service),
        Command::Service {
            command: crate::cli::ServiceCommand::Ps { ref service },
        } => deploy::service_ps(&root, &cli, service),
        Command::Service {
            command: crate::cli::ServiceCommand::Scale { ref spec },
        } if swarm => swarm::scale(&root, &cli, spec),
        Command::Service {
            command: crate::cli::ServiceCommand::Scale { ref spec },
        } => deploy::scale(&root, &cli, spec),
        Command::Rollback { ref service } if swarm => swarm::rollback(&root, &cli, service),
        Command::Rollback { ref service } => deploy::rollback(&root, &cli, service),
        Command::Stack {
            command: crate::cli::StackCommand::Rm { ref stack, volumes },
        } if swarm => {
            if volumes {
                anyhow::bail!("--volumes: a swarm's volumes live on its nodes; remove them there (`docker volume rm`)");
            }
            swarm::stack_rm(&root, &cli, stack)
        }
        Command::Stack {
            command: crate::cli::StackCommand::Rm { ref stack, volumes },
        } => deploy::stack_rm(&root, &cli, stack, volumes),
        Command::Stack {
            command:
                crate::cli::StackCommand::Bundle {
                    ref file,
                    ref name,
                    ref tag,
                    ref key,
                    ref output,
                },
        } => bundle::bundle_cmd(&mut open()?, &cli, file, name, tag, key.as_deref(), output.as_deref()),
        Command::Stack {
            command:
                crate::cli::StackCommand::Push {
                    ref file,
                    ref name,
                    ref destination,
                    ref key,
                    insecure,
                },
        } => bundle::push_cmd(&mut open()?, &cli, file, name, destination, key.as_deref(), insecure),
        Command::Stack {
            command: crate::cli::StackCommand::Pull { ref source, insecure },
        } => bundle::pull_cmd(&mut open()?, &cli, source, insecure),
        Command::Volume { ref command } => volumes::volume(&open()?, &cli, command),
        Command::Network { ref command } => volumes::network(&open()?, &cli, command),
        Command::Ledger { ref command } => deploy::ledger(&root, &cli, command.as_ref()),
        Command::Events { ref since, ref until } => deploy::events(&root, &cli, since.as_deref(), until.as_deref()),
        Command::Dora {
            ref stack,
            ref since,
            ref fix_window,
        } => deploy::dora(&open()?, &cli, stack.as_deref(), since, fix_window),
        Command::Drift if swarm => swarm::drift(&root, &cli),
        Command::Drift => deploy::drift(&root, &cli),
    }
}

/// `ingot inspect`: containers (by name or id) first, then images, as docker.
fn inspect(store: &Store, cli: &Cli, inputs: &[String]) -> Result<ExitCode> {
    let mut all = Vec::new();
    for input in inputs {
        match store.container(input) {
            Ok(rec) => all.push(containers::inspect_value(store, &rec)?),
            Err(_) => all.push(images::inspect_image(store, input)?),
        }
    }
    if cli.quiet {
        // The id of each: an image's manifest digest, a container's id.
        for v in &all {
            let id = v.get("digest").or_else(|| v.get("id")).and_then(|d| d.as_str());
            println!("{}", id.unwrap_or_default());
        }
        return Ok(ExitCode::SUCCESS);
    }
    match cli.format {
        Format::Json => output::json(&all)?,
        Format::Table => {
            for (i, v) in all.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                if v.get("container").is_some() {
                    containers::print_inspect_table(v);
                } else {
                    images::print_inspect_table(v);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
