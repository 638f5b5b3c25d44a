//! The registry client: `ingot push` and `ingot pull` against any
//! conformant registry (ingot's own, the distribution registry, ...).
//!
//! Blobs move in parallel (up to [`PARALLEL`] at once), each streamed from
//! or into the blob store; a blob the other side already has is skipped
//! (HEAD before push, the store's own check before pull), so an interrupted
//! transfer resumes where it stopped, blob by blob. Pulled blobs are
//! verified against their digest before they become visible, and an image
//! is registered (and tagged) only once all its blobs are in.
//! Bearer-token challenges (`WWW-Authenticate: Bearer realm=...`) are
//! answered with an anonymous token request.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ingot_oci::manifest::{Content, Role};
use ingot_oci::{media, Digest, Manifest, Reference};
use ingot_store::{Blobs, Store};

use crate::error::ClientError;

/// Blobs in flight at once.
pub const PARALLEL: usize = 4;

/// What a transfer reports as it goes (the CLI draws progress bars).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A blob starts moving.
    Start { digest: &'a Digest, size: u64 },
    /// `n` more bytes of it moved.
    Bytes { digest: &'a Digest, n: u64 },
    /// It is done (`skipped`: the other side had it already).
    Done { digest: &'a Digest, skipped: bool },
}

/// Hears transfer events, from several threads at once.
pub trait Observer: Send + Sync {
    fn event(&self, e: Event<'_>);
}

/// Hears nothing.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event<'_>) {}
}

pub type Obs = std::sync::Arc<dyn Observer>;

/// Reports bytes as they are read (for uploads).
struct Counting {
    inner: std::fs::File,
    digest: Digest,
    obs: Obs,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.obs.event(Event::Bytes {
            digest: &self.digest,
            n: n as u64,
        });
        Ok(n)
    }
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// `REGISTRY/REPO[:TAG|@DIGEST]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `scheme://host[:port]`
    pub base: String,
    /// Skip certificate verification (`--insecure` with HTTPS).
    pub insecure: bool,
    pub host: String,
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Whether a reference's first component names a registry host (as
/// Docker tells them: a '.', a ':port' or `localhost`).
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

impl Remote {
    /// Whether `input` names a registry (`host[:port]/repo...`, optionally
    /// with a scheme) rather than an image in the store.
    pub fn names_registry(input: &str) -> bool {
        let input = input
            .strip_prefix("https://")
            .or_else(|| input.strip_prefix("http://"))
            .unwrap_or(input);
        input.split_once('/').is_some_and(|(host, _)| is_host(host))
    }

    /// `insecure` (or a loopback host) means plain HTTP, as Docker treats
    /// localhost registries; an explicit `https://` or `http://` prefix
    /// chooses the scheme (with `insecure`, an HTTPS certificate is not
    /// verified).
    pub fn parse(input: &str, insecure: bool) -> Result<Remote, ClientError> {
        let bad = |why: &str| ClientError::Invalid(format!("{input:?}: {why}"));
        let (forced, s) = match (input.strip_prefix("https://"), input.strip_prefix("http://")) {
            (Some(rest), _) => (Some("https"), rest),
            (_, Some(rest)) => (Some("http"), rest),
            _ => (None, input),
        };
        let (host, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("expected REGISTRY/REPOSITORY[:TAG|@DIGEST]"))?;
        if !is_host(host) {
            return Err(bad(
                "the first component must be a registry host (with a '.' or a ':port')",
            ));
        }
        let (path, digest) = match rest.split_once('@') {
            Some((p, d)) => (p, Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?)),
            None => (rest, None),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if !crate::names::valid_repo(repo) {
            return Err(bad("invalid repository name"));
        }
        if let Some(t) = &tag {
            if !crate::names::valid_tag(t) {
                return Err(bad("invalid tag"));
            }
        }
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = name == "localhost" || name.starts_with("127.") || name == "[::1]";
        let scheme = forced.unwrap_or(if insecure || loopback { "http" } else { "https" });
        Ok(Remote {
            base: format!("{scheme}://{host}"),
            insecure,
            host: host.to_string(),
            repo: repo.to_string(),
            tag,
            digest,
        })
    }

    /// The tag, digest or `latest`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repo)
    }
}

/// An HTTP session with one registry.
pub struct Client {
    agent: ureq::Agent,
    token: Mutex<Option<String>>,
    /// Pushing: a token asked for a repository asks for pull and push at
    /// once. (A registry that answers a PUT's 401 before reading its body
    /// closes the connection under the body being sent, and the client sees
    /// a broken pipe instead of the challenge; so no PUT goes out with a
    /// pull-only token.)
    push: bool,
}

type Resp = ureq::http::Response<ureq::Body>;

fn http_err(url: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Http {
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// The spec error's message in a response body, or the status line.
fn explain(mut r: Resp) -> String {
    let status = r.status();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = &v["errors"][0];
            Some(format!(
                "{}: {}",
                e["code"].as_str()?,
                e["message"].as_str().unwrap_or("")
            ))
        })
        .unwrap_or(body);
    format!("{status} {msg}").trim().to_string()
}

/// The environment variable holding a registry access token's secret.
pub const TOKEN_ENV: &str = "INGOT_REGISTRY_TOKEN";

impl Client {
    /// `insecure`: do not verify HTTPS certificates.
    pub fn new(insecure: bool) -> Client {
        let tls = ureq::tls::TlsConfig::builder().disable_verification(insecure).build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .max_redirects(5)
            .tls_config(tls)
            .build()
            .into();
        Client {
            agent,
            token: Mutex::new(None),
            push: false,
        }
    }

    /// A client that pushes (see [`Client`]'s `push`).
    pub fn pushing(mut self) -> Client {
        self.push = true;
        self
    }

    /// Sends a request; on a Bearer challenge fetches a token and retries.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&dyn Fn() -> Result<ureq::SendBody<'static>, ClientError>>,
    ) -> Result<Resp, ClientError> {
        for attempt in 0..2 {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(t) = self.token.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let resp = match body {
                Some(make) => {
                    let req = req.body(make()?).map_err(|e| http_err(url, e))?;
                    self.agent.run(req)
                }
                None => {
                    let req = req.body(()).map_err(|e| http_err(url, e))?;
                    self.agent.run(req)
                }
            }
            .map_err(|e| http_err(url, e))?;
            if resp.status() == 401 && attempt == 0 {
                if let Some(challenge) = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()) {
                    let challenge = challenge.to_string();
                    self.authenticate(&challenge, url)?;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(http_err(url, "unauthorized"))
    }

    /// Answers `Bearer realm="..",service="..",scope=".."` anonymously.
    fn authenticate(&self, challenge: &str, url: &str) -> Result<(), ClientError> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Err(http_err(url, format!("unsupported authentication {challenge:?}")));
        };
        let mut realm = None;
        let mut query = Vec::new();
        for (k, v) in challenge_params(params) {
            match k.as_str() {
                "realm" => realm = Some(v),
                "scope" if self.push && v.starts_with("repository:") && v.ends_with(":pull") => {
                    query.push(format!("{k}={v},push"))
                }
                "service" | "scope" => query.push(format!("{k}={v}")),
                _ => {}
            }
        }
        let realm = realm.ok_or_else(|| http_err(url, "Bearer challenge without realm"))?;
        let token_url = format!("{realm}?{}", query.join("&"));
        let mut req = self.agent.get(&token_url);
        if let Ok(secret) = std::env::var(TOKEN_ENV) {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("ingot:{secret}"));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        let mut resp = req.call().map_err(|e| http_err(&token_url, e))?;
        if resp.status() != 200 {
            return Err(http_err(&token_url, explain(resp)));
        }
        let text = resp.body_mut().read_to_string().map_err(|e| http_err(&token_url, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| http_err(&token_url, e))?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .ok_or_else(|| http_err(&token_url, "no token in the answer"))?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.to_string());
        Ok(())
    }

    /// Fetches a manifest by tag or digest: its bytes and media type.
    pub fn get_manifest(&self, remote: &Remote, reference: &str) -> Result<(Vec<u8>, String), ClientError> {
        let url = remote.url(&format!("manifests/{reference}"));
        self.get_manifest_opt(remote, reference)?
            .ok_or_else(|| http_err(&url, "404 MANIFEST_UNKNOWN: no such manifest"))
    }

    /// [`Client::get_manifest`], `None` where the registry has no such manifest.
    pub fn get_manifest_opt(&self, remote: &Remote, reference: &str) -> Result<Option<(Vec<u8>, String)>, ClientError> {
        let url = remote.url(&format!("manifests/{reference}"));
        let mut resp = self.send("GET", &url, &[("accept", ACCEPT)], None)?;
        if resp.status() == 404 {
            return Ok(None);
        }
        if resp.status() != 200 {
            return Err(http_err(&url, explain(resp)));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(media::OCI_MANIFEST)
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| http_err(&url, e))?;
        Ok(Some((bytes, media_type)))
    }

    fn has_blob(&self, remote: &Remote, d: &Digest) -> Result<bool, ClientError> {
        let url = remote.url(&format!("blobs/{d}"));
        Ok(self.send("HEAD", &url, &[], None)?.status() == 200)
    }

    /// Uploads one blob (POST, then PUT with the whole content).
    fn push_blob(&self, remote: &Remote, blobs: &Blobs, d: &Digest, obs: &Obs) -> Result<bool, ClientError> {
        if self.has_blob(remote, d)? {
            obs.event(Event::Done {
                digest: d,
                skipped: true,
            });
            return Ok(false);
        }
        let url = remote.url("blobs/uploads/");
        let resp = self.send("POST", &url, &[("content-length", "0")], None)?;
        if resp.status() != 202 {
            return Err(http_err(&url, explain(resp)));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| http_err(&url, "upload started without a Location"))?;
        let mut put = if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", remote.base)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={d}"));
        let path = blobs.path(d);
        let size = std::fs::metadata(&path)
            .map_err(|e| http_err(&put, format!("{}: {e}", path.display())))?
            .len();
        let len = size.to_string();
        obs.event(Event::Start { digest: d, size });
        let open = || -> Result<ureq::SendBody<'static>, ClientError> {
            let f = std::fs::File::open(&path).map_err(|e| http_err("blob", e))?;
            Ok(ureq::SendBody::from_owned_reader(Counting {
                inner: f,
                digest: d.clone(),
                obs: obs.clone(),
            }))
        };
        let resp = self.send(
            "PUT",
            &put,
            &[("content-type", "application/octet-stream"), ("content-length", &len)],
            Some(&open),
        )?;
        if resp.status() != 201 {
            return Err(http_err(&put, explain(resp)));
        }
        obs.event(Event::Done {
            digest: d,
            skipped: false,
        });
        Ok(true)
    }

    fn put_manifest(&self, remote: &Remote, reference: &str, m: &Manifest) -> Result<(), ClientError> {
        let url = remote.url(&format!("manifests/{reference}"));
        let bytes = m.bytes.clone();
        let body = move || Ok(ureq::SendBody::from_owned_reader(std::io::Cursor::new(bytes.clone())));
        let resp = self.send("PUT", &url, &[("content-type", &m.media_type)], Some(&body))?;
        if resp.status() != 201 {
            return Err(http_err(&url, explain(resp)));
        }
        Ok(())
    }

    /// Downloads one blob into the store, verified.
    fn pull_blob(&self, remote: &Remote, blobs: &Blobs, d: &Digest, size: u64, obs: &Obs) -> Result<bool, ClientError> {
        if blobs.exists(d) {
            obs.event(Event::Done {
                digest: d,
                skipped: true,
            });
            return Ok(false);
        }
        let url = remote.url(&format!("blobs/{d}"));
        let mut resp = self.send("GET", &url, &[], None)?;
        if resp.status() != 200 {
            return Err(http_err(&url, explain(resp)));
        }
        obs.event(Event::Start { digest: d, size });
        let mut w = blobs.writer(Some(d.clone()))?;
        // No more than the manifest declared: a registry cannot make a
        // small blob arrive as a large one.
        let mut reader = resp.body_mut().with_config().limit(size).reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(|e| http_err(&url, e))?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut w, &buf[..n]).map_err(|e| http_err(&url, e))?;
            obs.event(Event::Bytes { digest: d, n: n as u64 });
        }
        if w.written() != size {
            return Err(http_err(
                &url,
                format!("blob {d}: {} bytes, the manifest declares {size}", w.written()),
            ));
        }
        w.commit()?;
        obs.event(Event::Done {
            digest: d,
            skipped: false,
        });
        Ok(true)
    }
}

