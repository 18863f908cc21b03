//! The merge rules of a union of layers, as pure functions over layer
//! indexes: the whiteout grammar, resolving one name in a merged directory,
//! and listing a merged directory. No I/O, no FUSE: every rule here is
//! unit-tested on indexes built in memory.
//!
//! Layers are numbered by their position in the stack, **0 = top**. A merged
//! directory is described by its *sources*: the (layer, entry) pairs of the
//! directories that contribute to it, top first, ending at the first opaque
//! one. If all of those are implicit, the lower directories down to the first
//! explicit one follow: they only give the merged directory its metadata
//! (an opaque marker hides a directory's lower content, not the directory),
//! and listing and lookup stop at the first opaque source.
//!
//! A lazy index ([`crate::layer::index::lazy`]) learns that a directory
//! has an AUFS opaque marker only when it lists that directory, so its
//! sources may go on below it: listing and lookup read each source's
//! opaque flag after listing it, and stop there.

pub mod inspect;

use std::collections::BTreeMap;

use crate::layer::index::{Entry, Index, Kind};

/// An entry of one layer: (layer position, 0 = top; entry number).
pub type Source = (u16, u32);

/// What a name resolves to in the merged view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A directory, merged from these sources (top first, non-empty).
    Dir(Vec<Source>),
    /// A non-directory: the topmost layer's entry wins alone.
    Leaf(Source),
}

impl Resolved {
    /// The entry whose metadata the merged entry shows. For a directory
    /// that is the topmost source that has a tar entry of its own (a
    /// directory implied only by deeper paths keeps the metadata of the
    /// lower layer that created it), else the topmost source.
    pub fn meta_source(&self, layers: &[impl AsRef<Index>]) -> Source {
        match self {
            Resolved::Leaf(s) => *s,
            Resolved::Dir(srcs) => srcs
                .iter()
                .copied()
                .find(|&(l, e)| !layers[l as usize].as_ref().entry(e).is_implicit())
                .unwrap_or(srcs[0]),
        }
    }

    /// Is it a (merged) directory?
    pub fn is_dir(&self) -> bool {
        matches!(self, Resolved::Dir(_))
    }
}

/// How far the merge of one name has got, walking layers top first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// Lower layers may still contribute entries; `meta`: a source with
    /// its own tar entry has been found.
    Open { meta: bool },
    /// Below an opaque directory, all sources so far implicit: lower
    /// directories are wanted for their metadata only.
    MetaOnly,
    /// Settled: lower layers are not consulted any more.
    Done,
}

/// Folds one layer's entry `e` for a name into the state of that name,
/// walking layers top first from `Walk::Open { meta: false }`. The name is
/// settled by a whiteout, a non-directory, an opaque directory (once the
/// metadata source is known), or a non-directory under a directory.
fn fold(state: &mut Option<Resolved>, walk: Walk, src: Source, e: &Entry) -> Walk {
    match (state.as_mut(), e.kind) {
        (None, Kind::Whiteout) => Walk::Done,
        (None, Kind::Dir) => {
            *state = Some(Resolved::Dir(vec![src]));
            dir_walk(walk, e)
        }
        (None, _) => {
            *state = Some(Resolved::Leaf(src));
            Walk::Done
        }
        (Some(Resolved::Dir(srcs)), Kind::Dir) => {
            srcs.push(src);
            dir_walk(walk, e)
        }
        // A whiteout or a non-directory below a directory ends the merge.
        (Some(_), _) => Walk::Done,
    }
}

/// The walk after directory `e` joined the sources.
fn dir_walk(walk: Walk, e: &Entry) -> Walk {
    let meta = !e.is_implicit() || matches!(walk, Walk::Open { meta: true });
    match walk {
        Walk::Open { .. } if !e.is_opaque() => Walk::Open { meta },
        Walk::Done => Walk::Done,
        _ if meta => Walk::Done,
        _ => Walk::MetaOnly,
    }
}

/// Resolves `name` in the merged directory made of `sources`.
pub fn resolve_child(
    layers: &[impl AsRef<Index>],
    sources: &[Source],
    name: &[u8],
) -> Option<Resolved> {
    let mut state = None;
    let mut walk = Walk::Open { meta: false };
    for &(l, d) in sources {
        let idx = layers[l as usize].as_ref();
        let dir = idx.entry(d);
        if let Some(c) = idx.lookup(&dir, name) {
            walk = fold(&mut state, walk, (l, c), &idx.entry(c));
            if walk == Walk::Done {
                break;
            }
        }
        // Read again after the lookup: a lazy index knows a directory's
        // AUFS opaque marker (a name inside it) once it has listed it.
        if idx.entry(d).is_opaque() {
            break;
        }
    }
    state
}

/// Lists the merged directory made of `sources`, sorted by name. Whiteouts
/// and hidden lower entries are left out.
pub fn list_dir(layers: &[impl AsRef<Index>], sources: &[Source]) -> Vec<(Vec<u8>, Resolved)> {
    let mut names: BTreeMap<&[u8], (Option<Resolved>, Walk)> = BTreeMap::new();
    for &(l, d) in sources {
        let idx = layers[l as usize].as_ref();
        let dir = idx.entry(d);
        for c in idx.children(&dir) {
            let ce = idx.entry(c);
            let slot = names
                .entry(idx.name(&ce))
                .or_insert((None, Walk::Open { meta: false }));
            if slot.1 != Walk::Done {
                slot.1 = fold(&mut slot.0, slot.1, (l, c), &ce);
            }
        }
        // Read again after the listing (see `resolve_child`).
        if idx.entry(d).is_opaque() {
            break;
        }
    }
    names
        .into_iter()
        .filter_map(|(name, (state, _))| state.map(|r| (name.to_vec(), r)))
        .collect()
}

/// Resolves a relative path from the merged root. Used by tests and the
/// debugging commands; the filesystem resolves one component at a time.
pub fn resolve_path(layers: &[impl AsRef<Index>], path: &[u8]) -> Option<Resolved> {
    let mut cur = root(layers);
    for comp in path
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        match cur {
            Resolved::Dir(srcs) => cur = resolve_child(layers, &srcs, comp)?,
            Resolved::Leaf(_) => return None,
        }
    }
    Some(cur)
}

/// The merged root directory: every layer's root, top first, down to the
/// first opaque one (and on to the first explicit one, for metadata).
pub fn root(layers: &[impl AsRef<Index>]) -> Resolved {
    let mut srcs = Vec::with_capacity(layers.len());
    let mut walk = Walk::Open { meta: false };
    for (l, idx) in layers.iter().enumerate() {
        srcs.push((l as u16, 0));
        walk = dir_walk(walk, &idx.as_ref().entry(0));
        if walk == Walk::Done {
            break;
        }
    }
    Resolved::Dir(srcs)
}
