//! `pull`: an image from a registry into the store. The manifest (an
//! index resolved to the wanted platform), the config, then every layer the
//! store lacks, downloaded in parallel into a staging directory, each blob
//! checked against its digest and size as it streams; the import staging
//! does the rest (decompress, diff ids against the config, index, publish
//! all or nothing), taking each layer, bottom first, as soon as its blob
//! starts to download: the import reads the blob's file in the store's
//! `tmp/downloads/` from its first byte as it grows (a
//! [`FollowReader`]), so decompression, hashing and the layer tar's
//! writing run while the blob still arrives, and the later blobs download
//! meanwhile.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use super::client::{is_unavailable, Client};
use super::manifest::{
    accept_header, parse_manifest, select_platform, Descriptor, Manifest, Platform,
};
use super::{credentials, RegistryOptions};
use crate::image::import::{import_blobs, Blob, FollowReader, Growing};
use crate::oci::{chain_ids, config_diff_ids, sha256_hex, Reference};
use crate::store::Store;

/// Options of one `layerfs pull`.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Connection and credentials.
    pub registry: RegistryOptions,
    /// `OS/ARCH[/VARIANT]` to pick from an index (default: the host's).
    pub platform: Option<String>,
    /// Parallel layer downloads (at least 1).
    pub jobs: usize,
    /// No progress bars.
    pub quiet: bool,
    /// Largest layer and free space kept, as for `import`.
    pub limits: crate::image::import::Limits,
}

/// What a pull did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    /// The image id (sha256 of the config).
    pub id: String,
    /// The reference, fully spelled out (as resolved: a short name's
    /// alias or search registry).
    pub reference: String,
    /// Where it was pulled from: the reference rewritten to the mirror or
    /// location that served it.
    pub source: String,
    /// The store tag set, if the reference had a tag.
    pub tag: Option<String>,
    /// The digest of the image manifest pulled (`sha256:...`).
    pub manifest_digest: String,
    /// The image's layers.
    pub layers: usize,
    /// The layers downloaded (the others were in the store).
    pub downloaded: usize,
    /// Bytes downloaded for them (compressed, as the registry sent them).
    pub bytes: u64,
}

/// Fetches a manifest by tag or digest; a digest is checked.
fn fetch_manifest(c: &Client, reference: &str, what: &str) -> Result<(Vec<u8>, String)> {
    let (bytes, ct) = c.get_small(
        &c.url(&format!("manifests/{reference}")),
        &accept_header(),
        what,
    )?;
    if let Some(want) = reference.strip_prefix("sha256:") {
        let got = sha256_hex(&bytes);
        if got != want {
            bail!("{}: {what}: the manifest does not match its digest (sha256:{want} asked, sha256:{got} received)", c.reference());
        }
    }
    Ok((bytes, ct))
}

/// Pulls `reference` into `store`; see the module doc. The reference is
/// resolved by the registries configuration first
/// ([`super::load_registries_conf`]): a short name to its alias or the
/// unqualified-search registries, each name to its sources (mirrors, then
/// the registry's location). The sources are tried in order until one
/// serves the manifest; one that cannot ([`is_unavailable`]: unreachable,
/// 404, 5xx) passes to the next, any other error stops the pull. The
/// image is tagged with the resolved name, whichever source served it.
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<Pulled> {
    let conf = super::load_registries_conf(opts.registry.registries_conf.as_deref())?;
    let resolved = conf.resolve_pull(reference).map_err(|e| anyhow!(e))?;
    if let Some(how) = &resolved.how {
        tracing::info!("{how}");
    }
    let want = match &opts.platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!(e))?,
        None => Platform::host(),
    };
    let mut failed: Vec<anyhow::Error> = Vec::new();
    let last = resolved.candidates.len().saturating_sub(1);
    for (i, cand) in resolved.candidates.iter().enumerate() {
        let sources = match &cand.sources {
            Ok(s) => s,
            Err(e) => {
                failed.push(anyhow!("{e}"));
                continue;
            }
        };
        for src in sources {
            let probe = || -> Result<(Client, Vec<u8>, String)> {
                let creds = credentials(&opts.registry, &src.reference)?;
                let tls_verify = opts.registry.tls_verify && !src.insecure;
                let c = Client::connect(&src.reference, tls_verify, creds, false)?;
                let (bytes, ct) =
                    fetch_manifest(&c, src.reference.manifest_ref(), "fetching the manifest")?;
                Ok((c, bytes, ct))
            };
            match probe() {
                Ok((c, bytes, ct)) => {
                    tracing::info!(
                        "{}: pulling from {}{}",
                        cand.name,
                        src.reference,
                        if src.mirror { " (a mirror)" } else { "" }
                    );
                    return pull_from(store, &cand.name, &src.reference, c, bytes, ct, &want, opts);
                }
                Err(e) if is_unavailable(&e) => {
                    tracing::info!("{e:#}; trying the next source");
                    failed.push(e);
                }
                // Another candidate of a short name is another image, not
                // a fallback for this one: tried whatever the error (a
                // registry may answer 401 for a repository it lacks), as
                // podman does in permissive mode; the error is kept.
                Err(e) if i < last => {
                    tracing::warn!("{e:#}; trying the next candidate");
                    failed.push(e);
                    break;
                }
                Err(e) if failed.is_empty() => return Err(e),
                Err(e) => {
                    failed.push(e);
                    break;
                }
            }
        }
    }
    if failed.len() == 1 {
        return Err(failed.pop().expect("one error"));
    }
    let list: Vec<String> = failed.iter().map(|e| format!("\n  {e:#}")).collect();
    bail!("{reference}: no source could serve it:{}", list.concat())
}

