//! Sizes per layer and per image: bytes a layer adds, bytes wasted
//! (hidden by a later layer or stored twice), and dive's efficiency score.

use std::collections::{HashMap, HashSet};

use super::changes::{layer_changes, Change};
use super::{components, hidden_by, join};
use crate::layer::index::{Entry, Index, Kind};
use crate::union::{list_dir, resolve_path, root, Resolved, Source};

/// Which names of a layer carry the bytes of their hard-link group. A tar
/// stores a file's data once, under its first name; later names are
/// link entries of size 0. The index keeps no trace of which name came
/// first, so it is read from the tar: the header right before the data
/// names it (exactly, or as a prefix when the name was too long for the
/// header field). Without `tar`, or when no name matches, the first name in
/// index order is taken.
pub struct DataNames {
    /// Entries that are a second name of their data (count 0 bytes).
    links: HashSet<u32>,
}

impl DataNames {
    /// Decides which names of `idx` carry data; `tar` is the layer's tar, when
    /// there is one to read the first names from.
    pub fn new(idx: &Index, tar: Option<&[u8]>) -> DataNames {
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..idx.len() {
            let e = idx.entry(i);
            if e.kind == Kind::File && e.nlink > 1 {
                groups.entry(e.group).or_default().push(i);
            }
        }
        let mut links = HashSet::new();
        for (_, members) in groups {
            if members.len() < 2 {
                continue;
            }
            let data_off = idx.entry(members[0]).data_off;
            let header_name = tar.and_then(|t| header_path_before(t, data_off));
            let paths: Vec<Vec<u8>> = members.iter().map(|&m| idx.path(m)).collect();
            let pick = header_name
                .and_then(|h| {
                    paths
                        .iter()
                        .position(|p| *p == h)
                        .or_else(|| paths.iter().position(|p| p.starts_with(&h)))
                })
                .unwrap_or(0);
            for (k, &m) in members.iter().enumerate() {
                if k != pick {
                    links.insert(m);
                }
            }
        }
        DataNames { links }
    }

    /// Bytes entry `i` stores: a regular file's size, unless it is a second
    /// name of data stored under another name; 0 for anything else.
    pub fn size(&self, i: u32, e: &Entry) -> u64 {
        if e.kind == Kind::File && !self.links.contains(&i) {
            e.size
        } else {
            0
        }
    }
}

/// The normalized path in the ustar header that ends right where a file's
/// data starts (`data_off`), if there is one.
fn header_path_before(tar: &[u8], data_off: u64) -> Option<Vec<u8>> {
    let start = usize::try_from(data_off).ok()?.checked_sub(512)?;
    let h = tar.get(start..start + 512)?;
    let field = |a: usize, b: usize| -> &[u8] {
        let f = &h[a..b];
        &f[..f.iter().position(|&c| c == 0).unwrap_or(f.len())]
    };
    let name = field(0, 100);
    let mut full = Vec::new();
    if &h[257..263] == b"ustar\0" {
        let prefix = field(345, 500);
        if !prefix.is_empty() {
            full.extend_from_slice(prefix);
            full.push(b'/');
        }
    }
    full.extend_from_slice(name);
    Some(components(&full).join(&b"/"[..]))
}

/// Figures of one layer for `layers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// `A` lines of `layer_changes` for non-directories.
    pub added: u64,
    /// `C` lines of `layer_changes` for non-directories.
    pub modified: u64,
    /// `D` lines of `layer_changes` (a deleted directory counts once).
    pub deleted: u64,
    /// Bytes of file data the layer stores (hard links counted once).
    pub file_bytes: u64,
    /// Bytes of this layer's files the final view does not show: a later
    /// layer overwrote or deleted them. The sum of `wasted_files`' sizes.
    pub wasted: u64,
    /// The files that make up `wasted`, largest first (then by path).
    pub wasted_files: Vec<WastedFile>,
}

/// A file of a layer whose bytes the final view does not show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WastedFile {
    /// Path from the image root, no leading `/`.
    pub path: Vec<u8>,
    /// Bytes of file data (the name that carries a hard-link group's data).
    pub size: u64,
    /// The nearest layer above that hides it (see [`hidden_by`]); `None`
    /// only for a data name of a hard-link group whose other name survives.
    pub hidden_by: Option<u16>,
    /// `hidden_by` has its own entry (not a whiteout) at the same path: the
    /// file was replaced rather than deleted.
    pub replaced: bool,
}

/// Image-wide figures, as dive computes them.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageStats {
    /// Per layer, by stack position (0 = top).
    pub layers: Vec<LayerStats>,
    /// Bytes of the files of the final merged view.
    pub view_bytes: u64,
    /// dive's efficiency score.
    pub efficiency: f64,
    /// dive's wasted bytes.
    pub wasted_bytes: u64,
}

