//! The tree a layer index is built from, kept compact: a layer of a
//! million entries costs about 100 bytes of memory per entry while it is
//! built (not the ~1 KB of a tree of per-node strings and maps).
//!
//! Every node is one fixed-size record (64 bytes) in one `Vec`; names,
//! symlink targets and xattrs are ranges of one byte arena; the children
//! of a directory are not stored with it but found through one hash table
//! of node numbers keyed by (parent, name). Nothing is allocated per node.
//! At write time the live children are grouped by parent (a counting
//! sort), each directory's run sorted by name as the format wants, and
//! the index written breadth-first in one streaming pass per section
//! ([`Tree::write`]), the header last.
//!
//! The layer grammar ([`Tree::add`]: later entries replace earlier ones,
//! whiteouts, opaque markers, hard links, implicit parents) is the one of
//! the tree of per-node maps this replaced (kept for tests as
//! `reference.rs`), and the index bytes are the same.

use std::hash::BuildHasher;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use hashbrown::HashTable;
use sha2::{Digest, Sha256};

use super::build::{entry_err, split_path, BuildError, BuildStats, Meta, RawEntry};
use super::{
    Entry, Kind, ENTRY_SIZE, FLAG_IMPLICIT, FLAG_OPAQUE, HEADER_SIZE, MAGIC, VERSION, XATTR_SIZE,
};
use crate::layer::whiteout::{classify_name, NameClass};

/// One node. What `a` and `b` hold depends on the kind: a file's size and
/// data offset, a symlink's target (offset and length in the arena), a
/// device's major and minor; nothing for the others.
#[derive(Clone, Copy, Debug)]
struct Node {
    name_off: u64,
    a: u64,
    b: u64,
    mtime: i64,
    parent: u32,
    name_len: u32,
    uid: u32,
    gid: u32,
    mtime_nsec: u32,
    group: u32,
    /// Index in `Tree::xsets` (0: no xattrs).
    xset: u32,
    /// `mode & 0o7777`.
    mode: u16,
    kind: Kind,
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Node>() == 64);

/// The metadata part of a node.
#[derive(Clone, Copy)]
struct NodeMeta {
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    xset: u32,
}

impl Node {
    /// A node with no name, data, target, device or group.
    fn bare(kind: Kind, flags: u8, m: NodeMeta) -> Node {
        let mut n = Node {
            name_off: 0,
            a: 0,
            b: 0,
            mtime: 0,
            parent: 0,
            name_len: 0,
            uid: 0,
            gid: 0,
            mtime_nsec: 0,
            group: 0,
            xset: 0,
            mode: 0,
            kind,
            flags,
        };
        n.set_meta(m);
        n
    }

    fn implicit_dir() -> Node {
        let m = NodeMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            xset: 0,
        };
        Node::bare(Kind::Dir, FLAG_IMPLICIT, m)
    }

    fn meta(&self) -> NodeMeta {
        NodeMeta {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            xset: self.xset,
        }
    }

    fn set_meta(&mut self, m: NodeMeta) {
        self.mode = m.mode;
        self.uid = m.uid;
        self.gid = m.gid;
        self.mtime = m.mtime;
        self.mtime_nsec = m.mtime_nsec;
        self.xset = m.xset;
    }

    /// The node's content (everything but its place: parent and name).
    fn with_place_of(mut self, other: &Node) -> Node {
        self.parent = other.parent;
        self.name_off = other.name_off;
        self.name_len = other.name_len;
        self
    }

    fn target(&self) -> (u64, u32) {
        if self.kind == Kind::Symlink {
            (self.a, self.b as u32)
        } else {
            (0, 0)
        }
    }
}

/// One extended attribute: name and value ranges in the arena.
#[derive(Clone, Copy)]
struct Xattr {
    name_off: u64,
    value_off: u64,
    name_len: u32,
    value_len: u32,
}

