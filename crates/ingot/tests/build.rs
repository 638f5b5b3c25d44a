//! `ingot build` end to end: real Dockerfiles, RUN steps in real
//! containers, two fresh roots for reproducibility, git metadata from a real
//! repository. Needs root (RUN) and /bin/busybox for the base image.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ingot_testsupport::{skip, workspace_file, Ingot};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// A root with the busybox base as `base:1`, or `None` with a reason.
fn root_with_base(test: &str, ingot: Ingot) -> Option<Ingot> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "RUN steps run containers, which need root");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        skip(test, "/bin/busybox is missing (Debian package busybox-static)");
        return None;
    }
    let tar = ingot.path("base.tar");
    if !tar.exists() {
        let st = Command::new(workspace_file("examples/rootfs/build.sh"))
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success());
    }
    ingot.ok(&["import", "-q", tar.to_str().unwrap(), "base:1"]);
    Some(ingot)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const DOCKERFILE: &str = r#"# two stages: make a file with RUN, ship it in a clean stage
ARG BASE=base:1
FROM ${BASE} AS build
ARG GREETING=hello
WORKDIR /src
COPY app/ ./
RUN echo "$GREETING from the build stage" > message.txt && rm -f scratch.txt
FROM ${BASE}
COPY --from=build /src/ /app/
ENV MODE=prod
LABEL maintainer="ops@example.invalid" monitor.dashboard=app
EXPOSE 8080
HEALTHCHECK --interval=5s CMD test -f /app/message.txt
USER nobody
CMD ["cat", "/app/message.txt"]
"#;

