//! Delivery measured from the ledger: the four DORA metrics, each with the
//! 2024 State of DevOps cluster it falls in and the entries it was computed
//! from. Pure: the caller gives the entries, each image's commit time (from
//! its bill of materials) and the window.
//!
//! Definitions (README "Delivery metrics"):
//! - a *deployment* is a `deploy` entry that ended (any outcome but
//!   pending); a *successful* one ended `succeeded`;
//! - *deployment frequency*: successful deployments per day of the window;
//! - *lead time for changes*: for every image a successful deployment put
//!   into a service (its digest new to the stack), from the image's git
//!   commit time to the deployment's success (the entry's seal); the
//!   median;
//! - *change failure rate*: failed deployments over deployments, failed
//!   meaning rolled back (automatically: outcome rolled-back; or by hand:
//!   the stack's next entry is a `rollback`), failed, or followed by a fix
//!   (the stack's next entry a deploy within the fix window of its success);
//! - *time to restore*: for every failed deployment, from when it failed
//!   (its start for a rolled-back or failed outcome; its success for one
//!   rolled back by hand or fixed) to when the stack served a good version
//!   again (the seal of the automatic rollback, or of the next successful
//!   entry of the stack); the median.

use std::collections::BTreeMap;

use ingot_oci::Digest;
use ingot_store::LedgerRow;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ledger;
use crate::{DeployError, Result};

/// A DORA 2024 performance cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Elite,
    High,
    Medium,
    Low,
}

/// What `compute` looks at.
#[derive(Debug, Clone)]
pub struct Window {
    pub now: OffsetDateTime,
    /// How far back from `now`.
    pub since: time::Duration,
    /// Only this stack, if given.
    pub stack: Option<String>,
    /// A deploy of a stack this soon after its previous one succeeded
    /// marks that one as needing a fix.
    pub fix_window: time::Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// None: nothing to compute it from.
    pub value: Option<f64>,
    pub unit: &'static str,
    pub band: Option<Band>,
    /// The ledger entries it was computed from.
    pub entries: Vec<i64>,
    /// How many samples (deployments, images, failures) it rests on.
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub stack: Option<String>,
    pub deployments: usize,
    pub deployment_frequency: Metric,
    pub lead_time: Metric,
    pub change_failure_rate: Metric,
    pub time_to_restore: Metric,
    /// Images deployed whose bill of materials names no commit time.
    pub images_without_commit_time: usize,
}

