//! Real podman from Debian with a private storage root: `Podman::new`
//! with layerfs as the overlay driver's mount program, `Podman::kernel`
//! with kernel overlayfs and `Podman::fuse_overlayfs` with Debian's
//! fuse-overlayfs, the oracles it is compared with; `Podman::rootless`
//! runs podman as an unprivileged user with subordinate ids, in its user
//! namespace. `listing` reads what `podman export` wrote, path by path.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use super::{bin, ensure_user, open_dev_fuse};

/// The user of the rootless podman runs, and its subordinate id range
/// (apart from the other test users').
const ROOTLESS_USER: &str = "layerfs-podman";
const ROOTLESS_SUBIDS: &str = "500000:65536";

/// One podman configuration: its storage.conf and containers.conf in a
/// temporary directory that also holds the graph and run roots.
pub struct Podman {
    pub dir: tempfile::TempDir,
    storage_conf: PathBuf,
    containers_conf: PathBuf,
    /// Rootless: the user podman runs as, and its home.
    user: Option<(&'static str, PathBuf)>,
}

impl Podman {
    /// The overlay driver with layerfs as its mount program.
    pub fn new() -> Podman {
        Podman::with_mount_program(Some(bin()))
    }

    /// The overlay driver on kernel overlayfs (no mount program).
    pub fn kernel() -> Podman {
        Podman::with_mount_program(None)
    }

    /// The overlay driver with Debian's fuse-overlayfs as its mount
    /// program: the oracle of what podman does with a mount program.
    pub fn fuse_overlayfs() -> Podman {
        Podman::with_mount_program(Some(&fuse_overlayfs_bin()))
    }

    /// Rootless podman (as [`ROOTLESS_USER`], created with subordinate
    /// ids if missing) with layerfs as its mount program, or on `oracle`:
    /// kernel overlayfs in the user namespace (Linux 5.13+ mounts it
    /// there) or fuse-overlayfs. The user's podman runs a mount program
    /// inside its user namespace, as uid 0 there.
    pub fn rootless(oracle: Option<Oracle>) -> Podman {
        open_dev_fuse();
        let (uid, gid) = ensure_user(ROOTLESS_USER);
        for f in ["/etc/subuid", "/etc/subgid"] {
            let mut s = std::fs::read_to_string(f).unwrap_or_default();
            if !s
                .lines()
                .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
            {
                if !s.is_empty() && !s.ends_with('\n') {
                    s.push('\n');
                }
                s.push_str(&format!("{ROOTLESS_USER}:{ROOTLESS_SUBIDS}\n"));
                std::fs::write(f, s).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        // A copy the user can run wherever the build tree is.
        let program = match oracle {
            Some(Oracle::Kernel) => None,
            Some(Oracle::FuseOverlayfs) => Some(fuse_overlayfs_bin()),
            None => {
                let exe = dir.path().join("layerfs");
                std::fs::copy(bin(), &exe).unwrap();
                Some(exe.to_str().unwrap().to_string())
            }
        };
        let mut p = Podman::in_dir(dir, program.as_deref());
        let home = p.dir.path().join("home");
        for d in [home.clone(), p.dir.path().join("xdg")] {
            std::fs::create_dir(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
        }
        p.user = Some((ROOTLESS_USER, home));
        p
    }

    fn with_mount_program(program: Option<&str>) -> Podman {
        Podman::in_dir(tempfile::tempdir().unwrap(), program)
    }

    fn in_dir(dir: tempfile::TempDir, program: Option<&str>) -> Podman {
        let storage_conf = dir.path().join("storage.conf");
        let mut s = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            dir.path().display()
        );
        if let Some(p) = program {
            s.push_str(&format!(
                "[storage.options.overlay]\nmount_program = \"{p}\"\n"
            ));
        }
        std::fs::write(&storage_conf, s).unwrap();
        // runc: crun 1.8 refuses these machines' hybrid cgroup layout
        // ("cgroups in hybrid mode not supported"). The ulimits: podman's
        // root default (nofile=1048576) is above the hard limit the
        // sandbox grants, and the runtime may not raise it.
        let containers_conf = dir.path().join("containers.conf");
        // tmp_dir: podman's own (default /run/libpod, shared by every
        // instance), where it keeps the "alive" mark whose absence makes it
        // reset all its containers' state.
        std::fs::write(
            &containers_conf,
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nruntime = \"runc\"\ntmp_dir = \"{}/libpod-tmp\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        Podman {
            dir,
            storage_conf,
            containers_conf,
            user: None,
        }
    }

    /// `podman ARGS` with this configuration.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.tool("podman", args)
    }

    /// `buildah ARGS` with this configuration (the same storage), its
    /// stdout; panics with buildah's stderr when it fails.
    pub fn buildah_ok(&self, args: &[&str]) -> String {
        let out = self.tool("buildah", args).output().expect("buildah");
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `TOOL ARGS` (podman or buildah) with this configuration.
    fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = match &self.user {
            None => Command::new(tool),
            Some((user, home)) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env"])
                    .arg(format!("HOME={}", home.display()))
                    .arg(format!("XDG_RUNTIME_DIR={}/xdg", self.dir.path().display()))
                    .arg(format!(
                        "CONTAINERS_STORAGE_CONF={}",
                        self.storage_conf.display()
                    ))
                    .arg(format!(
                        "CONTAINERS_CONF={}",
                        self.containers_conf.display()
                    ))
                    .arg(tool);
                c
            }
        };
        c.args(args)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("CONTAINERS_CONF", &self.containers_conf);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("podman")
    }

