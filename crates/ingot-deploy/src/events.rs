//! What happens in the daemon, as `docker events` shows it: replicas
//! started, healthy, unhealthy, stopped; replicas joining and leaving their
//! service's pool; ledger entries appended and sealed; changes the policy
//! refused. Kept in memory (the last [`KEEP`]) for `--since`, and
//! broadcast to every `ingot events` that follows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// How many past events the daemon keeps.
pub const KEEP: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Increasing from 1 in each daemon.
    pub id: u64,
    /// RFC 3339 UTC.
    pub time: String,
    /// replica, pool, ledger, policy
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// start, healthy, unhealthy, die, stop; join, leave; append, seal; refuse
    pub action: &'static str,
    pub stack: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// The replica's name, the ledger entry's seq, the pool member's address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

pub struct EventLog {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
    next: AtomicU64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            tx: broadcast::channel(1024).0,
            recent: Mutex::new(VecDeque::with_capacity(KEEP)),
            next: AtomicU64::new(1),
        }
    }
}

impl EventLog {
    pub fn emit(
        &self,
        kind: &'static str,
        action: &'static str,
        stack: &str,
        service: &str,
        subject: &str,
        detail: &str,
    ) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Numbered under the lock: the kept order is the id order.
        let e = Event {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            time: crate::now(),
            kind,
            action,
            stack: stack.to_string(),
            service: service.to_string(),
            subject: subject.to_string(),
            detail: detail.to_string(),
        };
        tracing::debug!(kind, action, stack, service, subject, "event");
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(e.clone());
        // No follower is not an error.
        let _ = self.tx.send(e);
    }

    /// The kept events at or after `since`, and a receiver for the ones
    /// after them: taken together, so none is missed or repeated.
    pub fn follow(&self, since: Option<time::OffsetDateTime>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let rfc = &time::format_description::well_known::Rfc3339;
        let past = match since {
            Some(t) => recent
                .iter()
                .filter(|e| time::OffsetDateTime::parse(&e.time, rfc).is_ok_and(|at| at >= t))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_then_followed_in_order() {
        let log = EventLog::default();
        log.emit("ledger", "append", "s", "", "1", "");
        let epoch = time::OffsetDateTime::UNIX_EPOCH;
        let (past, mut rx) = log.follow(Some(epoch));
        log.emit("ledger", "seal", "s", "", "1", "succeeded");
        assert_eq!(past.iter().map(|e| e.action).collect::<Vec<_>>(), ["append"]);
        let next = rx.try_recv().unwrap();
        assert_eq!((next.id, next.action), (2, "seal"));
        let (none, _) = log.follow(None);
        assert!(none.is_empty(), "without --since only what comes next");
        for i in 0..KEEP + 10 {
            log.emit("pool", "join", "s", "w", &i.to_string(), "");
        }
        let (all, _) = log.follow(Some(epoch));
        // A time with an offset means the same instant: nothing is later.
        let later = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+2)) + time::Duration::seconds(5);
        assert!(log.follow(Some(later)).0.is_empty());
        assert_eq!(all.len(), KEEP);
        assert!(all.windows(2).all(|w| w[0].id + 1 == w[1].id));
    }
}
