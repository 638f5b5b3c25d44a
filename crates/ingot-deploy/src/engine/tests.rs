//! Rollout, rollback and reconcile over a fake [`Runtime`], with paused
//! tokio time: every ordering and policy of the engine, in milliseconds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use ingot_oci::Digest;

use super::runtime::{BoxFuture, Existing, Started};
use super::*;
use crate::compose::{Health, Port, RestartPolicy};

#[test]
fn replica_names() {
    let n = ReplicaName::parse("demo.web.2.15bb4f4ac4e2.dd00a2").unwrap();
    assert_eq!(
        (n.stack, n.service, n.slot, n.version),
        ("demo", "web", 2, "15bb4f4ac4e2")
    );
    for other in [
        "a.b.c.d.e",
        "web",
        "demo.web.0.15bb4f4ac4e2.dd00a2",
        "demo.web.1.xyz.dd00a2",
        "my.app.1.15bb4f4ac4e2.dd00a2x",
    ] {
        assert!(ReplicaName::parse(other).is_none(), "{other}");
    }
}

struct FakeContainer {
    name: String,
    digest: String,
    running: bool,
    address: String,
}

#[derive(Default)]
struct FakeState {
    containers: BTreeMap<String, FakeContainer>,
    /// (digest, slot) whose replicas never pass a check; slot 0: every slot.
    sick: BTreeSet<(String, u32)>,
    /// digest -> a short label for events ("v1").
    labels: BTreeMap<String, String>,
    events: Vec<String>,
}

/// Containers in memory: start, check, stop are instant and logged.
#[derive(Default)]
struct Fake {
    next: AtomicU32,
    state: Mutex<FakeState>,
}

impl FakeState {
    fn label(&self, c: &FakeContainer) -> String {
        let n = ReplicaName::parse(&c.name).expect("replica name");
        let l = self.labels.get(&c.digest).cloned().unwrap_or_default();
        format!("{}.{}.{l}", n.service, n.slot)
    }

    fn healthy(&self, c: &FakeContainer) -> bool {
        let slot = ReplicaName::parse(&c.name).map_or(0, |n| n.slot);
        c.running && !self.sick.contains(&(c.digest.clone(), 0)) && !self.sick.contains(&(c.digest.clone(), slot))
    }
}

impl Fake {
    fn events(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.state).events)
    }

    /// Labels of the running containers, sorted.
    fn running(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut v: Vec<String> = st
            .containers
            .values()
            .filter(|c| c.running)
            .map(|c| st.label(c))
            .collect();
        v.sort();
        v
    }

    /// Labels of the containers behind pool members, sorted.
    fn members(&self, pool: &Pool) -> Vec<String> {
        let st = lock(&self.state);
        let mut v: Vec<String> = pool
            .members()
            .iter()
            .filter_map(|a| st.containers.values().find(|c| c.address == a.ip().to_string()))
            .map(|c| st.label(c))
            .collect();
        v.sort();
        v
    }

    fn kill(&self, label: &str) {
        let mut st = lock(&self.state);
        let id = st
            .containers
            .iter()
            .find(|(_, c)| st.label(c) == label)
            .map(|(id, _)| id.clone())
            .expect("container");
        st.containers.get_mut(&id).unwrap().running = false;
    }
}