    /// Its stdout; panics with podman's stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `podman export CONTAINER`, read back as `listing` does.
    pub fn export_listing(&self, container: &str) -> Vec<String> {
        let tar = self.dir.path().join("export.tar");
        self.ok(&["export", "-o", tar.to_str().unwrap(), container]);
        let l = listing(&tar);
        std::fs::remove_file(&tar).unwrap();
        l
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Unmounts every container's storage (through the mount program's
        // unmount path) and removes the containers and images, so no mount
        // outlives the test.
        let _ = self.tool("buildah", &["rm", "--all"]).output();
        let _ = self.run(&["rm", "--all", "--force"]);
        let _ = self.run(&["umount", "--all", "--force"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
    }
}

/// Held by each podman test for its whole run: podman instances share
/// one lock segment (`/dev/shm/libpod_lock`) and runtime state whatever
/// their storage roots, so the tests of a binary take turns.
pub fn podman_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a rootless layerfs run is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Oracle {
    /// Kernel overlayfs (no mount program).
    Kernel,
    /// Debian's fuse-overlayfs as the mount program.
    FuseOverlayfs,
}

/// Debian's fuse-overlayfs (1.x); under CI its absence fails the test.
fn fuse_overlayfs_bin() -> String {
    let p = "/usr/bin/fuse-overlayfs";
    assert!(
        Path::new(p).exists(),
        "{p} is missing: .ci/run installs Debian's fuse-overlayfs"
    );
    p.to_string()
}

/// Whether podman is installed; under CI its absence fails the test.
pub fn podman_available() -> bool {
    if Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("podman is missing and CI is set: .ci/run installs it");
    }
    eprintln!("SKIP: podman is not installed");
    false
}

/// A tar as one line per path, sorted: type, mode, owner, size, the
/// sha256 of the content, the link target, and for hard links the whole
/// group of names (which name a tar writer stores first depends on its
/// readdir order, so the group is what is compared). Modification times
/// are left out.
pub fn listing(tar: &Path) -> Vec<String> {
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    let mut link_of: BTreeMap<String, String> = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let path = format!("/{}", path.trim_start_matches("./").trim_end_matches('/'));
        let h = e.header().clone();
        let kind = h.entry_type();
        if kind.is_hard_link() {
            let target = e
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let target = format!("/{}", target.trim_start_matches("./"));
            link_of.insert(path, target);
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = format!(
            "{:?} {:o} {}:{} size={} sha256={} link={link}",
            kind,
            h.mode().unwrap() & 0o7777,
            h.uid().unwrap(),
            h.gid().unwrap(),
            data.len(),
            hex::encode(&Sha256::digest(&data)[..8]),
        );
        entries.insert(path, line);
    }
    // Hard-link groups: each member gets its first-stored name's line and
    // the sorted list of the group.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (p, t) in &link_of {
        groups.entry(t.clone()).or_default().push(p.clone());
    }
    let mut out = BTreeMap::new();
    for (first, members) in groups {
        let line = entries
            .remove(&first)
            .unwrap_or_else(|| panic!("hard link to {first}, which is not in the tar"));
        let mut all = members;
        all.push(first);
        all.sort();
        for p in &all {
            out.insert(p.clone(), format!("{line} links={}", all.join(",")));
        }
    }
    out.extend(entries);
    out.into_iter().map(|(p, l)| format!("{p} {l}")).collect()
}
