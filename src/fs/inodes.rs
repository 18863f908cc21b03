//! The inode table and name resolution: the nodes (one per inode number,
//! dropped when the kernel has forgotten every entry it was given of it),
//! how inode numbers follow from what backs a node (`ino_of`), how a
//! (parent, name) becomes a node (the branch first, its whiteouts and
//! opaque markers, then the lower layers through `union::resolve_child`),
//! and the hard-link groups of lower files with the nlink the merged view
//! shows for them.
//!
//! Not here: attributes of a node (`attr`), listings (`readdir`), and
//! changes of the namespace (`namespace`, `copyup`), which update the
//! table through `intern`, `with_node` and the name maps.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{err, Attr, DirEntry, VResult, Vfs, ROOT_INO};
use crate::layer::index::Kind;
use crate::layer::whiteout::{classify_name, NameClass};
use crate::sys;
use crate::union::{resolve_child, Resolved, Source};
use crate::upper::child;

pub(super) struct Node {
    /// (parent, name) of each name of the node, the first used for its path
    /// in the upper branch. Empty for the root and once unlinked.
    pub(super) names: Vec<(u64, Box<[u8]>)>,
    pub(super) kind: Kind,
    /// Where its content is: the lower layers, the branch, or both.
    pub(super) place: Place,
    /// Merged listing, cached for directories that are not in the upper
    /// branch (their content cannot change without a copy-up first).
    pub(super) listing: Option<Arc<Vec<DirEntry>>>,
    /// Number of subdirectories in the merged listing (for nlink), once
    /// counted; every change of the directory adjusts it.
    pub(super) subdirs: Option<u32>,
    /// Entries of this node handed to the kernel (LOOKUP, readdirplus,
    /// the creating requests) and not yet forgotten: at 0 after a FORGET
    /// the node is dropped.
    pub(super) lookups: u64,
    /// The kernel has forgotten the node but an open handle still needs
    /// it: dropped at that handle's release.
    pub(super) forgotten: bool,
}

impl Node {
    /// A node with one name (none for the root), nothing cached, no
    /// lookup counted.
    pub(super) fn new(name: Option<(u64, Box<[u8]>)>, kind: Kind, place: Place) -> Node {
        Node {
            names: name.into_iter().collect(),
            kind,
            place,
            listing: None,
            subdirs: None,
            lookups: 0,
            forgotten: false,
        }
    }
}

/// Tag of inode numbers taken from the branch's `st_ino`: never set in a
/// number derived from a lower entry (`ino_of`).
pub(super) const UPPER_TAG: u64 = 1 << 63;

/// What backs a node, for its inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backing {
    /// A lower non-directory: its layer and inode group (hard links of a
    /// layer share the group).
    LowerFile { layer: u16, group: u32 },
    /// A lower or merged directory: the layer and entry number of its
    /// top-most source.
    LowerDir { layer: u16, entry: u32 },
    /// An object only the branch has: its `st_ino` there.
    Branch(u64),
}

/// The inode number (FUSE node id and `st_ino`) of a node backed by `b`
/// (not the root, which is 1): `(layer + 1) << 33 | dir << 32 | n` for a
/// lower entry (at least 2^33; layer numbers fit in 16 bits, groups and
/// entries in 32), the branch's `st_ino` with [`UPPER_TAG`] for the
/// branch (its file system's numbers stay below 2^63). So two live objects
/// never share a number, hard links share one, and a node dropped and
/// looked up again gets the number it had. A copied-up object keeps its
/// lower number instead (`Nodes::copied`).
pub(super) fn ino_of(b: Backing) -> u64 {
    match b {
        Backing::LowerFile { layer, group } => ((layer as u64 + 1) << 33) | group as u64,
        Backing::LowerDir { layer, entry } => ((layer as u64 + 1) << 33) | (1 << 32) | entry as u64,
        Backing::Branch(st_ino) => UPPER_TAG | st_ino,
    }
}

