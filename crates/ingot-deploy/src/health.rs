//! Health and readiness probes of one replica.
//!
//! A health check's command runs inside the replica's namespaces and root
//! (`nsenter --target PID --mount --uts --ipc --net --pid --root --wd`,
//! util-linux), with the check's timeout. A replica without a health check
//! that publishes ports is ready once its target port accepts a TCP
//! connection; one with neither is ready once it runs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::compose::Health;

/// Runs `health`'s command in the container whose first process is `pid`.
pub async fn check(pid: i64, health: &Health) -> bool {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg("--target")
        .arg(pid.to_string())
        .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd", "--"])
        .args(&health.test)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    match tokio::time::timeout(Duration::from_millis(health.timeout_ms), child.wait()).await {
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
