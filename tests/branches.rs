//! `layerfs mount-branches`: plain directories as union branches, in AUFS
//! syntax (`-o br=...`) and overlay syntax (`-o lowerdir=...`), over the
//! layers of `fixtures/multi.docker.tar` extracted in both whiteout formats:
//! AUFS (each layer tar extracted by GNU tar: `.wh.` files as they are) and
//! kernel overlayfs (`oracle_extract.py --overlay-layers`: char devices
//! 0:0 and `trusted.overlay.opaque`). Both must show the oracle's merge of
//! the image. The write side (an rw branch on top of directory branches)
//! runs in `rw_diff.rs` as its implementation "layerfs-branches"; here a
//! few fixed writes check that the rw branch is an AUFS layer diff, and
//! that an overlay `upperdir=` is written in kernel overlayfs' format
//! (kernel overlayfs mounts it afterwards and shows the same tree).
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
    let overlay = oracle_extract(&fixture(IMAGE), &ov, &tars, None);
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

fn is_overlay_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn is_overlay_opaque(p: &Path) -> bool {
    lgetxattr(p, "trusted.overlay.opaque").as_deref() == Ok(&b"y"[..])
}

#[test]
fn upperdir_is_written_in_kernel_overlay_format() {
    let Some(l) = layers() else { return };
    if !overlay_listed() {
        eprintln!("SKIP: kernel overlayfs is not available");
        return;
    }
    let store = TestStore::new();
    let t = tempfile::tempdir().unwrap();
    let (up, work) = (t.path().join("upper"), t.path().join("work"));
    let ov: Vec<&PathBuf> = l.overlay.iter().collect();
    let opts = format!(
        "{},upperdir={},workdir={}",
        lowerdir(&ov),
        up.display(),
        work.display()
    );
    let m = Mount::branches(&store, &opts);
    std::fs::write(m.path("etc/motd"), b"hi\n").unwrap(); // create
    std::fs::write(m.path("etc/group"), b"g\n").unwrap(); // copy-up
    std::fs::remove_file(m.path("etc/passwd")).unwrap(); // unlink of a lower file
    std::fs::remove_dir_all(m.path("usr/share/doc")).unwrap(); // rm -rf of a lower dir
    std::fs::rename(m.path("home/user"), m.path("home/user2")).unwrap(); // lower dir
    std::fs::create_dir(m.path("etc/passwd")).unwrap(); // mkdir over a whiteout
    std::fs::write(m.path("etc/passwd/x"), b"x\n").unwrap();
    std::fs::remove_file(m.path("bin/cat")).unwrap();
    std::fs::rename(m.path("etc/motd"), m.path("bin/cat")).unwrap(); // over a whiteout
    std::fs::remove_file(m.path("bin/echo")).unwrap();
    std::fs::hard_link(m.path("bin/cat"), m.path("bin/echo")).unwrap(); // link over one
    std::fs::rename(m.path("bin/id"), m.path("bin/id2")).unwrap(); // lower file
    std::fs::create_dir(m.path("opt/new")).unwrap();
    std::fs::rename(m.path("opt/new"), m.path("bin/ls")).unwrap_err(); // dir over file
    std::fs::remove_file(m.path("bin/ls")).unwrap();
    std::fs::rename(m.path("opt/new"), m.path("bin/ls")).unwrap(); // dir over a whiteout
                                                                   // A 0:0 device would be a whiteout in the upperdir: refused.
    let st = Command::new("mknod")
        .arg(m.path("tmp/dev00"))
        .args(["c", "0", "0"])
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(!m.path("tmp/dev00").exists());
    std::fs::remove_dir_all(m.path("opt/data")).unwrap();
    std::fs::create_dir(m.path("opt/data")).unwrap(); // opaque over a lower dir
    std::fs::write(m.path("opt/data/z"), b"z\n").unwrap();
    assert!(!m.path("opt/data/new").exists());
    assert!(!m.path("usr/share/doc").exists());
    assert!(m.path("home/user2/secret").is_file());
    assert!(!m.path("home/user").exists());
    let names: Vec<String> = std::fs::read_dir(m.path("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.contains(&"id".to_string()), "{names:?}");
    let before = snapshot(&m.dir);
    drop(m);

    // U holds only overlay-format markers, nothing of layerfs.
    assert!(is_overlay_whiteout(&up.join("usr/share/doc")));
    assert!(is_overlay_whiteout(&up.join("home/user")));
    assert!(is_overlay_whiteout(&up.join("bin/id")));
    // A renamed lower directory: moved with a redirect to its lower
    // content (kernel overlayfs' redirect_dir=on), not copied and opaque.
    assert!(!is_overlay_opaque(&up.join("home/user2")));
    assert_eq!(
        lgetxattr(&up.join("home/user2"), "trusted.overlay.redirect"),
        Ok(b"/home/user".to_vec())
    );
    assert!(!up.join("home/user2/secret").exists(), "copied up");
    assert!(is_overlay_opaque(&up.join("etc/passwd")));
    assert!(is_overlay_opaque(&up.join("bin/ls")));
    assert!(is_overlay_opaque(&up.join("opt/data")));
    assert!(!is_overlay_opaque(&up.join("etc")));
    assert_eq!(std::fs::read(up.join("bin/cat")).unwrap(), b"hi\n");
    for abs in walk(&up) {
        let p = abs.strip_prefix(&up).unwrap();
        assert!(
            !p.to_string_lossy().contains(".wh."),
            "AUFS name {} in the upperdir",
            p.display()
        );
        assert!(
            lgetxattr(&abs, "user.containers.override_stat").is_err(),
            "{}",
            p.display()
        );
    }
    assert!(work.join("layerfs.lock").exists());

    // Kernel overlayfs mounts the same upperdir (with a fresh workdir) and
    // shows the same tree.
    let w2 = t.path().join("work2");
    std::fs::create_dir(&w2).unwrap();
    let kmp = t.path().join("kmnt");
    {
        let k = KernelOverlay::mount(
            &kmp,
            &format!(
                "{},upperdir={},workdir={},redirect_dir=on,index=off,metacopy=off",
                lowerdir(&ov),
                up.display(),
                w2.display()
            ),
        );
        assert_same_tree(
            "kernel overlayfs over the upperdir",
            &before,
            &snapshot(&k.dir),
            &[],
        );
    }

    // layerfs again, on the same branches: the same tree.
    let m = Mount::branches(&store, &opts);
    assert_same_tree("layerfs remounted", &before, &snapshot(&m.dir), &[]);
    drop(m);
}

/// Overlay-format whiteouts are device nodes: a non-root `upperdir=` is
/// refused up front (the AUFS-format `br=...=rw` works rootless).
#[test]
fn upperdir_needs_root() {
    let Some(u) = UserDir::new() else {
        return;
    };
    let p = |d: &str| u.path(d).display().to_string();
    for d in ["mnt", "lower", "upper", "work"] {
        u.ok(&["mkdir", &p(d)]);
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        p("lower"),
        p("upper"),
        p("work")
    );
    let out = u.layerfs(
        &u.path("store"),
        &["mount-branches", &p("mnt"), "-o", &opts],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("upperdir= needs root"), "{err}");
    assert!(std::fs::read_dir(u.path("upper")).unwrap().next().is_none());
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
    std::fs::create_dir(mp.join("sub")).unwrap();
    std::os::unix::fs::symlink(mp.join("sub"), t.path().join("lower-link")).unwrap();
    let mps = mp.to_str().unwrap();
    let l = lo.display();
    for (opts, msg) in [
        (format!("lowerdir={l},upperdir={l}2"), "needs workdir"),
        (format!("lowerdir={l},workdir={l}3"), "needs upperdir"),
        (
            format!("lowerdir={l},upperdir={l}2,workdir={l}2/w"),
            "must not contain each other",
        ),
        (format!("br={l}=ro:{l}2=rw"), "not the first"),
        (format!("br={l}=bogus"), "unknown permission"),
        ("allow_other".to_string(), "no branches"),
        (
            format!("lowerdir={l}/missing"),
            &*format!("branch {l}/missing: No such file or directory"),
        ),
        // A link to a directory inside the mountpoint (resolved, as
        // podman's l/SHORTID links are).
        (format!("lowerdir={l}:{l}-link"), "is inside the mountpoint"),
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
    let _g = Mount::adopt(&store, &mp);
    let expected = oracle(&["--image", fixture(IMAGE).to_str().unwrap()]);
    assert_same_tree("mount.fuse3", &expected, &snapshot(&mp), &[]);
}

/// The same container-like changes, made through any union mount at `root`.
fn container_changes(root: &Path) {
    let p = |r: &str| root.join(r);
    std::fs::write(p("etc/motd"), b"hi\n").unwrap(); // create
    std::fs::write(p("etc/group"), b"g\n").unwrap(); // copy-up
    std::fs::remove_file(p("etc/passwd")).unwrap(); // whiteout of a file
    std::fs::remove_dir_all(p("usr/share/doc")).unwrap(); // whiteout of a dir
    std::fs::remove_dir_all(p("opt/data")).unwrap();
    std::fs::create_dir(p("opt/data")).unwrap(); // opaque over a lower dir
    std::fs::write(p("opt/data/z"), b"z\n").unwrap();
    std::fs::create_dir_all(p("new/sub")).unwrap();
    std::os::unix::fs::symlink("../etc/motd", p("new/link")).unwrap();
}

/// A diff made by kernel overlayfs (an upperdir, like Docker's
/// `overlay2/<id>/diff`) read with `--plain`: `diff` gives what the same
/// changes give on a layerfs AUFS-format branch, against the image or
/// against the layer directories, and `commit --plain` turns it into a
/// layer whose image shows exactly what kernel overlayfs showed.
#[test]
fn overlay_upperdir_diff_and_commit() {
    let Some(l) = layers() else { return };
    let store = TestStore::new();
    store.import(&fixture(IMAGE), &["--tag", "multi"]);
    let t = tempfile::tempdir().unwrap();
    let ov: Vec<&PathBuf> = l.overlay.iter().collect();
    let lowers: Vec<String> = ov.iter().rev().map(|d| d.display().to_string()).collect();

    // Kernel overlayfs makes the upperdir; its tree is the expectation.
    let (up, work) = (t.path().join("kupper"), t.path().join("kwork"));
    std::fs::create_dir_all(&up).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let kernel_tree = {
        let k = KernelOverlay::mount(
            &t.path().join("kmnt"),
            &format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers.join(":"),
                up.display(),
                work.display()
            ),
        );
        container_changes(&k.dir);
        snapshot(&k.dir)
    };
    assert!(is_overlay_whiteout(&up.join("etc/passwd")));
    assert!(is_overlay_opaque(&up.join("opt/data")));
    let ups = up.to_str().unwrap();

    // The same changes on a layerfs rw mount of the image (AUFS branch).
    let rw = t.path().join("rw");
    {
        let m = Mount::rw(&store, "multi", &rw);
        container_changes(&m.dir);
    }
    let want = store.ok(&["diff", rw.to_str().unwrap()]);
    for line in [
        "D /etc/passwd",
        "D /usr/share/doc",
        "A /etc/motd",
        "C /etc/group",
    ] {
        assert!(want.lines().any(|l| l == line), "{line} missing:\n{want}");
    }
    assert!(
        want.lines().any(|l| l.starts_with("D /opt/data/")),
        "{want}"
    );

    // Without --plain an upperdir is refused; with it both bases agree.
    let err = store.fails(&["diff", ups, "--image", "multi"]);
    assert!(err.contains("--plain"), "{err}");
    assert_eq!(
        store.ok(&["diff", ups, "--plain", "--image", "multi"]),
        want
    );
    let ld = lowers.join(":");
    assert_eq!(store.ok(&["diff", ups, "--plain", "--lowerdir", &ld]), want);
    // A live mount-branches mount knows its lowerdirs.
    {
        let w2 = t.path().join("lwork");
        let m = Mount::branches(
            &store,
            &format!("lowerdir={ld},upperdir={ups},workdir={}", w2.display()),
        );
        assert_eq!(store.ok(&["diff", m.dir.to_str().unwrap()]), want);
        let err = store.fails(&["commit", m.dir.to_str().unwrap()]);
        assert!(err.contains("--image"), "{err}");
    }

    // commit --plain: the layer holds AUFS markers, the image shows what
    // kernel overlayfs showed.
    let id = store.ok(&[
        "commit",
        ups,
        "--plain",
        "--image",
        "multi",
        "--tag",
        "fromkernel",
    ]);
    let id = id.trim();
    let changes = store.ok(&["layers", "fromkernel", "--diff", "3"]);
    assert_eq!(changes.replace("C /\n", ""), want);
    let exp = t.path().join("export.tar");
    store.ok(&["export", id, "-o", exp.to_str().unwrap()]);
    assert_same_tree(
        "commit --plain of a kernel overlayfs upperdir",
        &kernel_tree,
        &oracle(&[exp.to_str().unwrap()]),
        &[],
    );
    let m = Mount::new(&store, "fromkernel", &[]);
    assert_same_tree("its mount", &kernel_tree, &snapshot(&m.dir), &[]);
}

/// An `/etc/fstab` line through mount(8) itself (`mount -T FSTAB MNT`,
/// util-linux, so the real fstab is untouched): type `fuse` with source
/// `/path/to/layerfs#none`, which mount.fuse3 runs as `layerfs none MNT -o
/// OPTS` without a PATH lookup; umount(8) unmounts it.
#[test]
fn fstab_line_mounts_through_mount8() {
    let Some(l) = layers() else { return };
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        eprintln!("SKIP: mount.fuse3 (package fuse3) is not installed");
        return;
    }
    let store = TestStore::new();
    let t = tempfile::tempdir().unwrap();
    let mp = t.path().join("mnt");
    let rw = t.path().join("rw");
    std::fs::create_dir(&mp).unwrap();
    let aufs: Vec<&PathBuf> = l.aufs.iter().collect();
    let fstab = t.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# layerfs test\n{}#none {} fuse {},noauto 0 0\n",
            bin(),
            mp.display(),
            br(Some(&rw), &aufs)
        ),
    )
    .unwrap();
    std::fs::create_dir(&rw).unwrap();
    let out = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&mp)
        .env("LAYERFS_ROOT", store.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -T {}: {}",
        fstab.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let g = Mount::adopt(&store, &mp);
    let expected = oracle(&["--image", fixture(IMAGE).to_str().unwrap()]);
    assert_same_tree("fstab mount", &expected, &snapshot(&mp), &[]);
    std::fs::write(mp.join("etc/fstab-was-here"), b"1\n").unwrap();
    std::fs::remove_file(mp.join("etc/passwd")).unwrap();
    let st = Command::new("umount").arg(&mp).status().unwrap();
    assert!(st.success(), "umount(8)");
    std::mem::forget(g);
    assert!(!mp.join("etc").exists(), "still mounted after umount(8)");
    assert_eq!(
        std::fs::read(rw.join("etc/fstab-was-here")).unwrap(),
        b"1\n"
    );
    assert!(rw.join("etc/.wh.passwd").exists());
}

