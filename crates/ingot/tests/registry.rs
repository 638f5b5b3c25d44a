//! The registry: a conformance suite over every endpoint of the OCI
//! distribution spec 1.1 against a real `ingot serve`, and interop with real
//! clients and servers (skopeo both ways, docker where an engine answers,
//! ingot's client against Debian's distribution registry).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ingot_testsupport::{have, sample_rootfs, skip, Ingot, Served};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// A running `ingot serve`, stopped when dropped.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, k: &str) -> &str {
        self.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_string()
    }
}

fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = agent().run(req.body(body.to_vec()).unwrap()).unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap_or_default()
    };
    Resp { status, headers, body }
}

fn sha256(data: &[u8]) -> String {
    ingot_oci::Digest::sha256(data).to_string()
}

fn push_blob(base: &str, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = call(
        "POST",
        &format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"),
        &[],
        data,
    );
    assert_eq!(
        r.status,
        201,
        "monolithic upload of {d}: {}",
        String::from_utf8_lossy(&r.body)
    );
    d
}

fn manifest(config: &str, config_size: usize, layers: &[(String, usize)], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&m).unwrap()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn conformance_every_endpoint_status_and_header() {
    let ingot = Ingot::new(BIN);
    let srv = Served::start(&ingot, &[]);
    let b = srv.base.as_str();

    // Base.
    let r = call("GET", &format!("{b}/v2/"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");

    // Monolithic upload; GET, HEAD, ranges.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d = push_blob(b, "conf/a", &data);
    let r = call("HEAD", &format!("{b}/v2/conf/a/blobs/{d}"), &[], b"");
    assert_eq!(
        (r.status, r.header("content-length"), r.header("docker-content-digest")),
        (200, "100000", d.as_str())
    );
    let r = call("GET", &format!("{b}/v2/conf/a/blobs/{d}"), &[], b"");
    assert_eq!((r.status, r.body == data), (200, true));
    let r = call(
        "GET",
        &format!("{b}/v2/conf/a/blobs/{d}"),
        &[("range", "bytes=10-19")],
        b"",
    );
    assert_eq!(
        (r.status, &r.body[..], r.header("content-range")),
        (206, &data[10..20], "bytes 10-19/100000")
    );
    let r = call(
        "GET",
        &format!("{b}/v2/conf/a/blobs/{d}"),
        &[("range", "bytes=200000-")],
        b"",
    );
    assert_eq!(r.status, 416);
    // RFC 9110: the suffix form, and an end past the blob trimmed.
    for (range, from, content_range) in [
        ("bytes=-10", 99_990, "bytes 99990-99999/100000"),
        ("bytes=99995-200000", 99_995, "bytes 99995-99999/100000"),
    ] {
        let r = call("GET", &format!("{b}/v2/conf/a/blobs/{d}"), &[("range", range)], b"");
        assert_eq!(
            (r.status, &r.body[..], r.header("content-range")),
            (206, &data[from..], content_range),
            "{range}"
        );
    }
    // Not in another repository.
    let r = call("GET", &format!("{b}/v2/conf/other/blobs/{d}"), &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UNKNOWN"));
    // A wrong digest is refused and nothing is stored.
    let wrong = sha256(b"something else");
    let r = call(
        "POST",
        &format!("{b}/v2/conf/a/blobs/uploads/?digest={wrong}"),
        &[],
        b"payload",
    );
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = call(
        "POST",
        &format!("{b}/v2/conf/a/blobs/uploads/?digest=sha256:nothex"),
        &[],
        b"x",
    );
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));

    // Chunked upload: in-order chunks, status, an out-of-order chunk is 416.
    // Each chunk is three times the server's write batch (1 MiB; hyper
    // hands a body over in frames of at most ~400 KiB), so every one is
    // hashed and written in several trips.
    const C: usize = 3_200_000;
    let big: Vec<u8> = (0..3 * C as u32).map(|i| (i % 253) as u8).collect();
    let range = |k: usize| format!("{}-{}", k * C, (k + 1) * C - 1);
    let r = call("POST", &format!("{b}/v2/conf/a/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202);
    let loc = format!("{b}{}", r.header("location"));
    assert!(!r.header("docker-upload-uuid").is_empty());
    let r = call(
        "PATCH",
        &loc,
        &[
            ("content-range", range(0).as_str()),
            ("content-type", "application/octet-stream"),
        ],
        &big[..C],
    );
    assert_eq!((r.status, r.header("range")), (202, range(0).as_str()));
    let r = call("PATCH", &loc, &[("content-range", range(2).as_str())], &big[2 * C..]);
    assert_eq!(r.status, 416, "out-of-order chunk");
    let r = call("GET", &loc, &[], b"");
    assert_eq!((r.status, r.header("range")), (204, range(0).as_str()));
    let r = call("PATCH", &loc, &[("content-range", range(1).as_str())], &big[C..2 * C]);
    assert_eq!(r.status, 202);
    let bd = sha256(&big);
    let r = call(
        "PUT",
        &format!("{loc}?digest={bd}"),
        &[("content-range", range(2).as_str())],
        &big[2 * C..],
    );
    assert_eq!((r.status, r.header("docker-content-digest")), (201, bd.as_str()));
    assert_eq!(call("GET", &format!("{b}/v2/conf/a/blobs/{bd}"), &[], b"").body, big);
    // The finished session is gone; a cancelled one too.
    assert_eq!(call("GET", &loc, &[], b"").code(), "BLOB_UPLOAD_UNKNOWN");
    let r = call("POST", &format!("{b}/v2/conf/a/blobs/uploads/"), &[], b"");
    let loc2 = format!("{b}{}", r.header("location"));
    assert_eq!(call("DELETE", &loc2, &[], b"").status, 204);
    assert_eq!(call("PATCH", &loc2, &[], b"x").status, 404);

    // sha512 digests.
    let d512 = ingot_oci::Digest::of(ingot_oci::Algorithm::Sha512, b"sha512 content").to_string();
    let r = call(
        "POST",
        &format!("{b}/v2/conf/a/blobs/uploads/?digest={d512}"),
        &[],
        b"sha512 content",
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        call("GET", &format!("{b}/v2/conf/a/blobs/{d512}"), &[], b"").body,
        b"sha512 content"
    );

    // Cross-repository mount; an unknown source falls back to a session.
    let r = call(
        "POST",
        &format!("{b}/v2/conf/b/blobs/uploads/?mount={d}&from=conf/a"),
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.header("location")),
        (201, format!("/v2/conf/b/blobs/{d}").as_str())
    );
    let r = call(
        "POST",
        &format!("{b}/v2/conf/b/blobs/uploads/?mount={wrong}&from=conf/a"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);

    // Manifests: by tag and digest, byte-exact, digest headers.
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = push_blob(b, "conf/a", config);
    let m = manifest(&cd, config.len(), &[(d.clone(), data.len())], json!({}));
    let md = sha256(&m);
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/v1"),
        &[("content-type", OCI_MANIFEST)],
        &m,
    );
    assert_eq!((r.status, r.header("docker-content-digest")), (201, md.as_str()));
    assert_eq!(r.header("location"), format!("/v2/conf/a/manifests/{md}"));
    for reference in ["v1", md.as_str()] {
        let r = call(
            "GET",
            &format!("{b}/v2/conf/a/manifests/{reference}"),
            &[("accept", OCI_MANIFEST)],
            b"",
        );
        assert_eq!(
            (r.status, r.body == m, r.header("content-type")),
            (200, true, OCI_MANIFEST)
        );
        assert_eq!(r.header("docker-content-digest"), md);
        let r = call("HEAD", &format!("{b}/v2/conf/a/manifests/{reference}"), &[], b"");
        assert_eq!(
            (r.status, r.header("content-length")),
            (200, m.len().to_string().as_str())
        );
    }
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/{md}"),
        &[("content-type", OCI_MANIFEST)],
        &m,
    );
    assert_eq!(r.status, 201, "put by digest");
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/{}", sha256(b"x")),
        &[("content-type", OCI_MANIFEST)],
        &m,
    );
    assert_eq!(r.code(), "DIGEST_INVALID");
    // A manifest whose blob the repository lacks; garbage; too large.
    let missing = manifest(&cd, config.len(), &[(sha256(b"absent"), 6)], json!({}));
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/v2"),
        &[("content-type", OCI_MANIFEST)],
        &missing,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/v2"),
        &[("content-type", OCI_MANIFEST)],
        b"{not json",
    );
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_INVALID"));
    let huge = vec![b' '; 5 << 20];
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/v2"),
        &[("content-type", OCI_MANIFEST)],
        &huge,
    );
    assert_eq!(r.status, 413);
    let r = call("GET", &format!("{b}/v2/conf/a/manifests/nope"), &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));

    // Tags: lexical order, pagination with Link.
    for t in ["b", "a", "c", "10", "1"] {
        let r = call(
            "PUT",
            &format!("{b}/v2/conf/a/manifests/{t}"),
            &[("content-type", OCI_MANIFEST)],
            &m,
        );
        assert_eq!(r.status, 201);
    }
    let r = call("GET", &format!("{b}/v2/conf/a/tags/list"), &[], b"");
    assert_eq!(
        r.json(),
        json!({"name": "conf/a", "tags": ["1", "10", "a", "b", "c", "v1"]})
    );
    let r = call("GET", &format!("{b}/v2/conf/a/tags/list?n=2"), &[], b"");
    assert_eq!(r.json()["tags"], json!(["1", "10"]));
    assert_eq!(r.header("link"), "</v2/conf/a/tags/list?n=2&last=10>; rel=\"next\"");
    let r = call("GET", &format!("{b}/v2/conf/a/tags/list?n=2&last=10"), &[], b"");
    assert_eq!(r.json()["tags"], json!(["a", "b"]));
    let r = call("GET", &format!("{b}/v2/conf/a/tags/list?n=10&last=c"), &[], b"");
    assert_eq!((r.json()["tags"].clone(), r.header("link")), (json!(["v1"]), ""));
    assert_eq!(
        call("GET", &format!("{b}/v2/conf/nothing/tags/list"), &[], b"").code(),
        "NAME_UNKNOWN"
    );
    let r = call("GET", &format!("{b}/v2/_catalog"), &[], b"");
    assert_eq!(r.json()["repositories"], json!(["conf/a", "conf/b"]));
    let r = call("GET", &format!("{b}/v2/_catalog?n=1"), &[], b"");
    assert_eq!(r.json()["repositories"], json!(["conf/a"]));
    assert!(r.header("link").contains("last=conf/a"));

    // Referrers: an artifact with a subject; artifactType filter.
    let empty = push_blob(b, "conf/a", b"{}");
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()},
        "annotations": {"org.example.k": "v"},
    }))
    .unwrap();
    let sd = sha256(&sig);
    let r = call(
        "PUT",
        &format!("{b}/v2/conf/a/manifests/{sd}"),
        &[("content-type", OCI_MANIFEST)],
        &sig,
    );
    assert_eq!((r.status, r.header("oci-subject")), (201, md.as_str()));
    let r = call("GET", &format!("{b}/v2/conf/a/referrers/{md}"), &[], b"");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, "application/vnd.oci.image.index.v1+json")
    );
    let list = r.json()["manifests"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        (list[0]["digest"].as_str(), list[0]["artifactType"].as_str()),
        (Some(sd.as_str()), Some("application/vnd.example.sig"))
    );
    assert_eq!(list[0]["annotations"]["org.example.k"], "v");
    let r = call(
        "GET",
        &format!("{b}/v2/conf/a/referrers/{md}?artifactType=application/vnd.other"),
        &[],
        b"",
    );
    assert_eq!(
        (
            r.json()["manifests"].as_array().unwrap().len(),
            r.header("oci-filters-applied")
        ),
        (0, "artifactType")
    );
    let r = call("GET", &format!("{b}/v2/conf/a/referrers/{}", sha256(b"none")), &[], b"");
    assert_eq!((r.status, r.json()["manifests"].clone()), (200, json!([])));

    // Deletes.
    assert_eq!(
        call("DELETE", &format!("{b}/v2/conf/a/manifests/a"), &[], b"").status,
        202
    );
    assert_eq!(call("GET", &format!("{b}/v2/conf/a/manifests/a"), &[], b"").status, 404);
    assert_eq!(
        call("DELETE", &format!("{b}/v2/conf/a/manifests/{sd}"), &[], b"").status,
        202
    );
    assert_eq!(
        call("GET", &format!("{b}/v2/conf/a/manifests/{sd}"), &[], b"").status,
        404
    );
    assert_eq!(
        call("DELETE", &format!("{b}/v2/conf/b/blobs/{d}"), &[], b"").status,
        202
    );
    assert_eq!(call("GET", &format!("{b}/v2/conf/b/blobs/{d}"), &[], b"").status, 404);

    // Hostile names never reach the file system.
    for path in [
        "/v2/../../etc/manifests/x",
        "/v2/A/manifests/x",
        "/v2/a//b/tags/list",
        "/v2/a/blobs/uploads/..%2f..%2fx",
    ] {
        let r = call("GET", &format!("{b}{path}"), &[], b"");
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
    }
    drop(srv);
    assert_eq!(
        ingot.json(&["fsck"])["problems"],
        json!([]),
        "store consistent after the suite"
    );
}

