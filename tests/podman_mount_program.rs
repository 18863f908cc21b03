//! layerfs as containers-storage's mount program, as podman runs it
//! (`layerfs -o lowerdir=...,upperdir=...,workdir=... MERGED`), as root:
//! the real client, podman from Debian, with its own storage root.
//! `podman mount` / `podman diff` / `podman umount` go through it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

struct Podman {
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n\
                 [storage.options.overlay]\nmount_program = \"{1}\"\n",
                dir.path().display(),
                bin()
            ),
        )
        .unwrap();
        Podman { conf, _dir: dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", &self.conf)
            .output()
            .expect("podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Unmounts every container's storage (through the mount program's
        // unmount path) and removes the containers.
        let _ = self.run(&["rm", "--all", "--force"]);
        let _ = self.run(&["umount", "--all", "--force"]);
    }
}

fn podman_available() -> bool {
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

fn mount_options(mp: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-no", "FSTYPE,OPTIONS"])
        .arg(mp)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn podman_mounts_diffs_and_unmounts_through_layerfs() {
    if !fuse_available() || !podman_available() {
        return;
    }
    if !is_root() {
        eprintln!("SKIP: the root form of the mount program (rootless: later)");
        return;
    }
    let p = Podman::new();
    p.ok(&["load", "-i", fixture("multi.docker.tar").to_str().unwrap()]);
    let c = p.ok(&["create", "--network", "none", "multi", "sh"]);
    let c = c.trim();
    let mp = p.ok(&["mount", c]);
    let mp = Path::new(mp.trim());
    // Mounted by layerfs, for every user of the container, setuid bits
    // honoured (as kernel overlayfs would mount it for podman).
    let opts = mount_options(mp);
    assert!(opts.starts_with("fuse"), "{opts}");
    assert!(
        opts.contains("allow_other") && !opts.contains("nosuid"),
        "{opts}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(mp.join("bin/su-fake")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(mp.join("bin/busybox").is_file());

    std::fs::write(mp.join("newfile"), b"hello\n").unwrap();
    std::fs::remove_file(mp.join("etc/os-release")).unwrap();
    std::fs::create_dir(mp.join("newdir")).unwrap();
    std::fs::remove_dir_all(mp.join("opt")).unwrap();
    // podman's own diff, read from the upper directory layerfs wrote.
    let diff = p.ok(&["diff", c]);
    let mut lines: Vec<&str> = diff.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "A /newdir",
            "A /newfile",
            "C /etc",
            "D /etc/os-release",
            "D /opt"
        ],
        "{diff}"
    );
    p.ok(&["umount", c]);
    assert!(
        mount_options(mp).is_empty(),
        "still mounted after podman umount"
    );

    // Mounted again at once, ten times (podman stops and starts containers
    // back to back): the changes are there each time.
    for i in 0..10 {
        let again = p.ok(&["mount", c]);
        let again = Path::new(again.trim());
        assert_eq!(
            std::fs::read(again.join("newfile")).unwrap(),
            b"hello\n",
            "round {i}"
        );
        assert!(!again.join("etc/os-release").exists());
        p.ok(&["umount", c]);
    }
    p.ok(&["rm", c]);
}
