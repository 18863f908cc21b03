//! Bringing images into the store: docker-archive (`manifest.json`), the
//! legacy Docker v1 archive (`<id>/json` + `repositories`), OCI image
//! layouts (directory or oci-archive tar) and plain rootfs tars, each layer
//! uncompressed, gzip or zstd (told by magic bytes).
//!
//! An import is all-or-nothing: every new layer and image is first written
//! and verified under the store's `tmp/`, then published in one
//! [`Publish`]. Nothing in the store changes until every digest has been
//! checked.

mod formats;
mod limits;
pub mod source;

use formats::{docker_candidates, legacy_candidates, legacy_ids, oci_candidates, rootfs_candidate};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::layer::index::{build_index, VERSION as INDEX_VERSION};
use crate::oci::{chain_ids, config_diff_ids, normalize_ref, sha256_hex, validate_tag};
use crate::store::{ImageRecord, LayerRecord, Publish, Staging, Store, StoreLock};
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

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
    progress: Option<ProgressBar>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        if let Some(p) = &self.progress {
            p.inc(n as u64);
        }
        Ok(n)
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

/// The decompressing path of [`stage_layer`]: writes the uncompressed
/// tar to `tar_path`; returns its diff id and size.
fn stage_compressed(
    blob: Box<dyn Read + Send>,
    tar_path: &Path,
    expect_blob: Option<&str>,
    label: &str,
    progress: Option<ProgressBar>,
    meter: &mut Meter,
) -> Result<(String, u64)> {
    let mut hashing = Hashing {
        inner: blob,
        hash: Sha256::new(),
        count: 0,
        progress,
    };
    let (diff_id, size) = {
        let (mut dec, comp) = decompressor(BufReader::with_capacity(1 << 20, &mut hashing))
            .with_context(|| format!("{label}: reading"))?;
        let out = crate::store::create_private(tar_path)?;
        meter.check_free(0)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        // An uncompressed blob is its own layer tar: its digest is the diff
        // id, hashed once by `hashing`.
        let mut h = (comp != Compression::None).then(Sha256::new);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match dec.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => bail!("{label}: corrupt {comp:?} data: {e}"),
            };
            if let Some(h) = h.as_mut() {
                h.update(&buf[..n]);
            }
            // Errors of the writer are told from those of the reader.
            meter.grow(n as u64)?;
            out.write_all(&buf[..n]).map_err(|e| meter.write_error(e))?;
            meter.wrote(n as u64);
            size += n as u64;
        }
        let f = out
            .into_inner()
            .map_err(|e| meter.write_error(e.into_error()))?;
        f.sync_all().map_err(|e| meter.write_error(e))?;
        (h.map(|h| hex::encode(h.finalize())), size)
    };
    // Drain what the decompressor did not need (trailing padding) so the
    // blob digest covers the whole blob.
    io::copy(&mut hashing, &mut io::sink())?;
    let blob_digest = hex::encode(hashing.hash.clone().finalize());
    if let Some(expect) = expect_blob {
        if blob_digest != expect {
            bail!("{label}: blob does not match its digest: descriptor says sha256:{expect}, content is sha256:{blob_digest}");
        }
    }
    Ok((diff_id.unwrap_or(blob_digest), size))
}

/// Copies `size` bytes of `src` at `off` (an uncompressed layer tar) to
/// `dst` in the kernel (`copy_file_range`) while this thread hashes what
/// landed in `dst`, chunk by chunk behind the copy, so the digest is the
/// stored bytes' own; writeback of each chunk starts as soon as it is
/// copied, so the final fsync has little left to wait for. Returns the
/// sha256 of the copy. With `punch` (a writable handle on `src`, a spool
/// of ours read for the last time), each chunk's blocks are freed from
/// `src` once copied, so the bytes are on disk once, not twice.
fn copy_and_hash(
    src: &File,
    off: u64,
    size: u64,
    dst: &File,
    progress: Option<&ProgressBar>,
    meter: &mut Meter,
    punch: Option<&File>,
) -> Result<String> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 16 << 20;
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
    std::thread::scope(|scope| {
        let copier = scope.spawn(move || -> Result<()> {
            let mut buf = Vec::new();
            let mut at = 0u64;
            crate::sys::advise_sequential(src);
            while at < size {
                let len = CHUNK.min(size - at);
                // Have the disk read the next chunk while this one copies.
                let next = CHUNK.min(size - at - len);
                if next > 0 {
                    crate::sys::prefetch(src, off + at + len, next);
                }
                // Without punching, the whole size was checked up front;
                // with it, the source shrinks as the copy grows.
                if punch.is_some() {
                    meter.grow(len)?;
                }
                let mut done = crate::sys::copy_range_at(src, off + at, dst, at, len)
                    .map_err(|e| meter.write_error(io::Error::from_raw_os_error(e)))?;
                // Where the kernel cannot copy, copy through user space.
                while done < len {
                    buf.resize(CHUNK as usize, 0);
                    let want = (len - done) as usize;
                    let n = src.read_at(&mut buf[..want], off + at + done)?;
                    if n == 0 {
                        bail!("the source ended early");
                    }
                    dst.write_all_at(&buf[..n], at + done)
                        .map_err(|e| meter.write_error(e))?;
                    done += n as u64;
                }
                meter.wrote(len);
                if let Some(p) = punch {
                    // Best effort: a filesystem without holes keeps both.
                    let _ = crate::sys::punch_hole(p, off + at, len);
                }
                crate::sys::start_writeback(dst, at, len);
                if tx.send((at, len)).is_err() {
                    break;
                }
                at += len;
            }
            Ok(())
        });
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK as usize];
        for (at, len) in rx {
            let b = &mut buf[..len as usize];
            dst.read_exact_at(b, at)?;
            h.update(&*b);
            if let Some(p) = progress {
                p.inc(len);
            }
        }
        copier.join().expect("copy thread panicked")?;
        Ok(hex::encode(h.finalize()))
    })
}

