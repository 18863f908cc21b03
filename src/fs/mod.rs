//! The filesystem as FUSE-shaped operations, without FUSE: an inode table
//! over the merged view of the layers and, when mounted read-write, the
//! upper branch ([`Upper`]). Every operation returns a [`VResult`]: its
//! [`Error`] is the errno the kernel gets and, for the failures worth a
//! log line (a copy-up that failed, a marker that could not be written),
//! what was being done and the error underneath; the fuser adapter
//! (`fuse`) only decodes requests, sends these results, and logs each
//! error once.
//!
//! Inode numbers: the root is 1; every other number (FUSE node id and
//! `st_ino`, which fuser makes one) follows from what backs the node
//! (`inodes::ino_of`): a lower non-directory's (layer, inode group), so
//! hard links of one layer share it, a lower or merged directory's
//! top-most source, an object made in the branch its `st_ino` there with a
//! tag bit, and a copied-up object keeps the number it had. A node is made
//! the first time a name resolves to it and dropped once the kernel has
//! forgotten every entry it was given of it (`forget`); found again, it
//! gets the same number, so `st_ino` is stable for the life of the mount,
//! across copy-up and rename. Every change of the namespace goes through this module,
//! which keeps each node's state (upper or lower, which lower sources) in
//! step with the branch on disk; a name already resolved is never looked up
//! on disk again.
//!
//! Locking: `nodes` (a read-write lock, held only for table accesses, never
//! across I/O) and the branch's namespace lock `ns`, which the branch owns
//! (`upper::Changing`, `upper::Reading`): held for writing by every change
//! of the namespace and every copy-up, and for reading by lookups and
//! listings of a writable mount (public entry points take it through
//! `change` and `reading`; internal functions never do). Every function
//! that writes a name in the branch, ours or `Upper`'s, takes the write
//! token `&Changing`, so a change outside the lock does not compile. Lock
//! order: `ns` before `nodes`; `nlinks`, `link_groups`, `handles` and
//! `dir_files` are leaves (each written on its field of [`Vfs`]).
//!
//! This file holds the [`Vfs`] itself, the public types and the
//! constructors; `error` the error type; the operations live in one
//! `impl Vfs` per concern:
//! - `inodes`: the node table, inode numbers, name resolution (lookup, the
//!   branch's markers read on the way), hard-link groups and visible nlink;
//! - `forget`: lookup counts, FORGET, dropping nodes;
//! - `attr`: attributes (getattr, directory nlink, statfs);
//! - `readdir`: merged listings and open directories;
//! - `handles`: open files, read/write/fsync, readlink;
//! - `copyup`: copying lower objects into the rw branch;
//! - `namespace`: creating, removing, renaming and linking names;
//! - `setattr`: chmod/chown/truncate/utimens and the setuid/setgid kill;
//! - `xattr`: extended attributes and the provenance xattr.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use parking_lot::{Mutex, RwLock};

use crate::idmap::Owners;
use crate::layer::index::Kind;
use crate::layer::Layer;
use crate::sys::TimeSpec;
use crate::union::{root, Source};
use crate::upper::{Changing, Reading, Upper};

mod acl;
mod attr;
mod copyup;
mod error;
mod forget;
mod handles;
mod inodes;
mod namespace;
mod readdir;
mod setattr;
mod xattr;

pub use attr::to_system_time;
pub(crate) use error::err;
pub use error::{Error, ErrorContext, VResult};
pub use xattr::{missing_xattr, PROVENANCE_XATTR};

use handles::Handle;
use inodes::{LinkGroups, Node, Nodes};

/// Inode number of the mount's root directory (FUSE's root id).
pub const ROOT_INO: u64 = 1;

/// Attributes of a merged entry, in the terms of `stat(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number as the mount shows it: the node's number in the
    /// inode table, FUSE node id and `st_ino` alike.
    pub ino: u64,
    /// The entry's type.
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u16,
    /// Owner uid, as the mount shows it (owner mapping applied).
    pub uid: u32,
    /// Owner gid, as the mount shows it (owner mapping applied).
    pub gid: u32,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// Allocated 512-byte blocks (`st_blocks`).
    pub blocks: u64,
    /// Number of names of the inode (`st_nlink`).
    pub nlink: u32,
    /// Access time (a lower entry has none of its own: its mtime).
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Status change time (a lower entry's is its mtime).
    pub ctime: SystemTime,
    /// Device number of a character or block device (`st_rdev`, in the 32 bits FUSE carries).
    pub rdev: u32,
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// The entry's name (one component).
    pub name: Vec<u8>,
    /// Its inode number (the one a lookup gives; the entry may have no
    /// node yet).
    pub ino: u64,
    /// Its type.
    pub kind: Kind,
}

