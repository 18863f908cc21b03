//! Bringing images into the store: docker-archive (`manifest.json`), the
//! legacy Docker v1 archive (`<id>/json` + `repositories`), OCI image
//! layouts (directory or oci-archive tar) and plain rootfs tars, each layer
//! uncompressed, gzip or zstd (told by magic bytes).
//!
//! An import is all-or-nothing: every new layer and image is first written
//! and verified under the store's `tmp/`, then published in one
//! [`Publish`]. Nothing in the store changes until every digest has been
//! checked.

mod follow;
mod formats;
mod limits;
pub mod source;
mod stage;

use formats::{docker_candidates, legacy_candidates, legacy_ids, oci_candidates, rootfs_candidate};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::layer::index::VERSION as INDEX_VERSION;
use crate::oci::{chain_ids, config_diff_ids, normalize_ref, sha256_hex, validate_tag};
use crate::store::{ImageRecord, LayerRecord, Publish, Staging, Store, StoreLock};
pub use follow::{FollowReader, Growing, Watch, REWOUND};
use limits::Meter;
pub use limits::{parse_size, Limits, DEFAULT_MAX_LAYER_SIZE};
pub use source::Source;

/// Options of one `layerfs import`.
#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// Extra tags for the imported image(s).
    pub tags: Vec<String>,
    /// Largest layer and free space kept (`--max-layer-size`, `--min-free`).
    pub limits: Limits,
}

/// Compression of a layer blob, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed: the blob is the tar.
    None,
    /// gzip (magic `1f 8b`).
    Gzip,
    /// zstd (magic `28 b5 2f fd`).
    Zstd,
}

/// Fuzzing entry point: parses a docker-archive `manifest.json` and checks
/// its paths as import does (`fuzz/fuzz_targets/manifests.rs`).
#[doc(hidden)]
pub fn fuzz_docker_manifest(bytes: &[u8]) -> Result<usize> {
    formats::check_docker_manifest(bytes)
}

/// The compression of a blob whose first bytes are `head` (4 are enough).
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `r` in the decompressor its first bytes call for.
fn decompressor<'a, R: BufRead + Send + 'a>(
    mut r: R,
) -> io::Result<(Box<dyn Read + Send + 'a>, Compression)> {
    let c = detect_compression(r.fill_buf()?);
    Ok(match c {
        Compression::None => (Box::new(r), c),
        Compression::Gzip => (Box::new(flate2::bufread::MultiGzDecoder::new(r)), c),
        Compression::Zstd => (Box::new(zstd::stream::read::Decoder::with_buffer(r)?), c),
    })
}

/// One layer staged under `tmp/`: `layer.tar`, `index`, `layer.json`.
struct StagedLayer {
    dir: Staging,
    record: LayerRecord,
}

/// One image found in an archive, before its layers are read.
struct Candidate {
    config: Vec<u8>,
    /// Image id: sha256 of the config (the v1 id for legacy archives).
    id: String,
    /// Per layer, bottom first: (archive path of the blob, descriptor digest).
    layers: Vec<(String, Option<String>)>,
    tags: Vec<String>,
    source: &'static str,
    /// Precomputed diff ids (legacy archives have none in the config).
    diff_ids: Option<Vec<String>>,
}

/// A layer blob as [`BlobReady`] hands it over.
pub enum Blob {
    /// Complete in the source: read where it lies.
    Complete,
    /// Still being written: read as it arrives, from its first byte.
    Arriving(FollowReader),
}

/// Returns once the blob at a path of a source can be read: complete, or
/// arriving (or fails saying why it will not be); see [`import_blobs`].
pub type BlobReady<'a> = dyn Fn(&str) -> Result<Blob> + Sync + 'a;

/// Everything an import collects before publishing.
struct Plan<'s> {
    store: &'s Store,
    staged_layers: BTreeMap<String, StagedLayer>,
    staged_images: Vec<(Staging, String)>,
    tags: BTreeMap<String, String>,
    progress: Option<ProgressBar>,
    limits: Limits,
    /// When the source is a spool of ours under `tmp/`: the spool, and how
    /// many layer references to each member (by its offset) are still to
    /// come, so the last one frees the member's blocks as it copies them.
    punch: Option<(PathBuf, BTreeMap<u64, usize>)>,
    /// Waits until the blob at a path of the source can be read (`pull`:
    /// its download started, or finished and verified), or says why it
    /// will not be.
    ready: Option<&'s BlobReady<'s>>,
}