/// Where a node's content is. Never nowhere: a node that is in neither
/// the branch nor a layer cannot be written down.
#[derive(Clone, Debug)]
pub(super) enum Place {
    /// Only in the lower layers: for a directory, the sources merged into
    /// it; for any other node, its entry.
    Lower(Resolved),
    /// A directory in the branch (at every one of its names) with the
    /// lower directories still merged under it (not opaque).
    Merged(Resolved),
    /// Only in the branch: made there, copied up (a non-directory), or an
    /// opaque directory.
    Upper,
}

impl Place {
    /// Is the node in the branch?
    pub(super) fn upper(&self) -> bool {
        !matches!(self, Place::Lower(_))
    }

    /// What the lower layers give (see the variants).
    pub(super) fn lower(&self) -> Option<&Resolved> {
        match self {
            Place::Lower(r) | Place::Merged(r) => Some(r),
            Place::Upper => None,
        }
    }

    /// Now in the branch too: a directory keeps its lower part merged, any
    /// other node leaves its lower entry behind.
    pub(super) fn copied_up(&mut self, kind: Kind) {
        *self = match std::mem::replace(self, Place::Upper) {
            Place::Lower(r) | Place::Merged(r) if kind == Kind::Dir => Place::Merged(r),
            _ => Place::Upper,
        };
    }

    /// Nothing below any more (an opaque directory): only in the branch.
    /// Only for a node already in the branch.
    pub(super) fn cut_below(&mut self) {
        debug_assert!(self.upper(), "cut_below of a lower-only node");
        *self = Place::Upper;
    }
}

/// What a name resolves to before it has a node.
pub(super) struct Found {
    pub(super) kind: Kind,
    pub(super) place: Place,
    /// `st_ino` of an object in the branch, if known (`intern` reads it
    /// otherwise): its inode number follows from it, so its hard links
    /// share a node.
    pub(super) upper_ino: Option<u64>,
}

#[derive(Default)]
pub(super) struct Nodes {
    /// The live nodes by inode number (boxed: a map's slots are
    /// allocated ahead, up to twice the nodes, and a slot of a `Node`
    /// itself would be ~100 bytes).
    pub(super) table: HashMap<u64, Box<Node>>,
    pub(super) by_name: HashMap<(u64, Box<[u8]>), u64>,
    /// Branch `st_ino` -> inode number, for objects copied up during this
    /// mount (they keep their lower number): so a node dropped and found
    /// again in the branch, or another name of it, gets that number back.
    /// One entry per copy-up, removed when the object is dropped nameless.
    pub(super) copied: HashMap<u64, u64>,
    /// The reverse of `copied`.
    pub(super) copied_rev: HashMap<u64, u64>,
    /// Numbers given to objects whose backing could not be read.
    pub(super) spare: u64,
    /// Nodes and listing entries freed since the heap was last trimmed.
    pub(super) freed: usize,
}

impl Nodes {
    /// The node of inode number `ino`; ESTALE for a number that has no
    /// node (never given out, or forgotten).
    pub(super) fn node(&self, ino: u64) -> VResult<&Node> {
        self.table
            .get(&ino)
            .map(|n| &**n)
            .ok_or_else(|| libc::ESTALE.into())
    }

    /// [`Nodes::node`], to change.
    pub(super) fn node_mut(&mut self, ino: u64) -> VResult<&mut Node> {
        self.table
            .get_mut(&ino)
            .map(|n| &mut **n)
            .ok_or_else(|| libc::ESTALE.into())
    }

    /// The inode number of an object of the branch with `st_ino` there.
    fn branch_ino(&self, st_ino: u64) -> u64 {
        match self.copied.get(&st_ino) {
            Some(&i) => i,
            None => ino_of(Backing::Branch(st_ino)),
        }
    }

