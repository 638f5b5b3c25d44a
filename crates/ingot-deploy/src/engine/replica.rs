use super::*;

impl Engine {
    /// Starts one replica of `spec` in `slot` (not yet healthy, not in the pool).
    pub(super) async fn start_replica(
        &self,
        stack: &str,
        name: &str,
        spec: &PinnedService,
        slot: u32,
    ) -> Result<Replica> {
        // The daemon may have been restarted with other --allow-bind dirs.
        self.check_binds(name, spec)?;
        let version = spec.version();
        let cname = format!("{stack}.{name}.{slot}.{version}.{}", random6());
        let nets = self.replica_networks(stack, spec)?;
        let started = self.runtime.start(&cname, spec, &nets).await?;
        // Its stack's names resolve for it from now on (crate::dns).
        self.register_client(stack, spec, &started.addresses);
        tracing::info!(replica = %cname, "started");
        self.replica_event("start", &cname, &spec.digest.to_string());
        Ok(Replica {
            id: started.id,
            name: cname,
            slot,
            version,
            image: spec.digest.to_string(),
            address: started.addresses.first().cloned(),
            addresses: started.addresses,
            state: TaskState::Starting,
            health: HealthState::Starting,
            failures: 0,
            last_check: None,
        })
    }

    /// Lets the replica at `addresses` ask for its stack's names.
    pub(super) fn register_client(&self, stack: &str, spec: &PinnedService, addresses: &[String]) {
        let client = Client {
            stack: stack.to_string(),
            networks: spec
                .network_names()
                .iter()
                .map(|n| networks::key_name(stack, n))
                .collect(),
        };
        let mut clients = lock(&self.clients);
        for a in addresses {
            clients.insert(a.clone(), client.clone());
        }
    }

    pub(super) async fn is_running(&self, id: &str) -> bool {
        self.runtime.is_running(id).await
    }

    /// One probe: the health check, else TCP readiness, else running.
    pub(super) async fn probe(&self, spec: &PinnedService, r: &Replica) -> bool {
        if !self.is_running(&r.id).await {
            return false;
        }
        if let Some(h) = &spec.health {
            return self.runtime.check(&r.id, h).await;
        }
        // TCP readiness on a published port only: an image's EXPOSE is a
        // hint, not a promise that the replica listens there.
        let published = spec
            .ports
            .iter()
            .find(|p| p.protocol.is_tcp())
            .and_then(|p| format!("{}:{}", r.address.as_deref()?, p.target).parse().ok());
        match published {
            Some(a) => self.runtime.reachable(a, Duration::from_millis(500)).await,
            None => true,
        }
    }

    /// Waits until a new replica is healthy; false if it exits or fails
    /// its check `retries` times after the start period.
    pub(super) async fn wait_healthy(&self, spec: &PinnedService, r: &Replica) -> bool {
        let started = Instant::now();
        let mut failures = 0;
        let (start_period, retries, deadline) = match &spec.health {
            Some(h) => (
                Duration::from_millis(h.start_period_ms),
                h.retries,
                Duration::from_millis(h.start_period_ms + (h.retries as u64 + 1) * (h.timeout_ms + 100)),
            ),
            None => (Duration::ZERO, u32::MAX, READY_TIMEOUT),
        };
        loop {
            if !self.is_running(&r.id).await {
                return false;
            }
            if self.probe(spec, r).await {
                return true;
            }
            if started.elapsed() >= start_period {
                failures += 1;
                if failures >= retries {
                    return false;
                }
            }
            if started.elapsed() > deadline.max(READY_TIMEOUT) {
                return false;
            }
            // healthcheck.start_interval paces probes during the start period.
            let pause = match spec.health.as_ref().and_then(|h| h.start_interval_ms) {
                Some(ms) if started.elapsed() < start_period => Duration::from_millis(ms),
                _ => START_PROBE,
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits for new replicas' health all at once; each with its verdict.
    pub(super) async fn wait_all_healthy(
        self: &Arc<Self>,
        spec: &PinnedService,
        replicas: Vec<Replica>,
    ) -> Vec<(Replica, bool)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in replicas.into_iter().enumerate() {
            let me = self.clone();
            let spec = spec.clone();
            set.spawn(async move {
                let ok = me.wait_healthy(&spec, &r).await;
                me.replica_event(if ok { "healthy" } else { "unhealthy" }, &r.name, "");
                (i, r, ok)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok(x) = done {
                out.push(x);
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, r, ok)| (r, ok)).collect()
    }

    pub(super) async fn remove_container(&self, id: String, grace_ms: u64) {
        self.runtime.remove(&id, Duration::from_millis(grace_ms)).await;
    }

    /// Takes a replica out of its pool, lets it drain, stops and removes it.
    pub(super) async fn retire(&self, pool: &Pool, spec: &PinnedService, r: &Replica) {
        if let Some(a) = self.backend(spec, r) {
            pool.remove(a);
            pool.drain(a, DRAIN_TIMEOUT).await;
        }
        self.remove_container(r.id.clone(), spec.stop_grace_ms).await;
        tracing::info!(replica = %r.name, "stopped");
        self.replica_event("stop", &r.name, "");
    }

    /// Writes the stack's configs where replicas mount them from.
    pub(super) async fn write_configs(&self, stack: &PinnedStack) -> Result<()> {
        let dir = self.root.join("configs");
        let configs = stack.configs.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&dir).map_err(|e| DeployError::Daemon(format!("{}: {e}", dir.display())))?;
            for c in configs.values() {
                let path = dir.join(c.digest.hex());
                if path.exists() {
                    continue;
                }
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &c.content)
                    .and_then(|_| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
                    })
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| DeployError::Daemon(format!("{}: {e}", path.display())))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| DeployError::Daemon(e.to_string()))?
    }

    pub(super) async fn exit_code(&self, id: &str) -> Option<i64> {
        self.runtime.exit_code(id).await
    }
}
