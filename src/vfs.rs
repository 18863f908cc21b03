//! The read side of a mounted image as FUSE-shaped operations, without
//! FUSE: an inode table over the merged view of the layers, answering
//! lookup, getattr, readdir, read, readlink and xattr requests with plain
//! Rust results (`Err(errno)`). The fuser adapter (`fuse`) only decodes
//! requests and sends these results.
//!
//! Inode numbers: the root is 1. A non-directory is keyed by what backs it,
//! (layer, inode group), so hard links of one layer share an inode number; a
//! directory is keyed by (parent inode, name). Both keys map to the same
//! number for the whole life of the mount (nodes are never dropped on
//! `forget`), so `st_ino` is stable for a path while mounted.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use memmap2::Mmap;
use parking_lot::RwLock;

use crate::index::{Index, Kind};
use crate::union::{list_dir, resolve_child, root, Resolved, Source};

pub const ROOT_INO: u64 = 1;

/// One layer as the mount sees it: its index and its tar blob, both mapped.
pub struct Layer {
    pub chain_id: String,
    pub index: Index,
    blob: Option<Mmap>,
}

impl AsRef<Index> for Layer {
    fn as_ref(&self) -> &Index {
        &self.index
    }
}

impl Layer {
    /// Opens a stored layer directory (`index` + `layer.tar`).
    pub fn open(dir: &Path, chain_id: &str) -> Result<Layer> {
        let index = Index::open(&dir.join("index"))?;
        let tar = dir.join("layer.tar");
        let f = File::open(&tar).with_context(|| format!("opening {}", tar.display()))?;
        let len = f.metadata()?.len();
        if len != index.tar_size() {
            anyhow::bail!(
                "{}: is {len} bytes but its index was built for {} bytes (corrupt store)",
                tar.display(),
                index.tar_size()
            );
        }
        // SAFETY: layer blobs are immutable once published (see `store`);
        // the map is read-only.
        let blob = if len == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&f) }?)
        };
        Ok(Layer {
            chain_id: chain_id.to_string(),
            index,
            blob,
        })
    }

    fn data(&self) -> &[u8] {
        self.blob.as_deref().unwrap_or(&[])
    }
}

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
    pub mtime: SystemTime,
    pub rdev: u32,
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: Kind,
}

struct Node {
    resolved: Resolved,
    /// Merged listing (directories), computed on first use.
    listing: Option<Arc<Vec<DirEntry>>>,
}

#[derive(Default)]
struct Nodes {
    /// Node of inode number `i + 1`.
    table: Vec<Node>,
    by_name: HashMap<(u64, Box<[u8]>), u64>,
    by_group: HashMap<(u16, u32), u64>,
}

/// Inode group -> entry numbers of its names, within one layer.
type LinkGroups = HashMap<u32, Vec<u32>>;

/// Result type of VFS operations: an errno on failure.
pub type VResult<T> = std::result::Result<T, i32>;

pub struct Vfs {
    /// Top layer first.
    layers: Vec<Layer>,
    nodes: RwLock<Nodes>,
    /// nlink of hard-linked files, by (layer, inode group): how many of the
    /// group's names are visible in the merged view (an upper layer may hide
    /// or replace some). Computed on first use.
    nlinks: parking_lot::Mutex<HashMap<(u16, u32), u32>>,
    /// Per layer, the entries of each inode group with more than one name:
    /// built by one scan of the layer's index the first time it is needed.
    link_groups: parking_lot::Mutex<HashMap<u16, Arc<LinkGroups>>>,
}

