//! Live mounts in the store: their records (`mounts/<key>.json`, written
//! by daemons), the lock that orders a mount against `rm`, and the guard
//! that removes a record when its mount ends.

use std::fs::{self};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{read_json, write_replace, MountRecord, Store, StoreLock};
use crate::oci::check_id;

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

impl Store {
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
        StoreLock::take(&self.root.join("mounts").join(".lock"), "the mount records")
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

    /// Writes the record of a live mount (`mounts/<key>.json`, keyed by its
    /// mountpoint) and returns its path; see [`Store::register_mount_guarded`].
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

    /// The live mount at `mountpoint`, if any.
    pub fn mount_at(&self, mountpoint: &Path) -> Result<Option<MountRecord>> {
        Ok(self
            .mounts()?
            .into_iter()
            .find(|m| m.mountpoint == mountpoint))
    }
}
