//! The index builder as it was before `tree.rs`: a tree of nodes
//! with a `BTreeMap` of children each, serialized into one `Vec`. Kept
//! for tests only, as the reference the compact builder must match byte
//! for byte (see `difftest.rs`). Do not fix or change it: it is the
//! record of what the format's bytes were.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::build::{
    entry_err, header_num, parse_pax_time, pax_id, split_path, BuildError, BuildStats, Meta,
    RawEntry,
};
use super::tarwalk::Walk;
use super::{
    Entry, Kind, ENTRY_SIZE, FLAG_IMPLICIT, FLAG_OPAQUE, HEADER_SIZE, MAGIC, VERSION, XATTR_SIZE,
};
use crate::layer::whiteout::{classify_name, NameClass};

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    flags: u8,
    meta: Meta,
    group: u32,
    size: u64,
    data_off: u64,
    target: Vec<u8>,
    rdev: (u32, u32),
    children: BTreeMap<Vec<u8>, usize>,
}

impl Node {
    /// A node with no data, target, device or children.
    fn bare(kind: Kind, flags: u8, meta: Meta) -> Node {
        Node {
            kind,
            flags,
            meta,
            group: 0,
            size: 0,
            data_off: 0,
            target: Vec::new(),
            rdev: (0, 0),
            children: BTreeMap::new(),
        }
    }

    fn implicit_dir() -> Node {
        let meta = Meta {
            mode: 0o755,
            ..Meta::default()
        };
        Node::bare(Kind::Dir, FLAG_IMPLICIT, meta)
    }
}

struct Tree {
    nodes: Vec<Node>,
    next_group: u32,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            nodes: vec![Node::implicit_dir()],
            next_group: 1,
        }
    }

    /// Walks to the directory that holds the last component, creating
    /// implicit directories on the way. A non-directory (or whiteout) in the
    /// way is replaced, as extraction would do, by a new directory: opaque,
    /// since the lower one was deleted, and with the implicit defaults as its
    /// own metadata (not implicit: nothing below may show through).
    fn parent_of(&mut self, comps: &[&[u8]]) -> usize {
        let mut cur = 0;
        for comp in comps {
            let next = match self.nodes[cur].children.get(*comp) {
                Some(&id) if self.nodes[id].kind == Kind::Dir => id,
                Some(&id) => {
                    let mut n = Node::implicit_dir();
                    n.flags = FLAG_OPAQUE;
                    self.nodes[id] = n;
                    id
                }
                None => {
                    self.nodes.push(Node::implicit_dir());
                    let id = self.nodes.len() - 1;
                    self.nodes[cur].children.insert(comp.to_vec(), id);
                    id
                }
            };
            cur = next;
        }
        cur
    }

    fn find(&self, comps: &[&[u8]]) -> Option<usize> {
        let mut cur = 0;
        for comp in comps {
            cur = *self.nodes[cur].children.get(*comp)?;
        }
        Some(cur)
    }

    /// Puts `node` at `name` in directory `dir`, with tar semantics: a later
    /// entry replaces an earlier one, except that a directory over a
    /// directory only updates its metadata and keeps its children. A
    /// directory replacing a non-directory (or whiteout) is opaque: the
    /// layer deleted the lower entry. A whiteout deletes lower layers'
    /// content only, never this layer's: over a directory it makes it opaque
    /// (not implicit, as the lower one is gone), over anything else it does
    /// nothing.
    fn insert(&mut self, dir: usize, name: &[u8], mut node: Node) {
        if let Some(&id) = self.nodes[dir].children.get(name) {
            let old = &mut self.nodes[id];
            match (old.kind, node.kind) {
                (Kind::Dir, Kind::Dir) => {
                    old.meta = node.meta;
                    old.flags &= !FLAG_IMPLICIT;
                    return;
                }
                (Kind::Dir, Kind::Whiteout) => {
                    old.flags = (old.flags | FLAG_OPAQUE) & !FLAG_IMPLICIT;
                    return;
                }
                (_, Kind::Whiteout) => return,
                (_, Kind::Dir) => node.flags |= FLAG_OPAQUE,
                _ => {}
            }
            *old = node;
        } else {
            self.nodes.push(node);
            let id = self.nodes.len() - 1;
            self.nodes[dir].children.insert(name.to_vec(), id);
        }
    }
}