/// The layer being built.
pub(super) struct Tree {
    /// Node 0 is the layer's root.
    nodes: Vec<Node>,
    arena: Vec<u8>,
    xattrs: Vec<Xattr>,
    /// (first, count) in `xattrs` of each node's xattrs; entry 0 is none.
    xsets: Vec<(u32, u32)>,
    /// Node numbers by (parent, name): the live children of every
    /// directory. A node replaced with its subtree leaves the table (its
    /// name maps to the new node), so its old children are unreachable.
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    next_group: u32,
}

impl Tree {
    pub(super) fn new() -> Tree {
        Tree {
            nodes: vec![Node::implicit_dir()],
            arena: Vec::new(),
            xattrs: Vec::new(),
            xsets: vec![(0, 0)],
            table: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            next_group: 1,
        }
    }

    fn bytes(&self, off: u64, len: u32) -> &[u8] {
        &self.arena[off as usize..off as usize + len as usize]
    }

    fn name(&self, id: u32) -> &[u8] {
        let n = &self.nodes[id as usize];
        self.bytes(n.name_off, n.name_len)
    }

    fn push_bytes(&mut self, b: &[u8]) -> Result<(u64, u32), BuildError> {
        let len = u32::try_from(b.len()).map_err(|_| BuildError::TooLarge("strings"))?;
        let off = self.arena.len() as u64;
        self.arena.extend_from_slice(b);
        Ok((off, len))
    }

    /// Stores the xattrs of `m` in the arena.
    fn node_meta(&mut self, m: Meta) -> Result<NodeMeta, BuildError> {
        let mut xset = 0;
        if !m.xattrs.is_empty() {
            let first =
                u32::try_from(self.xattrs.len()).map_err(|_| BuildError::TooLarge("xattrs"))?;
            for (k, v) in &m.xattrs {
                let (name_off, name_len) = self.push_bytes(k)?;
                let (value_off, value_len) = self.push_bytes(v)?;
                self.xattrs.push(Xattr {
                    name_off,
                    value_off,
                    name_len,
                    value_len,
                });
            }
            xset = u32::try_from(self.xsets.len()).map_err(|_| BuildError::TooLarge("xattrs"))?;
            self.xsets.push((first, m.xattrs.len() as u32));
        }
        Ok(NodeMeta {
            mode: (m.mode & 0o7777) as u16,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            mtime_nsec: m.mtime_nsec,
            xset,
        })
    }

    fn node_xattrs(&self, n: &Node) -> &[Xattr] {
        let (first, count) = self.xsets[n.xset as usize];
        &self.xattrs[first as usize..(first + count) as usize]
    }

    fn hash(&self, parent: u32, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// The live child `name` of directory `parent`.
    fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let h = self.hash(parent, name);
        self.table
            .find(h, |&id| {
                self.nodes[id as usize].parent == parent && self.name(id) == name
            })
            .copied()
    }

