//! The merged tree of an image as of one layer, with sizes and the change
//! that layer made to each entry (`layerfs tree`, as dive's file tree).
//! Pure: built from [`list_dir`] over the layers from that one down, and
//! [`layer_changes`] of that layer.

use std::collections::BTreeMap;

use super::{components, join, layer_changes, Change};
use crate::layer::index::{Index, Kind};
use crate::union::{list_dir, resolve_path, Resolved};

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    /// The entry's name (the root's: empty).
    pub name: Vec<u8>,
    /// Its type (for a deleted entry, the type it had).
    pub kind: Kind,
    /// File bytes: a file's size; a directory's, summed over everything
    /// below it (deleted entries not counted).
    pub size: u64,
    /// What the selected layer did to it (`None`: nothing).
    pub change: Option<Change>,
    /// A directory's entries (deleted ones included), by name.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Is this entry, or anything below it, changed by the layer?
    pub fn has_change(&self) -> bool {
        self.change.is_some() || self.children.iter().any(TreeNode::has_change)
    }

    /// Keeps only what the layer changed and the directories leading to it
    /// (sizes stay those of the whole tree).
    pub fn only_changed(&mut self) {
        self.children.retain(TreeNode::has_change);
        for c in &mut self.children {
            c.only_changed();
        }
    }

    /// The order of [`TreeNode::sort_by_size`]: largest first, then by
    /// name.
    pub fn size_order(a: &TreeNode, b: &TreeNode) -> std::cmp::Ordering {
        b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name))
    }

    /// Sorts every directory's entries by size, largest first (ties by name).
    pub fn sort_by_size(&mut self) {
        self.children.sort_by(TreeNode::size_order);
        for c in &mut self.children {
            c.sort_by_size();
        }
    }
}

/// The tree at `path` of the view of `layers` (top first) as of stack
/// position `top` (the view of `layers[top..]`), each entry marked with
/// the change layer `top` made to it; `None` if `path` is not in that view.
pub fn tree(layers: &[impl AsRef<Index>], top: u16, path: &[u8]) -> Option<TreeNode> {
    let view = &layers[top as usize..];
    let path = components(path).join(&b"/"[..]);
    let changes: BTreeMap<Vec<u8>, (Change, Kind)> = layer_changes(view, 0)
        .into_iter()
        .map(|c| (c.path, (c.change, c.kind)))
        .collect();
    let r = resolve_path(view, &path)?;
    let name = path
        .rsplit(|&c| c == b'/')
        .next()
        .unwrap_or_default()
        .to_vec();
    Some(node(view, &changes, name, path, &r))
}

fn node(
    view: &[impl AsRef<Index>],
    changes: &BTreeMap<Vec<u8>, (Change, Kind)>,
    name: Vec<u8>,
    path: Vec<u8>,
    r: &Resolved,
) -> TreeNode {
    let (l, e) = r.meta_source(view);
    let entry = view[l as usize].as_ref().entry(e);
    let change = changes.get(&path).map(|c| c.0);
    let mut out = TreeNode {
        name,
        kind: entry.kind,
        size: entry.size,
        change,
        children: Vec::new(),
    };
    if let Resolved::Dir(srcs) = r {
        for (child, cr) in list_dir(view, srcs) {
            let p = join(&path, &child);
            out.children.push(node(view, changes, child, p, &cr));
        }
        // What the layer deleted here: named by its changes, one level down.
        let prefix = if path.is_empty() {
            Vec::new()
        } else {
            [&path[..], b"/"].concat()
        };
        for (p, (c, k)) in changes.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            let rest = &p[prefix.len()..];
            if *c == Change::Deleted && !rest.is_empty() && !rest.contains(&b'/') {
                out.children.push(TreeNode {
                    name: rest.to_vec(),
                    kind: *k,
                    size: 0,
                    change: Some(Change::Deleted),
                    children: Vec::new(),
                });
            }
        }
        out.children.sort_by(|a, b| a.name.cmp(&b.name));
        out.size = out.children.iter().map(|c| c.size).sum();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::build_index;
    use tar::{EntryType, Header};

    fn layer(entries: &[(&str, &str)]) -> Index {
        let mut b = tar::Builder::new(Vec::new());
        for &(name, data) in entries {
            let mut h = Header::new_gnu();
            let dir = name.ends_with('/');
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_size(if dir { 0 } else { data.len() as u64 });
            h.set_entry_type(if dir {
                EntryType::Directory
            } else {
                EntryType::Regular
            });
            b.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
        Index::from_bytes(build_index(&b.into_inner().unwrap()).unwrap().0, "t").unwrap()
    }

    fn flat(n: &TreeNode, path: &str, out: &mut Vec<String>) {
        let p = format!("{path}/{}", String::from_utf8_lossy(&n.name));
        let mark = n.change.map(|c| c.letter()).unwrap_or(' ');
        out.push(format!("{mark} {} {}", n.size, p.trim_start_matches('/')));
        for c in &n.children {
            flat(c, &p, out);
        }
    }

    #[test]
    fn sizes_sum_up_and_the_layer_marks_its_changes() {
        let bottom = layer(&[("a/", ""), ("a/x", "12345"), ("a/y", "12"), ("b", "1")]);
        let top = layer(&[("a/", ""), ("a/.wh.y", ""), ("a/z", "123"), ("c", "1234")]);
        let stack = [top, bottom];
        let t = tree(&stack, 0, b"/").unwrap();
        let mut got = Vec::new();
        flat(&t, "", &mut got);
        assert_eq!(
            got,
            ["  13 ", "C 8 a", "  5 a/x", "D 0 a/y", "A 3 a/z", "  1 b", "A 4 c"]
        );
        // As of the bottom layer: its own view, everything added.
        let mut got = Vec::new();
        flat(&tree(&stack, 1, b"a").unwrap(), "", &mut got);
        assert_eq!(got, ["A 7 a", "A 5 a/x", "A 2 a/y"]);
        // Only what the top layer changed.
        let mut t = tree(&stack, 0, b"").unwrap();
        t.only_changed();
        t.sort_by_size();
        let mut got = Vec::new();
        flat(&t, "", &mut got);
        assert_eq!(got, ["  13 ", "C 8 a", "A 3 a/z", "D 0 a/y", "A 4 c"]);
        assert!(tree(&stack, 0, b"a/y").is_none());
    }
}