/// Who sent a request: the owner of a new object (before setgid
/// inheritance), and for the setuid/setgid rules also its process (whose
/// supplementary groups count).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The caller's (fs)uid, as the mount shows ids.
    pub uid: u32,
    /// The caller's (fs)gid.
    pub gid: u32,
    /// The caller's process (0 if unknown: then only `gid` counts).
    pub pid: u32,
    /// The caller's umask: applied to a new object's mode here only where
    /// the kernel leaves that to us ([`Vfs::set_kernel_acls`]).
    pub umask: u32,
}

/// Attribute changes of a `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// New permission bits (`chmod`).
    pub mode: Option<u32>,
    /// New owner uid, as the mount shows ids (`chown`).
    pub uid: Option<u32>,
    /// New owner gid, as the mount shows ids (`chown`).
    pub gid: Option<u32>,
    /// New size in bytes (`truncate`).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSpec>,
    /// New modification time.
    pub mtime: Option<TimeSpec>,
}

/// The merged view of a mount: layers, the optional rw branch, the inode
/// table and the open handles. Lock order: `ns` (the branch's namespace,
/// owned by `upper`, see `change`), then `nodes`, then any
/// one of the leaves (`nlinks`, `link_groups`, `handles`, `dir_files`,
/// `ino_files`, `nameless_files`).
pub struct Vfs {
    /// Top layer first.
    layers: Vec<Layer>,
    /// The read-write branch; `None` for a read-only mount (EROFS).
    upper: Option<Upper>,
    /// The inode table. Taken after `ns`, held only for table accesses,
    /// never across I/O.
    nodes: RwLock<Nodes>,
    /// nlink of hard-linked lower files, by (layer, inode group): how many
    /// of the group's names the merged view shows. Cleared by every change
    /// of the namespace. A leaf lock.
    nlinks: Mutex<HashMap<(u16, u32), u32>>,
    /// Per layer, the entries of each inode group with more than one name:
    /// built by one scan of the layer's index the first time it is needed.
    /// A leaf lock.
    link_groups: Mutex<HashMap<u16, Arc<LinkGroups>>>,
    /// Open files and directories by handle number. A leaf lock, but for
    /// each handle's own slot: a file's (taken under it by `open_file_of`,
    /// never across I/O but `switch_readers`' open) and a directory's
    /// listing (held across the listing, so before `ns`; no one holds `ns`
    /// while taking it).
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Recently read files of directory layers, by (layer, entry), for
    /// reads without a handle (a read-only mount where the kernel opens
    /// files itself): a read does not reopen its file by path. A leaf lock.
    dir_files: Mutex<lru::LruCache<(u16, u32), Arc<File>>>,
    /// The kernel opens files of this writable mount itself (zero-message
    /// opens, set at INIT): reads, writes, fsync and truncations of those
    /// come with handle 0 and go by inode (see `handles`, "Files the
    /// kernel opened").
    kernel_opens: AtomicBool,
    /// Recently used branch files of handle-0 I/O, by inode, with whether
    /// the descriptor may write: a WRITE does not reopen its file by path.
    /// A node's branch file is never replaced by another, and an entry
    /// goes with its node (dropped, or its number taken by a new object),
    /// so an entry stays right. A leaf lock.
    ino_files: Mutex<lru::LruCache<u64, (Arc<File>, bool)>>,
    /// The branch directory of each node that lost its last name (rmdir,
    /// rename over it), and with `kernel_opens` the branch file, opened
    /// just before (`open_before_unname`), or an unnamed copy-up of a
    /// lower file written after that: what `fstat`, xattrs and I/O of the
    /// still open object go through; dropped at FORGET. A leaf lock.
    nameless_files: Mutex<HashMap<u64, Arc<File>>>,
    /// Owner mapping between what is stored and what the mount shows.
    owners: Owners,
    /// `-o volatile` (overlayfs's option): no fsync of copied-up data
    /// before it is renamed into place, and fsync/fsyncdir requests answered
    /// without syncing. Off: after a crash a copied-up file shows either
    /// its lower content or its complete copy, never a torn one.
    volatile: bool,
    /// The kernel caches and enforces ACLs and sends create modes
    /// unmasked (FUSE_POSIX_ACL and FUSE_DONT_MASK negotiated): new
    /// objects get the umask or their parent's default ACL here.
    kernel_acls: AtomicBool,
    /// Some layer is a directory read lazily (`mount-branches`): merged
    /// directories have nlink 1 (see `dir_nlink`).
    lazy_layers: bool,
}

