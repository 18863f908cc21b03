//! The filesystem as FUSE-shaped operations, without FUSE: an inode table
//! over the merged view of the layers and, when mounted read-write, the
//! upper branch ([`Upper`]). Every operation returns a plain Rust result
//! (`Err(errno)`); the fuser adapter (`fuse`) only decodes requests and
//! sends these results.
//!
//! Inode numbers: the root is 1. A node is created the first time a name
//! resolves to it and is never dropped, so `st_ino` is stable for the life
//! of the mount, across copy-up and rename. A lower non-directory is keyed
//! by what backs it, (layer, inode group), so hard links of one layer share
//! an inode number. Every change of the namespace goes through this module,
//! which keeps each node's state (upper or lower, which lower sources) in
//! step with the branch on disk; a name already resolved is never looked up
//! on disk again.
//!
//! Locking: `nodes` (a read-write lock, held only for table accesses, never
//! across I/O) and `ns`, held for writing by every change of the namespace
//! and every copy-up and for reading by lookups and listings (public entry
//! points take it; internal functions never do). Lock order: `ns` before
//! `nodes`; `nlinks`,
//! `link_groups` and `handles` are leaves.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use parking_lot::{Mutex, RwLock};

use crate::idmap::{Owners, OVERFLOW_ID};
use crate::layer::index::Kind;
use crate::layer::whiteout::{classify_name, is_overlay_xattr, NameClass};
use crate::layer::Layer;
use crate::sys::{self, errno_of, Obj, TimeSpec};
use crate::union::{list_dir, resolve_child, root, Resolved, Source};
use crate::upper::{child, Meta, Upper};

pub const ROOT_INO: u64 = 1;

/// A read-only extended attribute on every entry of a mount, answered only
/// when asked for by name (never listed, never copied up): which layer the
/// entry comes from. See [`Vfs::provenance`].
pub const PROVENANCE_XATTR: &[u8] = b"user.layerfs.layer";

/// Attributes of a merged entry, in the terms of `stat(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub nlink: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub rdev: u32,
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: Kind,
}

/// Who asks for a new object: its owner, before setgid inheritance.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Attribute changes of a `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSpec>,
    pub mtime: Option<TimeSpec>,
}

struct Node {
    /// (parent, name) of each name of the node, the first used for its path
    /// in the upper branch. Empty for the root and once unlinked.
    names: Vec<(u64, Box<[u8]>)>,
    kind: Kind,
    /// The node exists in the upper branch (at every one of its names).
    upper: bool,
    /// What the lower layers give: for a directory, the sources still
    /// merged under it (`None` once opaque or if it exists only in the
    /// upper branch); for a non-directory, its entry (`None` once copied up).
    lower: Option<Resolved>,
    /// Merged listing, cached for directories that are not in the upper
    /// branch (their content cannot change without a copy-up first).
    listing: Option<Arc<Vec<DirEntry>>>,
    /// Number of subdirectories in the merged listing (for nlink), once
    /// counted; every change of the directory adjusts it.
    subdirs: Option<u32>,
}

/// What a name resolves to before it has a node.
struct Found {
    kind: Kind,
    upper: bool,
    lower: Option<Resolved>,
    /// `st_ino` of an upper non-directory: its hard links share a node.
    upper_ino: Option<u64>,
}

#[derive(Default)]
struct Nodes {
    /// Node of inode number `i + 1`.
    table: Vec<Node>,
    by_name: HashMap<(u64, Box<[u8]>), u64>,
    by_group: HashMap<(u16, u32), u64>,
    /// Upper non-directories by their `st_ino` in the branch.
    by_upper_ino: HashMap<u64, u64>,
}

/// Inode group -> entry numbers of its names, within one layer.
type LinkGroups = HashMap<u32, Vec<u32>>;

/// An open file or directory.
enum Handle {
    File {
        ino: u64,
        /// The upper file, once there is one (opened lazily for readers
        /// of a lower file that was copied up meanwhile).
        file: Mutex<Option<Arc<File>>>,
        /// The file of a directory layer's entry, opened once at open
        /// (reads of a handle do not reopen it by path).
        lower: Option<Arc<File>>,
    },
    /// A directory listing, taken when it is read from offset 0 (not at
    /// opendir: the kernel caches what the first readdir returns as the
    /// state at that call) and kept stable while it is read on.
    Dir(Mutex<Option<Arc<Vec<DirEntry>>>>),
}

/// Result type of VFS operations: an errno on failure.
pub type VResult<T> = std::result::Result<T, i32>;

pub struct Vfs {
    /// Top layer first.
    layers: Vec<Layer>,
    /// The read-write branch; `None` for a read-only mount (EROFS).
    upper: Option<Upper>,
    nodes: RwLock<Nodes>,
    /// Changes of the namespace and copy-ups hold it for writing; lookups
    /// and listings that read the branch on disk hold it for reading, so
    /// they never see (and cache) half of a change.
    ns: RwLock<()>,
    /// nlink of hard-linked lower files, by (layer, inode group): how many
    /// of the group's names the merged view shows. Cleared by every change
    /// of the namespace.
    nlinks: Mutex<HashMap<(u16, u32), u32>>,
    /// Per layer, the entries of each inode group with more than one name:
    /// built by one scan of the layer's index the first time it is needed.
    link_groups: Mutex<HashMap<u16, Arc<LinkGroups>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Recently read files of directory layers, by (layer, entry), for
    /// reads without a handle (a read-only mount where the kernel opens
    /// files itself): a read does not reopen its file by path.
    dir_files: Mutex<lru::LruCache<(u16, u32), Arc<File>>>,
    /// Owner mapping between what is stored and what the mount shows.
    owners: Owners,
    /// `-o volatile` (overlayfs's option): no fsync of copied-up data
    /// before it is renamed into place, and fsync/fsyncdir requests answered
    /// without syncing. Off: after a crash a copied-up file shows either
    /// its lower content or its complete copy, never a torn one.
    volatile: bool,
}

/// How many files of directory layers stay open for handle-less reads.
const DIR_FILES_CACHED: usize = 64;

