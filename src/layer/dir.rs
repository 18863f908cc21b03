//! A layer read from a plain directory (a branch of `mount-branches`): an
//! existing Docker `aufs/diff/<id>` or `overlay2/<id>/diff` tree, a
//! containers/storage layer directory, or any extracted tree.
//!
//! The directory is walked once, at mount, into an ordinary layer index
//! ([`build_index_from_entries`]), so the union rules are the same as for
//! store layers. Both whiteout formats are read: AUFS `.wh.NAME` files and
//! `.wh..wh..opq` markers (decoded by the index builder, as in tars), and
//! kernel overlayfs' character devices 0:0 and `trusted.overlay.opaque` /
//! `user.overlay.opaque` = "y" xattrs, which the walk respells the AUFS way
//! ([`overlay_mark`]) before they reach the builder. Overlay's own xattrs
//! are not shown. Hard links inside the directory (same device and inode)
//! share an inode group. File data is read by path (`vfs::Layer`); the
//! directory must not change while mounted, as with overlayfs' lowerdir.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

use anyhow::{bail, Context, Result};

use crate::layer::index::lazy::{Expand, Listing};
use crate::layer::index::{build_index_from_entries, EntryMeta, Index, Kind, RawEntry};
use crate::layer::whiteout::{
    classify_name, is_overlay_xattr, overlay_mark, NameClass, OverlayMark,
};
use crate::sys;

/// One object found by the walk, already in the layer grammar.
struct Found {
    path: Vec<u8>,
    kind: Kind,
    meta: EntryMeta,
    /// (device, inode) of a non-directory with more than one name: its
    /// names become links to the first one once the walk is sorted.
    dev_ino: Option<(u64, u64)>,
    /// Its link count (of a `dev_ino` object).
    nlink: u32,
    link: Option<Vec<u8>>,
    size: u64,
    target: Vec<u8>,
    rdev: (u32, u32),
}

impl Found {
    /// An empty file: a whiteout or opaque marker (its path set by the caller).
    fn marker() -> Found {
        Found {
            path: Vec::new(),
            kind: Kind::File,
            meta: EntryMeta::default(),
            dev_ino: None,
            nlink: 1,
            link: None,
            size: 0,
            target: Vec::new(),
            rdev: (0, 0),
        }
    }
}

/// Sorts what a walk found by path: parents come before their children
/// (a path sorts after its prefixes), and a hard link's first name is its
/// first in that order. Two objects can stand for one path (an overlay
/// whiteout device next to a real `.wh.` file of the same name): they are
/// ordered by what they are too, so the index is the same whoever found
/// them.
fn sort_found(found: &mut [Found]) {
    found.sort_unstable_by(|a, b| {
        let key = |f: &Found| {
            (
                f.kind as u8,
                f.meta.mode,
                f.size,
                f.meta.mtime,
                f.meta.mtime_nsec,
            )
        };
        a.path
            .cmp(&b.path)
            .then_with(|| key(a).cmp(&key(b)))
            .then_with(|| a.target.cmp(&b.target))
            .then_with(|| a.meta.xattrs.cmp(&b.meta.xattrs))
    });
}

/// What the index builder takes of a found object.
fn raw_entry(f: &Found) -> RawEntry<'_> {
    RawEntry {
        path: &f.path,
        kind: f.kind,
        meta: f.meta.clone(),
        link: f.link.clone(),
        size: f.size,
        data_off: 0,
        target: f.target.clone(),
        rdev: f.rdev,
    }
}

/// The xattrs of `p`, sorted by name (none where the filesystem has none).
fn xattrs_of(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match sys::llistxattr(p) {
        Ok(n) => n,
        Err(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => bail!("listing xattrs of {}: errno {e}", p.display()),
    };
    let mut out = Vec::new();
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        match sys::lgetxattr(p, name) {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed since listed, or not readable by us: leave it out.
            Err(libc::ENODATA | libc::EPERM | libc::EACCES) => {}
            Err(e) => bail!(
                "reading xattr {} of {}: errno {e}",
                String::from_utf8_lossy(name),
                p.display()
            ),
        }
    }
    out.sort();
    Ok(out)
}

/// `lstat` of `p` (of any length: a branch path can be longer than the
/// mount's), its error naming `p`.
fn lstat(p: &Path) -> Result<libc::stat> {
    sys::lstat(p)
        .map_err(std::io::Error::from_raw_os_error)
        .with_context(|| format!("lstat {}", p.display()))
}

