use super::*;

impl Engine {
    /// [`Engine::adopt`], then [`Engine::resume`].
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let adopted = self.adopt().await?;
        self.resume(adopted).await
    }

    /// Adopts the replicas already running, straight into their pools (they
    /// served before the restart; the reconcile tick re-checks them), and
    /// binds the published ports. Quick (no health check waits): the daemon
    /// does it before its socket answers, so a daemon that answers serves
    /// its ports. Holds the change lock until [`Engine::resume`].
    pub async fn adopt(self: &Arc<Self>) -> Result<Adopted> {
        let guard = self.change_owned().await;
        let rows = self.blocking(|s| Ok(s.ledger_rows()?)).await?;
        ledger::verify(&rows)?;
        let pending = rows.last().filter(|r| r.outcome == ledger::PENDING).cloned();
        let settled = &rows[..rows.len() - usize::from(pending.is_some())];
        // Stacks on another engine (Swarm) are not this daemon's to run, nor
        // is a change to one left pending (its own client carries it out).
        let desired = ledger::desired_on(settled, EngineKind::Local)?;
        let pending = match pending {
            Some(p) if ledger::stack_of(&p)?.engine != EngineKind::Local => None,
            p => p,
        };
        *lock(&self.desired) = desired.clone();
        self.load_networks().await?;
        let existing = self.runtime.list().await?;
        let mut strays = Vec::new();
        for (c, n) in existing.iter().filter_map(|c| Some((c, ReplicaName::parse(&c.name)?))) {
            let spec = desired.get(n.stack).and_then(|s| s.services.get(n.service));
            if let Some(spec) = spec {
                self.register_client(n.stack, spec, &c.addresses);
            }
            let Some(spec) = spec else {
                strays.push((c.id.clone(), 10_000));
                continue;
            };
            self.ensure_service(n.stack, n.service, spec)?;
            let fits = c.running && n.version == spec.version() && n.slot <= spec.replicas;
            let taken = self.with_service(n.stack, n.service, |s| s.replicas.iter().any(|r| r.slot == n.slot));
            if !fits || taken {
                strays.push((c.id.clone(), spec.stop_grace_ms));
                continue;
            }
            let r = Replica {
                id: c.id.clone(),
                name: c.name.clone(),
                slot: n.slot,
                version: n.version.to_string(),
                image: spec.digest.to_string(),
                address: c.addresses.first().cloned(),
                addresses: c.addresses.clone(),
                state: TaskState::Running,
                health: HealthState::Healthy,
                failures: 0,
                last_check: None,
            };
            if let Some(a) = self.backend(spec, &r) {
                self.pool(n.stack, n.service).add(a);
            }
            self.with_service(n.stack, n.service, |s| s.replicas.push(r));
        }
        for stack in desired.values() {
            if let Err(e) = self.bind_ports(stack).await {
                tracing::error!(stack = %stack.name, "{e}");
            }
            // After a reboot the bridges are gone; replicas need them.
            if let Err(e) = self.ensure_networks(stack).await {
                tracing::error!(stack = %stack.name, "{e}");
            }
        }
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        self.adopted.send_replace(true);
        tracing::info!("replicas adopted; serving");
        let me = self.clone();
        tokio::spawn(async move {
            for (id, grace) in strays {
                me.remove_container(id, grace).await;
            }
        });
        Ok(Adopted {
            _guard: guard,
            pending,
            desired,
        })
    }

    /// Carries out an entry a dead daemon left pending: converged to it, or
    /// rolled back as any change; then changes may come.
    pub async fn resume(self: &Arc<Self>, adopted: Adopted) -> Result<()> {
        let Adopted {
            _guard,
            pending,
            desired,
        } = adopted;
        if let Some(entry) = pending {
            let stack: PinnedStack = serde_json::from_str(&entry.body).map_err(|e| DeployError::Ledger {
                seq: entry.seq,
                why: format!("its stack does not parse: {e}"),
            })?;
            tracing::warn!(seq = entry.seq, stack = %entry.stack, "carrying out the change a previous daemon left pending");
            let previous = desired.get(&stack.name).cloned();
            if entry.kind != ledger::RM {
                if let Err(e) = self.stage(&stack).await {
                    tracing::error!(seq = entry.seq, "{e}");
                }
            }
            self.carry_out(Prepared { entry, stack, previous }).await;
        }
        Ok(())
    }
}

/// What [`Engine::adopt`] leaves for [`Engine::resume`]: the change lock,
/// held in between, and the entry left pending, if any.
pub struct Adopted {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    pending: Option<LedgerRow>,
    desired: BTreeMap<String, PinnedStack>,
}
