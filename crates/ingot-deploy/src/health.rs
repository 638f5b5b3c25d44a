//! Health and readiness probes of one replica.
//!
//! A health check's command runs inside the replica as `ingot exec` runs
//! it: the replica's namespaces, root, cgroup, user, capabilities,
//! no_new_privs and seccomp filter (so a hostile image's check is as
//! confined as the image itself), with the check's timeout. A replica without a health check
//! that publishes ports is ready once its target port accepts a TCP
//! connection; one with neither is ready once it runs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::compose::Health;

/// Runs `health`'s command in container `id` (`exe --root ROOT exec ID ...`).
pub async fn check(exe: &Path, root: &Path, id: &str, health: &Health) -> bool {
    let mut cmd = tokio::process::Command::new(exe);
    // `ingot exec` kills the check's whole process group when its timeout
    // expires; ours (a little later) is the backstop.
    cmd.arg("--root")
        .arg(root)
        .arg("exec")
        .arg("--timeout")
        .arg(format!("{}ms", health.timeout_ms))
        .arg(id)
        .args(&health.test)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    match tokio::time::timeout(Duration::from_millis(health.timeout_ms + 1000), child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => {
            let _ = child.kill().await;
            false
        }
    }
}

/// Whether `addr` accepts a TCP connection within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
