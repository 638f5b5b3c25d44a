//! What the build context's git repository says: remote, commit, whether
//! the tree is dirty, and the last commit's time (the default
//! SOURCE_DATE_EPOCH). Read with the `git` command; no repository, or no
//! git, means no answers rather than an error.

use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitInfo {
    pub remote: Option<String>,
    pub commit: Option<String>,
    pub dirty: bool,
    /// Unix time of the last commit (`committed`): where a change's lead
    /// time starts (`ingot dora`).
    #[serde(default, rename = "committed", skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<i64>,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `None` when `dir` is not inside a git work tree.
pub fn detect(dir: &Path) -> Option<GitInfo> {
    if git(dir, &["rev-parse", "--is-inside-work-tree"])?.as_str() != "true" {
        return None;
    }
    let commit = git(dir, &["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
    let remote = git(dir, &["remote", "get-url", "origin"])
        .or_else(|| {
            git(dir, &["remote"])
                .and_then(|r| r.lines().next().map(String::from))
                .and_then(|name| git(dir, &["remote", "get-url", &name]))
        })
        .filter(|r| !r.is_empty());
    // Untracked files count: they can be part of the context.
    let dirty = git(dir, &["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
    let commit_time = git(dir, &["log", "-1", "--format=%ct"]).and_then(|t| t.parse().ok());
    Some(GitInfo {
        remote,
        commit,
        dirty,
        commit_time,
    })
}
