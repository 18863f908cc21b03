//! Mount lifecycle: open an image's layers, mount, tell the waiting parent
//! that the mount is live, serve until unmounted or signalled, clean up.
//!
//! `layerfs mount` (without `--foreground`) re-executes itself with
//! `--foreground --notify-ready` in a new session, reads one line from the
//! child's stdout ("READY" once the kernel has completed the FUSE handshake)
//! and then checks the mount answers `statfs` before returning. Anything
//! else is a failure, reported with the child's stderr.

pub mod fusermount;
pub mod options;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// Opens the layers of image `id`, top layer first.
///
/// Opening a layer is mostly waiting for the disk (the index file, read in
/// full by its validation), so every index file is opened and its reading
/// started (`Layer::prefetch`) before the first is validated: the reads of
/// a deep image are then in flight together.
pub fn open_layers(store: &Store, id: &str) -> Result<Vec<Layer>> {
    let rec = store.image(id)?;
    let dirs: Vec<(PathBuf, &String)> = rec
        .layers
        .iter()
        .rev()
        .map(|c| (store.layer_dir(c), c))
        .collect();
    let files: Vec<_> = dirs.iter().map(|(d, _)| Layer::prefetch(d)).collect();
    dirs.iter()
        .zip(files)
        .map(|((d, c), f)| Layer::open_with(d, c, f).with_context(|| format!("layer {c}")))
        .collect()
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

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local set; pthread_sigmask
    // only changes this thread's mask (threads created later inherit it).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
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
    let mut layers = open_layers(store, id)?;
    if opts.init_layer {
        layers.insert(0, crate::layer::init::layer()?);
    }
    tracing::info!(image = id, layers = layers.len(), rw = ?opts.rw, "opening image");
    let upper = match &opts.rw {
        Some(dir) => Some(Upper::open(dir, Some(id))?),
        None => None,
    };
    serve(
        store,
        Source::Image(id.to_string()),
        layers,
        upper,
        mountpoint,
        opts,
        notify_ready,
    )
}

/// Threads walking the branches of `mount-branches` at mount. A cold walk
/// waits on the disk, not on a CPU: more walkers keep more reads in
/// flight. Mount of 128 branches (20000 files), cold, on 2 CPUs: 2
/// walkers 0.49-0.52 s, 8: 0.27-0.28 s, 16: 0.23-0.25 s, 32: 0.22-0.23 s,
/// 64: 0.25 s.
const BRANCH_WALKERS: usize = 16;