pub fn to_system_time(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

impl Vfs {
    /// A view over `layers`, top layer first.
    pub fn new(layers: Vec<Layer>) -> Vfs {
        let root = root(&layers);
        let nodes = Nodes {
            table: vec![Node {
                resolved: root,
                listing: None,
            }],
            ..Nodes::default()
        };
        Vfs {
            layers,
            nodes: RwLock::new(nodes),
            nlinks: parking_lot::Mutex::new(HashMap::new()),
            link_groups: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    fn resolved(&self, ino: u64) -> VResult<Resolved> {
        let nodes = self.nodes.read();
        nodes
            .table
            .get((ino as usize).wrapping_sub(1))
            .map(|n| n.resolved.clone())
            .ok_or(libc::ESTALE)
    }

    /// The inode number for `resolved`, found as `name` in `parent`,
    /// allocating one if this is the first time.
    fn intern(&self, parent: u64, name: &[u8], resolved: Resolved) -> u64 {
        let key = (parent, name.to_vec().into_boxed_slice());
        if let Some(&ino) = self.nodes.read().by_name.get(&key) {
            return ino;
        }
        let mut nodes = self.nodes.write();
        if let Some(&ino) = nodes.by_name.get(&key) {
            return ino;
        }
        let group_key = match &resolved {
            Resolved::Leaf((l, e)) => Some((*l, self.layers[*l as usize].index.entry(*e).group)),
            Resolved::Dir(_) => None,
        };
        if let Some(gk) = group_key {
            if let Some(&ino) = nodes.by_group.get(&gk) {
                nodes.by_name.insert(key, ino);
                return ino;
            }
        }
        nodes.table.push(Node {
            resolved,
            listing: None,
        });
        let ino = nodes.table.len() as u64;
        nodes.by_name.insert(key, ino);
        if let Some(gk) = group_key {
            nodes.by_group.insert(gk, ino);
        }
        ino
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> VResult<Attr> {
        let Resolved::Dir(srcs) = self.resolved(parent)? else {
            return Err(libc::ENOTDIR);
        };
        let r = resolve_child(&self.layers, &srcs, name).ok_or(libc::ENOENT)?;
        let ino = self.intern(parent, name, r.clone());
        self.attr_of(ino, &r)
    }

    pub fn getattr(&self, ino: u64) -> VResult<Attr> {
        let r = self.resolved(ino)?;
        self.attr_of(ino, &r)
    }

    fn entry_of(&self, src: Source) -> crate::index::Entry {
        self.layers[src.0 as usize].index.entry(src.1)
    }

    fn attr_of(&self, ino: u64, r: &Resolved) -> VResult<Attr> {
        let src = r.meta_source(&self.layers);
        let e = self.entry_of(src);
        let idx = &self.layers[src.0 as usize].index;
        let (size, nlink) = match e.kind {
            Kind::Dir => {
                let subdirs = self
                    .readdir(ino)?
                    .iter()
                    .filter(|d| d.kind == Kind::Dir)
                    .count();
                (4096, 2 + subdirs as u32)
            }
            Kind::Symlink => (idx.target(&e).len() as u64, self.visible_nlink(src, &e)),
            _ => (e.size, self.visible_nlink(src, &e)),
        };
        // Linux shows every symlink as 0777, whatever the tar header says.
        let mode = if e.kind == Kind::Symlink {
            0o777
        } else {
            e.mode & 0o7777
        };
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
            mtime: to_system_time(e.mtime, e.mtime_nsec),
            rdev: e.rdev() as u32,
        })
    }

    /// The number of names of a hard-linked inode that the merged view
    /// shows. Only groups with more than one name in their layer need work:
    /// each name's path is resolved through the union once, then cached.
    fn visible_nlink(&self, src: Source, e: &crate::index::Entry) -> u32 {
        if e.nlink <= 1 {
            return e.nlink;
        }
        let key = (src.0, e.group);
        if let Some(&n) = self.nlinks.lock().get(&key) {
            return n;
        }
        let idx = &self.layers[src.0 as usize].index;
        let groups = self.link_groups(src.0);
        let mut n = 0;
        for &i in groups.get(&e.group).map(Vec::as_slice).unwrap_or(&[]) {
            let path = entry_path(idx, i);
            if let Some(Resolved::Leaf((l, _))) = crate::union::resolve_path(&self.layers, &path) {
                n += u32::from(l == src.0);
            }
        }
        self.nlinks.lock().insert(key, n.max(1));
        n.max(1)
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

    /// The merged listing of directory `ino` (without `.` and `..`).
    pub fn readdir(&self, ino: u64) -> VResult<Arc<Vec<DirEntry>>> {
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
        let Resolved::Dir(srcs) = self.resolved(ino)? else {
            return Err(libc::ENOTDIR);
        };
        let merged = list_dir(&self.layers, &srcs);
        let mut out = Vec::with_capacity(merged.len());
        for (name, r) in merged {
            let kind = self.entry_of(r.meta_source(&self.layers)).kind;
            let child = self.intern(ino, &name, r);
            out.push(DirEntry {
                name,
                ino: child,
                kind,
            });
        }
        let out = Arc::new(out);
        self.nodes.write().table[ino as usize - 1].listing = Some(out.clone());
        Ok(out)
    }

    fn leaf(&self, ino: u64) -> VResult<(Source, crate::index::Entry)> {
        match self.resolved(ino)? {
            Resolved::Leaf(src) => Ok((src, self.entry_of(src))),
            Resolved::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// Up to `size` bytes of file `ino` from `offset`, borrowed from the
    /// mapped layer blob.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> VResult<&[u8]> {
        let (src, e) = self.leaf(ino)?;
        if e.kind != Kind::File {
            return Err(libc::EINVAL);
        }
        let start = offset.min(e.size);
        let end = offset.saturating_add(size as u64).min(e.size);
        let data = self.layers[src.0 as usize].data();
        Ok(&data[(e.data_off + start) as usize..(e.data_off + end) as usize])
    }

    pub fn readlink(&self, ino: u64) -> VResult<Vec<u8>> {
        let (src, e) = self.leaf(ino)?;
        if e.kind != Kind::Symlink {
            return Err(libc::EINVAL);
        }
        Ok(self.layers[src.0 as usize].index.target(&e).to_vec())
    }

    fn meta_entry(&self, ino: u64) -> VResult<(Source, crate::index::Entry)> {
        let r = self.resolved(ino)?;
        let src = r.meta_source(&self.layers);
        Ok((src, self.entry_of(src)))
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VResult<Vec<u8>> {
        let (src, e) = self.meta_entry(ino)?;
        let idx = &self.layers[src.0 as usize].index;
        idx.xattrs(&e)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_vec())
            .ok_or(libc::ENODATA)
    }

    /// Names of the extended attributes, each followed by a NUL.
    pub fn listxattr(&self, ino: u64) -> VResult<Vec<u8>> {
        let (src, e) = self.meta_entry(ino)?;
        let idx = &self.layers[src.0 as usize].index;
        let mut out = Vec::new();
        for (k, _) in idx.xattrs(&e) {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// (total bytes of the layer blobs, total entries) for statfs.
    pub fn usage(&self) -> (u64, u64) {
        self.layers.iter().fold((0, 0), |(b, f), l| {
            (b + l.index.tar_size(), f + l.index.len() as u64)
        })
    }
}

/// The path of entry `i` inside its layer, from the parent links.
fn entry_path(idx: &Index, mut i: u32) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = Vec::new();
    while i != 0 {
        let e = idx.entry(i);
        comps.push(idx.name(&e));
        i = e.parent;
    }
    comps.reverse();
    comps.join(&b'/')
}