    /// Records that node `ino` (a copied-up object) is branch object
    /// `st_ino`.
    pub(super) fn note_copied(&mut self, st_ino: u64, ino: u64) {
        if ino & UPPER_TAG == 0 && ino != ROOT_INO {
            self.copied.insert(st_ino, ino);
            self.copied_rev.insert(ino, st_ino);
        }
    }

    /// Drops node `ino` and its names. A nameless copied-up object is gone
    /// for good (or only an open handle holds it): its number may go.
    pub(super) fn remove(&mut self, ino: u64) -> Option<Box<Node>> {
        let n = self.table.remove(&ino)?;
        for k in &n.names {
            if self.by_name.get(k) == Some(&ino) {
                self.by_name.remove(k);
            }
        }
        if n.names.is_empty() {
            if let Some(b) = self.copied_rev.remove(&ino) {
                self.copied.remove(&b);
            }
        }
        Some(n)
    }

    /// Gives memory back once the maps are much emptier than they were
    /// (a hash map never shrinks by itself); true if they shrank, when
    /// the heap is worth trimming too ([`sys::trim_heap`], without locks).
    pub(super) fn shrink(&mut self) -> bool {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
            if m.capacity() > 1024 && m.len() < m.capacity() / 4 {
                m.shrink_to_fit();
            }
        }
        let before = self.table.capacity();
        shrink(&mut self.table);
        shrink(&mut self.by_name);
        if self.table.capacity() == before {
            return false;
        }
        tracing::debug!(
            nodes = self.table.len(),
            names = self.by_name.len(),
            "node table shrunk"
        );
        true
    }
}

/// Inode group -> entry numbers of its names, within one layer.
pub(super) type LinkGroups = HashMap<u32, Vec<u32>>;

fn is_dir(r: &Resolved) -> bool {
    r.is_dir()
}

/// What backs a lower entry resolved to `r` (`idx`: the index of each layer).
pub(super) fn lower_backing(layers: &[crate::layer::Layer], r: &Resolved) -> Backing {
    match r {
        Resolved::Leaf((l, e)) => Backing::LowerFile {
            layer: *l,
            group: layers[*l as usize].index.entry(*e).group,
        },
        Resolved::Dir(srcs) => {
            let (layer, entry) = srcs[0];
            Backing::LowerDir { layer, entry }
        }
    }
}

impl Vfs {
    /// (kind, upper, lower) of node `ino`.
    pub(super) fn state(&self, ino: u64) -> VResult<(Kind, bool, Option<Resolved>)> {
        let nodes = self.nodes.read();
        let n = nodes.node(ino)?;
        Ok((n.kind, n.place.upper(), n.place.lower().cloned()))
    }

    pub(super) fn with_node<T>(&self, ino: u64, f: impl FnOnce(&mut Node) -> T) -> VResult<T> {
        Ok(f(self.nodes.write().node_mut(ino)?))
    }

