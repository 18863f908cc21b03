//! The on-disk store of layers and images.
//!
//! ```text
//! ROOT/
//!   VERSION                  store layout version ("1")
//!   lock                     flock: held exclusively by every writer
//!   layers/<chain id>/       one directory per layer, published by rename
//!     layer.tar              the uncompressed layer, byte-exact
//!     index                  its index (see `index`), memory-mapped at mount
//!     layer.json             LayerRecord
//!   images/<image id>/       published by rename after all its layers
//!     config.json            the image config blob, byte-exact
//!     image.json             ImageRecord
//!   tags.json                {"name:tag": "<image id>"}, replaced by rename
//!   tmp/                     staging; emptied by the next writer
//!   tmp/downloads/<hex>      blobs a pull did not finish, kept so that the
//!                            next pull of the same blob resumes (Range)
//!   mounts/<key>.json        live mounts (MountRecord), written by daemons
//! ```
//!
//! The store is its owner's alone: the root and its directories are 0700
//! whatever the umask (checked at every open: a looser one is closed, or
//! the open refused when it is not ours to close), and files are created
//! 0600. Image content includes files an image keeps 0600.
//!
//! Every path read back from the store (the publish journal, records,
//! tags) is validated before use, so no store file can make layerfs touch
//! anything outside the store.
//!
//! Writers (import, rm, tag) hold `lock`; on taking it they delete what a
//! killed writer left behind: everything in `tmp/` and any layer no image
//! references. Readers take no lock: every change they can see is a single
//! rename, so they see the store before or after it, never half of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

mod mounts;
mod records;

pub use mounts::MountRegistration;
pub use records::{BrokenImage, ImageRecord, LayerRecord, MountRecord, Publish};

pub use crate::oci::check_id;
use crate::oci::{is_hex64, normalize_ref, parse_digest};

/// The store layout version this layerfs reads and writes (`ROOT/VERSION`).
pub const STORE_VERSION: &str = "1";

/// Mode of the store root and of every directory the store makes.
const DIR_MODE: u32 = 0o700;
/// Mode of every file the store writes.
const FILE_MODE: u32 = 0o600;

/// The directory under `tmp/` that keeps unfinished downloads.
const DOWNLOADS: &str = "downloads";

/// The top-level directories of a store.
const SUBDIRS: [&str; 4] = ["layers", "images", "tmp", "mounts"];

/// The default store root: `$LAYERFS_ROOT`, else `/var/lib/layerfs` for
/// root, else `$XDG_DATA_HOME/layerfs` (`~/.local/share/layerfs`). Root in
/// a user namespace (rootless podman's) is its user, not root.
pub fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("LAYERFS_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    if crate::sys::host_root() {
        return PathBuf::from("/var/lib/layerfs");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("layerfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/layerfs")
}

/// An open store at its root directory (see the module doc for its layout).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The writer lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the flock of `path` (created 0600 if missing), waiting for it;
    /// `what` names the lock in an error.
    fn take(path: &Path, what: &str) -> Result<StoreLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        crate::sys::lock_exclusive(&file).with_context(|| format!("locking {what}"))?;
        Ok(StoreLock { _file: file })
    }
}