    /// Adds `node` as the child `name` of `parent` (which has none of
    /// that name); returns its number.
    fn new_child(&mut self, parent: u32, name: &[u8], mut node: Node) -> Result<u32, BuildError> {
        let id = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&id| id <= u32::MAX / 2)
            .ok_or(BuildError::TooLarge("entries"))?;
        (node.name_off, node.name_len) = self.push_bytes(name)?;
        node.parent = parent;
        self.nodes.push(node);
        let h = self.hash(parent, name);
        let (nodes, arena, hasher) = (&self.nodes, &self.arena, &self.hasher);
        let name_of = |id: u32| {
            let n = &nodes[id as usize];
            &arena[n.name_off as usize..n.name_off as usize + n.name_len as usize]
        };
        self.table.insert_unique(h, id, |&id| {
            hasher.hash_one((nodes[id as usize].parent, name_of(id)))
        });
        Ok(id)
    }

    /// Puts `node` in the place of node `id`, which is a directory: the
    /// name gets a new node, and the old one with all below it leaves the
    /// tree.
    fn replace_dir(&mut self, id: u32, node: Node) -> Result<(), BuildError> {
        let old = self.nodes[id as usize];
        let new = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&id| id <= u32::MAX / 2)
            .ok_or(BuildError::TooLarge("entries"))?;
        self.nodes.push(node.with_place_of(&old));
        let name = self.bytes(old.name_off, old.name_len);
        let h = self.hash(old.parent, name);
        let slot = self
            .table
            .find_mut(h, |&i| i == id)
            .expect("a live node is in the table");
        *slot = new;
        Ok(())
    }

    /// Walks to the directory that holds the last component, creating
    /// implicit directories on the way. A non-directory (or whiteout) in the
    /// way is replaced, as extraction would do, by a new directory: opaque,
    /// since the lower one was deleted, and with the implicit defaults as its
    /// own metadata (not implicit: nothing below may show through).
    fn parent_of(&mut self, comps: &[&[u8]]) -> Result<u32, BuildError> {
        let mut cur = 0;
        for comp in comps {
            cur = match self.child(cur, comp) {
                Some(id) if self.nodes[id as usize].kind == Kind::Dir => id,
                Some(id) => {
                    // A non-directory has no children: its number stays.
                    let mut n = Node::implicit_dir();
                    n.flags = FLAG_OPAQUE;
                    let old = &mut self.nodes[id as usize];
                    *old = n.with_place_of(old);
                    id
                }
                None => self.new_child(cur, comp, Node::implicit_dir())?,
            };
        }
        Ok(cur)
    }

    fn find(&self, comps: &[&[u8]]) -> Option<u32> {
        let mut cur = 0;
        for comp in comps {
            cur = self.child(cur, comp)?;
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
    fn insert(&mut self, dir: u32, name: &[u8], mut node: Node) -> Result<(), BuildError> {
        let Some(id) = self.child(dir, name) else {
            self.new_child(dir, name, node)?;
            return Ok(());
        };
        let old = &mut self.nodes[id as usize];
        match (old.kind, node.kind) {
            (Kind::Dir, Kind::Dir) => {
                old.set_meta(node.meta());
                old.flags &= !FLAG_IMPLICIT;
                return Ok(());
            }
            (Kind::Dir, Kind::Whiteout) => {
                old.flags = (old.flags | FLAG_OPAQUE) & !FLAG_IMPLICIT;
                return Ok(());
            }
            (_, Kind::Whiteout) => return Ok(()),
            (Kind::Dir, _) => return self.replace_dir(id, node),
            (_, Kind::Dir) => node.flags |= FLAG_OPAQUE,
            _ => {}
        }
        *old = node.with_place_of(old);
        Ok(())
    }

    /// Adds one entry with the layer rules: whiteout names decoded, AUFS
    /// metadata dropped, hard links resolved to their target's inode.
    pub(super) fn add(&mut self, raw: RawEntry<'_>) -> Result<(), BuildError> {
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
                let m = self.node_meta(meta)?;
                self.nodes[0].set_meta(m);
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
                let dir = self.parent_of(parents)?;
                self.nodes[dir as usize].flags |= FLAG_OPAQUE;
                return Ok(());
            }
            NameClass::Whiteout(hidden) => {
                let dir = self.parent_of(parents)?;
                let m = self.node_meta(meta)?;
                return self.insert(dir, hidden, Node::bare(Kind::Whiteout, 0, m));
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
            let t = self.nodes[tid as usize];
            if matches!(t.kind, Kind::Dir | Kind::Whiteout) {
                return Err(entry_err(path, "hard link to a directory or whiteout"));
            }
            t
        } else {
            let group = if kind == Kind::Dir {
                0
            } else {
                self.next_group += 1;
                self.next_group
            };
            let m = self.node_meta(meta)?;
            let mut n = Node::bare(kind, 0, m);
            n.group = group;
            (n.a, n.b) = match kind {
                Kind::File => (size, data_off),
                Kind::Symlink => {
                    let (off, len) = self.push_bytes(&target)?;
                    (off, len.into())
                }
                Kind::Char | Kind::Block => (rdev.0.into(), rdev.1.into()),
                _ => (0, 0),
            };
            n
        };
        let dir = self.parent_of(parents)?;
        self.insert(dir, last, node)
    }
}

