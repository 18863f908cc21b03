//! The inode table and name resolution: the nodes (one per inode number,
//! never dropped), how a (parent, name) becomes a node (the branch first,
//! its whiteouts and opaque markers, then the lower layers through
//! `union::resolve_child`), and the hard-link groups of lower files with
//! the nlink the merged view shows for them.
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
    /// `st_ino` of an upper non-directory: its hard links share a node.
    pub(super) upper_ino: Option<u64>,
}

#[derive(Default)]
pub(super) struct Nodes {
    /// Node of inode number `i + 1`.
    pub(super) table: Vec<Node>,
    pub(super) by_name: HashMap<(u64, Box<[u8]>), u64>,
    pub(super) by_group: HashMap<(u16, u32), u64>,
    /// Upper non-directories by their `st_ino` in the branch.
    pub(super) by_upper_ino: HashMap<u64, u64>,
}

impl Nodes {
    /// The node of inode number `ino`; ESTALE for a number this mount never
    /// gave out (0, or past the table).
    pub(super) fn node(&self, ino: u64) -> VResult<&Node> {
        self.table
            .get((ino as usize).wrapping_sub(1))
            .ok_or_else(|| libc::ESTALE.into())
    }

    /// [`Nodes::node`], to change.
    pub(super) fn node_mut(&mut self, ino: u64) -> VResult<&mut Node> {
        self.table
            .get_mut((ino as usize).wrapping_sub(1))
            .ok_or_else(|| libc::ESTALE.into())
    }
}

/// Inode group -> entry numbers of its names, within one layer.
pub(super) type LinkGroups = HashMap<u32, Vec<u32>>;

fn is_dir(r: &Resolved) -> bool {
    r.is_dir()
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
                .table
                .get((cur as usize).wrapping_sub(1))
                .ok_or(libc::ESTALE)?
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
                    upper_ino: (kind != Kind::Dir).then_some(st.st_ino),
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

    /// The inode number for `found` as `name` in `parent`, allocating one
    /// if this is the first time.
    pub(super) fn intern(&self, parent: u64, name: &[u8], found: Found) -> u64 {
        let key = (parent, Box::<[u8]>::from(name));
        let mut nodes = self.nodes.write();
        if let Some(&ino) = nodes.by_name.get(&key) {
            return ino;
        }
        let group_key = match &found.place {
            Place::Lower(Resolved::Leaf((l, e))) => {
                Some((*l, self.layers[*l as usize].index.entry(*e).group))
            }
            _ => None,
        };
        let shared = match (group_key, found.upper_ino) {
            (Some(gk), _) => nodes.by_group.get(&gk).copied(),
            // An upper st_ino may be reused by a new file once the old
            // one is gone: only a node that still has names shares it.
            (None, Some(ui)) => nodes.by_upper_ino.get(&ui).copied().filter(|&i| {
                nodes
                    .node(i)
                    .is_ok_and(|n| n.place.upper() && n.kind == found.kind && !n.names.is_empty())
            }),
            _ => None,
        };
        // The maps hold only numbers of the table, which never shrinks.
        if let Some(ino) = shared {
            if let Ok(n) = nodes.node_mut(ino) {
                n.names.push(key.clone());
                nodes.by_name.insert(key, ino);
                return ino;
            }
        }
        nodes.table.push(Node {
            names: vec![key.clone()],
            kind: found.kind,
            place: found.place,
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

    /// The attributes of what `name` in directory `dir` is now, if it was
    /// resolved before (every entry of a listing was): for readdirplus,
    /// whose entries the kernel links to their names.
    pub fn current_entry(&self, dir: u64, name: &[u8]) -> Option<Attr> {
        let _r = self.reading();
        let ino = *self
            .nodes
            .read()
            .by_name
            .get(&(dir, Box::<[u8]>::from(name)))?;
        self.attr(ino).ok()
    }

    /// Records that node `ino` is now the upper file at `p` (after a
    /// copy-up or a new link), so other names of that file find it.
    pub(super) fn note_upper_ino(&self, ino: u64, p: &Path) {
        if let Ok(st) = sys::lstat(p) {
            self.nodes.write().by_upper_ino.insert(st.st_ino, ino);
        }
    }

    /// Looks up `name` in directory `parent`: the attributes of the child.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VResult<Attr> {
        let _r = self.reading();
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
        nodes
            .table
            .get(ino as usize - 1)
            .is_some_and(|n| n.names.is_empty())
    }
}
