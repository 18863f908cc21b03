//! Looking into images and branches: ls, layers, diff.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::branch::{branch_and_base, branch_of};
use super::render::{
    emit, layer_label, ls_line, print_json, short, ChangeRow, ImageChangeRow, LayerChangeRow,
    LayerRow, LayersReport, LsRow, TreeRow, WhyRow,
};
use super::store::image_config;
use super::waste::WastedReport;
use super::{DiffArgs, LsArgs, TreeArgs, TreeSort};
use crate::image::commit::{rw_diff, rw_diff_image};
use crate::image::export::ImageLayers;
use crate::layer::index::Index;
use crate::mount::Source;
use crate::oci::layer_created_by;
use crate::store::Store;
use crate::union::inspect::{self, LsError};

/// `ls IMAGE [PATH]`.
pub(crate) fn ls(store: &Store, out: &mut impl Write, a: LsArgs) -> Result<()> {
    let path = &a.path;
    let id = store.resolve(&a.image)?;
    let img = ImageLayers::open(store, &id)?;
    let ls = if a.recursive {
        inspect::list_recursive(&img.layers, path.as_bytes(), a.all)
    } else {
        inspect::list(&img.layers, path.as_bytes(), a.all)
    };
    let items = ls.map_err(|e| match e {
        LsError::NotFound => anyhow::anyhow!(
            "{path}: no such file or directory in image {}",
            short(&id)
        ),
        LsError::Hidden(by) => anyhow::anyhow!(
            "{path}: not in the merged view of image {} (hidden by layer {}; `ls -a` on its directory shows it)",
            short(&id),
            by.map(|l| layer_label(&img, l)).unwrap_or_else(|| "?".into())
        ),
    })?;
    if a.json {
        let rows: Vec<LsRow> = items.iter().map(|i| LsRow::new(&img, i)).collect();
        print_json(out, &rows)
    } else {
        let norm = inspect::components(path.as_bytes()).join(&b"/"[..]);
        let single = !norm.is_empty() && items.iter().all(|i| i.path == norm);
        for i in &items {
            writeln!(out, "{}", ls_line(&img, i, a.long, a.recursive || single))?;
        }
        Ok(())
    }
}

/// `layers IMAGE [--diff N | --wasted]`.
pub(crate) fn layers(
    store: &Store,
    out: &mut impl Write,
    image: &str,
    json: bool,
    diff: Option<usize>,
    wasted: bool,
) -> Result<()> {
    let id = store.resolve(image)?;
    let rec = store.image(&id)?;
    let img = ImageLayers::open(store, &id)?;
    let n = img.layers.len();
    if let Some(want) = diff {
        if want >= n {
            bail!(
                "--diff {want}: image {} has layers 0 to {}",
                short(&id),
                n.saturating_sub(1)
            );
        }
        let rows: Vec<LayerChangeRow> = inspect::layer_changes(&img.layers, (n - 1 - want) as u16)
            .iter()
            .map(|c| LayerChangeRow::new(c.change, &c.path, c.kind))
            .collect();
        return emit(out, json, &rows[..]);
    }
    let created_by = layer_created_by(&image_config(store, &id)?, n);
    let stats = inspect::image_stats(&img.layers, &img.tar_slices());
    if wasted {
        let report = WastedReport::new(&img, id, &stats.layers, &created_by);
        return emit(out, json, &report);
    }
    let mut rows = Vec::new();
    for (pos, s) in stats.layers.iter().enumerate() {
        let i = n - 1 - pos;
        let l = store.layer(&rec.layers[i])?;
        rows.push(LayerRow {
            index: i,
            layer: rec.layers[i].clone(),
            diff_id: format!("sha256:{}", l.diff_id),
            created_by: created_by[i].clone(),
            size: l.size,
            file_bytes: s.file_bytes,
            added: s.added,
            modified: s.modified,
            deleted: s.deleted,
            wasted: s.wasted,
        });
    }
    let report = LayersReport {
        image: id,
        layers: rows,
        file_bytes: stats.layers.iter().map(|s| s.file_bytes).sum(),
        view_bytes: stats.view_bytes,
        wasted: stats.layers.iter().map(|s| s.wasted).sum(),
        efficiency: stats.efficiency,
        wasted_bytes: stats.wasted_bytes,
    };
    emit(out, json, &report)
}

