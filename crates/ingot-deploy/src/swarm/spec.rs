//! A pinned service as a Swarm service spec (Engine API 1.41): pure, so
//! the mapping is tested without a swarm. What Swarm cannot honour is
//! refused here, naming the field and why.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, HealthConfig, Limit, Mount as DockerMount, MountType as DockerMountType,
    NetworkAttachmentConfig, ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use ingot_oci::Digest;

use crate::compose::{EndpointMode, FailureAction, MountType, Order, PortMode, RestartCondition, UpdatePolicy};
use crate::pin::PinnedStack;
use crate::{DeployError, Result};

/// Labels ingot writes on every Swarm object it makes.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";
pub const INGOT_STACK: &str = "ingot.stack";
pub const INGOT_SERVICE: &str = "ingot.service";
pub const INGOT_STACK_DIGEST: &str = "ingot.stack-digest";
pub const INGOT_VERSION: &str = "ingot.version";
pub const INGOT_TEMPLATE: &str = "ingot.template";
pub const INGOT_ENTRY: &str = "ingot.ledger-entry";
/// Whether the service has a health check ("true"/"false"): Docker 20.10
/// answers the spec's health check under a key (`Healthcheck`) its own
/// API description spells `HealthCheck`, so a client cannot read it back.
pub const INGOT_HEALTH: &str = "ingot.health-check";

/// `STACK_NAME`, as `docker stack deploy` names its objects.
pub fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// A config's or secret's Swarm name: immutable, so named by its digest.
pub fn object_name(stack: &str, name: &str, digest: &Digest) -> String {
    format!("{stack}_{name}_{}", &digest.hex()[..12])
}

fn ns(ms: u64) -> i64 {
    i64::try_from(ms)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000)
}

fn update_config(p: &UpdatePolicy) -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(p.parallelism.into()),
        delay: Some(ns(p.delay_ms)),
        failure_action: Some(match p.failure_action {
            FailureAction::Rollback => ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK,
            FailureAction::Pause => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
            FailureAction::Continue => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
        }),
        monitor: Some(ns(p.monitor_ms)),
        max_failure_ratio: Some(p.max_failure_ratio),
        order: Some(match p.order {
            Order::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            Order::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
        }),
    }
}

fn rollback_config(p: &UpdatePolicy) -> ServiceSpecRollbackConfig {
    ServiceSpecRollbackConfig {
        parallelism: Some(p.parallelism.into()),
        delay: Some(ns(p.delay_ms)),
        failure_action: Some(match p.failure_action {
            // Swarm's rollback_config knows pause and continue only.
            FailureAction::Rollback | FailureAction::Pause => ServiceSpecRollbackConfigFailureActionEnum::PAUSE,
            FailureAction::Continue => ServiceSpecRollbackConfigFailureActionEnum::CONTINUE,
        }),
        monitor: Some(ns(p.monitor_ms)),
        max_failure_ratio: Some(p.max_failure_ratio),
        order: Some(match p.order {
            Order::StartFirst => ServiceSpecRollbackConfigOrderEnum::START_FIRST,
            Order::StopFirst => ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
        }),
    }
}

