use super::*;

impl Engine {
    /// Evaluates the daemon's policy (if any) for every image of `stack`.
    /// A service's bind mounts: each source lexically under a directory
    /// the daemon allows (`--allow-bind`), and the path itself, with no
    /// symlink in it (the runtime mounts it refusing symlinks, so a link
    /// swapped in later cannot lead out). Checked when a change is
    /// prepared and again before every replica starts.
    pub(super) fn check_binds(&self, service: &str, s: &PinnedService) -> Result<()> {
        let roots = lock(&self.bind_roots).clone();
        for (i, m) in s.mounts.iter().enumerate() {
            if m.kind != crate::compose::MountType::Bind {
                continue;
            }
            let field = format!("stack.services.{service}.mounts[{i}].source");
            let path = std::path::Path::new(&m.source);
            if !roots.iter().any(|r| path.starts_with(r)) {
                return Err(DeployError::Field {
                    field,
                    why: format!(
                        "{} is not under a directory the daemon allows bind mounts from (ingot daemon --allow-bind DIR)",
                        m.source
                    ),
                });
            }
            if std::fs::canonicalize(path).ok().as_deref() != Some(path) {
                return Err(DeployError::Field {
                    field,
                    why: format!("{} does not exist or has a symbolic link in it", m.source),
                });
            }
        }
        Ok(())
    }

    /// Bind mounts only from the directories the daemon allows; external
    /// volumes must exist.
    async fn check_mounts(&self, stack: &PinnedStack) -> Result<()> {
        for (name, s) in &stack.services {
            self.check_binds(name, s)?;
        }
        let external: Vec<(String, String)> = stack
            .volumes
            .iter()
            .filter(|(_, v)| v.external)
            .map(|(k, v)| (k.clone(), v.name.clone()))
            .collect();
        self.blocking(move |store| {
            for (key, name) in &external {
                store.volume(name).map_err(|_| DeployError::Field {
                    field: format!("stack.volumes.{key}"),
                    why: format!("external volume {name:?} does not exist (ingot volume create {name})"),
                })?;
            }
            Ok(())
        })
        .await
    }

    /// What every deployed stack reserves, with `stack` as this change
    /// leaves it, must fit the host (`deploy.resources.reservations`).
    fn check_reservations(&self, stack: &PinnedStack) -> Result<()> {
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let host_memory = host_memory();
        let (mut cpus, mut memory) = (0f64, 0u64);
        let mut add = |s: &PinnedService| {
            cpus += s.resources.reserve_cpus.unwrap_or(0.0) * f64::from(s.replicas);
            memory = memory.saturating_add(
                s.resources
                    .reserve_memory
                    .unwrap_or(0)
                    .saturating_mul(u64::from(s.replicas)),
            );
        };
        for (name, s) in &stack.services {
            if s.resources.cpus.is_some_and(|c| c > host_cpus) {
                return Err(DeployError::Field {
                    field: format!("stack.services.{name}.resources.cpus"),
                    why: format!(
                        "a limit of {} CPUs; this host has {host_cpus}",
                        s.resources.cpus.unwrap_or(0.0)
                    ),
                });
            }
        }
        for (name, other) in lock(&self.desired).iter() {
            if *name != stack.name {
                other.services.values().for_each(&mut add);
            }
        }
        stack.services.values().for_each(&mut add);
        let mib = |b: u64| b >> 20;
        if cpus > host_cpus + 1e-9 || host_memory.is_some_and(|h| memory > h) {
            return Err(DeployError::Field {
                field: format!("stack {}: deploy.resources.reservations", stack.name),
                why: format!(
                    "the deployed services would reserve {cpus} CPUs and {} MiB; this host has {host_cpus} CPUs and {} MiB",
                    mib(memory),
                    host_memory.map_or("unknown".to_string(), |h| mib(h).to_string())
                ),
            });
        }
        Ok(())
    }

    pub(super) async fn check_policy(&self, stack: &PinnedStack) -> Result<()> {
        let Some(path) = self.policy.clone() else {
            return Ok(());
        };
        let stack = stack.clone();
        self.blocking(move |store| crate::check_policy(store, &stack, &path))
            .await
    }

