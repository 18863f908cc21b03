//! A directory tree as the oracle sees it, and as a list of paths.

use std::path::{Path, PathBuf};

use super::oracle;

/// `oracle_merge.py --snapshot DIR`: the tree at `dir` (a mount, an
/// extracted image, an upperdir...) as the oracle's JSON manifest, for
/// `assert_same_tree`.
pub fn snapshot(dir: &Path) -> String {
    oracle(&["--snapshot", dir.to_str().unwrap()])
}

/// Every path below `dir` (`dir` itself left out), not following
/// symlinks, sorted; each is `dir` joined with the relative path (strip
/// `dir` for the relative names).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}
