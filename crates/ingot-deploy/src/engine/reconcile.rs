use super::*;

impl Engine {
    /// One reconcile pass per stack whose lock is free (a stack with a
    /// change in progress is skipped; the others go on), each in a task of
    /// its own.
    pub fn tick(self: &Arc<Self>) {
        if !self.ready.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let stacks: std::collections::BTreeSet<String> =
            lock(&self.services).values().map(|s| s.stack.clone()).collect();
        for stack in stacks {
            let Ok(guard) = self.stack_lock(&stack).try_lock_owned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.reconcile_stack(&stack).await;
                drop(guard);
            });
        }
    }

    /// Every replica of the stack's services checked at once (liveness; a
    /// due health check, each on its own interval and timeout); failed ones
    /// replaced per restart policy, counts restored.
    pub(super) async fn reconcile_stack(self: &Arc<Self>, stack: &str) {
        let keys: Vec<String> = lock(&self.services)
            .iter()
            .filter(|(_, s)| s.stack == stack)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let Some((name, spec, pool, replicas)) = lock(&self.services)
                .get(&k)
                .map(|s| (s.name.clone(), s.spec.clone(), s.pool.clone(), s.replicas.clone()))
            else {
                continue;
            };
            let mut checks = tokio::task::JoinSet::new();
            for r in replicas {
                let me = self.clone();
                let spec = spec.clone();
                checks.spawn(async move { me.check_replica(&spec, r).await });
            }
            let mut keep = Vec::new();
            let mut failed = Vec::new();
            while let Some(done) = checks.join_next().await {
                match done {
                    Ok((r, true)) => keep.push(r),
                    Ok((r, false)) => failed.push(r),
                    Err(e) => tracing::error!(service = %k, "replica check: {e}"),
                }
            }
            for r in failed {
                let exit = self.exit_code(&r.id).await;
                tracing::warn!(replica = %r.name, ?exit, "replica failed; replacing");
                if let Some(a) = self.backend(&spec, &r) {
                    pool.remove(a);
                }
                self.remove_container(r.id.clone(), spec.stop_grace_ms).await;
                let restarts = self.with_service(stack, &name, |s| s.restarts);
                let replace = match spec.restart.condition {
                    RestartCondition::Any => true,
                    RestartCondition::OnFailure => exit != Some(0),
                    RestartCondition::None => false,
                } && spec.restart.max_attempts.is_none_or(|m| restarts < m);
                if !replace {
                    self.with_service(stack, &name, |s| s.held.insert(r.slot));
                    continue;
                }
                self.with_service(stack, &name, |s| s.restarts += 1);
                if spec.restart.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(spec.restart.delay_ms)).await;
                }
            }
            // Fill empty slots (but those the restart policy holds), drop surplus.
            let held = self.with_service(stack, &name, |s| s.held.clone());
            let mut starting = Vec::new();
            for slot in 1..=spec.replicas {
                if keep.iter().any(|r| r.slot == slot) || held.contains(&slot) {
                    continue;
                }
                match self.start_replica(stack, &name, &spec, slot).await {
                    Ok(r) => starting.push(r),
                    Err(e) => tracing::warn!(service = %k, slot, "{e}"),
                }
            }
            for (mut r, healthy) in self.wait_all_healthy(&spec, starting).await {
                if healthy {
                    r.mark_healthy();
                    if let Some(a) = self.backend(&spec, &r) {
                        pool.add(a);
                    }
                    keep.push(r);
                } else {
                    self.remove_container(r.id.clone(), 0).await;
                }
            }
            let (stay, surplus): (Vec<Replica>, Vec<Replica>) = keep.into_iter().partition(|r| r.slot <= spec.replicas);
            for r in &surplus {
                self.retire(&pool, &spec, r).await;
            }
            self.with_service(stack, &name, |s| s.replicas = stay);
        }
    }

    /// Whether a serving replica still runs and, when its health check is
    /// due, passes it (`retries` failures in a row make it unhealthy).
    pub(super) async fn check_replica(&self, spec: &PinnedService, mut r: Replica) -> (Replica, bool) {
        if !self.is_running(&r.id).await {
            r.state = TaskState::Failed;
            self.replica_event("die", &r.name, "");
            return (r, false);
        }
        let Some(h) = spec.health.as_ref().filter(|_| r.serving()) else {
            return (r, true);
        };
        let due = r
            .last_check
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(h.interval_ms));
        if !due {
            return (r, true);
        }
        r.last_check = Some(Instant::now());
        if self.runtime.check(&r.id, h).await {
            r.failures = 0;
            return (r, true);
        }
        r.failures += 1;
        if r.failures >= h.retries {
            r.health = HealthState::Unhealthy;
            r.state = TaskState::Failed;
            self.replica_event("unhealthy", &r.name, &format!("{} checks failed in a row", r.failures));
            return (r, false);
        }
        (r, true)
    }
}
