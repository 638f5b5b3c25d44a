//! `/metrics`: OpenMetrics text through prometheus-client. Changes are
//! counted and timed as they seal ([`Telemetry`]); the services' replicas,
//! mesh counters and restarts are read at each scrape ([`Snapshot`]).

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ChangeLabels {
    pub kind: String,
    pub outcome: String,
}

type Durations = Family<ChangeLabels, Histogram, fn() -> Histogram>;

/// What the engine counts as it goes.
pub(super) struct Telemetry {
    entries: Family<ChangeLabels, Counter>,
    durations: Durations,
}

fn change_buckets() -> Histogram {
    // 0.1 s to about 7 minutes.
    Histogram::new(exponential_buckets(0.1, 2.0, 13))
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            entries: Family::default(),
            durations: Family::new_with_constructor(change_buckets as fn() -> Histogram),
        }
    }
}

impl Telemetry {
    /// A change sealed with `outcome` after `took`.
    pub(super) fn sealed(&self, kind: &str, outcome: &str, took: Duration) {
        let l = ChangeLabels {
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        };
        self.entries.get_or_create(&l).inc();
        self.durations.get_or_create(&l).observe(took.as_secs_f64());
    }
}

/// One service as a scrape sees it.
#[derive(Debug)]
struct ServiceNow {
    service: String,
    desired: i64,
    healthy: i64,
    requests: u64,
    failures: u64,
    restarts: u64,
    /// The mesh's tally per replica (named, or its address once it is
    /// gone), "mesh" for the answers the mesh made itself.
    tallies: Vec<(String, ingot_mesh::TallyNow)>,
}

/// The services at the moment of a scrape.
#[derive(Debug)]
struct Snapshot(Vec<ServiceNow>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    service: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaClass {
    service: String,
    replica: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceState {
    service: String,
    state: &'static str,
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(0i64).metric_type();
        let counter = ConstCounter::new(0u64).metric_type();
        {
            let mut m =
                encoder.encode_descriptor("ingot_service_replicas", "Replicas per service and state.", None, gauge)?;
            for s in &self.0 {
                for (state, v) in [("desired", s.desired), ("healthy", s.healthy)] {
                    let l = ServiceState {
                        service: s.service.clone(),
                        state,
                    };
                    ConstGauge::new(v).encode(m.encode_family(&l)?)?;
                }
            }
        }
        type Pick = fn(&ServiceNow) -> u64;
        let counters: [(&str, &str, Pick); 3] = [
            (
                "ingot_mesh_requests",
                "Requests and connections the mesh routed.",
                |s| s.requests,
            ),
            (
                "ingot_mesh_failures",
                "Requests and connections the mesh could not route.",
                |s| s.failures,
            ),
            (
                "ingot_service_restarts",
                "Replicas replaced after dying or failing health checks.",
                |s| s.restarts,
            ),
        ];
        for (name, help, pick) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, counter)?;
            for s in &self.0 {
                let l = ServiceLabel {
                    service: s.service.clone(),
                };
                ConstCounter::new(pick(s)).encode(m.encode_family(&l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "ingot_mesh_responses",
                "HTTP responses through the mesh by replica and status class (replica \"mesh\": the mesh's own).",
                None,
                counter,
            )?;
            for s in &self.0 {
                for (replica, t) in &s.tallies {
                    for (class, n) in ingot_mesh::CLASSES.iter().zip(t.classes) {
                        let l = ReplicaClass {
                            service: s.service.clone(),
                            replica: replica.clone(),
                            class,
                        };
                        ConstCounter::new(n).encode(m.encode_family(&l)?)?;
                    }
                }
            }
        }
        let histogram = Histogram::new([1.0]).metric_type();
        let mut m = encoder.encode_descriptor(
            "ingot_mesh_response_seconds",
            "Time from a request's arrival at the mesh to its response's head, by replica.",
            None,
            histogram,
        )?;
        for s in &self.0 {
            for (replica, t) in &s.tallies {
                let l = ReplicaLabel {
                    service: s.service.clone(),
                    replica: replica.clone(),
                };
                let buckets: Vec<(f64, u64)> = ingot_mesh::LATENCY_BOUNDS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(t.buckets)
                    .collect();
                m.encode_family(&l)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(t.sum, t.count(), &buckets, None)?;
            }
        }
        Ok(())
    }
}

impl Engine {
    /// OpenMetrics text exposition.
    pub fn metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let snapshot = Snapshot(
            lock(&self.services)
                .values()
                .map(|sv| ServiceNow {
                    service: key(&sv.stack, &sv.name),
                    desired: sv.spec.replicas.into(),
                    healthy: sv.replicas.iter().filter(|r| r.serving()).count() as i64,
                    requests: sv.pool.requests.load(Relaxed),
                    failures: sv.pool.failures.load(Relaxed),
                    restarts: sv.restarts.into(),
                    tallies: sv
                        .pool
                        .tallies()
                        .into_iter()
                        .map(|(addr, t)| {
                            let name = match addr {
                                None => "mesh".to_string(),
                                Some(a) => sv
                                    .replicas
                                    .iter()
                                    .find(|r| r.address.as_deref() == Some(&a.ip().to_string()))
                                    .map_or_else(|| a.ip().to_string(), |r| r.name.clone()),
                            };
                            (name, t)
                        })
                        .collect(),
                })
                .collect(),
        );
        let mut registry = Registry::default();
        registry.register(
            "ingot_ledger_entries",
            "Ledger entries sealed by this daemon, by kind and outcome.",
            self.telemetry.entries.clone(),
        );
        registry.register(
            "ingot_change_duration_seconds",
            "How long changes took from their entry to its seal, by kind and outcome.",
            self.telemetry.durations.clone(),
        );
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