/// `key="value", key=value` pairs of a challenge; commas inside quotes
/// (`scope="repository:a:pull,push"`) belong to the value.
pub fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_string();
            rest = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

/// Runs `f` over `items`, at most [`PARALLEL`] at once; the first error wins.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<bool, ClientError> + Sync) -> Result<usize, ClientError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let moved = std::sync::atomic::AtomicUsize::new(0);
    let first_error: Mutex<Option<ClientError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                if first_error.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    break;
                }
                match f(item) {
                    Ok(true) => {
                        moved.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(moved.into_inner()),
    }
}

/// What a push or pull moved.
#[derive(Debug, Clone, Default)]
pub struct Transfer {
    pub digest: Option<Digest>,
    pub blobs_moved: usize,
    pub blobs_skipped: usize,
    /// Referrers (signatures, SBOMs, ...) copied along.
    pub referrers: usize,
}

/// Pushes local `image` to `remote` (its tag, else `latest`).
pub fn push(store: &Store, image: &str, remote: &Remote, obs: Obs) -> Result<Transfer, ClientError> {
    let img = store.resolve(image)?;
    let client = Client::new(remote.insecure).pushing();
    let mut t = Transfer::default();
    push_manifest(store, &client, remote, &img.manifest, &mut t, &obs)?;
    client.put_manifest(remote, &remote.reference(), &img.manifest)?;
    // Then what refers to it: the subject exists on the other side now.
    // Each by digest (a registry with the referrers API indexes it by its
    // subject) and under cosign's tag for its kind (`sha256-<hex>.sig`,
    // `.att`, `.sbom`: where cosign looks, and all a registry without
    // that API can offer a puller).
    let mut by_tag: BTreeMap<&str, Vec<Manifest>> = BTreeMap::new();
    for r in store.referrers(&img.manifest.digest)? {
        let m = store.manifest(&r, None)?;
        push_manifest(store, &client, remote, &m, &mut t, &obs)?;
        client.put_manifest(remote, &r.to_string(), &m)?;
        t.referrers += 1;
        if let Some(kind) = artifact_type(&m).and_then(|a| cosign_suffix(&a)) {
            by_tag.entry(kind).or_default().push(m);
        }
    }
    for (kind, ms) in by_tag {
        let tag = cosign_tag(&img.manifest.digest, kind);
        // Signatures others pushed under the tag stay, before ours (cosign
        // appends to it too): a push drops no signature of this image.
        let theirs = if kind == "sig" {
            kept_signatures(&client, remote, &img.manifest.digest, &tag)?
        } else {
            Vec::new()
        };
        if let Some(tagged) = cosign_manifest(kind, ms, theirs)? {
            client.put_manifest(remote, &tag, &tagged)?;
        }
    }
    t.digest = Some(img.manifest.digest.clone());
    Ok(t)
}

