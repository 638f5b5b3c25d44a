//! Stack bundles: a pinned stack shipped as one OCI artifact, built once
//! and deployed anywhere by digest (Docker's "distributed application
//! bundles", in a registry).
//!
//! A bundle is an OCI image manifest with artifact type [`ARTIFACT_TYPE`],
//! the empty config, and two layers: the Compose file as written
//! ([`COMPOSE_MEDIA`], Docker Compose's own media type) and the stack's
//! *application* ([`PINNED_MEDIA`]): the pinned stack's canonical JSON
//! without what belongs to one deployment (the engine, the bundle itself)
//! or to one host (the digests of secret values: secrets travel by name
//! only). Every image is named by manifest digest inside it. The manifest's
//! annotations repeat the stack's name and the application's digest, so a
//! bundle whose pinned JSON does not hash to what it claims is refused.
//!
//! Pushing a bundle pushes every image it names (by digest, with its
//! referrers) into the bundle's repository first, then the bundle and its
//! referrers (its signature, the stack's SBOM); pulling checks the bundle,
//! pulls every image, and only then records the bundle. Deploying one
//! (`PinnedStack::bundle`) fills in this host's secret digests; the daemon
//! checks that the stack it is sent is the bundle's application
//! ([`check`]) and the policy's `trusted_keys` against the bundle's own
//! signature (`crate::check_policy`).

use std::collections::BTreeMap;

use ingot_oci::config::canonical_json;
use ingot_oci::manifest::Content;
use ingot_oci::{media, Digest, Manifest, Reference};
use ingot_registry::client::{self, Client, Obs, Remote};
use ingot_store::Store;
use serde_json::{json, Value};

use crate::pin::{EngineKind, PinnedStack, SecretValue};
use crate::{DeployError, Result};

/// The artifact type of a stack bundle's manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.ingot.stack.bundle.v1+json";
/// Its layer holding the stack's application (pinned JSON).
pub const PINNED_MEDIA: &str = "application/vnd.ingot.stack.pinned.v1+json";
/// Its layer holding the Compose file (Docker Compose's media type).
pub const COMPOSE_MEDIA: &str = "application/vnd.docker.compose.file+yaml";
/// The stack's name, on the manifest.
pub const NAME_ANNOTATION: &str = "io.ingot.stack.name";
/// The application's digest, on the manifest.
pub const DIGEST_ANNOTATION: &str = "io.ingot.stack.digest";
const TITLE: &str = "org.opencontainers.image.title";
/// The most either layer may hold.
pub const MAX_LAYER: u64 = 4 << 20;

/// The application of `stack`: its canonical JSON without the engine, the
/// bundle it came from, and the digests of its secret values.
pub fn application(stack: &PinnedStack) -> Result<Vec<u8>> {
    let mut s = stack.clone();
    s.engine = EngineKind::Local;
    s.bundle = None;
    let mut v = serde_json::to_value(&s).map_err(|e| DeployError::Invalid(format!("stack {}: {e}", s.name)))?;
    each_secret_digest(&mut v, |_, o| {
        o.remove("digest");
        Ok(())
    })?;
    canonical_json(&v).map_err(|e| DeployError::Invalid(format!("stack {}: {e}", s.name)))
}

/// Calls `f` with the name and object of every place a pinned stack (as
/// JSON) holds a secret's digest: the stack's secrets and each service's
/// secret mounts.
fn each_secret_digest(
    v: &mut Value,
    mut f: impl FnMut(&str, &mut serde_json::Map<String, Value>) -> Result<()>,
) -> Result<()> {
    if let Some(secrets) = v.get_mut("secrets").and_then(Value::as_object_mut) {
        for (name, sec) in secrets.iter_mut() {
            if let Some(o) = sec.as_object_mut() {
                f(name, o)?;
            }
        }
    }
    if let Some(services) = v.get_mut("services").and_then(Value::as_object_mut) {
        for svc in services.values_mut() {
            for m in svc
                .get_mut("secrets")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(o) = m.as_object_mut() {
                    let name = o.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    f(&name, o)?;
                }
            }
        }
    }
    Ok(())
}

/// A bundle read back and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Its manifest's digest.
    pub digest: Digest,
    /// The stack's name.
    pub name: String,
    /// The application's digest (the pinned JSON layer's).
    pub application: Digest,
    /// The application, parsed.
    pub stack: Value,
    /// The Compose file as written.
    pub compose: Vec<u8>,
}