/// The spec of service `name` of `stack`; `entry` is the ledger entry it
/// is deployed by, `image` where the nodes pull its image.
pub fn service_spec(stack: &PinnedStack, name: &str, entry: i64, image: &str) -> Result<ServiceSpec> {
    let svc = &stack.services[name];
    let at = |f: &str| format!("services.{name}.{f}");
    let refuse = |f: &str, why: &str| DeployError::Field {
        field: at(f),
        why: format!("{why} (the swarm engine cannot honour it)"),
    };
    let mut ports = Vec::new();
    for (i, p) in svc.ports.iter().enumerate() {
        if !(p.host_ip.is_empty() || p.host_ip == "0.0.0.0") {
            return Err(refuse(
                &format!("ports[{i}]"),
                &format!(
                    "{}: Swarm publishes a port on every address of a node, not on {} (ingot's default is loopback; write host_ip: 0.0.0.0 to publish it on every address)",
                    p.describe(),
                    p.host_ip
                ),
            ));
        }
        ports.push(EndpointPortConfig {
            name: None,
            protocol: Some(if p.protocol.is_tcp() {
                EndpointPortConfigProtocolEnum::TCP
            } else {
                EndpointPortConfigProtocolEnum::UDP
            }),
            target_port: Some(p.target.into()),
            published_port: (p.published != 0).then_some(p.published.into()),
            publish_mode: Some(match p.mode {
                PortMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
                PortMode::Host => EndpointPortConfigPublishModeEnum::HOST,
            }),
        });
    }
    let mut mounts = Vec::new();
    for (i, m) in svc.mounts.iter().enumerate() {
        let typ = match m.kind {
            MountType::Volume => DockerMountType::VOLUME,
            MountType::Tmpfs => DockerMountType::TMPFS,
            MountType::Bind => {
                return Err(refuse(
                    &format!("volumes[{i}]"),
                    &format!(
                        "a bind mount of {} names a path on whichever node runs the task; use a named volume",
                        m.source
                    ),
                ))
            }
        };
        mounts.push(DockerMount {
            target: Some(m.target.clone()),
            source: (m.kind == MountType::Volume).then(|| m.source.clone()),
            typ: Some(typ),
            read_only: Some(m.read_only),
            volume_options: (m.kind == MountType::Volume && m.nocopy).then(|| bollard::models::MountVolumeOptions {
                no_copy: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let health = Some(match &svc.health {
        Some(h) => HealthConfig {
            test: Some(
                std::iter::once("CMD".to_string())
                    .chain(h.test.iter().cloned())
                    .collect(),
            ),
            interval: Some(ns(h.interval_ms)),
            timeout: Some(ns(h.timeout_ms)),
            retries: Some(h.retries.into()),
            start_period: Some(ns(h.start_period_ms)),
            // start_interval needs Engine API 1.44; 1.41 is spoken here.
            start_interval: None,
        },
        // Pinned without one: the image's own must not apply either.
        None => HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        },
    });
    let configs = svc
        .configs
        .iter()
        .map(|c| TaskSpecContainerSpecConfigs {
            file: Some(TaskSpecContainerSpecFile1 {
                name: Some(c.target.clone()),
                uid: Some(c.uid.unwrap_or(0).to_string()),
                gid: Some(c.gid.unwrap_or(0).to_string()),
                mode: Some(c.mode.unwrap_or(0o444)),
            }),
            config_name: Some(object_name(&stack.name, &c.name, &c.digest)),
            config_id: None,
            runtime: None,
        })
        .collect::<Vec<_>>();
    let secrets = svc
        .secrets
        .iter()
        .map(|s| TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(s.target.clone()),
                uid: Some(s.uid.to_string()),
                gid: Some(s.gid.to_string()),
                mode: Some(s.mode),
            }),
            secret_name: Some(object_name(&stack.name, &s.name, &s.digest)),
            secret_id: None,
        })
        .collect::<Vec<_>>();
    let networks = svc
        .network_names()
        .iter()
        .map(|n| {
            let mut aliases = vec![name.to_string()];
            if let Some(sn) = svc.networks.iter().find(|sn| &sn.name == n) {
                aliases.extend(sn.aliases.iter().cloned());
            }
            NetworkAttachmentConfig {
                target: Some(scoped(&stack.name, n)),
                aliases: Some(aliases),
                driver_opts: None,
            }
        })
        .collect::<Vec<_>>();
    let r = &svc.resources;
    let nano = |c: f64| (c * 1e9).round() as i64;
    let resources = TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: r.cpus.map(nano),
            memory_bytes: r.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            pids: r.pids,
        }),
        reservations: Some(ResourceObject {
            nano_cpus: r.reserve_cpus.map(nano),
            memory_bytes: r.reserve_memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            generic_resources: None,
        }),
        ..Default::default()
    };
    let ns_labels = HashMap::from([(STACK_LABEL.to_string(), stack.name.clone())]);
    let task = TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some(image.to_string()),
            labels: Some(ns_labels),
            command: svc.entrypoint.clone(),
            args: svc.command.clone(),
            env: Some(svc.env.clone()),
            dir: svc.workdir.clone(),
            user: svc.user.clone(),
            mounts: Some(mounts),
            stop_grace_period: Some(ns(svc.stop_grace_ms)),
            health_check: health,
            configs: Some(configs),
            secrets: Some(secrets),
            ..Default::default()
        }),
        resources: Some(resources),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(match svc.restart.condition {
                RestartCondition::None => TaskSpecRestartPolicyConditionEnum::NONE,
                RestartCondition::OnFailure => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
                RestartCondition::Any => TaskSpecRestartPolicyConditionEnum::ANY,
            }),
            delay: Some(ns(svc.restart.delay_ms)),
            max_attempts: svc.restart.max_attempts.map(i64::from),
            window: None,
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(svc.placement.constraints.clone()),
            max_replicas: svc.placement.max_replicas_per_node.map(i64::from),
            ..Default::default()
        }),
        networks: Some(networks),
        ..Default::default()
    };
    let endpoint = EndpointSpec {
        mode: Some(match svc.endpoint_mode {
            EndpointMode::Vip => EndpointSpecModeEnum::VIP,
            EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
        }),
        ports: Some(ports),
    };
    // What Swarm replaces tasks for: the task template (but placement,
    // which it checks against the running tasks' nodes) and the endpoint.
    let rolled = serde_json::json!({
        "task": TaskSpec { placement: None, ..task.clone() },
        "endpoint": endpoint,
    });
    let template = ingot_oci::config::canonical_json(&rolled).unwrap_or_default();
    let labels: HashMap<String, String> = svc
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([
            (STACK_LABEL.to_string(), stack.name.clone()),
            (INGOT_STACK.to_string(), stack.name.clone()),
            (INGOT_SERVICE.to_string(), name.to_string()),
            (INGOT_STACK_DIGEST.to_string(), stack.digest()),
            (INGOT_VERSION.to_string(), svc.version()),
            (
                INGOT_TEMPLATE.to_string(),
                Digest::sha256(&template).hex()[..16].to_string(),
            ),
            (INGOT_ENTRY.to_string(), entry.to_string()),
            (INGOT_HEALTH.to_string(), svc.health.is_some().to_string()),
        ])
        .collect();
    Ok(ServiceSpec {
        name: Some(scoped(&stack.name, name)),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(if svc.global {
            ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            }
        } else {
            ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(svc.replicas.into()),
                }),
                ..Default::default()
            }
        }),
        update_config: Some(update_config(&svc.update)),
        rollback_config: Some(rollback_config(&svc.rollback)),
        networks: None,
        endpoint_spec: Some(endpoint),
    })
}