#[test]
fn tag_immutability_refuses_moving_a_tag() {
    let ingot = Ingot::new(BIN);
    let srv = Served::start(&ingot, &["--tag-immutability"]);
    let b = srv.base.as_str();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = push_blob(b, "imm", config);
    let l1 = push_blob(b, "imm", b"one");
    let l2 = push_blob(b, "imm", b"two");
    let m1 = manifest(&cd, config.len(), &[(l1, 3)], json!({}));
    let m2 = manifest(&cd, config.len(), &[(l2, 3)], json!({}));
    let put = |m: &[u8]| {
        call(
            "PUT",
            &format!("{b}/v2/imm/manifests/v1"),
            &[("content-type", OCI_MANIFEST)],
            m,
        )
    };
    assert_eq!(put(&m1).status, 201);
    assert_eq!(put(&m1).status, 201, "the same digest again is fine");
    let r = put(&m2);
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    assert_eq!(call("GET", &format!("{b}/v2/imm/manifests/v1"), &[], b"").body, m1);
}

/// A local image to push: an imported sample rootfs.
fn sample_image(ingot: &Ingot, name: &str) -> String {
    let tar = ingot.write("rootfs.tar", &sample_rootfs(300_000, 9));
    ingot
        .ok(&["import", "-q", tar.to_str().unwrap(), name])
        .trim()
        .to_string()
}