impl Tree {
    /// Adds one entry with the layer rules: whiteout names decoded, AUFS
    /// metadata dropped, hard links resolved to their target's inode.
    fn add(&mut self, raw: RawEntry<'_>) -> Result<(), BuildError> {
        let RawEntry {
            path,
            kind,
            meta,
            link,
            size,
            data_off,
            target,
            rdev,
        } = raw;
        let comps = split_path(path).map_err(|e| entry_err(path, e))?;
        let Some((last, parents)) = comps.split_last() else {
            // The layer's root directory itself (`./`): only its metadata.
            if kind == Kind::Dir && link.is_none() {
                self.nodes[0].meta = meta;
                self.nodes[0].flags &= !FLAG_IMPLICIT;
                return Ok(());
            }
            return Err(entry_err(path, "the root of a layer must be a directory"));
        };
        if parents.iter().any(|c| c.starts_with(b".wh.")) {
            if parents.iter().any(|c| c.starts_with(b".wh..wh.")) {
                return Ok(()); // inside AUFS metadata such as .wh..wh.plnk/
            }
            return Err(entry_err(path, "whiteout name used as a directory"));
        }
        match classify_name(last) {
            NameClass::Meta => return Ok(()),
            NameClass::Opaque => {
                let dir = self.parent_of(parents);
                self.nodes[dir].flags |= FLAG_OPAQUE;
                return Ok(());
            }
            NameClass::Whiteout(hidden) => {
                let dir = self.parent_of(parents);
                let node = Node::bare(Kind::Whiteout, 0, meta);
                self.insert(dir, hidden, node);
                return Ok(());
            }
            NameClass::Plain => {}
        }

        let node = if let Some(target) = link {
            let tcomps = split_path(&target)
                .map_err(|e| entry_err(path, format!("hard link target: {e}")))?;
            let tid = self.find(&tcomps).ok_or_else(|| {
                entry_err(
                    path,
                    format!(
                        "hard link to {:?}, which is not in the layer before it",
                        String::from_utf8_lossy(&target)
                    ),
                )
            })?;
            let t = &self.nodes[tid];
            if matches!(t.kind, Kind::Dir | Kind::Whiteout) {
                return Err(entry_err(path, "hard link to a directory or whiteout"));
            }
            t.clone()
        } else {
            let group = if kind == Kind::Dir {
                0
            } else {
                self.next_group += 1;
                self.next_group
            };
            Node {
                kind,
                flags: 0,
                meta,
                group,
                size: if kind == Kind::File { size } else { 0 },
                data_off: if kind == Kind::File { data_off } else { 0 },
                target: if kind == Kind::Symlink {
                    target
                } else {
                    Vec::new()
                },
                rdev: if matches!(kind, Kind::Char | Kind::Block) {
                    rdev
                } else {
                    (0, 0)
                },
                children: BTreeMap::new(),
            }
        };
        let dir = self.parent_of(parents);
        self.insert(dir, last, node);
        Ok(())
    }
}

/// Builds the index of a layer read from a directory (a branch of
/// `mount-branches`): `entries` as a walk found them, parents before their
/// children, overlay whiteouts and opaque xattrs already spelled the AUFS
/// way (see [`crate::layer::whiteout::overlay_mark`]), hard links as links to the
/// first name the walk saw. Data offsets are 0: a directory layer reads a
/// file by its path ([`crate::layer::index::Index::path`]); the index's "tar size"
/// is the sum of its file sizes (hard links once), so every size is in
/// bounds and `statfs` adds up the layers' data.
pub(super) fn build_index_from_entries<'a>(
    entries: impl IntoIterator<Item = RawEntry<'a>>,
) -> Result<(Vec<u8>, BuildStats), BuildError> {
    let mut tree = Tree::new();
    let mut total = 0u64;
    for raw in entries {
        if raw.kind == Kind::File && raw.link.is_none() {
            total = total.saturating_add(raw.size);
        }
        tree.add(RawEntry { data_off: 0, ..raw })?;
    }
    serialize(&tree, total)
}