/// Runs the daemon of `layerfs mount-branches`: plain directories as
/// layers (top first), the rw branch `opts.rw` on top (AUFS format, or
/// overlay format with `opts.work`).
pub fn run_branches_foreground(
    store: &Store,
    lowers: &[PathBuf],
    mountpoint: &Path,
    opts: &MountOptions,
    notify_ready: bool,
) -> Result<()> {
    // Each branch is walked whole: BRANCH_WALKERS threads list
    // directories at once, split over the branches (each thread walking
    // every n-th branch; a branch gets the rest of the budget, so one big
    // branch is listed by all of them).
    let n = BRANCH_WALKERS.min(lowers.len().max(1));
    let per_branch = (BRANCH_WALKERS / n).max(1);
    let index = |i: usize| -> Result<Layer> {
        let dir = &lowers[i];
        let t = Instant::now();
        let l = Layer::directory(&format!("branch{i}:{}", dir.display()), dir, per_branch)?;
        tracing::info!(branch = %dir.display(), entries = l.index.len(), took = ?t.elapsed(), "indexed branch");
        Ok(l)
    };
    let mut slots: Vec<Option<Result<Layer>>> = (0..lowers.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let index = &index;
        let workers: Vec<_> = (0..n)
            .map(|k| {
                s.spawn(move || {
                    (k..lowers.len())
                        .step_by(n)
                        .map(|i| (i, index(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for w in workers {
            for (i, r) in w.join().expect("branch walk panicked") {
                slots[i] = Some(r);
            }
        }
    });
    let mut layers = Vec::new();
    for r in slots {
        layers.push(r.expect("every branch walked")?);
    }
    // The walks' scratch (paths, unsorted entries) was freed into the
    // walker threads' malloc arenas, where it would stay for the daemon's
    // life: hand it back.
    crate::sys::release_free_heap();
    if opts.init_layer {
        layers.insert(0, crate::layer::init::layer()?);
    }
    let upper = match (&opts.rw, &opts.work) {
        (Some(dir), Some(work)) => Some(Upper::open_overlay(dir, work)?),
        (Some(dir), None) => Some(Upper::open(dir, None)?),
        (None, _) => None,
    };
    let dirs = lowers
        .iter()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()));
    let source = Source::Dirs(dirs.collect());
    serve(store, source, layers, upper, mountpoint, opts, notify_ready)
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
    store: &Store,
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
    let opts = &fuse_opts;
    let rw_root = upper.as_ref().map(|u| u.root().to_path_buf());
    let vfs = Arc::new(
        Vfs::with_upper(layers, upper)?
            .with_owners(owners)
            .with_volatile(volatile),
    );
    let (id, lowerdirs) = match source {
        Source::Image(id) => (id, Vec::new()),
        // A mount-branches mount records no image (empty).
        Source::Dirs(dirs) => (String::new(), dirs),
    };
    let (cfg, fusermount_opts) = fuse_config(if id.is_empty() { "branches" } else { &id }, opts)?;
    let sigset = block_signals();
    let fs = LayerFs::new(vfs).with_passthrough(passthrough);
    let mountpoint_owned = mountpoint.to_path_buf();
    // Root mounts with mount(2) through fuser; anyone else goes through the
    // setuid fusermount3, which also works where /dev/fuse is root-only.
    // SAFETY: geteuid cannot fail.
    let (session, mut unmount): (
        fuser::Session<LayerFs>,
        Box<dyn FnMut() -> Result<()> + Send>,
    ) = if unsafe { libc::geteuid() } == 0 {
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
    let record = MountRecord {
        pid: std::process::id(),
        image: id,
        mountpoint: mountpoint.to_path_buf(),
        rw: rw_root,
        lowerdirs,
    };
    let record_path = store.register_mount(&record)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a set that every thread has blocked.
            unsafe { libc::sigwait(&sigset, &mut sig) };
            tracing::info!("signal {sig}: unmounting");
            if let Err(e) = unmount() {
                tracing::error!("unmount failed: {e}");
            }
        })?;
    if notify_ready {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY")?;
        out.flush()?;
        drop(out);
        let log = record_path.with_extension("log");
        detach_stdio(&log)?;
    }
    let res = session.run();
    let _ = std::fs::remove_file(&record_path);
    tracing::info!("unmounted {}", mountpoint.display());
    res.context("FUSE session")
}

fn detach_stdio(log: &Path) -> Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    let log = crate::store::create_private(log)?;
    // SAFETY: dup2 onto the standard descriptors; both sources are open.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    Ok(())
}

/// Does `statfs` on `path` say it is a FUSE mount?
pub fn is_fuse_mount(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == FUSE_SUPER_MAGIC
    }
}

/// Starts the daemon in the background and waits until the mount answers.
pub fn spawn_background(
    root: &Path,
    id: &str,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<u32> {
    let mut args: Vec<OsString> = vec![
        "--root".into(),
        root.into(),
        "mount".into(),
        id.into(),
        mountpoint.into(),
    ];
    args.push("--foreground".into());
    args.push("--notify-ready".into());
    for o in &opts.options {
        args.push("-o".into());
        args.push(o.into());
    }
    if let Some(rw) = &opts.rw {
        args.push("--rw".into());
        args.push(rw.into());
    }
    if opts.init_layer {
        args.push("--init-layer".into());
    }
    spawn_daemon(args, mountpoint)
}

/// Starts the daemon of `mount-branches` in the background (`branches`
/// resolved to absolute paths, given back to it as options by
/// [`options::build`]) and waits until the mount answers.
pub fn spawn_branches_background(
    root: &Path,
    mountpoint: &Path,
    branches: &options::Branches,
    init_layer: bool,
) -> Result<u32> {
    let mut args: Vec<OsString> = vec![
        "--root".into(),
        root.into(),
        "mount-branches".into(),
        mountpoint.into(),
        "--foreground".into(),
        "--notify-ready".into(),
    ];
    for o in options::build(branches) {
        args.push("-o".into());
        args.push(o.into());
    }
    if init_layer {
        args.push("--init-layer".into());
    }
    spawn_daemon(args, mountpoint)
}

/// Starts `layerfs ARGS` (a mount command with `--foreground
/// --notify-ready`) in a new session and waits until the mount answers.
fn spawn_daemon(args: Vec<OsString>, mountpoint: &Path) -> Result<u32> {
    let exe = std::env::current_exe().context("finding the layerfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the
    // caller's terminal and process group so a Ctrl-C there does not kill it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "READY" {
        let status = child.wait()?;
        let err = err_reader.join().unwrap_or_default();
        let err = err.trim();
        bail!(
            "mount failed ({status}){}{err}",
            if err.is_empty() { "" } else { ": " }
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_fuse_mount(mountpoint) {
        if Instant::now() > deadline {
            bail!(
                "the daemon reported ready but {} does not answer as a FUSE mount",
                mountpoint.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child.id())
}

/// Unmounts `mountpoint` and waits (up to 10 s) for its daemon to exit.
pub fn umount(store: &Store, mountpoint: &Path) -> Result<()> {
    let rec = store.mount_at(mountpoint)?;
    if rec.is_none() && !is_fuse_mount(mountpoint) {
        bail!("{} is not a layerfs mount", mountpoint.display());
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())?;
        // SAFETY: umount2 with a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            bail!("unmounting {}: {e}", mountpoint.display());
        }
    } else {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(mountpoint)
            .output()
            .or_else(|_| {
                Command::new("fusermount")
                    .arg("-u")
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
    fn passthrough_switch() {
        let mut o = opts(&["passthrough=off", "ro"]);
        assert!(!passthrough_option(&mut o).unwrap());
        assert_eq!(o, opts(&["ro"]));
        assert!(passthrough_option(&mut opts(&[])).unwrap(), "on by default");
        let err = passthrough_option(&mut opts(&["passthrough=maybe"])).unwrap_err();
        assert!(err.to_string().contains("passthrough=maybe"), "{err}");
    }
}
