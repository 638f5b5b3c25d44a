//! The pages and panels, rendered on the server (maud escapes every value).

use std::convert::Infallible;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup, DOCTYPE};

use crate::auth::{self, Access};
use crate::diff::Change;
use crate::panels::{self, Dora, Entry, Service};
use crate::Shared;

fn layout(title: &str, access: Access, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ingot" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "ingot" }
                    span.title { (title) }
                    nav {
                        @if access == Access::Token {
                            form method="post" action="/logout" { button type="submit" { "Log out" } }
                        } @else {
                            a href="/login" { "Log in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

/// A page that says one thing, with a status.
pub fn message(code: StatusCode, title: &str, text: &str) -> Response {
    (
        code,
        Html(layout(title, Access::Anonymous, html! { p.alert.bad { (text) } }).into_string()),
    )
        .into_response()
}

pub fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Html(login_page(Some("This dashboard needs the daemon's token.")).into_string()),
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"ingot\""),
    );
    r
}

pub fn login_page(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        Access::Anonymous,
        html! {
            @if let Some(e) = error { p.alert.bad { (e) } }
            form.login method="post" action="/login" {
                label for="token" { "Token (in " code { "<root>/web.token" } " on the daemon's host)" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Log in" }
            }
        },
    )
}

pub async fn login_form() -> Response {
    page(login_page(None))
}

/// Runs `f` with the store on the blocking pool; a failure is a 500 page.
async fn with_store<T: Send + 'static>(
    web: &Shared,
    f: impl FnOnce(&ingot_store::Store) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let root = web.root.clone();
    match tokio::task::spawn_blocking(move || panels::open(&root).and_then(|s| f(&s))).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(message(StatusCode::INTERNAL_SERVER_ERROR, "Store error", &e)),
        Err(e) => Err(message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            &e.to_string(),
        )),
    }
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// An RFC 3339 time as a person reads it: to the second, UTC.
fn when(t: &str) -> String {
    let t = t.split('.').next().unwrap_or(t).trim_end_matches('Z');
    format!("{} UTC", t.replacen('T', " ", 1))
}

/// "1 entry", "2 entries".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn outcome_class(o: &str) -> &'static str {
    match o {
        "succeeded" => "good",
        "pending" => "pending",
        _ => "bad",
    }
}

// ---- services ----