impl Runtime for Fake {
    fn start<'a>(
        &'a self,
        name: &'a str,
        spec: &'a PinnedService,
        _nets: &'a [ingot_runtime::net::Network],
    ) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            let c = FakeContainer {
                name: name.to_string(),
                digest: spec.digest.to_string(),
                running: true,
                address: format!("10.77.{}.{}", n / 200, n % 200 + 1),
            };
            let mut st = lock(&self.state);
            let e = format!("start {}", st.label(&c));
            st.events.push(e);
            let addresses = vec![c.address.clone()];
            st.containers.insert(format!("c{n}"), c);
            Ok(Started {
                id: format!("c{n}"),
                addresses,
            })
        })
    }

    fn ensure_network(&self, _net: ingot_runtime::net::Network) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn remove_network(&self, _net: ingot_runtime::net::Network) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn is_running<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { lock(&self.state).containers.get(id).is_some_and(|c| c.running) })
    }

    fn exit_code<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move { lock(&self.state).containers.get(id).filter(|c| !c.running).map(|_| 137) })
    }

    fn remove<'a>(&'a self, id: &'a str, _grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut st = lock(&self.state);
            if let Some(c) = st.containers.remove(id) {
                let e = format!("stop {}", st.label(&c));
                st.events.push(e);
            }
        })
    }

    fn check<'a>(&'a self, id: &'a str, _health: &'a Health) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut st = lock(&self.state);
            let Some(c) = st.containers.get(id) else {
                return false;
            };
            let (label, ok) = (st.label(c), st.healthy(c));
            st.events.push(format!("check {label}"));
            ok
        })
    }

    fn reachable(&self, addr: SocketAddr, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let st = lock(&self.state);
            st.containers
                .values()
                .find(|c| c.address == addr.ip().to_string())
                .is_some_and(|c| st.healthy(c))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>>> {
        Box::pin(async move {
            Ok(lock(&self.state)
                .containers
                .iter()
                .map(|(id, c)| Existing {
                    id: id.clone(),
                    name: c.name.clone(),
                    running: c.running,
                    addresses: vec![c.address.clone()],
                })
                .collect())
        })
    }
}

/// A root with images v1, v2, v3 (distinct digests), a fake runtime and a started engine.
struct World {
    dir: tempfile::TempDir,
    fake: Arc<Fake>,
    engine: Arc<Engine>,
    v: Vec<Digest>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let fake = Arc::new(Fake::default());
    let mut v = Vec::new();
    for i in 1..=3u64 {
        let tar = ingot_testsupport::sample_rootfs(2048, i);
        let r: ingot_oci::reference::Reference = format!("img:{i}").parse().unwrap();
        let im = ingot_store::import_rootfs(&mut store, &tar[..], "t.tar", &r, &Default::default()).unwrap();
        let d = im.manifest.digest.clone();
        lock(&fake.state).labels.insert(d.to_string(), format!("v{i}"));
        v.push(d);
    }
    let engine = Engine::with_runtime(dir.path().to_path_buf(), None, fake.clone()).unwrap();
    engine.start().await.unwrap();
    World { dir, fake, engine, v }
}

fn update(order: Order, parallelism: u32, action: FailureAction, ratio: f64) -> UpdatePolicy {
    UpdatePolicy {
        parallelism,
        delay_ms: 0,
        failure_action: action,
        monitor_ms: 300,
        max_failure_ratio: ratio,
        order,
    }
}

fn service(image: &Digest, replicas: u32, port: u16, update: UpdatePolicy) -> PinnedService {
    PinnedService {
        image: "img".into(),
        digest: image.clone(),
        command: None,
        entrypoint: None,
        env: vec![],
        ports: vec![Port {
            host_ip: "127.0.0.1".into(),
            published: port,
            target: 80,
            protocol: Default::default(),
            mode: Default::default(),
            app_protocol: None,
        }],
        health: Some(Health {
            test: vec!["check".into()],
            interval_ms: 1000,
            timeout_ms: 500,
            retries: 1,
            start_period_ms: 0,
            start_interval_ms: None,
        }),
        replicas,
        global: false,
        endpoint_mode: Default::default(),
        expose: vec![],
        rollback: update.clone(),
        update,
        restart: RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 0,
            max_attempts: None,
        },
        configs: vec![],
        secrets: vec![],
        mounts: vec![],
        depends_on: BTreeMap::new(),
        resources: Default::default(),
        labels: BTreeMap::new(),
        placement: Default::default(),
        networks: Vec::new(),
        user: None,
        workdir: None,
        stop_grace_ms: 0,
    }
}

fn stack(services: Vec<(&str, PinnedService)>) -> PinnedStack {
    PinnedStack {
        name: "demo".into(),
        services: services.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
        configs: BTreeMap::new(),
        secrets: BTreeMap::new(),
        volumes: BTreeMap::new(),
        networks: BTreeMap::new(),
        engine: Default::default(),
        bundle: None,
    }
}

async fn deploy(w: &World, s: &PinnedStack) -> ChangeResult {
    w.engine.deploy(s.clone(), "test", None).await.unwrap()
}

fn labels(prefix: &str, version: &str, slots: std::ops::RangeInclusive<u32>) -> Vec<String> {
    slots.map(|s| format!("{prefix}.{s}.{version}")).collect()
}