/// A manifest's `artifactType` (OCI 1.1), if it has one.
pub fn artifact_type(m: &Manifest) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).ok()?;
    v["artifactType"].as_str().map(String::from)
}

/// cosign's tag suffix for an artifact type: signatures `sig`, SBOMs
/// `sbom`, attestations (in-toto, DSSE) `att`.
pub fn cosign_suffix(artifact_type: &str) -> Option<&'static str> {
    match artifact_type {
        "application/vnd.dev.cosign.artifact.sig.v1+json" => Some("sig"),
        t if t.contains("spdx") || t.contains("cyclonedx") || t.contains("syft") => Some("sbom"),
        t if t.contains("in-toto") || t.contains("dsse") => Some("att"),
        _ => None,
    }
}

/// The tag cosign gives `subject`'s artifacts of `kind`: `sha256-<hex>.sig`.
pub fn cosign_tag(subject: &Digest, kind: &str) -> String {
    format!("{}-{}.{kind}", subject.algorithm().as_str(), subject.hex())
}

/// The signature layers already under `subject`'s `.sig` tag on `remote`,
/// to keep beside those a push brings: each a simple-signing payload that
/// names `subject`. A tag that is no image manifest, names another subject
/// or holds another image's payload fails every pull as it is: it is
/// replaced (with a warning), not carried on.
fn kept_signatures(
    client: &Client,
    remote: &Remote,
    subject: &Digest,
    tag: &str,
) -> Result<Vec<serde_json::Value>, ClientError> {
    let Some((bytes, media_type)) = client.get_manifest_opt(remote, tag)? else {
        return Ok(Vec::new());
    };
    let replaced = |why: String| {
        tracing::warn!(%tag, "the registry's signature tag is replaced: {why}");
        Ok(Vec::new())
    };
    let m = match Manifest::parse(bytes, Some(&media_type)) {
        Ok(m) => m,
        Err(e) => return replaced(e.to_string()),
    };
    let named = m
        .references()
        .ok()
        .and_then(|refs| refs.into_iter().find(|r| r.role == Role::Subject).map(|r| r.digest));
    if let Some(n) = named.filter(|n| n != subject) {
        return replaced(format!("its subject is {n}"));
    }
    if let Err(why) = check_payloads(client, remote, &m, subject) {
        return replaced(why);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| ClientError::Invalid(format!("{tag}: {e}")))?;
    Ok(v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mediaType"] == SIMPLE_SIGNING)
        .cloned()
        .collect())
}

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// What goes under a cosign tag: the one manifest of its kind, or, for
/// several signatures (`theirs`: the layers already under the tag), one
/// manifest holding all their layers (as cosign keeps every signature of
/// an image under its one `.sig` tag). `None`: the tag holds them all
/// already.
fn cosign_manifest(
    kind: &str,
    mut ms: Vec<Manifest>,
    theirs: Vec<serde_json::Value>,
) -> Result<Option<Manifest>, ClientError> {
    if theirs.is_empty() && (ms.len() == 1 || kind != "sig") {
        return Ok(Some(ms.swap_remove(0)));
    }
    let mut merged: serde_json::Value =
        serde_json::from_slice(&ms[0].bytes).map_err(|e| ClientError::Invalid(format!("signature manifest: {e}")))?;
    let already = theirs.len();
    let mut layers = theirs;
    for m in &ms {
        let v: serde_json::Value =
            serde_json::from_slice(&m.bytes).map_err(|e| ClientError::Invalid(format!("signature manifest: {e}")))?;
        for l in v["layers"].as_array().cloned().unwrap_or_default() {
            // The same payload signed by two keys: two layers, one blob.
            if !layers.contains(&l) {
                layers.push(l);
            }
        }
    }
    if already > 0 && layers.len() == already {
        return Ok(None);
    }
    if layers.len() > MAX_REFERRERS {
        return Err(ClientError::Invalid(format!(
            "{} signatures under one tag: more than a pull takes ({MAX_REFERRERS})",
            layers.len()
        )));
    }
    merged["layers"] = serde_json::Value::Array(layers);
    // Not a referrer itself (each signature is one already): under the tag only.
    if let Some(o) = merged.as_object_mut() {
        o.remove("subject");
    }
    let bytes = ingot_oci::config::canonical_json(&merged).map_err(|e| ClientError::Invalid(e.to_string()))?;
    Manifest::parse(bytes, Some(&ms[0].media_type))
        .map(Some)
        .map_err(|e| ClientError::Invalid(e.to_string()))
}