/// Reads one layer blob (`size` bytes of `src` at `off`) into a staging
/// directory: decompress, hash (the blob's digest and the uncompressed
/// diff id), write `layer.tar`, build and write its index. `expect_blob`
/// is the descriptor digest, if the format has one. An uncompressed blob
/// is its own layer tar: copied in the kernel and hashed once. `punch`
/// frees the copied bytes from `src` (see [`copy_and_hash`]).
#[allow(clippy::too_many_arguments)]
fn stage_layer(
    store: &Store,
    src: File,
    off: u64,
    size: u64,
    expect_blob: Option<&str>,
    label: &str,
    progress: Option<ProgressBar>,
    limits: &Limits,
    punch: Option<File>,
) -> Result<(Staging, String, crate::layer::index::build::BuildStats, u64)> {
    use std::os::unix::fs::FileExt;
    let dir = store.staging("layer")?;
    let tar_path = dir.path().join("layer.tar");
    let mut head = [0u8; 8];
    let n = src.read_at(&mut head, off)?.min(size as usize);
    let mut meter = Meter::new(label, store.root(), limits.max_layer_size, limits);
    let (diff_id, size) = if detect_compression(&head[..n]) == Compression::None {
        // The size is known: refuse a layer too large, or one the disk
        // cannot hold, before copying.
        meter.check_size(size)?;
        if punch.is_none() {
            meter.check_free(size)?;
        }
        // Read back too: the digest is taken from the copy.
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tar_path)
            .with_context(|| format!("creating {}", tar_path.display()))?;
        let digest = copy_and_hash(
            &src,
            off,
            size,
            &out,
            progress.as_ref(),
            &mut meter,
            punch.as_ref(),
        )
        .with_context(|| format!("{label}: copying"))?;
        out.sync_all().map_err(|e| meter.write_error(e))?;
        if let Some(expect) = expect_blob {
            if digest != expect {
                bail!("{label}: blob does not match its digest: descriptor says sha256:{expect}, content is sha256:{digest}");
            }
        }
        (digest, size)
    } else {
        let blob = io::Read::take(
            {
                let mut f = src;
                io::Seek::seek(&mut f, io::SeekFrom::Start(off))?;
                f
            },
            size,
        );
        stage_compressed(
            Box::new(blob),
            &tar_path,
            expect_blob,
            label,
            progress,
            &mut meter,
        )?
    };
    // Index the tar where it lies (mapped), without reading it into memory.
    let tar_file = File::open(&tar_path)?;
    // SAFETY: the staged tar is ours alone until it is published, and is
    // not written again.
    let map = if size == 0 {
        None
    } else {
        Some(crate::sys::map_readonly(&tar_file)?)
    };
    let data: &[u8] = map.as_deref().unwrap_or(&[]);
    let (index, stats) = build_index(data).with_context(|| format!("{label}: bad layer tar"))?;
    drop(map);
    let ipath = dir.path().join("index");
    let mut f = crate::store::create_private(&ipath)?;
    f.write_all(&index)?;
    f.sync_all()?;
    Ok((dir, diff_id, stats, size))
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

/// Everything an import collects before publishing.
/// Returns once the blob at a path of a source is complete (or fails
/// saying why it will not be); see [`import_blobs`].
pub type BlobReady<'a> = dyn Fn(&str) -> Result<()> + Sync + 'a;

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
    /// Waits until the blob at a path of the source is there in full
    /// (`pull`: its download finished and verified), or says why it
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
            if let Some(ready) = self.ready {
                ready(path).with_context(|| label.clone())?;
            }
            let (file, off, len) = src.open_range(path).with_context(|| label.clone())?;
            let punch = match (&self.punch, last_use) {
                (Some((spool, _)), true) => {
                    std::fs::OpenOptions::new().write(true).open(spool).ok()
                }
                _ => None,
            };
            let (dir, got, stats, size) = stage_layer(
                self.store,
                file,
                off,
                len,
                digest.as_deref(),
                &label,
                self.progress.clone(),
                &self.limits,
                punch,
            )?;
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
/// when its blob is complete in `dir` (or fails): so a pull stages each
/// layer as soon as it has downloaded, while later ones still download.
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
