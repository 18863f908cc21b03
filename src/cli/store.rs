//! The store's commands: import, images, history, inspect, rm, tag.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use super::render::{emit, HistoryRow, ImageRow};
use crate::image::import::{import as import_image, ImportOptions, Limits};
use crate::oci::{layer_created_by, normalize_ref, validate_tag};
use crate::store::Store;

/// `import PATH`: imports, prints each image id.
pub(crate) fn import(
    store: &Store,
    out: &mut impl Write,
    path: &str,
    tags: Vec<String>,
    limits: Limits,
) -> Result<()> {
    for id in import_image(store, path, &ImportOptions { tags, limits })? {
        writeln!(out, "{id}")?;
    }
    Ok(())
}

/// The bytes of the layers' tars.
fn image_size(store: &Store, layers: &[String]) -> u64 {
    layers
        .iter()
        .filter_map(|l| store.layer(l).ok())
        .map(|r| r.size)
        .sum()
}

/// `images`.
pub(crate) fn images(store: &Store, out: &mut impl Write, json: bool) -> Result<()> {
    let tags = store.tags()?;
    let mut rows = Vec::new();
    for img in store.images()? {
        rows.push(ImageRow {
            tags: tags
                .iter()
                .filter(|(_, v)| **v == img.id)
                .map(|(k, _)| k.clone())
                .collect(),
            layers: img.layers.len(),
            size: image_size(store, &img.layers),
            created: img.created,
            id: img.id,
            broken: None,
        });
    }
    for (id, err) in store.broken_images()? {
        rows.push(ImageRow {
            tags: tags
                .iter()
                .filter(|(_, v)| **v == id)
                .map(|(k, _)| k.clone())
                .collect(),
            layers: 0,
            size: 0,
            created: None,
            id,
            broken: Some(format!("{err:#}")),
        });
    }
    emit(out, json, &rows[..])
}

/// `check [IMAGE...] [--repair]`: fails when a problem is left unrepaired.
pub(crate) fn check(
    store: &Store,
    out: &mut impl Write,
    images: &[String],
    repair: bool,
    json: bool,
) -> Result<()> {
    let report = crate::image::check::check(store, images, repair)?;
    emit(out, json, &report)?;
    let left = report
        .problems
        .iter()
        .filter(|p| p.repaired.is_empty() || p.repaired.starts_with("could not"))
        .count();
    if left > 0 {
        anyhow::bail!(
            "{left} problem(s) found{}",
            if repair {
                " and not repaired"
            } else {
                "; `layerfs check --repair` removes what is broken"
            }
        );
    }
    Ok(())
}

/// The config of image `id`, parsed.
pub(crate) fn image_config(store: &Store, id: &str) -> Result<Value> {
    serde_json::from_slice(&store.config(id)?).context("image config")
}

/// `history IMAGE`.
pub(crate) fn history(store: &Store, out: &mut impl Write, image: &str, json: bool) -> Result<()> {
    let id = store.resolve(image)?;
    let rec = store.image(&id)?;
    let created_by = layer_created_by(&image_config(store, &id)?, rec.layers.len());
    let mut rows = Vec::new();
    for (i, chain) in rec.layers.iter().enumerate().rev() {
        let l = store.layer(chain)?;
        rows.push(HistoryRow {
            index: i,
            layer: chain.clone(),
            diff_id: format!("sha256:{}", l.diff_id),
            size: l.size,
            created_by: created_by[i].clone(),
        });
    }
    emit(out, json, &rows[..])
}

/// `inspect IMAGE`: the config JSON, pretty.
pub(crate) fn inspect(store: &Store, out: &mut impl Write, image: &str) -> Result<()> {
    let id = store.resolve(image)?;
    let config = image_config(store, &id)?;
    serde_json::to_writer_pretty(&mut *out, &config)?;
    writeln!(out)?;
    Ok(())
}

/// `rm IMAGE...`: one line per removed image.
pub(crate) fn rm(store: &Store, out: &mut impl Write, images: &[String]) -> Result<()> {
    let _lock = store.lock()?;
    for image in images {
        let id = store.resolve(image)?;
        let removed = store.remove_image(&id)?;
        writeln!(out, "removed image {id} ({} layers freed)", removed.len())?;
    }
    Ok(())
}

/// `tag IMAGE NAME`.
pub(crate) fn tag(store: &Store, image: &str, name: &str) -> Result<()> {
    validate_tag(name).map_err(anyhow::Error::msg)?;
    let _lock = store.lock()?;
    let id = store.resolve(image)?;
    let mut tags = store.tags()?;
    tags.insert(normalize_ref(name), id);
    store.set_tags(&tags)
}
