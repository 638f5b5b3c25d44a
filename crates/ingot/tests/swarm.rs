//! `--engine swarm` against a real three-node Docker Swarm on this machine
//! (ingot_testsupport::swarm: three dockerd in network namespaces of their
//! own), pulling from a real `ingot serve` registry. One swarm per test
//! binary run: the scenario is one test, step by step.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ingot_testsupport::swarm::{self, SwarmLab};
use ingot_testsupport::{busybox_root, skip, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// A registry served by `ingot serve` from a root of its own.
struct Registry {
    child: Child,
    _root: Ingot,
}

impl Registry {
    fn start(addr: &str) -> Registry {
        let root = Ingot::new(BIN);
        let child = root
            .command()
            .args(["serve", "--addr", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ingot serve");
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "ingot serve on {addr} did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, _root: root }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stack(api: &str, web: &str) -> String {
    let health = r#"healthcheck: {test: [CMD, /bin/busybox, wget, -q, -O, /dev/null, "http://127.0.0.1:8080/health"], interval: 1s, timeout: 1s, retries: 2, start_period: 1s}"#;
    // web publishes a host port: one task per node, stopped before its
    // successor starts; api has no port: two at a time, start-first.
    let update = "{parallelism: 1, delay: 0s, monitor: 1s, failure_action: rollback, order: stop-first}";
    let api_update = "{parallelism: 2, delay: 0s, monitor: 1s, failure_action: rollback, order: start-first}";
    format!(
        "services:
  api:
    image: {api}
    command: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /www]
    {health}
    stop_grace_period: 1s
    environment: {{ROLE: api}}
    volumes: [data:/data]
    deploy:
      mode: global
      endpoint_mode: dnsrr
      update_config: {api_update}
      rollback_config: {{parallelism: 0, monitor: 1s}}
      restart_policy: {{delay: 5s}}
      placement: {{constraints: [node.platform.os == linux]}}
  web:
    image: {web}
    command: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /www]
    {health}
    stop_grace_period: 1s
    ports: [{{target: 8080, published: 8080, mode: host, host_ip: 0.0.0.0}}]
    depends_on: [api]
    configs: [{{source: motd, target: /etc/motd}}]
    secrets: [token]
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      update_config: {update}
      rollback_config: {{parallelism: 0, monitor: 1s}}
      restart_policy: {{delay: 5s}}
      labels: {{team: web}}
configs:
  motd: {{content: hello from the ledger}}
secrets:
  token: {{file: ./token}}
volumes:
  data: {{}}
"
    )
}

/// GET http://ADDR/PATH with a short timeout; the body, or an error.
fn get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

fn with_host(ingot: &Ingot, host: &str, args: &[&str]) -> std::process::Output {
    ingot
        .command()
        .env("DOCKER_HOST", host)
        .env("INGOT_ENGINE", "swarm")
        .args(args)
        .output()
        .expect("spawn ingot")
}

fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A ledger entry's stack's application digest (ingot_deploy::bundle).
fn application_digest(body: &Value) -> String {
    let stack: ingot_deploy::pin::PinnedStack = serde_json::from_value(body.clone()).unwrap();
    ingot_deploy::bundle::application_digest(&stack).unwrap().to_string()
}

fn ledger(ingot: &Ingot) -> Vec<Value> {
    ingot.json(&["ledger"]).as_array().cloned().unwrap_or_default()
}

/// The image digest each service of stack `s` runs, from the manager.
fn images(lab: &SwarmLab, s: &str) -> Vec<(String, String)> {
    let out = lab
        .docker(
            1,
            &[
                "service",
                "ls",
                "--filter",
                &format!("label=ingot.stack={s}"),
                "--format",
                "{{.Name}} {{.Image}}",
            ],
        )
        .unwrap();
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_string(), i.rsplit('@').next().unwrap_or_default().to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_stack_on_a_three_node_swarm() {
    if let Some(why) = swarm::unavailable() {
        skip("a_stack_on_a_three_node_swarm", &why);
        return;
    }
    let Some(ingot) = busybox_root("a_stack_on_a_three_node_swarm", BIN, "box:1") else {
        return;
    };
    // Three versions of one web server: v3 has no /health (a broken release).
    let mut digests = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let ctx = ingot.path(&format!("ctx-{v}"));
        std::fs::create_dir_all(&ctx).unwrap();
        let mut df = "FROM box:1\nCOPY version /www/version\n".to_string();
        std::fs::write(ctx.join("version"), format!("{v}\n")).unwrap();
        if v != "v3" {
            std::fs::write(ctx.join("health"), "ok\n").unwrap();
            df.push_str("COPY health /www/health\n");
        }
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        let d = ingot.ok(&["build", "-q", "-t", &format!("web:{v}"), ctx.to_str().unwrap()]);
        digests.push(d.trim().to_string());
    }
    let file = ingot.path("stack.yml");
    std::fs::write(ingot.path("token"), "s3cret").unwrap();
    let lab = SwarmLab::start(3);
    let manager = lab.docker_host(1);
    let reg_addr = format!("{}:{}", lab.host_ip(), 5000 + std::process::id() % 1000);
    let _registry = Registry::start(&reg_addr);
    let deploy_to = |host: &str, extra: &[&str]| {
        let mut args = vec!["deploy", "-f", file.to_str().unwrap(), "--name", "shop"];
        args.extend_from_slice(extra);
        with_host(&ingot, host, &args)
    };
    let deploy = |reason: &str| deploy_to(&manager, &["--registry", &reg_addr, "--insecure", "--reason", reason]);
    std::fs::write(&file, stack("web:v1", "web:v1")).unwrap();

    // Bad input first: nothing may reach the ledger or the swarm.
    let refused = |o: std::process::Output, why: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "wanted {why:?}: {err}");
    };
    let to_registry = ["--registry", reg_addr.as_str(), "--insecure"];
    refused(
        deploy_to("unix:///nonexistent/docker.sock", &to_registry),
        "no Docker engine answers",
    );
    refused(deploy_to(&lab.docker_host(2), &to_registry), "worker node");
    // A registry the host can push to but the nodes cannot reach.
    let lo = format!("127.0.0.1:{}", ingot_testsupport::free_port());
    let loopback = Registry::start(&lo);
    refused(deploy_to(&manager, &["--registry", &lo]), "cannot resolve");
    drop(loopback);
    // An image policy that wants signatures: refused before anything moves.
    let key = ingot.path("k");
    ingot.ok(&["key", "generate", "--out", key.to_str().unwrap()]);
    let policy = ingot.write("policy.toml", b"trusted_keys = [\"k.pub\"]\n");
    let mut with_policy = to_registry.to_vec();
    with_policy.extend(["--policy", policy.to_str().unwrap()]);
    refused(deploy_to(&manager, &with_policy), "policy refused web:v1: trusted_keys");
    assert!(ledger(&ingot).is_empty(), "a refused change left a ledger entry");
    assert!(images(&lab, "shop").is_empty(), "a refused change reached the swarm");

    // v1: both services created, in depends_on order; blocks until converged.
    let t0 = Instant::now();
    ok(&deploy("first release"), "deploy v1");
    eprintln!(
        "deploy v1 (create 2 services, 6 tasks): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let entries = ledger(&ingot);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["outcome"], "succeeded");
    let detail: Value = serde_json::from_str(entries[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["services"]["web"]["action"], "created", "{detail}");
    assert_eq!(detail["registry"], reg_addr.as_str());
    for n in 1..=3 {
        assert_eq!(
            get(&format!("{}:8080", lab.node_ip(n)), "/version").unwrap().trim(),
            "v1"
        );
    }
    let services = with_host(&ingot, &manager, &["services", "--format", "json"]);
    let services: Value = serde_json::from_str(&ok(&services, "services")).unwrap();
    let web = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "shop_web")
        .unwrap();
    assert_eq!(
        (web["running"].as_u64(), web["desired"].as_u64()),
        (Some(3), Some(3)),
        "{web}"
    );
    assert_eq!(web["digest"], digests[0].as_str());
    let ps = with_host(&ingot, &manager, &["service", "ps", "shop_web", "--format", "json"]);
    let ps: Value = serde_json::from_str(&ok(&ps, "service ps")).unwrap();
    let running: Vec<&Value> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .collect();
    assert_eq!(running.len(), 3, "{ps}");
    let mut nodes: Vec<&str> = running.iter().map(|t| t["node"].as_str().unwrap()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "one task per node (host port 8080): {ps}");
    assert!(running.iter().all(|t| t["health"] == "healthy"), "{ps}");
    // The config and the secret, inside a task on node 1.
    let id = lab
        .docker(
            1,
            &["ps", "-q", "--filter", "label=com.docker.swarm.service.name=shop_web"],
        )
        .unwrap();
    let id = id.trim();
    assert_eq!(
        lab.docker(1, &["exec", id, "cat", "/etc/motd"]).unwrap(),
        "hello from the ledger"
    );
    assert_eq!(
        lab.docker(1, &["exec", id, "cat", "/run/secrets/token"]).unwrap(),
        "s3cret"
    );
    // api is global: one task on every node, each with the named volume.
    let api = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "shop_api")
        .unwrap();
    assert_eq!(
        (api["mode"].as_str(), api["running"].as_u64()),
        (Some("global"), Some(3)),
        "{api}"
    );
    let vols = lab.docker(2, &["volume", "ls", "-q"]).unwrap();
    assert!(vols.lines().any(|v| v.ends_with("data")), "{vols}");
    // The image's referrers (its SBOM) travelled with it.
    let refs = get(&reg_addr, &format!("/v2/web/referrers/{}", digests[0])).unwrap();
    let refs: Value = serde_json::from_str(&refs).unwrap();
    assert!(!refs["manifests"].as_array().unwrap().is_empty(), "{refs}");

    // v2 of both: rolling updates, each completed before the next service.
    std::fs::write(&file, stack("web:v2", "web:v2")).unwrap();
    let t0 = Instant::now();
    ok(&deploy("second release"), "deploy v2");
    eprintln!(
        "deploy v2 (rolling update of 6 tasks): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    for n in 1..=3 {
        assert_eq!(
            get(&format!("{}:8080", lab.node_ip(n)), "/version").unwrap().trim(),
            "v2"
        );
    }

    // api to v1 (fine), web to v3 (fails its health check): Swarm rolls web
    // back, and ingot rolls api back too: the stack is the previous entry.
    std::fs::write(&file, stack("web:v1", "web:v3")).unwrap();
    let t0 = Instant::now();
    let o = deploy("a broken release");
    eprintln!(
        "failed deploy to whole-stack rollback: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let entries = ledger(&ingot);
    assert_eq!(entries[2]["outcome"], "rolled-back", "{}", entries[2]);
    let detail: Value = serde_json::from_str(entries[2]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["services"]["api"]["action"], "rolled-back", "{detail}");
    assert_eq!(detail["services"]["web"]["state"], "rollback_completed", "{detail}");
    assert_eq!(
        images(&lab, "shop"),
        vec![
            ("shop_api".to_string(), digests[1].clone()),
            ("shop_web".to_string(), digests[1].clone())
        ],
        "every service back on v2"
    );
    for n in 1..=3 {
        assert_eq!(
            get(&format!("{}:8080", lab.node_ip(n)), "/version").unwrap().trim(),
            "v2"
        );
    }

    // Drift: none; then a change outside ingot is found; scale restores it.
    let o = with_host(&ingot, &manager, &["drift"]);
    ok(&o, "drift after rollback");
    lab.docker(1, &["service", "scale", "-d", "shop_web=2"]).unwrap();
    let o = with_host(&ingot, &manager, &["drift", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        d.as_array()
            .unwrap()
            .iter()
            .any(|x| x["service"] == "shop_web" && x["what"] == "replicas" && x["actual"] == "2"),
        "{d}"
    );
    ok(
        &with_host(&ingot, &manager, &["service", "scale", "shop_web=3"]),
        "scale",
    );
    ok(&with_host(&ingot, &manager, &["drift"]), "drift after scale");

    // Rollback of one service: web to the version before v2.
    ok(&with_host(&ingot, &manager, &["rollback", "shop_web"]), "rollback");
    let now = images(&lab, "shop");
    assert_eq!(now[1], ("shop_web".to_string(), digests[0].clone()), "{now:?}");
    ok(&with_host(&ingot, &manager, &["drift"]), "drift after rollback");

    // The ledger verifies; its entries name the swarm engine.
    ingot.ok(&["ledger", "verify"]);
    let entries = ledger(&ingot);
    let outcomes: Vec<&str> = entries.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        ["succeeded", "succeeded", "rolled-back", "succeeded", "succeeded"]
    );
    assert!(entries
        .iter()
        .all(|e| e["body"].as_str().unwrap().contains("\"engine\":\"swarm\"")));

    // stack rm: services, networks and configs gone.
    ok(&with_host(&ingot, &manager, &["stack", "rm", "shop"]), "stack rm");
    assert!(images(&lab, "shop").is_empty());
    let left = lab
        .docker(1, &["network", "ls", "-q", "--filter", "label=ingot.stack=shop"])
        .unwrap();
    assert!(left.trim().is_empty(), "networks left: {left}");
    let left = lab.docker(1, &["config", "ls", "-q"]).unwrap();
    assert!(left.trim().is_empty(), "configs left: {left}");

    // The same stack as a bundle: pushed once, deployed by digest on the
    // swarm; the ledger records the bundle, and the stack is the bundle's
    // application (what the local engine would run, to the byte).
    std::fs::write(&file, stack("web:v2", "web:v2")).unwrap();
    let pushed = ingot.json(&[
        "stack",
        "push",
        "-f",
        file.to_str().unwrap(),
        "--name",
        "shop",
        &format!("{reg_addr}/bundles/shop:1"),
        "--insecure",
    ]);
    let bundle = pushed["digest"].as_str().unwrap().to_string();
    let token = format!("id=token,src={}", ingot.path("token").display());
    let o = with_host(
        &ingot,
        &manager,
        &[
            "deploy",
            &format!("{reg_addr}/bundles/shop@{bundle}"),
            "--secret",
            &token,
            "--registry",
            &reg_addr,
            "--insecure",
        ],
    );
    ok(&o, "deploy the bundle");
    let entry = ledger(&ingot).last().cloned().unwrap();
    let body: Value = serde_json::from_str(entry["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (body["bundle"].as_str(), body["engine"].as_str()),
        (Some(bundle.as_str()), Some("swarm"))
    );
    assert_eq!(application_digest(&body), pushed["application"], "{body}");
    for n in 1..=3 {
        assert_eq!(
            get(&format!("{}:8080", lab.node_ip(n)), "/version").unwrap().trim(),
            "v2"
        );
    }
    ok(&with_host(&ingot, &manager, &["drift"]), "drift after the bundle");
    // Scaled: no longer the bundle's application, recorded without it.
    ok(
        &with_host(&ingot, &manager, &["service", "scale", "shop_web=2"]),
        "scale a bundle's service",
    );
    let entry = ledger(&ingot).last().cloned().unwrap();
    assert!(!entry["body"].as_str().unwrap().contains("\"bundle\""), "{entry}");
    ok(
        &with_host(&ingot, &manager, &["stack", "rm", "shop"]),
        "stack rm of the bundle",
    );

    // A node goes down in the middle of an update: Swarm's update would
    // wait for it to come back; ingot names the node, rolls the stack back
    // (Swarm places the tasks on the nodes left), seals its entry, and
    // what runs is what the ledger says.
    let edge = |image: &str| {
        format!(
            "services:\n  svc:\n    image: {image}\n    command: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /www]\n    stop_grace_period: 1s\n    deploy:\n      replicas: 3\n      update_config: {{parallelism: 1, delay: 1s, monitor: 1s, failure_action: rollback, order: stop-first}}\n"
        )
    };
    let edge_file = ingot.path("edge.yml");
    let deploy_edge = |image: &str| {
        std::fs::write(&edge_file, edge(image)).unwrap();
        let args = [
            "deploy",
            "-f",
            edge_file.to_str().unwrap(),
            "--name",
            "edge",
            "--registry",
            &reg_addr,
            "--insecure",
        ];
        let mut c = ingot.command();
        c.env("DOCKER_HOST", &manager).env("INGOT_ENGINE", "swarm").args(args);
        c
    };
    ok(&deploy_edge("web:v1").output().unwrap(), "deploy edge v1");
    let t0 = Instant::now();
    let update = deploy_edge("web:v2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.kill_node(3);
    let o = update.wait_with_output().unwrap();
    eprintln!(
        "update with a node killed 2 s in: exit {:?} after {:.1} s\n{}",
        o.status.code(),
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stdout)
    );
    let entries = ledger(&ingot);
    let last = entries.last().unwrap();
    assert_ne!(last["outcome"], "pending", "{last}");
    ingot.ok(&["ledger", "verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(last["outcome"], "rolled-back", "{err}");
    assert!(err.contains("went down during the update"), "{err}");
    let now = images(&lab, "edge");
    assert_eq!(now, vec![("edge_svc".to_string(), digests[0].clone())]);
    let running = lab
        .docker(
            1,
            &[
                "service",
                "ps",
                "edge_svc",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
            ],
        )
        .unwrap();
    let on: Vec<&str> = running.lines().filter(|l| l.contains("Running")).collect();
    assert_eq!(on.len(), 3, "{running}");
    assert!(
        on.iter()
            .all(|l| !l.starts_with(&format!("isw{}-n3", std::process::id()))),
        "{running}"
    );
}