/// The names in directory `p` (of any length), its error naming `p`.
fn names_in(p: &Path) -> Result<Vec<sys::Dirent>> {
    sys::read_dir_names(p)
        .map_err(std::io::Error::from_raw_os_error)
        .with_context(|| format!("reading {}", p.display()))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Walks `root` and builds its layer index (in memory), reading both
/// whiteout formats.
pub fn index_directory(root: &Path) -> Result<Index> {
    index_directory_as(root, true)
}

/// Directories listed at once by one walk, by default. A cold walk waits
/// on the disk, not on a CPU, so more listings in flight pay even on 2
/// CPUs (see `index_directory_in`).
pub const WALKERS: usize = 8;

/// Walks `root` and builds its layer index. With `overlay` false only the
/// AUFS spelling means anything (a layerfs AUFS-format branch, where a
/// character device 0:0 is a device a user made and overlay xattrs are
/// plain xattrs).
pub fn index_directory_as(root: &Path, overlay: bool) -> Result<Index> {
    index_directory_in(root, overlay, WALKERS)
}

/// Work shared by the walkers of one directory tree.
struct Queue {
    /// Directories still to list, relative to the root.
    dirs: Vec<Vec<u8>>,
    /// Directories being listed now (their subdirectories are not queued yet).
    busy: usize,
    /// A walker failed: the others stop.
    failed: bool,
}

/// `index_directory_as` with `walkers` threads listing directories at once
/// (at least one). The entries are sorted by path afterwards, so the
/// index does not depend on which thread found what: parents come before
/// their children (a path sorts after its prefixes), and a hard link's
/// first name is its first in that order. Mount of Debian minbase (6800
/// entries) as one branch, cold: 0.17-0.19 s with one walker, 0.08-0.11 s
/// with 16.
pub fn index_directory_in(root: &Path, overlay: bool, walkers: usize) -> Result<Index> {
    let md = lstat(root).with_context(|| format!("branch {}", root.display()))?;
    if !is_dir(&md) {
        bail!("branch {} is not a directory", root.display());
    }
    let warned_metacopy = AtomicBool::new(false);
    let mut found = describe(root, Vec::new(), &md, &warned_metacopy, overlay)?;
    let queue = Mutex::new(Queue {
        dirs: vec![Vec::new()],
        busy: 0,
        failed: false,
    });
    let ready = Condvar::new();
    let results: Vec<Result<Vec<Found>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..walkers.max(1))
            .map(|_| s.spawn(|| walker(root, overlay, &queue, &ready, &warned_metacopy)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("directory walker panicked"))
            .collect()
    });
    for r in results {
        found.extend(r?);
    }
    sort_found(&mut found);
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for f in &mut found {
        if let Some(key) = f.dev_ino {
            match first.get(&key) {
                Some(p) => f.link = Some(p.clone()),
                None => {
                    first.insert(key, f.path.clone());
                }
            }
        }
    }
    let (bytes, _) = build_index_from_entries(found.iter().map(raw_entry))
        .with_context(|| format!("indexing branch {}", root.display()))?;
    Ok(Index::from_bytes(bytes, &root.display().to_string())?)
}

/// Lists one directory of a branch at a time, for a lazy index
/// ([`crate::layer::index::lazy`]): what the walk finds in that directory,
/// in the same grammar. A subdirectory's overlay opaque xattr is read with
/// it; its AUFS marker, a name inside it, when it is listed itself (one
/// `getdents` fewer per subdirectory of every listing).
struct Lister {
    root: std::path::PathBuf,
    /// The root's metadata, read once to check it is a directory and
    /// taken by the root listing.
    root_md: parking_lot::Mutex<Option<libc::stat>>,
    overlay: bool,
    warned_metacopy: AtomicBool,
}

/// The index of directory `root`, each directory listed when first
/// looked up or listed: the walk of [`index_directory_in`], spread over
/// the life of the mount. A directory that cannot be listed then shows
/// empty and [`Index::failed`] says why.
pub fn index_directory_lazy(root: &Path, overlay: bool) -> Result<Index> {
    let md = lstat(root).with_context(|| format!("branch {}", root.display()))?;
    if !is_dir(&md) {
        bail!("branch {} is not a directory", root.display());
    }
    let lister = Lister {
        root: root.to_path_buf(),
        root_md: parking_lot::Mutex::new(Some(md)),
        overlay,
        warned_metacopy: AtomicBool::new(false),
    };
    Index::lazy(Box::new(lister)).map_err(|e| anyhow::anyhow!(e))
}

