//! The mount commands: mount, mount-branches, bundle, umount.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::registry::resolve_or_pull;
use super::store::image_config;
use super::{absolute, split_options, BundleArgs, MountArgs, MountBranchesArgs};
use crate::bundle::{image_user, resolve_user, rootless_mount_options, SpecOptions};
use crate::mount::options::{self, Branches};
use crate::mount::{self as mnt, inside_mountpoint, MountOptions};
use crate::store::Store;

/// The layerfs mount at `mp`, not counting a daemon on its way out after
/// its path was unmounted ([`mnt::record_is_live`]).
fn live_mount_at(store: &Store, mp: &Path) -> Result<Option<crate::store::MountRecord>> {
    let wait = std::time::Duration::from_secs(2);
    Ok(store
        .mount_at(mp)?
        .filter(|m| mnt::record_is_live(mp, m.pid, wait)))
}

/// `mountpoint` made canonical, refused if a layerfs mount is there.
fn free_mountpoint(store: &Store, mountpoint: &Path) -> Result<PathBuf> {
    let mp = mnt::canonical_mountpoint(mountpoint)?;
    if let Some(m) = live_mount_at(store, &mp)? {
        bail!(
            "{} is already a layerfs mount (daemon pid {})",
            mp.display(),
            m.pid
        );
    }
    Ok(mp)
}

/// `mount IMAGE MOUNTPOINT`.
pub(crate) fn mount(store: &Store, a: MountArgs) -> Result<()> {
    let id = resolve_or_pull(store, &a.image, &a.pull)?;
    let mp = free_mountpoint(store, &a.mountpoint)?;
    let opts = MountOptions {
        options: split_options(&a.options),
        rw: a.rw.as_deref().map(absolute),
        work: None,
        init_layer: a.init_layer,
    };
    if let Some(rw) = &opts.rw {
        if inside_mountpoint(rw, &mp) {
            bail!(
                "the rw branch {} is inside the mountpoint {}",
                rw.display(),
                mp.display()
            );
        }
    }
    if a.foreground {
        mnt::run_foreground(store, &id, &mp, &opts, a.notify_ready)
    } else {
        mnt::spawn_background(store.root(), &id, &mp, &opts).map(drop)
    }
}

/// `mount-branches MOUNTPOINT -o BRANCHES`.
pub(crate) fn mount_branches(store: &Store, a: MountBranchesArgs) -> Result<()> {
    let mp = free_mountpoint(store, &a.mountpoint)?;
    let br = options::parse(&split_options(&a.options)).map_err(anyhow::Error::msg)?;
    for o in &br.ignored {
        // fuse-overlayfs' wording, for scripts that look for it.
        tracing::warn!("unknown argument ignored: {o}");
    }
    let br = Branches {
        upper: br.upper.as_deref().map(absolute),
        work: br.work.as_deref().map(absolute),
        lowers: {
            // Canonical here, once: the daemon's argv then carries resolved
            // paths, and the inside-mountpoint check needs no resolving.
            let mut canon = mnt::Canonicalizer::default();
            br.lowers
                .iter()
                .map(|p| {
                    let a = absolute(p);
                    canon
                        .canonical(&a)
                        .with_context(|| format!("branch {}", a.display()))
                })
                .collect::<Result<Vec<_>>>()?
        },
        rest: br.rest,
        ignored: Vec::new(),
    };
    if br.work.is_some() && crate::sys::euid() != 0 {
        bail!(
            "upperdir= needs root: overlay-format whiteouts are device nodes (mknod); \
             as non-root use -o br=UPPER=rw:LOWER=ro+wh:... (an AUFS-format rw branch)"
        );
    }
    // The lowers are canonical already; upper and work may not exist yet.
    let inside =
        br.lowers.iter().find(|d| d.starts_with(&mp)).or_else(|| {
            (br.upper.iter().chain(br.work.iter())).find(|d| inside_mountpoint(d, &mp))
        });
    if let Some(d) = inside {
        bail!(
            "branch {} is inside the mountpoint {}",
            d.display(),
            mp.display()
        );
    }
    if a.foreground {
        let opts = MountOptions {
            options: br.rest.clone(),
            rw: br.upper.clone(),
            work: br.work.clone(),
            init_layer: a.init_layer,
        };
        mnt::run_branches_foreground(store, &br.lowers, &mp, &opts, a.notify_ready)
    } else {
        mnt::spawn_branches_background(store, &mp, &br, a.init_layer).map(drop)
    }
}

