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

/// (path, st_ino) of every path below `dir` (see [`walk`]).
pub fn inode_numbers(dir: &Path) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    walk(dir)
        .into_iter()
        .map(|p| {
            let ino = std::fs::symlink_metadata(&p).unwrap().ino();
            (p, ino)
        })
        .collect()
}

/// Asserts that the paths of `inos` sharing an inode number are exactly
/// hard links: non-directories whose nlink is the number of names seen
/// (the names of one link are all below the same walked root), and that
/// no other two paths share one.
pub fn assert_only_hard_links_share(inos: &[(PathBuf, u64)]) {
    use std::os::unix::fs::MetadataExt;
    let mut by_ino: std::collections::BTreeMap<u64, Vec<&PathBuf>> = Default::default();
    for (p, i) in inos {
        by_ino.entry(*i).or_default().push(p);
    }
    for (i, paths) in by_ino.iter().filter(|(_, p)| p.len() > 1) {
        for p in paths {
            let md = std::fs::symlink_metadata(p).unwrap();
            assert!(
                !md.is_dir(),
                "{} shares st_ino {i} with {paths:?}",
                p.display()
            );
            assert_eq!(
                md.nlink(),
                paths.len() as u64,
                "{} shares st_ino {i} with {paths:?}",
                p.display()
            );
        }
    }
}

/// Makes the kernel forget every unused dentry and inode of every
/// file system (the daemon then gets their FORGETs and looks them up
/// again); false where that is not allowed (not root).
pub fn drop_kernel_caches() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "2").is_ok()
}
