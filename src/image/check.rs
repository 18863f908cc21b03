//! `layerfs check`: the store read back and verified, as `podman system
//! check` does: every layer tar re-hashed against its diff id, every index
//! validated against its tar, records, configs and tags cross-checked,
//! orphans and leftovers found. With `repair`, what is broken goes: a
//! damaged layer is removed together with every image that needs it (they
//! say so), a damaged image record with its image, a dangling tag, an
//! unused layer, leftovers of interrupted writers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::layer::index::Index;
use crate::oci::{chain_ids, config_diff_ids, is_hex64, sha256_hex};
use crate::store::Store;

/// One thing found wrong.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// `image`, `layer`, `tag` or `store`.
    pub kind: &'static str,
    /// The image id, chain id, tag or store path concerned.
    pub subject: String,
    /// What is wrong.
    pub what: String,
    /// What `--repair` did about it (empty when not repairing, or when
    /// nothing was to be done).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repaired: String,
}

/// What a check found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Images checked.
    pub images: usize,
    /// Layers checked (each once, however many images share it).
    pub layers: usize,
    /// Bytes of layer tars re-hashed.
    pub bytes_hashed: u64,
    /// Everything found wrong, in the order found.
    pub problems: Vec<Problem>,
}

impl Report {
    fn problem(&mut self, kind: &'static str, subject: &str, what: impl Into<String>) {
        self.problems.push(Problem {
            kind,
            subject: subject.to_string(),
            what: what.into(),
            repaired: String::new(),
        });
    }
}

/// sha256 of a whole file, streamed.
fn hash_file(path: &std::path::Path) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Checks one layer: its record, its tar against the diff id, its index
/// against the tar. `None` if it is sound, else what is wrong.
fn check_layer(store: &Store, chain: &str, report: &mut Report) -> Option<String> {
    let rec = match store.layer(chain) {
        Ok(r) => r,
        Err(e) => return Some(format!("{e:#}")),
    };
    let dir = store.layer_dir(chain);
    let tar = dir.join("layer.tar");
    match hash_file(&tar) {
        Ok((digest, n)) => {
            report.bytes_hashed += n;
            if digest != rec.diff_id {
                return Some(format!(
                    "layer.tar does not match its diff id: sha256:{digest}, recorded sha256:{}",
                    rec.diff_id
                ));
            }
            if n != rec.size {
                return Some(format!("layer.tar is {n} bytes, recorded {}", rec.size));
            }
        }
        Err(e) => return Some(format!("{e:#}")),
    }
    match Index::open(&dir.join("index")) {
        Ok(idx) if idx.tar_size() != rec.size => Some(format!(
            "the index describes a tar of {} bytes, layer.tar has {}",
            idx.tar_size(),
            rec.size
        )),
        Ok(_) => None,
        Err(e) => Some(format!("index: {e}")),
    }
}

