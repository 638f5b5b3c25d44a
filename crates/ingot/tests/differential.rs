//! `ingot build` against `docker build` (the engine's classic builder) on a
//! corpus of Dockerfiles: for each, the root filesystem ingot builds
//! (`ingot unpack`) and the one Docker builds (`docker export` of a
//! container made from it) must hold the same paths with the same types,
//! modes, owners, link targets and file contents. Only what Docker's
//! container adds on export (`/.dockerenv`, `/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`, `/etc/mtab`, `/dev`, `/proc`, `/sys`) is left out.
//!
//! Needs root and the Docker engine; skips (failing under
//! INGOT_REQUIRE_ALL=1) without them. Removes every image and container it
//! made, and asserts so.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use ingot_testsupport::{have, is_root, skip, Ingot};
use sha2::Digest as _;

const BIN: &str = env!("CARGO_BIN_EXE_ingot");

/// One Dockerfile of the corpus and its context (`path`, content; a
/// content starting with `->` makes a symlink to the rest).
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    files: &'static [(&'static str, &'static str)],
}

const CORPUS: &[Case] = &[
    Case {
        name: "copy-files-and-directories",
        dockerfile: "FROM {BASE}\nCOPY a.txt /app/\nCOPY dir /app/dir\nCOPY a.txt /app/renamed.txt\nCOPY dir/sub /flat/\n",
        files: &[("a.txt", "a\n"), ("dir/b.txt", "b\n"), ("dir/sub/c.txt", "c\n")],
    },
    Case {
        name: "wildcards",
        dockerfile: "FROM {BASE}\nCOPY *.txt /w/\nCOPY src/?.md /q/\nCOPY src/*/x* /deep/\n",
        files: &[
            ("one.txt", "1\n"),
            ("two.txt", "2\n"),
            ("skip.md", "no\n"),
            ("src/a.md", "a\n"),
            ("src/ab.md", "ab\n"),
            ("src/n/x1", "x1\n"),
            ("src/m/x2", "x2\n"),
        ],
    },
    Case {
        name: "dockerignore",
        dockerfile: "FROM {BASE}\nCOPY . /ctx/\n",
        files: &[
            (".dockerignore", "*.log\nsecret*\nbuild\n!build/keep.txt\n**/tmp\n"),
            ("app.py", "print()\n"),
            ("debug.log", "x\n"),
            ("sub/debug.log", "kept: *.log is top-level only\n"),
            ("secret.key", "x\n"),
            ("build/out.o", "x\n"),
            ("build/keep.txt", "kept\n"),
            ("a/tmp/t", "x\n"),
        ],
    },
    Case {
        name: "chown-numeric",
        dockerfile: "FROM {BASE}\nCOPY --chown=1000:1000 f.txt /o/\nADD --chown=12:34 dir /d/\nCOPY --chown=7 f.txt /seven\n",
        files: &[("f.txt", "f\n"), ("dir/g.txt", "g\n"), ("dir/h/i.txt", "i\n")],
    },
    Case {
        name: "add-local-archives",
        dockerfile: "FROM {BASE}\nADD plain.tar /x/\nADD packed.tar.gz /y/\nADD notatar.gz /z/\n",
        // The archives are made by the test (see `archives`).
        files: &[("notatar.gz", "not gzip at all\n")],
    },
    Case {
        name: "run-deletes-and-writes",
        dockerfile: "FROM {BASE}\nRUN rm /etc/motd && rm -r /root && mkdir -p /new/deep && echo hi > /new/deep/f\nRUN rm /new/deep/f && echo again > /new/g\n",
        files: &[],
    },
    Case {
        name: "run-replaces-a-directory",
        // (Not /etc: both builders mount /etc/hosts there while RUN runs.)
        dockerfile: "FROM {BASE}\nRUN rm -rf /root && mkdir /root && echo only > /root/only\nRUN mkdir -p /opt/a/b && echo 1 > /opt/a/b/f\nRUN rm -rf /opt/a && mkdir -p /opt/a && echo 2 > /opt/a/g\n",
        files: &[],
    },
    Case {
        name: "symlinks",
        dockerfile: "FROM {BASE}\nRUN ln -s /etc/motd /motd-link && ln -s ../no/such /dangling && mkdir /l && ln -s . /l/self\nCOPY tree /tree/\n",
        files: &[("tree/real.txt", "real\n"), ("tree/link.txt", "->real.txt"), ("tree/up", "->../elsewhere")],
    },
    Case {
        name: "hardlinks",
        dockerfile: "FROM {BASE}\nRUN echo shared > /h1 && ln /h1 /h2 && mkdir /hd && ln /h1 /hd/h3\n",
        files: &[],
    },
    Case {
        name: "modes",
        dockerfile: "FROM {BASE}\nCOPY exec.sh /bin/exec.sh\nRUN touch /suid /sticky-dir-file && chmod 4755 /suid && mkdir /sticky && chmod 1777 /sticky && chmod 0600 /sticky-dir-file && mkdir -m 0700 /private\n",
        files: &[("exec.sh", "#!/bin/sh\necho hi\n")],
    },
    Case {
        name: "users-and-owners",
        dockerfile: "FROM {BASE}\nRUN echo usr:x:1234:1234::/home/usr:/bin/sh >> /etc/passwd && echo grp:x:1234: >> /etc/group && mkdir -p /home/usr\nUSER usr\nRUN touch /tmp/by-user && mkdir /tmp/userdir\nUSER root\nRUN chown -R 1234:1234 /home/usr && echo done > /home/usr/done\n",
        files: &[],
    },
    Case {
        name: "multi-stage",
        dockerfile: "FROM {BASE} AS build\nRUN mkdir /out && echo artefact > /out/app && echo lib > /out/lib.so\nFROM {BASE}\nCOPY --from=build /out /app/\nCOPY --from=0 /out/app /single\n",
        files: &[],
    },
    Case {
        name: "copy-from-after-deletions",
        // COPY --from reads the stage's layers merged: deleted files and
        // replaced directories stay gone.
        dockerfile: "FROM {BASE} AS s\nRUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/b && echo s > /d/sub/s\n\
                     RUN rm /d/a && rm -r /d/sub\nRUN mkdir -p /e/old && echo 1 > /e/one\nRUN rm -rf /e && mkdir /e && echo 2 > /e/two\n\
                     FROM {BASE}\nCOPY --from=s /d /d\nCOPY --from=s /e /e/\nCOPY --from=s /d/b /e/two /single/\n",
        files: &[],
    },
    Case {
        name: "args-and-env",
        dockerfile: "FROM {BASE}\nARG V=1\nENV P=/opt/v$V\nCOPY f.txt $P/\nRUN echo ${V:-none} ${UNSET:-dflt} ${V:+set} > ${P}/v\nWORKDIR $P/work\nRUN pwd > here\n",
        files: &[("f.txt", "f\n")],
    },
    Case {
        name: "workdir",
        dockerfile: "FROM {BASE}\nWORKDIR /a/b\nCOPY f.txt .\nCOPY f.txt rel/\nWORKDIR c\nRUN pwd > where && touch made\nWORKDIR /\nCOPY f.txt ./top.txt\n",
        files: &[("f.txt", "f\n")],
    },
    Case {
        name: "overwrite-and-merge",
        dockerfile: "FROM {BASE}\nCOPY motd /etc/motd\nCOPY etc/ /etc/\nRUN echo appended >> /etc/motd\nCOPY dir /merge/\nCOPY more /merge/\n",
        files: &[
            ("motd", "replaced\n"),
            ("etc/extra.conf", "x=1\n"),
            ("dir/a", "a\n"),
            ("dir/s/b", "b\n"),
            ("more/s/c", "c\n"),
            ("more/a", "a2\n"),
        ],
    },
    Case {
        name: "exec-form-and-shell",
        dockerfile: "FROM {BASE}\nRUN [\"sh\", \"-c\", \"echo exec > /exec\"]\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo shell > /shell; echo ${HOME:-nohome} > /home-var\n",
        files: &[],
    },
    Case {
        name: "empty-directories",
        dockerfile: "FROM {BASE}\nRUN mkdir -p /e/f/g && rmdir /e/f/g && mkdir /keep-empty\nCOPY empty/ /copied-empty/\n",
        files: &[("empty/.gitkeep", "")],
    },
];

