//! Kernel overlayfs, as a second union filesystem to compare with (and to
//! stack on a layerfs mount).

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Whether `/proc/filesystems` lists overlayfs (a module not loaded yet is
/// not listed, although a mount would load it).
pub fn overlay_listed() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
}

/// `lowerdir=` of `dirs` given bottom first (overlayfs lists the top one
/// first).
pub fn lowerdir<P: AsRef<Path>>(dirs_bottom_first: &[P]) -> String {
    let v: Vec<String> = dirs_bottom_first
        .iter()
        .rev()
        .map(|d| d.as_ref().display().to_string())
        .collect();
    format!("lowerdir={}", v.join(":"))
}

/// Kernel overlayfs mounted at `dir`; unmounted on drop, even when the
/// test panics (detached if it is busy).
pub struct KernelOverlay {
    pub dir: PathBuf,
}

impl KernelOverlay {
    /// [`KernelOverlay::try_mount`]; a refusal fails the test.
    pub fn mount(dir: &Path, opts: &str) -> KernelOverlay {
        KernelOverlay::try_mount(dir, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// mount(2) of overlayfs at `dir` (created if missing) with the
    /// options `opts`. Err says why it was refused, for the callers that
    /// do not fail then: the harness test of `rw_workloads.rs` skips,
    /// `rw_diff.rs` leaves overlayfs out.
    pub fn try_mount(dir: &Path, opts: &str) -> Result<KernelOverlay, String> {
        std::fs::create_dir_all(dir).unwrap();
        let src = CString::new("overlay").unwrap();
        let data = CString::new(opts).unwrap();
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings alive for the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(format!(
                "mount -t overlay -o {opts}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(KernelOverlay {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let c = CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            eprintln!(
                "umount {}: {}; detaching",
                self.dir.display(),
                std::io::Error::last_os_error()
            );
            // SAFETY: as above.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Debian's fuse-overlayfs mounted at `dir` with `-o OPTS` (the mount
/// program containers-storage was written for, as an oracle); unmounted
/// on drop (`fusermount3 -u`, detached if busy). Under CI its absence
/// fails the test.
pub struct FuseOverlayfs {
    pub dir: PathBuf,
}

impl FuseOverlayfs {
    pub fn mount(dir: &Path, opts: &str) -> FuseOverlayfs {
        let bin = "/usr/bin/fuse-overlayfs";
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: .ci/run installs Debian's fuse-overlayfs"
        );
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new(bin)
            .args(["-o", opts])
            .arg(dir)
            .output()
            .expect("running fuse-overlayfs");
        assert!(
            out.status.success(),
            "fuse-overlayfs -o {opts} {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        FuseOverlayfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for FuseOverlayfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
    }
}