impl Plan<'_> {
    /// Stages the layers and image of one candidate; returns its id.
    fn add(&mut self, src: &Source, mut cand: Candidate) -> Result<String> {
        let v: Value =
            serde_json::from_slice(&cand.config).context("image config is not valid JSON")?;
        let diff_ids = match cand.diff_ids.take() {
            Some(d) => d,
            None => config_diff_ids(&v).map_err(|e| anyhow!(e))?,
        };
        if diff_ids.len() != cand.layers.len() {
            bail!(
                "image {}: the config lists {} layers (rootfs.diff_ids) but the manifest has {}",
                short(&cand.id),
                diff_ids.len(),
                cand.layers.len()
            );
        }
        let chains = chain_ids(&diff_ids);
        for (i, ((path, digest), diff_id)) in cand.layers.iter().zip(&diff_ids).enumerate() {
            let chain = &chains[i];
            let last_use = self.last_use(src, path);
            if self.store.has_layer(chain) || self.staged_layers.contains_key(chain) {
                if let Some(p) = &self.progress {
                    p.inc(src.open(path).map(|(_, s)| s).unwrap_or(0));
                }
                continue;
            }
            let label = format!("layer {i} ({path})");
            let blob = match self.ready {
                Some(ready) => ready(path).with_context(|| label.clone())?,
                None => Blob::Complete,
            };
            let streamed = match blob {
                Blob::Complete => None,
                Blob::Arriving(reader) => {
                    let watch = reader.watch();
                    let res = stage::stage_stream(
                        self.store,
                        Box::new(reader),
                        digest.as_deref(),
                        &label,
                        &self.limits,
                    );
                    match res {
                        // Started again from byte 0 under the reader (a
                        // registry that ignored Range, kept bytes that did
                        // not verify): read the blob once it is complete.
                        Err(_) if watch.rewound() => {
                            tracing::info!("{label}: {REWOUND}; staging it once downloaded");
                            watch.wait_end().with_context(|| label.clone())?;
                            None
                        }
                        res => Some(res?),
                    }
                }
            };
            let (dir, got, stats, size) = match streamed {
                Some(staged) => staged,
                None => {
                    let (file, off, len) = src.open_range(path).with_context(|| label.clone())?;
                    let punch = match (&self.punch, last_use) {
                        (Some((spool, _)), true) => {
                            std::fs::OpenOptions::new().write(true).open(spool).ok()
                        }
                        _ => None,
                    };
                    stage::stage_layer(
                        self.store,
                        file,
                        off,
                        len,
                        digest.as_deref(),
                        &label,
                        self.progress.clone(),
                        &self.limits,
                        punch,
                    )?
                }
            };
            if &got != diff_id {
                bail!("{label}: diff_id mismatch: the image config says sha256:{diff_id}, the layer content is sha256:{got}");
            }
            let record = LayerRecord {
                chain_id: chain.clone(),
                diff_id: got,
                parent: if i == 0 {
                    None
                } else {
                    Some(chains[i - 1].clone())
                },
                size,
                entries: stats.entries,
                files: stats.files,
                whiteouts: stats.whiteouts,
                index_version: INDEX_VERSION,
            };
            crate::store::write_atomic(
                &dir.path().join("layer.json"),
                &serde_json::to_vec_pretty(&record)?,
            )?;
            self.staged_layers
                .insert(chain.clone(), StagedLayer { dir, record });
        }
        let rec = ImageRecord {
            id: cand.id.clone(),
            layers: chains,
            created: v.get("created").and_then(Value::as_str).map(str::to_string),
            imported: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            source: cand.source.to_string(),
        };
        if !self.store.has_image(&rec.id) && !self.staged_images.iter().any(|(_, id)| *id == rec.id)
        {
            let st = self.store.staging("image")?;
            crate::store::write_atomic(&st.path().join("config.json"), &cand.config)?;
            crate::store::write_atomic(
                &st.path().join("image.json"),
                &serde_json::to_vec_pretty(&rec)?,
            )?;
            self.staged_images.push((st, rec.id.clone()));
        }
        for t in &cand.tags {
            validate_tag(t)
                .map_err(|e| anyhow!("the archive tags image {}: {e}", short(&rec.id)))?;
            self.tags.insert(normalize_ref(t), rec.id.clone());
        }
        Ok(cand.id)
    }

    /// Counts one reference to layer `path`; true when it was the last one
    /// to a member of our spool (nothing will read its bytes again).
    fn last_use(&mut self, src: &Source, path: &str) -> bool {
        let Some((_, uses)) = &mut self.punch else {
            return false;
        };
        let Ok((_, off, _)) = src.open_range(path) else {
            return false;
        };
        match uses.get_mut(&off) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        }
    }

    fn publish(self) -> Result<()> {
        let rel =
            |p: &Path| -> PathBuf { p.strip_prefix(self.store.root()).unwrap_or(p).to_path_buf() };
        let mut p = Publish {
            tags: self.tags.clone(),
            ..Publish::default()
        };
        for (chain, l) in &self.staged_layers {
            debug_assert_eq!(&l.record.chain_id, chain);
            p.renames
                .push((rel(l.dir.path()), rel(&self.store.layer_dir(chain))));
        }
        for (st, id) in &self.staged_images {
            p.renames
                .push((rel(st.path()), rel(&self.store.image_dir(id))));
        }
        self.store.publish(&p)
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Splits `PATH:REF` when PATH alone does not exist.
fn split_ref(arg: &str) -> (PathBuf, Option<String>) {
    if arg == "-" || Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    if let Some((p, r)) = arg.rsplit_once(':') {
        if !r.is_empty() && !r.contains('/') && Path::new(p).exists() {
            return (PathBuf::from(p), Some(r.to_string()));
        }
        // REF may itself contain ':' (name:tag): try the first colon too.
        if let Some((p, r)) = arg.split_once(':') {
            if Path::new(p).exists() {
                return (PathBuf::from(p), Some(r.to_string()));
            }
        }
    }
    (PathBuf::from(arg), None)
}

/// Imports `arg` (a path, `PATH:REF`, or `-` for stdin) into the store and
/// returns the ids of the imported images, in archive order.
pub fn import(store: &Store, arg: &str, opts: &ImportOptions) -> Result<Vec<String>> {
    for t in &opts.tags {
        validate_tag(t).map_err(|e| anyhow!(e))?;
    }
    let _lock = store.lock()?;
    let (path, reference) = split_ref(arg);
    let mut spooled: Option<Staging> = None;

    let mut src = if path.as_os_str() == "-" {
        let st = store.staging("stdin")?;
        let p = st.path().join("input.tar");
        spool(
            Box::new(io::stdin()),
            &p,
            store,
            "the archive read from stdin",
            &opts.limits,
        )?;
        spooled = Some(st);
        Source::scan_tar(&p)?
    } else if path.is_dir() {
        Source::dir(&path)?
    } else {
        let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut head = [0u8; 4];
        let n = read_head(&mut f, &mut head)?;
        if detect_compression(&head[..n]) != Compression::None {
            let st = store.staging("input")?;
            let p = st.path().join("input.tar");
            let what = format!("the decompressed archive {}", path.display());
            spool(Box::new(File::open(&path)?), &p, store, &what, &opts.limits)?;
            spooled = Some(st);
            Source::scan_tar(&p)?
        } else {
            Source::scan_tar(&path)?
        }
    };

    let progress = progress_bar();
    let mut plan = Plan {
        store,
        staged_layers: BTreeMap::new(),
        staged_images: Vec::new(),
        tags: BTreeMap::new(),
        progress: progress.clone(),
        limits: opts.limits,
        punch: None,
        ready: None,
    };
    let cands = if src.has("oci-layout") && src.has("index.json") && !src.has("manifest.json") {
        oci_candidates(&src, reference.as_deref())?
    } else if reference.is_some() {
        bail!(
            "{}: a :REF selects a manifest of an OCI layout, and this is not one",
            path.display()
        );
    } else if src.has("manifest.json") {
        docker_candidates(&src)?
    } else if src.has("repositories") || legacy_ids(&src).next().is_some() {
        legacy_candidates(&src)?
    } else if matches!(src, Source::Dir { .. }) {
        bail!(
            "{} is a directory but not an OCI image layout (no oci-layout and index.json)",
            path.display()
        );
    } else {
        let file = match &spooled {
            Some(st) => st.path().join("input.tar"),
            None => path.clone(),
        };
        if std::fs::metadata(&file)?.len() == 0 {
            bail!(
                "{} is empty: not an image or tar (an empty rootfs is a tar of zero entries, as `tar -cf x.tar -T /dev/null` makes)",
                path.display()
            );
        }
        let c = rootfs_candidate(&file)?;
        src = Source::File { path: file };
        vec![c]
    };
    if cands.is_empty() {
        bail!("{}: the archive holds no image", path.display());
    }
    if let Some(p) = &progress {
        let total: u64 = cands
            .iter()
            .flat_map(|c| &c.layers)
            .map(|(l, _)| src.open(l).map(|(_, s)| s).unwrap_or(0))
            .sum();
        p.set_length(total);
    }
    if !opts.tags.is_empty() && cands.len() > 1 {
        bail!(
            "--tag needs exactly one image, and this archive holds {}",
            cands.len()
        );
    }
    if let Some(st) = &spooled {
        let mut uses = BTreeMap::new();
        for (l, _) in cands.iter().flat_map(|c| &c.layers) {
            if let Ok((_, off, _)) = src.open_range(l) {
                *uses.entry(off).or_insert(0) += 1;
            }
        }
        plan.punch = Some((st.path().join("input.tar"), uses));
    }
    let mut ids = Vec::new();
    for mut c in cands {
        c.tags.extend(opts.tags.iter().cloned());
        let id = plan.add(&src, c)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    plan.publish()?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    drop(spooled);
    Ok(ids)
}

/// Imports one image whose new layer tars are files in `dir` (under the
/// store's `tmp/`; the caller holds the writer lock): `layers` are paths
/// relative to `dir`, bottom first, and a layer already in the store is not
/// read (its path may name nothing). Digests are checked and the image
/// published exactly as for any import. Used by `commit`.
pub fn import_staged(
    store: &Store,
    lock: &StoreLock,
    dir: &Path,
    config: Vec<u8>,
    layers: Vec<String>,
    tags: &[String],
) -> Result<String> {
    let layers = layers.into_iter().map(|l| (l, None)).collect();
    import_blobs(
        store,
        lock,
        dir,
        config,
        layers,
        tags,
        "commit",
        &Limits::default(),
        None,
    )
}

/// Like [`import_staged`], for layer blobs (compressed or not) with the
/// digests their manifest gives, checked again as they are staged: each
/// layer is `(path relative to dir, descriptor digest)`. Used by `pull`,
/// whose downloads land in `dir`; `source` is recorded in the image, and
/// `limits` bound each layer as in [`import`]. `ready`, if given, is
/// called with a layer's path before that layer is read, and returns
/// when its blob can be read: complete in `dir`, or still arriving
/// ([`Blob::Arriving`], read as it grows; its end of file comes only
/// once the writer has verified the whole blob), or fails. So a pull
/// stages each layer as its blob downloads, bottom first, while later
/// ones still download. A blob whose writer starts it again from byte 0
/// under the reader is staged again once it is complete.
#[allow(clippy::too_many_arguments)]
pub fn import_blobs(
    store: &Store,
    _lock: &StoreLock,
    dir: &Path,
    config: Vec<u8>,
    layers: Vec<(String, Option<String>)>,
    tags: &[String],
    source: &'static str,
    limits: &Limits,
    ready: Option<&BlobReady<'_>>,
) -> Result<String> {
    for t in tags {
        validate_tag(t).map_err(|e| anyhow!(e))?;
    }
    let src = Source::dir(dir)?;
    let mut plan = Plan {
        store,
        staged_layers: BTreeMap::new(),
        staged_images: Vec::new(),
        tags: BTreeMap::new(),
        progress: None,
        limits: *limits,
        punch: None,
        ready,
    };
    let cand = Candidate {
        id: sha256_hex(&config),
        config,
        layers,
        tags: tags.to_vec(),
        source,
        diff_ids: None,
    };
    let id = plan.add(&src, cand)?;
    plan.publish()?;
    Ok(id)
}

fn progress_bar() -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let p = ProgressBar::new(0);
    p.set_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    Some(p)
}

fn read_head(f: &mut File, head: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copies a (possibly compressed) stream to `dst` (`what`, for messages),
/// decompressed, keeping the store's free-space margin.
fn spool(
    r: Box<dyn Read + Send>,
    dst: &Path,
    store: &Store,
    what: &str,
    limits: &Limits,
) -> Result<()> {
    let (mut dec, comp) = decompressor(BufReader::with_capacity(1 << 20, r))
        .with_context(|| format!("reading {what}"))?;
    let mut meter = Meter::new(what, store.root(), None, limits);
    let mut out = io::BufWriter::with_capacity(1 << 20, crate::store::create_private(dst)?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if comp == Compression::None => bail!("reading {what}: {e}"),
            Err(e) => bail!("{what}: corrupt {comp:?} data: {e}"),
        };
        meter.grow(n as u64)?;
        out.write_all(&buf[..n]).map_err(|e| meter.write_error(e))?;
        meter.wrote(n as u64);
    }
    out.flush().map_err(|e| meter.write_error(e))?;
    Ok(())
}
