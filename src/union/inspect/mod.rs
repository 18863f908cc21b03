//! Provenance and per-layer accounting of an image, as pure functions over
//! layer indexes (the debugging commands `ls`, `layers` and `layers --diff`
//! print what this module computes; nothing here does I/O).
//!
//! Layers are numbered as in [`crate::union`]: by stack position, **0 =
//! top**. The command line shows the other numbering (0 = bottom); the
//! conversion is the caller's.
//!
//! What hides an entry of layer `l` at path P is the nearest layer above
//! `l` that *cuts* it (see [`hidden_by`]): a whiteout, a non-directory or an
//! opaque directory at a strict ancestor of P; at P itself a whiteout, a
//! non-directory, or a directory over `l`'s non-directory. The union rules
//! ([`crate::union`]) decide visibility; this rule only names the culprit.

mod changes;
mod compare;
mod stats;
mod tree;
mod why;

pub use changes::*;
pub use compare::*;
pub use stats::*;
pub use tree::*;
pub use why::*;

use std::collections::BTreeMap;

use crate::layer::index::{Index, Kind};
use crate::union::{list_dir, resolve_path, Resolved, Source};

/// How an entry of `ls -a` relates to the merged view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Shown by the merged view.
    Visible,
    /// A `.wh.NAME` whiteout of this layer.
    Whiteout,
    /// A `.wh..wh..opq` marker: this layer's directory hides lower content.
    Opaque,
    /// A lower layer's entry the merged view does not show.
    Shadowed,
}

impl Status {
    /// The status as `ls` prints it (`visible`, `whiteout`, `opaque`, `shadowed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Visible => "visible",
            Status::Whiteout => "whiteout",
            Status::Opaque => "opaque",
            Status::Shadowed => "shadowed",
        }
    }
}

/// One line of `ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Path from the image root, no leading `/` (the root is empty). For a
    /// whiteout or opaque marker, the marker's own name (`dir/.wh.NAME`,
    /// `dir/.wh..wh..opq`).
    pub path: Vec<u8>,
    /// How the entry relates to the merged view.
    pub status: Status,
    /// The entry whose metadata the line shows (for a merged directory the
    /// topmost one with its own tar entry; for an opaque marker, the
    /// directory that carries it).
    pub source: Source,
    /// Every layer that contributes to a visible directory, top first;
    /// otherwise just `source`'s layer.
    pub layers: Vec<u16>,
    /// For a shadowed entry (or a marker in a directory that does not
    /// contribute), the layer that hides it.
    pub hidden_by: Option<u16>,
}

/// Joins a directory path and a name.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Path components, without empty and `.` components.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// The nearest layer above `l` that hides `l`'s entry at `path` (which
/// has kind `kind` in `l`), or `None` if nothing above cuts it.
pub fn hidden_by(layers: &[impl AsRef<Index>], path: &[u8], l: u16, kind: Kind) -> Option<u16> {
    let comps = components(path);
    (0..l)
        .rev()
        .find(|&k| cuts(layers[k as usize].as_ref(), &comps, kind))
}

/// Does layer `idx` cut a lower entry of kind `kind` at `comps`?
fn cuts(idx: &Index, comps: &[&[u8]], kind: Kind) -> bool {
    let mut cur = idx.entry(0);
    for (i, comp) in comps.iter().enumerate() {
        if cur.is_opaque() {
            return true;
        }
        let Some(c) = idx.lookup(&cur, comp) else {
            return false;
        };
        let e = idx.entry(c);
        let last = i + 1 == comps.len();
        match e.kind {
            Kind::Dir if last => return kind != Kind::Dir,
            Kind::Dir => cur = e,
            _ => return true,
        }
    }
    false
}

fn item(layers: &[impl AsRef<Index>], path: Vec<u8>, r: &Resolved) -> Item {
    let source = r.meta_source(layers);
    let layers_of = match r {
        Resolved::Dir(srcs) => {
            let mut v: Vec<u16> = srcs.iter().map(|s| s.0).collect();
            v.dedup();
            v
        }
        Resolved::Leaf(s) => vec![s.0],
    };
    Item {
        path,
        status: Status::Visible,
        source,
        layers: layers_of,
        hidden_by: None,
    }
}