/// What a path is, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    /// A symlink's target, or a file's sha256.
    content: String,
}

/// What Docker's container adds (its init layer) on export.
fn docker_only(path: &str) -> bool {
    matches!(
        path,
        ".dockerenv" | "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab" | "dev" | "proc" | "sys"
    ) || path.starts_with("dev/")
        || path.starts_with("proc/")
        || path.starts_with("sys/")
}

fn hex(data: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(data))
}

/// The tree under `dir`, as ingot unpacked it.
fn tree_of_dir(dir: &Path) -> BTreeMap<String, Node> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let (kind, content) = if md.is_dir() {
                stack.push(p.clone());
                ("dir", String::new())
            } else if md.file_type().is_symlink() {
                ("symlink", fs::read_link(&p).unwrap().to_string_lossy().into_owned())
            } else {
                ("file", hex(&fs::read(&p).unwrap()))
            };
            if docker_only(&rel) {
                continue;
            }
            out.insert(
                rel,
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid().into(),
                    gid: md.gid().into(),
                    content,
                },
            );
        }
    }
    out
}

/// The tree in a `docker export` tar (hard links resolved to their
/// target's content).
fn tree_of_tar(tar_path: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut links = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(tar_path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let rel = path.trim_start_matches("./").trim_end_matches('/').to_string();
        if rel.is_empty() || docker_only(&rel) {
            continue;
        }
        let link = || entry_link(&h);
        let (kind, content) = match h.entry_type() {
            tar::EntryType::Directory => ("dir", String::new()),
            tar::EntryType::Symlink => ("symlink", link()),
            tar::EntryType::Link => {
                links.push((rel.clone(), link().trim_start_matches("./").to_string()));
                ("file", String::new())
            }
            _ => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                ("file", hex(&data))
            }
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                content,
            },
        );
    }
    for (path, target) in links {
        let content = out.get(&target).map(|n| n.content.clone()).unwrap_or_default();
        if let Some(n) = out.get_mut(&path) {
            n.content = content;
        }
    }
    out
}

