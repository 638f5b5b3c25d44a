use super::*;

impl Engine {
    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        out.push_str(
            "# HELP ingot_service_replicas Replicas per service and state.\n# TYPE ingot_service_replicas gauge\n",
        );
        let s = lock(&self.services);
        for sv in s.values() {
            let k = key(&sv.stack, &sv.name);
            let healthy = sv.replicas.iter().filter(|r| r.serving()).count();
            let _ = writeln!(
                out,
                "ingot_service_replicas{{service=\"{k}\",state=\"desired\"}} {}",
                sv.spec.replicas
            );
            let _ = writeln!(
                out,
                "ingot_service_replicas{{service=\"{k}\",state=\"healthy\"}} {healthy}"
            );
        }
        out.push_str("# HELP ingot_mesh_requests_total Requests and connections the mesh routed.\n# TYPE ingot_mesh_requests_total counter\n");
        for sv in s.values() {
            let k = key(&sv.stack, &sv.name);
            let _ = writeln!(
                out,
                "ingot_mesh_requests_total{{service=\"{k}\"}} {}",
                sv.pool.requests.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "ingot_mesh_failures_total{{service=\"{k}\"}} {}",
                sv.pool.failures.load(Relaxed)
            );
        }
        out.push_str("# HELP ingot_service_restarts_total Replicas replaced after dying or failing health checks.\n# TYPE ingot_service_restarts_total counter\n");
        for sv in s.values() {
            let _ = writeln!(
                out,
                "ingot_service_restarts_total{{service=\"{}\"}} {}",
                key(&sv.stack, &sv.name),
                sv.restarts
            );
        }
        out
    }
}
