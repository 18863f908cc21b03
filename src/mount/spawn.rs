//! Starting a mount's daemon in the background and waiting until its
//! mount answers: a fork of this process (`mount-branches`) or a new exec
//! of the binary with `--foreground --notify-ready` (`mount`, and any
//! process with more than one thread).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{is_fuse_mount, options, run_branches_foreground, MountOptions};
use crate::store::Store;

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

/// Starts the daemon of `mount-branches` in the background and waits
/// until the mount answers. The daemon is a fork of this process, which
/// has checked and resolved everything already: a mount program runs at
/// every container start, and a second exec of the binary, cold, was a
/// good part of a mount's time. Where this process has other threads
/// (fork would copy this one alone), the daemon is a new exec instead,
/// given `branches` back as options by [`options::build`].
pub fn spawn_branches_background(
    store: &Store,
    mountpoint: &Path,
    branches: &options::Branches,
    init_layer: bool,
) -> Result<u32> {
    if crate::sys::thread_count() == Some(1) {
        let opts = MountOptions {
            options: branches.rest.clone(),
            rw: branches.upper.clone(),
            work: branches.work.clone(),
            init_layer,
        };
        return fork_daemon(mountpoint, || {
            run_branches_foreground(store, &branches.lowers, mountpoint, &opts, true)
        });
    }
    let mut args: Vec<OsString> = vec![
        "--root".into(),
        store.root().into(),
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

/// Runs `daemon` (a foreground mount that says READY) in a child forked
/// into a new session, and waits until the mount answers.
fn fork_daemon(mountpoint: &Path, daemon: impl FnOnce() -> Result<()>) -> Result<u32> {
    let (out_r, out_w) = crate::sys::pipe()?;
    let (err_r, err_w) = crate::sys::pipe()?;
    let null = std::fs::File::open("/dev/null")?;
    // Nothing buffered may be written twice, once by each side.
    std::io::stdout().flush()?;
    std::io::stderr().flush()?;
    match crate::sys::fork_new_session().context("starting the mount daemon")? {
        crate::sys::Forked::Child => {
            crate::sys::set_stdio(&null, &out_w, &err_w);
            drop((out_r, err_r, out_w, err_w, null));
            let code = match daemon() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("layerfs: {e:#}");
                    1
                }
            };
            std::process::exit(code)
        }
        crate::sys::Forked::Parent(pid) => {
            drop((out_w, err_w, null));
            await_ready(out_r, err_r, mountpoint, || crate::sys::wait_child(pid))?;
            Ok(pid)
        }
    }
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
    // A new session: a Ctrl-C at the caller's terminal does not reach it.
    crate::sys::new_session_on_exec(&mut cmd);
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    await_ready(out, err, mountpoint, || match child.wait() {
        Ok(st) => st.to_string(),
        Err(e) => format!("wait: {e}"),
    })?;
    Ok(child.id())
}

/// Waits for a daemon's READY line on `out` and for the mount to answer;
/// what the daemon wrote to `err` before it detached is passed on to this
/// process's stderr. Without READY, the mount failed: `status` waits for
/// the daemon and says how it ended.
fn await_ready(
    out: impl Read,
    mut err: impl Read + Send + 'static,
    mountpoint: &Path,
    status: impl FnOnce() -> String,
) -> Result<()> {
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = err_tx.send(s.clone());
        s
    });
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "READY" {
        let status = status();
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
    // What the daemon said before it was ready (warnings about options,
    // say) is the caller's to see: the daemon closes the pipe right after
    // READY, when its stderr moves to the log.
    if let Ok(said) = err_rx.recv_timeout(Duration::from_secs(2)) {
        if !said.trim().is_empty() {
            eprint!("{said}");
        }
    }
    Ok(())
}