/// `read` debug lines of `layerfs::fuse` for inode `ino` in the one
/// daemon log of `store`.
fn logged_reads(store: &TestStore, ino: u64) -> usize {
    let dir = store.root().join("mounts");
    let mut n = 0;
    let ino = format!(" ino={ino} ");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            n += std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| {
                    l.contains("layerfs::fuse") && l.contains(": read ") && l.contains(&ino)
                })
                .count();
        }
    }
    n
}

/// Files of directory branches read right through every path: a
/// read-only mount (the kernel opens files itself, zero-message opens: the
/// daemon reads them by path through its cache of open files, no
/// passthrough, which would cost an OPEN and a RELEASE round trip per
/// file), `-o passthrough=off`, and below an rw branch (a copy-up while
/// open would need a second backing file for the inode, which the kernel
/// refuses), where a reader opened before a copy-up reads the copy.
#[test]
fn directory_branch_files_read_on_every_path() {
    use std::io::Write;
    use std::os::unix::fs::{FileExt, MetadataExt};
    if !fuse_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (lo, up) = (t.path().join("lo"), t.path().join("up"));
    std::fs::create_dir_all(&lo).unwrap();
    std::fs::create_dir_all(&up).unwrap();
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(lo.join("a"), &data).unwrap();
    let env = [("RUST_LOG", "layerfs::fuse=debug")];
    let lower = format!("lowerdir={}", lo.display());
    let rw = format!("br={}=rw:{}=ro", up.display(), lo.display());
    for opts in [lower.clone(), format!("{lower},passthrough=off"), rw] {
        let store = TestStore::new();
        let ino = {
            let m = Mount::branches_with_env(&store, &opts, &env);
            let p = m.path("a");
            let reader = std::fs::File::open(&p).unwrap();
            assert!(std::fs::read(&p).unwrap() == data, "{opts}: content");
            let mut buf = vec![0u8; 4096];
            reader.read_exact_at(&mut buf, 4096).unwrap();
            assert_eq!(buf, data[4096..8192], "{opts}: second handle");
            if opts.starts_with("br=") {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .write_all_at(b"copied", 4096)
                    .unwrap();
                reader.read_exact_at(&mut buf[..6], 4096).unwrap();
                assert_eq!(&buf[..6], b"copied", "reader switched to the copy");
                assert_eq!(
                    std::fs::read(lo.join("a")).unwrap(),
                    data,
                    "lower untouched"
                );
                let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(b"end").unwrap();
                assert_eq!(std::fs::metadata(&p).unwrap().len(), data.len() as u64 + 3);
            }
            std::fs::metadata(&p).unwrap().ino()
        };
        assert!(logged_reads(&store, ino) > 0, "{opts}: no read logged");
    }
}

