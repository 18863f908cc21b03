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

use std::collections::BTreeMap;

use crate::index::{Entry, Index, Kind};

/// AUFS whiteout prefix.
pub const WH_PREFIX: &[u8] = b".wh.";
/// AUFS metadata prefix (`.wh..wh.plnk`, `.wh..wh.aufs`, ...).
pub const WH_META_PREFIX: &[u8] = b".wh..wh.";
/// Opaque directory marker.
pub const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// What a name in a layer tar means to the union.
#[derive(Debug, PartialEq, Eq)]
pub enum NameClass<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh.NAME`: hides NAME of lower layers.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the directory holding it hides all lower entries.
    Opaque,
    /// Other `.wh..wh.*` names: AUFS bookkeeping, never shown.
    Meta,
}

/// Classifies the last component of a path in a layer.
pub fn classify_name(name: &[u8]) -> NameClass<'_> {
    if name == WH_OPAQUE {
        NameClass::Opaque
    } else if name.starts_with(WH_META_PREFIX) {
        NameClass::Meta
    } else if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
        if hidden.is_empty() {
            NameClass::Meta
        } else {
            NameClass::Whiteout(hidden)
        }
    } else {
        NameClass::Plain
    }
}

/// Overlay's xattr namespaces: `trusted.overlay.*` (as root) and
/// `user.overlay.*` (overlayfs' `userxattr` mode).
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Is `name` an overlayfs bookkeeping xattr (never shown in the union)?
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What an object of an overlay-format lower directory means to the union,
/// besides being itself.
#[derive(Debug, PartialEq, Eq)]
pub enum OverlayMark {
    /// Nothing special.
    None,
    /// A whiteout: a character device 0:0, or a regular file carrying the
    /// `overlay.whiteout` xattr (newer kernels' form for nested overlays).
    Whiteout,
    /// A directory with `overlay.opaque` = "y": it hides lower content.
    Opaque,
}

/// Decodes kernel overlayfs' lower-layer markers from an object's kind,
/// device number and xattrs (the overlay ones are enough).
pub fn overlay_mark<'a>(
    kind: Kind,
    rdev: (u32, u32),
    xattrs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> OverlayMark {
    if kind == Kind::Char && rdev == (0, 0) {
        return OverlayMark::Whiteout;
    }
    for (name, value) in xattrs {
        let Some(key) = OVERLAY_XATTR_PREFIXES
            .iter()
            .find_map(|p| name.strip_prefix(*p))
        else {
            continue;
        };
        match (kind, key) {
            (Kind::Dir, b"opaque") if value == b"y" => return OverlayMark::Opaque,
            (Kind::File, b"whiteout") => return OverlayMark::Whiteout,
            _ => {}
        }
    }
    OverlayMark::None
}

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
        if dir.is_opaque() {
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
        if dir.is_opaque() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_marks() {
        let none: [(&[u8], &[u8]); 0] = [];
        assert_eq!(
            overlay_mark(Kind::Char, (0, 0), none),
            OverlayMark::Whiteout
        );
        assert_eq!(overlay_mark(Kind::Char, (1, 3), none), OverlayMark::None);
        assert_eq!(overlay_mark(Kind::Block, (0, 0), none), OverlayMark::None);
        let opq: [(&[u8], &[u8]); 1] = [(b"trusted.overlay.opaque", b"y")];
        assert_eq!(overlay_mark(Kind::Dir, (0, 0), opq), OverlayMark::Opaque);
        // Only on directories, and only "y" ("x": has xattr whiteouts).
        assert_eq!(overlay_mark(Kind::File, (0, 0), opq), OverlayMark::None);
        let x: [(&[u8], &[u8]); 1] = [(b"user.overlay.opaque", b"x")];
        assert_eq!(overlay_mark(Kind::Dir, (0, 0), x), OverlayMark::None);
        let u: [(&[u8], &[u8]); 2] = [(b"user.foo", b"y"), (b"user.overlay.opaque", b"y")];
        assert_eq!(overlay_mark(Kind::Dir, (0, 0), u), OverlayMark::Opaque);
        let wh: [(&[u8], &[u8]); 1] = [(b"trusted.overlay.whiteout", b"")];
        assert_eq!(overlay_mark(Kind::File, (0, 0), wh), OverlayMark::Whiteout);
        assert!(is_overlay_xattr(b"trusted.overlay.origin"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"user.overlayx"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