impl Lister {
    /// `found` (paths relative to the listed directory) as a listing.
    fn listing(&self, mut found: Vec<Found>, what: &Path) -> Result<Listing> {
        sort_found(&mut found);
        let links: Vec<(Vec<u8>, (u64, u64), u32)> = found
            .iter()
            .filter_map(|f| Some((f.path.clone(), f.dev_ino?, f.nlink)))
            .collect();
        let (bytes, _) = build_index_from_entries(found.iter().map(raw_entry))
            .with_context(|| format!("indexing {}", what.display()))?;
        let index = Index::from_bytes(bytes, &what.display().to_string())?;
        let root = index.entry(0);
        let links = links
            .into_iter()
            .filter_map(|(name, key, nlink)| Some((index.lookup(&root, &name)?, key, nlink)))
            .collect();
        Ok(Listing { index, links })
    }
}

impl Expand for Lister {
    fn root(&self) -> std::result::Result<Listing, String> {
        let md = match self.root_md.lock().take() {
            Some(md) => md,
            None => lstat(&self.root).map_err(|e| format!("{e:#}"))?,
        };
        let found = describe(
            &self.root,
            Vec::new(),
            &md,
            &self.warned_metacopy,
            self.overlay,
        )
        .map_err(|e| format!("{e:#}"))?;
        self.listing(found, &self.root)
            .map_err(|e| format!("{e:#}"))
    }

    fn list(&self, rel: &[u8]) -> std::result::Result<Listing, String> {
        let full = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(std::ffi::OsStr::from_bytes(rel))
        };
        let mut found = Vec::new();
        let mut list = || -> Result<()> {
            for e in names_in(&full)? {
                let name = e.name;
                let p = full.join(std::ffi::OsStr::from_bytes(&name));
                let md = lstat(&p)?;
                if is_dir(&md) && name.starts_with(b".wh..wh.") {
                    continue;
                }
                found.extend(describe(
                    &p,
                    name,
                    &md,
                    &self.warned_metacopy,
                    self.overlay,
                )?);
            }
            Ok(())
        };
        list().map_err(|e| format!("{e:#}"))?;
        self.listing(found, &full).map_err(|e| format!("{e:#}"))
    }
}

/// One walker: takes directories off `queue` until none is left and none
/// is being listed, describing every entry it lists.
fn walker(
    root: &Path,
    overlay: bool,
    queue: &Mutex<Queue>,
    ready: &Condvar,
    warned_metacopy: &AtomicBool,
) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    loop {
        let rel = {
            let mut q = queue.lock();
            loop {
                if q.failed {
                    return Ok(out);
                }
                if let Some(d) = q.dirs.pop() {
                    q.busy += 1;
                    break d;
                }
                if q.busy == 0 {
                    return Ok(out);
                }
                ready.wait(&mut q);
            }
        };
        let mut guard = InFlight {
            queue,
            ready,
            done: false,
        };
        let listed = list_dir(root, &rel, overlay, warned_metacopy, &mut out);
        guard.done = true;
        let mut q = queue.lock();
        q.busy -= 1;
        let result = match listed {
            Ok(subdirs) => {
                q.dirs.extend(subdirs);
                Ok(())
            }
            Err(e) => {
                q.failed = true;
                Err(e)
            }
        };
        drop(q);
        ready.notify_all();
        result?;
    }
}

/// A directory being listed: if its walker panics, the walk fails
/// instead of the others waiting for it forever.
struct InFlight<'a> {
    queue: &'a Mutex<Queue>,
    ready: &'a Condvar,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self.queue.lock();
            q.busy -= 1;
            q.failed = true;
            drop(q);
            self.ready.notify_all();
        }
    }
}

/// Lists directory `rel` (relative to `root`) into `out`; returns its
/// subdirectories, to be listed next.
fn list_dir(
    root: &Path,
    rel: &[u8],
    overlay: bool,
    warned_metacopy: &AtomicBool,
    out: &mut Vec<Found>,
) -> Result<Vec<Vec<u8>>> {
    let full = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    };
    let mut subdirs = Vec::new();
    for e in names_in(&full)? {
        let name = e.name;
        let path = join(rel, &name);
        let p = full.join(std::ffi::OsStr::from_bytes(&name));
        let md = lstat(&p)?;
        if is_dir(&md) && name.starts_with(b".wh..wh.") {
            // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.orph) or layerfs'
            // own state (.wh..wh.layerfs): never part of the union.
            continue;
        }
        out.extend(describe(&p, path.clone(), &md, warned_metacopy, overlay)?);
        if is_dir(&md) {
            subdirs.push(path);
        }
    }
    Ok(subdirs)
}