/// `commit --plain` of an overlay upperdir holding redirects (renamed
/// lower directories, nested, with changes inside) onto the image the
/// lowers are: the committed image mounted shows what kernel overlayfs
/// shows of the same upperdir over the same lowers.
#[test]
fn commit_of_an_upperdir_with_redirects_is_what_kernel_overlay_shows() {
    let Some(l) = layers() else { return };
    if !overlay_listed() {
        eprintln!("SKIP: kernel overlayfs is not available");
        return;
    }
    let store = TestStore::new();
    let id = store.import(&fixture(IMAGE), &[]);
    let t = tempfile::tempdir().unwrap();
    let (up, work) = (t.path().join("upper"), t.path().join("work"));
    let ov: Vec<&PathBuf> = l.overlay.iter().collect();
    let opts = format!(
        "{},upperdir={},workdir={}",
        lowerdir(&ov),
        up.display(),
        work.display()
    );
    let m = Mount::branches(&store, &opts);
    std::fs::rename(m.path("usr"), m.path("u2")).unwrap(); // mv A B
    std::fs::rename(m.path("u2/share"), m.path("s")).unwrap(); // mv B/sub S
    std::fs::write(m.path("s/doc/pkg/new"), b"new\n").unwrap();
    std::fs::remove_file(m.path("s/doc/pkg/README")).unwrap();
    std::fs::rename(m.path("s/doc/pkg"), m.path("s/pkg2")).unwrap(); // inside a redirect
    std::fs::rename(m.path("opt/data"), m.path("opt/d2")).unwrap();
    std::fs::write(m.path("opt/d2/x"), b"x\n").unwrap();
    // Directories of one layer move with a redirect (usr and its share
    // span two and are copied up).
    std::fs::rename(m.path("home"), m.path("h")).unwrap(); // mv A B
    std::fs::rename(m.path("h/user"), m.path("U")).unwrap(); // mv B/sub S
    std::fs::remove_file(m.path("U/secret")).unwrap();
    std::fs::create_dir(m.path("U/d")).unwrap();
    std::fs::write(m.path("U/new"), b"n\n").unwrap();
    std::fs::rename(m.path("bin"), m.path("h/b2")).unwrap(); // into a redirected dir
    std::fs::remove_file(m.path("h/b2/cat")).unwrap();
    std::fs::write(m.path("h/b2/x"), b"x\n").unwrap();
    std::fs::rename(m.path("tmp"), m.path("h/b2/t")).unwrap(); // redirect in a redirect
    drop(m);
    for (d, to) in [
        ("h", "/home"),
        ("U", "/home/user"),
        ("h/b2", "/bin"),
        ("h/b2/t", "/tmp"),
        ("opt/d2", "/opt/data"),
    ] {
        assert_eq!(
            lgetxattr(&up.join(d), "trusted.overlay.redirect"),
            Ok(to.as_bytes().to_vec()),
            "{d}"
        );
    }

    let w2 = t.path().join("work2");
    std::fs::create_dir(&w2).unwrap();
    let kmp = t.path().join("kmnt");
    let expected = {
        let k = KernelOverlay::mount(
            &kmp,
            &format!(
                "{},upperdir={},workdir={},redirect_dir=on,index=off,metacopy=off",
                lowerdir(&ov),
                up.display(),
                w2.display()
            ),
        );
        snapshot(&k.dir)
    };
    // diff of the upperdir: its changes as the expanded layer's.
    let diff = store.ok(&["diff", "--plain", "--image", &id, up.to_str().unwrap()]);
    let lines: Vec<&str> = diff.lines().collect();
    for l in [
        "D /bin",
        "D /tmp",
        "A /h/b2/busybox",
        "A /h/b2/t",
        "A /U/new",
        "D /opt/data",
        "A /opt/d2/new",
    ] {
        assert!(lines.contains(&l), "{l} not in diff:\n{diff}");
    }
    assert!(!lines.contains(&"A /h/b2/cat"), "{diff}");
    let new = store.ok(&["commit", "--plain", "--image", &id, up.to_str().unwrap()]);
    let m = Mount::new(&store, new.trim(), &[]);
    assert_same_tree(
        "the committed upperdir vs kernel overlayfs",
        &expected,
        &snapshot(&m.dir),
        &[],
    );
}
