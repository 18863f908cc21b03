//! `layerfs mount-branches`: plain directories as union branches, in AUFS
//! syntax (`-o br=...`) and overlay syntax (`-o lowerdir=...`), over the
//! layers of `fixtures/multi.docker.tar` extracted in both whiteout formats:
//! AUFS (each layer tar extracted by GNU tar: `.wh.` files as they are) and
//! kernel overlayfs (`oracle_extract.py --overlay-layers`: char devices
//! 0:0 and `trusted.overlay.opaque`). Both must show the oracle's merge of
//! the image. The write side (an rw branch on top of directory branches)
//! runs in `rw_diff.rs` as its implementation "layerfs-branches"; here a
//! few fixed writes check that the rw branch is an AUFS layer diff.
//!
//! Needs root (the extraction chowns, makes devices, sets trusted.*
//! xattrs); skipped otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const IMAGE: &str = "multi.docker.tar";

/// The image's layers, bottom first, as AUFS-format and overlay-format
/// directories.
struct Layers {
    _work: tempfile::TempDir,
    aufs: Vec<PathBuf>,
    overlay: Vec<PathBuf>,
}

/// Sets a directory's mtime to the epoch: the layer tars have no root
/// entry, so the oracle's merged root is 0755 0:0 with mtime 0, while an
/// extraction leaves the layer directory's root with the current time.
fn zero_mtime(p: &Path) {
    let st = Command::new("touch")
        .args(["-h", "-d", "@0"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn layers() -> Option<Layers> {
    if !is_root() {
        eprintln!("SKIP: branches tests need root (extraction chowns and makes devices)");
        return None;
    }
    if !fuse_available() {
        return None;
    }
    let work = tempfile::Builder::new()
        .prefix("layerfs-branches")
        .tempdir()
        .unwrap();
    let tars = work.path().join("tars");
    let ov = work.path().join("overlay");
    let out = Command::new("python3")
        .arg(repo().join("tools/oracle_extract.py"))
        .arg("--image")
        .arg(fixture(IMAGE))
        .arg("--overlay-layers")
        .arg(&ov)
        .arg("--layer-tars")
        .arg(&tars)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oracle_extract.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overlay: Vec<PathBuf> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(overlay.len(), 3);
    let mut aufs = Vec::new();
    for i in 0..overlay.len() {
        let d = work.path().join("aufs").join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let st = Command::new("tar")
            .arg("-C")
            .arg(&d)
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(tars.join(format!("{i}.tar")))
            .status()
            .unwrap();
        assert!(st.success(), "tar -x layer {i}");
        aufs.push(d);
    }
    for d in aufs.iter().chain(&overlay) {
        zero_mtime(d);
    }
    // The two formats really differ on disk.
    assert!(aufs[1].join("etc/.wh.os-release-extra").exists());
    assert!(!overlay[1].join("etc/.wh.os-release-extra").exists());
    assert!(aufs[2].join("opt/data/.wh..wh..opq").exists());
    Some(Layers {
        _work: work,
        aufs,
        overlay,
    })
}

/// `br=` spec: `rw` on top (if any), then `dirs` top first as `ro+wh`.
fn br(rw: Option<&Path>, dirs_bottom_first: &[&PathBuf]) -> String {
    let mut v: Vec<String> = rw.iter().map(|p| format!("{}=rw", p.display())).collect();
    v.extend(
        dirs_bottom_first
            .iter()
            .rev()
            .map(|d| format!("{}=ro+wh", d.display())),
    );
    format!("br={}", v.join(":"))
}

fn lowerdir(dirs_bottom_first: &[&PathBuf]) -> String {
    let v: Vec<String> = dirs_bottom_first
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect();
    format!("lowerdir={}", v.join(":"))
}

fn snapshot(dir: &Path) -> String {
    oracle(&["--snapshot", dir.to_str().unwrap()])
}

#[test]
fn both_formats_and_both_syntaxes_show_the_oracle_merge() {
    let Some(l) = layers() else { return };
    let expected = oracle(&["--image", fixture(IMAGE).to_str().unwrap()]);
    let store = TestStore::new();
    let aufs: Vec<&PathBuf> = l.aufs.iter().collect();
    let ov: Vec<&PathBuf> = l.overlay.iter().collect();
    // A mixed stack: formats may differ from branch to branch.
    let mixed = vec![&l.overlay[0], &l.aufs[1], &l.overlay[2]];
    for (what, opts) in [
        ("aufs dirs, br=", br(None, &aufs)),
        ("aufs dirs, lowerdir=", lowerdir(&aufs)),
        ("overlay dirs, br=", br(None, &ov)),
        ("overlay dirs, lowerdir=", lowerdir(&ov)),
        ("mixed dirs, lowerdir=", lowerdir(&mixed)),
    ] {
        let m = Mount::branches(&store, &opts);
        assert_same_tree(what, &expected, &snapshot(&m.dir), &[]);
        // Read-only without an rw branch.
        let e = std::fs::write(m.path("etc/new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}");
    }
}

#[test]
fn writes_land_in_the_rw_branch_as_an_aufs_diff() {
    let Some(l) = layers() else { return };
    let store = TestStore::new();
    let t = tempfile::tempdir().unwrap();
    let rw = t.path().join("rw");
    let ov: Vec<&PathBuf> = l.overlay.iter().collect();
    let m = Mount::branches(&store, &br(Some(&rw), &ov));
    std::fs::write(m.path("etc/motd"), b"hi\n").unwrap();
    std::fs::remove_file(m.path("etc/passwd")).unwrap();
    std::fs::remove_dir_all(m.path("usr/share/doc")).unwrap();
    std::fs::rename(m.path("home/user"), m.path("home/user2")).unwrap();
    std::fs::create_dir(m.path("etc/passwd")).unwrap(); // mkdir over a whiteout
    assert_eq!(std::fs::read(m.path("home/user2/secret")).unwrap().len(), {
        std::fs::metadata(l.overlay[0].join("home/user/secret"))
            .unwrap()
            .len() as usize
    });
    assert!(!m.path("usr/share/doc").exists());
    // The lower branches are untouched.
    assert!(l.overlay[0].join("etc/passwd").is_file());
    assert!(l.overlay[0].join("usr/share/doc").is_dir());
    drop(m);
    assert_eq!(std::fs::read(rw.join("etc/motd")).unwrap(), b"hi\n");
    assert!(rw.join("usr/share/.wh.doc").exists());
    assert!(rw.join("home/.wh.user").exists());
    assert!(rw.join("home/user2/.wh..wh..opq").exists());
    assert!(rw.join("etc/passwd/.wh..wh..opq").exists());
    // No image was recorded: a branch of mount-branches has none.
    assert!(!rw.join(".wh..wh.layerfs/image").exists());

    // Mounted again, the changes are there; the same rw branch over the
    // AUFS-format copies of the layers shows the same tree.
    let m = Mount::branches(&store, &br(Some(&rw), &ov));
    let a = snapshot(&m.dir);
    drop(m);
    let aufs: Vec<&PathBuf> = l.aufs.iter().collect();
    let m = Mount::branches(&store, &br(Some(&rw), &aufs));
    assert_same_tree("rw over aufs vs over overlay", &a, &snapshot(&m.dir), &[]);
    assert!(!m.path("etc/passwd").is_file());
    assert!(m.path("etc/passwd").is_dir());
}

#[test]
fn bad_branch_options_are_refused() {
    if !is_root() {
        return;
    }
    let store = TestStore::new();
    let t = tempfile::tempdir().unwrap();
    let mp = t.path().join("mnt");
    let lo = t.path().join("lower");
    std::fs::create_dir(&mp).unwrap();
    std::fs::create_dir(&lo).unwrap();
    let mps = mp.to_str().unwrap();
    let l = lo.display();
    for (opts, msg) in [
        (
            format!("lowerdir={l},upperdir={l}2,workdir={l}3"),
            "not supported yet",
        ),
        (format!("br={l}=ro:{l}2=rw"), "not the first"),
        (format!("br={l}=bogus"), "unknown permission"),
        ("allow_other".to_string(), "no branches"),
        (format!("lowerdir={l}/missing"), "missing"),
    ] {
        let err = store.fails(&["mount-branches", mps, "-o", &opts]);
        assert!(err.contains(msg), "{opts}: {err}");
    }
}

/// `mount -t fuse.layerfs none MNT -o br=...` goes through fuse3's
/// `mount.fuse3`, which runs `layerfs none MNT -o br=...` (found on PATH).
/// Called directly here, with the test binary's directory on PATH.
#[test]
fn mount_fuse3_runs_layerfs_as_its_helper() {
    let Some(l) = layers() else { return };
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(helper) = helper else {
        eprintln!("SKIP: mount.fuse3 (package fuse3) is not installed");
        return;
    };
    let store = TestStore::new();
    let t = tempfile::tempdir().unwrap();
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let bindir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let aufs: Vec<&PathBuf> = l.aufs.iter().collect();
    let out = Command::new(helper)
        .arg("none")
        .arg(&mp)
        .args(["-t", "fuse.layerfs", "-o"])
        .arg(format!("{},noauto", br(None, &aufs)))
        .env("PATH", path)
        .env("LAYERFS_ROOT", store.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount.fuse3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Umount<'a>(&'a TestStore, &'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(&["umount", self.1.to_str().unwrap()]);
        }
    }
    let _g = Umount(&store, &mp);
    let expected = oracle(&["--image", fixture(IMAGE).to_str().unwrap()]);
    assert_same_tree("mount.fuse3", &expected, &snapshot(&mp), &[]);
}