fn push_manifest(
    store: &Store,
    client: &Client,
    remote: &Remote,
    m: &Manifest,
    t: &mut Transfer,
    obs: &Obs,
) -> Result<(), ClientError> {
    let refs = m.references().map_err(|e| ClientError::Invalid(e.to_string()))?;
    let children: Vec<_> = refs.iter().filter(|r| r.role == Role::Manifest).collect();
    for c in children {
        let child = store.manifest(&c.digest, Some(&c.media_type))?;
        push_manifest(store, client, remote, &child, t, obs)?;
        client.put_manifest(remote, &child.digest.to_string(), &child)?;
    }
    let blobs: Vec<Digest> = refs
        .iter()
        .filter(|r| matches!(r.role, Role::Config | Role::Layer))
        .map(|r| r.digest.clone())
        .collect();
    let store_blobs = store.blobs().clone();
    let moved = parallel(&blobs, |d| client.push_blob(remote, &store_blobs, d, obs))?;
    t.blobs_moved += moved;
    t.blobs_skipped += blobs.len() - moved;
    Ok(())
}

/// Pulls `remote` into the store and tags it as `host/repo:tag`. An index
/// is resolved to this machine's platform.
pub fn pull(store: &mut Store, remote: &Remote, obs: Obs) -> Result<Transfer, ClientError> {
    pull_platform(store, remote, None, obs)
}