/// A context that is a git repository with one commit.
fn context(ingot: &Ingot) -> std::path::PathBuf {
    let ctx = ingot.path("ctx");
    fs::create_dir_all(ctx.join("app")).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(ctx.join("app/index.html"), "<h1>hi</h1>\n").unwrap();
    fs::write(ctx.join("app/scratch.txt"), "deleted by RUN\n").unwrap();
    fs::write(ctx.join("app/secret.key"), "never in the image\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "**/*.key\n").unwrap();
    git(&ctx, &["init", "-q"]);
    git(
        &ctx,
        &["remote", "add", "origin", "https://git.example.invalid/team/app.git"],
    );
    git(&ctx, &["add", "."]);
    git(&ctx, &["commit", "-q", "-m", "init"]);
    ctx
}

fn build(ingot: &Ingot, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["build"];
    a.extend(args);
    let out = ingot.run(&a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn builds_are_reproducible_cached_and_carry_their_bom() {
    let Some(a) = root_with_base("builds_are_reproducible_cached_and_carry_their_bom", Ingot::new(BIN)) else {
        return;
    };
    let ctx = context(&a);
    let ctx_s = ctx.to_str().unwrap();
    let args = [
        "-t",
        "app:1",
        "-t",
        "app:latest",
        "--reason",
        "ship v1",
        "--label",
        "update.policy=rolling",
        ctx_s,
    ];
    let (ok, digest, err) = build(&a, &args);
    assert!(ok, "{err}");
    assert!(digest.starts_with("sha256:"), "{digest}");

    // The same context in a fresh root gives the same digest.
    let b = root_with_base("(second root)", Ingot::new(BIN)).unwrap();
    let (ok, digest_b, err) = build(&b, &args);
    assert!(ok, "{err}");
    assert_eq!(digest, digest_b, "two fresh roots, one context: same manifest digest");

    // A no-change rebuild does no work: every step CACHED.
    let t = Instant::now();
    let (ok, again, err) = build(&a, &args);
    let elapsed = t.elapsed();
    assert!(ok && again == digest, "{err}");
    let steps = err.lines().filter(|l| l.starts_with('[')).count();
    let cached = err
        .lines()
        .filter(|l| l.starts_with('[') && l.ends_with("CACHED"))
        .count();
    assert_eq!((steps, cached), (13, 13), "{err}");
    eprintln!("no-change rebuild took {elapsed:?}");

    // The image runs and holds what the Dockerfile made, minus what
    // .dockerignore and RUN removed.
    let out = a.ok(&["run", "--rm", "app:1"]);
    assert_eq!(out, "hello from the build stage\n");
    let out = a.ok(&["run", "--rm", "app:1", "ls", "/app"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["index.html", "message.txt"]
    );

    // The bill of materials answers every question from the image alone.
    let bom = &a.json(&["inspect", "--bom", "app:1"])[0];
    let head = git(&ctx, &["rev-parse", "HEAD"]);
    assert_eq!(bom["reason"], "ship v1");
    assert_eq!(bom["created"], "2026-01-02T03:04:05Z", "created = last commit time");
    assert_eq!(bom["git"]["commit"], head.as_str());
    assert_eq!(bom["git"]["remote"], "https://git.example.invalid/team/app.git");
    assert_eq!(bom["git"]["dirty"], false);
    assert!(bom["git"]["committed"].as_i64().is_some_and(|t| t > 0), "{bom}");
    assert_eq!(bom["tags"], serde_json::json!(["app:1", "app:latest"]));
    assert_eq!(bom["project"], "ctx");
    assert_eq!(bom["update"], "rolling");
    assert_eq!(bom["start"]["cmd"], serde_json::json!(["cat", "/app/message.txt"]));
    assert_eq!(bom["start"]["user"], "nobody");
    assert_eq!(bom["start"]["env"], serde_json::json!(["MODE"]));
    assert_eq!(bom["monitor"]["exposed_ports"], serde_json::json!(["8080/tcp"]));
    assert_eq!(bom["validate"]["Test"][0], "CMD-SHELL");
    let ancestors = bom["ancestors"].as_array().unwrap();
    let base = a.json(&["inspect", "base:1"])[0]["digest"].clone();
    assert_eq!(ancestors.len(), 2);
    assert!(
        ancestors.iter().all(|x| x["name"] == "base:1" && x["digest"] == base),
        "{ancestors:?}"
    );
    assert!(!bom["builder"]["version"].as_str().unwrap().is_empty());
    let table = a.ok(&["inspect", "--bom", "app:1"]);
    for q in [
        "Why was it built?",
        "How to start it?",
        "Which source?",
        &head,
        // The health check as a person reads it; the Dockerfile's labels.
        "How to validate it?      test -f /app/message.txt  (every 5s, timeout 30s, 3 retries)",
        "  maintainer = ops@example.invalid",
        "  monitor.dashboard = app",
    ] {
        assert!(table.contains(q), "{q} missing from:\n{table}");
    }
    assert_eq!(bom["monitor"]["hints"]["monitor.dashboard"], "app");
    // OCI annotations on the manifest too.
    let img = &a.json(&["inspect", "app:1"])[0];
    assert_eq!(img["annotations"]["org.opencontainers.image.revision"], head.as_str());
    assert_eq!(img["annotations"]["org.opencontainers.image.base.digest"], base);

    // One changed COPY source rebuilds from that step on only.
    fs::write(ctx.join("app/index.html"), "<h1>changed</h1>\n").unwrap();
    let (ok, changed, err) = build(&a, &["-t", "app:2", ctx_s]);
    assert!(ok, "{err}");
    assert_ne!(changed, digest);
    let cached_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with('[') && l.ends_with("CACHED"))
        .collect();
    assert!(
        cached_lines
            .iter()
            .all(|l| l.contains("FROM") || l.contains("ARG") || l.contains("WORKDIR")),
        "after the changed COPY nothing may be cached: {cached_lines:?}"
    );
    assert!(
        a.json(&["inspect", "--bom", "app:2"])[0]["git"]["dirty"] == true,
        "a dirty tree is marked dirty"
    );
}

#[test]
fn check_reproducible_and_add_chown_chmod() {
    let Some(a) = root_with_base("check_reproducible_and_add_chown_chmod", Ingot::new(BIN)) else {
        return;
    };
    let ctx = a.path("ctx2");
    fs::create_dir_all(ctx.join("tree/sub")).unwrap();
    fs::write(ctx.join("tree/sub/file.txt"), "in the archive\n").unwrap();
    let st = Command::new("tar")
        .args(["-czf", "bundle.tar.gz", "-C", "tree", "."])
        .current_dir(&ctx)
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(ctx.join("conf.ini"), "x=1\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nADD bundle.tar.gz /opt/bundle/\nCOPY --chown=1000:2000 --chmod=600 conf.ini /etc/app/\n\
         RUN head -c 16 /dev/urandom > /stamp\nCMD [\"sh\", \"-c\", \"cat /opt/bundle/sub/file.txt; stat -c '%u %g %a' /etc/app/conf.ini\"]\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["--check-reproducible", "-t", "x:1", ctx.to_str().unwrap()]);
    assert!(!ok, "a RUN writing the date is not reproducible and must be caught");
    assert!(err.contains("not reproducible"), "{err}");
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nADD bundle.tar.gz /opt/bundle/\nCOPY --chown=1000:2000 --chmod=600 conf.ini /etc/app/\n\
         RUN echo fixed > /stamp\nCMD [\"sh\", \"-c\", \"cat /opt/bundle/sub/file.txt; stat -c '%u %g %a' /etc/app/conf.ini\"]\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["--check-reproducible", "-t", "x:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("reproducible: both builds gave"), "{err}");
    assert_eq!(a.ok(&["run", "--rm", "x:1"]), "in the archive\n1000 2000 600\n");
}

#[test]
fn bad_input_fails_clearly_and_tags_nothing() {
    let Some(a) = root_with_base("bad_input_fails_clearly_and_tags_nothing", Ingot::new(BIN)) else {
        return;
    };
    let ctx = a.path("bad");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("ok.txt"), "ok").unwrap();
    let df = ctx.join("Dockerfile");
    let images_before = a.json(&["images"]);
    for (text, needle) in [
        (
            "FROM base:1\nCOPY ok.txt /\n  BOGUS thing\n",
            "Dockerfile:3:3: unknown instruction BOGUS: BOGUS thing",
        ),
        ("FROM base:1\nENV A=\"unterminated\n", "Dockerfile:2:1"),
        ("FROM base:1\nCOPY ../../etc/passwd /x\n", "outside the build context"),
        ("FROM base:1\nCOPY missing.txt /x\n", "not found in the build context"),
        ("FROM base:1\nCOPY --from=nostage /x /y\n", "nostage"),
        ("FROM nosuch:image\n", "nosuch:image"),
        (
            "FROM base:1\nRUN echo about to fail; echo details >&2; exit 7\n",
            "exit code 7",
        ),
        ("FROM base:1\nRUN no-such-program\n", "no-such-program"),
        ("FROM scratch\nRUN true\n", "FROM scratch"),
        ("FROM base:1\nEXPOSE http\n", "invalid port"),
    ] {
        fs::write(&df, text).unwrap();
        let (ok, _, err) = build(&a, &["-t", "bad:1", ctx.to_str().unwrap()]);
        assert!(!ok, "{text:?} must fail");
        assert!(
            err.contains(needle),
            "{text:?}: error should contain {needle:?}:\n{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("ingot: error")).count(),
            1,
            "{err}"
        );
    }
    fs::write(&df, "FROM base:1\nRUN echo about to fail; echo details >&2; exit 7\n").unwrap();
    let (_, _, err) = build(&a, &["-t", "bad:1", ctx.to_str().unwrap()]);
    assert!(
        err.contains("about to fail") && err.contains("details"),
        "last output lines shown: {err}"
    );
    fs::write(&df, "FROM base:1 AS one\nFROM base:1\n").unwrap();
    let (ok, _, err) = build(&a, &["--target", "two", ctx.to_str().unwrap()]);
    assert!(!ok && err.contains("\"two\""), "{err}");
    // Nothing tagged, no build container left, the store consistent.
    assert_eq!(a.json(&["images"]), images_before);
    assert_eq!(a.json(&["ps", "-a"]), Value::Array(vec![]));
    assert_eq!(a.json(&["fsck"])["problems"], Value::Array(vec![]));
}

#[test]
fn heredocs_run_as_scripts_feed_commands_and_become_files() {
    let test = "heredocs_run_as_scripts_feed_commands_and_become_files";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    let ctx = a.path("ctx-heredoc");
    fs::create_dir_all(&ctx).unwrap();
    let dockerfile = |greeting: &str| {
        format!(
            "FROM base:1\nARG WHO=world\nRUN <<EOF\nset -e\nmkdir -p /out\necho \"script ran\" > /out/script\nEOF\n\
             RUN cat <<-'END' > /out/fed && echo \"$WHO\" >> /out/fed\n\tliteral $WHO\n\tEND\n\
             COPY --chmod=600 <<greeting.txt <<raw.txt /out/\n{greeting}, $WHO\ngreeting.txt\nkept $WHO\nraw.txt\n\
             COPY <<'EOF' /out/single\nno $WHO here\nEOF\n\
             CMD [\"sh\", \"-c\", \"cat /out/script /out/fed /out/greeting.txt /out/raw.txt /out/single; stat -c '%a' /out/greeting.txt\"]\n"
        )
    };
    fs::write(ctx.join("Dockerfile"), dockerfile("hello")).unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "here:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        a.ok(&["run", "--rm", "here:1"]),
        "script ran\nliteral $WHO\nworld\nhello, world\nkept world\nno $WHO here\n600\n"
    );
    // A heredoc's content is part of its step: a change is a new layer.
    fs::write(ctx.join("Dockerfile"), dockerfile("goodbye")).unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "here:2", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(a.ok(&["run", "--rm", "here:2"]).contains("goodbye, world"));
    // Never closed: file:line:column, nothing tagged.
    fs::write(ctx.join("Dockerfile"), "FROM base:1\nRUN <<EOF\necho never closed\n").unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "here:bad", ctx.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Dockerfile:2:1") && err.contains("<<EOF is never closed"),
        "{err}"
    );
    assert!(!a.ok(&["images"]).contains("bad"));
}

/// The address of ingot's default bridge on the host: RUN steps on the
/// bridge reach it through their default route.
const GATEWAY: &str = "10.231.0.1";

/// A file served over HTTP/1.0 on `GATEWAY`, counting requests; stopped
/// (and its thread joined) when dropped.
struct FileServer {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    fn start(body: &'static str) -> FileServer {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind((GATEWAY, 0)).expect("bind on ingot's bridge");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                let mut req = [0u8; 4096];
                let _ = conn.read(&mut req);
                h.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FileServer {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The paths in each layer of `image` (top last), read with tar(1).
fn layer_paths(ingot: &Ingot, image: &str) -> Vec<Vec<String>> {
    let manifest = ingot.json(&["inspect", image]);
    let layers = manifest[0]["manifest"]["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {manifest}"))
        .clone();
    layers
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap();
            let blob = ingot.root().join("blobs/sha256").join(&digest[7..]);
            let out = Command::new("tar").arg("-tzf").arg(&blob).output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|p| p.trim_start_matches("./").trim_end_matches('/').to_string())
                .collect()
        })
        .collect()
}

#[test]
fn run_steps_have_the_network_as_docker_build_gives_it() {
    let test = "run_steps_have_the_network_as_docker_build_gives_it";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    // The bridge exists once a bridged container ran.
    a.ok(&["run", "--rm", "base:1", "true"]);
    let served = FileServer::start("downloaded\n");
    let url = format!("URL=http://{GATEWAY}:{}", served.port);
    let ctx = a.path("ctx-net");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nARG URL\nRUN wget -q -O /fetched.txt \"$URL/file\"\n\
         RUN --network=none sh -c 'wget -q -T 2 -O /none.txt \"$URL/file\" || echo unreachable > /none.txt'\n\
         RUN cat /etc/resolv.conf > /seen-resolv && hostname > /seen-hostname\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["-q", "--build-arg", &url, "-t", "net:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        a.ok(&[
            "run",
            "--rm",
            "net:1",
            "cat",
            "/fetched.txt",
            "/none.txt",
            "/seen-hostname"
        ]),
        "downloaded\nunreachable\ningot-build\n",
        "the default network reaches the server, --network=none does not"
    );
    assert_eq!(served.hits(), 1);
    assert_eq!(
        a.ok(&["run", "--rm", "net:1", "cat", "/seen-resolv"]),
        fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        "RUN resolves names as the host does"
    );
    // What the runtime made for the step (/etc/hosts, /etc/resolv.conf,
    // /etc/hostname, the /etc copied up to hold them) is not in its layer.
    let layers = layer_paths(&a, "net:1");
    let runs = &layers[layers.len() - 3..];
    assert_eq!(runs[0], ["fetched.txt"], "{layers:?}");
    assert_eq!(runs[1], ["none.txt"]);
    assert_eq!(runs[2], ["seen-hostname", "seen-resolv"]);
    // The bill of materials names the steps that had a network.
    let bom = a.json(&["inspect", "--bom", "net:1"]);
    let network = bom[0]["network"].as_array().cloned().unwrap_or_default();
    let steps: Vec<(&str, &str)> = network
        .iter()
        .map(|n| (n["step"].as_str().unwrap(), n["network"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("RUN wget -q -O /fetched.txt \"$URL/file\"", "bridge"),
            (
                "RUN cat /etc/resolv.conf > /seen-resolv && hostname > /seen-hostname",
                "bridge"
            ),
        ]
    );
    assert!(a
        .ok(&["inspect", "--bom", "net:1"])
        .contains("Did a step use the network? yes"));
    // Cached: a second build asks the server nothing.
    let (ok, _, err) = build(&a, &["-q", "--build-arg", &url, "-t", "net:2", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(served.hits(), 1);
    // `--network none`: another step (not the cached one), which fails.
    let (ok, _, err) = build(
        &a,
        &[
            "-q",
            "--network",
            "none",
            "--build-arg",
            &url,
            "-t",
            "net:none",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("Dockerfile:3:1") && err.contains("exit code"),
        "{err}"
    );
    assert!(!a.ok(&["images"]).contains("none"));
    // The host's network only with the builder's consent.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nARG URL\nRUN --network=host wget -q -O /host.txt \"$URL/file\"\n",
    )
    .unwrap();
    let (ok, _, err) = build(
        &a,
        &["-q", "--build-arg", &url, "-t", "net:host", ctx.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("Dockerfile:3:1") && err.contains("--allow network.host"),
        "{err}"
    );
    assert!(!a.ok(&["images"]).contains("host"));
    let (ok, _, err) = build(
        &a,
        &[
            "-q",
            "--allow",
            "network.host",
            "--build-arg",
            &url,
            "-t",
            "net:host",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(served.hits(), 2);
    assert_eq!(
        a.json(&["inspect", "--bom", "net:host"])[0]["network"][0]["network"],
        "host"
    );
    let (ok, _, err) = build(&a, &["-q", "--allow", "network.raw", ctx.to_str().unwrap()]);
    assert!(!ok && err.contains("network.raw"), "{err}");
    let (ok, _, err) = build(&a, &["-q", "--network", "overlay", ctx.to_str().unwrap()]);
    assert!(!ok && err.contains("invalid network \"overlay\""), "{err}");
}

/// The digest, media type and size of `image`'s manifest in `ingot`'s root.
fn manifest_of(ingot: &Ingot, image: &str) -> (String, String, u64) {
    let v = ingot.json(&["inspect", image]);
    let digest = v[0]["digest"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    let bytes = fs::read(ingot.root().join("blobs/sha256").join(&digest[7..])).unwrap();
    let media_type = serde_json::from_slice::<Value>(&bytes).unwrap()["mediaType"]
        .as_str()
        .unwrap()
        .to_string();
    (digest, media_type, bytes.len() as u64)
}

#[test]
fn from_pulls_bases_from_their_registry_for_this_platform() {
    let test = "from_pulls_bases_from_their_registry_for_this_platform";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    let served = ingot_testsupport::Served::start(&a, &[]);
    let host = served.host().to_string();
    // An index of two images: this machine's (the busybox base) and an
    // arm64 one built FROM --platform=linux/arm64 scratch.
    let ctx = a.path("ctx-arm");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("arch.txt"), "arm64\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=linux/arm64 scratch\nCOPY arch.txt /arch.txt\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "arm:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(a.json(&["inspect", "arm:1"])[0]["architecture"], "arm64");
    let repo = format!("{host}/lib/multi");
    a.ok(&["push", "-q", "base:1", &format!("{repo}:amd")]);
    a.ok(&["push", "-q", "arm:1", &format!("{repo}:arm")]);
    let here = a.json(&["inspect", "base:1"])[0]["architecture"]
        .as_str()
        .unwrap()
        .to_string();
    let (own, own_type, own_size) = manifest_of(&a, "base:1");
    let (arm, arm_type, arm_size) = manifest_of(&a, "arm:1");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": arm_type, "digest": arm, "size": arm_size, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": own_type, "digest": own, "size": own_size, "platform": {"os": "linux", "architecture": here}},
        ],
    });
    let put = ureq::put(&format!("{}/v2/lib/multi/manifests/1", served.base))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .send(serde_json::to_vec(&index).unwrap().as_slice())
        .expect("PUT the index");
    assert_eq!(put.status(), 201);

    // A fresh root builds FROM the registry: this platform's image for the
    // stage that runs, the arm64 one for the stage it copies from.
    let b = root_with_base(test, Ingot::new(BIN)).unwrap();
    let ctx = b.path("ctx-pull");
    fs::create_dir_all(&ctx).unwrap();
    let dockerfile = format!(
        "FROM --platform=linux/arm64 {repo}:1 AS arm\nFROM {repo}:1\n\
         COPY --from=arm /arch.txt /arch-arm.txt\nRUN cat /arch-arm.txt > /seen\n"
    );
    fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    let (ok, _, err) = build(&b, &["-q", "-t", "pulled:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(b.ok(&["run", "--rm", "pulled:1", "cat", "/seen"]), "arm64\n");
    let bom = b.json(&["inspect", "--bom", "pulled:1"]);
    let ancestors: Vec<(&str, &str)> = bom[0]["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["digest"].as_str().unwrap_or("")))
        .collect();
    let name = format!("{repo}:1");
    assert_eq!(
        ancestors,
        [(name.as_str(), arm.as_str()), (name.as_str(), own.as_str())]
    );
    let provenance = b.json(&["inspect", "--provenance", "pulled:1"]);
    let deps = provenance[0]["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    assert!(deps.contains(&own[7..]) && deps.contains(&arm[7..]), "{deps}");
    // The tag names this machine's image; the arm64 one is kept by digest.
    assert_eq!(b.json(&["inspect", &name])[0]["digest"], own.as_str());
    assert_eq!(b.json(&["inspect", &arm])[0]["architecture"], "arm64");
    // A pinned digest; a digest the registry lacks is an error at FROM.
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {host}/lib/multi@{own}\nRUN true\n"),
    )
    .unwrap();
    let (ok, _, err) = build(&b, &["-q", "-t", "pinned:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    let missing = format!("sha256:{}", "0".repeat(64));
    fs::write(ctx.join("Dockerfile"), format!("FROM {host}/lib/multi@{missing}\n")).unwrap();
    let (ok, _, err) = build(&b, &["-q", "-t", "pinned:bad", ctx.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Dockerfile:1:1") && err.contains("cannot pull base image"),
        "{err}"
    );
    // RUN in the arm64 stage cannot run here.
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM --platform=linux/arm64 {repo}:1\nRUN true\n"),
    )
    .unwrap();
    let (ok, _, err) = build(&b, &["-q", "-t", "armrun:1", ctx.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Dockerfile:2:1") && err.contains("no emulation"),
        "{err}"
    );
    // A name without a registry must be in the store.
    fs::write(ctx.join("Dockerfile"), "FROM debian:12\n").unwrap();
    let (ok, _, err) = build(&b, &["-q", "-t", "nohost:1", ctx.to_str().unwrap()]);
    assert!(!ok && err.contains("names no registry"), "{err}");

    // With the registry gone the store still has the bases (the arm64 one
    // by its digest: the tag names this machine's); --pull asks the
    // registry again and fails at FROM, tagging nothing.
    drop(served);
    let pinned = dockerfile.replacen(&format!("{repo}:1"), &format!("{repo}@{arm}"), 1);
    fs::write(ctx.join("Dockerfile"), &pinned).unwrap();
    let (ok, _, err) = build(&b, &["-q", "-t", "pulled:2", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = build(&b, &["-q", "--pull", "-t", "pulled:3", ctx.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Dockerfile:1:1") && err.contains("cannot pull base image") && err.contains(&host),
        "{err}"
    );
    let images = b.ok(&["images"]);
    for never in ["pulled:3", "pinned:bad", "armrun:1", "nohost:1"] {
        let (n, t) = never.split_once(':').unwrap();
        let tagged = images.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 1 && cols[0] == n && cols[1] == t
        });
        assert!(!tagged, "{never} in {images}");
    }
}

/// Whether `needle` occurs in any file under `dir` (symlinks not followed).
fn found_under(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else { continue };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                if let Ok(bytes) = fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        found.push(p);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn run_mounts_cache_secrets_binds_and_tmpfs_stay_out_of_layers() {
    let test = "run_mounts_cache_secrets_binds_and_tmpfs_stay_out_of_layers";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    a.ok(&["run", "--rm", "base:1", "true"]);
    let served = FileServer::start("package-bytes\n");
    let url = format!("URL=http://{GATEWAY}:{}", served.port);
    let ctx = a.path("ctx-mounts");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("src/a.txt"), "A\n").unwrap();
    fs::write(ctx.join("src/ignored.key"), "not for the build\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "**/*.key\n").unwrap();
    const SECRET: &str = "s3cr3t-value-7f3a";
    let secret = a.write("token.txt", SECRET.as_bytes());
    let secret_flag = format!("id=token,src={}", secret.display());
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nARG URL\nARG REV=1\n\
         RUN --mount=type=cache,target=/var/cache/pkgs,id=pkgs sh -c 'test -f /var/cache/pkgs/pkg || wget -q -O /var/cache/pkgs/pkg \"$URL/pkg\"; cp /var/cache/pkgs/pkg /installed; echo $REV > /rev'\n\
         RUN --mount=type=secret,id=token sh -c 'sha256sum /run/secrets/token | cut -c1-64 > /secret-ok; stat -c %a /run/secrets/token >> /secret-ok'\n\
         RUN --mount=type=bind,source=src,target=/src sh -c 'cat /src/a.txt > /from-bind; ls /src > /bind-listing; touch /src/new 2>/dev/null && echo writable > /bind-rw || echo read-only > /bind-rw'\n\
         RUN --mount=type=tmpfs,target=/scratch sh -c 'grep -q \" /scratch tmpfs \" /proc/mounts && echo tmpfs > /tmpfs-seen && echo x > /scratch/x'\n\
         RUN --mount=type=cache,id=twice,target=/a,sharing=locked --mount=type=cache,id=twice,target=/b,sharing=locked sh -c 'echo one dir > /a/f && cat /b/f > /same-dir'\n\
         WORKDIR /work\nRUN --mount=type=bind,source=src,target=. cat a.txt > /from-dot\n",
    )
    .unwrap();
    let build_rev = |tag: &str, rev: &str| {
        build(
            &a,
            &[
                "-q",
                "--build-arg",
                &url,
                "--build-arg",
                &format!("REV={rev}"),
                "--secret",
                &secret_flag,
                "-t",
                tag,
                ctx.to_str().unwrap(),
            ],
        )
    };
    let (ok, _, err) = build_rev("mounts:1", "1");
    assert!(ok, "{err}");
    assert_eq!(
        a.ok(&[
            "run",
            "--rm",
            "mounts:1",
            "cat",
            "/installed",
            "/rev",
            "/secret-ok",
            "/from-bind",
            "/bind-listing",
            "/bind-rw",
            "/tmpfs-seen",
            "/same-dir",
            "/from-dot"
        ]),
        format!(
            "package-bytes\n1\n{:x}\n400\nA\na.txt\nread-only\ntmpfs\none dir\nA\n",
            <sha2::Sha256 as sha2::Digest>::digest(SECRET.as_bytes())
        )
    );
    assert_eq!(served.hits(), 1);
    // Each RUN layer holds what its command wrote, nothing of its mounts.
    let layers = layer_paths(&a, "mounts:1");
    let runs = &layers[layers.len() - 6..];
    assert_eq!(runs[0], ["installed", "rev"], "{layers:?}");
    assert_eq!(runs[1], ["secret-ok"]);
    assert_eq!(runs[2], ["bind-listing", "bind-rw", "from-bind"]);
    assert_eq!(runs[3], ["tmpfs-seen"]);
    // Two mounts of one locked cache: one directory, one lock (no hang).
    assert_eq!(runs[4], ["same-dir"]);
    // A mount at WORKDIR leaves the WORKDIR in the image, as Docker's.
    assert_eq!(runs[5], ["from-dot", "work"]);
    // A changed step runs again and finds its download in the cache mount.
    let (ok, _, err) = build_rev("mounts:2", "2");
    assert!(ok, "{err}");
    assert_eq!(
        a.ok(&["run", "--rm", "mounts:2", "cat", "/installed", "/rev"]),
        "package-bytes\n2\n"
    );
    assert_eq!(served.hits(), 1, "the second build used the cached download");
    // A bind's content is part of its step's key.
    fs::write(ctx.join("src/a.txt"), "B\n").unwrap();
    let (ok, _, err) = build_rev("mounts:3", "2");
    assert!(ok, "{err}");
    assert_eq!(a.ok(&["run", "--rm", "mounts:3", "cat", "/from-bind"]), "B\n");
    // The secret is in no blob, record, log or file of the root.
    let leaked = found_under(&a.root(), SECRET.as_bytes());
    assert!(leaked.is_empty(), "the secret is in {leaked:?}");
    // Bad input: a secret not given, a cache target that is a file.
    let (ok, _, err) = build(
        &a,
        &[
            "-q",
            "--build-arg",
            &url,
            "-t",
            "mounts:nosecret",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("Dockerfile:5:1") && err.contains("secret \"token\" is not given"),
        "{err}"
    );
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nRUN echo > /afile\nRUN --mount=type=cache,target=/afile true\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "mounts:file", ctx.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Dockerfile:3:1") && err.contains("/afile is a file"),
        "{err}"
    );
    let images = a.ok(&["images"]);
    assert!(!images.contains("nosecret") && !images.contains("file"), "{images}");
}

