//! Per-layer changes: what one layer adds, changes or deletes in the view
//! of the layers below it (`layers --diff`, `diff`, `commit`).

use super::join;
use crate::layer::index::{Index, Kind};
use crate::union::{list_dir, resolve_child, root, Resolved};

/// A change a layer makes to the view of the layers below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A path the view of the layers below lacks.
    Added,
    /// A path the view below has, replaced or re-stated (a directory the layer adds to counts).
    Changed,
    /// A path of the view below that a whiteout or an opaque directory removes.
    Deleted,
}

impl Change {
    /// The letter of `diff` output: `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Changed => 'C',
            Change::Deleted => 'D',
        }
    }
}

/// One line of `layers --diff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathChange {
    /// What the layer does to the path.
    pub change: Change,
    /// The path from the image root, no leading `/`.
    pub path: Vec<u8>,
    /// The kind the path has after the layer (before it, for a deletion).
    pub kind: Kind,
}

/// The changes layer `l` makes to the merged view of the layers below it,
/// sorted by path: `A` a path the lower view lacks, `C` one it has (a
/// directory that the layer re-states or adds to counts as changed, as in
/// `docker diff`), `D` a path a whiteout or an opaque directory removes
/// (whiteouts of paths the lower view does not have are left out).
pub fn layer_changes(layers: &[impl AsRef<Index>], l: u16) -> Vec<PathChange> {
    let lower = &layers[l as usize + 1..];
    let idx = layers[l as usize].as_ref();
    let mut out = Vec::new();
    let lower_root = (!lower.is_empty()).then(|| root(lower));
    changes_in(idx, 0, &[], lower, lower_root.as_ref(), &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn changes_in(
    idx: &Index,
    dir: u32,
    dir_path: &[u8],
    lower: &[impl AsRef<Index>],
    lower_dir: Option<&Resolved>,
    out: &mut Vec<PathChange>,
) {
    let d = idx.entry(dir);
    let lower_srcs = match lower_dir {
        Some(Resolved::Dir(s)) => Some(s.as_slice()),
        _ => None,
    };
    if d.is_opaque() {
        if let Some(srcs) = lower_srcs {
            for (name, r) in list_dir(lower, srcs) {
                if idx.lookup(&d, &name).is_none() {
                    out.push(PathChange {
                        change: Change::Deleted,
                        path: join(dir_path, &name),
                        kind: kind_of(lower, &r),
                    });
                }
            }
        }
    }
    for c in idx.children(&d) {
        let e = idx.entry(c);
        let name = idx.name(&e);
        let path = join(dir_path, name);
        let below = lower_srcs.and_then(|s| resolve_child(lower, s, name));
        if e.kind == Kind::Whiteout {
            if let Some(b) = &below {
                out.push(PathChange {
                    change: Change::Deleted,
                    path,
                    kind: kind_of(lower, b),
                });
            }
            continue;
        }
        out.push(PathChange {
            change: if below.is_some() {
                Change::Changed
            } else {
                Change::Added
            },
            path: path.clone(),
            kind: e.kind,
        });
        if e.is_dir() {
            changes_in(idx, c, &path, lower, below.as_ref(), out);
        }
    }
}

fn kind_of(layers: &[impl AsRef<Index>], r: &Resolved) -> Kind {
    let (l, e) = r.meta_source(layers);
    layers[l as usize].as_ref().entry(e).kind
}