/// `umount MOUNTPOINT`.
pub(crate) fn umount(store: &Store, mountpoint: &Path) -> Result<()> {
    // A mount whose daemon died cannot be canonicalized (ENOTCONN).
    let mp = mnt::canonical_mountpoint(mountpoint).unwrap_or_else(|_| absolute(mountpoint));
    mnt::umount(store, &mp)
}

/// `bundle IMAGE BUNDLE [-- ARGS]`, or `bundle --umount BUNDLE`.
pub(crate) fn bundle(store: &Store, a: BundleArgs) -> Result<()> {
    if a.umount {
        if a.bundle.is_some() {
            bail!("bundle --umount takes only the bundle directory");
        }
        return bundle_umount(store, Path::new(&a.image));
    }
    let dir = a.bundle.ok_or_else(|| {
        anyhow::anyhow!("usage: layerfs bundle IMAGE BUNDLE (or --umount BUNDLE)")
    })?;
    let id = resolve_or_pull(store, &a.image, &a.pull)?;
    let mut options = split_options(&a.options);
    let (uid, gid) = (crate::sys::uid(), crate::sys::gid());
    if a.rootless {
        rootless_mount_options(&mut options, uid, gid);
    }
    let opts = MountOptions {
        options,
        rw: a.rw.as_deref().map(absolute),
        work: None,
        init_layer: a.init_layer,
    };
    let config = image_config(store, &id)?;
    let spec_opts = SpecOptions {
        rootless: a.rootless,
        host_uid: uid,
        host_gid: gid,
        user: Default::default(),
        args: (!a.args.is_empty()).then_some(a.args),
        hostname: a.hostname,
        readonly: opts.rw.is_none(),
    };
    make_bundle(store, &id, &absolute(&dir), &opts, &config, spec_opts)
}

/// Mounts image `id` at `dir/rootfs` and writes `dir/config.json` (the
/// image's User resolved through the mount); on any failure after the
/// mount, unmounts again.
fn make_bundle(
    store: &Store,
    id: &str,
    dir: &Path,
    opts: &MountOptions,
    config: &Value,
    mut spec_opts: SpecOptions,
) -> Result<()> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let mp = mnt::canonical_mountpoint(&rootfs)?;
    if let Some(m) = live_mount_at(store, &mp)? {
        bail!(
            "{} is already a layerfs mount (daemon pid {}): `layerfs bundle --umount {}` first",
            mp.display(),
            m.pid,
            dir.display()
        );
    }
    if let Some(rw) = &opts.rw {
        if inside_mountpoint(rw, &mp) {
            bail!("the rw branch {} is inside the rootfs", rw.display());
        }
    }
    mnt::spawn_background(store.root(), id, &mp, opts)?;
    let written = (|| -> Result<()> {
        let user = image_user(config);
        let read = |p: &str| std::fs::read_to_string(mp.join(p)).unwrap_or_default();
        spec_opts.user = resolve_user(&user, &read("etc/passwd"), &read("etc/group"))
            .map_err(|e| anyhow::anyhow!("image User {user:?}: {e}"))?;
        let spec = crate::bundle::spec(config, &spec_opts);
        let mut text = serde_json::to_vec_pretty(&spec)?;
        text.push(b'\n');
        crate::store::write_atomic(&dir.join("config.json"), &text)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = mnt::umount(store, &mp);
        return Err(e);
    }
    Ok(())
}

/// Unmounts `dir/rootfs` and removes `dir/config.json`.
fn bundle_umount(store: &Store, dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    let mp = mnt::canonical_mountpoint(&rootfs).unwrap_or_else(|_| absolute(&rootfs));
    let mounted = store.mount_at(&mp)?.is_some() || mnt::is_fuse_mount(&mp);
    if mounted {
        mnt::umount(store, &mp)?;
    }
    match std::fs::remove_file(dir.join("config.json")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mounted => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{} is not a layerfs bundle (no mount, no config.json)",
                dir.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("removing {}/config.json", dir.display())),
    }
}
