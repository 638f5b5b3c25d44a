use super::*;

impl Engine {
    /// Carries out a change; returns (outcome, message).
    pub(super) async fn rollout(
        self: &Arc<Self>,
        stack: &PinnedStack,
        previous: Option<&PinnedStack>,
    ) -> (&'static str, String) {
        // Per service: replicas kept (parked) for a rollback, and new ones started.
        let mut parked: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
        let mut started: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
        let mut failure = None;
        let mut failed_at: Option<Instant> = None;
        // The failure action of the service whose failures stopped the change.
        let mut stopped_by: Option<FailureAction> = None;
        // Failures within max_failure_ratio or under failure_action continue.
        let mut tolerated: Vec<String> = Vec::new();
        // Dependencies first (depends_on): each service's replicas are ready
        // before the services that depend on it start.
        let order = stack.start_order();
        'services: for (name, spec) in order.iter().filter_map(|n| stack.services.get_key_value(n)) {
            let k = key(&stack.name, name);
            // depends_on: a dependency that is not there stops this service
            // as its own failure would (continue: skipped, tolerated).
            if let Some(why) = self.unready_dependency(&stack.name, spec) {
                failure = Some(format!("service {name}: {why}"));
                failed_at.get_or_insert_with(Instant::now);
                if spec.update.failure_action != FailureAction::Continue {
                    stopped_by = Some(spec.update.failure_action);
                    break 'services;
                }
                tolerated.push(failure.take().unwrap_or_default());
                failed_at = None;
                continue 'services;
            }
            let pool = self.pool(&stack.name, name);
            let version = spec.version();
            let mut current = self.with_service(&stack.name, name, |s| {
                s.spec = spec.clone();
                s.held.clear();
                s.restarts = 0;
                s.replicas.clone()
            });
            current.sort_by_key(|r| r.slot);
            let policy: &UpdatePolicy = &spec.update;
            let slots: Vec<u32> = (1..=spec.replicas).collect();
            let needs: Vec<u32> = slots
                .iter()
                .copied()
                .filter(|slot| {
                    !current
                        .iter()
                        .any(|r| r.slot == *slot && r.version == version && r.serving())
                })
                .collect();
            let mut failures = 0u32;
            // A service with nothing running yet is created, not updated
            // (as Swarm): all its replicas start at once, no monitor period.
            let creating = current.is_empty();
            // Parallelism 0 means all at once, as in Swarm.
            let width = if policy.parallelism == 0 || creating {
                needs.len().max(1)
            } else {
                policy.parallelism as usize
            };
            let monitor_ms = if creating { 0 } else { policy.monitor_ms };
            for batch in needs.chunks(width) {
                let mut fresh = Vec::new();
                for &slot in batch {
                    let old: Vec<Replica> = current.iter().filter(|r| r.slot == slot).cloned().collect();
                    if policy.order == Order::StopFirst {
                        for o in &old {
                            if let Some(a) = self.backend(spec, o) {
                                pool.remove(a);
                            }
                        }
                        // Stop-first: the old replica goes now (a rollback restarts it).
                        for o in &old {
                            self.retire(&pool, spec, o).await;
                        }
                        current.retain(|r| r.slot != slot);
                        self.with_service(&stack.name, name, |s| s.replicas.retain(|r| r.slot != slot));
                    }
                    // A stop-first old replica is gone already (and its
                    // address may be the new one's): nothing of it to park
                    // or to take out of the pool later.
                    let old = if policy.order == Order::StopFirst {
                        Vec::new()
                    } else {
                        old
                    };
                    match self.start_replica(&stack.name, name, spec, slot).await {
                        Ok(r) => fresh.push((r, old)),
                        Err(e) => {
                            {
                                failed_at.get_or_insert_with(Instant::now);
                            }
                            failure = Some(format!("service {name}: {e}"));
                            failures += 1;
                        }
                    }
                }
                // Health, then the pool: the new joins before the old leaves.
                let (news, olds): (Vec<Replica>, Vec<Vec<Replica>>) = fresh.into_iter().unzip();
                let results = self.wait_all_healthy(spec, news).await;
                for ((mut r, healthy), old) in results.into_iter().zip(olds) {
                    if healthy {
                        r.mark_healthy();
                        if let Some(a) = self.backend(spec, &r) {
                            pool.add(a);
                        }
                        for o in &old {
                            if let Some(a) = self.backend(spec, o) {
                                pool.remove(a);
                            }
                            let o = o.clone();
                            parked.entry(k.clone()).or_default().push(o);
                        }
                        current.retain(|x| x.slot != r.slot);
                        current.push(r.clone());
                        started.entry(k.clone()).or_default().push(r.clone());
                        self.with_service(&stack.name, name, |s| {
                            s.replicas.retain(|x| x.slot != r.slot);
                            s.replicas.push(r);
                        });
                    } else {
                        failures += 1;
                        {
                            failed_at.get_or_insert_with(Instant::now);
                        }
                        failure = Some(format!(
                            "service {name}: replica {} did not become healthy{}",
                            r.name,
                            if spec.health.is_some() {
                                " (health check failed)"
                            } else {
                                " (exited or port not reachable)"
                            }
                        ));
                        started.entry(k.clone()).or_default().push(r.clone());
                        self.remove_container(r.id.clone(), 0).await;
                    }
                }
                // Monitor: the batch's new replicas must stay up.
                let deadline = Instant::now() + Duration::from_millis(monitor_ms);
                let batch_new: Vec<Replica> = current
                    .iter()
                    .filter(|r| batch.contains(&r.slot) && r.version == version)
                    .cloned()
                    .collect();
                while failure.is_none() && Instant::now() < deadline && !batch_new.is_empty() {
                    for r in &batch_new {
                        if !self.probe(spec, r).await && !self.probe(spec, r).await {
                            failures += 1;
                            {
                                failed_at.get_or_insert_with(Instant::now);
                            }
                            failure = Some(format!(
                                "service {name}: replica {} failed during the monitor period",
                                r.name
                            ));
                        }
                    }
                    if failure.is_some() {
                        break;
                    }
                    tokio::time::sleep(START_PROBE).await;
                }
                if failure.is_some() {
                    // As Swarm: failures up to max_failure_ratio are tolerated;
                    // beyond it the failure action applies (continue goes on).
                    let ratio = failures as f64 / spec.replicas.max(1) as f64;
                    if ratio > policy.max_failure_ratio && policy.failure_action != FailureAction::Continue {
                        stopped_by = Some(policy.failure_action);
                        break 'services;
                    }
                    let why = failure.take().unwrap_or_default();
                    tracing::warn!(service = %k, "{why}; tolerated");
                    tolerated.push(why);
                    failed_at = None;
                }
                if policy.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(policy.delay_ms)).await;
                }
            }
            // Surplus slots (scale down or fewer replicas): out of the pool, parked.
            let surplus: Vec<Replica> = current.iter().filter(|r| r.slot > spec.replicas).cloned().collect();
            for o in surplus {
                if let Some(a) = self.backend(spec, &o) {
                    pool.remove(a);
                }
                let o = o.clone();
                parked.entry(k.clone()).or_default().push(o.clone());
                self.with_service(&stack.name, name, |s| s.replicas.retain(|x| x.id != o.id));
            }
        }

        if let (Some(action), Some(why)) = (stopped_by, failure) {
            if action == FailureAction::Rollback {
                let swapped = self.roll_back(stack, previous, parked, started).await;
                let after = failed_at
                    .map(|t| swapped.saturating_duration_since(t).as_micros())
                    .unwrap_or(0);
                return (
                    ledger::ROLLED_BACK,
                    format!(
                        "{why}; rolled back (old version serving all traffic {:.1} ms after the failure)",
                        after as f64 / 1000.0
                    ),
                );
            }
            // Pause: what started stays, the parked old replicas go.
            self.finish_parked(parked).await;
            return (ledger::PAUSED, format!("{why}; update paused"));
        }
        self.finish_parked(parked).await;
        // Services dropped from the stack, and ports it no longer publishes.
        if let Some(prev) = previous {
            for name in prev.services.keys().filter(|n| !stack.services.contains_key(*n)) {
                self.remove_service(&stack.name, name).await;
            }
        }
        if let Ok(wanted) = self.wanted_listeners(stack) {
            for name in stack.services.keys() {
                let k = key(&stack.name, name);
                let keep: Vec<ports::ListenAt> = wanted.iter().filter(|w| w.service == k).map(|w| w.at).collect();
                self.unbind(&k, &keep);
            }
        }
        if tolerated.is_empty() {
            (ledger::SUCCEEDED, "converged".into())
        } else {
            (
                ledger::SUCCEEDED,
                format!("converged; tolerated: {}", tolerated.join("; ")),
            )
        }
    }

    /// The first of `spec`'s dependencies that its condition does not find
    /// there: service_healthy wants every desired replica serving,
    /// service_started one replica running.
    fn unready_dependency(&self, stack: &str, spec: &PinnedService) -> Option<String> {
        use crate::compose::Condition;
        let services = lock(&self.services);
        for (dep, condition) in &spec.depends_on {
            let Some(s) = services.get(&key(stack, dep)) else {
                return Some(format!("dependency {dep} is not deployed"));
            };
            let desired = s.spec.replicas as usize;
            let serving = s.replicas.iter().filter(|r| r.serving()).count();
            let ok = match condition {
                Condition::ServiceHealthy => serving >= desired,
                Condition::ServiceStarted => desired == 0 || !s.replicas.is_empty(),
            };
            if !ok {
                return Some(format!(
                    "dependency {dep} is not {} ({serving} of {desired} replicas serving)",
                    if *condition == Condition::ServiceHealthy {
                        "healthy"
                    } else {
                        "started"
                    }
                ));
            }
        }
        None
    }

    pub(super) async fn finish_parked(self: &Arc<Self>, parked: BTreeMap<String, Vec<Replica>>) {
        let mut all = Vec::new();
        for (k, olds) in parked {
            let (pool, spec) = {
                let s = lock(&self.services);
                match s.get(&k) {
                    Some(sv) => (sv.pool.clone(), sv.spec.clone()),
                    None => continue,
                }
            };
            all.extend(olds.into_iter().map(|o| (pool.clone(), spec.clone(), o)));
        }
        self.retire_all(all).await;
    }

    /// Retires replicas concurrently (each drains, then stops).
    pub(super) async fn retire_all(self: &Arc<Self>, items: Vec<(Arc<Pool>, PinnedService, Replica)>) {
        let mut set = tokio::task::JoinSet::new();
        for (pool, spec, r) in items {
            let me = self.clone();
            set.spawn(async move { me.retire(&pool, &spec, &r).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// The automatic rollback: parked old replicas back into the pools at
    /// once (one swap per service), then the new replicas leave and stop;
    /// slots whose old replica is gone (stop-first) get one started again.
    pub(super) async fn roll_back(
        self: &Arc<Self>,
        stack: &PinnedStack,
        previous: Option<&PinnedStack>,
        parked: BTreeMap<String, Vec<Replica>>,
        started: BTreeMap<String, Vec<Replica>>,
    ) -> Instant {
        let t = Instant::now();
        let mut swapped = t;
        for name in stack.services.keys() {
            let k = key(&stack.name, name);
            let Some(prev_spec) = previous.and_then(|p| p.services.get(name)) else {
                continue;
            };
            let pool = self.pool(&stack.name, name);
            let olds = parked.get(&k).cloned().unwrap_or_default();
            let new_ids: Vec<String> = started
                .get(&k)
                .map(|v| v.iter().map(|r| r.id.clone()).collect())
                .unwrap_or_default();
            let kept: Vec<Replica> = self.with_service(&stack.name, name, |s| {
                s.replicas
                    .iter()
                    .filter(|r| !new_ids.contains(&r.id))
                    .cloned()
                    .collect()
            });
            let members: Vec<SocketAddr> = kept
                .iter()
                .chain(&olds)
                .filter_map(|r| self.backend(prev_spec, r))
                .collect();
            if !members.is_empty() {
                pool.set(&members);
            }
            let mut restored: Vec<Replica> = kept
                .into_iter()
                .chain(olds.into_iter().map(|mut o| {
                    o.mark_healthy();
                    o
                }))
                .collect();
            self.with_service(&stack.name, name, |s| {
                s.spec = prev_spec.clone();
                s.replicas = restored.clone();
            });
            // Slots left empty (stop-first) get an old-version replica before
            // the new replicas leave, so some replica keeps serving.
            for slot in 1..=prev_spec.replicas {
                if restored.iter().any(|r| r.slot == slot) {
                    continue;
                }
                if let Ok(mut r) = self.start_replica(&stack.name, name, prev_spec, slot).await {
                    if self.wait_healthy(prev_spec, &r).await {
                        r.mark_healthy();
                        if let Some(a) = self.backend(prev_spec, &r) {
                            pool.add(a);
                        }
                        restored.push(r.clone());
                        self.with_service(&stack.name, name, |s| s.replicas.push(r));
                    }
                }
            }
            // The old version now serves all of this service's traffic.
            swapped = Instant::now();
            tracing::info!(service = %k, elapsed_ms = t.elapsed().as_millis() as u64, "old version serving again");
            let leaving = started
                .get(&k)
                .into_iter()
                .flatten()
                .map(|r| (pool.clone(), prev_spec.clone(), r.clone()));
            self.retire_all(leaving.collect()).await;
        }
        // Services the failed change added: gone again.
        for name in stack.services.keys() {
            if previous.is_none_or(|p| !p.services.contains_key(name)) {
                self.remove_service(&stack.name, name).await;
            }
        }
        swapped
    }

    pub(super) async fn remove_service(self: &Arc<Self>, stack: &str, name: &str) {
        let k = key(stack, name);
        let Some(svc) = lock(&self.services).remove(&k) else {
            return;
        };
        self.unbind(&k, &[]);
        let all = svc
            .replicas
            .iter()
            .map(|r| (svc.pool.clone(), svc.spec.clone(), r.clone()))
            .collect();
        self.retire_all(all).await;
    }
}