#[test]
fn ingot_push_pull_round_trip_and_skopeo_both_ways() {
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "app:1");
    let server_root = Ingot::new(BIN);
    let srv = Served::start(&server_root, &[]);
    let host = srv.base.trim_start_matches("http://").to_string();
    let out = src.ok(&["push", "app:1", &format!("{host}/team/app:1")]);
    assert!(
        out.contains(&digest) && out.contains("2 blobs sent"),
        "config and layer sent: {out}"
    );
    let again = src.ok(&["push", "app:1", &format!("{host}/team/app:1")]);
    assert!(again.contains("0 blobs sent"), "existing blobs skipped: {again}");
    let dst = Ingot::new(BIN);
    let out = dst.ok(&["pull", &format!("{host}/team/app:1")]);
    assert!(out.contains(&digest), "{out}");
    assert_eq!(
        dst.json(&["inspect", &format!("{host}/team/app:1")])[0]["digest"],
        digest.as_str()
    );
    assert_eq!(dst.json(&["fsck"])["problems"], json!([]));
    // By digest, and errors.
    dst.ok(&["pull", &format!("{host}/team/app@{digest}")]);
    assert!(dst
        .fails(&["pull", &format!("{host}/team/nope:1")])
        .contains("MANIFEST_UNKNOWN"));
    assert!(dst
        .fails(&["pull", "no-registry-here"])
        .contains("expected REGISTRY/REPOSITORY"));
    assert!(dst.fails(&["pull", "library/ubuntu"]).contains("registry host"));

    if !have("skopeo") {
        skip(
            "ingot_push_pull_round_trip_and_skopeo_both_ways (skopeo part)",
            "skopeo is not installed",
        );
        return;
    }
    // skopeo pulls what ingot serves, and pushes into it; digests unchanged.
    let layout = src.path("oci-out");
    let st = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/team/app:1"),
            &format!("oci:{}:x", layout.display()),
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let st = Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:x", layout.display()),
            &format!("docker://{host}/from/skopeo:2"),
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let r = call("HEAD", &format!("{}/v2/from/skopeo/manifests/2", srv.base), &[], b"");
    assert_eq!(r.header("docker-content-digest"), digest);
}

#[test]
fn docker_pulls_and_pushes_through_ingot_serve() {
    let docker_ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker_ok {
        skip(
            "docker_pulls_and_pushes_through_ingot_serve",
            "no Docker engine answers",
        );
        return;
    }
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "dk:1");
    let server_root = Ingot::new(BIN);
    let srv = Served::start(&server_root, &[]);
    let host = srv.base.trim_start_matches("http://").to_string();
    src.ok(&["push", "dk:1", &format!("{host}/dk/app:1")]);
    let tag = format!("{host}/dk/app:1");
    let out = Command::new("docker").args(["pull", &tag]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&digest),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let moved = format!("{host}/dk/moved:2");
    assert!(Command::new("docker")
        .args(["tag", &tag, &moved])
        .status()
        .unwrap()
        .success());
    let out = Command::new("docker").args(["push", &moved]).output().unwrap();
    let _ = Command::new("docker").args(["rmi", &tag, &moved]).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = call("GET", &format!("{}/v2/dk/moved/tags/list", srv.base), &[], b"");
    assert_eq!(r.json()["tags"], json!(["2"]));
}

