//! Mount lifecycle: open an image's layers, mount, tell the waiting parent
//! that the mount is live, serve until unmounted or signalled, clean up.
//!
//! `layerfs mount` (without `--foreground`) starts its daemon in a new
//! session (`spawn.rs`: `mount-branches` forks, `mount` re-executes itself
//! with `--foreground --notify-ready`), reads one line from the daemon's
//! stdout ("READY" once the kernel has completed the FUSE handshake) and
//! then checks the mount answers `statfs` before returning. Anything else
//! is a failure, reported with the daemon's stderr.

pub mod fusermount;
pub mod options;
mod spawn;

pub use spawn::{spawn_background, spawn_branches_background};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fuser::{Config, MountOption, SessionACL};

use crate::fs::Vfs;
use crate::fuse::LayerFs;
use crate::idmap::Owners;
use crate::layer::Layer;
use crate::store::{MountRecord, Store};
use crate::upper::Upper;

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Options of one mount.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// `-o` options, comma-separated lists already split.
    pub options: Vec<String>,
    /// The read-write branch; `None` mounts read-only.
    pub rw: Option<PathBuf>,
    /// Overlay's workdir: `rw` is then an overlay-format upperdir
    /// (`mount-branches` only).
    pub work: Option<PathBuf>,
    /// Put the Docker init layer (mount points and placeholder files a
    /// runtime bind-mounts over) on top of the image's layers.
    pub init_layer: bool,
}

/// The fuser session config, and the same mount options as the string
/// `fusermount3 -o` takes (for unprivileged mounts).
fn fuse_config(image: &str, opts: &MountOptions) -> Result<(Config, String)> {
    let fsname = format!("layerfs:{}", &image[..12.min(image.len())]);
    let rw = opts.rw.is_some();
    let mut strs = vec![
        if rw { "rw" } else { "ro" }.to_string(),
        "default_permissions".into(),
        format!("fsname={fsname}"),
        "subtype=layerfs".into(),
    ];
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::Subtype("layerfs".into()),
        MountOption::DefaultPermissions,
        if rw { MountOption::RW } else { MountOption::RO },
    ];
    for o in &opts.options {
        if !matches!(o.as_str(), "" | "ro" | "default_permissions" | "rw") {
            strs.push(o.clone());
        }
        let mo = match o.as_str() {
            "" => continue,
            "allow_other" => {
                cfg.acl = SessionACL::All;
                continue;
            }
            "allow_root" => {
                cfg.acl = SessionACL::RootAndOwner;
                continue;
            }
            "default_permissions" => continue,
            "ro" if !rw => continue,
            "ro" => bail!("-o ro contradicts --rw"),
            "rw" if rw => continue,
            "rw" => bail!("-o rw needs a read-write branch: give it with --rw DIR"),
            "auto_unmount" => MountOption::AutoUnmount,
            "suid" | "dev" if crate::sys::euid() != 0 => {
                // fusermount3 mounts every user's FUSE mount nosuid,nodev
                // whatever it is asked.
                tracing::warn!("-o {o}: ignored: an unprivileged mount is always nosuid,nodev");
                MountOption::CUSTOM(o.clone())
            }
            "dev" => MountOption::Dev,
            "nodev" => MountOption::NoDev,
            "suid" => MountOption::Suid,
            "nosuid" => MountOption::NoSuid,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            other => MountOption::CUSTOM(other.to_string()),
        };
        cfg.mount_options.push(mo);
    }
    cfg.n_threads = Some(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8),
    );
    cfg.clone_fd = true;
    Ok((cfg, strs.join(",")))
}

/// Takes out of `opts` (ours, never for the kernel) every option `decide`
/// knows: `Some(Ok(on))`, the last one given wins; `Some(Err(message))`
/// for a value it refuses. `default` if none is given.
fn take_switch(
    opts: &mut Vec<String>,
    default: bool,
    decide: impl Fn(&str) -> Option<Result<bool, String>>,
) -> Result<bool> {
    let mut on = default;
    let mut bad = None;
    opts.retain(|o| match decide(o) {
        None => true,
        Some(Ok(v)) => {
            on = v;
            false
        }
        Some(Err(m)) => {
            bad.get_or_insert(m);
            false
        }
    });
    match bad {
        Some(m) => bail!(m),
        None => Ok(on),
    }
}

