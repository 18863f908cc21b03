//! `layers --wasted`: the files that make up each layer's wasted bytes.

use std::io::{self, Write};

use serde::Serialize;

use super::render::{human_size, short, slash_path, LayerRef, Text};
use crate::image::export::ImageLayers;
use crate::union::inspect::LayerStats;

/// What `layers --wasted` prints.
#[derive(Serialize)]
pub(crate) struct WastedReport {
    /// The image id.
    pub image: String,
    /// Top first.
    pub layers: Vec<WastedLayer>,
    /// Bytes stored by the layers and not shown by the merged view (the sum
    /// of the layers' `wasted`).
    pub wasted: u64,
}

/// One layer of `layers --wasted`.
#[derive(Serialize)]
pub(crate) struct WastedLayer {
    /// The config history's `created_by` of the layer.
    pub created_by: String,
    /// The files, largest first.
    pub files: Vec<WastedFileRow>,
    /// Index in the image, 0 = bottom.
    pub index: usize,
    /// The chain id.
    pub layer: String,
    /// Bytes of the layer's files the merged view does not show.
    pub wasted: u64,
}

/// One file of `layers --wasted`.
#[derive(Serialize)]
pub(crate) struct WastedFileRow {
    /// The layer that hides the file.
    pub hidden_by: Option<LayerRef>,
    /// `replaced` (the hiding layer has its own entry at the path) or
    /// `deleted` (a whiteout or opaque directory, of the path or a parent,
    /// or a non-directory over a parent).
    pub how: &'static str,
    /// `/path`.
    pub path: String,
    /// Bytes of file data.
    pub size: u64,
}

impl WastedReport {
    /// The report of `stats` (stack order, 0 = top) for `img`.
    pub(crate) fn new(
        img: &ImageLayers,
        image: String,
        stats: &[LayerStats],
        created_by: &[String],
    ) -> WastedReport {
        let n = img.layers.len();
        let layers: Vec<WastedLayer> = stats
            .iter()
            .enumerate()
            .map(|(pos, s)| WastedLayer {
                created_by: created_by[n - 1 - pos].clone(),
                files: s
                    .wasted_files
                    .iter()
                    .map(|f| WastedFileRow {
                        hidden_by: f.hidden_by.map(|h| LayerRef::new(img, h)),
                        how: if f.replaced { "replaced" } else { "deleted" },
                        path: slash_path(&f.path),
                        size: f.size,
                    })
                    .collect(),
                index: n - 1 - pos,
                layer: img.layers[pos].chain_id.clone(),
                wasted: s.wasted,
            })
            .collect();
        WastedReport {
            image,
            wasted: layers.iter().map(|l| l.wasted).sum(),
            layers,
        }
    }
}

impl Text for WastedReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for l in &self.layers {
            writeln!(
                out,
                "{:>5}  {:<12}  {:>8} wasted in {} file{}  {}",
                l.index,
                short(&l.layer),
                human_size(l.wasted),
                l.files.len(),
                if l.files.len() == 1 { "" } else { "s" },
                l.created_by
            )?;
            for f in &l.files {
                let by = match &f.hidden_by {
                    Some(b) => format!(" by {}:{}", b.index, short(&b.id)),
                    None => String::new(),
                };
                writeln!(
                    out,
                    "       {:>8}  {}  [{}{by}]",
                    human_size(f.size),
                    f.path,
                    f.how
                )?;
            }
        }
        writeln!(
            out,
            "wasted in all: {} (file data the layers store that the merged view does not show)",
            human_size(self.wasted)
        )
    }
}