/// Debian's distribution registry on a free loopback port, stopped on drop.
struct Distribution {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn distribution() -> Option<Distribution> {
    let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let dir = tempfile::tempdir().unwrap();
    let port = ingot_testsupport::free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let host = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&host).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Distribution { child, host, _dir: dir })
}

#[test]
fn ingot_client_against_the_distribution_registry() {
    let Some(reg) = distribution() else {
        skip(
            "ingot_client_against_the_distribution_registry",
            "Debian's docker-registry is not installed",
        );
        return;
    };
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "dist:1");
    let out = src.ok(&["push", "dist:1", &format!("{}/interop/app:1", reg.host)]);
    assert!(out.contains(&digest), "{out}");
    let dst = Ingot::new(BIN);
    let out = dst.ok(&["pull", &format!("{}/interop/app:1", reg.host)]);
    assert!(out.contains(&digest), "{out}");
    assert_eq!(dst.json(&["fsck"])["problems"], json!([]));
    assert!(dst
        .fails(&["pull", &format!("{}/interop/app:nope", reg.host)])
        .contains("MANIFEST_UNKNOWN"));
}

#[test]
fn token_auth_scopes_and_anonymous_pull() {
    let server_root = Ingot::new(BIN);
    let rw = server_root
        .ok(&["token", "create", "--repo", "team/*", "--pull", "--push"])
        .trim()
        .to_string();
    let ro = server_root
        .ok(&["token", "create", "--repo", "*", "--pull"])
        .trim()
        .to_string();
    assert!(server_root
        .fails(&["token", "create", "--repo", "x"])
        .contains("--pull"));
    let srv = Served::start(&server_root, &["--auth", "tokens"]);
    let host = srv.base.trim_start_matches("http://").to_string();
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "sec:1");
    let with = |secret: &str, args: &[&str]| {
        let mut c = src.command();
        c.env("INGOT_REGISTRY_TOKEN", secret).args(args);
        c.output().unwrap()
    };
    // No credentials: refused with the token challenge.
    let r = call("GET", &format!("{}/v2/team/app/tags/list", srv.base), &[], b"");
    assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"));
    assert!(
        r.header("www-authenticate").contains("realm=")
            && r.header("www-authenticate").contains("repository:team/app:pull")
    );
    assert!(!src
        .run(&["push", "sec:1", &format!("{host}/team/app:1")])
        .status
        .success());
    // The read-write token pushes inside its pattern only.
    let ok = with(&rw, &["push", "sec:1", &format!("{host}/team/app:1")]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let outside = with(&rw, &["push", "sec:1", &format!("{host}/other/app:1")]);
    assert!(!outside.status.success());
    // The read-only token pulls but cannot push a manifest.
    let dst = Ingot::new(BIN);
    let mut pull = dst.command();
    let out = pull
        .env("INGOT_REGISTRY_TOKEN", &ro)
        .args(["pull", &format!("{host}/team/app:1")])
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&digest));
    assert!(!with(&ro, &["push", "sec:1", &format!("{host}/team/app:2")])
        .status
        .success());
    // A wrong secret gets no token.
    assert!(!with("not-a-token", &["push", "sec:1", &format!("{host}/team/app:3")])
        .status
        .success());
    if have("skopeo") {
        let out = Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--creds",
                &format!("any:{ro}"),
                &format!("docker://{host}/team/app:1"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&digest),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(srv);
    // Anonymous pull, when allowed, is pull only.
    let srv = Served::start(&server_root, &["--auth", "tokens", "--anonymous-pull"]);
    let host = srv.base.trim_start_matches("http://").to_string();
    let anon = Ingot::new(BIN);
    anon.ok(&["pull", &format!("{host}/team/app:1")]);
    assert!(!anon
        .run(&["push", &format!("{host}/team/app:1"), &format!("{host}/team/app:9")])
        .status
        .success());
    // Revocation: listed by ID, deleted by ID; its secret gets no token any more.
    let list = server_root.json(&["token", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let id = sha256(rw.as_bytes()).trim_start_matches("sha256:")[..12].to_string();
    assert!(
        list.as_array().unwrap().iter().any(|t| t["id"] == id.as_str()),
        "{list}"
    );
    let out = with(&rw, &["push", "sec:1", &format!("{host}/team/app:4")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server_root.ok(&["token", "revoke", &id]);
    assert!(!with(&rw, &["push", "sec:1", &format!("{host}/team/app:5")])
        .status
        .success());
    assert_eq!(server_root.json(&["token", "list"]).as_array().unwrap().len(), 1);
    assert!(server_root.fails(&["token", "revoke", &id]).contains("no token"));
    assert!(server_root.fails(&["token", "revoke", "ab"]).contains("8 hex digits"));
}

#[test]
fn tls_serves_https_and_clients_verify_certificates() {
    if !have("openssl") {
        skip(
            "tls_serves_https_and_clients_verify_certificates",
            "openssl (to make a test certificate) is not installed",
        );
        return;
    }
    let server_root = Ingot::new(BIN);
    let (cert, key) = (server_root.path("cert.pem"), server_root.path("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let srv = Served::start(
        &server_root,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let host = srv.host().to_string();
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "tls:1");
    // A self-signed certificate is refused unless --insecure.
    let err = src.fails(&["push", "tls:1", &format!("https://{host}/tls/app:1")]);
    assert!(err.contains("certificate"), "{err}");
    src.ok(&["push", "--insecure", "tls:1", &format!("https://{host}/tls/app:1")]);
    // Plain HTTP to a TLS port gets nowhere.
    assert!(!src.run(&["pull", &format!("{host}/tls/app:1")]).status.success());
    if have("skopeo") {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{host}/tls/app:1")])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&digest),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = server_root.run(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.pem"));
}

#[test]
fn online_gc_drops_idle_uploads_and_unreferenced_blobs_but_not_live_ones() {
    let server_root = Ingot::new(BIN);
    let srv = Served::start(&server_root, &["--grace", "2"]);
    let b = srv.base.as_str();
    // Referenced: a manifest's config and layer. Unreferenced: a lone blob.
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = push_blob(b, "gc/app", config);
    let ld = push_blob(b, "gc/app", b"layer bytes");
    let m = manifest(&cd, config.len(), &[(ld.clone(), 11)], json!({}));
    assert_eq!(
        call(
            "PUT",
            &format!("{b}/v2/gc/app/manifests/v1"),
            &[("content-type", OCI_MANIFEST)],
            &m
        )
        .status,
        201
    );
    let lone = push_blob(b, "gc/app", b"nobody references me");
    // An abandoned upload, and a slow one that keeps sending chunks.
    let abandoned = format!(
        "{b}{}",
        call("POST", &format!("{b}/v2/gc/app/blobs/uploads/"), &[], b"").header("location")
    );
    call("PATCH", &abandoned, &[], b"half");
    let slow = format!(
        "{b}{}",
        call("POST", &format!("{b}/v2/gc/app/blobs/uploads/"), &[], b"").header("location")
    );
    let mut sent = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        let chunk = vec![b'x'; 1000];
        let r = call("PATCH", &slow, &[], &chunk);
        assert_eq!(r.status, 202, "a live upload must survive GC passes");
        sent.extend(chunk);
        std::thread::sleep(Duration::from_millis(400));
    }
    let r = call("PUT", &format!("{slow}?digest={}", sha256(&sent)), &[], b"");
    assert_eq!(r.status, 201);
    assert_eq!(call("GET", &abandoned, &[], b"").code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        call("GET", &format!("{b}/v2/gc/app/blobs/{lone}"), &[], b"").status,
        404
    );
    let lone_file = server_root.root().join("blobs/sha256").join(&lone[7..]);
    assert!(!lone_file.exists(), "swept from the store");
    assert_eq!(
        call("GET", &format!("{b}/v2/gc/app/blobs/{ld}"), &[], b"").body,
        b"layer bytes"
    );
    assert_eq!(call("GET", &format!("{b}/v2/gc/app/manifests/v1"), &[], b"").body, m);
    assert_eq!(
        std::fs::read_dir(server_root.root().join("uploads")).unwrap().count(),
        0
    );
    drop(srv);
    assert_eq!(server_root.json(&["fsck"])["problems"], json!([]));
}

#[test]
fn podman_and_buildah_pull_and_push_through_ingot_serve() {
    let tools: Vec<&str> = ["podman", "buildah"].into_iter().filter(|t| have(t)).collect();
    for missing in ["podman", "buildah"].iter().filter(|t| !tools.contains(t)) {
        skip(
            "podman_and_buildah_pull_and_push_through_ingot_serve",
            &format!("{missing} is not installed"),
        );
    }
    if tools.is_empty() {
        return;
    }
    let src = Ingot::new(BIN);
    sample_image(&src, "pb:1");
    let server_root = Ingot::new(BIN);
    let srv = Served::start(&server_root, &[]);
    let host = srv.base.trim_start_matches("http://").to_string();
    src.ok(&["push", "pb:1", &format!("{host}/pb/app:1")]);
    for tool in tools {
        let storage = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(tool)
                .arg("--root")
                .arg(storage.path().join("root"))
                .arg("--runroot")
                .arg(storage.path().join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{tool} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["pull", "--tls-verify=false", &format!("docker://{host}/pb/app:1")]);
        run(&[
            "push",
            "--tls-verify=false",
            &format!("{host}/pb/app:1"),
            &format!("docker://{host}/pb/{tool}:2"),
        ]);
        let r = call("GET", &format!("{}/v2/pb/{tool}/tags/list", srv.base), &[], b"");
        assert_eq!(r.json()["tags"], json!(["2"]), "{tool} pushed");
        // Pulled back by ingot, it is a complete image again.
        let back = Ingot::new(BIN);
        back.ok(&["pull", &format!("{host}/pb/{tool}:2")]);
        assert_eq!(back.json(&["fsck"])["problems"], json!([]));
    }
}

#[test]
fn concurrent_pushes_of_one_tag_leave_a_consistent_registry() {
    let server_root = Ingot::new(BIN);
    let srv = Served::start(&server_root, &[]);
    let b = srv.base.clone();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = push_blob(&b, "race/app", config);
    let manifests: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let payload = format!("layer {i}");
            let ld = push_blob(&b, "race/app", payload.as_bytes());
            manifest(&cd, config.len(), &[(ld, payload.len())], json!({}))
        })
        .collect();
    std::thread::scope(|s| {
        for m in &manifests {
            let b = b.clone();
            s.spawn(move || {
                for _ in 0..15 {
                    let r = call(
                        "PUT",
                        &format!("{b}/v2/race/app/manifests/latest"),
                        &[("content-type", OCI_MANIFEST)],
                        m,
                    );
                    assert_eq!(r.status, 201);
                }
            });
        }
    });
    // The tag names exactly one of them, whole, and its digest header fits.
    let r = call("GET", &format!("{b}/v2/race/app/manifests/latest"), &[], b"");
    assert!(manifests.contains(&r.body), "the tag must name one pushed manifest");
    assert_eq!(r.header("docker-content-digest"), sha256(&r.body));
    for m in &manifests {
        assert_eq!(
            call("HEAD", &format!("{b}/v2/race/app/manifests/{}", sha256(m)), &[], b"").status,
            200
        );
    }
    drop(srv);
    assert_eq!(server_root.json(&["fsck"])["problems"], json!([]));
}

#[test]
fn referrers_travel_with_pull_and_push() {
    let a_root = Ingot::new(BIN);
    let a = Served::start(&a_root, &[]);
    let b_root = Ingot::new(BIN);
    let b = Served::start(&b_root, &[]);
    let (ha, hb) = (
        a.base.trim_start_matches("http://").to_string(),
        b.base.trim_start_matches("http://").to_string(),
    );
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "ref:1");
    src.ok(&["push", "ref:1", &format!("{ha}/team/app:1")]);
    // A signature-like artifact refers to the image on registry A.
    let size = call("HEAD", &format!("{}/v2/team/app/manifests/1", a.base), &[], b"")
        .header("content-length")
        .parse::<usize>()
        .unwrap();
    let empty = push_blob(&a.base, "team/app", b"{}");
    let payload = push_blob(&a.base, "team/app", b"signature payload");
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.ingot.test.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": payload, "size": 17}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": size},
    }))
    .unwrap();
    let sd = sha256(&sig);
    assert_eq!(
        call(
            "PUT",
            &format!("{}/v2/team/app/manifests/{sd}", a.base),
            &[("content-type", OCI_MANIFEST)],
            &sig
        )
        .status,
        201
    );
    // Pulled along; not listed as an image of its own.
    let mid = Ingot::new(BIN);
    let out = mid.ok(&["pull", &format!("{ha}/team/app:1")]);
    assert!(out.contains("1 referrers"), "{out}");
    let names: Vec<String> = mid
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["1"], "referrers are not images of their own");
    // Pushed along to registry B.
    let out = mid.ok(&["push", &format!("{ha}/team/app:1"), &format!("{hb}/copy/app:1")]);
    assert!(out.contains("1 referrers"), "{out}");
    let r = call("GET", &format!("{}/v2/copy/app/referrers/{digest}", b.base), &[], b"");
    assert_eq!(r.json()["manifests"][0]["digest"], sd.as_str());
    assert_eq!(
        call("GET", &format!("{}/v2/copy/app/blobs/{payload}", b.base), &[], b"").body,
        b"signature payload"
    );
    assert_eq!(mid.json(&["fsck"])["problems"], json!([]));
    // GC keeps a referrer while it exists in the store.
    mid.ok(&["gc"]);
    assert_eq!(mid.json(&["fsck"])["problems"], json!([]));
}