/// Takes `-o volatile` (overlayfs's spelling) and `-o fsync=0|1`
/// (fuse-overlayfs's, which podman's storage.conf passes to a mount
/// program) out of the options: whether copy-ups and fsync requests skip
/// syncing the rw branch.
fn volatile_option(opts: &mut Vec<String>) -> Result<bool> {
    take_switch(opts, false, |o| match o {
        "volatile" | "fsync=0" => Some(Ok(true)),
        "fsync=1" => Some(Ok(false)),
        _ if o.starts_with("fsync=") => Some(Err(format!("-o {o}: give fsync=0 or fsync=1"))),
        _ => None,
    })
}

/// Takes `-o noxattrs=1|0` (fuse-overlayfs's spelling; plain `noxattrs`
/// too) out of the options: a mount without extended attributes, where
/// every xattr request answers ENOSYS, after which the kernel itself
/// answers getxattr, setxattr, listxattr and removexattr with EOPNOTSUPP
/// (and ACLs are not there) without asking the daemon.
fn noxattrs_option(opts: &mut Vec<String>) -> Result<bool> {
    take_switch(opts, false, |o| match o {
        "noxattrs" | "noxattrs=1" => Some(Ok(true)),
        "noxattrs=0" => Some(Ok(false)),
        _ if o.starts_with("noxattrs=") => {
            Some(Err(format!("-o {o}: give noxattrs=1 or noxattrs=0")))
        }
        _ => None,
    })
}

/// Takes `-o passthrough=on|off` out of the options: whether files backed
/// by whole real files may use FUSE passthrough (default on; it needs
/// CAP_SYS_ADMIN, else it is off anyway).
fn passthrough_option(opts: &mut Vec<String>) -> Result<bool> {
    take_switch(opts, true, |o| match o.strip_prefix("passthrough=")? {
        "on" => Some(Ok(true)),
        "off" => Some(Ok(false)),
        v => Some(Err(format!("-o passthrough={v}: give on or off"))),
    })
}

/// Runs the FUSE daemon in this process until the mount goes away.
/// With `notify_ready`, writes "READY\n" to stdout once mounted and then
/// detaches stdout and stderr (to the log file `mounts/<key>.log`).
pub fn run_foreground(
    store: &Store,
    id: &str,
    mountpoint: &Path,
    opts: &MountOptions,
    notify_ready: bool,
) -> Result<()> {
    let upper = match &opts.rw {
        Some(dir) => Some(Upper::open(dir, Some(id))?),
        None => None,
    };
    // Registered before the layers are opened, under the store's mount
    // lock: a racing `rm` of the image either finished first (then this
    // fails here) or sees this mount and refuses.
    let registration = store.register_mount_guarded(&MountRecord {
        pid: std::process::id(),
        image: id.to_string(),
        mountpoint: mountpoint.to_path_buf(),
        rw: upper.as_ref().map(|u| u.root().to_path_buf()),
        lowerdirs: Vec::new(),
    })?;
    let mut layers = crate::layer::LayerStack::open(store, id)?.layers;
    if opts.init_layer {
        layers.insert(0, crate::layer::init::layer()?);
    }
    tracing::info!(image = id, layers = layers.len(), rw = ?opts.rw, "opening image");
    serve(
        registration,
        Source::Image(id.to_string()),
        layers,
        upper,
        mountpoint,
        opts,
        notify_ready,
    )
}

/// Runs the daemon of `layerfs mount-branches`: plain directories as
/// layers (top first, canonical: see [`Canonicalizer`]), the rw branch `opts.rw` on top (AUFS format, or
/// overlay format with `opts.work`).
pub fn run_branches_foreground(
    store: &Store,
    lowers: &[PathBuf],
    mountpoint: &Path,
    opts: &MountOptions,
    notify_ready: bool,
) -> Result<()> {
    let dirs = lowers.to_vec();
    // No branch is walked: each directory is listed when first looked up
    // or listed (`layer::index::lazy`), so a mount costs the same for any
    // size of branch.
    let mut layers = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| Layer::directory(&format!("branch{i}:{}", dir.display()), dir))
        .collect::<Result<Vec<_>>>()?;
    if opts.init_layer {
        layers.insert(0, crate::layer::init::layer()?);
    }
    let upper = match (&opts.rw, &opts.work) {
        (Some(dir), Some(work)) => Some(Upper::open_overlay(dir, work)?),
        (Some(dir), None) => Some(Upper::open(dir, None)?),
        (None, _) => None,
    };
    // A mount-branches mount records no image (empty), but its lowerdirs.
    let registration = store.register_mount_guarded(&MountRecord {
        pid: std::process::id(),
        image: String::new(),
        mountpoint: mountpoint.to_path_buf(),
        rw: upper.as_ref().map(|u| u.root().to_path_buf()),
        lowerdirs: dirs.clone(),
    })?;
    serve(
        registration,
        Source::Dirs(dirs),
        layers,
        upper,
        mountpoint,
        opts,
        notify_ready,
    )
}