/// Checks `images` (all if empty); with `repair`, removes what is broken.
/// Takes the writer lock (recovery of an interrupted writer runs first, as
/// for every writer).
pub fn check(store: &Store, images: &[String], repair: bool) -> Result<Report> {
    let _lock = store.lock()?;
    let mut report = Report::default();
    let all = images.is_empty();
    let mut ids: Vec<String> = Vec::new();
    for r in images {
        ids.push(store.resolve(r)?);
    }
    if all {
        ids = store.images()?.into_iter().map(|i| i.id).collect();
    }
    // Damaged image records: always reported when checking everything.
    let mut broken_images: BTreeSet<String> = BTreeSet::new();
    if all {
        for (id, err) in store.broken_images()? {
            report.problem("image", &id, format!("{err:#}"));
            broken_images.insert(id);
        }
    }
    let mut layer_verdict: BTreeMap<String, Option<String>> = BTreeMap::new();
    for id in &ids {
        report.images += 1;
        let rec = match store.image(id) {
            Ok(r) => r,
            Err(e) => {
                report.problem("image", id, format!("{e:#}"));
                broken_images.insert(id.clone());
                continue;
            }
        };
        match store.config(id) {
            Err(e) => {
                report.problem("image", id, format!("{e:#}"));
                broken_images.insert(id.clone());
            }
            Ok(cfg) => {
                // A legacy v1 image's id is its v1 id, not the config's hash.
                if rec.source != "docker-legacy" && sha256_hex(&cfg) != *id {
                    report.problem("image", id, "config.json does not match the image id");
                    broken_images.insert(id.clone());
                }
                let diff_ids = serde_json::from_slice(&cfg)
                    .map_err(|e| e.to_string())
                    .and_then(|v| config_diff_ids(&v));
                match diff_ids {
                    Ok(d) if chain_ids(&d) == rec.layers => {}
                    Ok(_) => {
                        report.problem(
                            "image",
                            id,
                            "the config's diff ids do not give the recorded layers",
                        );
                        broken_images.insert(id.clone());
                    }
                    Err(e) => {
                        report.problem("image", id, format!("config.json: {e}"));
                        broken_images.insert(id.clone());
                    }
                }
            }
        }
        for chain in &rec.layers {
            if !layer_verdict.contains_key(chain) {
                let v = check_layer(store, chain, &mut report);
                report.layers += 1;
                if let Some(what) = &v {
                    report.problem("layer", chain, what.clone());
                }
                layer_verdict.insert(chain.clone(), v);
            }
            if layer_verdict[chain].is_some() {
                broken_images.insert(id.clone());
            }
        }
    }
    let tags = store.tags()?;
    let dangling: Vec<String> = tags
        .iter()
        .filter(|(_, id)| all && !store.has_image(id))
        .map(|(t, _)| t.clone())
        .collect();
    for t in &dangling {
        report.problem(
            "tag",
            t,
            format!("names image {}, which is not in the store", tags[t]),
        );
    }
    // Orphans: only when checking everything (a partial check does not
    // know what the other images use).
    let mut orphans = Vec::new();
    if all && broken_images.is_empty() {
        let used: BTreeSet<String> = store.images()?.into_iter().flat_map(|i| i.layers).collect();
        for e in std::fs::read_dir(store.root().join("layers"))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !used.contains(&name) {
                report.problem("layer", &name, "no image uses it");
                orphans.push(name);
            }
        }
    }
    if all {
        for e in std::fs::read_dir(store.root().join("images"))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !is_hex64(&name) || !store.has_image(&name) {
                report.problem(
                    "store",
                    &format!("images/{name}"),
                    "not an image layerfs made (no image.json, or not an id)",
                );
            }
        }
    }
    if !repair {
        return Ok(report);
    }

    // Repair: every image that is broken or needs a broken layer goes,
    // then the broken layers, dangling tags and orphans.
    let bad_layers: BTreeSet<String> = layer_verdict
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(c, _)| c.clone())
        .collect();
    // Images outside the checked set may share a bad layer.
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for img in store.images()? {
        for l in img.layers.iter().filter(|l| bad_layers.contains(*l)) {
            users.entry(l.clone()).or_default().push(img.id.clone());
            broken_images.insert(img.id.clone());
        }
    }
    for id in &broken_images {
        let note = match store.force_remove_image(id) {
            Ok(()) => format!("removed image {}", &id[..12.min(id.len())]),
            Err(e) => format!("could not remove image: {e:#}"),
        };
        if report
            .problems
            .iter()
            .any(|p| p.kind == "image" && p.subject == *id)
        {
            mark(&mut report, "image", id, &note);
        } else {
            report.problems.push(Problem {
                kind: "image",
                subject: id.clone(),
                what: "needs a damaged layer".into(),
                repaired: note,
            });
        }
    }
    for chain in bad_layers.iter().chain(orphans.iter()) {
        let mut note = match store.force_remove_layer(chain) {
            Ok(()) => "removed".to_string(),
            Err(e) => format!("could not remove: {e:#}"),
        };
        if let Some(ids) = users.get(chain) {
            let short: Vec<&str> = ids.iter().map(|i| &i[..12.min(i.len())]).collect();
            note.push_str(&format!(", and with it image(s) {}", short.join(", ")));
        }
        mark(&mut report, "layer", chain, &note);
    }
    if !dangling.is_empty() {
        let mut tags = store.tags()?;
        for t in &dangling {
            tags.remove(t);
        }
        store.set_tags(&tags)?;
        for t in &dangling {
            mark(&mut report, "tag", t, "removed");
        }
    }
    Ok(report)
}

/// Records what the repair did on every problem of `subject`.
fn mark(report: &mut Report, kind: &str, subject: &str, note: &str) {
    for p in report.problems.iter_mut() {
        if p.kind == kind && p.subject == subject {
            p.repaired = note.to_string();
        }
    }
}