fn services_panel(
    services: &[Service],
    other_drift: &[ingot_deploy::drift::Difference],
    drift_error: Option<&str>,
    access: Access,
    csrf: &str,
) -> Markup {
    html! {
        h2 { "Services" }
        @if let Some(e) = drift_error { p.alert.bad { "Drift could not be checked: " (e) } }
        @if !other_drift.is_empty() {
            div.alert.bad data-drift="other" {
                "Drift outside the services below:"
                ul { @for d in other_drift { li { (d.service) " " (d.what) ": wants " (d.desired) ", has " (d.actual) } } }
            }
        }
        @if services.is_empty() {
            p.empty { "No services deployed yet." }
        } @else {
            table.services {
                thead { tr {
                    th { "Service" } th { "Image" } th { "Replicas" } th { "Health" }
                    th { "Ports" } th { "Drift" } th { "" }
                } }
                tbody {
                    @for s in services {
                        @let st = &s.status;
                        tr data-service=(st.name) data-desired=(st.replicas) data-running=(st.running) data-healthy=(st.healthy) {
                            td { b { (st.name) } br; small { "version " (clip(&st.version, 16)) } }
                            td { a href={ "/images/" (st.digest) } { (st.image) } br; small.mono { (short(&st.digest)) } }
                            td.count { span.healthy-count { (st.healthy) } " / " (st.replicas) " healthy" }
                            td {
                                @for r in &s.replicas {
                                    @let h = serde_json::to_value(r.health).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                                    @let t = serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                                    span class={ "replica " (h) } title={ (r.name) " " (t) " " (h) } data-replica=(r.name) data-health=(h) data-state=(t) { (r.slot) }
                                }
                            }
                            td { @for p in &st.ports { code { (p) } " " } }
                            td {
                                @if s.drift.is_empty() { span.badge.good { "in sync" } }
                                @else {
                                    span.badge.bad { "drift" }
                                    ul.drift { @for d in &s.drift { li { (d.what) ": wants " (d.desired) ", has " (d.actual) } } }
                                }
                            }
                            td {
                                @if access == Access::Token {
                                    form.rollback method="post" action={ "/services/" (st.name) "/rollback" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="text" name="reason" placeholder="reason" maxlength="4096";
                                        button type="submit" { "Roll back" }
                                    }
                                } @else {
                                    small { a href="/login" { "log in" } " to roll back" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn services_markup(web: &Shared, access: Access) -> Result<Markup, Response> {
    let engine = web.engine.clone();
    let (services, other, drift_error) = with_store(web, move |store| Ok(panels::services(&engine, store))).await?;
    let csrf = auth::csrf(&web.token);
    Ok(services_panel(&services, &other, drift_error.as_deref(), access, &csrf))
}

pub async fn services_fragment(State(web): State<Shared>, Extension(access): Extension<Access>) -> Response {
    match services_markup(&web, access).await {
        Ok(m) => page(m),
        Err(r) => r,
    }
}

// ---- DORA ----

const METRICS: [(&str, &str); 4] = [
    ("deployment_frequency", "Deployment frequency"),
    ("lead_time", "Lead time for changes"),
    ("change_failure_rate", "Change failure rate"),
    ("time_to_restore", "Time to restore"),
];

fn metric_of<'a>(r: &'a ingot_deploy::dora::Report, key: &str) -> &'a ingot_deploy::dora::Metric {
    match key {
        "deployment_frequency" => &r.deployment_frequency,
        "lead_time" => &r.lead_time,
        "change_failure_rate" => &r.change_failure_rate,
        _ => &r.time_to_restore,
    }
}

/// One bar per week; an empty week has no bar.
fn sparkline(values: &[(String, Option<f64>)]) -> Markup {
    let max = values.iter().filter_map(|(_, v)| *v).fold(0.0f64, f64::max);
    let (w, h, bar) = (12 * values.len(), 40.0, 9);
    html! {
        svg.trend width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" {
            title { "weekly, oldest first" }
            @for (i, (week, v)) in values.iter().enumerate() {
                @if let Some(v) = v {
                    @let bh = if max > 0.0 { (v / max * (h - 2.0)).max(1.0) } else { 1.0 };
                    rect x=(i * 12) y=(format!("{:.1}", h - bh)) width=(bar) height=(format!("{bh:.1}")) {
                        title { "week to " (week) ": " (format!("{v:.2}")) }
                    }
                }
            }
        }
    }
}

fn dora_panel(d: &Result<Dora, String>) -> Markup {
    html! {
        h2 { "Delivery (DORA, last " (panels::DORA_DAYS) " days)" }
        @match d {
            Err(e) => p.alert.bad data-dora="refused" { "No metrics: the ledger does not verify (" (e) ")." },
            Ok(d) if d.now.deployments == 0 && d.now.change_failure_rate.samples == 0 => {
                p.empty data-dora="empty" { "Nothing to measure yet: no deployment from " (when(&d.now.from)) " to " (when(&d.now.to)) "." }
            }
            Ok(d) => {
                p data-dora="measured" data-deployments=(d.now.deployments) {
                    (count(d.now.deployments, "deployment", "deployments")) " from " (when(&d.now.from)) " to " (when(&d.now.to)) "."
                }
                div.metrics {
                    @for (key, name) in METRICS {
                        @let m = metric_of(&d.now, key);
                        @let band = m.band.and_then(|b| serde_json::to_value(b).ok()).and_then(|v| v.as_str().map(String::from)).unwrap_or_else(|| "none".into());
                        div.metric data-metric=(key) data-value=(m.value.map_or(String::new(), |v| format!("{v:.4}"))) data-band=(band)
                            data-entries=(m.entries.iter().map(i64::to_string).collect::<Vec<_>>().join(",")) {
                            h3 { (name) }
                            p.value {
                                @if let Some(v) = m.value { (format!("{v:.2}")) " " small { (m.unit) } } @else { "—" }
                            }
                            p {
                                @if m.band.is_some() { span class={ "band " (band) } { (band) } " · " }
                                (count(m.samples, "sample", "samples"))
                                @if !m.entries.is_empty() { " · entries " }
                                @for e in m.entries.iter().take(8) { a href={ "/ledger/" (e) } { "#" (e) } " " }
                                @if m.entries.len() > 8 { "…" }
                            }
                            (sparkline(&d.trend.iter().map(|(w, r)| (w.clone(), metric_of(r, key).value)).collect::<Vec<_>>()))
                        }
                    }
                }
                @if d.now.images_without_commit_time > 0 {
                    p.note { (d.now.images_without_commit_time) " deployed images name no commit time (no lead time for them)." }
                }
            }
        }
    }
}

async fn dora_markup(web: &Shared) -> Result<Markup, Response> {
    let d = with_store(web, |store| Ok(panels::dora(store, &panels::ledger(store)?))).await?;
    Ok(dora_panel(&d))
}

pub async fn dora_fragment(State(web): State<Shared>) -> Response {
    match dora_markup(&web).await {
        Ok(m) => page(m),
        Err(r) => r,
    }
}

// ---- ledger ----

fn change_line(c: &Change) -> Markup {
    html! {
        code { (c.path) } ": "
        @match (&c.before, &c.after) {
            (None, Some(a)) => { "added " span.mono { (clip(a, 40)) } },
            (Some(b), None) => { "removed " span.mono { (clip(b, 40)) } },
            (Some(b), Some(a)) => { span.mono { (clip(b, 40)) } " → " span.mono { (clip(a, 40)) } },
            (None, None) => {},
        }
    }
}

fn entry_item(e: &Entry) -> Markup {
    let r = &e.row;
    html! {
        li class={ "entry " (outcome_class(&r.outcome)) } data-seq=(r.seq) data-kind=(r.kind) data-outcome=(r.outcome) {
            div.head {
                a.seq href={ "/ledger/" (r.seq) } { "#" (r.seq) }
                " " b { (r.kind) } " " (r.stack)
                " " span class={ "badge " (outcome_class(&r.outcome)) } { (r.outcome) }
                " " time datetime=(r.time) { (when(&r.time)) } " by " span.actor { (r.actor) }
            }
            @if let Some(why) = &r.reason { p.reason { (why) } }
            @if e.new_stack {
                p.diff { "A new stack: " (e.services.join(", ")) "." }
            } @else if !e.changes.is_empty() {
                ul.diff {
                    @for c in e.changes.iter().take(4) { li { (change_line(c)) } }
                    @if e.changes.len() > 4 { li { a href={ "/ledger/" (r.seq) } { (e.changes.len() - 4) " more" } } }
                }
            }
        }
    }
}

fn ledger_panel(l: &panels::Ledger, entries: &[Entry]) -> Markup {
    html! {
        h2 { "Ledger" }
        @if let Some(e) = &l.broken {
            p.alert.bad data-ledger="broken" { "The ledger does not verify: " (e) }
        } @else if !l.rows.is_empty() {
            p.good data-ledger="verified" { (count(l.rows.len(), "entry", "entries")) ", hash chain verified (head " span.mono { (clip(&l.rows[l.rows.len() - 1].hash, 16)) } ")." }
        }
        @if entries.is_empty() {
            p.empty { "No changes recorded yet." }
        } @else {
            ol.timeline { @for e in entries { (entry_item(e)) } }
        }
    }
}

async fn ledger_markup(web: &Shared) -> Result<Markup, Response> {
    let (l, entries) = with_store(web, |store| {
        let l = panels::ledger(store)?;
        let t = panels::timeline(&l.rows);
        Ok((l, t))
    })
    .await?;
    Ok(ledger_panel(&l, &entries))
}

pub async fn ledger_fragment(State(web): State<Shared>) -> Response {
    match ledger_markup(&web).await {
        Ok(m) => page(m),
        Err(r) => r,
    }
}

// ---- pages ----

pub async fn overview(State(web): State<Shared>, Extension(access): Extension<Access>) -> Response {
    // The ledger read and verified once for its two panels.
    let history = with_store(&web, |store| {
        let l = panels::ledger(store)?;
        let d = panels::dora(store, &l);
        let t = panels::timeline(&l.rows);
        Ok((l, t, d))
    });
    let (s, h) = tokio::join!(services_markup(&web, access), history);
    let (s, (ledger, timeline, dora)) = match (s, h) {
        (Ok(s), Ok(h)) => (s, h),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let (d, l) = (dora_panel(&dora), ledger_panel(&ledger, &timeline));
    page(layout(
        "Delivery",
        access,
        html! {
            section #services data-src="/fragments/services" { (s) }
            div.columns {
                section #ledger data-src="/fragments/ledger" { (l) }
                section #dora data-src="/fragments/dora" { (d) }
            }
            p #live.note { "Live: waiting for the daemon's events." }
        },
    ))
}

pub async fn entry(
    State(web): State<Shared>,
    Extension(access): Extension<Access>,
    UrlPath(seq): UrlPath<i64>,
) -> Response {
    let found = with_store(&web, move |store| {
        let l = panels::ledger(store)?;
        Ok(l.rows
            .iter()
            .position(|r| r.seq == seq)
            .map(|i| (panels::entry(&l.rows, i), l.broken)))
    })
    .await;
    let (e, broken) = match found {
        Ok(Some(x)) => x,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "No such entry",
                &format!("The ledger has no entry #{seq}."),
            )
        }
        Err(r) => return r,
    };
    let r = &e.row;
    let pretty = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| s.to_string())
    };
    page(layout(
        &format!("Ledger entry #{seq}"),
        access,
        html! {
            @if let Some(b) = broken { p.alert.bad { "The ledger does not verify: " (b) } }
            dl.fields {
                dt { "Kind" } dd { (r.kind) }
                dt { "Stack" } dd { (r.stack) }
                dt { "Outcome" } dd { span class={ "badge " (outcome_class(&r.outcome)) } { (r.outcome) } }
                dt { "When" } dd { (when(&r.time)) @if let Some(s) = ingot_deploy::ledger::sealed_at(r) { ", sealed " (when(&s)) } }
                dt { "Who" } dd { (r.actor) }
                dt { "Why" } dd { (r.reason.as_deref().unwrap_or("(no reason given)")) }
                dt { "Stack digest" } dd.mono { (r.digest) }
                dt { "Hash" } dd.mono { (r.hash) }
                dt { "Previous" } dd.mono { (r.prev) }
            }
            h2 { "What changed" }
            @if e.changes.is_empty() { p.empty { "Nothing in the pinned stack." } }
            @else { ul.diff.full { @for c in &e.changes { li { (change_line(c)) } } } }
            @if let Some(d) = &r.detail { h2 { "Detail" } pre { (pretty(d)) } }
            details { summary { "The pinned stack" } pre { (pretty(&r.body)) } }
        },
    ))
}

pub async fn image(
    State(web): State<Shared>,
    Extension(access): Extension<Access>,
    UrlPath(digest): UrlPath<String>,
) -> Response {
    let d = match digest.parse::<ingot_oci::Digest>() {
        Ok(d) => d,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad digest", &format!("{digest:?}: {e}")),
    };
    let policy = web.engine.policy_path().map(std::path::Path::to_path_buf);
    let img = match with_store(&web, move |store| Ok(panels::image(store, &d, policy.as_deref()))).await {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return message(StatusCode::NOT_FOUND, "No such image", &e),
        Err(r) => return r,
    };
    page(layout(
        &format!("Image {}", short(&img.digest)),
        access,
        html! {
            p.mono { (img.digest) }
            @if !img.tags.is_empty() { p { "Tags: " @for t in &img.tags { code { (t) } " " } } }
            h2 { "Signatures" }
            p data-signatures=(img.signatures) {
                @if img.signatures == 0 { span.badge.bad { "unsigned" } }
                @else {
                    span.badge.pending { "signatures attached" }
                    " " (img.signatures) " signature referrer(s): verified only by the policy below (or `ingot verify --key`)."
                }
            }
            @match &img.policy {
                None => p.note { "The daemon runs without a policy: signatures are not checked against trusted keys." },
                Some(Err(e)) => p.alert.bad { "Policy: " (e) },
                Some(Ok(dec)) if dec.passed() => p { span.badge.good { "policy passed" } },
                Some(Ok(dec)) => div {
                    span.badge.bad { "policy refuses" }
                    ul { @for r in &dec.refusals { li { (r.to_string()) } } }
                },
            }
            h2 { "Bill of materials" }
            @if img.bom.is_empty() { p.empty { "This image carries no bill of materials (not built by ingot)." } }
            @else {
                table.bom { tbody { @for c in &img.bom { tr { th { (c.path) } td { (c.after.as_deref().unwrap_or("")) } } } } }
            }
            h2 { "Vulnerabilities" }
            @if img.findings.is_empty() { p.good { "No known vulnerability in the packages below (advisories imported with " code { "ingot advisories" } ")." } }
            @else {
                table.findings {
                    thead { tr { th { "Severity" } th { "Advisory" } th { "Package" } th { "Installed" } th { "Fixed in" } } }
                    tbody { @for f in &img.findings {
                        tr { td { (f.severity) } td { (f.id) } td { (f.package) } td { (f.installed) } td { (f.fixed.as_deref().unwrap_or("—")) } }
                    } }
                }
            }
            h2 { "Packages" }
            @match &img.packages {
                Err(e) => p.alert.bad { "Could not catalog the image: " (e) },
                Ok(p) if p.is_empty() => p.empty { "No packages found." },
                Ok(pkgs) => table.packages {
                    thead { tr { th { "Name" } th { "Version" } th { "Ecosystem" } th { "License" } } }
                    tbody { @for p in pkgs {
                        tr { td { (p.name) } td { (p.version) } td { (format!("{:?}", p.ecosystem)) } td { (p.license.as_deref().unwrap_or("")) } }
                    } }
                },
            }
        },
    ))
}

/// The daemon's events as Server-Sent Events (a `resync` event when this
/// follower fell behind).
pub async fn events(State(web): State<Shared>) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let (_, rx) = web.engine.events.follow(None);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        let ev = match rx.recv().await {
            Ok(e) => SseEvent::default()
                .event(e.kind)
                .data(serde_json::to_string(&e).unwrap_or_default()),
            Err(RecvError::Lagged(_)) => SseEvent::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