#[test]
fn only_the_stages_the_target_needs_are_built() {
    let test = "only_the_stages_the_target_needs_are_built";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    let ctx = a.path("ctx-graph");
    fs::create_dir_all(&ctx).unwrap();
    // `unused` names a registry nobody serves and fails if it ran; `lib`
    // is needed through COPY --from, `tool` through a bind mount's from=.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM 127.0.0.1:9/nobody/serves:this AS unused\nRUN false\n\
         FROM base:1 AS lib\nRUN echo lib > /lib.txt\n\
         FROM base:1 AS tool\nRUN echo tool > /tool.txt\n\
         FROM base:1 AS unused2\nRUN false\n\
         FROM --platform=$BUILDPLATFORM base:1\nARG TARGETARCH\nCOPY --from=lib /lib.txt /\n\
         RUN --mount=type=bind,from=tool,source=/tool.txt,target=/t sh -c 'cat /t > /tool-copy; echo $TARGETARCH > /arch'\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["-t", "graph:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    let steps: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(steps.len(), 8, "{err}");
    assert!(steps[0].starts_with("[1/8] FROM base:1 AS lib"), "{err}");
    assert!(!err.contains("unused"), "{err}");
    // BuildKit's automatic platform ARGs name this machine.
    let arch = a.json(&["inspect", "base:1"])[0]["architecture"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        a.ok(&["run", "--rm", "graph:1", "cat", "/lib.txt", "/tool-copy", "/arch"]),
        format!("lib\ntool\n{arch}\n")
    );
    let bom = a.json(&["inspect", "--bom", "graph:1"]);
    let stages: Vec<&str> = bom[0]["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["lib", "tool", "4"]);
    // Asked for, the unused stage is built and fails at its FROM.
    let (ok, _, err) = build(
        &a,
        &["-q", "--target", "unused", "-t", "graph:bad", ctx.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("Dockerfile:1:1") && err.contains("cannot pull base image"),
        "{err}"
    );
}

#[test]
fn push_and_output_send_the_build_on() {
    let test = "push_and_output_send_the_build_on";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    let served = ingot_testsupport::Served::start(&a, &[]);
    let ctx = a.path("ctx-out");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nCOPY hello.txt /srv/\nRUN chmod 4755 /srv/hello.txt\n",
    )
    .unwrap();
    let name = format!("{}/team/app:1", served.host());
    let archive = a.path("out/app.tar");
    let rootfs = a.path("out/rootfs");
    let (ok, digest, err) = build(
        &a,
        &[
            "-q",
            "--push",
            "-t",
            &name,
            "--output",
            &format!("type=oci,dest={}", archive.display()),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    // Pushed with its referrers: a fresh root pulls the image and its provenance.
    let b = Ingot::new(BIN);
    assert_eq!(b.ok(&["pull", "-q", &name]).trim(), digest);
    let provenance = b.json(&["inspect", "--provenance", &name]);
    assert_eq!(provenance[0]["subject"][0]["digest"]["sha256"], &digest[7..]);
    // The archive loads elsewhere, referrers along.
    let c = Ingot::new(BIN);
    c.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(c.json(&["inspect", &digest])[0]["digest"], digest.as_str());
    c.json(&["inspect", "--provenance", &digest]);
    // A bare path: the root filesystem.
    let (ok, _, err) = build(&a, &["-q", "-o", rootfs.to_str().unwrap(), ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(fs::read_to_string(rootfs.join("srv/hello.txt")).unwrap(), "hello\n");
    // Left on the host, a root filesystem holds no setuid file.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(rootfs.join("srv/hello.txt")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "the image's 4755 without its setuid bit");
    assert!(rootfs.join("bin/busybox").is_file());
    // Bad input fails before anything is built or tagged.
    for (args, message) in [
        (vec!["--push", "-t", "plain:1"], "tag plain:1 names no registry"),
        (vec!["--push"], "--push needs a tag"),
        (
            vec!["-o", "type=zip,dest=x", "-t", "zip:1"],
            "invalid --output type \"zip\"",
        ),
        (vec!["-o", "type=oci", "-t", "nodest:1"], "invalid --output"),
        (vec!["-o", rootfs.to_str().unwrap(), "-t", "full:1"], "is not empty"),
    ] {
        let mut all = vec!["-q"];
        all.extend(args);
        all.push(ctx.to_str().unwrap());
        let (ok, _, err) = build(&a, &all);
        assert!(!ok && err.contains(message), "{all:?}: {err}");
    }
    let images = a.ok(&["images"]);
    for never in ["plain", "zip", "nodest", "full"] {
        assert!(!images.contains(never), "{never} in {images}");
    }
}

#[test]
fn copy_flags_add_urls_and_onbuild_triggers() {
    let test = "copy_flags_add_urls_and_onbuild_triggers";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    a.ok(&["run", "--rm", "base:1", "true"]);
    const BODY: &str = "downloaded\n";
    let served = FileServer::start(BODY);
    let sum = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(BODY.as_bytes()));
    let ctx = a.path("ctx-flags");
    for (f, content) in [
        ("app/keep.txt", "kept\n"),
        ("app/debug.log", "no\n"),
        ("app/tmp/t", "no\n"),
        ("app/sub/keep2.txt", "kept too\n"),
        ("a/x.txt", "x\n"),
        ("b/y.txt", "y\n"),
        ("b/z.txt", "z\n"),
    ] {
        fs::create_dir_all(ctx.join(f).parent().unwrap()).unwrap();
        fs::write(ctx.join(f), content).unwrap();
    }
    let url = format!("http://{GATEWAY}:{}", served.port);
    let dockerfile = |checksum: &str| {
        format!(
            "FROM base:1\nCOPY --exclude=*.log --exclude=tmp app/ /app/\nCOPY --parents a/x.txt b/*.txt /p/\n\
             COPY --link app/keep.txt /linked.txt\nADD --checksum=sha256:{checksum} {url}/dl/file.bin /dl/\n\
             ARG U={url}\nADD $U/other.txt /named.txt\nONBUILD RUN echo triggered > /triggered\n\
             ONBUILD COPY app/keep.txt /onbuild-copy.txt\n"
        )
    };
    fs::write(ctx.join("Dockerfile"), dockerfile(&sum)).unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "parent:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    let listing = a.ok(&[
        "run", "--rm", "parent:1", "sh", "-c",
        "find /app /p | sort; cat /linked.txt /dl/file.bin /named.txt; stat -c %a /dl/file.bin; test -e /triggered || echo no-trigger-here",
    ]);
    assert_eq!(
        listing,
        "/app\n/app/keep.txt\n/app/sub\n/app/sub/keep2.txt\n/p\n/p/a\n/p/a/x.txt\n/p/b\n/p/b/y.txt\n/p/b/z.txt\n\
         kept\ndownloaded\ndownloaded\n600\nno-trigger-here\n"
    );
    let config = a.json(&["inspect", "parent:1"]);
    assert_eq!(
        config[0]["config"]["OnBuild"],
        serde_json::json!(["RUN echo triggered > /triggered", "COPY app/keep.txt /onbuild-copy.txt"])
    );
    // Only the download with no checksum counts as network access.
    let bom = a.json(&["inspect", "--bom", "parent:1"]);
    assert_eq!(bom[0]["network"].as_array().map(Vec::len), Some(1), "{bom}");
    assert_eq!(bom[0]["network"][0]["network"], "download");
    // A child runs the triggers first; they are not passed on.
    let child = a.path("ctx-child");
    fs::create_dir_all(child.join("app")).unwrap();
    fs::write(child.join("app/keep.txt"), "the child's\n").unwrap();
    fs::write(
        child.join("Dockerfile"),
        "FROM parent:1\nRUN cat /triggered /onbuild-copy.txt > /seen\n",
    )
    .unwrap();
    let (ok, _, err) = build(&a, &["-t", "child:1", child.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("ONBUILD RUN echo triggered > /triggered"), "{err}");
    assert_eq!(
        a.ok(&["run", "--rm", "child:1", "cat", "/seen"]),
        "triggered\nthe child's\n"
    );
    assert!(a.json(&["inspect", "child:1"])[0]["config"]
        .get("OnBuild")
        .is_none_or(|v| v.is_null()));
    // A download that does not match its checksum: an error at its line.
    fs::write(ctx.join("Dockerfile"), dockerfile(&"0".repeat(64))).unwrap();
    let (ok, _, err) = build(&a, &["-q", "-t", "parent:bad", ctx.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Dockerfile:5:1") && err.contains("not --checksum=sha256:000"),
        "{err}"
    );
    assert!(!a.ok(&["images"]).contains("bad"));
}

#[test]
fn independent_stages_build_at_once() {
    let test = "independent_stages_build_at_once";
    let Some(a) = root_with_base(test, Ingot::new(BIN)) else {
        return;
    };
    let ctx = a.path("ctx-parallel");
    fs::create_dir_all(&ctx).unwrap();
    // Each of `left` and `right` leaves a mark in a shared cache mount and
    // waits (10 s at most) for the other's: built one after the other, the
    // first would wait in vain and fail.
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=rendezvous-$NONCE,target=/r sh -c 'touch /r/{me}; i=0; \
             while [ ! -e /r/{other} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
             test -e /r/{other} && echo {me} met {other} > /{me}.txt'\n"
        )
    };
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "ARG NONCE\nFROM base:1 AS left\nARG NONCE\n{}FROM base:1 AS right\nARG NONCE\n{}\
             FROM base:1\nCOPY --from=left /left.txt /\nCOPY --from=right /right.txt /\n",
            wait("left", "right"),
            wait("right", "left")
        ),
    )
    .unwrap();
    let nonce = format!("NONCE={}", std::process::id());
    let (ok, _, err) = build(&a, &["--build-arg", &nonce, "-t", "parallel:1", ctx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        a.ok(&["run", "--rm", "parallel:1", "cat", "/left.txt", "/right.txt"]),
        "left met right\nright met left\n"
    );
    // Progress is told in file order, numbered as the file reads.
    let steps: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    let numbers: Vec<&str> = steps.iter().map(|l| l.split(']').next().unwrap()).collect();
    assert_eq!(
        numbers,
        ["[1/9", "[2/9", "[3/9", "[4/9", "[5/9", "[6/9", "[7/9", "[8/9", "[9/9"],
        "{err}"
    );
    assert!(steps[0].contains("AS left") && steps[3].contains("AS right"), "{err}");
}