/// The error of reading as one layer a directory renamed by overlayfs
/// (its content lies in the layers below): callers that know those
/// layers expand it instead (`commit`, `diff` onto an image).
#[derive(Debug)]
pub struct Redirected(pub String);

impl std::fmt::Display for Redirected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redirected {}

/// The entries one object of the walk stands for: itself, a whiteout in
/// the AUFS spelling, or a directory plus its opaque marker.
fn describe(
    p: &Path,
    path: Vec<u8>,
    md: &libc::stat,
    warned_metacopy: &AtomicBool,
    overlay: bool,
) -> Result<Vec<Found>> {
    let kind = Kind::of_mode(md.st_mode);
    if kind == Kind::Socket {
        tracing::warn!(path = %p.display(), "skipping a socket in a branch");
        return Ok(Vec::new());
    }
    let rdev = (libc::major(md.st_rdev), libc::minor(md.st_rdev));
    let mut xattrs = xattrs_of(p)?;
    // In a layerfs AUFS-format branch overlay's markers mean nothing.
    let mark = if overlay {
        let mark = overlay_mark(
            kind,
            rdev,
            xattrs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        if let Some((n, v)) = xattrs
            .iter()
            .find(|(n, _)| is_overlay_xattr(n) && n.ends_with(b".redirect"))
        {
            // The directory's lower content is elsewhere: shown as stored
            // it would lose that content, and its old name stays whited
            // out. Upper directories of layerfs' own mounts read them;
            // a directory read as a layer does not.
            return Err(anyhow::Error::new(Redirected(format!(
                "{}: a directory renamed by overlayfs ({}={}): its content lies \
                 in the layers below, which a directory read as one layer (a \
                 lowerdir, `layerfs diff` or `commit` of it) cannot follow; mount \
                 it as the upperdir of `layerfs mount-branches` or of kernel \
                 overlayfs (redirect_dir=on)",
                p.display(),
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            ))));
        }
        if xattrs
            .iter()
            .any(|(n, _)| is_overlay_xattr(n) && n.ends_with(b".metacopy"))
            && !warned_metacopy.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(path = %p.display(), "overlay metacopy xattrs are not supported: the entry shows as it is stored");
        }
        xattrs.retain(|(n, _)| !is_overlay_xattr(n));
        mark
    } else {
        OverlayMark::None
    };
    let meta = EntryMeta {
        mode: md.st_mode & 0o7777,
        uid: md.st_uid,
        gid: md.st_gid,
        mtime: md.st_mtime,
        mtime_nsec: md.st_mtime_nsec as u32,
        xattrs,
    };
    let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], &path[..]),
    };
    let marker = |n: &[u8]| Found {
        path: join(dir, n),
        ..Found::marker()
    };
    if mark == OverlayMark::Whiteout && !path.is_empty() {
        return Ok(vec![marker(&[b".wh.", name].concat())]);
    }
    let linked = kind != Kind::Dir && md.st_nlink > 1 && classify_name(name) == NameClass::Plain;
    let target = if kind == Kind::Symlink {
        sys::readlink(p)
            .map_err(std::io::Error::from_raw_os_error)
            .with_context(|| format!("readlink {}", p.display()))?
    } else {
        Vec::new()
    };
    let opaque = mark == OverlayMark::Opaque;
    let mut out = vec![Found {
        path: path.clone(),
        kind,
        meta,
        dev_ino: linked.then_some((md.st_dev, md.st_ino)),
        nlink: md.st_nlink as u32,
        link: None,
        size: if kind == Kind::File {
            md.st_size as u64
        } else {
            0
        },
        target,
        rdev,
    }];
    if opaque {
        let mut m = marker(b"");
        m.path = join(&path, crate::layer::whiteout::WH_OPAQUE);
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::Entry;
    use std::os::unix::fs::PermissionsExt;

    /// A tree with nesting, hard links across directories, a symlink, an
    /// AUFS whiteout and an opaque marker.
    fn make_tree(root: &Path) {
        for d in ["a/b/c", "a/d", "e", "f/g/h/i"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (i, f) in [
            "a/x",
            "a/b/y",
            "a/b/c/z",
            "a/d/w",
            "e/v",
            "f/g/h/i/u",
            "top",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(root.join(f), vec![b'x'; i * 10]).unwrap();
        }
        std::fs::hard_link(root.join("a/b/c/z"), root.join("e/z2")).unwrap();
        std::fs::hard_link(root.join("a/b/c/z"), root.join("a/z3")).unwrap();
        std::os::unix::fs::symlink("a/x", root.join("sym")).unwrap();
        std::fs::write(root.join("a/d/.wh.gone"), b"").unwrap();
        std::fs::write(root.join("f/.wh..wh..opq"), b"").unwrap();
    }

    /// Every entry, by path: the index must not depend on how many
    /// walkers listed the tree, nor on which found what first.
    fn dump(ix: &Index) -> Vec<(Vec<u8>, Entry)> {
        (0..ix.len()).map(|i| (ix.path(i), ix.entry(i))).collect()
    }

    #[test]
    fn walkers_do_not_change_the_index() {
        let t = tempfile::tempdir().unwrap();
        make_tree(t.path());
        let one = index_directory_in(t.path(), true, 1).unwrap();
        let want = dump(&one);
        assert!(want.len() > 15, "{} entries", want.len());
        for walkers in [2, 8, 32] {
            for _ in 0..5 {
                let got = dump(&index_directory_in(t.path(), true, walkers).unwrap());
                assert_eq!(got, want, "{walkers} walkers");
            }
        }
        // The three names of one inode share its group, and count 3.
        let z = one.lookup_path(b"a/b/c/z").unwrap();
        for p in [&b"e/z2"[..], b"a/z3"] {
            let e = one.entry(one.lookup_path(p).unwrap());
            assert_eq!((e.group, e.nlink), (one.entry(z).group, 3));
        }
    }

    #[test]
    fn a_failing_walker_fails_the_walk() {
        let t = tempfile::tempdir().unwrap();
        let perm = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        perm(t.path(), 0o755).unwrap();
        make_tree(t.path());
        perm(&t.path().join("a/d"), 0).unwrap();
        // Root reads any directory: list as nobody. The fsuid is this
        // thread's own (the walkers inherit it), and changing it away from
        // 0 drops the capabilities that bypass permissions.
        let old = crate::sys::setfsuid(65534);
        let r = index_directory_in(t.path(), true, 4);
        crate::sys::setfsuid(old);
        perm(&t.path().join("a/d"), 0o755).unwrap();
        let Err(err) = r else {
            panic!("listing a/d must fail");
        };
        assert!(format!("{err:#}").contains("a/d"), "{err:#}");
    }

    /// Every entry reachable from `dir` (path `at`) by listing, with what
    /// an entry says apart from the numbers that place it in its index;
    /// the hard-link groups as the paths of each group's first name.
    fn tree(ix: &Index, dir: &Entry, at: &[u8], out: &mut Vec<(Vec<u8>, String)>) {
        let mut first: HashMap<u32, Vec<u8>> = HashMap::new();
        fn go(
            ix: &Index,
            dir: &Entry,
            at: &[u8],
            first: &mut HashMap<u32, Vec<u8>>,
            out: &mut Vec<(Vec<u8>, String)>,
        ) {
            for c in ix.children(dir) {
                // A lazy index knows an AUFS opaque marker once it listed
                // the directory.
                let e = ix.entry(c);
                ix.children(&e);
                let e = ix.entry(c);
                assert_eq!(e.parent, dir.id, "parent of {c}");
                let path = join(at, ix.name(&e));
                assert_eq!(ix.path(c), path);
                assert_eq!(ix.lookup(dir, ix.name(&e)), Some(c));
                // Groups are compared for hard links only: other entries'
                // group numbers mean nothing beyond being unique.
                let group = if e.nlink > 1 && !e.is_dir() {
                    first.entry(e.group).or_insert_with(|| path.clone()).clone()
                } else {
                    Vec::new()
                };
                let xattrs: Vec<_> = ix.xattrs(&e).collect();
                let what = format!(
                    "{:?} {:o} {}:{} n{} {} {} {:?} {:?} {:?} flags{} {}",
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.nlink,
                    e.size,
                    e.mtime,
                    ix.target(&e),
                    xattrs,
                    e.rdev(),
                    e.flags,
                    String::from_utf8_lossy(&group)
                );
                out.push((path.clone(), what));
                if e.is_dir() {
                    go(ix, &e, &path, first, out);
                }
            }
        }
        go(ix, dir, at, &mut first, out);
    }

    #[test]
    fn a_lazy_index_reads_as_the_walk_and_lists_late() {
        let t = tempfile::tempdir().unwrap();
        make_tree(t.path());
        std::fs::create_dir(t.path().join("o")).unwrap();
        crate::sys::lsetxattr(&t.path().join("o"), b"trusted.overlay.opaque", b"y", 0).unwrap();
        crate::sys::lsetxattr(&t.path().join("top"), b"user.k", b"v", 0).unwrap();
        crate::sys::mknod(&t.path().join("e/wh"), libc::S_IFCHR | 0o600, 0).unwrap();
        let eager = index_directory_in(t.path(), true, 2).unwrap();
        let lazy = index_directory_lazy(t.path(), true).unwrap();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        tree(&eager, &eager.entry(0), b"", &mut want);
        // Before the walk, only what was looked up is listed: a file made
        // now in a directory not read yet shows.
        let a = lazy.entry(lazy.lookup(&lazy.entry(0), b"a").unwrap());
        std::fs::write(t.path().join("a/b/late"), b"").unwrap();
        let b = lazy.entry(lazy.lookup(&a, b"b").unwrap());
        assert!(lazy.lookup(&b, b"late").is_some());
        std::fs::remove_file(t.path().join("a/b/late")).unwrap();
        let fresh = index_directory_lazy(t.path(), true).unwrap();
        tree(&fresh, &fresh.entry(0), b"", &mut got);
        assert_eq!(got, want);
        assert_eq!(fresh.entry(0).flags, eager.entry(0).flags);
        // Whole-layer questions walk it: the same number of entries.
        assert_eq!(fresh.len(), eager.len());
        for p in [&b"f"[..], b"o", b"e/wh", b"a/d/gone"] {
            let (l, e) = (fresh.lookup_path(p), eager.lookup_path(p));
            assert!(l.is_some() && e.is_some(), "{}", String::from_utf8_lossy(p));
            let (l, e) = (fresh.entry(l.unwrap()), eager.entry(e.unwrap()));
            assert_eq!((l.kind, l.flags), (e.kind, e.flags));
        }
    }

    #[test]
    fn a_lazy_directory_that_cannot_be_listed_shows_empty_and_says_why() {
        let t = tempfile::tempdir().unwrap();
        let perm = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        perm(t.path(), 0o755).unwrap();
        make_tree(t.path());
        perm(&t.path().join("a/d"), 0).unwrap();
        let lazy = index_directory_lazy(t.path(), true).unwrap();
        let d = lazy.lookup_path(b"a/d").map(|i| lazy.entry(i)).unwrap();
        let old = crate::sys::setfsuid(65534);
        let listed = lazy.children(&d);
        crate::sys::setfsuid(old);
        perm(&t.path().join("a/d"), 0o755).unwrap();
        assert!(listed.is_empty());
        let why = lazy.failed(&d).expect("a failed listing is kept");
        assert!(why.contains("a/d"), "{why}");
        assert!(lazy.failed(&lazy.entry(0)).is_none());
        assert!(lazy.lookup_path(b"a/b/c/z").is_some());
    }

    #[test]
    fn a_late_aufs_opaque_marker_still_hides_the_branches_below() {
        let (top, low) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [top.path(), low.path()] {
            std::fs::create_dir_all(d.join("f/sub")).unwrap();
        }
        std::fs::write(low.path().join("f/x"), b"").unwrap();
        std::fs::write(low.path().join("f/sub/deep"), b"").unwrap();
        std::fs::write(top.path().join("f/.wh..wh..opq"), b"").unwrap();
        std::fs::write(top.path().join("f/y"), b"").unwrap();
        let layers = [
            index_directory_lazy(top.path(), true).unwrap(),
            index_directory_lazy(low.path(), true).unwrap(),
        ];
        use crate::union::{list_dir, resolve_path, Resolved};
        // f's sources reach the lower branch (its marker is not read yet)...
        let Some(Resolved::Dir(srcs)) = resolve_path(&layers, b"f") else {
            panic!("f is a directory");
        };
        assert_eq!(srcs.len(), 2);
        // ...but lookups and listings stop at it.
        assert!(resolve_path(&layers, b"f/x").is_none());
        let names: Vec<_> = list_dir(&layers, &srcs)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, [b"sub".to_vec(), b"y".to_vec()]);
        assert!(resolve_path(&layers, b"f/sub/deep").is_none());
        let eager = [
            index_directory(top.path()).unwrap(),
            index_directory(low.path()).unwrap(),
        ];
        let Some(Resolved::Dir(esrcs)) = resolve_path(&eager, b"f") else {
            panic!("f is a directory");
        };
        assert_eq!(esrcs.len(), 1);
    }
}
