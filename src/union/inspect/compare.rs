//! Two merged views compared (`layerfs diff --image A --image B`): what
//! B adds, changes and deletes against A, as `docker diff` writes it, with
//! files that moved unchanged shown as renames and hard links named.
//! Pure: both views walked with [`list_dir`].

use std::collections::BTreeMap;

use super::{join, Change};
use crate::layer::index::{Entry, Index, Kind};
use crate::union::{list_dir, root, Resolved};

/// One line of a two-view diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewChange {
    /// Added, changed or deleted (`docker diff`'s A/C/D; a directory
    /// whose contents changed counts as changed).
    Plain(Change, Vec<u8>),
    /// A file of A that B has under another name only, unchanged (same
    /// type, mode, owner and content): (from, to).
    Renamed(Vec<u8>, Vec<u8>),
}

/// An image's merged view: its layers (top first) and their tars.
pub struct View<'a, L: AsRef<Index>> {
    /// Top first.
    pub layers: &'a [L],
    /// Each layer's tar (`None` for a layer without one), top first.
    pub tars: &'a [Option<&'a [u8]>],
}

/// One entry of a walked view.
struct Leaf {
    kind: Kind,
    mode: u32,
    owner: (u32, u32),
    size: u64,
    /// Content: file data, link target, device number.
    data: Vec<u8>,
    /// (layer, inode group) of a file with more than one name.
    group: Option<(u16, u32)>,
}

fn walk<L: AsRef<Index>>(v: &View<'_, L>) -> BTreeMap<Vec<u8>, Leaf> {
    let mut out = BTreeMap::new();
    let r = root(v.layers);
    add(v, Vec::new(), &r, &mut out);
    out
}

fn add<L: AsRef<Index>>(
    v: &View<'_, L>,
    path: Vec<u8>,
    r: &Resolved,
    out: &mut BTreeMap<Vec<u8>, Leaf>,
) {
    let (l, e) = r.meta_source(v.layers);
    let idx = v.layers[l as usize].as_ref();
    let entry = idx.entry(e);
    out.insert(path.clone(), leaf(idx, v.tars[l as usize], l, &entry));
    if let Resolved::Dir(srcs) = r {
        for (name, c) in list_dir(v.layers, srcs) {
            add(v, join(&path, &name), &c, out);
        }
    }
}

fn leaf(idx: &Index, tar: Option<&[u8]>, l: u16, e: &Entry) -> Leaf {
    let data = match e.kind {
        Kind::File => tar
            .and_then(|t| t.get(e.data_off as usize..(e.data_off + e.size) as usize))
            .unwrap_or_default()
            .to_vec(),
        Kind::Symlink => idx.target(e).to_vec(),
        Kind::Char | Kind::Block => e.rdev().to_le_bytes().to_vec(),
        _ => Vec::new(),
    };
    Leaf {
        kind: e.kind,
        mode: e.mode,
        owner: (e.uid, e.gid),
        size: e.size,
        data,
        group: (e.kind == Kind::File && e.nlink > 1).then_some((l, e.group)),
    }
}

/// What B changes against A, sorted by path (renames by their new
/// path); the root is left out, as in `docker diff`.
pub fn compare_views<L: AsRef<Index>>(a: &View<'_, L>, b: &View<'_, L>) -> Vec<ViewChange> {
    let (wa, wb) = (walk(a), walk(b));
    let mut changed: Vec<(Change, Vec<u8>)> = Vec::new();
    for (p, la) in &wa {
        match wb.get(p) {
            None => changed.push((Change::Deleted, p.clone())),
            Some(lb) if !same(la, lb) => changed.push((Change::Changed, p.clone())),
            Some(_) => {}
        }
    }
    for p in wb.keys() {
        if !wa.contains_key(p) {
            changed.push((Change::Added, p.clone()));
        }
    }
    // A directory whose contents changed is changed too.
    let mut parents = Vec::new();
    for (_, p) in &changed {
        let mut q = p.as_slice();
        while let Some(i) = q.iter().rposition(|&c| c == b'/') {
            q = &q[..i];
            parents.push(q.to_vec());
        }
    }
    for q in parents {
        if wa.contains_key(&q) && wb.contains_key(&q) && !changed.iter().any(|(_, p)| *p == q) {
            changed.push((Change::Changed, q));
        }
    }
    // Renames: a deleted non-directory and an added one that are the
    // same, each the only candidate of the other.
    let key = |l: &Leaf| (l.kind as u8, l.mode, l.owner, l.size, l.data.clone());
    let mut deleted: BTreeMap<_, Vec<Vec<u8>>> = BTreeMap::new();
    let mut added: BTreeMap<_, Vec<Vec<u8>>> = BTreeMap::new();
    for (c, p) in &changed {
        match c {
            Change::Deleted if wa[p].kind != Kind::Dir => {
                deleted.entry(key(&wa[p])).or_default().push(p.clone())
            }
            Change::Added if wb[p].kind != Kind::Dir => {
                added.entry(key(&wb[p])).or_default().push(p.clone())
            }
            _ => {}
        }
    }
    let mut renames = Vec::new();
    for (k, from) in &deleted {
        if let (Some(to), [from]) = (added.get(k), from.as_slice()) {
            if let [to] = to.as_slice() {
                renames.push((from.clone(), to.clone()));
            }
        }
    }
    let mut out: Vec<ViewChange> = changed
        .into_iter()
        .filter(|(c, p)| {
            !renames
                .iter()
                .any(|(f, t)| (*c == Change::Deleted && f == p) || (*c == Change::Added && t == p))
        })
        .map(|(c, p)| ViewChange::Plain(c, p))
        .collect();
    out.extend(renames.into_iter().map(|(f, t)| ViewChange::Renamed(f, t)));
    out.sort_by(|x, y| sort_key(x).cmp(sort_key(y)));
    out
}