/// What a mount shows, and what its read-write branch lies on: an image
/// of the store, or directory branches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An image of the store, by id.
    Image(String),
    /// `mount-branches`' read-only directories, top first.
    Dirs(Vec<PathBuf>),
}

impl Source {
    /// What the live mount of `record` shows (`None` if the record names
    /// neither an image nor directories).
    pub fn of_record(record: &MountRecord) -> Option<Source> {
        if !record.image.is_empty() {
            Some(Source::Image(record.image.clone()))
        } else if !record.lowerdirs.is_empty() {
            Some(Source::Dirs(record.lowerdirs.clone()))
        } else {
            None
        }
    }
}

/// Mounts `layers` (+ `upper`) at `mountpoint` and serves until unmounted.
fn serve(
    registration: crate::store::MountRegistration,
    source: Source,
    layers: Vec<Layer>,
    upper: Option<Upper>,
    mountpoint: &Path,
    opts: &MountOptions,
    notify_ready: bool,
) -> Result<()> {
    let mut fuse_opts = opts.clone();
    let owners = Owners::from_options(&mut fuse_opts.options).map_err(|e| anyhow!(e))?;
    let passthrough = passthrough_option(&mut fuse_opts.options)?;
    let volatile = volatile_option(&mut fuse_opts.options)?;
    let noxattrs = noxattrs_option(&mut fuse_opts.options)?;
    let opts = &fuse_opts;
    let vfs = Arc::new(
        Vfs::with_upper(layers, upper)?
            .with_owners(owners)
            .with_volatile(volatile),
    );
    let fsname = match &source {
        Source::Image(id) => id.as_str(),
        Source::Dirs(_) => "branches",
    };
    let (cfg, fusermount_opts) = fuse_config(fsname, opts)?;
    let sigset = crate::sys::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    let fs = LayerFs::new(vfs)
        .with_passthrough(passthrough)
        .without_xattrs(noxattrs);
    let mountpoint_owned = mountpoint.to_path_buf();
    // Root mounts with mount(2) through fuser; anyone else goes through the
    // setuid fusermount3, which also works where /dev/fuse is root-only.
    let (session, unmount): (
        fuser::Session<LayerFs>,
        Box<dyn FnMut() -> Result<()> + Send>,
    ) = if crate::sys::euid() == 0 {
        let mut s = fuser::Session::new(fs, mountpoint, &cfg)
            .with_context(|| format!("mounting at {}", mountpoint.display()))?;
        let mut u = s.unmount_callable();
        (s, Box::new(move || u.unmount().map_err(Into::into)))
    } else {
        let fd = crate::mount::fusermount::mount(mountpoint, &fusermount_opts)?;
        let s = fuser::Session::from_fd(fs, fd, cfg.acl, cfg.clone())
            .with_context(|| format!("starting the FUSE session at {}", mountpoint.display()))?;
        (
            s,
            Box::new(move || crate::mount::fusermount::unmount(&mountpoint_owned)),
        )
    };
    // From here on the kernel has the mount: any failure takes it away
    // again, so no dead mount ("Transport endpoint is not connected") is
    // left behind.
    let unmount = Arc::new(parking_lot::Mutex::new(unmount));
    let ready = (|| -> Result<()> {
        let unmount = unmount.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let sig = sigset.wait();
                tracing::info!("signal {sig}: unmounting");
                if let Err(e) = (unmount.lock())() {
                    tracing::error!("unmount failed: {e}");
                }
            })?;
        if notify_ready {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY")?;
            out.flush()?;
            drop(out);
            detach_stdio(&registration.path().with_extension("log"))?;
        }
        Ok(())
    })();
    if let Err(e) = ready {
        if let Err(u) = (unmount.lock())() {
            tracing::error!("unmounting after a failed start: {u}");
        }
        return Err(e);
    }
    let res = session.run();
    drop(registration);
    tracing::info!("unmounted {}", mountpoint.display());
    res.context("FUSE session")
}

fn detach_stdio(log: &Path) -> Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    let log = crate::store::create_private(log)?;
    crate::sys::redirect_stdio(&null, &log);
    Ok(())
}

/// Does `statfs` on `path` say it is a FUSE mount?
pub fn is_fuse_mount(path: &Path) -> bool {
    crate::sys::fs_type(path).is_ok_and(|t| t == FUSE_SUPER_MAGIC)
}