/// A platform as `os/arch[/variant]` names it (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's: linux and its architecture.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: ingot_oci::config::host_architecture().to_string(),
            variant: None,
        }
    }

    pub fn is_host(&self) -> bool {
        self.os == "linux" && self.architecture == ingot_oci::config::host_architecture()
    }
}

impl std::str::FromStr for Platform {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Platform, ClientError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if parts.iter().all(|p| ok(p)) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(ClientError::Invalid(format!(
                "platform {s:?}: expected OS/ARCH[/VARIANT] (linux/amd64)"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// [`pull`] with an index resolved to `platform` (default: this
/// machine's). An image of another platform is stored by digest only: the
/// tag keeps naming this machine's.
pub fn pull_platform(
    store: &mut Store,
    remote: &Remote,
    platform: Option<&Platform>,
    obs: Obs,
) -> Result<Transfer, ClientError> {
    let _lease = store.lease()?;
    let client = Client::new(remote.insecure);
    let reference = remote.reference();
    let host = Platform::host();
    let want = platform.unwrap_or(&host);
    let mut manifest = fetch_manifest(&client, remote)?;
    if let Content::Index(ix) = &manifest.content {
        let child = ix
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == want.os
                        && p.architecture().to_string() == want.architecture
                        && want
                            .variant
                            .as_ref()
                            .is_none_or(|v| p.variant().as_ref().is_some_and(|pv| pv == v))
                })
            })
            .ok_or_else(|| ClientError::Invalid(format!("{reference}: no {want} image in the index")))?;
        let d = child.digest().to_string();
        let (bytes, media_type) = client.get_manifest(remote, &d)?;
        manifest = Manifest::parse(bytes, Some(&media_type)).map_err(|e| ClientError::Invalid(format!("{d}: {e}")))?;
        if manifest.digest.to_string() != d {
            return Err(ClientError::Invalid(format!(
                "manifest {d} hashes to {}",
                manifest.digest
            )));
        }
    }
    let (moved, total) = fetch_content(store, &client, remote, &manifest, &obs)?;
    let referrers = if want.is_host() {
        register_pulled(store, &client, remote, &manifest, &obs)?
    } else {
        store.register(&manifest, &[])?;
        pull_referrers(store, &client, remote, &manifest.digest, &obs)?
    };
    Ok(Transfer {
        digest: Some(manifest.digest.clone()),
        blobs_moved: moved,
        blobs_skipped: total - moved,
        referrers,
    })
}