/// Why `ls` found nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum LsError {
    /// No layer has the path.
    NotFound,
    /// Some layer has it, but the merged view hides it (by this layer).
    Hidden(Option<u16>),
}

/// Lists `path` of the merged view: the entries of a directory, sorted by
/// name, or the entry itself for a non-directory. With `all`, whiteouts,
/// opaque markers and shadowed entries of every layer follow each name's
/// visible entry.
pub fn list(layers: &[impl AsRef<Index>], path: &[u8], all: bool) -> Result<Vec<Item>, LsError> {
    let comps = components(path);
    let norm = comps.join(&b"/"[..]);
    let Some(r) = resolve_path(layers, &norm) else {
        let own = own_entries(layers, &norm);
        let lower = own
            .into_iter()
            .find(|&(l, e)| layers[l as usize].as_ref().entry(e).kind != Kind::Whiteout);
        return Err(match lower {
            None => LsError::NotFound,
            Some((l, e)) => {
                let kind = layers[l as usize].as_ref().entry(e).kind;
                LsError::Hidden(hidden_by(layers, &norm, l, kind))
            }
        });
    };
    let srcs = match &r {
        Resolved::Leaf(_) => {
            let mut out = vec![item(layers, norm.clone(), &r)];
            if all {
                out.extend(shadowed_at(layers, &norm, &r));
            }
            return Ok(out);
        }
        Resolved::Dir(srcs) => srcs.clone(),
    };
    let mut by_name: BTreeMap<Vec<u8>, Vec<Item>> = BTreeMap::new();
    for (name, child) in list_dir(layers, &srcs) {
        by_name
            .entry(name.clone())
            .or_default()
            .push(item(layers, join(&norm, &name), &child));
    }
    if all {
        let contributing = contributing(layers, &srcs);
        for (l, d) in own_entries(layers, &norm) {
            let idx = layers[l as usize].as_ref();
            let dir = idx.entry(d);
            if !dir.is_dir() {
                continue;
            }
            let dir_hidden = if contributing.contains(&(l, d)) {
                None
            } else {
                hidden_by(layers, &norm, l, Kind::Dir)
            };
            if dir.is_opaque() {
                by_name
                    .entry(crate::layer::whiteout::WH_OPAQUE.to_vec())
                    .or_default()
                    .push(Item {
                        path: join(&norm, crate::layer::whiteout::WH_OPAQUE),
                        status: Status::Opaque,
                        source: (l, d),
                        layers: vec![l],
                        hidden_by: dir_hidden,
                    });
            }
            for c in idx.children(&dir) {
                let ce = idx.entry(c);
                let name = idx.name(&ce);
                if ce.kind == Kind::Whiteout {
                    let mut wh = crate::layer::whiteout::WH_PREFIX.to_vec();
                    wh.extend_from_slice(name);
                    by_name.entry(wh.clone()).or_default().push(Item {
                        path: join(&norm, &wh),
                        status: Status::Whiteout,
                        source: (l, c),
                        layers: vec![l],
                        hidden_by: dir_hidden,
                    });
                    continue;
                }
                let shown = by_name
                    .get(name)
                    .and_then(|v| v.first())
                    .filter(|i| i.status == Status::Visible)
                    .is_some_and(|i| contributes(layers, &norm, name, i, (l, c)));
                if !shown {
                    let p = join(&norm, name);
                    let hb = hidden_by(layers, &p, l, ce.kind);
                    by_name.entry(name.to_vec()).or_default().push(Item {
                        path: p,
                        status: Status::Shadowed,
                        source: (l, c),
                        layers: vec![l],
                        hidden_by: hb,
                    });
                }
            }
        }
    }
    Ok(by_name.into_values().flatten().collect())
}

/// Is entry `src` one of the entries that make up visible item `i`?
fn contributes(
    layers: &[impl AsRef<Index>],
    dir: &[u8],
    name: &[u8],
    i: &Item,
    src: Source,
) -> bool {
    if i.source == src {
        return true;
    }
    match resolve_path(layers, &join(dir, name)) {
        Some(Resolved::Dir(srcs)) => srcs.contains(&src),
        Some(Resolved::Leaf(s)) => s == src,
        None => false,
    }
}