#[tokio::test(start_paused = true)]
async fn start_first_keeps_the_old_replicas_until_the_change_succeeded() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let r = deploy(&w, &stack(vec![("web", service(&w.v[0], 3, p, u.clone()))])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    let pool = w.engine.pool("demo", "web");
    assert_eq!(w.fake.members(&pool), labels("web", "v1", 1..=3));
    w.fake.events();

    let r = deploy(&w, &stack(vec![("web", service(&w.v[1], 3, p, u))])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    assert_eq!(w.fake.members(&pool), labels("web", "v2", 1..=3));
    assert_eq!(w.fake.running(), labels("web", "v2", 1..=3));
    let ev = w.fake.events();
    // One at a time (parallelism 1), each checked before the next starts;
    // the old ones stop only once every new one serves.
    let starts: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e.starts_with("start"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 3, "{ev:?}");
    assert_eq!(ev[starts[0] + 1], "check web.1.v2", "{ev:?}");
    let first_stop = ev.iter().position(|e| e.starts_with("stop")).unwrap();
    assert!(
        first_stop > starts[2],
        "an old replica stopped before the last new one started: {ev:?}"
    );
    let ps = w.engine.replicas("web").unwrap();
    assert!(ps
        .iter()
        .all(|r| r.state == TaskState::Running && r.health == HealthState::Healthy));
}

#[tokio::test(start_paused = true)]
async fn a_new_service_starts_all_its_replicas_at_once() {
    let w = world().await;
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let t = Instant::now();
    let r = deploy(
        &w,
        &stack(vec![("web", service(&w.v[0], 4, ingot_testsupport::free_port(), u))]),
    )
    .await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    let ev = w.fake.events();
    assert!(ev[..4].iter().all(|e| e.starts_with("start")), "one batch: {ev:?}");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "no monitor period: {:?}",
        t.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn dependencies_start_first_and_are_ready_before_their_dependents() {
    use crate::compose::Condition;
    let w = world().await;
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let mut api = service(&w.v[0], 2, ingot_testsupport::free_port(), u.clone());
    api.depends_on.insert("db".into(), Condition::ServiceHealthy);
    let mut web = service(&w.v[0], 1, ingot_testsupport::free_port(), u.clone());
    web.depends_on.insert("api".into(), Condition::ServiceStarted);
    let db = service(&w.v[0], 1, ingot_testsupport::free_port(), u);
    let s = stack(vec![("api", api), ("web", web), ("db", db)]);
    assert_eq!(s.start_order(), ["db", "api", "web"]);
    let r = deploy(&w, &s).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    let ev = w.fake.events();
    let at = |e: &str| ev.iter().position(|x| x == e).unwrap_or_else(|| panic!("{e}: {ev:?}"));
    // By name, api would start first; db is checked healthy before it does.
    assert!(ev[0].starts_with("start") && ev[0].contains("db"), "{ev:?}");
    assert!(at("check db.1.v1") < at("start api.1.v1"), "{ev:?}");
    assert!(at("check api.2.v1") < at("start web.1.v1"), "{ev:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dependent_does_not_start_while_its_dependency_is_unhealthy() {
    use crate::compose::Condition;
    let w = world().await;
    let go_on = update(Order::StartFirst, 1, FailureAction::Continue, 0.0);
    lock(&w.fake.state).sick.insert((w.v[1].to_string(), 0));
    let db = service(&w.v[1], 1, ingot_testsupport::free_port(), go_on.clone());
    let mut api = service(&w.v[0], 1, ingot_testsupport::free_port(), go_on);
    api.depends_on.insert("db".into(), Condition::ServiceHealthy);
    let r = deploy(&w, &stack(vec![("api", api), ("db", db)])).await;
    assert!(r.message.contains("dependency db is not healthy"), "{}", r.message);
    let ev = w.fake.events();
    assert!(!ev.iter().any(|e| e.starts_with("start api")), "{ev:?}");
}

#[tokio::test(start_paused = true)]
async fn a_global_service_runs_one_replica_and_is_not_scaled() {
    let w = world().await;
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let mut agent = service(&w.v[0], 1, ingot_testsupport::free_port(), u);
    agent.global = true;
    let r = deploy(&w, &stack(vec![("agent", agent)])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    let e = w
        .engine
        .submit(
            Change::Scale {
                service: "agent".into(),
                replicas: 3,
            },
            "test".into(),
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("global"), "{e}");
    assert_eq!(w.fake.running(), labels("agent", "v1", 1..=1));
}

#[tokio::test(start_paused = true)]
async fn start_interval_paces_the_probes_of_a_starting_replica() {
    let w = world().await;
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let mut web = service(&w.v[0], 1, ingot_testsupport::free_port(), u);
    if let Some(h) = web.health.as_mut() {
        h.start_period_ms = 10_000;
        h.start_interval_ms = Some(2_000);
        h.retries = 1;
    }
    lock(&w.fake.state).sick.insert((w.v[0].to_string(), 0));
    let engine = w.engine.clone();
    let s = stack(vec![("web", web)]);
    let change = tokio::spawn(async move { engine.deploy(s, "test", None).await });
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let checks = w.fake.events().iter().filter(|e| e.starts_with("check")).count();
    // Every 2 s over 5 s: 3 probes (0, 2, 4 s), not 50 at the default 100 ms.
    assert!((2..=4).contains(&checks), "{checks} probes in 5 s");
    lock(&w.fake.state).sick.clear();
    let r = change.await.unwrap().unwrap();
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
}

#[tokio::test(start_paused = true)]
async fn stop_first_stops_each_old_replica_before_its_successor_starts() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StopFirst, 1, FailureAction::Rollback, 0.0);
    deploy(&w, &stack(vec![("web", service(&w.v[0], 2, p, u.clone()))])).await;
    w.fake.events();
    let r = deploy(&w, &stack(vec![("web", service(&w.v[1], 2, p, u))])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    let ev: Vec<String> = w
        .fake
        .events()
        .into_iter()
        .filter(|e| !e.starts_with("check"))
        .collect();
    assert_eq!(
        ev,
        ["stop web.1.v1", "start web.1.v2", "stop web.2.v1", "start web.2.v2"]
    );
}

#[tokio::test(start_paused = true)]
async fn parallelism_sets_the_batch_width() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StartFirst, 2, FailureAction::Rollback, 0.0);
    deploy(&w, &stack(vec![("web", service(&w.v[0], 4, p, u.clone()))])).await;
    w.fake.events();
    deploy(&w, &stack(vec![("web", service(&w.v[1], 4, p, u))])).await;
    let ev: Vec<String> = w.fake.events().into_iter().filter(|e| !e.starts_with("stop")).collect();
    // Two starts, then their checks (in any order), then the next two.
    assert!(ev[0].starts_with("start") && ev[1].starts_with("start"), "{ev:?}");
    assert!(ev[2].starts_with("check") && ev[3].starts_with("check"), "{ev:?}");
    let third = ev.iter().filter(|e| e.starts_with("start")).nth(2).unwrap();
    let pos = ev.iter().position(|e| e == third).unwrap();
    assert!(
        pos >= 4,
        "the second batch started before the first was checked: {ev:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_update_rolls_back_by_swapping_the_pool() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    deploy(&w, &stack(vec![("web", service(&w.v[0], 3, p, u.clone()))])).await;
    let before = w.fake.running();
    lock(&w.fake.state).sick.insert((w.v[1].to_string(), 0));
    w.fake.events();
    let r = deploy(&w, &stack(vec![("web", service(&w.v[1], 3, p, u))])).await;
    assert_eq!(r.outcome, ledger::ROLLED_BACK, "{}", r.message);
    let pool = w.engine.pool("demo", "web");
    assert_eq!(w.fake.members(&pool), labels("web", "v1", 1..=3));
    assert_eq!(
        w.fake.running(),
        before,
        "the old replicas kept running, no new v1 started"
    );
    assert!(!w
        .fake
        .events()
        .iter()
        .any(|e| e.starts_with("start") && e.ends_with("v1")));
    // The ledger's desired state is v1 again: a rolled-back entry does not apply.
    assert_eq!(
        w.engine.current("demo").await.unwrap().unwrap().services["web"].digest,
        w.v[0]
    );
}

#[tokio::test(start_paused = true)]
async fn pause_and_continue() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let pause = update(Order::StartFirst, 1, FailureAction::Pause, 0.0);
    deploy(&w, &stack(vec![("web", service(&w.v[0], 3, p, pause.clone()))])).await;
    lock(&w.fake.state).sick.insert((w.v[1].to_string(), 2));
    let r = deploy(&w, &stack(vec![("web", service(&w.v[1], 3, p, pause))])).await;
    assert_eq!(r.outcome, ledger::PAUSED, "{}", r.message);
    let pool = w.engine.pool("demo", "web");
    // Slot 1 updated, slot 2 failed (its old replica still serves), slot 3 not reached.
    assert_eq!(w.fake.members(&pool), ["web.1.v2", "web.2.v1", "web.3.v1"]);

    let cont = update(Order::StartFirst, 1, FailureAction::Continue, 0.0);
    lock(&w.fake.state).sick.insert((w.v[2].to_string(), 2));
    let r = deploy(&w, &stack(vec![("web", service(&w.v[2], 3, p, cont))])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    assert!(r.message.contains("tolerated"), "{}", r.message);
    let m = w.fake.members(&pool);
    assert!(
        m.contains(&"web.1.v3".to_string()) && m.contains(&"web.3.v3".to_string()),
        "{m:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_failure_ratio_tolerates_up_to_its_share() {
    for (ratio, outcome) in [(0.25, ledger::SUCCEEDED), (0.2, ledger::ROLLED_BACK)] {
        let w = world().await;
        let p = ingot_testsupport::free_port();
        let u = update(Order::StartFirst, 1, FailureAction::Rollback, ratio);
        deploy(&w, &stack(vec![("web", service(&w.v[0], 4, p, u.clone()))])).await;
        lock(&w.fake.state).sick.insert((w.v[1].to_string(), 2));
        let r = deploy(&w, &stack(vec![("web", service(&w.v[1], 4, p, u))])).await;
        assert_eq!(r.outcome, outcome, "ratio {ratio}: {}", r.message);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stack_rolls_back_as_a_whole() {
    let w = world().await;
    let (pa, pw) = (ingot_testsupport::free_port(), ingot_testsupport::free_port());
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let v1 = stack(vec![
        ("api", service(&w.v[0], 2, pa, u.clone())),
        ("web", service(&w.v[0], 2, pw, u.clone())),
    ]);
    deploy(&w, &v1).await;
    lock(&w.fake.state).sick.insert((w.v[1].to_string(), 0));
    // api moves to v3 (healthy) first, web to v2 (never healthy): both end on v1.
    let bad = stack(vec![
        ("api", service(&w.v[2], 2, pa, u.clone())),
        ("web", service(&w.v[1], 2, pw, u)),
    ]);
    let r = deploy(&w, &bad).await;
    assert_eq!(r.outcome, ledger::ROLLED_BACK, "{}", r.message);
    assert_eq!(
        w.fake.members(&w.engine.pool("demo", "api")),
        labels("api", "v1", 1..=2)
    );
    assert_eq!(
        w.fake.members(&w.engine.pool("demo", "web")),
        labels("web", "v1", 1..=2)
    );
    let mut want = labels("api", "v1", 1..=2);
    want.extend(labels("web", "v1", 1..=2));
    assert_eq!(w.fake.running(), want);
}

/// Ticks until `f` holds (at most 100 ticks of paused time).
async fn tick_until(w: &World, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        w.engine.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not reached: running {:?}", w.fake.running());
}

#[tokio::test(start_paused = true)]
async fn reconcile_replaces_a_dead_replica_unless_the_restart_policy_holds_it() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    deploy(&w, &stack(vec![("web", service(&w.v[0], 2, p, u.clone()))])).await;
    let pool = w.engine.pool("demo", "web");
    w.fake.kill("web.1.v1");
    w.fake.events();
    tick_until(&w, || {
        w.fake.members(&pool) == labels("web", "v1", 1..=2) && w.fake.running().len() == 2
    })
    .await;
    let ev = w.fake.events();
    assert!(
        ev.contains(&"stop web.1.v1".into()) && ev.contains(&"start web.1.v1".into()),
        "{ev:?}"
    );

    let mut held = service(&w.v[0], 2, p, u);
    held.restart.condition = RestartCondition::None;
    deploy(&w, &stack(vec![("web", held)])).await;
    w.fake.kill("web.2.v1");
    tick_until(&w, || w.fake.running() == ["web.1.v1"]).await;
    for _ in 0..10 {
        w.engine.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(w.fake.running(), ["web.1.v1"], "condition none: the slot stays empty");
    assert_eq!(w.fake.members(&pool), ["web.1.v1"]);
}

#[tokio::test(start_paused = true)]
async fn a_change_left_pending_by_a_dead_daemon_is_carried_out_on_restart() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    deploy(&w, &stack(vec![("web", service(&w.v[0], 2, p, u.clone()))])).await;
    // The daemon "dies" after recording v2 and before carrying it out.
    let v2 = stack(vec![("web", service(&w.v[1], 2, p, u))]);
    let entry = {
        let mut store = Store::open(w.dir.path()).unwrap();
        ledger::append(&mut store, ledger::DEPLOY, &v2, "test", None).unwrap()
    };
    w.engine.shutdown();
    let engine = Engine::with_runtime(w.dir.path().to_path_buf(), None, w.fake.clone()).unwrap();
    engine.start().await.unwrap();
    let r = engine.wait(entry.seq).await.unwrap();
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    assert_eq!(w.fake.members(&engine.pool("demo", "web")), labels("web", "v2", 1..=2));
    assert_eq!(w.fake.running(), labels("web", "v2", 1..=2));
    let rows = Store::open(w.dir.path()).unwrap().ledger_rows().unwrap();
    ledger::verify(&rows).unwrap();
    assert!(rows.iter().all(|r| r.outcome != ledger::PENDING));
}

#[tokio::test(start_paused = true)]
async fn a_change_of_one_stack_does_not_stall_another_stacks_reconcile() {
    let w = world().await;
    let (pa, pb) = (ingot_testsupport::free_port(), ingot_testsupport::free_port());
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let mut a = stack(vec![("web", service(&w.v[0], 1, pa, u.clone()))]);
    deploy(&w, &a).await;
    let mut b = stack(vec![("api", service(&w.v[0], 1, pb, u.clone()))]);
    b.name = "other".into();
    deploy(&w, &b).await;
    // A slow change of stack demo (a 30 s monitor period) ...
    a.services.get_mut("web").unwrap().digest = w.v[1].clone();
    a.services.get_mut("web").unwrap().update.monitor_ms = 30_000;
    let entry = w
        .engine
        .submit(
            Change::Deploy {
                stack: a,
                secrets: Vec::new(),
            },
            "test".into(),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ... while stack other's replica dies: replaced well before the change ends.
    w.fake.kill("api.1.v1");
    tick_until(&w, || {
        w.fake.running().iter().filter(|l| l.starts_with("api")).count() == 1
    })
    .await;
    let pending = Store::open(w.dir.path()).unwrap().ledger_rows().unwrap();
    assert_eq!(
        pending.last().unwrap().outcome,
        ledger::PENDING,
        "the slow change is still going"
    );
    let r = w.engine.wait(entry.seq).await.unwrap();
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
}

#[tokio::test(start_paused = true)]
async fn a_port_whose_app_protocol_changes_is_served_in_the_new_http_version() {
    let w = world().await;
    let p = ingot_testsupport::free_port();
    let u = update(Order::StartFirst, 1, FailureAction::Rollback, 0.0);
    let upstream = |w: &World| -> Vec<ingot_mesh::Upstream> {
        lock(&w.engine.listeners)
            .iter()
            .filter(|((_, a), _)| a.port() == p)
            .map(|(_, (_, l))| l.upstream())
            .collect()
    };
    let r = deploy(&w, &stack(vec![("web", service(&w.v[0], 1, p, u.clone()))])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    assert_eq!(upstream(&w), [ingot_mesh::Upstream::Http1]);

    let mut h2 = service(&w.v[0], 1, p, u.clone());
    h2.ports[0].app_protocol = Some("grpc".into());
    let r = deploy(&w, &stack(vec![("web", h2)])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    // One listener on the port, the new one.
    assert_eq!(upstream(&w), [ingot_mesh::Upstream::H2c]);
    tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .expect("the port is still served");

    let r = deploy(&w, &stack(vec![("web", service(&w.v[0], 1, p, u))])).await;
    assert_eq!(r.outcome, ledger::SUCCEEDED, "{}", r.message);
    assert_eq!(upstream(&w), [ingot_mesh::Upstream::Http1]);
}