/// Everything `layers` prints. `tars[l]` is layer `l`'s tar, if available
/// (used only to tell which name of a hard-link group holds the data).
///
/// dive's definitions (`filetree.Efficiency`): every leaf of every layer's
/// own tree (a non-directory, a whiteout, or a directory with no entries in
/// that layer) is a *node* of its path with a size: the file size for a
/// file (0 for a hard link's second name, a directory, a symlink...); for a
/// whiteout, the bytes of the files under the path in the view of the
/// layers below if that is a directory, else 0. Per path, `cumulative` sums
/// its nodes' sizes and `min` is the smallest. efficiency = Σ min /
/// Σ cumulative (1 if nothing); wasted bytes = Σ cumulative over the paths
/// with two or more nodes.
pub fn image_stats(layers: &[impl AsRef<Index>], tars: &[Option<&[u8]>]) -> ImageStats {
    let names: Vec<DataNames> = layers
        .iter()
        .enumerate()
        .map(|(l, idx)| DataNames::new(idx.as_ref(), tars.get(l).copied().flatten()))
        .collect();
    let mut stats = Vec::new();
    for l in 0..layers.len() as u16 {
        let mut s = LayerStats::default();
        for c in layer_changes(layers, l) {
            match (c.change, c.kind) {
                (Change::Deleted, _) => s.deleted += 1,
                (_, Kind::Dir) => {}
                (Change::Added, _) => s.added += 1,
                (Change::Changed, _) => s.modified += 1,
            }
        }
        let idx = layers[l as usize].as_ref();
        for i in 0..idx.len() {
            s.file_bytes += names[l as usize].size(i, &idx.entry(i));
        }
        stats.push(s);
    }
    // Bytes each layer's files show in the final view.
    let mut view_bytes = 0;
    let mut shown = vec![0u64; layers.len()];
    let mut visible: HashSet<Source> = HashSet::new();
    let mut stack = vec![(Vec::new(), root(layers))];
    while let Some((path, r)) = stack.pop() {
        let Resolved::Dir(srcs) = r else { continue };
        for (name, child) in list_dir(layers, &srcs) {
            match child {
                Resolved::Leaf((l, e)) => {
                    let b = names[l as usize].size(e, &layers[l as usize].as_ref().entry(e));
                    shown[l as usize] += b;
                    view_bytes += b;
                    visible.insert((l, e));
                }
                d => stack.push((join(&path, &name), d)),
            }
        }
    }
    for (s, shown) in stats.iter_mut().zip(&shown) {
        s.wasted = s.file_bytes - shown;
    }
    for (l, s) in stats.iter_mut().enumerate() {
        let idx = layers[l].as_ref();
        for i in 0..idx.len() {
            let size = names[l].size(i, &idx.entry(i));
            if size == 0 || visible.contains(&(l as u16, i)) {
                continue;
            }
            let path = idx.path(i);
            let by = hidden_by(layers, &path, l as u16, Kind::File);
            let replaced = by.is_some_and(|k| {
                layers[k as usize]
                    .as_ref()
                    .lookup_path(&path)
                    .is_some_and(|j| layers[k as usize].as_ref().entry(j).kind != Kind::Whiteout)
            });
            s.wasted_files.push(WastedFile {
                path,
                size,
                hidden_by: by,
                replaced,
            });
        }
        s.wasted_files
            .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    }
    let (efficiency, wasted_bytes) = dive_efficiency(layers, &names);
    ImageStats {
        layers: stats,
        view_bytes,
        efficiency,
        wasted_bytes,
    }
}

fn dive_efficiency(layers: &[impl AsRef<Index>], names: &[DataNames]) -> (f64, u64) {
    // path -> (cumulative, min, nodes)
    let mut paths: HashMap<Vec<u8>, (u64, u64, u32)> = HashMap::new();
    for l in (0..layers.len()).rev() {
        let idx = layers[l].as_ref();
        let lower = &layers[l + 1..];
        for i in 1..idx.len() {
            let e = idx.entry(i);
            if e.is_dir() && e.child_count > 0 {
                continue;
            }
            let path = idx.path(i);
            let size = if e.kind == Kind::Whiteout {
                match resolve_path(lower, &path) {
                    Some(Resolved::Dir(srcs)) => tree_bytes(lower, &names[l + 1..], &srcs),
                    _ => 0,
                }
            } else {
                names[l].size(i, &e)
            };
            let slot = paths.entry(path).or_insert((0, u64::MAX, 0));
            slot.0 += size;
            slot.1 = slot.1.min(size);
            slot.2 += 1;
        }
    }
    let (min, cum): (u64, u64) = paths.values().fold((0, 0), |a, v| (a.0 + v.1, a.1 + v.0));
    let wasted = paths.values().filter(|v| v.2 >= 2).map(|v| v.0).sum();
    let score = if cum == 0 {
        1.0
    } else {
        min as f64 / cum as f64
    };
    (score, wasted)
}

/// Bytes of the files of a merged directory, recursively.
fn tree_bytes(layers: &[impl AsRef<Index>], names: &[DataNames], srcs: &[Source]) -> u64 {
    let mut total = 0;
    for (_, r) in list_dir(layers, srcs) {
        match r {
            Resolved::Leaf((l, e)) => {
                total += names[l as usize].size(e, &layers[l as usize].as_ref().entry(e))
            }
            Resolved::Dir(s) => total += tree_bytes(layers, names, &s),
        }
    }
    total
}