/// Running offset in the string table being written.
struct Strings(u64);

impl Strings {
    /// Places a string of `len` bytes; its (offset, length) as the format
    /// stores them.
    fn push(&mut self, len: u32) -> Result<(u32, u32), BuildError> {
        let off = u32::try_from(self.0).map_err(|_| BuildError::TooLarge("strings"))?;
        self.0 += u64::from(len);
        Ok((off, len))
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    out: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Bytes written per `write` of the index file.
const WRITE_BUF: usize = 64 << 10;

impl Tree {
    /// The live nodes in index order (breadth-first from the root, each
    /// directory's children contiguous and sorted by name), with the
    /// index number of each one's parent.
    fn order(&self) -> Result<(Vec<u32>, Vec<u32>), BuildError> {
        // Counting sort of the live children by parent: `at[p + 1]` ends
        // as the start of p's run, `at[p + 2]` as its end.
        let n = self.nodes.len();
        let mut at = vec![0u32; n + 2];
        for &id in self.table.iter() {
            at[self.nodes[id as usize].parent as usize + 2] += 1;
        }
        for p in 2..at.len() {
            at[p] += at[p - 1];
        }
        let mut kids = vec![0u32; self.table.len()];
        for &id in self.table.iter() {
            let slot = &mut at[self.nodes[id as usize].parent as usize + 1];
            kids[*slot as usize] = id;
            *slot += 1;
        }
        // Now `at[p + 1]` is the end of p's run and `at[p]` its start.
        let mut order = Vec::with_capacity(kids.len() + 1);
        let mut parents = Vec::with_capacity(kids.len() + 1);
        order.push(0u32);
        parents.push(0u32);
        let mut i = 0;
        while i < order.len() {
            let id = order[i] as usize;
            let run = &mut kids[at[id] as usize..at[id + 1] as usize];
            run.sort_unstable_by(|&a, &b| self.name(a).cmp(self.name(b)));
            order.extend_from_slice(run);
            parents.resize(order.len(), i as u32);
            if order.len() > u32::MAX as usize / 2 {
                return Err(BuildError::TooLarge("entries"));
            }
            i += 1;
        }
        Ok((order, parents))
    }

    /// Writes the index of the tree (of a tar of `tar_size` bytes) to
    /// `out` from its current position: sections streamed in order, the
    /// header (with the checksum) written last. Leaves `out` at the end
    /// of the index.
    pub(super) fn write<W: Write + Seek>(
        &self,
        tar_size: u64,
        out: &mut W,
    ) -> Result<BuildStats, BuildError> {
        let (order, parents) = self.order()?;
        let mut nlinks = vec![0u32; self.next_group as usize + 1];
        for &id in &order {
            let n = &self.nodes[id as usize];
            if !matches!(n.kind, Kind::Dir | Kind::Whiteout) {
                nlinks[n.group as usize] += 1;
            }
        }

        let start = out.stream_position()?;
        let (sum, xattr_count, strings_len, stats) = {
            let mut buf = BufWriter::with_capacity(WRITE_BUF, &mut *out);
            buf.write_all(&[0u8; HEADER_SIZE])?;
            let mut w = Hashing {
                out: buf,
                hash: Sha256::new(),
            };
            let (xattr_count, strings_len, stats) =
                self.write_sections(&order, &parents, &nlinks, &mut w)?;
            w.out.flush()?;
            (w.hash.finalize(), xattr_count, strings_len, stats)
        };
        let len = HEADER_SIZE as u64
            + order.len() as u64 * ENTRY_SIZE as u64
            + u64::from(xattr_count) * XATTR_SIZE as u64
            + strings_len;
        let mut header = Vec::with_capacity(HEADER_SIZE);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        header.extend_from_slice(&(order.len() as u32).to_le_bytes());
        header.extend_from_slice(&xattr_count.to_le_bytes());
        header.extend_from_slice(&strings_len.to_le_bytes());
        header.extend_from_slice(&tar_size.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        header.extend_from_slice(&sum);
        debug_assert_eq!(header.len(), HEADER_SIZE);
        out.seek(SeekFrom::Start(start))?;
        out.write_all(&header)?;
        out.seek(SeekFrom::Start(start + len))?;
        Ok(stats)
    }
    /// Writes the entry, xattr and string sections (everything after the
    /// header) of the nodes `order`; returns the xattr count, the string
    /// table's length and the counts.
    fn write_sections(
        &self,
        order: &[u32],
        parents: &[u32],
        nlinks: &[u32],
        w: &mut impl Write,
    ) -> Result<(u32, u64, BuildStats), BuildError> {
        // Entries. Entry i's children are the entries whose parent is i,
        // contiguous from `next`.
        let mut strings = Strings(0);
        let mut rec = Vec::with_capacity(ENTRY_SIZE);
        let mut xattr_count = 0u32;
        let mut next = 1usize;
        let mut stats = BuildStats::default();
        for (idx, &id) in order.iter().enumerate() {
            let n = &self.nodes[id as usize];
            let (name_off, name_len) = strings.push(n.name_len)?;
            let (_, tlen) = n.target();
            let (target_off, target_len) = strings.push(tlen)?;
            let xattr_start = xattr_count;
            for x in self.node_xattrs(n) {
                strings.push(x.name_len)?;
                strings.push(x.value_len)?;
                xattr_count += 1;
            }
            let first = next;
            while next < order.len() && parents[next] == idx as u32 {
                next += 1;
            }
            let (child_start, child_count) = if n.kind == Kind::Dir {
                (first as u32, (next - first) as u32)
            } else {
                (0, 0)
            };
            let (size, data_off) = if n.kind == Kind::File {
                (n.a, n.b)
            } else {
                (0, 0)
            };
            let (rdev_major, rdev_minor) = if matches!(n.kind, Kind::Char | Kind::Block) {
                (n.a as u32, n.b as u32)
            } else {
                (0, 0)
            };
            match n.kind {
                Kind::Whiteout => stats.whiteouts += 1,
                Kind::File => {
                    stats.files += 1;
                    stats.file_bytes += size;
                }
                _ => {}
            }
            let nlink = match nlinks[n.group as usize] {
                0 => 1,
                c => c,
            };
            rec.clear();
            Entry {
                name_off,
                name_len,
                parent: parents[idx],
                kind: n.kind,
                flags: n.flags,
                mode: n.mode.into(),
                uid: n.uid,
                gid: n.gid,
                nlink,
                mtime: n.mtime,
                mtime_nsec: n.mtime_nsec,
                group: if n.kind == Kind::Dir {
                    idx as u32
                } else {
                    n.group
                },
                size,
                data_off,
                target_off,
                target_len,
                rdev_major,
                rdev_minor,
                child_start,
                child_count,
                xattr_start,
                xattr_count: xattr_count - xattr_start,
                id: idx as u32,
            }
            .encode(&mut rec);
            w.write_all(&rec)?;
        }
        stats.entries = order.len() as u32;

        // Xattr records: the same string offsets again, in the same order
        // (they fit: the pass above checked every one).
        let mut off = 0u64;
        for &id in order {
            let n = &self.nodes[id as usize];
            off += u64::from(n.name_len) + u64::from(n.target().1);
            for x in self.node_xattrs(n) {
                let (ko, vo) = (off, off + u64::from(x.name_len));
                off = vo + u64::from(x.value_len);
                for v in [ko as u32, x.name_len, vo as u32, x.value_len] {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
        }
        debug_assert_eq!(off, strings.0);

        // Strings.
        for &id in order {
            let n = &self.nodes[id as usize];
            w.write_all(self.bytes(n.name_off, n.name_len))?;
            let (toff, tlen) = n.target();
            w.write_all(self.bytes(toff, tlen))?;
            for x in self.node_xattrs(n) {
                w.write_all(self.bytes(x.name_off, x.name_len))?;
                w.write_all(self.bytes(x.value_off, x.value_len))?;
            }
        }

        Ok((xattr_count, strings.0, stats))
    }
}