/// The manifest `remote` names (its digest, else its tag), checked
/// against the digest when one was given.
pub fn fetch_manifest(client: &Client, remote: &Remote) -> Result<Manifest, ClientError> {
    let reference = remote.reference();
    let (bytes, media_type) = client.get_manifest(remote, &reference)?;
    let manifest =
        Manifest::parse(bytes, Some(&media_type)).map_err(|e| ClientError::Invalid(format!("{reference}: {e}")))?;
    if let Some(d) = &remote.digest {
        let actual = Digest::of(d.algorithm(), &manifest.bytes);
        if actual != *d {
            return Err(ClientError::Invalid(format!("manifest hashes to {actual}, not {d}")));
        }
    }
    Ok(manifest)
}

/// Records a manifest whose content [`fetch_content`] stored, tagged
/// `host/repo:tag` (untagged when `remote` names a digest only), and
/// copies its referrers; returns how many were copied.
pub fn register_pulled(
    store: &mut Store,
    client: &Client,
    remote: &Remote,
    manifest: &Manifest,
    obs: &Obs,
) -> Result<usize, ClientError> {
    let name = format!(
        "{}/{}:{}",
        remote.host,
        remote.repo,
        remote.tag.as_deref().unwrap_or("latest")
    );
    let tags: Vec<Reference> = if remote.digest.is_some() && remote.tag.is_none() {
        Vec::new()
    } else {
        vec![name.parse().map_err(|e| ClientError::Invalid(format!("{name}: {e}")))?]
    };
    store.register(manifest, &tags)?;
    pull_referrers(store, client, remote, &manifest.digest, obs)
}