/// How many files of directory layers stay open for handle-less reads.
const DIR_FILES_CACHED: usize = 64;

/// How many branch files stay open for handle-less I/O (`ino_files`).
const INO_FILES_CACHED: usize = 256;

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
        let lazy_layers = layers.iter().any(|l| l.index.is_lazy());
        let vfs = Vfs {
            lazy_layers,
            nodes: RwLock::new(Nodes {
                table: HashMap::from([(
                    ROOT_INO,
                    Box::new(Node::new(
                        None,
                        Kind::Dir,
                        if upper.is_some() {
                            inodes::Place::Merged(lower_root.clone())
                        } else {
                            inodes::Place::Lower(lower_root.clone())
                        },
                    )),
                )]),
                ..Nodes::default()
            }),
            layers,
            upper,
            nlinks: Mutex::new(HashMap::new()),
            link_groups: Mutex::new(HashMap::new()),
            dir_files: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(DIR_FILES_CACHED).unwrap(),
            )),
            kernel_opens: AtomicBool::new(false),
            ino_files: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(INO_FILES_CACHED).unwrap(),
            )),
            nameless_files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owners: Owners::default(),
            volatile: false,
            kernel_acls: AtomicBool::new(false),
        };
        if let Some(up) = &vfs.upper {
            if up.is_fresh() {
                let src = lower_root.meta_source(&vfs.layers);
                vfs.copy_meta(up.root(), src)
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

    /// The layers of the view, top first (the stack order of [`crate::union::Source`]).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Has the mount a read-write branch?
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
        self.upper.as_ref().ok_or(Error::new(libc::EROFS))
    }

    /// The branch's namespace held for a change (EROFS without a branch):
    /// changes of the namespace and copy-ups hold it, and every function
    /// that writes a name in the branch takes it (`upper::Changing`).
    fn change(&self) -> VResult<Changing<'_>> {
        Ok(self.up()?.change())
    }

    /// The branch's namespace held for reading: lookups and listings that
    /// read the branch on disk hold it, so they never see (and cache) half
    /// of a change. `None` on a read-only mount, where nothing changes.
    fn reading(&self) -> Option<Reading<'_>> {
        self.upper.as_ref().map(Upper::read)
    }

    fn entry_of(&self, src: Source) -> crate::layer::index::Entry {
        self.layers[src.0 as usize].index.entry(src.1)
    }

    /// Is the owner mapping the identity (no `uidmapping` and the like)?
    pub fn owners_identity(&self) -> bool {
        self.owners.is_identity()
    }

    /// May the kernel cache and enforce ACLs on this read-write mount
    /// (FUSE_POSIX_ACL)? Only where the branch's own filesystem keeps
    /// mode and access ACL in step (chmod updates the ACL mask, setting an
    /// ACL the mode): a daemon that applies owners and modes itself (not
    /// rootless, whose modes live in an xattr) and stores ids as shown
    /// (no owner mapping: the ids inside an ACL are not mapped).
    pub fn may_share_acls(&self) -> bool {
        self.upper.as_ref().is_some_and(|u| !u.rootless()) && self.owners.is_identity()
    }

    /// The kernel now caches and enforces ACLs and leaves the umask to us
    /// (FUSE_POSIX_ACL and FUSE_DONT_MASK negotiated at INIT): new objects
    /// get their parent's default ACL or the creator's umask here.
    pub fn set_kernel_acls(&self) {
        self.kernel_acls.store(true, Ordering::Relaxed);
    }

    /// Does any layer read its files from a directory (`mount-branches`)?
    pub fn has_directory_layers(&self) -> bool {
        self.layers.iter().any(|l| l.dir.is_some())
    }
}
