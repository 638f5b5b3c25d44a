//! Drift: what runs, against what the ledger says should run.

use std::collections::BTreeMap;

use ingot_store::{ContainerState, Store};
use serde::Serialize;

use crate::{ledger, Result};

/// One difference between the desired state and the running replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `STACK_SERVICE`
    pub service: String,
    pub what: String,
    pub desired: String,
    pub actual: String,
}

/// Every difference between this host's replicas and the ledger's stacks
/// on the local engine; empty when they match.
pub fn drift(store: &Store) -> Result<Vec<Difference>> {
    let rows = store.ledger_rows()?;
    ledger::verify(&rows)?;
    let desired = ledger::desired_on(&rows, crate::pin::EngineKind::Local)?;
    // (stack, service) -> running replicas' (slot, version, image)
    type Running = Vec<(String, String, String)>;
    let mut running: BTreeMap<(String, String), Running> = BTreeMap::new();
    for c in store.containers()? {
        let Some(n) = crate::engine::ReplicaName::parse(&c.name) else {
            continue;
        };
        if c.state != ContainerState::Running {
            continue;
        }
        running
            .entry((n.stack.to_string(), n.service.to_string()))
            .or_default()
            .push((n.slot.to_string(), n.version.to_string(), c.image.to_string()));
    }
    let mut out = Vec::new();
    for (stack, pinned) in &desired {
        for (name, spec) in &pinned.services {
            let svc = format!("{stack}_{name}");
            let have = running.remove(&(stack.clone(), name.clone())).unwrap_or_default();
            if have.len() != spec.replicas as usize {
                out.push(Difference {
                    service: svc.clone(),
                    what: "replicas".into(),
                    desired: spec.replicas.to_string(),
                    actual: have.len().to_string(),
                });
            }
            let version = spec.version();
            for (slot, v, image) in &have {
                if *image != spec.digest.to_string() {
                    out.push(Difference {
                        service: svc.clone(),
                        what: format!("replica {slot} image"),
                        desired: spec.digest.to_string(),
                        actual: image.clone(),
                    });
                } else if v != &version {
                    out.push(Difference {
                        service: svc.clone(),
                        what: format!("replica {slot} version (command, environment, configs or health check)"),
                        desired: version.clone(),
                        actual: v.clone(),
                    });
                }
            }
        }
    }
    for ((stack, name), have) in running {
        out.push(Difference {
            service: format!("{stack}_{name}"),
            what: "replicas".into(),
            desired: "0 (not in the ledger)".into(),
            actual: have.len().to_string(),
        });
    }
    Ok(out)
}