    /// The path of node `ino` in the upper branch (via its first name).
    pub(super) fn upath(&self, ino: u64) -> VResult<PathBuf> {
        let up = self.up()?;
        let nodes = self.nodes.read();
        let mut comps: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        while cur != crate::fs::ROOT_INO {
            let n = nodes.node(cur)?;
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
    pub(super) fn lower_child(&self, lower: &Option<Resolved>, name: &[u8]) -> Option<Resolved> {
        match lower {
            Some(Resolved::Dir(srcs)) => {
                crate::layer::list_ahead(&self.layers, srcs);
                resolve_child(&self.layers, srcs, name)
            }
            _ => None,
        }
    }

    /// The lower directory redirect `r` of a branch directory points at
    /// (its parent's lower part `plower`): an absolute path from the
    /// layers' root, or a name in the parent's lower directories.
    fn redirected(&self, plower: &Option<Resolved>, r: &[u8]) -> Option<Resolved> {
        if r.first() != Some(&b'/') {
            return self.lower_child(plower, r);
        }
        let mut cur = Some(crate::union::root(&self.layers));
        for c in r.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = Some(self.lower_child(&cur, c)?);
        }
        cur
    }

    /// The absolute path in the layers of directory node `ino`'s lower
    /// content (`/a/b`): its names up to the root, where an ancestor of the
    /// branch carries a redirect, through that redirect.
    pub(super) fn lower_origin(&self, ino: u64) -> VResult<Vec<u8>> {
        let up = self.up()?;
        let mut comps: Vec<Vec<u8>> = Vec::new();
        let mut cur = ino;
        while cur != crate::fs::ROOT_INO {
            let (parent, name) = self
                .nodes
                .read()
                .node(cur)?
                .names
                .first()
                .cloned()
                .ok_or(libc::ENOENT)?;
            let redirect = match self.state(cur)?.1 {
                true => up.redirect_of(&self.upath(cur)?),
                false => None,
            };
            match redirect {
                Some(r) if r.first() == Some(&b'/') => {
                    comps.push(r[1..].to_vec());
                    break;
                }
                Some(r) => comps.push(r),
                None => comps.push(name.to_vec()),
            }
            cur = parent;
        }
        comps.reverse();
        let mut out = Vec::new();
        for c in comps.iter().filter(|c| !c.is_empty()) {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Ok(out)
    }

    /// Does a lower layer show something at `name` in directory `parent`
    /// (so that deleting it there needs a whiteout)?
    pub(super) fn lower_has(&self, parent: u64, name: &[u8]) -> VResult<bool> {
        let (_, _, lower) = self.state(parent)?;
        Ok(self.lower_child(&lower, name).is_some())
    }

    /// Resolves `name` in directory `parent` to a node, creating it the
    /// first time.
    pub(super) fn child_ino(&self, parent: u64, name: &[u8]) -> VResult<u64> {
        let key = (parent, Box::<[u8]>::from(name));
        if let Some(&ino) = self.nodes.read().by_name.get(&key) {
            return Ok(ino);
        }
        if classify_name(name) != NameClass::Plain {
            return Err(libc::ENOENT.into());
        }
        let (kind, upper, lower) = self.state(parent)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR.into());
        }
        let found = if upper {
            self.find_upper(parent, &lower, name)
        } else {
            self.lower_child(&lower, name)
                .map(|r| self.found_lower(r))
                .ok_or(libc::ENOENT.into())
        };
        self.lower_listed(&lower)?;
        Ok(self.intern(parent, name, found?))
    }