/// The sources of a merged directory whose children count: down to the
/// first opaque one (the rest give metadata only).
fn contributing(layers: &[impl AsRef<Index>], srcs: &[Source]) -> Vec<Source> {
    let mut out = Vec::new();
    for &(l, e) in srcs {
        out.push((l, e));
        if layers[l as usize].as_ref().entry(e).is_opaque() {
            break;
        }
    }
    out
}

/// The entry each layer has at `path` in its own tree, top first.
pub fn own_entries(layers: &[impl AsRef<Index>], path: &[u8]) -> Vec<Source> {
    layers
        .iter()
        .enumerate()
        .filter_map(|(l, idx)| idx.as_ref().lookup_path(path).map(|e| (l as u16, e)))
        .collect()
}

/// The entries of other layers at `path` that the visible `r` hides.
fn shadowed_at(layers: &[impl AsRef<Index>], path: &[u8], r: &Resolved) -> Vec<Item> {
    let mut out = Vec::new();
    for (l, e) in own_entries(layers, path) {
        let in_view = match r {
            Resolved::Leaf(s) => *s == (l, e),
            Resolved::Dir(srcs) => srcs.contains(&(l, e)),
        };
        if in_view {
            continue;
        }
        let kind = layers[l as usize].as_ref().entry(e).kind;
        out.push(Item {
            path: path.to_vec(),
            status: if kind == Kind::Whiteout {
                Status::Whiteout
            } else {
                Status::Shadowed
            },
            source: (l, e),
            layers: vec![l],
            hidden_by: hidden_by(layers, path, l, kind),
        });
    }
    out
}