/// Fills in the IDs of the configs and secrets `spec` names (Swarm wants
/// both name and ID); `ids` maps their names to IDs.
pub fn resolve_ids(spec: &mut ServiceSpec, ids: &HashMap<String, String>) {
    let Some(c) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) else {
        return;
    };
    for r in c.configs.iter_mut().flatten() {
        r.config_id = r.config_name.as_ref().and_then(|n| ids.get(n)).cloned();
    }
    for r in c.secrets.iter_mut().flatten() {
        r.secret_id = r.secret_name.as_ref().and_then(|n| ids.get(n)).cloned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(extra: serde_json::Value) -> PinnedStack {
        let policy = serde_json::json!({"parallelism": 1, "delay_ms": 0, "failure_action": "rollback",
            "monitor_ms": 2000, "max_failure_ratio": 0.0, "order": "stop-first"});
        let mut svc = serde_json::json!({
            "image": "reg.example:5000/shop/web:v2",
            "digest": format!("sha256:{}", "ab".repeat(32)),
            "command": ["httpd", "-f"], "entrypoint": null, "env": ["A=1"],
            "ports": [{"host_ip": "0.0.0.0", "published": 8080, "target": 80, "mode": "host"}],
            "health": {"test": ["wget", "-q", "http://127.0.0.1/"], "interval_ms": 1000, "timeout_ms": 500,
                       "retries": 2, "start_period_ms": 0},
            "replicas": 3, "update": policy, "rollback": policy,
            "restart": {"condition": "on-failure", "delay_ms": 5000, "max_attempts": 3},
            "configs": [{"name": "motd", "digest": format!("sha256:{}", "cd".repeat(32)), "target": "/etc/motd"}],
            "user": null, "workdir": null, "stop_grace_ms": 1000,
        });
        for (k, v) in extra.as_object().unwrap() {
            svc[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "name": "shop", "services": {"web": svc},
            "configs": {"motd": {"digest": format!("sha256:{}", "cd".repeat(32)), "content": "hi"}},
        }))
        .unwrap()
    }

    #[test]
    fn a_service_maps_onto_swarm() {
        let s = stack(serde_json::json!({}));
        let spec = service_spec(&s, "web", 7, "reg:5000/shop/web@sha256:ab").unwrap();
        assert_eq!(spec.name.as_deref(), Some("shop_web"));
        let l = spec.labels.as_ref().unwrap();
        assert_eq!(l[STACK_LABEL], "shop");
        assert_eq!(l[INGOT_ENTRY], "7");
        assert_eq!(l[INGOT_VERSION], s.services["web"].version());
        let t = spec.task_template.as_ref().unwrap();
        let c = t.container_spec.as_ref().unwrap();
        assert_eq!(c.args.as_deref(), Some(&["httpd".to_string(), "-f".to_string()][..]));
        assert_eq!(c.command, None, "no entrypoint: the image's");
        let h = c.health_check.as_ref().unwrap();
        assert_eq!(h.test.as_ref().unwrap()[0], "CMD");
        assert_eq!(h.interval, Some(1_000_000_000));
        assert_eq!(c.stop_grace_period, Some(1_000_000_000));
        let cfg = &c.configs.as_ref().unwrap()[0];
        assert_eq!(
            cfg.config_name.as_deref(),
            Some(&*format!("shop_motd_{}", &"cd".repeat(6)))
        );
        assert_eq!(cfg.file.as_ref().unwrap().mode, Some(0o444));
        let mode = spec.mode.as_ref().unwrap();
        assert_eq!(mode.replicated.as_ref().unwrap().replicas, Some(3));
        let u = spec.update_config.as_ref().unwrap();
        assert_eq!(u.monitor, Some(2_000_000_000));
        assert_eq!(
            u.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        let p = &spec.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!((p.published_port, p.target_port), (Some(8080), Some(80)));
        assert_eq!(p.publish_mode, Some(EndpointPortConfigPublishModeEnum::HOST));
        let r = t.restart_policy.as_ref().unwrap();
        assert_eq!(r.condition, Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE));
        assert_eq!(r.max_attempts, Some(3));
        let net = &t.networks.as_ref().unwrap()[0];
        assert_eq!(net.target.as_deref(), Some("shop_default"));

        // Global, no health check: one task per node, the image's check off.
        let g = stack(serde_json::json!({"global": true, "health": null}));
        let spec = service_spec(&g, "web", 1, "x").unwrap();
        assert!(spec.mode.as_ref().unwrap().global.is_some());
        let c = spec.task_template.unwrap().container_spec.unwrap();
        assert_eq!(c.health_check.unwrap().test.unwrap(), ["NONE"]);
    }

    #[test]
    fn what_swarm_cannot_honour_is_refused_by_field() {
        let lo = stack(serde_json::json!({"ports": [{"host_ip": "127.0.0.1", "published": 8080, "target": 80}]}));
        let e = service_spec(&lo, "web", 1, "x").unwrap_err().to_string();
        assert!(
            e.contains("services.web.ports[0]") && e.contains("host_ip: 0.0.0.0"),
            "{e}"
        );
        let bind = stack(
            serde_json::json!({"mounts": [{"type": "bind", "source": "/srv", "target": "/data", "read_only": true}]}),
        );
        let e = service_spec(&bind, "web", 1, "x").unwrap_err().to_string();
        assert!(
            e.contains("services.web.volumes[0]") && e.contains("named volume"),
            "{e}"
        );
    }
}