impl Bundle {
    /// Every service's image: (service, image as written, manifest digest).
    pub fn images(&self) -> Result<Vec<(String, String, Digest)>> {
        let mut out = Vec::new();
        for (name, s) in self.stack["services"].as_object().into_iter().flatten() {
            let digest = s["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| self.invalid(format!("service {name} names no image digest")))?;
            out.push((
                name.clone(),
                s["image"].as_str().unwrap_or_default().to_string(),
                digest,
            ));
        }
        Ok(out)
    }

    /// The names of the secrets the stack needs.
    pub fn secrets(&self) -> Vec<String> {
        self.stack["secrets"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The stack to deploy: the application with the digests of this
    /// host's `values` for its secrets (every one must be given).
    pub fn instantiate(&self, values: &BTreeMap<String, SecretValue>) -> Result<PinnedStack> {
        let mut v = self.stack.clone();
        let defined = self.secrets();
        let digest = |name: &str| -> Result<String> {
            if !defined.iter().any(|d| d == name) {
                return Err(self.invalid(format!(
                    "a service mounts secret {name:?}, which the stack does not define"
                )));
            }
            values
                .get(name)
                .map(|val| Digest::sha256(&val.0).to_string())
                .ok_or_else(|| {
                    DeployError::Invalid(format!("bundle {}: secret {name:?} has no value here", self.digest))
                })
        };
        each_secret_digest(&mut v, |name, o| {
            o.insert("digest".into(), Value::String(digest(name)?));
            Ok(())
        })?;
        let mut stack: PinnedStack = serde_json::from_value(v).map_err(|e| self.invalid(e.to_string()))?;
        stack.bundle = Some(self.digest.clone());
        Ok(stack)
    }

    fn invalid(&self, why: String) -> DeployError {
        DeployError::Invalid(format!("bundle {}: {why}", self.digest))
    }
}

/// Whether `m` is a stack bundle.
pub fn is_bundle(m: &Manifest) -> bool {
    client::artifact_type(m).is_some_and(|t| t == ARTIFACT_TYPE)
}

/// The bundle of `stack` (pinned from `compose`), stored and recorded,
/// tagged `tag` if given. The same stack and file give the same digest.
pub fn make(store: &mut Store, stack: &PinnedStack, compose: &[u8], tag: Option<&Reference>) -> Result<Digest> {
    let app = application(stack)?;
    for (what, len) in [("pinned stack", app.len()), ("Compose file", compose.len())] {
        if len as u64 > MAX_LAYER {
            return Err(DeployError::Invalid(format!(
                "stack {}: its {what} is {len} bytes, more than a bundle holds ({MAX_LAYER})",
                stack.name
            )));
        }
    }
    let _lease = store.lease()?;
    let blobs = store.blobs();
    let app_digest = blobs.put(&app)?;
    let compose_digest = blobs.put(compose)?;
    let empty = blobs.put(b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": media::OCI_EMPTY, "digest": empty.to_string(), "size": 2},
        "layers": [
            {"mediaType": COMPOSE_MEDIA, "digest": compose_digest.to_string(), "size": compose.len(),
             "annotations": {TITLE: "compose.yaml"}},
            {"mediaType": PINNED_MEDIA, "digest": app_digest.to_string(), "size": app.len(),
             "annotations": {TITLE: "stack.json"}},
        ],
        "annotations": {NAME_ANNOTATION: stack.name, DIGEST_ANNOTATION: app_digest.to_string()},
    });
    let bytes = canonical_json(&manifest).map_err(|e| DeployError::Invalid(e.to_string()))?;
    store.blobs().put(&bytes)?;
    let m = Manifest::parse(bytes, Some(media::OCI_MANIFEST)).map_err(|e| DeployError::Invalid(e.to_string()))?;
    store.register(&m, tag.map(std::slice::from_ref).unwrap_or_default())?;
    Ok(m.digest)
}

/// Reads and checks the bundle `m` whose blobs are in the store (it need
/// not be recorded yet): its type, its layers, the application against
/// the digest the manifest claims and against the pinned stack's form.
pub fn parse(store: &Store, m: &Manifest) -> Result<Bundle> {
    let o = outline(m)?;
    let read = |(d, size): &(Digest, u64)| -> Result<Vec<u8>> {
        let have = store.blobs().size(d)?;
        if have != *size {
            return Err(DeployError::Invalid(format!(
                "bundle {}: layer {d} is {have} bytes, the manifest declares {size}",
                m.digest
            )));
        }
        Ok(store.blobs().read(d)?)
    };
    let app = read(&o.application)?;
    let compose = read(&o.compose)?;
    from_parts(&m.digest, &o.name, &o.claimed, &app, compose)
}

/// What a bundle's manifest says, checked before any of its blobs is read
/// or fetched: its type, an empty config, exactly its two layers (digest
/// and declared size, each at most [`MAX_LAYER`]), its annotations.
struct Outline {
    name: String,
    claimed: Digest,
    application: (Digest, u64),
    compose: (Digest, u64),
}

fn outline(m: &Manifest) -> Result<Outline> {
    let bad = |why: String| DeployError::Invalid(format!("bundle {}: {why}", m.digest));
    let Content::Image(im) = &m.content else {
        return Err(bad("an index, not a stack bundle".into()));
    };
    if !is_bundle(m) {
        return Err(bad(format!(
            "not a stack bundle (its artifactType is not {ARTIFACT_TYPE})"
        )));
    }
    if im.config().size() > 64 {
        return Err(bad(format!(
            "its config is {} bytes, not the empty one",
            im.config().size()
        )));
    }
    if im.layers().len() != 2 {
        return Err(bad(format!(
            "{} layers, not 2 (compose file, pinned stack)",
            im.layers().len()
        )));
    }
    let annotations = im.annotations().clone().unwrap_or_default();
    let name = annotations
        .get(NAME_ANNOTATION)
        .cloned()
        .ok_or_else(|| bad(format!("no {NAME_ANNOTATION} annotation")))?;
    let claimed: Digest = annotations
        .get(DIGEST_ANNOTATION)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad(format!("no valid {DIGEST_ANNOTATION} annotation")))?;
    let layer = |media_type: &str| -> Result<(Digest, u64)> {
        let mut found = im.layers().iter().filter(|l| l.media_type().to_string() == media_type);
        let (Some(l), None) = (found.next(), found.next()) else {
            return Err(bad(format!("not exactly one {media_type} layer")));
        };
        if l.size() > MAX_LAYER {
            return Err(bad(format!(
                "its {media_type} layer is {} bytes, more than {MAX_LAYER}",
                l.size()
            )));
        }
        let d = Digest::try_from(l.digest()).map_err(|e| bad(e.to_string()))?;
        Ok((d, l.size()))
    };
    Ok(Outline {
        name,
        claimed,
        application: layer(PINNED_MEDIA)?,
        compose: layer(COMPOSE_MEDIA)?,
    })
}

/// A bundle from its parts (manifest digest, the annotations' name and
/// application digest, the two layers), every claim checked; touches
/// nothing but its arguments.
pub fn from_parts(digest: &Digest, name: &str, claimed: &Digest, app: &[u8], compose: Vec<u8>) -> Result<Bundle> {
    let bad = |why: String| DeployError::Invalid(format!("bundle {digest}: {why}"));
    let application = Digest::sha256(app);
    if application != *claimed {
        return Err(bad(format!(
            "its pinned stack hashes to {application}, not the {claimed} it claims"
        )));
    }
    let stack: Value = serde_json::from_slice(app).map_err(|e| bad(format!("pinned stack: {e}")))?;
    if canonical_json(&stack).ok().as_deref() != Some(app) {
        return Err(bad("the pinned stack is not in canonical form".into()));
    }
    if stack["name"] != name {
        return Err(bad(format!("names stack {name:?} but holds stack {}", stack["name"])));
    }
    let b = Bundle {
        digest: digest.clone(),
        name: name.to_string(),
        application,
        stack,
        compose,
    };
    // The form of a pinned stack (secret digests aside) and its own checks.
    let mut values = BTreeMap::new();
    for s in b.secrets() {
        values.insert(s, SecretValue(Vec::new()));
    }
    let pinned = b.instantiate(&values)?;
    crate::pin::check_stack_name(&pinned.name).map_err(|why| bad(format!("stack name {:?}: {why}", pinned.name)))?;
    if application_digest(&pinned)? != b.application {
        return Err(bad("the pinned stack is not an application: a field ingot does not know, or an engine, bundle or secret digest".into()));
    }
    Ok(b)
}

/// The digest of `stack`'s application.
pub fn application_digest(stack: &PinnedStack) -> Result<Digest> {
    Ok(Digest::sha256(&application(stack)?))
}

/// Reads the recorded bundle `input` (a name or digest) from the store.
pub fn read(store: &Store, input: &str) -> Result<Bundle> {
    let img = store.resolve(input)?;
    parse(store, &img.manifest)
}

/// Checks a stack that says it comes from a bundle: the bundle is in the
/// store and `stack` is its application (the daemon trusts nothing else).
pub fn check(store: &Store, stack: &PinnedStack) -> Result<()> {
    let Some(d) = &stack.bundle else { return Ok(()) };
    let b = read(store, &d.to_string()).map_err(|e| DeployError::Field {
        field: "stack.bundle".into(),
        why: e.to_string(),
    })?;
    let got = application_digest(stack)?;
    if got != b.application {
        return Err(DeployError::Field {
            field: "stack.bundle".into(),
            why: format!(
                "the stack sent is not bundle {d}'s: its application hashes to {got}, the bundle's to {}",
                b.application
            ),
        });
    }
    Ok(())
}

/// The stack's SBOM (CycloneDX): one component per image, by digest, with
/// the SBOMs attached to it in the store as external references; attached
/// to the bundle as a referrer. Returns its manifest's digest.
pub fn attach_sbom(store: &mut Store, bundle: &Digest) -> Result<Digest> {
    let b = read(store, &bundle.to_string())?;
    let mut components = Vec::new();
    for (service, image, digest) in b.images()? {
        let mut refs = Vec::new();
        for r in store.referrers(&digest)? {
            let m = store.manifest(&r, None)?;
            let v: Value = serde_json::from_slice(&m.bytes).unwrap_or(Value::Null);
            let kind = v["artifactType"].as_str().unwrap_or_default();
            if kind.contains("spdx") || kind.contains("cyclonedx") {
                refs.push(
                    json!({"type": "bom", "url": format!("oci:{digest}/referrers/{r}"), "comment": kind,
                    "hashes": [{"alg": "SHA-256", "content": r.hex()}]}),
                );
            }
        }
        components.push(json!({
            "type": "container", "bom-ref": format!("service:{service}"), "name": image,
            "version": digest.to_string(), "description": format!("service {service}"),
            "hashes": [{"alg": "SHA-256", "content": digest.hex()}],
            "externalReferences": refs,
        }));
    }
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "serialNumber": format!("urn:uuid:{}", uuid_of(&b.digest)),
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "ingot", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {"type": "application", "bom-ref": "stack", "name": b.name, "version": b.digest.to_string()},
        },
        "components": components,
    });
    let bytes = canonical_json(&doc).map_err(|e| DeployError::Invalid(e.to_string()))?;
    // The same bundle gives the same document and manifest: recorded once.
    ingot_sbom::documents::attach_document(store, bundle, ingot_sbom::documents::CYCLONEDX_MEDIA_TYPE, &bytes)
        .map_err(|e| DeployError::Invalid(e.to_string()))
}