fn at(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn start(r: &LedgerRow) -> Option<OffsetDateTime> {
    at(&r.time)
}

fn sealed(r: &LedgerRow) -> Option<OffsetDateTime> {
    ledger::sealed_at(r).and_then(|s| at(&s)).or_else(|| start(r))
}

fn hours(d: time::Duration) -> f64 {
    d.as_seconds_f64() / 3600.0
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Successful deployments per day: elite at least daily, high at least
/// weekly, medium at least monthly, low below.
fn frequency_band(per_day: f64) -> Band {
    if per_day >= 1.0 {
        Band::Elite
    } else if per_day >= 1.0 / 7.0 {
        Band::High
    } else if per_day >= 1.0 / 30.0 {
        Band::Medium
    } else {
        Band::Low
    }
}

/// Hours: elite under a day, high under a week, medium under a month.
fn lead_band(h: f64) -> Band {
    if h < 24.0 {
        Band::Elite
    } else if h < 24.0 * 7.0 {
        Band::High
    } else if h < 24.0 * 30.0 {
        Band::Medium
    } else {
        Band::Low
    }
}

/// Percent: the best 2024 cluster whose rate it meets (elite 5%, high
/// 20%, medium 10%, low 40%): so elite to 5%, high to 20%, low above.
fn failure_band(pct: f64) -> Band {
    if pct <= 5.0 {
        Band::Elite
    } else if pct <= 20.0 {
        Band::High
    } else {
        Band::Low
    }
}

/// Hours: elite under an hour, high (and medium) under a day, low above.
fn restore_band(h: f64) -> Band {
    if h < 1.0 {
        Band::Elite
    } else if h < 24.0 {
        Band::High
    } else {
        Band::Low
    }
}

/// The metrics of `rows` (which must verify) within `w`; `commit_time`
/// answers an image's git commit time (Unix seconds) from its bill of
/// materials.
pub fn compute(rows: &[LedgerRow], commit_time: &dyn Fn(&Digest) -> Option<i64>, w: &Window) -> Result<Report> {
    let mut r = compute_windows(rows, commit_time, std::slice::from_ref(w))?;
    Ok(r.remove(0))
}

/// Just the image digests of a pinned stack's services, in its order.
#[derive(serde::Deserialize)]
struct Images {
    services: BTreeMap<String, ServiceImage>,
}

#[derive(serde::Deserialize)]
struct ServiceImage {
    digest: Digest,
}

/// [`compute`] for each of `windows`, over one verification of the ledger
/// and one read of each entry's images.
pub fn compute_windows(
    rows: &[LedgerRow],
    commit_time: &dyn Fn(&Digest) -> Option<i64>,
    windows: &[Window],
) -> Result<Vec<Report>> {
    ledger::verify(rows)?;
    compute_windows_verified(rows, commit_time, windows)
}

/// [`compute_windows`] over rows the caller has just verified with
/// [`ledger::verify`] (the dashboard, which shows the verdict too).
pub fn compute_windows_verified(
    rows: &[LedgerRow],
    commit_time: &dyn Fn(&Digest) -> Option<i64>,
    windows: &[Window],
) -> Result<Vec<Report>> {
    // Only the stacks some window looks at are read.
    let wanted = |r: &LedgerRow| windows.iter().any(|w| w.stack.as_ref().is_none_or(|s| &r.stack == s));
    let images = rows
        .iter()
        .map(|r| {
            if r.kind == ledger::RM || !wanted(r) {
                return Ok(None);
            }
            let i: Images = serde_json::from_str(&r.body).map_err(|e| DeployError::Ledger {
                seq: r.seq,
                why: format!("its stack does not parse: {e}"),
            })?;
            Ok(Some(i.services.into_values().map(|s| s.digest).collect::<Vec<_>>()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(windows.iter().map(|w| report(rows, &images, commit_time, w)).collect())
}

/// The report of one window; `images[i]`: the images of `rows[i]`'s stack.
fn report(
    rows: &[LedgerRow],
    images: &[Option<Vec<Digest>>],
    commit_time: &dyn Fn(&Digest) -> Option<i64>,
    w: &Window,
) -> Report {
    let from = w.now - w.since;
    let in_window = |r: &LedgerRow| start(r).is_some_and(|t| t >= from && t <= w.now);
    let wanted = |r: &LedgerRow| w.stack.as_ref().is_none_or(|s| &r.stack == s);
    // Each stack's entries in order, and the stack each entry left.
    // Each stack's entries, each with the images of the stack it records.
    type Entries<'a> = Vec<(&'a LedgerRow, Option<&'a Vec<Digest>>)>;
    let mut by_stack: BTreeMap<&str, Entries> = BTreeMap::new();
    for (r, i) in rows.iter().zip(images).filter(|(r, _)| wanted(r)) {
        by_stack.entry(r.stack.as_str()).or_default().push((r, i.as_ref()));
    }
    let mut deployments = Vec::new();
    let mut succeeded = Vec::new();
    let mut leads = Vec::new();
    let mut lead_entries = Vec::new();
    let mut no_commit = 0;
    let mut failed = Vec::new();
    let mut restores = Vec::new();
    for entries in by_stack.values() {
        let mut before: Option<&Vec<Digest>> = None;
        for (i, (r, this)) in entries.iter().enumerate() {
            let next = entries.get(i + 1).map(|(n, _)| n);
            let counted = r.kind == ledger::DEPLOY && r.outcome != ledger::PENDING && in_window(r);
            if counted {
                deployments.push(r.seq);
                let ok = r.outcome == ledger::SUCCEEDED;
                if ok {
                    succeeded.push(r.seq);
                    // Lead time of every image new to the stack.
                    let seal = sealed(r).unwrap_or(w.now);
                    for digest in this.iter().flat_map(|s| s.iter()) {
                        if before.is_some_and(|b| b.contains(digest)) {
                            continue;
                        }
                        match commit_time(digest) {
                            Some(c) => {
                                let c = OffsetDateTime::from_unix_timestamp(c).unwrap_or(seal);
                                leads.push(hours(seal - c));
                                lead_entries.push(r.seq);
                            }
                            None => no_commit += 1,
                        }
                    }
                }
                // Failed, and when the stack was good again.
                let by_hand = ok && next.is_some_and(|n| n.kind == ledger::ROLLBACK);
                let fixed = ok
                    && next.is_some_and(|n| {
                        n.kind == ledger::DEPLOY
                            && matches!((sealed(r), start(n)), (Some(a), Some(b)) if b - a <= w.fix_window)
                    });
                let failure = if matches!(r.outcome.as_str(), ledger::ROLLED_BACK | ledger::FAILED) {
                    Some(start(r))
                } else if by_hand || fixed {
                    Some(sealed(r))
                } else {
                    None
                };
                if let Some(began) = failure {
                    failed.push(r.seq);
                    let restored = if r.outcome == ledger::ROLLED_BACK {
                        sealed(r)
                    } else {
                        entries[i + 1..]
                            .iter()
                            .find(|(n, _)| n.outcome == ledger::SUCCEEDED && n.kind != ledger::SCALE)
                            .and_then(|(n, _)| sealed(n))
                    };
                    if let (Some(a), Some(b)) = (began, restored) {
                        restores.push(hours(b - a));
                    }
                }
            }
            if ledger::applies(r) {
                before = *this;
            }
        }
    }
    let days = (w.since.as_seconds_f64() / 86_400.0).max(1.0 / 24.0);
    let per_day = succeeded.len() as f64 / days;
    let metric = |value: Option<f64>, unit, band: fn(f64) -> Band, entries: Vec<i64>, samples| Metric {
        value,
        unit,
        band: value.map(band),
        entries,
        samples,
    };
    lead_entries.dedup();
    let rate = (!deployments.is_empty()).then(|| 100.0 * failed.len() as f64 / deployments.len() as f64);
    Report {
        from: from.format(&Rfc3339).unwrap_or_default(),
        to: w.now.format(&Rfc3339).unwrap_or_default(),
        stack: w.stack.clone(),
        deployments: deployments.len(),
        deployment_frequency: metric(
            (!deployments.is_empty()).then_some(per_day),
            "per day",
            frequency_band,
            succeeded.clone(),
            succeeded.len(),
        ),
        lead_time: metric(median(leads.clone()), "hours", lead_band, lead_entries, leads.len()),
        change_failure_rate: metric(rate, "percent", failure_band, failed.clone(), deployments.len()),
        time_to_restore: metric(median(restores.clone()), "hours", restore_band, failed, restores.len()),
        images_without_commit_time: no_commit,
    }
}

/// `30d`, `12h`, `90m`, `2w`: a window length.
pub fn parse_since(s: &str) -> Result<time::Duration> {
    let bad = || DeployError::Invalid(format!("--since {s:?}: expected a number and m, h, d or w (30d)"));
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if n <= 0 || n > 3650 * 86_400 / secs {
        return Err(bad());
    }
    Ok(time::Duration::seconds(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::PinnedStack;

    fn d(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap()
    }

    fn stack(name: &str, image: u8) -> PinnedStack {
        let policy = serde_json::json!({"parallelism": 1, "delay_ms": 0, "failure_action": "rollback",
            "monitor_ms": 0, "max_failure_ratio": 0.0, "order": "stop-first"});
        serde_json::from_value(serde_json::json!({
            "name": name, "configs": {},
            "services": {"web": {
                "image": "web", "digest": d(image), "command": null, "entrypoint": null, "env": [],
                "ports": [], "health": null, "replicas": 1, "update": policy, "rollback": policy,
                "restart": {"condition": "any", "delay_ms": 0, "max_attempts": null},
                "configs": [], "user": null, "workdir": null, "stop_grace_ms": 0,
            }},
        }))
        .unwrap()
    }

    const T0: i64 = 1_780_000_000; // a fixed "now" minus ten days

    fn iso(t: i64) -> String {
        OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    }

    /// A verified chain of (kind, stack, image, outcome, start, sealed).
    fn chain(entries: &[(&str, &str, u8, &str, i64, i64)]) -> Vec<LedgerRow> {
        let mut rows: Vec<LedgerRow> = Vec::new();
        for (i, (kind, name, image, outcome, t, s)) in entries.iter().enumerate() {
            let body = String::from_utf8(stack(name, *image).canonical()).unwrap();
            let mut r = LedgerRow {
                seq: i as i64 + 1,
                time: iso(T0 + t),
                actor: "test".into(),
                reason: None,
                kind: kind.to_string(),
                stack: name.to_string(),
                digest: Digest::sha256(body.as_bytes()).to_string(),
                body,
                prev: rows.last().map_or(ledger::GENESIS.to_string(), |r| r.hash.clone()),
                hash: String::new(),
                outcome: outcome.to_string(),
                detail: Some(serde_json::json!({"sealed": iso(T0 + s)}).to_string()),
            };
            r.hash = ledger::hash(&r);
            rows.push(r);
        }
        rows
    }

    #[test]
    fn known_ledger_gives_exact_metrics() {
        const H: i64 = 3600;
        // Stack a: v1 ok; v2 rolled back automatically (failed at 10h, back
        // at 10h+6m); v3 ok, then rolled back by hand 2 h later (restored
        // when that rollback sealed, 5 min on); v4 ok, fixed by v5 30 min
        // later (inside the 1 h fix window): v4 failed, restored at v5's seal.
        // Stack b: one ok deploy, and a scale (not a deployment).
        let rows = chain(&[
            ("deploy", "a", 1, "succeeded", 0, 600),
            ("deploy", "a", 2, "rolled-back", 10 * H, 10 * H + 360),
            ("deploy", "a", 3, "succeeded", 20 * H, 20 * H + 600),
            ("rollback", "a", 1, "succeeded", 22 * H, 22 * H + 300),
            ("deploy", "b", 9, "succeeded", 30 * H, 30 * H + 60),
            ("scale", "b", 9, "succeeded", 31 * H, 31 * H + 60),
            ("deploy", "a", 4, "succeeded", 40 * H, 40 * H + 600),
            ("deploy", "a", 5, "succeeded", 40 * H + 2400, 40 * H + 3000),
        ]);
        // Every image committed 2 h before its deploy's start; 9 has none.
        let starts: BTreeMap<u8, i64> = [(1, 0), (2, 10 * H), (3, 20 * H), (4, 40 * H), (5, 40 * H + 2400)].into();
        let commit = |dg: &Digest| starts.iter().find(|(n, _)| d(**n) == *dg).map(|(_, t)| T0 + t - 2 * H);
        let w = Window {
            now: OffsetDateTime::from_unix_timestamp(T0 + 10 * 86_400).unwrap(),
            since: time::Duration::days(10),
            stack: None,
            fix_window: time::Duration::hours(1),
        };
        let r = compute(&rows, &commit, &w).unwrap();
        assert_eq!(r.deployments, 6);
        // 5 successful deployments in 10 days: 0.5 a day, high.
        assert_eq!(r.deployment_frequency.value, Some(0.5));
        assert_eq!(r.deployment_frequency.band, Some(Band::High));
        assert_eq!(r.deployment_frequency.entries, [1, 3, 7, 8, 5]);
        // Leads of images 1, 3, 4, 5: 2h + 10 min each (seal 600 s after start).
        assert_eq!(r.lead_time.samples, 4);
        let lead = r.lead_time.value.unwrap();
        assert!((lead - 7800.0 / 3600.0).abs() < 1e-9, "{lead}");
        assert_eq!(r.lead_time.band, Some(Band::Elite));
        assert_eq!(r.images_without_commit_time, 1);
        // Failed: 2 (automatic), 3 (by hand), 7 (fixed by 8) of 6.
        assert_eq!(r.change_failure_rate.entries, [2, 3, 7]);
        assert_eq!(r.change_failure_rate.value, Some(50.0));
        assert_eq!(r.change_failure_rate.band, Some(Band::Low));
        // Restores: 2: 6 min; 3: from its seal (20h+600) to the rollback's
        // seal (22h+300) = 1h55m; 7: from its seal (40h+600) to 8's seal
        // (40h+3000) = 40 min. Median 40 min: elite.
        assert_eq!(r.time_to_restore.samples, 3);
        let restore = r.time_to_restore.value.unwrap();
        assert!((restore - 2400.0 / 3600.0).abs() < 1e-9, "{restore}");
        assert_eq!(r.time_to_restore.band, Some(Band::Elite));

        // One stack only, and a window that leaves the first day out.
        let b = compute(
            &rows,
            &commit,
            &Window {
                stack: Some("b".into()),
                ..w.clone()
            },
        )
        .unwrap();
        assert_eq!((b.deployments, b.change_failure_rate.value), (1, Some(0.0)));
        let late = Window {
            since: time::Duration::hours(10 * 24 - 35),
            ..w.clone()
        };
        let l = compute(&rows, &commit, &late).unwrap();
        assert_eq!(l.deployments, 2, "entries 7 and 8 only");

        // Nothing to measure; a ledger that does not verify is refused.
        let empty = compute(&[], &commit, &w).unwrap();
        assert_eq!((empty.deployments, empty.lead_time.value), (0, None));
        let mut edited = rows.clone();
        edited[1].outcome = "succeeded".into();
        assert!(compute(&edited, &commit, &w).is_err());
    }

    #[test]
    fn windows_parse() {
        assert_eq!(parse_since("30d").unwrap(), time::Duration::days(30));
        assert_eq!(parse_since("2w").unwrap(), time::Duration::days(14));
        for bad in ["", "d", "30", "-1d", "0h", "5y", "99999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