    /// EIO if a directory layer could not list a directory of `lower` (a
    /// lazy index shows it empty, and the name looked up there or the
    /// listing would be wrong).
    pub(super) fn lower_listed(&self, lower: &Option<Resolved>) -> VResult<()> {
        let Some(Resolved::Dir(srcs)) = lower.as_ref().filter(|_| self.lazy_layers) else {
            return Ok(());
        };
        for &(l, d) in srcs {
            let idx = &self.layers[l as usize].index;
            let e = idx.entry(d);
            if idx.is_lazy() && idx.failed(&e).is_some() {
                return Err(libc::EIO.into());
            }
            if e.is_opaque() {
                break;
            }
        }
        Ok(())
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
            Ok(st) if up.is_whiteout_stat(&st) => Err(libc::ENOENT.into()),
            Ok(st) => {
                let kind = up.meta_of(&p, &st).kind;
                // Only a directory has a redirect to read (one xattr read
                // per lookup of a branch directory, none for its files).
                let redirect = (kind == Kind::Dir).then(|| up.redirect_of(&p));
                let lower = match redirect {
                    // A renamed directory: its lower content is where the
                    // redirect points, not at its name.
                    Some(Some(r)) => self
                        .redirected(plower, &r)
                        .filter(is_dir)
                        .filter(|_| !up.is_opaque(&p)),
                    Some(None) => self
                        .lower_child(plower, name)
                        .filter(is_dir)
                        .filter(|_| !up.is_opaque(&p) && !up.has_whiteout(&pp, name)),
                    None => None,
                };
                Ok(Found {
                    kind,
                    place: lower.map_or(Place::Upper, Place::Merged),
                    upper_ino: Some(st.st_ino),
                })
            }
            Err(libc::ENOENT) => match self.lower_child(plower, name) {
                None => Err(libc::ENOENT.into()),
                Some(_) if up.has_whiteout(&pp, name) => Err(libc::ENOENT.into()),
                Some(r) => Ok(self.found_lower(r)),
            },
            Err(e) => Err(err!(e, "lookup of {} in the branch", p.display())),
        }
    }

    /// A name only the lower layers have, resolved to `r`.
    fn found_lower(&self, r: Resolved) -> Found {
        Found {
            kind: self.entry_of(r.meta_source(&self.layers)).kind,
            place: Place::Lower(r),
            upper_ino: None,
        }
    }

    /// The inode number for `found` as `name` in `parent`, making its
    /// node if it has none: the number follows from what backs it
    /// (`ino_of`), so a name found again after its node was dropped, and
    /// every name of a hard link, get the same one. Counts no lookup.
    pub(super) fn intern(&self, parent: u64, name: &[u8], found: Found) -> u64 {
        let key = (parent, Box::<[u8]>::from(name));
        if let Some(&ino) = self.nodes.read().by_name.get(&key) {
            return ino;
        }
        let backing = match &found.place {
            Place::Lower(r) => Some(lower_backing(&self.layers, r)),
            Place::Merged(r) if found.kind == Kind::Dir => Some(lower_backing(&self.layers, r)),
            _ => found
                .upper_ino
                .or_else(|| {
                    let p = child(&self.upath(parent).ok()?, name);
                    sys::lstat(&p).ok().map(|st| st.st_ino)
                })
                .map(Backing::Branch),
        };
        let mut nodes = self.nodes.write();
        if let Some(&ino) = nodes.by_name.get(&key) {
            return ino;
        }
        let ino = match backing {
            Some(Backing::Branch(b)) => nodes.branch_ino(b),
            Some(b) => ino_of(b),
            // Made by this mount and gone again before it was read back:
            // a number no backing gives.
            None => {
                nodes.spare += 1;
                UPPER_TAG | (1 << 62) | nodes.spare
            }
        };
        let stale = match nodes.table.get_mut(&ino) {
            // Another name of the same object (a hard link, or the lower
            // entry of a node since copied up): the node is authoritative.
            Some(n) if n.kind == found.kind && (!found.place.upper() || n.place.upper()) => {
                if found.kind == Kind::Dir {
                    // A directory has one name: a stale one goes.
                    Some(std::mem::replace(&mut n.names, vec![key.clone()]))
                } else {
                    n.names.push(key.clone());
                    None
                }
            }
            // The number of an object that is gone (a branch inode number
            // reused while the kernel still holds the old node): the node
            // becomes the new object and keeps the kernel's count, which
            // the old object's FORGET will take back.
            Some(n) => {
                let lookups = n.lookups;
                let old = std::mem::replace(
                    &mut **n,
                    Node::new(Some(key.clone()), found.kind, found.place),
                );
                n.lookups = lookups;
                Some(old.names)
            }
            None => {
                nodes.table.insert(
                    ino,
                    Box::new(Node::new(Some(key.clone()), found.kind, found.place)),
                );
                None
            }
        };
        for k in stale.iter().flatten() {
            if nodes.by_name.get(k) == Some(&ino) {
                nodes.by_name.remove(k);
            }
        }
        nodes.by_name.insert(key, ino);
        drop(nodes);
        if stale.is_some() {
            self.ino_files.lock().pop(&ino);
        }
        ino
    }

    /// Resolves `name` in `parent` and counts one lookup of the node (an
    /// entry about to be handed to the kernel), with `ns` held: counted
    /// under the table's lock, so no FORGET can drop it in between.
    fn counted_child(&self, parent: u64, name: &[u8]) -> VResult<u64> {
        for _ in 0..3 {
            let ino = self.child_ino(parent, name)?;
            let mut nodes = self.nodes.write();
            if let Ok(n) = nodes.node_mut(ino) {
                n.lookups += 1;
                n.forgotten = false;
                return Ok(ino);
            }
            // A name whose node went: resolved again.
            let key = (parent, Box::<[u8]>::from(name));
            if nodes.by_name.get(&key) == Some(&ino) {
                nodes.by_name.remove(&key);
            }
        }
        Err(libc::ESTALE.into())
    }

    /// The attributes of what `name` in directory `dir` is now, or `None`
    /// if it is gone: for readdirplus, whose entries the kernel links to
    /// their names. Counts a lookup of it (see [`Vfs::hand_out`]).
    pub fn current_entry(&self, dir: u64, name: &[u8]) -> Option<Attr> {
        let _r = self.reading();
        let ino = self.counted_child(dir, name).ok()?;
        match self.attr(ino) {
            Ok(a) => Some(a),
            Err(_) => {
                self.forget_locked(&[(ino, 1)]);
                None
            }
        }
    }

    /// Records that node `ino` is now the upper file at `p` (after a
    /// copy-up or a new link), so other names of that file find it: a
    /// copied-up node keeps its number.
    pub(super) fn note_upper_ino(&self, ino: u64, p: &Path) {
        if let Ok(st) = sys::lstat(p) {
            self.nodes.write().note_copied(st.st_ino, ino);
        }
    }

    /// Looks up `name` in directory `parent`: the attributes of the child,
    /// whose node counts one more lookup (the kernel's LOOKUP).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VResult<Attr> {
        let _r = self.reading();
        let ino = self.counted_child(parent, name)?;
        self.attr(ino)
            .inspect_err(|_| self.forget_locked(&[(ino, 1)]))
    }

    /// Resolves a relative path from the root through the merged view.
    fn lookup_path(&self, path: &[u8]) -> VResult<u64> {
        let mut cur = ROOT_INO;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.child_ino(cur, c)?;
        }
        Ok(cur)
    }

    /// The names of lower file `ino` (entry `e` of `src`) that the merged
    /// view shows, resolved through the view. Only groups with more than
    /// one name in their layer need work.
    pub(super) fn group_names(
        &self,
        ino: u64,
        src: Source,
        e: &crate::layer::index::Entry,
    ) -> Vec<Vec<u8>> {
        if e.nlink <= 1 {
            return Vec::new();
        }
        let idx = &self.layers[src.0 as usize].index;
        let groups = self.link_groups(src.0);
        let mut out = Vec::new();
        for &i in groups.get(&e.group).map(Vec::as_slice).unwrap_or(&[]) {
            let path = idx.path(i);
            if self.lookup_path(&path).is_ok_and(|i| i == ino) {
                out.push(path);
            }
        }
        out
    }

    /// The number of names of a hard-linked lower inode that the merged
    /// view shows (an upper layer or the rw branch may hide or replace
    /// some), cached until the namespace changes.
    pub(super) fn visible_nlink(
        &self,
        ino: u64,
        src: Source,
        e: &crate::layer::index::Entry,
    ) -> u32 {
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

    pub(super) fn kind_of(&self, ino: u64) -> VResult<Kind> {
        Ok(self.nodes.read().node(ino)?.kind)
    }

    pub(super) fn leaf(&self, ino: u64) -> VResult<(Source, crate::layer::index::Entry)> {
        match self.state(ino)?.2 {
            Some(Resolved::Leaf(src)) => Ok((src, self.entry_of(src))),
            Some(Resolved::Dir(_)) => Err(libc::EISDIR.into()),
            None => Err(libc::ESTALE.into()),
        }
    }

    /// Has node `ino` no name left in the merged view (an open file that
    /// was unlinked or renamed over)?
    pub(super) fn nameless(&self, ino: u64) -> bool {
        let nodes = self.nodes.read();
        nodes.node(ino).is_ok_and(|n| n.names.is_empty())
    }
}
