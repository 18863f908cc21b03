//! The history of one path through an image's layers (`layerfs why`):
//! every layer that created, changed, hid or re-created the path, or did
//! so to a parent directory of it. Pure: the merged views below and above
//! each layer are compared with [`resolve_path`].

use super::{components, join};
use crate::layer::index::{Entry, Index, Kind};
use crate::union::{resolve_path, Resolved};

/// What one layer did to the path (or to a parent directory of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The path appears for the first time.
    Created(Kind),
    /// The path appears again after a lower layer removed it.
    Recreated(Kind),
    /// The layer's own entry replaces the path's data (and maybe more);
    /// `meta` lists the metadata that changed too.
    Modified {
        /// The metadata fields that changed besides the data.
        meta: Vec<&'static str>,
    },
    /// Only metadata changed (the named fields: `mode`, `owner`, `mtime`,
    /// `xattrs`); the data is the same.
    MetadataOnly(Vec<&'static str>),
    /// The layer re-states the entry unchanged.
    Restated,
    /// The path changes type (from, to).
    Replaced(Kind, Kind),
    /// A `.wh.` whiteout of the path removes it.
    WhitedOut,
    /// A `.wh.` whiteout of this parent directory removes it.
    ParentWhitedOut(Vec<u8>),
    /// This parent becomes a non-directory, which removes the path.
    ParentReplaced(Vec<u8>),
    /// This parent is an opaque directory of the layer: the lower path is
    /// hidden (the layer may put its own in its place: see `then`).
    HiddenByOpaque {
        /// The opaque directory (the path itself, or a parent).
        dir: Vec<u8>,
        /// What the layer shows at the path instead, if anything.
        then: Option<Kind>,
    },
    /// The layer has a whiteout of the path although nothing lower has it.
    UselessWhiteout,
}

/// One layer's part in the path's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Stack position of the layer (0 = top).
    pub layer: u16,
    /// What it did.
    pub event: Event,
}

/// The history of `path` in `layers` (top first), bottom layer first:
/// each layer whose view differs at `path` from the view of the layers
/// below it, or whose own entry re-states it, with what it did. `tars`
/// (top first; `None` for a layer without a tar) are compared for data.
pub fn why(layers: &[impl AsRef<Index>], tars: &[Option<&[u8]>], path: &[u8]) -> Vec<Step> {
    let path = components(path).join(&b"/"[..]);
    let mut out = Vec::new();
    let mut existed = false;
    for l in (0..layers.len()).rev() {
        let below = &layers[l + 1..];
        // Positions in `resolve_path`'s answers count from the slice's
        // top: made absolute here.
        let before = if below.is_empty() {
            None
        } else {
            resolve_path(below, &path).map(|r| shifted(r, l as u16 + 1))
        };
        let after = resolve_path(&layers[l..], &path).map(|r| shifted(r, l as u16));
        if let Some(event) = layer_event(
            layers,
            tars,
            l,
            &path,
            before.as_ref(),
            after.as_ref(),
            existed,
        ) {
            out.push(Step {
                layer: l as u16,
                event,
            });
        }
        existed |= after.is_some();
    }
    out
}

/// `r` with every layer position moved down by `by`.
fn shifted(r: Resolved, by: u16) -> Resolved {
    match r {
        Resolved::Leaf((l, e)) => Resolved::Leaf((l + by, e)),
        Resolved::Dir(srcs) => Resolved::Dir(srcs.into_iter().map(|(l, e)| (l + by, e)).collect()),
    }
}