/// `ls -R`: `list` of `path`, then of every visible directory below it,
/// depth first, each directory's lines after the directory's own line.
pub fn list_recursive(
    layers: &[impl AsRef<Index>],
    path: &[u8],
    all: bool,
) -> Result<Vec<Item>, LsError> {
    let mut out = Vec::new();
    let first = list(layers, path, all)?;
    let is_dir = matches!(
        resolve_path(layers, &components(path).join(&b"/"[..])),
        Some(Resolved::Dir(_))
    );
    if !is_dir {
        return Ok(first);
    }
    fn walk(
        layers: &[impl AsRef<Index>],
        items: Vec<Item>,
        all: bool,
        out: &mut Vec<Item>,
    ) -> Result<(), LsError> {
        for it in items {
            let descend = it.status == Status::Visible && {
                let (l, e) = it.source;
                layers[l as usize].as_ref().entry(e).is_dir()
            };
            let p = it.path.clone();
            out.push(it);
            if descend {
                walk(layers, list(layers, &p, all)?, all, out)?;
            }
        }
        Ok(())
    }
    walk(layers, first, all, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::build_index;
    use tar::{EntryType, Header};

    struct L(Index);
    impl AsRef<Index> for L {
        fn as_ref(&self) -> &Index {
            &self.0
        }
    }

    /// A layer from (name, kind, data) triples: `f` file, `d` dir, `l`
    /// symlink (data = target), `h` hard link (data = target path).
    fn layer(entries: &[(&str, char, &str)]) -> L {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = Header::new_gnu();
            h.set_mode(if *kind == 'd' { 0o755 } else { 0o644 });
            h.set_mtime(1);
            h.set_uid(0);
            h.set_gid(0);
            let body: &[u8] = if *kind == 'f' { data.as_bytes() } else { b"" };
            h.set_size(body.len() as u64);
            h.set_entry_type(match kind {
                'f' => EntryType::Regular,
                'd' => EntryType::Directory,
                'l' => EntryType::Symlink,
                'h' => EntryType::Link,
                _ => unreachable!(),
            });
            if matches!(kind, 'l' | 'h') {
                h.set_link_name(data).unwrap();
            }
            b.append_data(&mut h, name, body).unwrap();
        }
        let tar = b.into_inner().unwrap();
        L(Index::from_bytes(build_index(&tar).unwrap().0, "test").unwrap())
    }

    /// Stack position 0 = top: give layers bottom first, get them top first.
    fn stack(bottom_first: Vec<L>) -> Vec<L> {
        bottom_first.into_iter().rev().collect()
    }

    fn names(items: &[Item]) -> Vec<(String, Status, u16, Option<u16>)> {
        items
            .iter()
            .map(|i| {
                (
                    String::from_utf8_lossy(&i.path).into_owned(),
                    i.status,
                    i.source.0,
                    i.hidden_by,
                )
            })
            .collect()
    }

    fn sample() -> Vec<L> {
        stack(vec![
            layer(&[
                ("etc/", 'd', ""),
                ("etc/passwd", 'f', "root"),
                ("etc/motd", 'f', "hello"),
                ("opt/", 'd', ""),
                ("opt/a", 'f', "aaaa"),
                ("opt/sub/b", 'f', "bb"),
            ]),
            layer(&[
                ("etc/.wh.motd", 'f', ""),
                ("etc/passwd", 'f', "root:x"),
                ("opt/.wh..wh..opq", 'f', ""),
                ("opt/new", 'f', "n"),
            ]),
        ])
    }

    #[test]
    fn ls_shows_provenance_and_with_all_what_is_hidden() {
        let l = sample();
        let v = names(&list(&l, b"etc", false).unwrap());
        assert_eq!(v, vec![("etc/passwd".into(), Status::Visible, 0, None)]);
        let v = names(&list(&l, b"/etc/", true).unwrap());
        assert_eq!(
            v,
            vec![
                ("etc/.wh.motd".into(), Status::Whiteout, 0, None),
                ("etc/motd".into(), Status::Shadowed, 1, Some(0)),
                ("etc/passwd".into(), Status::Visible, 0, None),
                ("etc/passwd".into(), Status::Shadowed, 1, Some(0)),
            ]
        );
        let v = names(&list(&l, b"opt", true).unwrap());
        assert_eq!(
            v,
            vec![
                ("opt/.wh..wh..opq".into(), Status::Opaque, 0, None),
                ("opt/a".into(), Status::Shadowed, 1, Some(0)),
                ("opt/new".into(), Status::Visible, 0, None),
                ("opt/sub".into(), Status::Shadowed, 1, Some(0)),
            ]
        );
        // A deleted path is reported as hidden, by the layer that did it.
        assert_eq!(list(&l, b"etc/motd", false), Err(LsError::Hidden(Some(0))));
        assert_eq!(list(&l, b"nope", false), Err(LsError::NotFound));
        // A file lists as itself; -a adds its shadowed versions.
        let v = names(&list(&l, b"etc/passwd", true).unwrap());
        assert_eq!(v.len(), 2);
        // The root merges both layers; its children come from both.
        let root_items = list(&l, b"", false).unwrap();
        let etc = root_items.iter().find(|i| i.path == b"etc").unwrap();
        assert_eq!(
            etc.source.0, 1,
            "layer 0's etc is implicit: metadata from 1"
        );
        assert_eq!(etc.layers, vec![0, 1]);
        let rec = list_recursive(&l, b"", false).unwrap();
        let paths: Vec<_> = rec.iter().map(|i| i.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                b"etc".to_vec(),
                b"etc/passwd".to_vec(),
                b"opt".to_vec(),
                b"opt/new".to_vec()
            ]
        );
    }

    #[test]
    fn hidden_by_names_the_nearest_cut() {
        let l = stack(vec![
            layer(&[("a/b/c", 'f', "x")]),
            layer(&[("a/b", 'f', "file now")]),
            layer(&[("a/.wh.b", 'f', "")]),
            layer(&[("a/b/", 'd', "")]),
        ]);
        // Stack positions: 0 = dir a/b, 1 = whiteout, 2 = file a/b, 3 = a/b/c.
        assert_eq!(hidden_by(&l, b"a/b/c", 3, Kind::File), Some(2));
        assert_eq!(hidden_by(&l, b"a/b", 2, Kind::File), Some(1));
        assert_eq!(hidden_by(&l, b"a/b", 0, Kind::Dir), None);
        // Every entry of every layer: hidden exactly when the union rules
        // leave it out of the view.
        for lay in 0..l.len() as u16 {
            let idx = &l[lay as usize].0;
            for i in 1..idx.len() {
                let e = idx.entry(i);
                if e.kind == Kind::Whiteout || e.is_implicit() {
                    continue;
                }
                let p = idx.path(i);
                let visible = match resolve_path(&l, &p) {
                    Some(Resolved::Leaf(s)) => s == (lay, i),
                    Some(Resolved::Dir(s)) => s.contains(&(lay, i)),
                    None => false,
                };
                assert_eq!(
                    visible,
                    hidden_by(&l, &p, lay, e.kind).is_none(),
                    "{}",
                    String::from_utf8_lossy(&p)
                );
            }
        }
    }

    #[test]
    fn layer_changes_follow_docker_diff() {
        let l = sample();
        let show = |v: Vec<PathChange>| -> Vec<String> {
            v.iter()
                .map(|c| format!("{} {}", c.change.letter(), String::from_utf8_lossy(&c.path)))
                .collect()
        };
        assert_eq!(
            show(layer_changes(&l, 0)),
            vec![
                "C etc",
                "D etc/motd",
                "C etc/passwd",
                "C opt",
                "D opt/a",
                "A opt/new",
                "D opt/sub"
            ]
        );
        assert_eq!(
            show(layer_changes(&l, 1)),
            vec![
                "A etc",
                "A etc/motd",
                "A etc/passwd",
                "A opt",
                "A opt/a",
                "A opt/sub",
                "A opt/sub/b"
            ]
        );
    }

    /// A file of the bottom layer of `sample()` hidden by the top one.
    fn wf(path: &str, size: u64, replaced: bool) -> WastedFile {
        WastedFile {
            path: path.into(),
            size,
            hidden_by: Some(0),
            replaced,
        }
    }

    #[test]
    fn stats_count_changes_waste_and_dive_efficiency() {
        let l = sample();
        let s = image_stats(&l, &[None, None]);
        // Bottom: 4 files added, 15 bytes; top: passwd modified, motd and
        // opt/a, opt/sub deleted, opt/new added.
        assert_eq!(
            s.layers[1],
            LayerStats {
                added: 4,
                modified: 0,
                deleted: 0,
                file_bytes: 15,
                wasted: 15, // passwd, motd, a, sub/b: all replaced or deleted
                wasted_files: vec![
                    wf("etc/motd", 5, false),
                    wf("etc/passwd", 4, true),
                    wf("opt/a", 4, false),
                    wf("opt/sub/b", 2, false),
                ],
            }
        );
        assert_eq!(
            s.layers[0],
            LayerStats {
                added: 1,
                modified: 1,
                deleted: 3,
                file_bytes: 7,
                wasted: 0,
                wasted_files: vec![],
            }
        );
        assert_eq!(s.view_bytes, 7);
        for l in &s.layers {
            let listed: u64 = l.wasted_files.iter().map(|f| f.size).sum();
            assert_eq!(listed, l.wasted);
        }
        // dive: paths etc/passwd (4 + 6), etc/motd (5 + 0): two nodes each;
        // opt/a, opt/sub/b, opt/new one node each (dive ignores the opaque
        // marker).
        assert_eq!(s.wasted_bytes, 10 + 5);
        // Σ min: passwd 4, motd 0, a 4, sub/b 2, new 1.
        let expect = 11.0 / (10 + 5 + 4 + 2 + 1) as f64;
        assert!((s.efficiency - expect).abs() < 1e-12, "{}", s.efficiency);
    }

    #[test]
    fn a_hard_link_group_counts_its_bytes_once() {
        let l = stack(vec![layer(&[
            ("a", 'f', "12345"),
            ("b", 'h', "a"),
            ("c", 'h', "a"),
        ])]);
        let s = image_stats(&l, &[None]);
        assert_eq!(s.layers[0].file_bytes, 5);
        assert_eq!(s.view_bytes, 5);
        assert_eq!(s.efficiency, 1.0);
    }
}