/// A UUID (v4 layout) derived from `d`: one bundle, one serial number.
fn uuid_of(d: &Digest) -> String {
    let h = d.hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// What [`push`] moved.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    pub digest: Option<Digest>,
    pub images: usize,
    pub blobs_moved: usize,
    pub referrers: usize,
}

/// Pushes the recorded bundle `bundle` to `remote` (its tag): every image
/// it names, by digest with its referrers, into the same repository, then
/// the bundle with its referrers.
pub fn push(store: &Store, bundle: &Digest, remote: &Remote, obs: Obs) -> Result<Pushed> {
    let b = read(store, &bundle.to_string())?;
    let mut out = Pushed::default();
    let mut seen = std::collections::BTreeSet::new();
    for (service, _, digest) in b.images()? {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let at = Remote {
            tag: None,
            digest: Some(digest.clone()),
            ..remote.clone()
        };
        let t = client::push(store, &digest.to_string(), &at, obs.clone())
            .map_err(|e| DeployError::Invalid(format!("bundle {bundle}: service {service}'s image {digest}: {e}")))?;
        out.images += 1;
        out.blobs_moved += t.blobs_moved;
        out.referrers += t.referrers;
    }
    let t = client::push(store, &bundle.to_string(), remote, obs).map_err(registry_err)?;
    out.blobs_moved += t.blobs_moved;
    out.referrers += t.referrers;
    out.digest = Some(b.digest);
    Ok(out)
}