fn entry_link(h: &tar::Header) -> String {
    h.link_name()
        .ok()
        .flatten()
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Docker images and containers this test made, removed on drop: those
/// named with `prefix`, and the untagged images built on the base image
/// `base_id` (a multi-stage build leaves its first stage's image behind).
struct DockerLeftovers {
    prefix: String,
    base_id: String,
}

impl DockerLeftovers {
    /// The lines `docker ARGS` prints that start with the prefix.
    fn named(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&self.prefix))
            .map(String::from)
            .collect()
    }

    fn images(&self) -> Vec<String> {
        self.named(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
    }

    fn containers(&self) -> Vec<String> {
        self.named(&["ps", "-a", "--format", "{{.Names}}"])
    }

    /// Untagged images whose history holds the base image.
    fn untagged(&self) -> Vec<String> {
        let base = &self.base_id;
        let out = Command::new("docker")
            .args(["images", "-aq", "--no-trunc", "--filter", "dangling=true"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|id| {
                Command::new("docker")
                    .args(["history", "-q", "--no-trunc", id])
                    .output()
                    .is_ok_and(|h| String::from_utf8_lossy(&h.stdout).contains(base.as_str()))
            })
            .map(String::from)
            .collect()
    }

    fn clean(&self) {
        for c in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
        for i in self.untagged() {
            let _ = Command::new("docker").args(["rmi", "-f", &i]).output();
        }
        // Built images first, the base they share last.
        let mut images = self.images();
        images.sort_by_key(|i| i.contains("/base:"));
        for i in images {
            let _ = Command::new("docker").args(["rmi", "-f", &i]).output();
        }
    }
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        self.clean();
    }
}