fn layer_event(
    layers: &[impl AsRef<Index>],
    tars: &[Option<&[u8]>],
    l: usize,
    path: &[u8],
    before: Option<&Resolved>,
    after: Option<&Resolved>,
    existed: bool,
) -> Option<Event> {
    let idx = layers[l].as_ref();
    let own = idx.lookup_path(path).map(|i| (i, idx.entry(i)));
    let kind_of = |r: &Resolved| -> Kind {
        let (sl, se) = r.meta_source(layers);
        layers[sl as usize].as_ref().entry(se).kind
    };
    let opaque_above = opaque_dir_at(idx, path);
    match (before, after) {
        (None, None) => match own {
            Some((_, e)) if e.kind == Kind::Whiteout => Some(Event::UselessWhiteout),
            _ => None,
        },
        (None, Some(a)) if existed => Some(Event::Recreated(kind_of(a))),
        (None, Some(a)) => Some(Event::Created(kind_of(a))),
        (Some(_), None) => Some(match own {
            Some((_, e)) if e.kind == Kind::Whiteout => Event::WhitedOut,
            _ => removed_by_parent(idx, path).unwrap_or(Event::WhitedOut),
        }),
        (Some(b), Some(a)) => {
            if let Some(dir) = opaque_above {
                // The lower path is hidden; what shows now is this layer's.
                let lower_seen = lower_entry_survives(b, a);
                if !lower_seen {
                    return Some(Event::HiddenByOpaque {
                        dir,
                        then: Some(kind_of(a)),
                    });
                }
            }
            let (_, e) = own?;
            if e.is_implicit() {
                return None;
            }
            let (bl, be) = b.meta_source(layers);
            let lower = layers[bl as usize].as_ref();
            let old = lower.entry(be);
            if old.kind != e.kind {
                return Some(Event::Replaced(old.kind, e.kind));
            }
            let meta = meta_changes(lower, &old, idx, &e);
            let data_same = same_data((tars[bl as usize], lower, &old), (tars[l], idx, &e));
            Some(match (data_same, meta.is_empty()) {
                (false, _) => Event::Modified { meta },
                (true, false) => Event::MetadataOnly(meta),
                (true, true) => Event::Restated,
            })
        }
    }
}

/// Does the merged entry above still take its metadata from the lower
/// one (a directory merged through, not hidden)?
fn lower_entry_survives(before: &Resolved, after: &Resolved) -> bool {
    match (before, after) {
        (Resolved::Dir(b), Resolved::Dir(a)) => b.iter().any(|s| a.contains(s)),
        _ => false,
    }
}

/// The nearest opaque directory of layer `idx` at `path` or above it.
fn opaque_dir_at(idx: &Index, path: &[u8]) -> Option<Vec<u8>> {
    let comps = components(path);
    let mut found = None;
    let mut cur = 0u32;
    let mut cur_path = Vec::new();
    if idx.entry(0).is_opaque() {
        found = Some(Vec::new());
    }
    for c in comps {
        let e = idx.entry(cur);
        if !e.is_dir() {
            break;
        }
        let Some(next) = idx.lookup(&e, c) else { break };
        cur = next;
        cur_path = join(&cur_path, c);
        let ne = idx.entry(cur);
        if ne.is_dir() && ne.is_opaque() {
            found = Some(cur_path.clone());
        }
    }
    found
}

/// Why a path vanished with no whiteout of its own: a whiteout of a
/// parent, a parent made a non-directory, or an opaque parent.
fn removed_by_parent(idx: &Index, path: &[u8]) -> Option<Event> {
    let comps = components(path);
    let mut cur = 0u32;
    let mut cur_path = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        let e = idx.entry(cur);
        if e.is_opaque() && i > 0 {
            return Some(Event::HiddenByOpaque {
                dir: cur_path,
                then: None,
            });
        }
        cur = idx.lookup(&e, c)?;
        cur_path = join(&cur_path, c);
        let ne = idx.entry(cur);
        let last = i + 1 == comps.len();
        match ne.kind {
            Kind::Whiteout if !last => return Some(Event::ParentWhitedOut(cur_path)),
            Kind::Dir => {}
            _ if !last => return Some(Event::ParentReplaced(cur_path)),
            _ => {}
        }
    }
    let e = idx.entry(cur);
    (e.is_dir() && e.is_opaque()).then(|| Event::HiddenByOpaque {
        dir: path.to_vec(),
        then: None,
    })
}

/// The metadata fields that differ between two entries of the same kind.
fn meta_changes(li: &Index, a: &Entry, ri: &Index, b: &Entry) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.mode != b.mode {
        out.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        out.push("owner");
    }
    if (a.mtime, a.mtime_nsec) != (b.mtime, b.mtime_nsec) {
        out.push("mtime");
    }
    if !li.xattrs(a).eq(ri.xattrs(b)) {
        out.push("xattrs");
    }
    out
}