/// The id of a stored image that `reference` names once registries.conf
/// resolved it (an alias, a search registry; the first candidate the
/// store has a tag of), if any: what `mount` and `bundle` look for before
/// pulling a name the store does not know as it is.
pub fn find_resolved(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
) -> Result<Option<String>> {
    let conf = super::load_registries_conf(opts.registries_conf.as_deref())?;
    let Ok(resolved) = conf.resolve_pull(reference) else {
        return Ok(None);
    };
    for c in &resolved.candidates {
        if let Some(tag) = c.name.store_tag() {
            if let Some(id) = store.find(&tag)? {
                return Ok(Some(id));
            }
        }
    }
    Ok(None)
}

/// The rest of a pull once `source` (a mirror or the registry of `r`)
/// answered its manifest (`bytes`, `ct`) on `c`.
#[allow(clippy::too_many_arguments)]
fn pull_from(
    store: &Store,
    r: &Reference,
    source: &Reference,
    c: Client,
    bytes: Vec<u8>,
    ct: String,
    want: &Platform,
    opts: &PullOptions,
) -> Result<Pulled> {
    let (mut bytes, mut ct) = (bytes, ct);
    let want = want.clone();
    let mut parsed = parse_manifest(&bytes, &ct).map_err(|e| anyhow!("{r}: {e}"))?;
    if let Manifest::Index(entries) = &parsed {
        let d = select_platform(entries, &want).map_err(|e| anyhow!("{r}: {e}"))?;
        (bytes, ct) = fetch_manifest(
            &c,
            &format!("sha256:{}", d.digest),
            &format!("fetching the {want} manifest"),
        )?;
        parsed = parse_manifest(&bytes, &ct).map_err(|e| anyhow!("{r}: {e}"))?;
    }
    let manifest_digest = format!("sha256:{}", sha256_hex(&bytes));
    let Manifest::Image {
        config: cdesc,
        layers,
    } = parsed
    else {
        bail!("{r}: an index inside an index; layerfs expects an image manifest there");
    };

    let (config, _) = c.get_small(
        &c.url(&format!("blobs/sha256:{}", cdesc.digest)),
        "*/*",
        "fetching the image config",
    )?;
    let id = sha256_hex(&config);
    if id != cdesc.digest {
        bail!("{r}: the image config does not match its digest (the manifest says sha256:{}, the registry sent sha256:{id})", cdesc.digest);
    }
    let cv: Value = serde_json::from_slice(&config)
        .with_context(|| format!("{r}: the image config is not JSON"))?;
    let diff_ids = config_diff_ids(&cv).map_err(|e| anyhow!("{r}: {e}"))?;
    if diff_ids.len() != layers.len() {
        bail!(
            "{r}: the config lists {} layers (rootfs.diff_ids) but the manifest has {}",
            diff_ids.len(),
            layers.len()
        );
    }
    let chains = chain_ids(&diff_ids);

    let lock = store.lock()?;
    let staging = store.staging("pull")?;
    // The layers to download, each blob once.
    let mut todo: Vec<(usize, Descriptor)> = Vec::new();
    for (i, d) in layers.iter().enumerate() {
        if !store.has_layer(&chains[i]) && !todo.iter().any(|(_, t)| t.digest == d.digest) {
            todo.push((i, d.clone()));
        }
    }
    let bytes_total: u64 = todo.iter().map(|(_, d)| d.size).sum();

    // Each blob lies in the staging directory under its digest once
    // downloaded; the import stages each layer as soon as its blob's
    // download starts, reading it as it grows.
    let layer_list = layers
        .iter()
        .map(|d| (d.digest.clone(), Some(d.digest.clone())))
        .collect();
    let tag = r.store_tag();
    let tags: Vec<String> = tag.iter().cloned().collect();
    let board = Board::new(&todo);
    let ready = |hex: &str| board.open(store, hex);
    let got = std::thread::scope(|s| {
        let downloads = s.spawn(|| download_all(store, &c, &todo, staging.path(), opts, &board));
        let got = import_blobs(
            store,
            &lock,
            staging.path(),
            config,
            layer_list,
            &tags,
            "registry",
            &opts.limits,
            Some(&ready),
        );
        if got.is_err() {
            board.stop();
        }
        let downloaded = downloads.join().expect("download thread panicked");
        // What was downloaded is kept for the next pull only when a
        // download failed (a connection lost for good: the next pull
        // resumes); after an import, good or failed, it goes.
        if downloaded.is_ok() {
            for (_, d) in &todo {
                if let Ok(p) = store.partial_download(&d.digest) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        store.tidy_downloads();
        // A download's own error says more than the import's "it failed".
        downloaded?;
        got.with_context(|| format!("{r}: importing"))
    })?;
    debug_assert_eq!(got, id);
    Ok(Pulled {
        id,
        reference: r.to_string(),
        source: source.to_string(),
        tag,
        manifest_digest,
        layers: layers.len(),
        downloaded: todo.len(),
        bytes: bytes_total,
    })
}

/// Downloads the blobs of `todo` into `dir/<hex>`, `opts.jobs` at a time,
/// each through its partial download in the store (resumed if an earlier
/// pull left one); the first error stops the others from starting new
/// blobs.
fn download_all(
    store: &Store,
    c: &Client,
    todo: &[(usize, Descriptor)],
    dir: &Path,
    opts: &PullOptions,
    board: &Board,
) -> Result<()> {
    let multi = (!opts.quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .expect("template")
    .progress_chars("=> ");
    // Blobs never started (a download failed first, or a thread
    // panicked) fail their readers when this returns or unwinds.
    struct Close<'a>(&'a Board);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = Close(board);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let jobs = opts.jobs.clamp(1, 16).min(todo.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if failed.lock().expect("lock").is_some() || board.stopped() {
                    return;
                }
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some((i, d)) = todo.get(k) else { return };
                let bar = multi.as_ref().map(|m| {
                    let b = m.add(ProgressBar::new(d.size));
                    b.set_style(style.clone());
                    b.set_prefix(d.digest[..12].to_string());
                    b
                });
                let dst: PathBuf = dir.join(&d.digest);
                let what = format!("layer {i} (sha256:{})", &d.digest[..12]);
                let watch = board.blob(&d.digest);
                let res = store.partial_download(&d.digest).and_then(|partial| {
                    c.download_blob(d, &dst, &partial, &what, bar.as_ref(), Some(watch))
                });
                if let Err(e) = res {
                    watch.finish(Err(format!("the download failed: {e:#}")));
                    failed.lock().expect("lock").get_or_insert(e);
                    return;
                }
                watch.finish(Ok(()));
                if let Some(b) = bar {
                    b.finish();
                }
            });
        }
    });
    if let Some(m) = &multi {
        let _ = m.clear();
    }
    match failed.into_inner().expect("lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Each blob's download as far as it has got, for the import reading it.
struct Board {
    /// By digest hex, one per blob to download.
    blobs: HashMap<String, Arc<Growing>>,
    /// The import failed: start no more downloads.
    stopped: AtomicBool,
}

impl Board {
    fn new(todo: &[(usize, Descriptor)]) -> Board {
        Board {
            blobs: todo
                .iter()
                .map(|(_, d)| (d.digest.clone(), Growing::new()))
                .collect(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Blob `hex`'s state (one of the blobs to download).
    fn blob(&self, hex: &str) -> &Growing {
        &self.blobs[hex]
    }

    /// Blobs never started (a download failed first) fail their readers.
    fn close(&self) {
        for g in self.blobs.values() {
            g.finish(Err("not downloaded (another download failed first)".into()));
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Waits for blob `hex`'s download to start, and hands it to the
    /// import: complete (in the staging directory), or its partial file
    /// in the store, read as it grows.
    fn open(&self, store: &Store, hex: &str) -> Result<Blob> {
        let Some(g) = self.blobs.get(hex) else {
            bail!("sha256:{hex} is not among the blobs downloaded");
        };
        if g.wait_started()? {
            return Ok(Blob::Complete);
        }
        let partial = store.partial_download(hex)?;
        let f = std::fs::File::open(&partial)
            .with_context(|| format!("opening {}", partial.display()))?;
        Ok(Blob::Arriving(FollowReader::new(f, g.clone())))
    }
}