/// `Basic` credentials for a token secret (any user name).
fn basic(secret: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("any:{secret}").into_bytes();
    let mut out = String::new();
    for c in raw.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

#[test]
fn a_cross_repository_mount_needs_pull_on_its_source() {
    let server_root = Ingot::new(BIN);
    let all = server_root
        .ok(&["token", "create", "--repo", "*", "--pull", "--push"])
        .trim()
        .to_string();
    let team = server_root
        .ok(&["token", "create", "--repo", "team/*", "--pull", "--push"])
        .trim()
        .to_string();
    let srv = Served::start(&server_root, &["--auth", "tokens"]);
    let b = srv.base.as_str();
    let bearer = |secret: &str, scopes: &str| {
        let r = call(
            "GET",
            &format!("{b}/token?service=ingot&{scopes}"),
            &[("authorization", &basic(secret))],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        format!("Bearer {}", r.json()["token"].as_str().unwrap())
    };
    let data = b"a layer only the secret repository has".to_vec();
    let d = sha256(&data);
    let owner = bearer(&all, "scope=repository:secret/app:pull,push");
    let r = call(
        "POST",
        &format!("{b}/v2/secret/app/blobs/uploads/?digest={d}"),
        &[("authorization", &owner), ("content-type", "application/octet-stream")],
        &data,
    );
    assert_eq!(r.status, 201);
    // The team token cannot pull secret/app: its mount is an ordinary upload session.
    let t = bearer(
        &team,
        "scope=repository:team/x:pull,push&scope=repository:secret/app:pull",
    );
    let mount = format!("{b}/v2/team/x/blobs/uploads/?mount={d}&from=secret/app");
    let r = call("POST", &mount, &[("authorization", &t)], b"");
    assert_eq!(r.status, 202, "mounted a blob from a repository it cannot read");
    let r = call(
        "HEAD",
        &format!("{b}/v2/team/x/blobs/{d}"),
        &[("authorization", &t)],
        b"",
    );
    assert_eq!(r.status, 404);
    // With pull on the source the mount happens.
    let both = bearer(
        &all,
        "scope=repository:team/x:pull,push&scope=repository:secret/app:pull",
    );
    let r = call("POST", &mount, &[("authorization", &both)], b"");
    assert_eq!(r.status, 201);
}

#[test]
fn concurrent_patches_of_one_session_are_serialised_and_bad_tags_are_unknown_manifests() {
    let root = Ingot::new(BIN);
    let srv = Served::start(&root, &[]);
    let b = srv.base.clone();
    let r = call("POST", &format!("{b}/v2/conc/a/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202);
    let loc = r.header("location").to_string();
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("{b}{loc}")
    };
    let chunk = |tag: u8| vec![tag; 2 << 20];
    let threads: Vec<_> = [b'a', b'b']
        .into_iter()
        .map(|t| {
            let loc = loc.clone();
            std::thread::spawn(move || {
                call(
                    "PATCH",
                    &loc,
                    &[("content-type", "application/octet-stream")],
                    &chunk(t),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses, [202, 202]);
    // Both chunks whole, one after the other, in either order.
    let r = call("GET", &loc, &[], b"");
    assert_eq!(r.header("range"), format!("0-{}", (4 << 20) - 1));
    let ab = [chunk(b'a'), chunk(b'b')].concat();
    let ba = [chunk(b'b'), chunk(b'a')].concat();
    let uuid = loc.split('?').next().unwrap().rsplit('/').next().unwrap();
    let held = std::fs::read(root.root().join("uploads").join(uuid)).unwrap();
    assert!(held == ab || held == ba, "the two chunks were interleaved");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = call("PUT", &format!("{loc}{sep}digest={}", sha256(&held)), &[], b"");
    assert_eq!(r.status, 201);
    // A tag the grammar refuses names no manifest: 404 MANIFEST_UNKNOWN (a code the OCI spec lists).
    let r = call("GET", &format!("{b}/v2/conc/a/manifests/-bad-tag"), &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
}

/// Debian's distribution has no referrers API: signatures reach it, and
/// come back from it, under cosign's tag (`sha256-<hex>.sig`), every
/// signature of an image in the one manifest there, as cosign keeps them.
#[test]
fn signatures_travel_through_distribution_under_cosigns_tag() {
    let test = "signatures_travel_through_distribution_under_cosigns_tag";
    let Some(reg) = distribution() else {
        skip(test, "Debian's docker-registry is not installed");
        return;
    };
    let src = Ingot::new(BIN);
    let digest = sample_image(&src, "signed:1");
    let other = {
        let tar = src.write("other.tar", &sample_rootfs(20_000, 3));
        src.ok(&["import", "-q", tar.to_str().unwrap(), "other:1"])
            .trim()
            .to_string()
    };
    for k in ["k1", "k2"] {
        src.ok(&["key", "generate", "--out", src.path(k).to_str().unwrap()]);
        src.ok(&[
            "sign",
            "signed:1",
            "--key",
            src.path(&format!("{k}.key")).to_str().unwrap(),
        ]);
    }
    // Two signatures of the other image too: its tag holds them merged, a
    // manifest naming no subject (as cosign writes them).
    for k in ["k1", "k2"] {
        src.ok(&[
            "sign",
            "other:1",
            "--key",
            src.path(&format!("{k}.key")).to_str().unwrap(),
        ]);
    }
    let repo = format!("{}/team/signed", reg.host);
    let out = src.ok(&["push", "signed:1", &format!("{repo}:1")]);
    assert!(out.contains("2 referrers"), "{out}");
    src.ok(&["push", "other:1", &format!("{repo}:other")]);

    let base = format!("http://{}/v2/team/signed", reg.host);
    let r = call("GET", &format!("{base}/referrers/{digest}"), &[], b"");
    assert_eq!(r.status, 404, "distribution 2.8 has no referrers API");
    let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    let accept = [("accept", "application/vnd.oci.image.manifest.v1+json")];
    let r = call("GET", &format!("{base}/manifests/{tag}"), &accept, b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let layers = r.json()["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 2, "both signatures under the one tag: {}", r.json());
    assert!(layers
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
            && l["annotations"]["dev.cosignproject.cosign/signature"].is_string()));

    // Verified where it is, nothing pulled: by tag and by digest.
    let remote_only = Ingot::new(BIN);
    for r in [format!("{repo}:1"), format!("{repo}@{digest}")] {
        let out = remote_only.ok(&["verify", &r, "--key", src.path("k2.pub").to_str().unwrap()]);
        assert!(out.contains(&format!("Verified {digest}")), "{out}");
    }
    let stranger = remote_only.path("stranger");
    remote_only.ok(&["key", "generate", "--out", stranger.to_str().unwrap()]);
    let err = remote_only.fails(&[
        "verify",
        &format!("{repo}:1"),
        "--key",
        &format!("{}.pub", stranger.display()),
    ]);
    assert!(err.contains("does not verify with this key"), "{err}");
    assert_eq!(remote_only.json(&["images"]), json!([]), "nothing pulled");
    assert!(remote_only
        .fails(&[
            "verify",
            &format!("{repo}:1"),
            "--key",
            src.path("k1.pub").to_str().unwrap(),
            "--policy",
            "p.toml"
        ])
        .contains("ingot pull"));

    // Into a fresh root: the signatures come through the tag and verify.
    let dst = Ingot::new(BIN);
    let out = dst.ok(&["pull", &format!("{repo}:1")]);
    assert!(out.contains(&digest) && out.contains("1 referrers"), "{out}");
    for k in ["k1", "k2"] {
        dst.ok(&[
            "verify",
            &format!("{repo}:1"),
            "--key",
            src.path(&format!("{k}.pub")).to_str().unwrap(),
        ]);
    }

    // Another signer's push of the same image (built alike on its own root,
    // knowing nothing of the two signatures there) adds its signature to
    // the tag: none is dropped.
    let third = Ingot::new(BIN);
    assert_eq!(sample_image(&third, "signed:1"), digest, "the same image");
    third.ok(&["key", "generate", "--out", third.path("k3").to_str().unwrap()]);
    third.ok(&["sign", "signed:1", "--key", third.path("k3.key").to_str().unwrap()]);
    third.ok(&["push", "signed:1", &format!("{repo}:1")]);
    let r = call("GET", &format!("{base}/manifests/{tag}"), &accept, b"");
    let layers = r.json()["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 3, "k1, k2 and k3 under the one tag: {}", r.json());
    for key in [src.path("k1.pub"), src.path("k2.pub"), third.path("k3.pub")] {
        let out = remote_only.ok(&["verify", &format!("{repo}:1"), "--key", key.to_str().unwrap()]);
        assert!(out.contains(&format!("Verified {digest}")), "{out}");
    }
    // Pushed again, nothing doubles.
    third.ok(&["push", "signed:1", &format!("{repo}:1")]);
    let r = call("GET", &format!("{base}/manifests/{tag}"), &accept, b"");
    assert_eq!(r.json()["layers"].as_array().map(Vec::len), Some(3), "{}", r.json());

    // Another image's signature put under this image's tag is refused.
    let other_tag = format!("sha256-{}.sig", other.trim_start_matches("sha256:"));
    let r = call("GET", &format!("{base}/manifests/{other_tag}"), &accept, b"");
    assert_eq!(r.status, 200);
    assert!(r.json().get("subject").is_none(), "{}", r.json());
    let put = call(
        "PUT",
        &format!("{base}/manifests/{tag}"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        &r.body,
    );
    assert_eq!(put.status, 201);
    let fresh = Ingot::new(BIN);
    let err = fresh.fails(&["pull", &format!("{repo}:1")]);
    assert!(err.contains(&format!("its subject is {other}, not {digest}")), "{err}");
    let err = remote_only.fails(&[
        "verify",
        &format!("{repo}:1"),
        "--key",
        src.path("k1.pub").to_str().unwrap(),
    ]);
    assert!(err.contains(&format!("its subject is {other}, not {digest}")), "{err}");
    // The owner's next push replaces such a tag (it would fail every pull
    // as it is) instead of carrying it on: pulls work again.
    let out = src.run(&["push", "signed:1", &format!("{repo}:1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature tag is replaced"),
        "the replacement is said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = call("GET", &format!("{base}/manifests/{tag}"), &accept, b"");
    assert_eq!(r.json()["layers"].as_array().map(Vec::len), Some(2), "{}", r.json());
    let mended = Ingot::new(BIN);
    mended.ok(&["pull", &format!("{repo}:1")]);
    mended.ok(&[
        "verify",
        &format!("{repo}:1"),
        "--key",
        src.path("k1.pub").to_str().unwrap(),
    ]);
}

#[test]
fn a_stack_bundle_and_its_signature_travel_through_distribution() {
    let test = "a_stack_bundle_and_its_signature_travel_through_distribution";
    let Some(reg) = distribution() else {
        skip(test, "Debian's docker-registry is not installed");
        return;
    };
    let src = Ingot::new(BIN);
    let image = sample_image(&src, "app:1");
    src.ok(&["key", "generate", "--out", src.path("k").to_str().unwrap()]);
    let file = src.write(
        "stack.yml",
        b"services:\n  app:\n    image: app:1\n    command: [/bin/true]\n    secrets: [pw]\nsecrets:\n  pw:\n    environment: APP_PW\n",
    );
    let dest = format!("{}/team/app-stack:1", reg.host);
    let key = src.path("k.key");
    let pushed = src.json(&[
        "stack",
        "push",
        "-f",
        file.to_str().unwrap(),
        "--name",
        "app",
        &dest,
        "--key",
        key.to_str().unwrap(),
    ]);
    let bundle = pushed["digest"].as_str().unwrap().to_string();
    let hex = bundle.trim_start_matches("sha256:");
    let base = format!("http://{}/v2/team/app-stack", reg.host);
    let accept = [("accept", "application/vnd.oci.image.manifest.v1+json")];
    for tag in [format!("sha256-{hex}.sig"), format!("sha256-{hex}.sbom")] {
        let r = call("GET", &format!("{base}/manifests/{tag}"), &accept, b"");
        assert_eq!(r.status, 200, "{tag}: {}", String::from_utf8_lossy(&r.body));
    }
    // The pinned stack names the secret, never a digest of its value.
    let m = call("GET", &format!("{base}/manifests/1"), &accept, b"").json();
    let pinned = m["layers"][1]["digest"].as_str().unwrap();
    let r = call("GET", &format!("{base}/blobs/{pinned}"), &[], b"");
    let pinned: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(pinned["secrets"], json!({"pw": {}}), "{pinned}");
    let mounts = pinned["services"]["app"]["secrets"].as_array().unwrap();
    assert!(
        mounts.len() == 1 && mounts[0]["name"] == "pw" && mounts[0].get("digest").is_none(),
        "{pinned}"
    );

    // Verified where it is, then pulled into a fresh root with its image
    // and its signature (through the tag: distribution has no referrers API).
    let dst = Ingot::new(BIN);
    let out = dst.ok(&["verify", &dest, "--key", src.path("k.pub").to_str().unwrap()]);
    assert!(out.contains(&format!("Verified {bundle}")), "{out}");
    let pulled = dst.json(&["stack", "pull", &dest]);
    assert_eq!(pulled["digest"], bundle.as_str());
    assert_eq!(pulled["images"][0]["digest"], image.as_str());
    assert_eq!(pulled["images_pulled"], 1);
    let out = dst.ok(&["verify", &dest, "--key", src.path("k.pub").to_str().unwrap()]);
    assert!(out.contains(&format!("Verified {bundle}")), "{out}");
    let images = dst.ok(&["images"]);
    assert!(images.contains(&image[7..19]), "{images}");
    // Again: nothing more to move.
    let again = dst.json(&["stack", "pull", &dest]);
    assert_eq!(again["images_pulled"], 0);
    // No registry at all: an archive of the bundle, its image and their
    // referrers, loaded into another root, verifies there.
    let archive = src.path("app-stack.tar");
    let out = src.ok(&[
        "stack",
        "bundle",
        "-f",
        file.to_str().unwrap(),
        "--name",
        "app",
        "-t",
        "bundles/app:1",
        "-o",
        archive.to_str().unwrap(),
    ]);
    assert!(out.contains(&bundle), "the same bundle: {out}");
    let off = Ingot::new(BIN);
    off.ok(&["load", "-i", archive.to_str().unwrap()]);
    let out = off.ok(&["verify", "bundles/app:1", "--key", src.path("k.pub").to_str().unwrap()]);
    assert!(out.contains(&format!("Verified {bundle}")), "{out}");
    assert!(off.ok(&["images"]).contains(&image[7..19]));
    // A plain image is not a bundle.
    src.ok(&["push", "app:1", &format!("{}/team/app-stack:image", reg.host)]);
    let err = dst.fails(&["stack", "pull", &format!("{}/team/app-stack:image", reg.host)]);
    assert!(err.contains("is not a stack bundle"), "{err}");
}