/// Builds the index of the uncompressed layer tar `tar`. Returns the index
/// bytes (ready to write to disk) and counts.
pub(super) fn build_index(tar: &[u8]) -> Result<(Vec<u8>, BuildStats), BuildError> {
    let mut tree = Tree::new();
    for m in Walk::new(tar) {
        let m = m.map_err(|e| {
            BuildError::Tar(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        let path = m.path.into_owned();
        if path.contains(&0) {
            // A PAX path or GNU long name may hold one; no file system
            // name can, and the mount would cut it there.
            return Err(entry_err(&path, "name holds a NUL byte"));
        }
        let h = m.header;
        let etype = h.entry_type();
        let old = h.as_old();
        let mode = header_num(&old.mode, h.mode().map(u64::from), &path, "mode")? as u32;
        let uid = header_num(&old.uid, h.uid(), &path, "uid")?;
        let gid = header_num(&old.gid, h.gid(), &path, "gid")?;
        let mut meta = Meta {
            mode: mode & 0o7777,
            uid: u32::try_from(uid).map_err(|_| entry_err(&path, "uid too large"))?,
            gid: u32::try_from(gid).map_err(|_| entry_err(&path, "gid too large"))?,
            mtime: h.mtime().unwrap_or(0) as i64,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        };
        for &(key, value) in &m.pax {
            if key == b"mtime" {
                let (s, ns) =
                    parse_pax_time(value).ok_or_else(|| entry_err(&path, "bad PAX mtime"))?;
                meta.mtime = s;
                meta.mtime_nsec = ns;
            } else if key == b"uid" {
                meta.uid = pax_id(value, &path, "uid")?;
            } else if key == b"gid" {
                meta.gid = pax_id(value, &path, "gid")?;
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.push((name.to_vec(), value.to_vec()));
            } else if key.starts_with(b"GNU.sparse.") {
                return Err(entry_err(&path, "sparse files are not supported"));
            }
        }
        // A later PAX record for the same attribute overrides an earlier
        // one: stable-sort by name, then keep the last of each run.
        meta.xattrs.reverse();
        meta.xattrs.sort_by(|a, b| a.0.cmp(&b.0));
        meta.xattrs.dedup_by(|a, b| a.0 == b.0);

        if etype.is_gnu_sparse() {
            return Err(entry_err(&path, "GNU sparse files are not supported"));
        }
        let kind = match etype {
            // Pre-POSIX tars mark directories as regular files named "x/".
            EntryType::Regular if path.ends_with(b"/") => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Char => Kind::Char,
            EntryType::Block => Kind::Block,
            EntryType::Fifo => Kind::Fifo,
            EntryType::Link => Kind::File, // resolved below
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            other => {
                tracing::warn!(path = %String::from_utf8_lossy(&path), "skipping tar entry of unsupported type {:?}", other);
                continue;
            }
        };

        let link = if etype == EntryType::Link {
            Some(
                m.link
                    .clone()
                    .ok_or_else(|| entry_err(&path, "hard link without a target"))?
                    .into_owned(),
            )
        } else {
            None
        };
        if link.as_ref().is_some_and(|l| l.contains(&0)) {
            return Err(entry_err(&path, "hard link target holds a NUL byte"));
        }
        let size = if kind == Kind::File { m.size } else { 0 };
        let data_off = m.data_off;
        if data_off
            .checked_add(m.size)
            .is_none_or(|end| end > tar.len() as u64)
        {
            return Err(entry_err(
                &path,
                "file data runs past the end of the tar (truncated?)",
            ));
        }
        let target = if kind == Kind::Symlink && link.is_none() {
            m.link
                .clone()
                .ok_or_else(|| entry_err(&path, "symlink without a target"))?
                .into_owned()
        } else {
            Vec::new()
        };
        if target.contains(&0) {
            return Err(entry_err(&path, "symlink target holds a NUL byte"));
        }
        let rdev = if matches!(kind, Kind::Char | Kind::Block) {
            (
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        tree.add(RawEntry {
            path: &path,
            kind,
            meta,
            link,
            size,
            data_off,
            target,
            rdev,
        })?;
    }
    serialize(&tree, tar.len() as u64)
}

fn serialize(tree: &Tree, tar_size: u64) -> Result<(Vec<u8>, BuildStats), BuildError> {
    // Breadth-first order: each directory's children are contiguous.
    let mut order: Vec<(usize, u32, &[u8])> = vec![(0, 0, b"")]; // (node, parent index, name)
    let mut child_ranges: Vec<(u32, u32)> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let (nid, _, _) = order[i];
        let node = &tree.nodes[nid];
        let start = order.len();
        for (name, &cid) in &node.children {
            order.push((cid, i as u32, name.as_slice()));
        }
        if order.len() > u32::MAX as usize / 2 {
            return Err(BuildError::TooLarge("entries"));
        }
        child_ranges.push((start as u32, (order.len() - start) as u32));
        i += 1;
    }

    let mut nlinks: HashMap<u32, u32> = HashMap::new();
    for &(nid, _, _) in &order {
        let n = &tree.nodes[nid];
        if !matches!(n.kind, Kind::Dir | Kind::Whiteout) {
            *nlinks.entry(n.group).or_default() += 1;
        }
    }

    let mut strings: Vec<u8> = Vec::new();
    let mut push_str = |s: &[u8]| -> Result<(u32, u32), BuildError> {
        let off = u32::try_from(strings.len()).map_err(|_| BuildError::TooLarge("strings"))?;
        let len = u32::try_from(s.len()).map_err(|_| BuildError::TooLarge("strings"))?;
        strings.extend_from_slice(s);
        Ok((off, len))
    };
    let mut entries = Vec::with_capacity(order.len() * ENTRY_SIZE);
    let mut xattrs = Vec::new();
    let mut xattr_count = 0u32;
    let mut stats = BuildStats::default();
    for (idx, &(nid, parent, name)) in order.iter().enumerate() {
        let n = &tree.nodes[nid];
        let (name_off, name_len) = push_str(name)?;
        let (target_off, target_len) = push_str(&n.target)?;
        let xattr_start = xattr_count;
        for (k, v) in &n.meta.xattrs {
            let (ko, kl) = push_str(k)?;
            let (vo, vl) = push_str(v)?;
            for x in [ko, kl, vo, vl] {
                xattrs.extend_from_slice(&x.to_le_bytes());
            }
            xattr_count += 1;
        }
        let (child_start, child_count) = if n.kind == Kind::Dir {
            child_ranges[idx]
        } else {
            (0, 0)
        };
        match n.kind {
            Kind::Whiteout => stats.whiteouts += 1,
            Kind::File => {
                stats.files += 1;
                stats.file_bytes += n.size;
            }
            _ => {}
        }
        Entry {
            name_off,
            name_len,
            parent,
            kind: n.kind,
            flags: n.flags,
            mode: n.meta.mode,
            uid: n.meta.uid,
            gid: n.meta.gid,
            nlink: nlinks.get(&n.group).copied().unwrap_or(1),
            mtime: n.meta.mtime,
            mtime_nsec: n.meta.mtime_nsec,
            group: if n.kind == Kind::Dir {
                idx as u32
            } else {
                n.group
            },
            size: n.size,
            data_off: n.data_off,
            target_off,
            target_len,
            rdev_major: n.rdev.0,
            rdev_minor: n.rdev.1,
            child_start,
            child_count,
            xattr_start,
            xattr_count: xattr_count - xattr_start,
            id: idx as u32,
        }
        .encode(&mut entries);
    }
    stats.entries = order.len() as u32;

    let mut out = Vec::with_capacity(HEADER_SIZE + entries.len() + xattrs.len() + strings.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    out.extend_from_slice(&(order.len() as u32).to_le_bytes());
    out.extend_from_slice(&xattr_count.to_le_bytes());
    out.extend_from_slice(&(strings.len() as u64).to_le_bytes());
    out.extend_from_slice(&tar_size.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&[0u8; 32]);
    debug_assert_eq!(out.len(), HEADER_SIZE);
    debug_assert_eq!(xattrs.len(), xattr_count as usize * XATTR_SIZE);
    out.extend_from_slice(&entries);
    out.extend_from_slice(&xattrs);
    out.extend_from_slice(&strings);
    let sum = Sha256::digest(&out[HEADER_SIZE..]);
    out[48..80].copy_from_slice(&sum);
    Ok((out, stats))
}