pub fn to_system_time(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn is_dir(r: &Resolved) -> bool {
    r.is_dir()
}

impl Vfs {
    /// A read-only view over `layers`, top layer first.
    pub fn new(layers: Vec<Layer>) -> Vfs {
        Vfs::with_upper(layers, None).expect("a read-only view cannot fail")
    }

    /// A view over `layers` (top first) with `upper` as the read-write
    /// branch, if given. A branch mounted for the first time takes the
    /// image root's owner, mode and times.
    pub fn with_upper(layers: Vec<Layer>, upper: Option<Upper>) -> Result<Vfs> {
        let lower_root = root(&layers);
        let vfs = Vfs {
            nodes: RwLock::new(Nodes {
                table: vec![Node {
                    names: Vec::new(),
                    kind: Kind::Dir,
                    upper: upper.is_some(),
                    lower: Some(lower_root.clone()),
                    listing: None,
                    subdirs: None,
                }],
                ..Nodes::default()
            }),
            layers,
            upper,
            ns: RwLock::new(()),
            nlinks: Mutex::new(HashMap::new()),
            link_groups: Mutex::new(HashMap::new()),
            dir_files: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(DIR_FILES_CACHED).unwrap(),
            )),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owners: Owners::default(),
            volatile: false,
        };
        if let Some(up) = &vfs.upper {
            if up.is_fresh() {
                let src = lower_root.meta_source(&vfs.layers);
                vfs.copy_meta(up.root(), src)
                    .map_err(std::io::Error::from_raw_os_error)
                    .with_context(|| format!("preparing {}", up.root().display()))?;
            }
        }
        Ok(vfs)
    }

    /// Shows owners through `owners` (and maps owners given through the
    /// mount back).
    pub fn with_owners(mut self, owners: Owners) -> Vfs {
        self.owners = owners;
        self
    }

    /// `-o volatile`: see the field.
    pub fn with_volatile(mut self, volatile: bool) -> Vfs {
        self.volatile = volatile;
        self
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn is_rw(&self) -> bool {
        self.upper.is_some()
    }

    /// A read-only view in which no entry has an extended attribute: no
    /// layer index holds one (an O(1) check per layer) and there is no
    /// branch that could gain one.
    pub fn has_no_xattrs(&self) -> bool {
        self.upper.is_none() && self.layers.iter().all(|l| l.index.xattr_count() == 0)
    }

    fn up(&self) -> VResult<&Upper> {
        self.upper.as_ref().ok_or(libc::EROFS)
    }

    fn entry_of(&self, src: Source) -> crate::layer::index::Entry {
        self.layers[src.0 as usize].index.entry(src.1)
    }

    /// (kind, upper, lower) of node `ino`.
    fn state(&self, ino: u64) -> VResult<(Kind, bool, Option<Resolved>)> {
        let nodes = self.nodes.read();
        let n = nodes
            .table
            .get((ino as usize).wrapping_sub(1))
            .ok_or(libc::ESTALE)?;
        Ok((n.kind, n.upper, n.lower.clone()))
    }

    fn with_node<T>(&self, ino: u64, f: impl FnOnce(&mut Node) -> T) -> T {
        f(&mut self.nodes.write().table[ino as usize - 1])
    }

    /// The path of node `ino` in the upper branch (via its first name).
    fn upath(&self, ino: u64) -> VResult<PathBuf> {
        let up = self.up()?;
        let nodes = self.nodes.read();
        let mut comps: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        while cur != crate::fs::ROOT_INO {
            let n = nodes
                .table
                .get((cur as usize).wrapping_sub(1))
                .ok_or(libc::ESTALE)?;
            let (p, name) = n.names.first().ok_or(libc::ENOENT)?;
            comps.push(name);
            cur = *p;
        }
        let mut path = up.root().to_path_buf();
        for c in comps.iter().rev() {
            path.push(std::ffi::OsStr::from_bytes(c));
        }
        Ok(path)
    }

    /// What the lower layers hold for `name` under a directory whose lower
    /// part is `lower`.
    fn lower_child(&self, lower: &Option<Resolved>, name: &[u8]) -> Option<Resolved> {
        match lower {
            Some(Resolved::Dir(srcs)) => resolve_child(&self.layers, srcs, name),
            _ => None,
        }
    }

    /// Does a lower layer show something at `name` in directory `parent`
    /// (so that deleting it there needs a whiteout)?
    fn lower_has(&self, parent: u64, name: &[u8]) -> VResult<bool> {
        let (_, _, lower) = self.state(parent)?;
        Ok(self.lower_child(&lower, name).is_some())
    }

    /// Resolves `name` in directory `parent` to a node, creating it the
    /// first time.
    fn child_ino(&self, parent: u64, name: &[u8]) -> VResult<u64> {
        let key = (parent, Box::<[u8]>::from(name));
        if let Some(&ino) = self.nodes.read().by_name.get(&key) {
            return Ok(ino);
        }
        if classify_name(name) != NameClass::Plain {
            return Err(libc::ENOENT);
        }
        let (kind, upper, lower) = self.state(parent)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let found = if upper {
            self.find_upper(parent, &lower, name)?
        } else {
            self.found_lower(self.lower_child(&lower, name).ok_or(libc::ENOENT)?)
        };
        Ok(self.intern(parent, name, found))
    }

    /// Looks `name` up in directory `parent`, which is in the upper branch
    /// (`plower` its lower part): the branch's object if it has one, else
    /// the lower one unless a whiteout hides it (`Err(ENOENT)`).
    fn find_upper(&self, parent: u64, plower: &Option<Resolved>, name: &[u8]) -> VResult<Found> {
        let up = self.up()?;
        let pp = self.upath(parent)?;
        let p = child(&pp, name);
        // A whiteout or an opaque marker only matters where a lower layer
        // has the name: the markers are read only then.
        match sys::lstat(&p) {
            // An overlay-format whiteout is the hidden name itself.
            Ok(st) if up.is_whiteout_stat(&st) => Err(libc::ENOENT),
            Ok(st) => {
                let kind = up.meta_of(&p, &st).kind;
                let lower = if kind == Kind::Dir {
                    self.lower_child(plower, name)
                        .filter(is_dir)
                        .filter(|_| !up.is_opaque(&p) && !up.has_whiteout(&pp, name))
                } else {
                    None
                };
                Ok(Found {
                    kind,
                    upper: true,
                    lower,
                    upper_ino: (kind != Kind::Dir).then_some(st.st_ino),
                })
            }
            Err(libc::ENOENT) => match self.lower_child(plower, name) {
                None => Err(libc::ENOENT),
                Some(_) if up.has_whiteout(&pp, name) => Err(libc::ENOENT),
                Some(r) => Ok(self.found_lower(r)),
            },
            Err(e) => Err(e),
        }
    }

    /// A name only the lower layers have, resolved to `r`.
    fn found_lower(&self, r: Resolved) -> Found {
        Found {
            kind: self.entry_of(r.meta_source(&self.layers)).kind,
            upper: false,
            lower: Some(r),
            upper_ino: None,
        }
    }

    /// The inode number for `found` as `name` in `parent`, allocating one
    /// if this is the first time.
    fn intern(&self, parent: u64, name: &[u8], found: Found) -> u64 {
        let key = (parent, Box::<[u8]>::from(name));
        let mut nodes = self.nodes.write();
        if let Some(&ino) = nodes.by_name.get(&key) {
            return ino;
        }
        let group_key = match (&found.lower, found.upper) {
            (Some(Resolved::Leaf((l, e))), false) => {
                Some((*l, self.layers[*l as usize].index.entry(*e).group))
            }
            _ => None,
        };
        let shared = match (group_key, found.upper_ino) {
            (Some(gk), _) => nodes.by_group.get(&gk).copied(),
            // An upper st_ino may be reused by a new file once the old
            // one is gone: only a node that still has names shares it.
            (None, Some(ui)) => nodes.by_upper_ino.get(&ui).copied().filter(|&i| {
                let n = &nodes.table[i as usize - 1];
                n.upper && n.kind == found.kind && !n.names.is_empty()
            }),
            _ => None,
        };
        if let Some(ino) = shared {
            nodes.by_name.insert(key.clone(), ino);
            nodes.table[ino as usize - 1].names.push(key);
            return ino;
        }
        nodes.table.push(Node {
            names: vec![key.clone()],
            kind: found.kind,
            upper: found.upper,
            lower: found.lower,
            listing: None,
            subdirs: None,
        });
        let ino = nodes.table.len() as u64;
        nodes.by_name.insert(key, ino);
        if let Some(gk) = group_key {
            nodes.by_group.insert(gk, ino);
        }
        if let Some(ui) = found.upper_ino {
            nodes.by_upper_ino.insert(ui, ino);
        }
        ino
    }

    /// Gives the handles that opened `ino` while it was lower the copy now
    /// at `p`, so they keep reading it whatever later happens to its names.
    fn switch_readers(&self, ino: u64, p: &Path) {
        let handles: Vec<Arc<Handle>> = self.handles.lock().values().cloned().collect();
        for h in handles {
            if let Handle::File { ino: i, file, .. } = &*h {
                let mut f = file.lock();
                if *i == ino && f.is_none() {
                    *f = File::open(p).ok().map(Arc::new);
                }
            }
        }
    }

    /// Is the owner mapping the identity (no `uidmapping` and the like)?
    pub fn owners_identity(&self) -> bool {
        self.owners.is_identity()
    }

    /// The attributes of what `name` in directory `dir` is now, if it was
    /// resolved before (every entry of a listing was): for readdirplus,
    /// whose entries the kernel links to their names.
    pub fn current_entry(&self, dir: u64, name: &[u8]) -> Option<Attr> {
        let _r = self.ns.read();
        let ino = *self
            .nodes
            .read()
            .by_name
            .get(&(dir, Box::<[u8]>::from(name)))?;
        self.attr(ino).ok()
    }

    /// Records that node `ino` is now the upper file at `p` (after a
    /// copy-up or a new link), so other names of that file find it.
    fn note_upper_ino(&self, ino: u64, p: &Path) {
        if let Ok(st) = sys::lstat(p) {
            self.nodes.write().by_upper_ino.insert(st.st_ino, ino);
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> VResult<Attr> {
        let _r = self.ns.read();
        let ino = self.child_ino(parent, name)?;
        self.attr(ino)
    }

    /// Resolves a relative path from the root through the merged view.
    fn lookup_path(&self, path: &[u8]) -> VResult<u64> {
        let mut cur = ROOT_INO;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.child_ino(cur, c)?;
        }
        Ok(cur)
    }

    /// The permission bits of `ino` after Linux's rule for a write, a
    /// truncation or a chown by a caller without CAP_FSETID, if that clears
    /// any (`None`: nothing to clear, or not a regular file).
    /// `in_group(gid)`: is the caller in group `gid` (the file's, as
    /// shown)? With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves applying the
    /// rule to us.
    pub fn perm_after_kill_suid(
        &self,
        ino: u64,
        in_group: impl FnOnce(u32) -> bool,
    ) -> VResult<Option<u32>> {
        Ok(perm_after_kill(&self.getattr(ino)?, in_group))
    }

    pub fn getattr(&self, ino: u64) -> VResult<Attr> {
        let _r = self.ns.read();
        self.attr(ino)
    }

    /// Attributes as the mount shows them (owners mapped).
    fn attr(&self, ino: u64) -> VResult<Attr> {
        let mut a = self.stored_attr(ino)?;
        (a.uid, a.gid) = self.owners.shown(a.uid, a.gid);
        Ok(a)
    }

    /// Attributes with the owners as stored.
    fn stored_attr(&self, ino: u64) -> VResult<Attr> {
        let (kind, upper, lower) = self.state(ino)?;
        if upper {
            return self.upper_attr(ino, kind);
        }
        let r = lower.ok_or(libc::ESTALE)?;
        self.lower_attr(ino, &r)
    }

    /// 2 + the merged subdirectories, counted once per directory and then
    /// kept current by the changes (`adjust_subdirs`): a getattr of a busy
    /// directory must not list it.
    fn dir_nlink(&self, ino: u64) -> VResult<u32> {
        if let Some(n) = self.nodes.read().table[ino as usize - 1].subdirs {
            return Ok(2 + n);
        }
        let n = self
            .list(ino)?
            .iter()
            .filter(|d| d.kind == Kind::Dir)
            .count() as u32;
        self.with_node(ino, |node| node.subdirs = Some(n));
        Ok(2 + n)
    }

    /// A directory of `ino` appeared (`delta` 1) or went (-1).
    fn adjust_subdirs(&self, ino: u64, delta: i32) {
        self.with_node(ino, |n| {
            if let Some(k) = n.subdirs.as_mut() {
                *k = k.saturating_add_signed(delta);
            }
        });
    }

    fn upper_attr(&self, ino: u64, kind: Kind) -> VResult<Attr> {
        let up = self.up()?;
        let p = match self.upath(ino) {
            Ok(p) => p,
            // Unlinked but still open: fstat through a handle.
            Err(libc::ENOENT) => return self.open_file_attr(ino, kind),
            Err(e) => return Err(e),
        };
        let st = sys::lstat(&p)?;
        let meta = up.meta_of(&p, &st);
        let (size, nlink) = if kind == Kind::Dir {
            (4096, self.dir_nlink(ino)?)
        } else {
            (st.st_size as u64, st.st_nlink as u32)
        };
        let perm = if kind == Kind::Symlink {
            0o777
        } else {
            meta.perm
        };
        Ok(Attr {
            ino,
            kind,
            perm: perm as u16,
            uid: meta.uid,
            gid: meta.gid,
            size,
            blocks: st.st_blocks as u64,
            nlink,
            atime: to_system_time(st.st_atime, st.st_atime_nsec as u32),
            mtime: to_system_time(st.st_mtime, st.st_mtime_nsec as u32),
            ctime: to_system_time(st.st_ctime, st.st_ctime_nsec as u32),
            rdev: meta.rdev as u32,
        })
    }

    /// Attributes of a file that has no name left, from an open handle.
    /// An open handle's upper file of `ino` (ENOENT if none is open).
    fn open_file_of(&self, ino: u64) -> VResult<Arc<File>> {
        self.handles
            .lock()
            .values()
            .find_map(|h| match &**h {
                Handle::File { ino: i, file, .. } if *i == ino => file.lock().clone(),
                _ => None,
            })
            .ok_or(libc::ENOENT)
    }

    fn open_file_attr(&self, ino: u64, kind: Kind) -> VResult<Attr> {
        let (st, meta) = self.open_meta(&*self.open_file_of(ino)?)?;
        Ok(Attr {
            ino,
            kind,
            perm: meta.perm as u16,
            uid: meta.uid,
            gid: meta.gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            nlink: st.st_nlink as u32,
            atime: to_system_time(st.st_atime, st.st_atime_nsec as u32),
            mtime: to_system_time(st.st_mtime, st.st_mtime_nsec as u32),
            ctime: to_system_time(st.st_ctime, st.st_ctime_nsec as u32),
            rdev: st.st_rdev as u32,
        })
    }

    /// The `fstat` of open upper file `f` and the owner and mode the mount
    /// shows for it (rootless: what its override xattr records).
    fn open_meta(&self, f: &File) -> VResult<(libc::stat, Meta)> {
        let o = Obj::File(f);
        let st = sys::stat_obj(o)?;
        let meta = match &self.upper {
            Some(up) => up.meta_of_obj(o, &st),
            None => Meta::from_stat(&st),
        };
        Ok((st, meta))
    }

    /// Does open upper file `f` carry a setuid or setgid bit (as shown)?
    pub fn file_is_setid(&self, f: &File) -> bool {
        self.open_meta(f)
            .is_ok_and(|(_, m)| m.perm & (libc::S_ISUID | libc::S_ISGID) != 0)
    }

    fn lower_attr(&self, ino: u64, r: &Resolved) -> VResult<Attr> {
        let src = r.meta_source(&self.layers);
        let e = self.entry_of(src);
        let idx = &self.layers[src.0 as usize].index;
        let (size, nlink) = match e.kind {
            Kind::Dir => (4096, self.dir_nlink(ino)?),
            Kind::Symlink => (
                idx.target(&e).len() as u64,
                self.visible_nlink(ino, src, &e),
            ),
            _ => (e.size, self.visible_nlink(ino, src, &e)),
        };
        // Linux shows every symlink as 0777, whatever the tar header says.
        let mode = if e.kind == Kind::Symlink {
            0o777
        } else {
            e.mode & 0o7777
        };
        let t = to_system_time(e.mtime, e.mtime_nsec);
        Ok(Attr {
            ino,
            kind: e.kind,
            perm: mode as u16,
            uid: e.uid,
            gid: e.gid,
            size,
            blocks: if e.kind == Kind::File {
                e.size.div_ceil(512)
            } else {
                0
            },
            nlink,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: e.rdev() as u32,
        })
    }

    /// The names of lower file `ino` (entry `e` of `src`) that the merged
    /// view shows, resolved through the view. Only groups with more than
    /// one name in their layer need work.
    fn group_names(&self, ino: u64, src: Source, e: &crate::layer::index::Entry) -> Vec<Vec<u8>> {
        if e.nlink <= 1 {
            return Vec::new();
        }
        let idx = &self.layers[src.0 as usize].index;
        let groups = self.link_groups(src.0);
        let mut out = Vec::new();
        for &i in groups.get(&e.group).map(Vec::as_slice).unwrap_or(&[]) {
            let path = idx.path(i);
            if self.lookup_path(&path) == Ok(ino) {
                out.push(path);
            }
        }
        out
    }

    /// The number of names of a hard-linked lower inode that the merged
    /// view shows (an upper layer or the rw branch may hide or replace
    /// some), cached until the namespace changes.
    fn visible_nlink(&self, ino: u64, src: Source, e: &crate::layer::index::Entry) -> u32 {
        if e.nlink <= 1 {
            return e.nlink;
        }
        let key = (src.0, e.group);
        if let Some(&n) = self.nlinks.lock().get(&key) {
            return n;
        }
        let n = (self.group_names(ino, src, e).len() as u32).max(1);
        self.nlinks.lock().insert(key, n);
        n
    }

    fn link_groups(&self, layer: u16) -> Arc<LinkGroups> {
        if let Some(g) = self.link_groups.lock().get(&layer) {
            return g.clone();
        }
        let idx = &self.layers[layer as usize].index;
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..idx.len() {
            let c = idx.entry(i);
            if c.nlink > 1 && !matches!(c.kind, Kind::Dir | Kind::Whiteout) {
                groups.entry(c.group).or_default().push(i);
            }
        }
        let groups = Arc::new(groups);
        self.link_groups.lock().insert(layer, groups.clone());
        groups
    }

    /// The merged listing of directory `ino` (without `.` and `..`), sorted
    /// by name.
    pub fn readdir(&self, ino: u64) -> VResult<Arc<Vec<DirEntry>>> {
        let _r = self.ns.read();
        self.list(ino)
    }

    fn list(&self, ino: u64) -> VResult<Arc<Vec<DirEntry>>> {
        {
            let nodes = self.nodes.read();
            let node = nodes
                .table
                .get((ino as usize).wrapping_sub(1))
                .ok_or(libc::ESTALE)?;
            if let Some(l) = &node.listing {
                return Ok(l.clone());
            }
        }
        let (kind, upper, lower) = self.state(ino)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let mut out = Vec::new();
        let mut shadowed = BTreeSet::new();
        if upper {
            let up_ref = self.up()?;
            let dir = self.upath(ino)?;
            let rd = std::fs::read_dir(&dir).map_err(|e| errno_of(&e))?;
            for de in rd {
                let de = de.map_err(|e| errno_of(&e))?;
                let name = de.file_name().as_bytes().to_vec();
                let ft = de.file_type().map_err(|e| errno_of(&e))?;
                match up_ref.classify(&dir, &name, ft) {
                    NameClass::Plain => {}
                    NameClass::Whiteout(hidden) => {
                        shadowed.insert(hidden.to_vec());
                        continue;
                    }
                    NameClass::Opaque | NameClass::Meta => continue,
                }
                // An upper name hides the lower one even if it cannot be
                // resolved (a broken override xattr, say).
                shadowed.insert(name.clone());
                let Ok(c) = self.child_ino(ino, &name) else {
                    continue;
                };
                out.push(DirEntry {
                    kind: self.kind_of(c),
                    name,
                    ino: c,
                });
            }
        }
        if let Some(Resolved::Dir(srcs)) = &lower {
            for (name, r) in list_dir(&self.layers, srcs) {
                if shadowed.contains(&name) {
                    continue;
                }
                let kind = self.entry_of(r.meta_source(&self.layers)).kind;
                let c = self.intern(
                    ino,
                    &name,
                    Found {
                        kind,
                        upper: false,
                        lower: Some(r),
                        upper_ino: None,
                    },
                );
                out.push(DirEntry {
                    kind: self.kind_of(c),
                    name,
                    ino: c,
                });
            }
        }
        if upper {
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let out = Arc::new(out);
        if !upper {
            self.with_node(ino, |n| n.listing = Some(out.clone()));
        }
        Ok(out)
    }

    fn kind_of(&self, ino: u64) -> Kind {
        self.nodes.read().table[ino as usize - 1].kind
    }

    fn alloc_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned()
    }

    /// Opens directory `ino`.
    pub fn opendir(&self, ino: u64) -> VResult<u64> {
        if self.state(ino)?.0 != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(self.alloc_handle(Handle::Dir(Mutex::new(None))))
    }

    /// The listing of an open directory read from `offset`: taken anew at
    /// offset 0, else the one taken then.
    pub fn dir_listing(&self, ino: u64, fh: u64, offset: u64) -> VResult<Arc<Vec<DirEntry>>> {
        let h = self.handle(fh);
        let Some(Handle::Dir(slot)) = h.as_deref() else {
            return self.readdir(ino);
        };
        let mut slot = slot.lock();
        match &*slot {
            Some(l) if offset != 0 => Ok(l.clone()),
            _ => {
                let l = self.readdir(ino)?;
                *slot = Some(l.clone());
                Ok(l)
            }
        }
    }

    /// Closes a file or directory handle.
    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    fn leaf(&self, ino: u64) -> VResult<(Source, crate::layer::index::Entry)> {
        match self.state(ino)?.2 {
            Some(Resolved::Leaf(src)) => Ok((src, self.entry_of(src))),
            Some(Resolved::Dir(_)) => Err(libc::EISDIR),
            None => Err(libc::ESTALE),
        }
    }

    /// Opens file `ino` with open(2) `flags`. Opening for writing, or with
    /// O_TRUNC, copies the file up first (without its data for O_TRUNC).
    pub fn open(&self, ino: u64, flags: i32) -> VResult<u64> {
        let (kind, ..) = self.state(ino)?;
        if kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        let mut lower = None;
        let file = if acc != libc::O_RDONLY || trunc {
            self.up()?;
            let staged = self.stage_copy_up(ino, !trunc)?;
            let _w = self.ns.write();
            self.copy_up_with(ino, !trunc, staged)?;
            Some(Arc::new(self.open_upper(ino, flags)?))
        } else {
            let _r = self.ns.read();
            match self.state(ino)? {
                (_, true, _) => Some(Arc::new(self.open_upper(ino, flags)?)),
                (_, false, Some(Resolved::Leaf(src))) => {
                    let layer = &self.layers[src.0 as usize];
                    lower = layer.open_entry(src.1)?.map(Arc::new);
                    None
                }
                _ => None,
            }
        };
        Ok(self.alloc_handle(Handle::File {
            ino,
            file: Mutex::new(file),
            lower,
        }))
    }

    /// The whole real file behind open handle `fh`, for the kernel to read
    /// and write directly (FUSE passthrough): its upper file, or on a
    /// read-only mount the file of a directory layer. `None` for a file
    /// inside a layer tar, and for a lower file of a read-write mount (a
    /// copy-up while it is open would need a second backing file for the
    /// same inode, which the kernel refuses).
    pub fn backing_file(&self, fh: u64) -> Option<Arc<File>> {
        match self.handle(fh).as_deref() {
            Some(Handle::File { file, lower, .. }) => match file.lock().clone() {
                Some(f) => Some(f),
                None if self.upper.is_none() => lower.clone(),
                None => None,
            },
            _ => None,
        }
    }

    /// Does any layer read its files from a directory (`mount-branches`)?
    pub fn has_directory_layers(&self) -> bool {
        self.layers.iter().any(|l| l.dir.is_some())
    }

    fn open_upper(&self, ino: u64, flags: i32) -> VResult<File> {
        let p = self.upath(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let mut o = std::fs::OpenOptions::new();
        o.read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .custom_flags(
                flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME) | libc::O_NOFOLLOW,
            );
        let f = o.open(&p).map_err(|e| errno_of(&e))?;
        if flags & libc::O_TRUNC != 0 {
            let r = if acc == libc::O_RDONLY {
                // O_RDONLY|O_TRUNC truncates too (Linux does).
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)
                    .and_then(|w| w.set_len(0))
            } else {
                f.set_len(0)
            };
            r.map_err(|e| errno_of(&e))?;
        }
        Ok(f)
    }

    /// The upper file behind handle `fh` of node `ino`, if the node is in
    /// the upper branch (opened now for a reader that opened it lower).
    fn upper_file(&self, ino: u64, fh: u64) -> VResult<Option<Arc<File>>> {
        let h = self.handle(fh);
        if let Some(Handle::File { file, .. }) = h.as_deref() {
            if let Some(f) = file.lock().as_ref() {
                return Ok(Some(f.clone()));
            }
        }
        if !self.state(ino)?.1 {
            return Ok(None);
        }
        let f = {
            let _r = self.ns.read();
            Arc::new(self.open_upper(ino, libc::O_RDONLY)?)
        };
        if let Some(Handle::File { file, .. }) = h.as_deref() {
            *file.lock() = Some(f.clone());
        }
        Ok(Some(f))
    }

    /// Up to `size` bytes of file `ino` from `offset`: borrowed from the
    /// mapped layer blob, or read from the upper file.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> VResult<Cow<'_, [u8]>> {
        if let Some(f) = self.upper_file(ino, fh)? {
            return read_file_at(&f, offset, size as usize).map(Cow::Owned);
        }
        let (src, e) = match self.leaf(ino) {
            // Copied up since upper_file looked: read the copy.
            Err(libc::ESTALE) if self.state(ino)?.1 => {
                let f = self.upper_file(ino, fh)?.ok_or(libc::ESTALE)?;
                return read_file_at(&f, offset, size as usize).map(Cow::Owned);
            }
            r => r?,
        };
        if e.kind != Kind::File {
            return Err(libc::EINVAL);
        }
        let start = offset.min(e.size);
        let end = offset.saturating_add(size as u64).min(e.size);
        let layer = &self.layers[src.0 as usize];
        if layer.dir.is_some() {
            let f = match self.handle(fh).as_deref() {
                Some(Handle::File {
                    lower: Some(f),
                    ino: i,
                    ..
                }) if *i == ino => f.clone(),
                // No handle (the kernel opened the file itself): by path,
                // kept open for the next reads.
                _ => self.dir_file(layer, src)?,
            };
            return read_file_at(&f, start, (end - start) as usize).map(Cow::Owned);
        }
        let data = layer.data();
        Ok(Cow::Borrowed(
            &data[(e.data_off + start) as usize..(e.data_off + end) as usize],
        ))
    }

    /// The file of entry `src` of directory layer `layer`, from the cache
    /// of recently read ones or opened by path.
    fn dir_file(&self, layer: &Layer, src: (u16, u32)) -> VResult<Arc<File>> {
        if let Some(f) = self.dir_files.lock().get(&src) {
            return Ok(f.clone());
        }
        let f = Arc::new(layer.open_entry(src.1)?.ok_or(libc::EIO)?);
        self.dir_files.lock().put(src, f.clone());
        Ok(f)
    }

    fn writable_file(&self, fh: u64) -> VResult<Arc<File>> {
        match self.handle(fh).as_deref() {
            Some(Handle::File { file, .. }) => file.lock().clone().ok_or(libc::EBADF),
            _ => Err(libc::EBADF),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> VResult<u32> {
        let f = self.writable_file(fh)?;
        f.write_all_at(data, offset).map_err(|e| errno_of(&e))?;
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> VResult<()> {
        if self.volatile {
            return Ok(());
        }
        let Ok(f) = self.writable_file(fh) else {
            return Ok(()); // nothing of ours to flush for a lower file
        };
        let r = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        r.map_err(|e| errno_of(&e))
    }

    /// fsync of directory `ino`: its directory in the branch, if it has
    /// one (what a `rename` then `fsync(dirfd)` needs to be durable).
    /// Nothing of a lower directory can change.
    pub fn fsyncdir(&self, ino: u64) -> VResult<()> {
        if self.volatile || self.upper.is_none() || !self.state(ino)?.1 {
            return Ok(());
        }
        let p = {
            let _r = self.ns.read();
            self.upath(ino)?
        };
        let d = File::open(&p).map_err(|e| errno_of(&e))?;
        d.sync_all().map_err(|e| errno_of(&e))?;
        tracing::debug!(dir = %p.display(), "fsyncdir synced");
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> VResult<()> {
        let f = self.writable_file(fh)?;
        sys::fallocate(&f, mode, offset, len)
    }

    pub fn readlink(&self, ino: u64) -> VResult<Vec<u8>> {
        let _r = self.ns.read();
        let (kind, upper, _) = self.state(ino)?;
        if kind != Kind::Symlink {
            return Err(libc::EINVAL);
        }
        if upper {
            let p = self.upath(ino)?;
            return std::fs::read_link(p)
                .map(|t| t.into_os_string().into_vec())
                .map_err(|e| errno_of(&e));
        }
        let (src, e) = self.leaf(ino)?;
        Ok(self.layers[src.0 as usize].index.target(&e).to_vec())
    }

    fn meta_entry(&self, r: &Resolved) -> (Source, crate::layer::index::Entry) {
        let src = r.meta_source(&self.layers);
        (src, self.entry_of(src))
    }

    /// The value of [`PROVENANCE_XATTR`]: `rw` for an entry of the
    /// read-write branch, else `INDEX:SHORTID` of the layer whose entry
    /// the merged view shows (index 0 = bottom layer, as in `history`).
    pub fn provenance(&self, ino: u64) -> VResult<Vec<u8>> {
        let (_, upper, lower) = self.state(ino)?;
        if upper {
            return Ok(b"rw".to_vec());
        }
        let (src, _) = self.meta_entry(&lower.ok_or(libc::ESTALE)?);
        let layer = &self.layers[src.0 as usize];
        let index = self.layers.len() - 1 - src.0 as usize;
        let short = &layer.chain_id[..12.min(layer.chain_id.len())];
        Ok(format!("{index}:{short}").into_bytes())
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VResult<Vec<u8>> {
        let _r = self.ns.read();
        self.xattr(ino, name)
    }

    fn xattr(&self, ino: u64, name: &[u8]) -> VResult<Vec<u8>> {
        if name == PROVENANCE_XATTR {
            return self.provenance(ino);
        }
        let (_, upper, lower) = self.state(ino)?;
        if upper {
            let up = self.up()?;
            if up.is_private_xattr(name) {
                return Err(libc::ENODATA);
            }
            return sys::lgetxattr(&self.upath(ino)?, name);
        }
        let (src, e) = self.meta_entry(&lower.ok_or(libc::ESTALE)?);
        let idx = &self.layers[src.0 as usize].index;
        shown_xattrs(idx, &e)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_vec())
            .ok_or(libc::ENODATA)
    }

    /// Names of the extended attributes, each followed by a NUL.
    pub fn listxattr(&self, ino: u64) -> VResult<Vec<u8>> {
        let _r = self.ns.read();
        let (_, upper, lower) = self.state(ino)?;
        let mut out = Vec::new();
        if upper {
            let up = self.up()?;
            let all = sys::llistxattr(&self.upath(ino)?)?;
            for n in all.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                if !up.is_private_xattr(n) {
                    out.extend_from_slice(n);
                    out.push(0);
                }
            }
            return Ok(out);
        }
        let (src, e) = self.meta_entry(&lower.ok_or(libc::ESTALE)?);
        let idx = &self.layers[src.0 as usize].index;
        for (k, _) in shown_xattrs(idx, &e) {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// (blocks, bfree, bavail, files, ffree, bsize) for statfs: the upper
    /// branch's filesystem when there is one, else the layers' totals.
    pub fn statfs(&self) -> (u64, u64, u64, u64, u64, u32) {
        if let Some(st) = self
            .upper
            .as_ref()
            .and_then(|u| sys::statvfs(u.root()).ok())
        {
            return (
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_frsize as u32,
            );
        }
        let (bytes, files) = self.layers.iter().fold((0, 0), |(b, f), l| {
            (b + l.index.tar_size(), f + l.index.len() as u64)
        });
        (bytes.div_ceil(4096), 0, 0, files, 0, 4096)
    }

    // ---- The read-write branch ------------------------------------------

    /// Gives the new upper object at `p` the owner, mode, xattrs and times
    /// of lower entry `src`.
    fn copy_meta(&self, p: &Path, src: Source) -> VResult<()> {
        let up = self.up()?;
        let e = self.entry_of(src);
        let idx = &self.layers[src.0 as usize].index;
        up.apply_meta(
            p,
            &Meta {
                kind: e.kind,
                perm: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                rdev: e.rdev(),
            },
        )?;
        for (k, v) in shown_xattrs(idx, &e) {
            if up.is_private_xattr(k) {
                continue; // the override just written is the truth
            }
            if let Err(err) = sys::lsetxattr(p, k, v, 0) {
                // A rootless daemon may not set trusted.* or
                // security.capability: the copy keeps what it can.
                if !(up.rootless() && matches!(err, libc::EPERM | libc::EACCES | libc::ENOTSUP)) {
                    return Err(err);
                }
                tracing::warn!(
                    "copy-up of {}: xattr {} not kept: errno {err}",
                    p.display(),
                    String::from_utf8_lossy(k)
                );
            }
        }
        let t = TimeSpec::At(e.mtime, e.mtime_nsec);
        sys::utimens(p, t, t)
    }

    /// Copies directory `ino` (and its parents) up into the branch, with
    /// its own metadata; returns its upper path.
    fn copy_up_dir(&self, ino: u64) -> VResult<PathBuf> {
        let (kind, upper, lower) = self.state(ino)?;
        if upper {
            return self.upath(ino);
        }
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let (parent, name) = {
            let nodes = self.nodes.read();
            nodes.table[ino as usize - 1]
                .names
                .first()
                .cloned()
                .ok_or(libc::ENOENT)?
        };
        let pp = self.copy_up_dir(parent)?;
        let up = self.up()?;
        let t = up.temp();
        std::fs::create_dir(&t).map_err(|e| errno_of(&e))?;
        let src = lower.ok_or(libc::ESTALE)?.meta_source(&self.layers);
        let dst = child(&pp, &name);
        let r = self
            .copy_meta(&t, src)
            .and_then(|()| place_copy(&dst, |d| sys::rename2(&t, d, libc::RENAME_NOREPLACE)));
        if let Err(e) = r {
            let _ = std::fs::remove_dir(&t);
            return Err(e);
        }
        self.with_node(ino, |n| {
            n.upper = true;
            n.listing = None;
        });
        Ok(dst)
    }

    /// Copies non-directory `ino` up, with its data unless `with_data` is
    /// false (a truncation to zero follows). The copy is made in the work
    /// directory and renamed into place; every other visible name of a
    /// hard-linked file is then linked to it. Called with `ns` held for
    /// writing.
    fn copy_up(&self, ino: u64, with_data: bool) -> VResult<()> {
        self.copy_up_with(ino, with_data, None)
    }

    /// Copies the data and metadata of lower file `ino` into a new file of
    /// the work directory, holding `ns` only to find the source: a
    /// copy-up's data copy (seconds for a big file) then stalls no other
    /// operation of the mount. The caller hands the result to
    /// `copy_up_with` under the write lock, which renames it into place if
    /// `ino` is still that lower file (a concurrent copy-up may have won:
    /// the staged copy is then dropped, and its file removed). `None` when
    /// there is nothing to copy outside the lock.
    fn stage_copy_up(&self, ino: u64, with_data: bool) -> VResult<Option<StagedCopy>> {
        if !with_data || self.upper.is_none() {
            return Ok(None);
        }
        let (src, e) = {
            let _r = self.ns.read();
            let (kind, upper, _) = self.state(ino)?;
            if upper || kind != Kind::File {
                return Ok(None);
            }
            self.leaf(ino)?
        };
        if e.size == 0 {
            return Ok(None);
        }
        let staged = StagedCopy {
            src,
            path: self.up()?.temp(),
        };
        let made = self
            .make_copy(&staged.path, src, &e, true)
            .and_then(|()| self.copy_meta(&staged.path, src));
        match made {
            Ok(()) => Ok(Some(staged)),
            // A racing copy-up may have finished meanwhile; else the
            // copy under the lock meets the error again and reports it.
            Err(err) => {
                tracing::debug!(
                    ino,
                    "staging a copy-up failed (errno {err}); copying under the lock"
                );
                Ok(None)
            }
        }
    }

    /// `copy_up`, renaming `staged` into place if it is a copy of the
    /// node's current lower file.
    fn copy_up_with(&self, ino: u64, with_data: bool, staged: Option<StagedCopy>) -> VResult<()> {
        let (kind, upper, _) = self.state(ino)?;
        if upper {
            return Ok(());
        }
        if kind == Kind::Dir {
            self.copy_up_dir(ino)?;
            return Ok(());
        }
        let (src, e) = self.leaf(ino)?;
        // Make every visible name of a hard link known to the node.
        self.group_names(ino, src, &e);
        let names = self.nodes.read().table[ino as usize - 1].names.clone();
        let mut paths = Vec::with_capacity(names.len());
        for (p, n) in &names {
            paths.push(child(&self.copy_up_dir(*p)?, n));
        }
        let first = paths.first().ok_or(libc::ENOENT)?;
        let t = match staged {
            Some(s) if s.src == src && with_data => s,
            _ => {
                let s = StagedCopy {
                    src,
                    path: self.up()?.temp(),
                };
                self.make_copy(&s.path, src, &e, with_data)?;
                self.copy_meta(&s.path, src)?;
                s
            }
        };
        place_copy(first, |d| sys::rename2(&t.path, d, libc::RENAME_NOREPLACE))?;
        t.placed();
        // The first name is in place: the node lives in the branch now.
        self.with_node(ino, |n| {
            n.upper = true;
            n.lower = None;
        });
        self.note_upper_ino(ino, first);
        self.nlinks.lock().clear();
        self.switch_readers(ino, first);
        for p in &paths[1..] {
            place_copy(p, |d| {
                std::fs::hard_link(first, d).map_err(|e| errno_of(&e))
            })?;
        }
        Ok(())
    }

    /// Creates at `t` a copy of lower entry `e` (data only if `with_data`).
    fn make_copy(
        &self,
        t: &Path,
        src: Source,
        e: &crate::layer::index::Entry,
        with_data: bool,
    ) -> VResult<()> {
        let up = self.up()?;
        if e.kind != Kind::File {
            let target = self.layers[src.0 as usize].index.target(e);
            let meta = Meta {
                kind: e.kind,
                perm: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                rdev: e.rdev(),
            };
            return up.make_special(t, &meta, target);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(t)
            .map_err(|err| errno_of(&err))?;
        if with_data && e.size > 0 {
            let layer = &self.layers[src.0 as usize];
            // In the kernel where it can (no copy through userspace, a
            // reflink or server-side copy where the filesystem has one),
            // else from the mapped blob.
            if let Some(lf) = layer.open_entry(src.1)? {
                let done = sys::copy_range(&lf, 0, &f, e.size, !self.volatile);
                if done < e.size {
                    // copy_file_range refused (another filesystem, ...):
                    // copy the rest through a buffer.
                    let mut r = &lf;
                    let mut w = &f;
                    let from = std::io::SeekFrom::Start(done);
                    std::io::Seek::seek(&mut r, from).map_err(|err| errno_of(&err))?;
                    std::io::Seek::seek(&mut w, from).map_err(|err| errno_of(&err))?;
                    std::io::copy(&mut std::io::Read::take(r, e.size - done), &mut w)
                        .map_err(|err| errno_of(&err))?;
                }
                return self.sync_copy(&f, t);
            }
            let done = match &layer.file {
                Some(lf) => sys::copy_range(lf, e.data_off, &f, e.size, !self.volatile),
                None => 0,
            };
            if done < e.size {
                let data = layer.data();
                let (from, to) = (e.data_off + done, e.data_off + e.size);
                f.write_all_at(&data[from as usize..to as usize], done)
                    .map_err(|err| errno_of(&err))?;
            }
            return self.sync_copy(&f, t);
        }
        Ok(())
    }

    /// Makes a copy-up's data durable before the rename that shows it, as
    /// overlayfs does (unless `-o volatile`): the rename must not outlive
    /// the data after a crash, or the file would show torn or empty where
    /// its lower content was.
    fn sync_copy(&self, f: &File, t: &Path) -> VResult<()> {
        if self.volatile {
            return Ok(());
        }
        f.sync_data().map_err(|err| errno_of(&err))?;
        tracing::debug!(copy = %t.display(), "copy-up data synced");
        Ok(())
    }

    /// Makes `ino` and everything below it live in the upper branch alone:
    /// a directory with lower content is copied up entry by entry and made
    /// opaque (what a rename of a lower directory needs, since a layer
    /// diff has no redirects).
    fn copy_up_tree(&self, ino: u64) -> VResult<()> {
        let (kind, _, lower) = self.state(ino)?;
        if kind != Kind::Dir {
            return self.copy_up(ino, true);
        }
        let p = self.copy_up_dir(ino)?;
        if lower.is_none() {
            return Ok(());
        }
        for c in self.list(ino)?.iter() {
            self.copy_up_tree(c.ino)?;
        }
        self.up()?.make_opaque(&p)?;
        self.with_node(ino, |n| {
            n.lower = None;
            n.listing = None;
        });
        Ok(())
    }

    fn exists(&self, parent: u64, name: &[u8]) -> VResult<Option<u64>> {
        match self.child_ino(parent, name) {
            Ok(i) => Ok(Some(i)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new name must be one the branch can hold: `.wh.` names are the
    /// layer format's own.
    fn check_new_name(name: &[u8]) -> VResult<()> {
        if name.len() > 255 {
            return Err(libc::ENAMETOOLONG);
        }
        if classify_name(name) != NameClass::Plain {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    /// The owner and mode of a new object in `parent`: a setgid directory
    /// gives its group (and, to directories, its setgid bit).
    fn new_meta(
        &self,
        parent: u64,
        who: Caller,
        kind: Kind,
        perm: u32,
        rdev: u64,
    ) -> VResult<Meta> {
        let pa = self.stored_attr(parent)?;
        // A creator no mapping covers gets the overflow id, as the kernel
        // does for ids a user namespace does not map.
        let mut meta = Meta {
            kind,
            perm: perm & 0o7777,
            uid: self.owners.stored_uid(who.uid).unwrap_or(OVERFLOW_ID),
            gid: self.owners.stored_gid(who.gid).unwrap_or(OVERFLOW_ID),
            rdev,
        };
        if pa.perm as u32 & libc::S_ISGID != 0 {
            meta.gid = pa.gid;
            if kind == Kind::Dir {
                meta.perm |= libc::S_ISGID;
            }
        }
        Ok(meta)
    }

    /// Publishes the finished object `t` as `name` in `parent` (whose upper
    /// path is `pp`): one rename, then the whiteout it replaces goes. A
    /// directory over something lower is made opaque first.
    fn publish(&self, t: &Path, parent: u64, pp: &Path, name: &[u8], dir: bool) -> VResult<()> {
        let up = self.up()?;
        let (_, _, plower) = self.state(parent)?;
        let lower_has = self.lower_child(&plower, name).is_some();
        if dir && lower_has {
            up.make_opaque(t)?;
        }
        // The branch holds `.wh.NAME` only where a lower layer has NAME
        // (deletions write one only then, and the layers do not change),
        // or in a directory that stopped merging its lower one (an opaque
        // copy keeps the whiteouts it had).
        let maybe_whiteout = lower_has || !matches!(plower, Some(Resolved::Dir(_)));
        up.publish(t, pp, name, maybe_whiteout)
    }

    /// Creates a new object `name` in `parent`; `make` builds it at a
    /// temporary path. Returns its inode number.
    fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        meta: Meta,
        make: impl FnOnce(&Path) -> VResult<()>,
    ) -> VResult<u64> {
        Self::check_new_name(name)?;
        if self.exists(parent, name)?.is_some() {
            return Err(libc::EEXIST);
        }
        self.create_new_node(parent, name, meta, make)
    }

    /// `create_node` for a name known to be new (checked under the same
    /// hold of `ns`).
    fn create_new_node(
        &self,
        parent: u64,
        name: &[u8],
        meta: Meta,
        make: impl FnOnce(&Path) -> VResult<()>,
    ) -> VResult<u64> {
        let up = self.up()?;
        let pp = self.copy_up_dir(parent)?;
        let t = up.temp();
        let r = make(&t)
            .and_then(|()| up.apply_meta(&t, &meta))
            .and_then(|()| self.publish(&t, parent, &pp, name, meta.kind == Kind::Dir));
        if let Err(e) = r {
            let _ = up.discard(&t);
            return Err(e);
        }
        self.nlinks.lock().clear();
        Ok(self.intern(
            parent,
            name,
            Found {
                kind: meta.kind,
                upper: true,
                lower: None,
                upper_ino: None,
            },
        ))
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, who: Caller) -> VResult<Attr> {
        self.up()?;
        let _w = self.ns.write();
        let meta = self.new_meta(parent, who, Kind::Dir, mode, 0)?;
        let ino = self.create_node(parent, name, meta, |t| {
            std::fs::create_dir(t).map_err(|e| errno_of(&e))
        })?;
        self.adjust_subdirs(parent, 1);
        self.attr(ino)
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        who: Caller,
    ) -> VResult<Attr> {
        self.up()?;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFSOCK => Kind::Socket,
            _ => return Err(libc::EINVAL),
        };
        let _w = self.ns.write();
        let meta = self.new_meta(parent, who, kind, mode, rdev as u64)?;
        let up = self.up()?;
        let ino = self.create_node(parent, name, meta, |t| {
            if kind == Kind::File {
                sys::mknod(t, libc::S_IFREG | 0o600, 0)
            } else {
                up.make_special(t, &meta, b"")
            }
        })?;
        self.attr(ino)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], who: Caller) -> VResult<Attr> {
        self.up()?;
        let _w = self.ns.write();
        let meta = self.new_meta(parent, who, Kind::Symlink, 0o777, 0)?;
        let meta = Meta {
            perm: 0o777,
            ..meta
        };
        let up = self.up()?;
        let ino = self.create_node(parent, name, meta, |t| up.make_special(t, &meta, target))?;
        self.attr(ino)
    }

    /// Creates and opens a regular file; with O_EXCL an existing name is
    /// EEXIST, without it the existing file is opened.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        who: Caller,
    ) -> VResult<(Attr, u64)> {
        self.up()?;
        let guard = self.ns.write();
        if let Some(ino) = self.exists(parent, name)? {
            if flags & libc::O_EXCL != 0 {
                return Err(libc::EEXIST);
            }
            drop(guard);
            let fh = self.open(ino, flags & !libc::O_CREAT)?;
            return Ok((self.getattr(ino)?, fh));
        }
        Self::check_new_name(name)?;
        let meta = self.new_meta(parent, who, Kind::File, mode, 0)?;
        let mut file = None;
        let ino = self.create_new_node(parent, name, meta, |t| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(t)
                .map_err(|e| errno_of(&e))?;
            file = Some(Arc::new(f));
            Ok(())
        })?;
        let attr = self.attr(ino)?;
        drop(guard);
        let fh = self.alloc_handle(Handle::File {
            ino,
            file: Mutex::new(file),
            lower: None,
        });
        Ok((attr, fh))
    }

    /// Drops name (`parent`, `name`) of node `ino` from the table.
    fn drop_name(&self, ino: u64, parent: u64, name: &[u8]) {
        let key = (parent, Box::<[u8]>::from(name));
        let mut nodes = self.nodes.write();
        nodes.by_name.remove(&key);
        nodes.table[ino as usize - 1].names.retain(|k| *k != key);
        drop(nodes);
        self.nlinks.lock().clear();
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> VResult<()> {
        let up = self.up()?;
        let _w = self.ns.write();
        let ino = self.child_ino(parent, name)?;
        let (kind, upper, _) = self.state(ino)?;
        if kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        let pp = self.copy_up_dir(parent)?;
        up.delete(&pp, name, upper, false, self.lower_has(parent, name)?)?;
        self.drop_name(ino, parent, name);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> VResult<()> {
        let up = self.up()?;
        let _w = self.ns.write();
        let ino = self.child_ino(parent, name)?;
        let (kind, upper, _) = self.state(ino)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        if !self.list(ino)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let pp = self.copy_up_dir(parent)?;
        up.delete(&pp, name, upper, true, self.lower_has(parent, name)?)?;
        self.drop_name(ino, parent, name);
        self.adjust_subdirs(parent, -1);
        Ok(())
    }

    /// Renames, with `flags` RENAME_NOREPLACE or RENAME_EXCHANGE. A
    /// directory with lower content is copied up whole and made opaque
    /// first, so no rename is refused with EXDEV.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> VResult<()> {
        let up = self.up()?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
            || flags == libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE
        {
            return Err(libc::EINVAL);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let _w = self.ns.write();
        let src = self.child_ino(parent, name)?;
        let dst = self.exists(newparent, newname)?;
        if exchange && dst.is_none() {
            return Err(libc::ENOENT);
        }
        if !exchange {
            Self::check_new_name(newname)?;
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(libc::EEXIST);
        }
        if dst == Some(src) {
            return Ok(()); // the same file: POSIX says do nothing
        }
        let (skind, ..) = self.state(src)?;
        let sdir = skind == Kind::Dir;
        if let (Some(d), false) = (dst, exchange) {
            let ddir = self.state(d)?.0 == Kind::Dir;
            if sdir && !ddir {
                return Err(libc::ENOTDIR);
            }
            if !sdir && ddir {
                return Err(libc::EISDIR);
            }
            if ddir && !self.list(d)?.is_empty() {
                return Err(libc::ENOTEMPTY);
            }
        }
        self.copy_up_tree(src)?;
        let sp = self.copy_up_dir(parent)?;
        let dp = self.copy_up_dir(newparent)?;
        let from = child(&sp, name);
        let to = child(&dp, newname);
        if exchange {
            let d = dst.expect("checked above");
            self.copy_up_tree(d)?;
            let ddir = self.state(d)?.0 == Kind::Dir;
            if sdir && self.lower_has(newparent, newname)? {
                up.make_opaque(&from)?;
            }
            if ddir && self.lower_has(parent, name)? {
                up.make_opaque(&to)?;
            }
            sys::rename2(&from, &to, libc::RENAME_EXCHANGE)?;
            let delta = i32::from(sdir) - i32::from(ddir);
            self.adjust_subdirs(newparent, delta);
            self.adjust_subdirs(parent, -delta);
            self.move_name(src, (parent, name), (newparent, newname));
            self.move_name(d, (newparent, newname), (parent, name));
            self.set_parent_key(src, d, (parent, name), (newparent, newname));
        } else {
            if sdir && self.lower_has(newparent, newname)? {
                up.make_opaque(&from)?;
            }
            let whiteout_old = self.lower_has(parent, name)?;
            let discard_to = match dst {
                Some(d) => {
                    let (dkind, dupper, _) = self.state(d)?;
                    dkind == Kind::Dir && dupper
                }
                None => false,
            };
            up.rename((&sp, name), (&dp, newname), whiteout_old, discard_to)?;
            // Done on disk: from here on the table follows.
            if let Some(d) = dst {
                self.drop_name(d, newparent, newname);
            }
            if sdir {
                self.adjust_subdirs(parent, -1);
                if dst.is_none() {
                    self.adjust_subdirs(newparent, 1);
                }
            }
            self.move_name(src, (parent, name), (newparent, newname));
            let key = (newparent, Box::<[u8]>::from(newname));
            self.nodes.write().by_name.insert(key, src);
            self.nodes
                .write()
                .by_name
                .remove(&(parent, Box::<[u8]>::from(name)));
        }
        self.nlinks.lock().clear();
        Ok(())
    }

    /// Renames one name of node `ino` in its names list.
    fn move_name(&self, ino: u64, from: (u64, &[u8]), to: (u64, &[u8])) {
        self.with_node(ino, |n| {
            for k in n.names.iter_mut() {
                if k.0 == from.0 && *k.1 == *from.1 {
                    *k = (to.0, Box::from(to.1));
                    break;
                }
            }
        });
    }

    /// After an exchange: the two names swap nodes in the name table.
    fn set_parent_key(&self, a: u64, b: u64, ka: (u64, &[u8]), kb: (u64, &[u8])) {
        let mut nodes = self.nodes.write();
        nodes.by_name.insert((kb.0, Box::from(kb.1)), a);
        nodes.by_name.insert((ka.0, Box::from(ka.1)), b);
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> VResult<Attr> {
        self.up()?;
        Self::check_new_name(newname)?;
        {
            // The refusals first, before a copy-up's data copy.
            let _r = self.ns.read();
            if self.state(ino)?.0 == Kind::Dir {
                return Err(libc::EPERM);
            }
            if self.exists(newparent, newname)?.is_some() {
                return Err(libc::EEXIST);
            }
        }
        let staged = self.stage_copy_up(ino, true)?;
        let _w = self.ns.write();
        let (kind, ..) = self.state(ino)?;
        if kind == Kind::Dir {
            return Err(libc::EPERM);
        }
        if self.exists(newparent, newname)?.is_some() {
            return Err(libc::EEXIST);
        }
        self.copy_up_with(ino, true, staged)?;
        let from = self.upath(ino)?;
        let dp = self.copy_up_dir(newparent)?;
        self.up()?.link(&from, &dp, newname)?;
        self.note_upper_ino(ino, &from);
        let key = (newparent, Box::<[u8]>::from(newname));
        {
            let mut nodes = self.nodes.write();
            nodes.by_name.insert(key.clone(), ino);
            nodes.table[ino as usize - 1].names.push(key);
        }
        self.nlinks.lock().clear();
        self.attr(ino)
    }

    /// chmod, chown, truncate and utimens. Any of them copies the node up
    /// first (a truncation to zero without its data).
    pub fn setattr(&self, ino: u64, fh: Option<u64>, s: SetAttr) -> VResult<Attr> {
        self.up()?;
        let mut s = s;
        if let Some(u) = s.uid {
            s.uid = Some(self.owners.stored_uid(u).ok_or(libc::EINVAL)?);
        }
        if let Some(g) = s.gid {
            s.gid = Some(self.owners.stored_gid(g).ok_or(libc::EINVAL)?);
        }
        let meta_change = s.mode.is_some() || s.uid.is_some() || s.gid.is_some();
        let copies = s.size.is_some() || meta_change || s.atime.is_some() || s.mtime.is_some();
        let with_data = s.size.is_none_or(|n| n > 0);
        let staged = match copies {
            true => self.stage_copy_up(ino, with_data)?,
            false => None,
        };
        let _w = self.ns.write();
        self.setattr_locked(ino, fh, s, staged)
    }

    /// Clears the setuid/setgid bits of `ino` as a write or truncation by a
    /// caller without CAP_FSETID does (`perm_after_kill_suid`), reading and
    /// changing the mode under one hold of `ns`, so a chmod in between is
    /// not undone.
    pub fn kill_suid(
        &self,
        ino: u64,
        fh: Option<u64>,
        in_group: impl FnOnce(u32) -> bool,
    ) -> VResult<()> {
        self.up()?;
        // Most writes meet no such bit: tell that from the handle, without
        // taking `ns`.
        if let Some(f) = fh.and_then(|fh| self.writable_file(fh).ok()) {
            if !self.file_is_setid(&f) {
                return Ok(());
            }
        }
        let _w = self.ns.write();
        if let Some(p) = perm_after_kill(&self.attr(ino)?, in_group) {
            let s = SetAttr {
                mode: Some(p),
                ..SetAttr::default()
            };
            self.setattr_locked(ino, fh, s, None)?;
        }
        Ok(())
    }

    /// `setattr` with `ns` held for writing and owners already stored ids.
    fn setattr_locked(
        &self,
        ino: u64,
        fh: Option<u64>,
        s: SetAttr,
        mut staged: Option<StagedCopy>,
    ) -> VResult<Attr> {
        let up = self.up()?;
        let meta_change = s.mode.is_some() || s.uid.is_some() || s.gid.is_some();
        let (kind, ..) = self.state(ino)?;
        if let Some(size) = s.size {
            if kind == Kind::Dir {
                return Err(libc::EISDIR);
            }
            self.copy_up_with(ino, size > 0, staged.take())?;
            // Through the caller's handle if it can write (the name may be
            // gone), else through a new one.
            let done = fh
                .and_then(|fh| self.writable_file(fh).ok())
                .is_some_and(|f| f.set_len(size).is_ok());
            if !done {
                let f = self.open_upper(ino, libc::O_WRONLY)?;
                f.set_len(size).map_err(|e| errno_of(&e))?;
            }
        }
        if meta_change || s.atime.is_some() || s.mtime.is_some() {
            self.copy_up_with(ino, true, staged)?;
        }
        let p = self.upath(ino);
        if p == Err(libc::ENOENT) {
            // Unlinked but still open (fchmod, fchown, futimens): through
            // the descriptor of a handle (rootless: the override xattr too).
            let f = self.open_file_of(ino)?;
            if up.rootless() && meta_change {
                let o = Obj::File(&f);
                let mut want = up.meta_of_obj(o, &sys::stat_obj(o)?);
                want.uid = s.uid.unwrap_or(want.uid);
                want.gid = s.gid.unwrap_or(want.gid);
                want.perm = s.mode.map_or(want.perm, |m| m & 0o7777);
                up.apply_meta_to(o, &want)?;
            } else {
                if s.uid.is_some() || s.gid.is_some() {
                    sys::fchown(&f, s.uid.unwrap_or(u32::MAX), s.gid.unwrap_or(u32::MAX))?;
                }
                if let Some(m) = s.mode {
                    sys::fchmod(&f, m & 0o7777)?;
                }
            }
            if s.atime.is_some() || s.mtime.is_some() {
                sys::futimens(
                    &f,
                    s.atime.unwrap_or(TimeSpec::Omit),
                    s.mtime.unwrap_or(TimeSpec::Omit),
                )?;
            }
            return self.attr(ino);
        }
        if meta_change {
            let p = p.clone()?;
            if up.rootless() {
                let st = sys::lstat(&p)?;
                let mut want = up.meta_of(&p, &st);
                if let Some(u) = s.uid {
                    want.uid = u;
                }
                if let Some(g) = s.gid {
                    want.gid = g;
                }
                if let Some(m) = s.mode {
                    want.perm = m & 0o7777;
                }
                up.apply_meta(&p, &want)?;
            } else {
                if s.uid.is_some() || s.gid.is_some() {
                    sys::lchown(&p, s.uid.unwrap_or(u32::MAX), s.gid.unwrap_or(u32::MAX))?;
                }
                if let (Some(m), false) = (s.mode, kind == Kind::Symlink) {
                    sys::chmod(&p, m & 0o7777)?;
                }
            }
        }
        if s.atime.is_some() || s.mtime.is_some() {
            sys::utimens(
                &p?,
                s.atime.unwrap_or(TimeSpec::Omit),
                s.mtime.unwrap_or(TimeSpec::Omit),
            )?;
        }
        self.attr(ino)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> VResult<()> {
        let up = self.up()?;
        if up.is_private_xattr(name) || name == PROVENANCE_XATTR {
            return Err(libc::EPERM);
        }
        let staged = self.stage_copy_up(ino, true)?;
        let _w = self.ns.write();
        self.copy_up_with(ino, true, staged)?;
        sys::lsetxattr(&self.upath(ino)?, name, value, flags)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> VResult<()> {
        let up = self.up()?;
        if name == PROVENANCE_XATTR {
            return Err(libc::EPERM);
        }
        if up.is_private_xattr(name) {
            return Err(libc::ENODATA);
        }
        {
            // Removing what is not there copies nothing up.
            let _r = self.ns.read();
            self.xattr(ino, name)?;
        }
        let staged = self.stage_copy_up(ino, true)?;
        let _w = self.ns.write();
        self.xattr(ino, name)?;
        self.copy_up_with(ino, true, staged)?;
        sys::lremovexattr(&self.upath(ino)?, name)
    }

    /// The handle's inode (for diagnostics and tests).
    pub fn handle_ino(&self, fh: u64) -> Option<u64> {
        match self.handle(fh).as_deref() {
            Some(Handle::File { ino, .. }) => Some(*ino),
            _ => None,
        }
    }
}

/// The xattrs of a layer entry that the merged view shows: all but
/// overlayfs' own (`trusted.overlay.*`, `user.overlay.*`), which an image
/// may carry but which would turn into redirects or opaque markers where a
/// mount is a lower of kernel overlayfs.
fn shown_xattrs<'a>(
    idx: &'a crate::layer::index::Index,
    e: &crate::layer::index::Entry,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    idx.xattrs(e).filter(|(k, _)| !is_overlay_xattr(k))
}

/// Up to `len` bytes of `f` from `offset` (fewer only at end of file).
fn read_file_at(f: &File, offset: u64, len: usize) -> VResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(errno_of(&e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Puts a copied-up object at `dst` with `put`, keeping the times of the
/// directory it lands in: a copy-up changes nothing the merged view shows
/// (as overlayfs, which restores the parent's timestamps too).
fn place_copy(dst: &Path, put: impl FnOnce(&Path) -> VResult<()>) -> VResult<()> {
    let dir = dst.parent().ok_or(libc::EINVAL)?;
    let st = sys::lstat(dir)?;
    put(dst)?;
    // The object is in place: that is the change. Restoring the times is
    // best effort and must not make a done copy-up look failed.
    if let Err(e) = sys::utimens(
        dir,
        TimeSpec::At(st.st_atime, st.st_atime_nsec as u32),
        TimeSpec::At(st.st_mtime, st.st_mtime_nsec as u32),
    ) {
        tracing::warn!("keeping the times of {}: errno {e}", dir.display());
    }
    Ok(())
}

/// What `kill_suid` leaves of the permission bits of a node with
/// attributes `a`, if it changes them (regular files only).
fn perm_after_kill(a: &Attr, in_group: impl FnOnce(u32) -> bool) -> Option<u32> {
    let perm = u32::from(a.perm);
    if a.kind != Kind::File || perm & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return None;
    }
    kill_suid(perm, perm & libc::S_IXGRP == 0 && in_group(a.gid))
}

/// Permission bits `perm` without setuid, and without setgid unless
/// `keeps_sgid`: what a write, truncation or chown by a caller without
/// CAP_FSETID leaves (Linux 6.x, `setattr_should_drop_sgid`: setgid goes
/// if group-execute is set or the caller is not in the file's group).
/// `None` if nothing changes.
fn kill_suid(perm: u32, keeps_sgid: bool) -> Option<u32> {
    let mut p = perm & !libc::S_ISUID;
    if !keeps_sgid {
        p &= !libc::S_ISGID;
    }
    (p != perm).then_some(p)
}

/// A lower file copied into the work directory by `stage_copy_up`, not yet
/// renamed into place; its file is removed when it is dropped unplaced
/// (an error, or a concurrent copy-up that won).
struct StagedCopy {
    src: Source,
    path: PathBuf,
}

impl StagedCopy {
    /// The copy was renamed into the branch: nothing left to remove.
    fn placed(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for StagedCopy {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            tracing::debug!(path = %self.path.display(), "staged copy-up dropped");
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kill_suid;

    #[test]
    fn kill_suid_clears_what_it_is_told() {
        assert_eq!(kill_suid(0o4755, false), Some(0o755));
        assert_eq!(kill_suid(0o6755, false), Some(0o755));
        assert_eq!(kill_suid(0o2745, true), None, "setgid kept");
        assert_eq!(kill_suid(0o6745, true), Some(0o2745));
        assert_eq!(kill_suid(0o1777, false), None, "sticky stays");
        assert_eq!(kill_suid(0o644, false), None);
    }
}
