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
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::oci::{is_hex64, normalize_ref, parse_digest};

pub const STORE_VERSION: &str = "1";

/// Mode of the store root and of every directory the store makes.
const DIR_MODE: u32 = 0o700;
/// Mode of every file the store writes.
const FILE_MODE: u32 = 0o600;

/// The top-level directories of a store.
const SUBDIRS: [&str; 4] = ["layers", "images", "tmp", "mounts"];

/// What the store knows of one layer (`layer.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    pub chain_id: String,
    pub diff_id: String,
    pub parent: Option<String>,
    /// Size of the uncompressed tar.
    pub size: u64,
    pub entries: u32,
    pub files: u32,
    pub whiteouts: u32,
    pub index_version: u32,
}

/// What the store knows of one image (`image.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
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
    fn validate(&self, dir_name: &str) -> Result<()> {
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
    fn validate(&self, dir_name: &str) -> Result<()> {
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
    pub pid: u32,
    pub image: String,
    pub mountpoint: PathBuf,
    pub rw: Option<PathBuf>,
    /// `mount-branches`: the read-only branches, top first (the image is
    /// empty then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lowerdirs: Vec<PathBuf>,
}

/// The default store root: `$LAYERFS_ROOT`, else `/var/lib/layerfs` for
/// root, else `$XDG_DATA_HOME/layerfs` (`~/.local/share/layerfs`).
pub fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("LAYERFS_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    if crate::sys::euid() == 0 {
        return PathBuf::from("/var/lib/layerfs");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("layerfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/layerfs")
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The writer lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// A live mount's record, removed on drop (the mount ended or failed).
#[derive(Debug)]
pub struct MountRegistration {
    path: PathBuf,
}

impl MountRegistration {
    /// The record file (`mounts/<key>.json`); its log is beside it.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MountRegistration {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A staging directory under `tmp/`, removed on drop unless published.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
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

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the writer lock, then removes what an interrupted writer left.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        crate::sys::lock_exclusive(&file).context("locking the store")?;
        let lock = StoreLock { _file: file };
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

    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join("layers").join(chain_id)
    }

    pub fn has_layer(&self, chain_id: &str) -> bool {
        self.layer_dir(chain_id).join("layer.json").is_file()
    }

    pub fn layer(&self, chain_id: &str) -> Result<LayerRecord> {
        check_id(chain_id)?;
        let path = self.layer_dir(chain_id).join("layer.json");
        let rec: LayerRecord = read_json(&path)?;
        rec.validate(chain_id)
            .with_context(|| format!("corrupt store file {}", path.display()))?;
        Ok(rec)
    }

    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.root.join("images").join(id)
    }

    pub fn has_image(&self, id: &str) -> bool {
        self.image_dir(id).join("image.json").is_file()
    }

    pub fn image(&self, id: &str) -> Result<ImageRecord> {
        check_id(id)?;
        let path = self.image_dir(id).join("image.json");
        let rec: ImageRecord = read_json(&path)?;
        rec.validate(id)
            .with_context(|| format!("corrupt store file {}", path.display()))?;
        Ok(rec)
    }

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
        if let Some(h) = parse_digest(reference) {
            if self.has_image(h) {
                return Ok(h.to_string());
            }
        }
        let tags = self.tags()?;
        if let Some(id) = tags.get(&normalize_ref(reference)) {
            if self.has_image(id) {
                return Ok(id.clone());
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
                1 => return Ok(matches[0].clone()),
                0 => {}
                _ => bail!(
                    "image reference {reference:?} is ambiguous; it matches:\n  {}",
                    matches.join("\n  ")
                ),
            }
        }
        let known: Vec<String> = tags.keys().cloned().collect();
        if known.is_empty() {
            bail!(
                "no image {reference:?} in the store {}",
                self.root.display()
            );
        }
        bail!("no image {reference:?}; known tags: {}", known.join(", "))
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

    fn mount_key(mountpoint: &Path) -> String {
        crate::oci::sha256_hex(mountpoint.as_os_str().as_encoded_bytes())[..16].to_string()
    }

    /// Removes image `id` (its directory and its tags) even when its record
    /// is damaged, keeping its layers (`check --repair` decides about
    /// those). Refused while the image is mounted. Caller holds the lock.
    pub fn force_remove_image(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let _mounts = self.lock_mounts()?;
        if let Some(m) = self.mounts()?.into_iter().find(|m| m.image == id) {
            bail!(
                "it is mounted at {} (daemon pid {})",
                m.mountpoint.display(),
                m.pid
            );
        }
        let mut tags = self.tags()?;
        let n = tags.len();
        tags.retain(|_, v| v != id);
        if tags.len() != n {
            self.set_tags(&tags)?;
        }
        let dir = self.image_dir(id);
        if dir.exists() {
            self.remove_dir_atomically(&dir)?;
        }
        Ok(())
    }

    /// Removes layer `chain` whatever any record says of it. Refused while
    /// a mounted image uses it. Caller holds the lock.
    pub fn force_remove_layer(&self, chain: &str) -> Result<()> {
        check_id(chain)?;
        let _mounts = self.lock_mounts()?;
        for m in self.mounts()? {
            if m.image.is_empty() {
                continue;
            }
            if self
                .image(&m.image)
                .is_ok_and(|r| r.layers.iter().any(|l| l == chain))
            {
                bail!(
                    "image {} using it is mounted at {}",
                    &m.image[..12.min(m.image.len())],
                    m.mountpoint.display()
                );
            }
        }
        let dir = self.layer_dir(chain);
        if dir.exists() {
            self.remove_dir_atomically(&dir)?;
        }
        Ok(())
    }

    /// The lock that orders mounting against `rm`: held by `rm` while it
    /// checks the mount records and removes the image, and by a mount
    /// while it checks that its image exists and registers itself (before
    /// its layers are opened). Short-lived, so a mount never waits for an
    /// import (the writer lock).
    pub fn lock_mounts(&self) -> Result<StoreLock> {
        let path = self.root.join("mounts").join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        crate::sys::lock_exclusive(&file).context("locking the mount records")?;
        Ok(StoreLock { _file: file })
    }

    /// Registers a mount of image `rec.image` (empty: directory branches)
    /// before its layers are opened: under [`Store::lock_mounts`], the
    /// image must still exist, and from then on `rm` refuses it. The
    /// record goes away when the returned guard is dropped.
    pub fn register_mount_guarded(&self, rec: &MountRecord) -> Result<MountRegistration> {
        let _lock = self.lock_mounts()?;
        if !rec.image.is_empty() && !self.has_image(&rec.image) {
            bail!(
                "image {} is not in the store (removed?)",
                &rec.image[..12.min(rec.image.len())]
            );
        }
        let path = self.register_mount(rec)?;
        Ok(MountRegistration { path })
    }

    pub fn register_mount(&self, rec: &MountRecord) -> Result<PathBuf> {
        let p = self
            .root
            .join("mounts")
            .join(format!("{}.json", Store::mount_key(&rec.mountpoint)));
        // Atomic (readers never see half a record) but not fsynced: a
        // record describes a live process, and nothing outlives a crash
        // that could lose it (a record whose daemon is gone is dropped by
        // `mounts`, an unreadable one skipped).
        write_replace(&p, &serde_json::to_vec_pretty(rec)?)?;
        Ok(p)
    }

    /// Live mounts; records of daemons that are gone are removed.
    pub fn mounts(&self) -> Result<Vec<MountRecord>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("mounts"))? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(rec) = read_json::<MountRecord>(&p) else {
                continue;
            };
            if crate::sys::process_alive(rec.pid) {
                out.push(rec);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(out)
    }

    pub fn mount_at(&self, mountpoint: &Path) -> Result<Option<MountRecord>> {
        Ok(self
            .mounts()?
            .into_iter()
            .find(|m| m.mountpoint == mountpoint))
    }
}

/// An all-or-nothing change to the store: staged directories to move into
/// place (paths relative to the store root) and tags to set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Publish {
    pub renames: Vec<(PathBuf, PathBuf)>,
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

pub use crate::oci::check_id;

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
