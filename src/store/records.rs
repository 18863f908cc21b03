//! What the store keeps about layers, images and live mounts (its JSON
//! records), and the publish journal; each validated before the store
//! acts on it, since it decides which paths the store touches.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::oci::{check_id, is_hex64};

/// What the store knows of one layer (`layer.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The layer's chain id (bare hex; its directory name).
    pub chain_id: String,
    /// The sha256 of the uncompressed tar (bare hex).
    pub diff_id: String,
    /// Chain id of the layer below; `None` for a bottom layer.
    pub parent: Option<String>,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Entries of its index (see [`crate::layer::index::build::BuildStats`]).
    pub entries: u32,
    /// Regular file entries of its index.
    pub files: u32,
    /// Whiteout entries of its index.
    pub whiteouts: u32,
    /// The index format version it was built with.
    pub index_version: u32,
}

/// What the store knows of one image (`image.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image id: the sha256 of its config blob (for a legacy v1 archive,
    /// the v1 id); bare hex, its directory name.
    pub id: String,
    /// Chain ids, bottom layer first.
    pub layers: Vec<String>,
    /// The config's `created`, if any.
    pub created: Option<String>,
    /// Unix time of the import.
    pub imported: u64,
    /// The format it came from (docker-archive, docker-legacy, oci, rootfs).
    pub source: String,
}

impl LayerRecord {
    /// Ids are path components of the store: each must be a bare digest,
    /// and the record must be the one of its directory.
    pub(super) fn validate(&self, dir_name: &str) -> Result<()> {
        check_id(&self.chain_id)?;
        check_id(&self.diff_id)?;
        if let Some(p) = &self.parent {
            check_id(p)?;
        }
        if self.chain_id != dir_name {
            bail!("record of layer {} found in {dir_name}", self.chain_id);
        }
        Ok(())
    }
}

impl ImageRecord {
    /// As [`LayerRecord::validate`]: `rm` deletes the layer directories an
    /// image record names, so every one must be a bare chain id.
    pub(super) fn validate(&self, dir_name: &str) -> Result<()> {
        check_id(&self.id)?;
        for l in &self.layers {
            check_id(l).context("layer")?;
        }
        if self.id != dir_name {
            bail!("record of image {} found in {dir_name}", self.id);
        }
        Ok(())
    }
}

/// An image whose record cannot be read or does not validate: its id and
/// what is wrong.
pub type BrokenImage = (String, anyhow::Error);

/// A live mount (`mounts/<key>.json`), written by the daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    /// The mount daemon's pid (a record whose process is gone is stale).
    pub pid: u32,
    /// The mounted image's id (empty for `mount-branches`).
    pub image: String,
    /// Where the merged view is mounted.
    pub mountpoint: PathBuf,
    /// The read-write branch, if the mount has one.
    pub rw: Option<PathBuf>,
    /// `mount-branches`: the read-only branches, top first (the image is
    /// empty then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lowerdirs: Vec<PathBuf>,
}

/// An all-or-nothing change to the store: staged directories to move into
/// place (paths relative to the store root) and tags to set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Publish {
    /// (staged path, final path), both relative to the store root.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// Tags to set: reference -> image id.
    pub tags: BTreeMap<String, String>,
}

impl Publish {
    /// A journal may only move a staging directory (`tmp/NAME`) to a layer
    /// or image directory (`layers/ID`, `images/ID`) and tag image ids:
    /// anything else (an absolute path, `..`, another directory of the
    /// store) is refused, since `recover` acts on what the file says.
    pub fn validate(&self) -> Result<()> {
        for (from, to) in &self.renames {
            let ok_from = matches!(
                rel_components(from).as_deref(),
                Some([top, name]) if top == "tmp" && !name.is_empty()
            );
            if !ok_from {
                bail!(
                    "rename source {} is not a staging directory",
                    from.display()
                );
            }
            let ok_to = matches!(
                rel_components(to).as_deref(),
                Some([top, id]) if (top == "layers" || top == "images") && is_hex64(id)
            );
            if !ok_to {
                bail!(
                    "rename target {} is not a layer or image directory",
                    to.display()
                );
            }
        }
        for (tag, id) in &self.tags {
            check_id(id).with_context(|| format!("tag {tag:?}"))?;
        }
        Ok(())
    }
}

/// The components of a relative path made only of plain names, as
/// strings; None for anything else (absolute, `.`, `..`, not UTF-8).
fn rel_components(p: &Path) -> Option<Vec<String>> {
    p.components()
        .map(|c| match c {
            Component::Normal(n) => n.to_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(renames: &[(&str, &str)], tags: &[(&str, &str)]) -> Publish {
        Publish {
            renames: renames
                .iter()
                .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
                .collect(),
            tags: tags
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn journal_moves_staging_to_layers_and_images_only() {
        let id = "ab".repeat(32);
        let layer = format!("layers/{id}");
        let image = format!("images/{id}");
        assert!(publish(
            &[("tmp/layer-1-2", &layer), ("tmp/image-1-3", &image)],
            &[("a:b", &id)]
        )
        .validate()
        .is_ok());
        for (from, to) in [
            ("/etc", layer.as_str()),
            ("tmp/../../x", layer.as_str()),
            ("tmp/a/b", layer.as_str()),
            ("tmp", layer.as_str()),
            ("layers/x", layer.as_str()),
            ("./tmp/x", layer.as_str()),
            ("tmp/x", "layers"),
            ("tmp/x", "/layers/x"),
            ("tmp/x", "tmp/y"),
            ("tmp/x", "layers/../../etc"),
            ("tmp/x", "images/ABC"),
        ] {
            assert!(
                publish(&[(from, to)], &[]).validate().is_err(),
                "{from} -> {to} accepted"
            );
        }
        assert!(publish(&[], &[("a:b", "../x")]).validate().is_err());
    }
}