/// Copies the referrers of `subject` ([`referrers`]) into the store.
fn pull_referrers(
    store: &mut Store,
    client: &Client,
    remote: &Remote,
    subject: &Digest,
    obs: &Obs,
) -> Result<usize, ClientError> {
    let mut copied = 0;
    for m in referrers(client, remote, subject)? {
        if store.image(&m.digest).is_err() {
            copy_referrer(store, client, remote, &m, subject, obs)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// The manifests that refer to `subject` in `remote`'s repository: through
/// the referrers API, or, where it has none or it lists none, under
/// cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom`). Every manifest is
/// checked against its digest; one under a tag that names another subject
/// is refused, one that names none (as cosign writes them) is taken as
/// referring to `subject`: what it claims (a signature's payload names the
/// digest it signs) is for whoever verifies it to check, not the tag's.
pub fn referrers(client: &Client, remote: &Remote, subject: &Digest) -> Result<Vec<Manifest>, ClientError> {
    let mut out: Vec<Manifest> = Vec::new();
    let url = remote.url(&format!("referrers/{subject}"));
    let mut resp = client.send("GET", &url, &[("accept", media::OCI_INDEX)], None)?;
    if resp.status() == 200 {
        let text = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .map_err(|e| http_err(&url, e))?;
        let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| http_err(&url, e))?;
        let mut listed: Vec<Digest> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|desc| desc["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()))
            .collect();
        listed.sort();
        listed.dedup();
        if listed.len() > MAX_REFERRERS {
            return Err(ClientError::Invalid(format!(
                "{url}: {} referrers listed, more than the {MAX_REFERRERS} ingot takes",
                listed.len()
            )));
        }
        for d in listed {
            let (bytes, media_type) = client.get_manifest(remote, &d.to_string())?;
            let m = Manifest::parse(bytes, Some(&media_type))
                .map_err(|e| ClientError::Invalid(format!("referrer {d}: {e}")))?;
            if m.digest != d {
                return Err(ClientError::Invalid(format!("referrer {d} hashes to {}", m.digest)));
            }
            out.push(m);
        }
    } else {
        tracing::debug!(%url, status = %resp.status(), "no referrers API");
    }
    // Also where cosign puts them (a registry with the API may hold both).
    for kind in ["sig", "att", "sbom"] {
        let tag = cosign_tag(subject, kind);
        let Some((bytes, media_type)) = client.get_manifest_opt(remote, &tag)? else {
            continue;
        };
        let m = Manifest::parse(bytes, Some(&media_type)).map_err(|e| ClientError::Invalid(format!("{tag}: {e}")))?;
        let named = m
            .references()
            .map_err(|e| ClientError::Invalid(format!("{tag}: {e}")))?
            .into_iter()
            .find(|r| r.role == Role::Subject)
            .map(|r| r.digest);
        if let Some(n) = named.as_ref().filter(|n| *n != subject) {
            return Err(ClientError::Invalid(format!(
                "{tag}: its subject is {n}, not {subject}"
            )));
        }
        if out.iter().any(|o| o.digest == m.digest) {
            continue;
        }
        if named.is_none() {
            // Nothing but the tag says what it is about: a signature's
            // payloads must name `subject`; anything else is left.
            if kind != "sig" {
                tracing::debug!(%tag, "no subject: not taken");
                continue;
            }
            check_payloads(client, remote, &m, subject).map_err(|why| ClientError::Invalid(format!("{tag}: {why}")))?;
        }
        out.push(m);
    }
    Ok(out)
}

/// The most referrers ingot takes for one image.
pub const MAX_REFERRERS: usize = 256;

/// Every simple-signing payload of a signature manifest names `subject`.
fn check_payloads(client: &Client, remote: &Remote, m: &Manifest, subject: &Digest) -> Result<(), String> {
    let Content::Image(im) = &m.content else {
        return Err("not an image manifest".into());
    };
    let payloads: Vec<_> = im
        .layers()
        .iter()
        .filter(|l| l.media_type().to_string() == SIMPLE_SIGNING)
        .collect();
    if payloads.is_empty() || payloads.len() > MAX_REFERRERS {
        return Err(format!("{} signature payloads", payloads.len()));
    }
    for l in payloads {
        let d = Digest::try_from(l.digest()).map_err(|e| e.to_string())?;
        let body = get_blob(client, remote, &d, 1 << 20).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("payload {d}: {e}"))?;
        let named = v["critical"]["image"]["docker-manifest-digest"].as_str().unwrap_or("");
        if named != subject.to_string() {
            return Err(format!("its subject is {named}, not {subject}"));
        }
    }
    Ok(())
}

/// One blob of `remote`, into memory (at most `max` bytes), verified.
pub fn get_blob(client: &Client, remote: &Remote, d: &Digest, max: u64) -> Result<Vec<u8>, ClientError> {
    let url = remote.url(&format!("blobs/{d}"));
    let mut resp = client.send("GET", &url, &[], None)?;
    if resp.status() != 200 {
        return Err(http_err(&url, explain(resp)));
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(max)
        .read_to_vec()
        .map_err(|e| http_err(&url, e))?;
    let actual = Digest::of(d.algorithm(), &bytes);
    if actual != *d {
        return Err(ClientError::Invalid(format!("blob {d} hashes to {actual}")));
    }
    Ok(bytes)
}

/// Stores a referrer of `subject` fetched from `remote`: its blobs, its
/// manifest, its row.
fn copy_referrer(
    store: &mut Store,
    client: &Client,
    remote: &Remote,
    m: &Manifest,
    subject: &Digest,
    obs: &Obs,
) -> Result<(), ClientError> {
    fetch_content(store, client, remote, m, obs)?;
    store.register_referrer(m, subject)?;
    Ok(())
}

/// Downloads what `m` references (config and layers, up to 4 at once,
/// verified) and stores `m` itself, registering nothing: (blobs moved,
/// blobs referenced).
pub fn fetch_content(
    store: &Store,
    client: &Client,
    remote: &Remote,
    m: &Manifest,
    obs: &Obs,
) -> Result<(usize, usize), ClientError> {
    let refs = m.references().map_err(|e| ClientError::Invalid(e.to_string()))?;
    let blobs: Vec<(Digest, u64)> = refs
        .iter()
        .filter(|r| matches!(r.role, Role::Config | Role::Layer))
        .map(|r| (r.digest.clone(), r.size))
        .collect();
    let store_blobs = store.blobs().clone();
    let moved = parallel(&blobs, |(b, size)| {
        client.pull_blob(remote, &store_blobs, b, *size, obs)
    })?;
    if !store.blobs().exists(&m.digest) {
        let mut w = store.blobs().writer(Some(m.digest.clone()))?;
        std::io::Write::write_all(&mut w, &m.bytes).map_err(|e| ClientError::Invalid(e.to_string()))?;
        w.commit()?;
    }
    Ok((moved, blobs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_keep_quoted_commas() {
        let p = challenge_params(
            r#"realm="https://r/token",service="reg",scope="repository:a/b:pull,push",error=insufficient_scope"#,
        );
        assert_eq!(
            p,
            [
                ("realm".to_string(), "https://r/token".to_string()),
                ("service".to_string(), "reg".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
                ("error".to_string(), "insufficient_scope".to_string())
            ]
        );
    }

    #[test]
    fn remotes() {
        let r = Remote::parse("127.0.0.1:5000/team/app:1", false).unwrap();
        assert_eq!(
            (r.base.as_str(), r.repo.as_str(), r.tag.as_deref()),
            ("http://127.0.0.1:5000", "team/app", Some("1"))
        );
        let r = Remote::parse("registry.example.com/app", false).unwrap();
        assert_eq!(
            (r.base.as_str(), r.reference().as_str()),
            ("https://registry.example.com", "latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Remote::parse(&format!("localhost:5000/app@{d}"), false).unwrap();
        assert_eq!(r.reference(), d);
        for bad in ["app:1", "ubuntu/app", "host.io/../x", "host.io/App", "host.io/a:b/c"] {
            assert!(Remote::parse(bad, false).is_err(), "{bad}");
        }
    }
}
