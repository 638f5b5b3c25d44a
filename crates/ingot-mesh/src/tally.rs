//! What the mesh counts per replica: requests in flight (what the picks
//! and drains read), responses by status class, and how long each
//! response's head took to come back, in fixed buckets. All atomics, so the
//! request path takes no lock to count; a scrape reads a [`TallyNow`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets; one more bucket holds
/// everything slower.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The status classes counted: 1xx to 5xx.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One replica's counters (or the mesh's own, for answers it made itself).
#[derive(Debug, Default)]
pub struct Tally {
    pub(crate) active: AtomicUsize,
    classes: [AtomicU64; 5],
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

/// A tally read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TallyNow {
    /// Responses per status class, as [`CLASSES`].
    pub classes: [u64; 5],
    /// Responses per latency bucket (not cumulative), as [`LATENCY_BOUNDS`]
    /// then the rest.
    pub buckets: [u64; LATENCY_BOUNDS.len() + 1],
    /// The sum of all latencies, seconds.
    pub sum: f64,
}

impl TallyNow {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl Tally {
    /// A response with `status` whose head came `took` after the request.
    pub(crate) fn record(&self, status: u16, took: Duration) {
        if let Some(c) = (status / 100).checked_sub(1).and_then(|i| self.classes.get(i as usize)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn now(&self) -> TallyNow {
        let mut t = TallyNow {
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            ..TallyNow::default()
        };
        for (to, from) in t.classes.iter_mut().zip(&self.classes) {
            *to = from.load(Ordering::Relaxed);
        }
        for (to, from) in t.buckets.iter_mut().zip(&self.buckets) {
            *to = from.load(Ordering::Relaxed);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_land_in_their_class_and_bucket() {
        let t = Tally::default();
        t.record(200, Duration::from_micros(300));
        t.record(204, Duration::from_millis(1));
        t.record(503, Duration::from_millis(30));
        t.record(101, Duration::from_secs(60));
        t.record(99, Duration::ZERO);
        let n = t.now();
        assert_eq!(n.classes, [1, 2, 0, 0, 1]);
        assert_eq!(n.buckets[0], 2, "300 µs and 0 in the first bucket");
        assert_eq!(n.buckets[1], 1, "1 ms is at most 1 ms");
        assert_eq!(n.buckets[6], 1, "30 ms at most 50 ms");
        assert_eq!(n.buckets[14], 1, "60 s beyond the last bound");
        assert_eq!(n.count(), 5);
        assert!((n.sum - 60.0313).abs() < 1e-9, "{}", n.sum);
    }
}