/// Same data: file contents, link targets, device numbers.
fn same_data(a: (Option<&[u8]>, &Index, &Entry), b: (Option<&[u8]>, &Index, &Entry)) -> bool {
    let (at, ai, ae) = a;
    let (bt, bi, be) = b;
    match ae.kind {
        Kind::File => {
            let bytes = |t: Option<&[u8]>, e: &Entry| -> Option<Vec<u8>> {
                let t = t.unwrap_or(&[]);
                t.get(e.data_off as usize..(e.data_off + e.size) as usize)
                    .map(<[u8]>::to_vec)
            };
            ae.size == be.size && bytes(at, ae) == bytes(bt, be)
        }
        Kind::Symlink => ai.target(ae) == bi.target(be),
        Kind::Char | Kind::Block => ae.rdev() == be.rdev(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::build_index;
    use tar::{EntryType, Header};

    /// A layer tar of (path, kind, mode, data or link target) and its
    /// index; kinds as `Kind`.
    fn layer(entries: &[(&str, Kind, u32, &str)]) -> (Index, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        for &(name, kind, mode, data) in entries {
            let mut h = Header::new_gnu();
            h.set_mode(mode);
            h.set_mtime(1);
            let body: &[u8] = if kind == Kind::File {
                data.as_bytes()
            } else {
                b""
            };
            h.set_size(body.len() as u64);
            h.set_entry_type(match kind {
                Kind::File => EntryType::Regular,
                Kind::Dir => EntryType::Directory,
                Kind::Symlink => EntryType::Symlink,
                _ => unreachable!(),
            });
            if kind == Kind::Symlink {
                h.set_link_name(data).unwrap();
            }
            b.append_data(&mut h, name, body).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let idx = Index::from_bytes(build_index(&tar).unwrap().0, "test").unwrap();
        (idx, tar)
    }

    #[test]
    fn a_path_created_chmodded_deleted_and_recreated_across_four_layers() {
        use Kind::*;
        // Bottom first, as built; stacks are top first.
        let l0 = layer(&[("etc", Dir, 0o755, ""), ("etc/f", File, 0o644, "one")]);
        let l1 = layer(&[("etc", Dir, 0o755, ""), ("etc/f", File, 0o600, "one")]);
        let l2 = layer(&[("etc", Dir, 0o755, ""), ("etc/.wh.f", File, 0, "")]);
        let l3 = layer(&[("etc", Dir, 0o755, ""), ("etc/f", File, 0o644, "two")]);
        let l4 = layer(&[("etc", Dir, 0o755, ""), ("etc/f", File, 0o644, "three")]);
        let stack = [&l4, &l3, &l2, &l1, &l0];
        let idx: Vec<&Index> = stack.iter().map(|l| &l.0).collect();
        let tars: Vec<Option<&[u8]>> = stack.iter().map(|l| Some(&l.1[..])).collect();
        let steps = why(&idx, &tars, b"/etc/f");
        let got: Vec<(u16, Event)> = steps.into_iter().map(|s| (s.layer, s.event)).collect();
        assert_eq!(
            got,
            [
                (4, Event::Created(File)),
                (3, Event::MetadataOnly(vec!["mode"])),
                (2, Event::WhitedOut),
                (1, Event::Recreated(File)),
                (0, Event::Modified { meta: vec![] }),
            ]
        );
    }

    #[test]
    fn parents_that_hide_a_path() {
        use Kind::*;
        let l0 = layer(&[
            ("a", Dir, 0o755, ""),
            ("a/b", Dir, 0o755, ""),
            ("a/b/f", File, 0o644, "x"),
        ]);
        let l1 = layer(&[("a", Dir, 0o755, ""), ("a/.wh.b", File, 0, "")]);
        let l2 = layer(&[
            ("a", Dir, 0o755, ""),
            ("a/b", Dir, 0o755, ""),
            ("a/b/f", File, 0o644, "y"),
        ]);
        let l3 = layer(&[
            ("a", Dir, 0o755, ""),
            ("a/.wh..wh..opq", File, 0, ""),
            ("a/c", File, 0o644, ""),
        ]);
        let l4 = layer(&[("a", File, 0o644, "now a file")]);
        let stack = [&l4, &l3, &l2, &l1, &l0];
        let idx: Vec<&Index> = stack.iter().map(|l| &l.0).collect();
        let tars: Vec<Option<&[u8]>> = stack.iter().map(|l| Some(&l.1[..])).collect();
        let got: Vec<(u16, Event)> = why(&idx, &tars, b"a/b/f")
            .into_iter()
            .map(|s| (s.layer, s.event))
            .collect();
        assert_eq!(
            got,
            [
                (4, Event::Created(File)),
                (3, Event::ParentWhitedOut(b"a/b".to_vec())),
                (2, Event::Recreated(File)),
                (
                    1,
                    Event::HiddenByOpaque {
                        dir: b"a".to_vec(),
                        then: None
                    }
                ),
            ]
        );
        // The parent itself: created, its content hidden by the opaque
        // marker (it stays a directory), then replaced by a file.
        let got: Vec<(u16, Event)> = why(&idx, &tars, b"a")
            .into_iter()
            .map(|s| (s.layer, s.event))
            .collect();
        assert_eq!(got[0], (4, Event::Created(Dir)));
        assert_eq!(got.last().unwrap(), &(0, Event::Replaced(Dir, File)));
    }
}
