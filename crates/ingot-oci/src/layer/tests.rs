use super::*;
use ingot_testsupport::RawTar;
use tar::EntryType;

fn unpack_bytes(data: &[u8], dest: &Path) -> Result<Stats, LayerError> {
    unpack(
        data,
        dest,
        &UnpackOptions {
            same_owner: false,
            ..Default::default()
        },
    )
}

fn refused(data: &[u8], needle: &str) {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let err = unpack_bytes(data, &dest).expect_err("hostile archive accepted");
    assert!(err.to_string().contains(needle), "error {err:?} lacks {needle:?}");
    // Nothing may appear next to the target.
    let siblings: Vec<_> = fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![OsStr::new("dest").to_owned()]);
    // And the rewriter refuses the same entries that are unsafe by themselves.
    let _ = normalize(data, Vec::new(), &Limits::default());
}

#[test]
fn refuses_parent_and_absolute_paths() {
    refused(&RawTar::new().file("../evil", b"x").finish(), "'..'");
    refused(&RawTar::new().file("a/../../evil", b"x").finish(), "'..'");
    refused(&RawTar::new().file("/evil", b"x").finish(), "absolute path");
    assert!(normalize(
        &RawTar::new().file("/evil", b"x").finish()[..],
        Vec::new(),
        &Limits::default()
    )
    .is_err());
}

#[test]
fn refuses_writing_through_symlinks() {
    refused(
        &RawTar::new().symlink("escape", "..").file("escape/evil", b"x").finish(),
        "through symlink",
    );
    refused(
        &RawTar::new().symlink("etc", "/etc").file("etc/passwd", b"x").finish(),
        "through symlink",
    );
    // A symlink as the final component is replaced, never followed.
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside");
    fs::write(&outside, b"keep").unwrap();
    let dest = root.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let tar = RawTar::new()
        .symlink("f", outside.to_str().unwrap())
        .file("f", b"new")
        .finish();
    unpack_bytes(&tar, &dest).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"keep");
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"new");
}

#[test]
fn a_directory_replaced_in_the_same_layer_is_looked_at_again() {
    // The parent walk remembers directories it has seen: one replaced by a
    // symlink later in the same archive must not be written through.
    refused(
        &RawTar::new()
            .dir("a")
            .file("a/first", b"x")
            .symlink("a", "..")
            .file("a/evil", b"x")
            .finish(),
        "through symlink",
    );
    refused(
        &RawTar::new()
            .file("d/x", b"x")
            .file("d", b"now a file")
            .file("d/y", b"y")
            .finish(),
        "not a directory",
    );
    // Entries repeated into a fresh directory: the last one wins.
    let root = tempfile::tempdir().unwrap();
    let tar = RawTar::new()
        .file("f", b"one")
        .file("f", b"two")
        .dir("d")
        .symlink("d", "f")
        .file("d", b"file at last")
        .finish();
    unpack_bytes(&tar, root.path()).unwrap();
    assert_eq!(fs::read(root.path().join("f")).unwrap(), b"two");
    assert_eq!(fs::read(root.path().join("d")).unwrap(), b"file at last");
    // A parent made for an entry, then named itself after a removal made
    // the walk forget what it had seen.
    let root = tempfile::tempdir().unwrap();
    let tar = RawTar::new()
        .file("a/f", b"1")
        .file("g", b"one")
        .file("g", b"two")
        .dir("a")
        .finish();
    unpack_bytes(&tar, root.path()).unwrap();
    assert_eq!(fs::read(root.path().join("a/f")).unwrap(), b"1");
    // An empty archive into a directory that is not there: nothing to do.
    let gone = root.path().join("missing");
    unpack_bytes(&RawTar::new().finish(), &gone).unwrap();
}

#[test]
fn refuses_hardlink_escapes_and_devices() {
    refused(
        &RawTar::new().hardlink("h", "../../etc/passwd").finish(),
        "hard link target outside",
    );
    refused(
        &RawTar::new().hardlink("h", "/etc/passwd").finish(),
        "hard link target outside",
    );
    refused(
        &RawTar::new().symlink("s", "/etc").hardlink("h", "s/passwd").finish(),
        "through symlink",
    );
    refused(&RawTar::new().hardlink("h", "missing").finish(), "does not exist");
    refused(
        &RawTar::new().entry(b"dev/sda", EntryType::Char, b"", b"").finish(),
        "device nodes",
    );
    refused(
        &RawTar::new().entry(b"dev/sda", EntryType::Block, b"", b"").finish(),
        "device nodes",
    );
}