fn sort_key(c: &ViewChange) -> &[u8] {
    match c {
        ViewChange::Plain(_, p) | ViewChange::Renamed(_, p) => p,
    }
}

fn same(a: &Leaf, b: &Leaf) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.owner == b.owner
        && a.size == b.size
        && a.data == b.data
}

/// The other names, in view `v`, of the hard-linked file at `path`
/// (empty if it has one name), sorted.
pub fn link_names<L: AsRef<Index>>(v: &View<'_, L>, path: &[u8]) -> Vec<Vec<u8>> {
    let w = walk(v);
    let Some(group) = w.get(path).and_then(|l| l.group) else {
        return Vec::new();
    };
    w.iter()
        .filter(|(p, l)| l.group == Some(group) && p.as_slice() != path)
        .map(|(p, _)| p.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::build_index;
    use tar::{EntryType, Header};

    fn layer(entries: &[(&str, &str)]) -> (Index, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        for &(name, data) in entries {
            let mut h = Header::new_gnu();
            let dir = name.ends_with('/');
            let link = data.strip_prefix("=>");
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_size(if dir || link.is_some() {
                0
            } else {
                data.len() as u64
            });
            h.set_entry_type(match (dir, link) {
                (true, _) => EntryType::Directory,
                (_, Some(_)) => EntryType::Link,
                _ => EntryType::Regular,
            });
            if let Some(t) = link {
                h.set_link_name(t).unwrap();
                b.append_data(&mut h, name, &b""[..]).unwrap();
            } else {
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
        }
        let tar = b.into_inner().unwrap();
        (
            Index::from_bytes(build_index(&tar).unwrap().0, "t").unwrap(),
            tar,
        )
    }

    #[test]
    fn adds_changes_deletes_and_renames() {
        let a = layer(&[
            ("d/", ""),
            ("d/keep", "k"),
            ("d/old", "moved data"),
            ("gone", "g"),
            ("f", "1"),
        ]);
        let b = layer(&[
            ("d/", ""),
            ("d/keep", "k"),
            ("e/", ""),
            ("e/new", "moved data"),
            ("f", "2"),
            ("h", "hh"),
            ("h2", "=>h"),
        ]);
        let (ta, tb) = ([Some(&a.1[..])], [Some(&b.1[..])]);
        let (la, lb) = ([&a.0], [&b.0]);
        let va = View {
            layers: &la[..],
            tars: &ta,
        };
        let vb = View {
            layers: &lb[..],
            tars: &tb,
        };
        let got = compare_views(&va, &vb);
        use Change::*;
        let p = |c, s: &str| ViewChange::Plain(c, s.as_bytes().to_vec());
        assert_eq!(
            got,
            [
                p(Changed, "d"),
                p(Added, "e"),
                ViewChange::Renamed(b"d/old".to_vec(), b"e/new".to_vec()),
                p(Changed, "f"),
                p(Deleted, "gone"),
                p(Added, "h"),
                p(Added, "h2"),
            ]
        );
        assert_eq!(link_names(&vb, b"h2"), [b"h".to_vec()]);
        assert!(link_names(&vb, b"f").is_empty());
    }
}