    /// Records `change` in the ledger and carries it out in a task of its
    /// own; returns the pending entry as soon as it is recorded (or the
    /// reason nothing was recorded). The change goes on whatever happens to
    /// the caller; [`Engine::wait`] follows it.
    pub async fn submit(self: &Arc<Self>, change: Change, actor: String, reason: Option<String>) -> Result<LedgerRow> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let _g = me.change.lock().await;
            match me.prepare(change, &actor, reason).await {
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(p) => {
                    let _ = tx.send(Ok(p.entry.clone()));
                    me.carry_out(p).await;
                }
            }
        });
        rx.await
            .map_err(|_| DeployError::Daemon("the change ended before it was recorded".into()))?
    }

    /// Waits until ledger entry `seq` is sealed; its outcome and message.
    pub async fn wait(&self, seq: i64) -> Result<ChangeResult> {
        let mut sealed = self.sealed.subscribe();
        loop {
            let row = self
                .blocking(move |s| Ok(s.ledger_row(seq)?))
                .await?
                .ok_or_else(|| DeployError::NotFound(format!("ledger entry {seq} does not exist")))?;
            if row.outcome != ledger::PENDING {
                let message = lock(&self.messages)
                    .get(&seq)
                    .cloned()
                    .unwrap_or_else(|| format!("{} before this daemon started", row.outcome));
                return Ok(ChangeResult {
                    outcome: row.outcome.clone(),
                    entry: row,
                    message,
                });
            }
            let mut closing = self.closing.subscribe();
            tokio::select! {
                r = sealed.changed() => if r.is_err() {
                    return Err(DeployError::Daemon("the daemon is shutting down".into()));
                },
                _ = closing.wait_for(|c| *c) => {
                    return Err(DeployError::Daemon(format!(
                        "the daemon is stopping; the change goes on with the next one (`ingot ledger wait {seq}` follows it)"
                    )));
                }
            }
        }
    }

    /// Deploys `stack` and waits for the outcome.
    pub async fn deploy(
        self: &Arc<Self>,
        stack: PinnedStack,
        actor: &str,
        reason: Option<String>,
    ) -> Result<ChangeResult> {
        let change = Change::Deploy {
            stack,
            secrets: Vec::new(),
        };
        let entry = self.submit(change, actor.to_string(), reason).await?;
        self.wait(entry.seq).await
    }

    /// The stack as the ledger's last sealed entries leave it.
    pub(super) async fn current(&self, stack: &str) -> Result<Option<PinnedStack>> {
        Ok(lock(&self.desired).get(stack).cloned())
    }

    /// Turns a change into the stack it leads to, checks it (store, policy),
    /// binds its ports and writes its configs, and appends the pending
    /// entry. Nothing is recorded or started when this fails.
    pub(super) async fn prepare(
        self: &Arc<Self>,
        change: Change,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Prepared> {
        let mut values = Vec::new();
        let (kind, stack, reason) = match change {
            Change::Deploy { stack, secrets } => {
                let s = stack.clone();
                let sent: Vec<ingot_oci::Digest> = secrets.iter().map(|v| ingot_oci::Digest::sha256(v)).collect();
                self.blocking(move |store| {
                    s.validate(store)?;
                    for (name, sec) in &s.secrets {
                        if !sent.contains(&sec.digest) && store.secret(&sec.digest)?.is_none() {
                            return Err(DeployError::Field {
                                field: format!("stack.secrets.{name}.digest"),
                                why: format!("{} is not a secret value the daemon holds (send the value)", sec.digest),
                            });
                        }
                    }
                    Ok(())
                })
                .await?;
                values = secrets;
                (ledger::DEPLOY, stack, reason)
            }
            Change::Scale { service, replicas } => {
                if replicas > crate::pin::MAX_REPLICAS {
                    return Err(DeployError::Field {
                        field: "replicas".into(),
                        why: format!("{replicas} is more than {}", crate::pin::MAX_REPLICAS),
                    });
                }
                let (stack, name) = self.find(&service)?;
                let mut pinned = self
                    .current(&stack)
                    .await?
                    .ok_or_else(|| DeployError::NotFound(format!("stack {stack} is not deployed")))?;
                let svc = pinned
                    .services
                    .get_mut(&name)
                    .ok_or_else(|| DeployError::NotFound(format!("service {service:?} not found")))?;
                if svc.global {
                    return Err(DeployError::Invalid(format!(
                        "service {service} is global (one replica per node): it cannot be scaled"
                    )));
                }
                svc.replicas = replicas;
                // Scaled: no longer the bundle's application (crate::bundle::check).
                pinned.bundle = None;
                let reason = reason.or(Some(format!("scale {service}={replicas}")));
                (ledger::SCALE, pinned, reason)
            }
            Change::Rollback { service } => {
                let pinned = self.rollback_target(&service).await?;
                (ledger::ROLLBACK, pinned, reason.or(Some(format!("rollback {service}"))))
            }
            Change::Remove { stack } => {
                let pinned = self
                    .current(&stack)
                    .await?
                    .ok_or_else(|| DeployError::NotFound(format!("stack {stack} is not deployed")))?;
                (ledger::RM, pinned, reason.or(Some("stack rm".into())))
            }
        };
        let previous = self.current(&stack.name).await?;
        // Refused now rather than at the append, before anything is staged.
        let s = stack.clone();
        self.blocking(move |store| ledger::check_append(&store.ledger_rows()?, &s))
            .await?;
        if kind != ledger::RM {
            stack.runs_locally()?;
            if let Err(e) = self.check_policy(&stack).await {
                self.events
                    .emit("policy", "refuse", &stack.name, "", "", &e.to_string());
                return Err(e);
            }
            self.check_reservations(&stack)?;
            self.check_mounts(&stack).await?;
            self.check_networks(&stack).await?;
            // Every check passed: only now are secret values kept.
            if !values.is_empty() {
                self.keep_secrets(std::mem::take(&mut values)).await?;
            }
            let fresh: Vec<String> = {
                let have = lock(&self.services);
                stack
                    .services
                    .keys()
                    .filter(|n| !have.contains_key(&key(&stack.name, n)))
                    .cloned()
                    .collect()
            };
            if let Err(e) = self.stage(&stack).await {
                // Nothing was recorded or started: forget the services this attempt added.
                for n in &fresh {
                    let k = key(&stack.name, n);
                    self.unbind(&k, &[]);
                    lock(&self.services).remove(&k);
                }
                return Err(e);
            }
        }
        let (stack_c, actor_c) = (stack.clone(), actor.to_string());
        let entry = self
            .blocking(move |s| ledger::append(s, kind, &stack_c, &actor_c, reason.as_deref()))
            .await?;
        tracing::info!(seq = entry.seq, stack = %stack.name, kind, actor, "change recorded");
        self.events
            .emit("ledger", "append", &stack.name, "", &entry.seq.to_string(), kind);
        Ok(Prepared { entry, stack, previous })
    }

    /// What a change needs before its replicas start: the services known,
    /// the published ports bound, the configs written.
    pub(super) async fn stage(self: &Arc<Self>, stack: &PinnedStack) -> Result<()> {
        for (name, spec) in &stack.services {
            self.ensure_service(&stack.name, name, spec)?;
        }
        self.bind_ports(stack).await?;
        self.ensure_networks(stack).await?;
        let (owner, own): (String, Vec<String>) = (
            stack.name.clone(),
            stack
                .volumes
                .values()
                .filter(|v| !v.external)
                .map(|v| v.name.clone())
                .collect(),
        );
        self.blocking(move |store| {
            for v in &own {
                store.create_volume(v, Some(&owner))?;
            }
            Ok(())
        })
        .await?;
        self.write_configs(stack).await
    }

    /// Carries out a recorded change under its stack's lock and seals its
    /// entry with the outcome, whatever happens (a panic in the rollout
    /// seals it "failed").
    pub(super) async fn carry_out(self: &Arc<Self>, p: Prepared) {
        let began = Instant::now();
        let stack_lock = self.stack_lock(&p.stack.name);
        let _s = stack_lock.lock().await;
        let seq = p.entry.seq;
        let me = self.clone();
        let (entry, stack, previous) = (p.entry.clone(), p.stack, p.previous);
        let work = tokio::spawn(async move {
            if entry.kind == ledger::RM {
                // Every service at once: each drains and stops its replicas.
                let mut set = tokio::task::JoinSet::new();
                for name in stack.services.keys() {
                    let (me, s, n) = (me.clone(), stack.name.clone(), name.clone());
                    set.spawn(async move { me.remove_service(&s, &n).await });
                }
                while set.join_next().await.is_some() {}
                me.remove_networks(&stack.name).await;
                (ledger::SUCCEEDED, format!("stack {} removed", stack.name))
            } else {
                me.rollout(&stack, previous.as_ref()).await
            }
        });
        let (outcome, message) = match work.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(seq, "the change failed: {e}");
                (ledger::FAILED, format!("the change failed inside the daemon: {e}"))
            }
        };
        // The message first: a waiter that sees the sealed row finds it.
        lock(&self.messages).insert(seq, message);
        let e = p.entry.clone();
        match self.blocking(move |s| ledger::finish(s, &e, outcome)).await {
            Ok(row) => {
                tracing::info!(seq, outcome, "change finished");
                self.events
                    .emit("ledger", "seal", &row.stack, "", &seq.to_string(), outcome);
                self.telemetry.sealed(&row.kind, outcome, began.elapsed());
                if ledger::applies(&row) {
                    let mut desired = lock(&self.desired);
                    if row.kind == ledger::RM {
                        desired.remove(&row.stack);
                    } else if let Ok(s) = serde_json::from_str::<PinnedStack>(&row.body) {
                        desired.insert(row.stack.clone(), s);
                    }
                }
            }
            Err(e) => tracing::error!(seq, "cannot seal the entry: {e}"),
        }
        self.sealed.send_replace(seq);
    }

    /// The stack that rolls `service` back to the version before its
    /// current one (its rollback_config as the update policy).
    pub(super) async fn rollback_target(&self, service: &str) -> Result<PinnedStack> {
        let (stack, name) = self.find(service)?;
        let rows = self.blocking(|s| Ok(s.ledger_rows()?)).await?;
        ledger::rollback_target(&rows, &stack, &name, service)
    }
}

/// The host's memory (`MemTotal` of /proc/meminfo), in bytes.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}