#[test]
fn refuses_absurd_sizes_and_truncation() {
    let huge = RawTar::new()
        .entry_sized(b"big", EntryType::Regular, b"", b"", 1 << 40)
        .finish();
    refused(&huge, "entry limit");
    let short = RawTar::new()
        .entry_sized(b"f", EntryType::Regular, b"abc", b"", 4096)
        .truncated(0);
    refused(&short, "truncated");
    let cut = RawTar::new().file("f", &[7u8; 2000]).truncated(1100);
    refused(&cut, "truncated");
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let many = RawTar::new().file("a", b"").file("b", b"").file("c", b"").finish();
    assert!(normalize(&many[..], Vec::new(), &limits)
        .unwrap_err()
        .to_string()
        .contains("more than 2 entries"));
}

#[test]
fn unpacks_files_links_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = RawTar::new()
        .dir("etc")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .symlink("etc/link", "/does/not/matter")
        .hardlink("etc/hosts2", "etc/hosts")
        .file("deep/er/file", b"implicit parents")
        .finish();
    let stats = unpack_bytes(&tar, tmp.path()).unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(
        fs::read(tmp.path().join("etc/hosts2")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(
        fs::read_link(tmp.path().join("etc/link")).unwrap(),
        Path::new("/does/not/matter")
    );
    assert_eq!(fs::read(tmp.path().join("deep/er/file")).unwrap(), b"implicit parents");
    let mode = fs::metadata(tmp.path().join("etc/hosts")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
}

#[test]
fn applies_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = RawTar::new()
        .dir("a")
        .file("a/keep", b"1")
        .file("a/gone", b"2")
        .dir("b")
        .file("b/old1", b"3")
        .dir("b/sub")
        .file("b/sub/old2", b"4")
        .finish();
    unpack_bytes(&lower, tmp.path()).unwrap();
    let upper = RawTar::new()
        .file("a/.wh.gone", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"5")
        .file("c/.wh.nothing", b"")
        .finish();
    unpack_bytes(&upper, tmp.path()).unwrap();
    assert!(tmp.path().join("a/keep").exists());
    assert!(!tmp.path().join("a/gone").exists());
    assert!(!tmp.path().join("a/.wh.gone").exists());
    let mut b: Vec<_> = fs::read_dir(tmp.path().join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    b.sort();
    assert_eq!(b, vec![OsStr::new("new").to_owned()]);
    assert!(!tmp.path().join("c").exists(), "a whiteout must not create its parent");
    refused(&RawTar::new().file("a/.wh...", b"").finish(), "malformed whiteout");
}

#[test]
fn overlay_mode_keeps_whiteouts_for_overlayfs() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP overlay_mode_keeps_whiteouts_for_overlayfs: mknod of whiteouts needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = RawTar::new()
        .file("a/.wh.gone", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .finish();
    let opts = UnpackOptions {
        same_owner: false,
        whiteouts: Whiteouts::Overlay,
        ..Default::default()
    };
    unpack(&upper[..], tmp.path(), &opts).unwrap();
    let m = fs::symlink_metadata(tmp.path().join("a/gone")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(tmp.path().join("b"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");

    // A whiteout and then the same name again in one layer (a directory
    // replaced by a file, as some differs write it): the file wins.
    let tmp = tempfile::tempdir().unwrap();
    let replaced = RawTar::new().file("etc/.wh.foo", b"").file("etc/foo", b"file").finish();
    unpack(&replaced[..], tmp.path(), &opts).unwrap();
    assert_eq!(fs::read(tmp.path().join("etc/foo")).unwrap(), b"file");
}

#[test]
fn normalize_is_deterministic_and_keeps_content() {
    let input = RawTar::new()
        .dir("./x/")
        .file("./x/f", b"data")
        .symlink("x/l", "f")
        .finish();
    let (a, stats) = normalize(&input[..], Vec::new(), &Limits::default()).unwrap();
    let (b, _) = normalize(&input[..], Vec::new(), &Limits::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(stats.entries, 3);
    let tmp = tempfile::tempdir().unwrap();
    unpack_bytes(&a, tmp.path()).unwrap();
    assert_eq!(fs::read(tmp.path().join("x/f")).unwrap(), b"data");
    assert_eq!(fs::read_link(tmp.path().join("x/l")).unwrap(), Path::new("f"));
}

#[test]
fn clean_path_normalises() {
    let l = Limits::default();
    assert_eq!(clean_path(b"./a//b/./c/", &l).unwrap(), Path::new("a/b/c"));
    assert_eq!(clean_path(b"./", &l).unwrap(), Path::new(""));
    assert!(clean_path(&[b'a'; 5000], &l).is_err());
}