/// The base both builders start from: a static busybox with every applet,
/// root's and nobody's accounts, /tmp and /root; fixed owners and times.
fn base_tar(ingot: &Ingot) -> std::path::PathBuf {
    let dir = ingot.path("base-root");
    for d in ["bin", "etc", "tmp", "root", "home"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = sh(Command::new("/bin/busybox").arg("--list"));
    for applet in list.lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    let etc = ingot_testsupport::workspace_file("examples/rootfs/etc");
    for f in ["passwd", "group", "motd"] {
        fs::copy(etc.join(f), dir.join("etc").join(f)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    let tar = ingot.path("base.tar");
    sh(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
            "-C",
        ])
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

/// The two archives of the add-local-archives case.
fn archives(ctx: &Path) {
    let src = ctx.join("archive-src");
    fs::create_dir_all(src.join("inner")).unwrap();
    fs::write(src.join("top.txt"), "top\n").unwrap();
    fs::write(src.join("inner/deep.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("top.txt", src.join("to-top")).unwrap();
    for (name, flags) in [("plain.tar", "-cf"), ("packed.tar.gz", "-czf")] {
        sh(Command::new("tar")
            .args(["--owner=5", "--group=6", "--numeric-owner", "-C"])
            .arg(&src)
            .arg(flags)
            .arg(ctx.join(name))
            .arg("."));
    }
    fs::remove_dir_all(&src).unwrap();
}

#[test]
fn ingot_builds_the_same_root_filesystems_as_docker_build() {
    let test = "ingot_builds_the_same_root_filesystems_as_docker_build";
    if !is_root() {
        return skip(test, "RUN steps need root");
    }
    if !Path::new("/bin/busybox").exists() {
        return skip(test, "/bin/busybox is missing (Debian package busybox-static)");
    }
    let engine = have("docker")
        && Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success());
    if !engine {
        return skip(test, "no Docker engine answers (docker info)");
    }
    let ingot = Ingot::new(BIN);
    let prefix = format!("ingotdiff{}", std::process::id());
    let tar = base_tar(&ingot);
    let base = format!("{prefix}/base:1");
    ingot.ok(&["import", "-q", tar.to_str().unwrap(), &base]);
    let base_id = sh(Command::new("docker").arg("import").arg(&tar).arg(&base))
        .trim()
        .to_string();
    assert!(base_id.starts_with("sha256:"), "{base_id}");
    let leftovers = DockerLeftovers {
        prefix: prefix.clone(),
        base_id,
    };

    let mut differences = Vec::new();
    for case in CORPUS {
        let ctx = ingot.path(&format!("ctx-{}", case.name));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), case.dockerfile.replace("{BASE}", &base)).unwrap();
        for (path, content) in case.files {
            let p = ctx.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            match content.strip_prefix("->") {
                Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                None => fs::write(&p, content).unwrap(),
            }
        }
        if case.name == "add-local-archives" {
            archives(&ctx);
        }
        // Context files as a checkout leaves them: 0644, directories 0755.
        sh(Command::new("chmod").args(["-R", "u=rwX,go=rX"]).arg(&ctx));
        if case.name == "modes" {
            sh(Command::new("chmod").arg("0755").arg(ctx.join("exec.sh")));
        }
        let tag = format!("{prefix}/{}:1", case.name);

        // ingot
        ingot.ok(&["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
        let unpacked = ingot.path(&format!("unpacked-{}", case.name));
        ingot.ok(&["unpack", &tag, unpacked.to_str().unwrap()]);
        let ours = tree_of_dir(&unpacked);

        // docker build, classic builder
        sh(Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "--rm", "--force-rm", "-t", &tag])
            .arg(&ctx));
        let container = format!("{prefix}-{}", case.name);
        sh(Command::new("docker").args(["create", "--name", &container, &tag, "true"]));
        let exported = ingot.path(&format!("exported-{}.tar", case.name));
        sh(Command::new("docker")
            .args(["export", "-o"])
            .arg(&exported)
            .arg(&container));
        sh(Command::new("docker").args(["rm", &container]));
        let theirs = tree_of_tar(&exported);

        for (path, node) in &theirs {
            match ours.get(path) {
                None => differences.push(format!("{}: {path} only in docker's ({node:?})", case.name)),
                Some(o) if o != node => {
                    differences.push(format!("{}: {path}: ingot {o:?}, docker {node:?}", case.name))
                }
                Some(_) => {}
            }
        }
        for (path, node) in &ours {
            if !theirs.contains_key(path) {
                differences.push(format!("{}: {path} only in ingot's ({node:?})", case.name));
            }
        }
        assert!(
            ours.len() > 250,
            "{}: a busybox root has its applets ({} paths)",
            case.name,
            ours.len()
        );
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
    let untagged = leftovers.untagged();
    assert!(
        !untagged.is_empty(),
        "the multi-stage build left its first stage's image"
    );
    leftovers.clean();
    let (images, containers, untagged) = (leftovers.images(), leftovers.containers(), leftovers.untagged());
    assert!(
        images.is_empty() && containers.is_empty() && untagged.is_empty(),
        "left behind: {images:?} {containers:?} {untagged:?}"
    );
}
