//! The build context: a directory, minus what `.dockerignore` excludes.
//!
//! Sources of COPY and ADD resolve inside it only: `..` cannot climb out,
//! and symlinks on a source's path are followed inside the context as if it
//! were `/` (a link to `/etc` means `<context>/etc`). Symlinks inside copied
//! directories are copied as links, never followed.

use std::fs;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

use crate::error::{BuildError, Result};

/// `.dockerignore` rules: the last matching pattern decides; `!` re-includes.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<(Pattern, bool)>,
}

pub(crate) const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Ignore {
    pub fn parse(text: &str) -> Result<Ignore> {
        let mut rules = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pat.trim_start_matches('/'));
            let pattern = Pattern::new(&cleaned)
                .map_err(|e| BuildError::Invalid(format!(".dockerignore: bad pattern {line:?}: {e}")))?;
            rules.push((pattern, negated));
        }
        Ok(Ignore { rules })
    }

    /// Whether a rule re-includes (`!pattern`).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, negated)| *negated)
    }

    /// Whether `rel` (slash-separated, relative) is excluded: it, or one of
    /// its parent directories, matches an exclusion not overridden later.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (pattern, negated) in &self.rules {
            let mut prefix = String::new();
            let mut hit = false;
            for part in rel.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if pattern.matches_with(&prefix, MATCH) {
                    hit = true;
                    break;
                }
            }
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }
}

/// Lexically cleans a relative path (`a/./b/../c` -> `a/c`); `None`
/// parts that would climb out are dropped at the root.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

pub struct Context {
    root: PathBuf,
    ignore: Ignore,
}

impl Context {
    pub fn open(dir: &Path) -> Result<Context> {
        let root = fs::canonicalize(dir).map_err(|e| BuildError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        if !root.is_dir() {
            return Err(BuildError::Invalid(format!(
                "build context {} is not a directory",
                dir.display()
            )));
        }
        let ignore = match fs::read_to_string(root.join(".dockerignore")) {
            Ok(text) => Ignore::parse(&text)?,
            Err(_) => Ignore::default(),
        };
        Ok(Context { root, ignore })
    }

    /// A directory with no `.dockerignore` (a stage's or image's files).
    pub fn plain(dir: &Path) -> Result<Context> {
        Ok(Context {
            root: fs::canonicalize(dir).map_err(|e| BuildError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?,
            ignore: Ignore::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn excluded(&self, rel: &str) -> bool {
        self.ignore.excluded(rel)
    }

    /// The context paths a COPY/ADD source names: one path, or every match
    /// of a wildcard pattern. Errors when the source climbs out of the
    /// context or matches nothing.
    pub fn sources(&self, source: &str) -> Result<Vec<(String, PathBuf)>> {
        let raw = source.trim_start_matches('/');
        if Path::new(raw).components().any(|c| c == Component::ParentDir) {
            let mut depth = 0i32;
            for c in raw.split('/') {
                match c {
                    ".." => depth -= 1,
                    "" | "." => {}
                    _ => depth += 1,
                }
                if depth < 0 {
                    return Err(BuildError::Invalid(format!(
                        "COPY source {source:?} is outside the build context"
                    )));
                }
            }
        }
        let rel = clean(raw);
        let wildcard = rel.contains(['*', '?', '[']);
        if !wildcard {
            if !rel.is_empty() && self.excluded(&rel) {
                return Err(BuildError::Invalid(format!(
                    "COPY source {source:?} is excluded by .dockerignore"
                )));
            }
            let host = ingot_runtime::rootfs::secure_join(&self.root, &rel).map_err(BuildError::Invalid)?;
            if fs::symlink_metadata(&host).is_err() {
                return Err(BuildError::Invalid(format!(
                    "COPY source {source:?} not found in the build context"
                )));
            }
            return Ok(vec![(rel, host)]);
        }
        let pattern = Pattern::new(&rel).map_err(|e| BuildError::Invalid(format!("bad pattern {source:?}: {e}")))?;
        let mut found = Vec::new();
        self.walk(&self.root, &mut |r, p| {
            if pattern.matches_with(r, MATCH) {
                found.push((r.to_string(), p.to_path_buf()));
            }
        })?;
        if found.is_empty() {
            return Err(BuildError::Invalid(format!(
                "COPY source {source:?} matches nothing in the build context"
            )));
        }
        found.sort();
        Ok(found)
    }

    /// Calls `f(rel, host)` for every non-excluded path under `dir`, sorted.
    /// An excluded directory is still walked when `.dockerignore` has
    /// exceptions (`build` then `!build/keep.txt`), as Docker does: it is
    /// reported, before them, when something under it is included.
    pub fn walk(&self, dir: &Path, f: &mut dyn FnMut(&str, &Path)) -> Result<()> {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| BuildError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(&self.root).unwrap_or(&p).display().to_string();
            let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            if self.excluded(&rel) {
                if is_dir && self.ignore.has_exceptions() {
                    let mut found = Vec::new();
                    self.walk(&p, &mut |r, q| found.push((r.to_string(), q.to_path_buf())))?;
                    if !found.is_empty() {
                        f(&rel, &p);
                        for (r, q) in found {
                            f(&r, &q);
                        }
                    }
                }
                continue;
            }
            f(&rel, &p);
            if is_dir {
                self.walk(&p, f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_semantics() {
        let ig = Ignore::parse("# c\n*.log\n/build\n!build/keep\n**/tmp\nsecret*\n").unwrap();
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("sub/a.log"), "*.log matches at the top only");
        assert!(ig.excluded("build/x/y"));
        assert!(!ig.excluded("build/keep"));
        assert!(ig.excluded("a/b/tmp/c"));
        assert!(ig.excluded("secret.txt"));
        assert!(!ig.excluded("src/main.rs"));
    }

    #[test]
    fn an_exception_inside_an_excluded_directory_is_copied() {
        let t = tempfile::tempdir().unwrap();
        for f in ["build/out.o", "build/keep.txt", "build/sub/x", "app.py"] {
            fs::create_dir_all(t.path().join(f).parent().unwrap()).unwrap();
            fs::write(t.path().join(f), "x").unwrap();
        }
        fs::write(t.path().join(".dockerignore"), "build\n!build/keep.txt\n").unwrap();
        let ctx = Context::open(t.path()).unwrap();
        let mut seen = Vec::new();
        ctx.walk(t.path(), &mut |r, _| seen.push(r.to_string())).unwrap();
        assert_eq!(seen, [".dockerignore", "app.py", "build", "build/keep.txt"]);
    }

    #[test]
    fn sources_stay_inside_the_context() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("src")).unwrap();
        fs::write(t.path().join("src/a.txt"), "a").unwrap();
        fs::write(t.path().join("src/b.md"), "b").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("etc-link")).unwrap();
        let ctx = Context::open(t.path()).unwrap();
        assert!(ctx.sources("../x").is_err());
        assert!(ctx.sources("src/../../x").is_err());
        assert!(ctx.sources("nope").is_err());
        assert_eq!(ctx.sources("src/*.txt").unwrap().len(), 1);
        // A link to /etc resolves inside the context: nothing there.
        assert!(ctx.sources("etc-link/passwd").is_err());
        assert_eq!(ctx.sources("src/../src/a.txt").unwrap()[0].0, "src/a.txt");
    }
}