/// A staging directory under `tmp/`, removed on drop unless published.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// The staging directory (under the store's `tmp/`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Writes `data` to `path` atomically (a temporary file beside it, 0600,
/// fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::sys::write_file_atomic(path, data, FILE_MODE)
        .with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` with `data` in one rename, without `write_atomic`'s
/// fsync: for state that does not have to survive a crash.
fn write_replace(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    create_private(&tmp)?
        .write_all(data)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Creates (or truncates) a file readable and writable by its owner only.
pub fn create_private(path: &Path) -> Result<File> {
    File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Creates `dir` (its parents as usual) with mode 0700, or closes an
/// existing one to others: what the store keeps is image content, which
/// may include files an image keeps 0600. An open directory that is not
/// ours to close is refused.
fn private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("creating store directory {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("creating store directory {}", dir.display()))
        }
    }
    let md = fs::metadata(dir).with_context(|| format!("store directory {}", dir.display()))?;
    if !md.is_dir() {
        bail!("store path {} is not a directory", dir.display());
    }
    let mode = md.mode() & 0o7777;
    if mode == DIR_MODE {
        return Ok(());
    }
    // Made just now under an unusual umask (0o077 bits stripped more), or
    // an open store from before: set exactly 0700.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(|e| {
        anyhow!(
            "store directory {} is open to other users (mode {mode:04o}, owner uid {}) \
             and cannot be closed ({e}); refusing to use it: chmod 0700 it, or pick \
             another store with --root",
            dir.display(),
            md.uid()
        )
    })?;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "store directory {} was open to other users (mode {mode:04o}); closed it (0700)",
            dir.display()
        );
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&data).with_context(|| format!("corrupt store file {}", path.display()))
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        private_dir(root)?;
        for d in SUBDIRS {
            private_dir(&root.join(d))?;
        }
        let vpath = root.join("VERSION");
        match fs::read_to_string(&vpath) {
            Ok(v) if v.trim() == STORE_VERSION => {}
            Ok(v) => bail!(
                "store {} has layout version {:?}; this layerfs understands version {STORE_VERSION}",
                root.display(),
                v.trim()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(&vpath, STORE_VERSION.as_bytes())?,
            Err(e) => return Err(e).with_context(|| format!("reading {}", vpath.display())),
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the writer lock, then removes what an interrupted writer left.
    pub fn lock(&self) -> Result<StoreLock> {
        let lock = StoreLock::take(&self.root.join("lock"), "the store")?;
        self.recover()?;
        Ok(lock)
    }

    fn recover(&self) -> Result<()> {
        let journal = self.root.join("publish.json");
        if journal.exists() {
            let p: Publish = read_json(&journal)?;
            p.validate().with_context(|| {
                format!(
                    "publish journal {} is not one layerfs writes; refusing to roll it \
                     forward (inspect it, then remove it to go on)",
                    journal.display()
                )
            })?;
            tracing::info!(
                "finishing an interrupted import ({} renames)",
                p.renames.len()
            );
            self.apply(&p)?;
            fs::remove_file(&journal)?;
        }
        for e in fs::read_dir(self.root.join("tmp"))? {
            let p = e?.path();
            if p.file_name() == Some(DOWNLOADS.as_ref()) {
                continue; // kept for resumed pulls (see `partial_download`)
            }
            tracing::info!("removing leftover staging {}", p.display());
            let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
        }
        let (used, complete) = self.used_layers()?;
        if !complete {
            tracing::warn!(
                "not removing unused layers while an image record is damaged (`layerfs images` names it)"
            );
            return Ok(());
        }
        for e in fs::read_dir(self.root.join("layers"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !used.contains(&name) {
                tracing::info!("removing layer {name}, which no image uses");
                self.remove_dir_atomically(&e.path())?;
            }
        }
        Ok(())
    }

    /// Publishes staged layers and images and sets tags, all or nothing:
    /// the plan is written to `publish.json` first, so that a writer killed
    /// half-way is rolled forward by the next one (see `recover`). Staged
    /// paths must be under `tmp/`. Caller holds the lock.
    pub fn publish(&self, p: &Publish) -> Result<()> {
        p.validate().context("publishing")?;
        let journal = self.root.join("publish.json");
        write_atomic(&journal, &serde_json::to_vec_pretty(p)?)?;
        self.apply(p)?;
        fs::remove_file(&journal)?;
        Ok(())
    }

    /// Tags first: a tag naming an image that does not exist yet is
    /// invisible to readers. Then the renames, layers before images, so the
    /// rename of an image directory is the moment readers see the import.
    fn apply(&self, p: &Publish) -> Result<()> {
        if !p.tags.is_empty() {
            let mut tags = self.tags()?;
            tags.extend(p.tags.clone());
            self.set_tags(&tags)?;
        }
        for (from, to) in &p.renames {
            let (from, to) = (self.root.join(from), self.root.join(to));
            if from.exists() {
                if to.exists() {
                    fs::remove_dir_all(&from)?; // published before: same content
                } else {
                    fs::rename(&from, &to)
                        .with_context(|| format!("publishing {}", to.display()))?;
                }
            }
        }
        Ok(())
    }

    /// Removes a directory so that readers never see it half-deleted:
    /// renamed into `tmp/` first, then deleted.
    fn remove_dir_atomically(&self, dir: &Path) -> Result<()> {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let grave = self
            .root
            .join("tmp")
            .join(format!("rm-{}-{}", std::process::id(), name));
        fs::rename(dir, &grave).with_context(|| format!("removing {}", dir.display()))?;
        fs::remove_dir_all(&grave).with_context(|| format!("removing {}", grave.display()))?;
        Ok(())
    }

    /// Where a pull keeps blob `hex` while it downloads, so that a pull
    /// interrupted (killed, or its connection lost) leaves the bytes it
    /// got for the next pull of that blob to resume from: `tmp/downloads/`,
    /// which writers' recovery keeps (caller holds the lock). The file is
    /// moved out when its blob is complete and verified.
    pub fn partial_download(&self, hex: &str) -> Result<PathBuf> {
        if !is_hex64(hex) {
            bail!("{hex:?} is not a sha256 digest");
        }
        let dir = self.root.join("tmp").join(DOWNLOADS);
        private_dir(&dir)?;
        Ok(dir.join(hex))
    }

    /// Removes `tmp/downloads/` once no partial download is left in it.
    pub fn tidy_downloads(&self) {
        let _ = fs::remove_dir(self.root.join("tmp").join(DOWNLOADS));
    }

    /// A fresh staging directory under `tmp/` (caller holds the lock).
    pub fn staging(&self, what: &str) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = self
            .root
            .join("tmp")
            .join(format!("{what}-{}-{nanos}", std::process::id()));
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Staging { path })
    }

    /// The directory of layer `chain_id` (`layers/<chain id>`), whether or not
    /// it exists.
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join("layers").join(chain_id)
    }

    /// Is layer `chain_id` in the store (its `layer.json` published)?
    pub fn has_layer(&self, chain_id: &str) -> bool {
        self.layer_dir(chain_id).join("layer.json").is_file()
    }

    /// The record of layer `chain_id`, validated.
    pub fn layer(&self, chain_id: &str) -> Result<LayerRecord> {
        check_id(chain_id)?;
        let path = self.layer_dir(chain_id).join("layer.json");
        let rec: LayerRecord = read_json(&path)?;
        rec.validate(chain_id)
            .with_context(|| format!("corrupt store file {}", path.display()))?;
        Ok(rec)
    }

    /// The directory of image `id` (`images/<id>`), whether or not it exists.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.root.join("images").join(id)
    }

    /// Is image `id` in the store (its `image.json` published)?
    pub fn has_image(&self, id: &str) -> bool {
        self.image_dir(id).join("image.json").is_file()
    }

    /// The record of image `id`, validated.
    pub fn image(&self, id: &str) -> Result<ImageRecord> {
        check_id(id)?;
        let path = self.image_dir(id).join("image.json");
        let rec: ImageRecord = read_json(&path)?;
        rec.validate(id)
            .with_context(|| format!("corrupt store file {}", path.display()))?;
        Ok(rec)
    }

    /// The config blob of image `id`, byte-exact.
    pub fn config(&self, id: &str) -> Result<Vec<u8>> {
        let p = self.image_dir(id).join("config.json");
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The images whose records read back, newest first. A damaged one
    /// (see [`Store::broken_images`]) is left out with a warning, so the
    /// damage stays with the image it hit.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let (mut out, broken) = self.scan_images()?;
        for (id, err) in &broken {
            tracing::warn!("image {}: {err:#}", &id[..12.min(id.len())]);
        }
        out.sort_by(|a, b| b.imported.cmp(&a.imported).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The images whose record (`image.json`) cannot be read or does not
    /// validate: (id, what is wrong).
    pub fn broken_images(&self) -> Result<Vec<BrokenImage>> {
        Ok(self.scan_images()?.1)
    }

    fn scan_images(&self) -> Result<(Vec<ImageRecord>, Vec<BrokenImage>)> {
        let mut good = Vec::new();
        let mut broken = Vec::new();
        for e in fs::read_dir(self.root.join("images"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_hex64(&name) {
                tracing::warn!(
                    "ignoring {}: not an image directory layerfs made",
                    e.path().display()
                );
                continue;
            }
            if !self.has_image(&name) {
                continue;
            }
            match self.image(&name) {
                Ok(rec) => good.push(rec),
                Err(err) => broken.push((name, err)),
            }
        }
        broken.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((good, broken))
    }

    /// The layers some image uses, and whether that is all of them: with a
    /// broken image record its layers are unknown, and nothing may be
    /// freed as unused.
    fn used_layers(&self) -> Result<(BTreeSet<String>, bool)> {
        let (good, broken) = self.scan_images()?;
        let used = good.into_iter().flat_map(|i| i.layers).collect();
        Ok((used, broken.is_empty()))
    }

    /// All tags: reference (`name:tag`) -> image id; empty without `tags.json`.
    pub fn tags(&self) -> Result<BTreeMap<String, String>> {
        let p = self.root.join("tags.json");
        if !p.exists() {
            return Ok(BTreeMap::new());
        }
        let tags: BTreeMap<String, String> = read_json(&p)?;
        for (tag, id) in &tags {
            check_id(id)
                .with_context(|| format!("corrupt store file {}: tag {tag:?}", p.display()))?;
        }
        Ok(tags)
    }

    /// Replaces `tags.json` with `tags` (atomically, by rename).
    pub fn set_tags(&self, tags: &BTreeMap<String, String>) -> Result<()> {
        write_atomic(
            &self.root.join("tags.json"),
            &serde_json::to_vec_pretty(tags)?,
        )
    }

    /// Tags of one image, sorted.
    pub fn tags_of(&self, id: &str) -> Result<Vec<String>> {
        Ok(self
            .tags()?
            .into_iter()
            .filter(|(_, v)| v == id)
            .map(|(k, _)| k)
            .collect())
    }

    /// Resolves a user's image reference: a full id (optionally
    /// `sha256:`-prefixed), a tag, or a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<String> {
        if let Some(id) = self.find(reference)? {
            return Ok(id);
        }
        let tags = self.tags()?;
        let known: Vec<String> = tags.keys().cloned().collect();
        if known.is_empty() {
            bail!(
                "no image {reference:?} in the store {}",
                self.root.display()
            );
        }
        bail!("no image {reference:?}; known tags: {}", known.join(", "))
    }

    /// [`Store::resolve`], with `None` where no image matches (an
    /// ambiguous id prefix is still an error).
    pub fn find(&self, reference: &str) -> Result<Option<String>> {
        if let Some(h) = parse_digest(reference) {
            if self.has_image(h) {
                return Ok(Some(h.to_string()));
            }
        }
        let tags = self.tags()?;
        if let Some(id) = tags.get(&normalize_ref(reference)) {
            if self.has_image(id) {
                return Ok(Some(id.clone()));
            }
        }
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|c| c.is_ascii_hexdigit())
        {
            let prefix = prefix.to_ascii_lowercase();
            let matches: Vec<String> = self
                .images()?
                .into_iter()
                .map(|i| i.id)
                .filter(|id| id.starts_with(&prefix))
                .collect();
            match matches.len() {
                1 => return Ok(Some(matches[0].clone())),
                0 => {}
                _ => bail!(
                    "image reference {reference:?} is ambiguous; it matches:\n  {}",
                    matches.join("\n  ")
                ),
            }
        }
        Ok(None)
    }

    /// Removes an image and the layers no other image uses. Refused while
    /// the image is mounted. Caller holds the lock.
    pub fn remove_image(&self, id: &str) -> Result<Vec<String>> {
        // Held until the image is gone: a mount registers under it too,
        // so it either sees no image or is seen here.
        let _mounts = self.lock_mounts()?;
        if let Some(m) = self.mounts()?.into_iter().find(|m| m.image == id) {
            bail!(
                "image {} is mounted at {} (daemon pid {}); unmount it first",
                &id[..12.min(id.len())],
                m.mountpoint.display(),
                m.pid
            );
        }
        let rec = self.image(id)?;
        let mut tags = self.tags()?;
        tags.retain(|_, v| v != id);
        self.set_tags(&tags)?;
        self.remove_dir_atomically(&self.image_dir(id))?;
        let (used, complete) = self.used_layers()?;
        if !complete {
            tracing::warn!(
                "keeping the layers of image {}: a damaged image record may use them",
                &id[..12.min(id.len())]
            );
        }
        let mut removed = Vec::new();
        for l in rec.layers.iter().rev() {
            if complete && !used.contains(l) && self.layer_dir(l).exists() {
                self.remove_dir_atomically(&self.layer_dir(l))?;
                removed.push(l.clone());
            }
        }
        Ok(removed)
    }
}