/// `tree IMAGE [PATH]`.
pub(crate) fn tree(store: &Store, out: &mut impl Write, a: TreeArgs) -> Result<()> {
    let id = store.resolve(&a.image)?;
    let img = ImageLayers::open(store, &id)?;
    let n = img.layers.len();
    let want = a.layer.unwrap_or(n - 1);
    if want >= n {
        bail!(
            "--layer {want}: image {} has layers 0 to {}",
            short(&id),
            n - 1
        );
    }
    let Some(mut t) = inspect::tree(&img.layers, (n - 1 - want) as u16, a.path.as_bytes()) else {
        bail!(
            "{}: no such file or directory in image {} as of layer {want}",
            a.path,
            short(&id)
        );
    };
    if a.only_changed {
        t.only_changed();
    }
    if let TreeSort::Size = a.sort {
        t.sort_by_size();
    }
    let root_name = inspect::components(a.path.as_bytes()).join(&b"/"[..]);
    emit(out, a.json, &TreeRow::new(&t, &root_name, a.depth))
}

/// `why IMAGE PATH`.
pub(crate) fn why(
    store: &Store,
    out: &mut impl Write,
    image: &str,
    path: &str,
    json: bool,
) -> Result<()> {
    let id = store.resolve(image)?;
    let img = ImageLayers::open(store, &id)?;
    let n = img.layers.len();
    let created_by = layer_created_by(&image_config(store, &id)?, n);
    let steps = inspect::why(&img.layers, &img.tar_slices(), path.as_bytes());
    if steps.is_empty() {
        bail!(
            "{path}: no layer of image {} has it or a parent of it",
            short(&id)
        );
    }
    let rows: Vec<WhyRow> = steps
        .iter()
        .map(|s| WhyRow::new(&img, s, &created_by[n - 1 - s.layer as usize]))
        .collect();
    emit(out, json, &rows[..])
}

/// `diff TARGET`: the changes of a branch against what it lies on.
pub(crate) fn diff(store: &Store, out: &mut impl Write, a: DiffArgs) -> Result<()> {
    let target = match (a.target, a.image.as_slice()) {
        (None, [x, y]) => return diff_images(store, out, x, y, a.json),
        (None, _) => bail!("diff: give a branch, or --image A --image B to compare two images"),
        (Some(_), [_, _, ..]) => {
            bail!("diff: --image twice compares two images, and takes no branch")
        }
        (Some(t), _) => t,
    };
    let changes = match a.lowerdir {
        Some(dirs) => {
            let rw = branch_of(store, &target, a.plain)?.0;
            rw_diff(&index_dirs(split_dirs(&dirs))?, &rw)?
        }
        None => {
            match branch_and_base(store, &target, a.image.first().map(String::as_str), a.plain)? {
                (rw, Source::Image(id)) => {
                    rw_diff_image(store, &ImageLayers::open(store, &id)?, &rw)?
                }
                (rw, Source::Dirs(dirs)) => rw_diff(&index_dirs(dirs)?, &rw)?,
            }
        }
    };
    let rows: Vec<ChangeRow> = changes.iter().map(|(c, p)| ChangeRow::new(*c, p)).collect();
    emit(out, a.json, &rows[..])
}

/// `diff --image A --image B`.
fn diff_images(store: &Store, out: &mut impl Write, a: &str, b: &str, json: bool) -> Result<()> {
    let (ia, ib) = (store.resolve(a)?, store.resolve(b)?);
    let (la, lb) = (
        ImageLayers::open(store, &ia)?,
        ImageLayers::open(store, &ib)?,
    );
    let (ta, tb) = (la.tar_slices(), lb.tar_slices());
    let va = inspect::View {
        layers: &la.layers,
        tars: &ta,
    };
    let vb = inspect::View {
        layers: &lb.layers,
        tars: &tb,
    };
    let rows: Vec<ImageChangeRow> = inspect::compare_views(&va, &vb)
        .iter()
        .map(|c| ImageChangeRow::new(c, &vb))
        .collect();
    emit(out, json, &rows[..])
}

/// A colon-separated list of directories (empty ones skipped).
fn split_dirs(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Directories as layer indexes (both whiteout formats), top first.
fn index_dirs(dirs: Vec<PathBuf>) -> Result<Vec<Index>> {
    if dirs.is_empty() {
        bail!("--lowerdir: no directory given");
    }
    dirs.iter()
        .map(|d| crate::layer::dir::index_directory(d))
        .collect()
}