/// What [`pull`] brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub bundle: Bundle,
    /// Images pulled (the others were in the store already).
    pub images: usize,
    pub referrers: usize,
}

/// Pulls the bundle `remote` names and every image it names (from the same
/// repository, by digest, with referrers). The bundle is checked before
/// any image moves and recorded (tagged `host/repo:tag`) only after all
/// of them are in: a bundle whose images the registry lacks leaves nothing
/// recorded.
pub fn pull(store: &mut Store, remote: &Remote, obs: Obs) -> Result<Pulled> {
    let _lease = store.lease()?;
    let c = Client::new(remote.insecure);
    let reference = remote.reference();
    let m = client::fetch_manifest(&c, remote).map_err(registry_err)?;
    if !is_bundle(&m) {
        return Err(DeployError::Invalid(format!(
            "{}/{}:{reference} ({}) is not a stack bundle (its artifactType is not {ARTIFACT_TYPE})",
            remote.host, remote.repo, m.digest
        )));
    }
    // Its shape and sizes before any of its blobs moves.
    outline(&m)?;
    client::fetch_content(store, &c, remote, &m, &obs).map_err(registry_err)?;
    let b = parse(store, &m)?;
    let mut images = 0;
    let mut referrers = 0;
    for (service, _, digest) in b.images()? {
        if store.image(&digest).is_ok() {
            continue;
        }
        let at = Remote {
            tag: None,
            digest: Some(digest.clone()),
            ..remote.clone()
        };
        let t = client::pull(store, &at, obs.clone()).map_err(|e| {
            DeployError::Invalid(format!(
                "bundle {}: service {service}'s image {digest} cannot be pulled from {}/{}: {e}",
                b.digest, remote.host, remote.repo
            ))
        })?;
        // An index's digest pulls this platform's image: not the one named.
        if store.image(&digest).is_err() {
            return Err(DeployError::Invalid(format!(
                "bundle {}: service {service}'s image {digest} is an index, not an image manifest (pin the image itself)",
                b.digest
            )));
        }
        images += 1;
        referrers += t.referrers;
    }
    referrers += client::register_pulled(store, &c, remote, &m, &obs).map_err(registry_err)?;
    Ok(Pulled {
        bundle: b,
        images,
        referrers,
    })
}