/// Unmounts `mountpoint` and waits (up to 10 s) for its daemon to exit.
/// A FUSE mount whose daemon is gone (every access says "Transport
/// endpoint is not connected") is taken away too, lazily.
pub fn umount(store: &Store, mountpoint: &Path) -> Result<()> {
    let rec = store.mount_at(mountpoint)?;
    let dead = rec.is_none() && is_dead_fuse_mount(mountpoint);
    if rec.is_none() && !dead && !is_fuse_mount(mountpoint) {
        bail!("{} is not a layerfs mount", mountpoint.display());
    }
    if crate::sys::euid() == 0 {
        let r = if dead {
            crate::sys::umount_detach(mountpoint)
        } else {
            crate::sys::umount(mountpoint)
        };
        if let Err(e) = r {
            bail!("unmounting {}: {e}", mountpoint.display());
        }
    } else {
        let mut args = vec!["-u"];
        if dead {
            args.push("-z");
        }
        let out = Command::new("fusermount3")
            .args(&args)
            .arg(mountpoint)
            .output()
            .or_else(|_| {
                Command::new("fusermount")
                    .args(&args)
                    .arg(mountpoint)
                    .output()
            })
            .map_err(|e| anyhow!("running fusermount3 (install fuse3): {e}"))?;
        if !out.status.success() {
            bail!(
                "unmounting {}: {}",
                mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    if let Some(rec) = rec {
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::sys::process_alive(rec.pid) {
            if Instant::now() > deadline {
                bail!(
                    "unmounted, but daemon pid {} has not exited after 10 s",
                    rec.pid
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Is `path` a FUSE mount whose daemon is gone? Every access to it fails
/// with ENOTCONN, and the mount table lists a `fuse*` filesystem there.
pub fn is_dead_fuse_mount(path: &Path) -> bool {
    let enotconn =
        matches!(crate::sys::fs_type(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    enotconn
        && std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| mount_fstype(&t, path))
            .is_some_and(|t| t.starts_with("fuse"))
}

/// Is the record of a live daemon at `mountpoint` still a mount? Unmounted
/// by `umount` or `fusermount3 -u` (not through [`umount`], which waits),
/// a daemon exits a moment after the kernel let go, and its record with
/// it. So a record whose path is not mounted is waited on, up to `wait`:
/// `false` once its daemon is gone; `true` if the path is mounted again or
/// the daemon stays (one that is starting, or whose mount lives in a mount
/// namespace this process does not see).
pub fn record_is_live(mountpoint: &Path, pid: u32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if !crate::sys::process_alive(pid) {
            return false;
        }
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| mount_fstype(&t, mountpoint))
            .is_some_and(|t| t.starts_with("fuse"));
        if mounted || Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The filesystem type of the last (topmost) mount at `path` in a
/// `/proc/PID/mountinfo` text.
fn mount_fstype(mountinfo: &str, path: &Path) -> Option<String> {
    let want = path.as_os_str().as_encoded_bytes();
    let mut found = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = left.split(' ').nth(4) else {
            continue;
        };
        if unescape_mountinfo(mp) == want {
            found = right.split(' ').next().map(str::to_string);
        }
    }
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Canonical forms of many paths that share their parents, each parent
/// resolved once: a mount program's lowerdirs are all in one directory
/// (`GRAPHROOT/overlay/l/*` links, or the layers themselves), and
/// resolving each whole costs a readlink per component per path (3,000
/// for a 128-layer mount). The same answer as `Path::canonicalize`: a path
/// of plain components has the canonical form of its parent joined with
/// its name unless the name is a symlink (then it is resolved whole).
#[derive(Default)]
pub struct Canonicalizer {
    memo: std::collections::HashMap<PathBuf, PathBuf>,
}

impl Canonicalizer {
    /// The canonical form of `p` (which must exist), as
    /// `Path::canonicalize` gives it.
    pub fn canonical(&mut self, p: &Path) -> std::io::Result<PathBuf> {
        use std::path::Component;
        if let Some(c) = self.memo.get(p) {
            return Ok(c.clone());
        }
        let plain = p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let (Some(parent), Some(name), true) = (p.parent(), p.file_name(), plain) else {
            return p.canonicalize();
        };
        let joined = self.canonical(parent)?.join(name);
        let real = if std::fs::symlink_metadata(&joined)?.file_type().is_symlink() {
            joined.canonicalize()?
        } else {
            joined
        };
        self.memo.insert(p.to_path_buf(), real.clone());
        Ok(real)
    }
}

/// Is the branch directory `dir` inside `mountpoint` (canonical)? A
/// branch must not live under the mount it serves: every access to it
/// would come back through the daemon. A `dir` that does not exist (yet)
/// is taken as given.
pub fn inside_mountpoint(dir: &Path, mountpoint: &Path) -> bool {
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    real.starts_with(mountpoint)
}

/// Canonical absolute path of an existing mountpoint directory.
pub fn canonical_mountpoint(p: &Path) -> Result<PathBuf> {
    let c = p
        .canonicalize()
        .with_context(|| format!("mountpoint {}", p.display()))?;
    if !c.is_dir() {
        bail!("mountpoint {} is not a directory", c.display());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memoized canonical form equals `Path::canonicalize` for plain
    /// paths, links in the middle and at the end (absolute and relative,
    /// like podman's `l/SHORTID -> ../ID/diff`), `..` and `.`; a missing
    /// path is an error.
    #[test]
    fn canonicalizer_agrees_with_canonicalize() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("layers/a/diff/sub")).unwrap();
        std::fs::create_dir_all(root.join("layers/b/diff")).unwrap();
        std::fs::create_dir_all(root.join("l")).unwrap();
        std::os::unix::fs::symlink("../layers/a/diff", root.join("l/A")).unwrap();
        std::os::unix::fs::symlink(root.join("layers/b"), root.join("l/B")).unwrap();
        std::os::unix::fs::symlink("layers", t.path().join("via")).unwrap();
        let mut c = Canonicalizer::default();
        for rel in [
            "layers/a/diff",
            "layers/a/diff/sub",
            "l/A",
            "l/A/sub",
            "l/B/diff",
            "via/b/diff",
            "via/a/diff/sub",
            "l/A/../diff",
            "layers/./b/diff",
        ] {
            for p in [t.path().join(rel), root.join(rel)] {
                assert_eq!(c.canonical(&p).unwrap(), p.canonicalize().unwrap(), "{rel}");
            }
        }
        assert!(c.canonical(&root.join("layers/none")).is_err());
        assert!(c.canonical(&root.join("l/A/none")).is_err());
    }

    #[test]
    fn mountinfo_lookup() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /tmp/a\\040b rw,nosuid - fuse.layerfs layerfs:abc rw\n\
                    91 22 0:51 / /tmp/c rw - tmpfs tmpfs rw\n\
                    92 91 0:52 / /tmp/c rw - fuse layerfs:x rw\n";
        assert_eq!(
            mount_fstype(info, Path::new("/tmp/a b")).as_deref(),
            Some("fuse.layerfs")
        );
        assert_eq!(
            mount_fstype(info, Path::new("/tmp/c")).as_deref(),
            Some("fuse"),
            "topmost"
        );
        assert_eq!(mount_fstype(info, Path::new("/")).as_deref(), Some("ext4"));
        assert_eq!(mount_fstype(info, Path::new("/tmp")), None);
    }

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn volatile_spellings_are_taken_out() {
        let mut o = opts(&["nodev", "fsync=0", "allow_other"]);
        assert!(volatile_option(&mut o).unwrap());
        assert_eq!(o, opts(&["nodev", "allow_other"]));
        let mut o = opts(&["volatile", "fsync=1"]);
        assert!(!volatile_option(&mut o).unwrap(), "the last one wins");
        assert!(o.is_empty());
        let mut o = opts(&["ro"]);
        assert!(!volatile_option(&mut o).unwrap());
        assert_eq!(o, opts(&["ro"]));
        let err = volatile_option(&mut opts(&["fsync=yes"])).unwrap_err();
        assert!(err.to_string().contains("fsync=yes"), "{err}");
    }

    #[test]
    fn noxattrs_switch() {
        let mut o = opts(&["noxattrs=1", "ro"]);
        assert!(noxattrs_option(&mut o).unwrap());
        assert_eq!(o, opts(&["ro"]));
        let mut o = opts(&["noxattrs", "noxattrs=0"]);
        assert!(!noxattrs_option(&mut o).unwrap());
        assert!(noxattrs_option(&mut opts(&["noxattrs=yes"])).is_err());
        assert!(!noxattrs_option(&mut opts(&["ro"])).unwrap());
    }

    #[test]
    fn passthrough_switch() {
        let mut o = opts(&["passthrough=off", "ro"]);
        assert!(!passthrough_option(&mut o).unwrap());
        assert_eq!(o, opts(&["ro"]));
        assert!(passthrough_option(&mut opts(&[])).unwrap(), "on by default");
        let err = passthrough_option(&mut opts(&["passthrough=maybe"])).unwrap_err();
        assert!(err.to_string().contains("passthrough=maybe"), "{err}");
    }
}