fn registry_err(e: ingot_registry::ClientError) -> DeployError {
    DeployError::Invalid(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> PinnedStack {
        let policy = json!({"parallelism": 1, "delay_ms": 0, "failure_action": "rollback",
            "monitor_ms": 0, "max_failure_ratio": 0.0, "order": "stop-first"});
        let secret = format!("sha256:{}", "5e".repeat(32));
        serde_json::from_value(json!({
            "name": "shop", "configs": {},
            "secrets": {"pw": {"digest": secret}},
            "services": {"web": {
                "image": "web:1", "digest": format!("sha256:{}", "ab".repeat(32)), "command": null,
                "entrypoint": null, "env": [], "ports": [], "health": null, "replicas": 2,
                "update": policy, "rollback": policy,
                "restart": {"condition": "any", "delay_ms": 0, "max_attempts": null},
                "configs": [], "user": null, "workdir": null, "stop_grace_ms": 0,
                "secrets": [{"name": "pw", "digest": secret, "target": "/run/secrets/pw", "uid": 0, "gid": 0, "mode": 256}],
            }},
        }))
        .unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn secrets_travel_by_name_and_the_engine_not_at_all() {
        let s = stack();
        let app = String::from_utf8(application(&s).unwrap()).unwrap();
        assert!(!app.contains(&"5e".repeat(32)), "no secret digest: {app}");
        let mut swarm = s.clone();
        swarm.engine = EngineKind::Swarm;
        assert_eq!(
            application(&swarm).unwrap(),
            app.as_bytes(),
            "same application on any engine"
        );
    }

    #[test]
    fn a_bundle_round_trips_and_takes_this_hosts_secrets() {
        let (_d, mut st) = store();
        let s = stack();
        let tag: Reference = "stacks/shop:1".parse().unwrap();
        let d = make(&mut st, &s, b"services: {}\n", Some(&tag)).unwrap();
        assert_eq!(make(&mut st, &s, b"services: {}\n", None).unwrap(), d, "reproducible");
        let b = read(&st, "stacks/shop:1").unwrap();
        assert_eq!(
            (b.name.as_str(), b.compose.as_slice()),
            ("shop", &b"services: {}\n"[..])
        );
        assert_eq!(b.images().unwrap()[0].0, "web");
        let mut values = BTreeMap::new();
        let err = b.instantiate(&values).unwrap_err().to_string();
        assert!(err.contains("secret \"pw\" has no value"), "{err}");
        values.insert("pw".to_string(), SecretValue(b"hunter2".to_vec()));
        let got = b.instantiate(&values).unwrap();
        assert_eq!(got.bundle.as_ref(), Some(&d));
        assert_eq!(got.secrets["pw"].digest, Digest::sha256(b"hunter2"));
        assert_eq!(got.services["web"].secrets[0].digest, Digest::sha256(b"hunter2"));
        check(&st, &got).unwrap();
        // A stack that is not the bundle's application is refused.
        let mut other = got.clone();
        other.services.get_mut("web").unwrap().replicas = 9;
        let err = check(&st, &other).unwrap_err().to_string();
        assert!(err.contains("not bundle"), "{err}");
    }

    /// A manifest like `make`'s over the given layers and annotation.
    fn forged(st: &Store, app: &[u8], claimed: &Digest, artifact_type: &str) -> Manifest {
        let app_d = st.blobs().put(app).unwrap();
        let compose = st.blobs().put(b"x").unwrap();
        let empty = st.blobs().put(b"{}").unwrap();
        let m = json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": media::OCI_EMPTY, "digest": empty.to_string(), "size": 2},
            "layers": [
                {"mediaType": COMPOSE_MEDIA, "digest": compose.to_string(), "size": 1},
                {"mediaType": PINNED_MEDIA, "digest": app_d.to_string(), "size": app.len()},
            ],
            "annotations": {NAME_ANNOTATION: "shop", DIGEST_ANNOTATION: claimed.to_string()},
        });
        Manifest::parse(canonical_json(&m).unwrap(), Some(media::OCI_MANIFEST)).unwrap()
    }

    #[test]
    fn the_fuzz_seed_is_a_bundle() {
        let seed = include_bytes!("../../../fuzz/seeds/bundle/shop.json");
        let b = from_parts(&Digest::sha256(b"m"), "shop", &Digest::sha256(seed), seed, Vec::new()).unwrap();
        assert_eq!(b.secrets(), ["pw"]);
    }

    #[test]
    fn tampered_and_foreign_bundles_are_refused() {
        let (_d, st) = store();
        let app = application(&stack()).unwrap();
        let good = Digest::sha256(&app);
        parse(&st, &forged(&st, &app, &good, ARTIFACT_TYPE)).unwrap();
        // The pinned JSON edited, the annotation left.
        let edited = String::from_utf8(app.clone())
            .unwrap()
            .replace("\"replicas\":2", "\"replicas\":3");
        let err = parse(&st, &forged(&st, edited.as_bytes(), &good, ARTIFACT_TYPE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hashes to") && err.contains("not the"), "{err}");
        let err = parse(&st, &forged(&st, &app, &good, "application/vnd.other"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a stack bundle"), "{err}");
        // Fields ingot does not know, or not canonical JSON.
        let mut v: Value = serde_json::from_slice(&app).unwrap();
        v["services"]["web"]["privileged"] = json!(true);
        let extra = canonical_json(&v).unwrap();
        let err = parse(&st, &forged(&st, &extra, &Digest::sha256(&extra), ARTIFACT_TYPE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("privileged"), "{err}");
        let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&app).unwrap()).unwrap();
        let err = parse(&st, &forged(&st, &pretty, &Digest::sha256(&pretty), ARTIFACT_TYPE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("canonical"), "{err}");
        // Hostile: not JSON at all, a bad stack name.
        let err = parse(&st, &forged(&st, b"\xff", &Digest::sha256(b"\xff"), ARTIFACT_TYPE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pinned stack"), "{err}");
    }
}
