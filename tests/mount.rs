//! Real FUSE mounts of imported images, compared path by path with oracles
//! the mount code does not share: `tools/oracle_merge.py` (Python's tarfile
//! applying Docker's layer rules) and `umoci unpack`.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;

use common::*;

/// Import a docker-archive fixture, mount it, and compare every path with
/// the oracle's merge of the same archive's layers.
fn check_against_oracle(name: &str) {
    let Some((store, id)) = fuse_store(name) else {
        return;
    };
    let fx = fixture(name);
    let expected = oracle(&["--image", fx.to_str().unwrap()]);
    let m = Mount::new(&store, &id, &[]);
    assert_same_tree(name, &expected, &snapshot(&m.dir), &[]);
}

#[test]
fn multi_layer_buildah_image_matches_oracle() {
    check_against_oracle("multi.docker.tar");
}

#[test]
fn edge_case_layers_match_oracle() {
    check_against_oracle("edge.docker.tar");
}

#[test]
fn legacy_v1_archive_matches_oracle() {
    let Some((store, id)) = fuse_store("legacy.docker.tar") else {
        return;
    };
    let fx = fixture("legacy.docker.tar");
    let expected = oracle(&["--image", fx.to_str().unwrap()]);
    let m = Mount::new(&store, &id, &[]);
    assert_same_tree("legacy", &expected, &snapshot(&m.dir), &[]);
}

/// `umoci unpack` (a third-party OCI implementation) of the OCI layout
/// must give the same tree as the mount.
#[test]
fn oci_layout_matches_umoci_unpack() {
    if !fuse_available() {
        return;
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "umoci is missing in CI");
        eprintln!("SKIP: umoci not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture("multi.oci"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let bundle = work.path().join("bundle");
    let mut umoci = Command::new("umoci");
    umoci
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:multi:latest", layout.display()))
        .arg(&bundle);
    if !is_root() {
        umoci.arg("--rootless");
    }
    let out = umoci.output().unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = snapshot(&bundle.join("rootfs"));

    let store = TestStore::new();
    let id = store.import(&fixture("multi.oci"), &[]);
    let m = Mount::new(&store, &id, &[]);
    let mut ignore = vec![];
    if !is_root() {
        ignore.extend(["uid", "gid"]); // a rootless unpack cannot chown
    }
    assert_same_tree(
        "umoci unpack vs mount",
        &expected,
        &snapshot(&m.dir),
        &ignore,
    );
}

/// The same image in every container format mounts as the same tree.
#[test]
fn every_format_of_one_image_mounts_the_same_tree() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let reference = {
        let m = Mount::new(&store, &id, &[]);
        snapshot(&m.dir)
    };
    for f in ["multi.oci", "multi.oci.tar", "multi-zstd.oci"] {
        let fx = fixture(f);
        if !fx.exists() {
            panic!("fixture {f} missing: run tools/make-fixtures.sh");
        }
        let id = store.import(&fx, &[]);
        let m = Mount::new(&store, &id, &[]);
        assert_same_tree(f, &reference, &snapshot(&m.dir), &[]);
    }
}

#[test]
fn rootfs_tars_gzip_and_zstd_mount() {
    let Some((store, a)) = fuse_store("edge-rootfs.tar.gz") else {
        return;
    };
    let b = store.import(&fixture("edge-rootfs.tar.zst"), &[]);
    assert_eq!(a, b, "the same rootfs, compressed two ways, is one image");
    let m = Mount::new(&store, &a, &[]);
    let gz = fixture("edge-rootfs.tar.gz");
    let expected = oracle(&[gz.to_str().unwrap()]);
    assert_same_tree("rootfs", &expected, &snapshot(&m.dir), &[]);
}

#[test]
fn binaries_on_the_mount_run() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let m = Mount::new(&store, &id, &[]);
    let out = Command::new(m.path("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let os = std::fs::read_to_string(m.path("etc/os-release")).unwrap();
    assert!(os.contains("layerfs-fixture"), "{os}");
}

/// Random `pread`s and an `mmap` of every regular file agree with a plain
/// sequential read (whose hash the oracle comparisons check).
#[test]
fn random_reads_and_mmap_agree_with_sequential_reads() {
    let Some((store, id)) = fuse_store("edge.docker.tar") else {
        return;
    };
    let m = Mount::new(&store, &id, &[]);
    let mut checked = 0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for entry in walk(&m.dir) {
        let md = std::fs::symlink_metadata(&entry).unwrap();
        if !md.is_file() || md.len() == 0 {
            continue;
        }
        let mut whole = Vec::new();
        std::fs::File::open(&entry)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole.len() as u64, md.len());
        let f = std::fs::File::open(&entry).unwrap();
        for _ in 0..32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let off = (seed % md.len()) as usize;
            let len = ((seed >> 32) % 70_000) as usize;
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, off as u64).unwrap();
            assert_eq!(
                &buf[..n],
                &whole[off..(off + len).min(whole.len())],
                "{}",
                entry.display()
            );
        }
        // SAFETY: the file is on a read-only mount and not modified.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        assert_eq!(&map[..], &whole[..], "mmap of {}", entry.display());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} files checked");
}

/// st_ino of every path stays the same while mounted, even after the
/// kernel has dropped its caches, forgotten every node and must look
/// everything up again (the daemon drops forgotten nodes, and a name looked
/// up again gets its number from what backs it); hard links share theirs,
/// no two other paths do.
#[test]
fn inode_numbers_are_stable_for_the_life_of_the_mount() {
    for image in ["edge.docker.tar", "multi.docker.tar"] {
        let Some((store, id)) = fuse_store(image) else {
            continue;
        };
        let m = Mount::new(&store, &id, &[]);
        let first = inode_numbers(&m.dir);
        assert!(first.len() > 3, "{image}");
        assert_only_hard_links_share(&first);
        let distinct: std::collections::HashSet<u64> = first.iter().map(|(_, i)| *i).collect();
        assert!(distinct.len() < first.len(), "{image}: no hard link seen");
        if is_root() {
            assert!(drop_kernel_caches());
        }
        assert_eq!(first, inode_numbers(&m.dir), "{image}");
        assert_eq!(std::fs::metadata(&m.dir).unwrap().ino(), 1, "root inode");
    }
}

#[test]
fn statfs_answers_and_writes_are_refused() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let m = Mount::new(&store, &id, &[]);
    let c = std::ffi::CString::new(m.dir.to_str().unwrap()).unwrap();
    // SAFETY: statfs into a zeroed struct.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        assert_eq!(libc::statfs(c.as_ptr(), &mut st), 0);
        st
    };
    assert_eq!(st.f_type, 0x6573_5546, "FUSE magic");
    assert!(st.f_blocks > 0 && st.f_files > 0);
    let e = std::fs::write(m.path("etc/new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("etc/os-release"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::remove_file(m.path("etc/os-release")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::read_dir(m.path("nonexistent")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn image_is_not_removed_while_mounted() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    {
        let _m = Mount::new(&store, &id, &[]);
        let err = store.fails(&["rm", &id]);
        assert!(err.contains("mounted"), "{err}");
        assert!(store.ok(&["images"]).contains(&id[..12]));
    }
    store.ok(&["rm", &id]);
    assert!(!store.ok(&["images"]).contains(&id[..12]));
}

/// SIGTERM (and SIGINT) to a foreground daemon unmount cleanly.
#[test]
fn signals_unmount_the_daemon_cleanly() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mp = tempfile::tempdir().unwrap();
        let mut child = store
            .cmd()
            .args(["mount", &id, mp.path().to_str().unwrap(), "--foreground"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !layerfs::mount::is_fuse_mount(mp.path()) {
            assert!(
                std::time::Instant::now() < deadline,
                "mount did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(mp.path().join("bin/busybox").exists());
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        let mounted = layerfs::mount::is_fuse_mount(mp.path());
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(mp.path()).status();
        }
        assert!(status.success(), "daemon exit after signal {sig}: {status}");
        assert!(!mounted, "still mounted after signal {sig}");
    }
}

/// An unprivileged user imports and mounts, and sees the owners and modes
/// recorded in the tar (nothing was chowned or chmodded on disk).
#[test]
fn unprivileged_user_imports_and_mounts() {
    if !fuse_available() {
        return;
    }
    let Some(u) = UserDir::new() else {
        return;
    };
    let user = u.user;
    let root = u.path("store");
    let mnt = u.path("mnt");
    let fx = u.path("edge.docker.tar");
    std::fs::copy(fixture("edge.docker.tar"), &fx).unwrap();
    let as_user = |args: &[&str]| u.layerfs_ok(&root, args);
    let id = as_user(&["import", fx.to_str().unwrap()])
        .trim()
        .to_string();
    u.ok(&["mkdir", mnt.to_str().unwrap()]);
    as_user(&["mount", &id, mnt.to_str().unwrap()]);
    let guard = LazyUnmount(mnt.clone());
    let expected = oracle(&["--image", fixture("edge.docker.tar").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&expected).unwrap();
    // Only the mounting user may look inside (no allow_other): stat as them.
    let out = u.run(&[
        "find",
        mnt.to_str().unwrap(),
        "-mindepth",
        "1",
        "-printf",
        "%P\\t%U\\t%G\\t%m\\n",
    ]);
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut checked = 0;
    for line in listing.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let e = &v[f[0]];
        assert!(
            e.is_object(),
            "{} is on the mount but not in the oracle",
            f[0]
        );
        assert_eq!(
            f[1].parse::<u64>().unwrap(),
            e["uid"].as_u64().unwrap(),
            "uid of {}",
            f[0]
        );
        assert_eq!(
            f[2].parse::<u64>().unwrap(),
            e["gid"].as_u64().unwrap(),
            "gid of {}",
            f[0]
        );
        assert_eq!(
            u64::from_str_radix(f[3], 8).unwrap(),
            e["mode"].as_u64().unwrap(),
            "mode of {}",
            f[0]
        );
        checked += 1;
    }
    // Everything but what sits below directories this user may not enter.
    assert!(
        checked * 10 >= v.as_object().unwrap().len() * 8,
        "only {checked} paths readable"
    );
    // The store itself holds no file owned by anyone but the user.
    let out = Command::new("find")
        .arg(&root)
        .args(["!", "-user", user])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "files not owned by {user}"
    );
    as_user(&["umount", mnt.to_str().unwrap()]);
    drop(guard);
}

/// Extended attributes on read-only mounts. An image with xattrs answers
/// them (ENODATA for a missing name). An image with none at all (the
/// `multi` fixture: no SCHILY.xattr record in any layer) lists none, and
/// getxattr(2) fails with EOPNOTSUPP, the kernel's answer once the daemon
/// said ENOSYS: what spares `ls -l` a round trip per file (ACLs, answered
/// by the kernel, are simply absent).
#[test]
fn xattrs_of_read_only_mounts() {
    let Some((store, edge)) = fuse_store("edge.docker.tar") else {
        return;
    };
    let m = Mount::new(&store, &edge, &[]);
    let f = m.path("xattrs/user-foo");
    assert_eq!(lgetxattr(&f, "user.foo"), Ok(b"bar".to_vec()));
    assert_eq!(lgetxattr(&f, "user.nosuch"), Err(libc::ENODATA));
    // A missing SELinux label: EOPNOTSUPP where SELinux is not active
    // (there its LSM answers, not the daemon), so `ls -l` stops asking.
    if !std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("selinuxfs")
    {
        assert_eq!(lgetxattr(&f, "security.selinux"), Err(libc::EOPNOTSUPP));
    }
    let names = llistxattr(&f).unwrap();
    assert!(
        names.split(|&b| b == 0).any(|n| n == b"user.foo"),
        "{names:?}"
    );
    drop(m);

    let multi = store.import(&fixture("multi.docker.tar"), &[]);
    let m = Mount::new(&store, &multi, &[]);
    for rel in ["etc/os-release", "bin", ""] {
        let p = m.path(rel);
        assert_eq!(llistxattr(&p), Ok(Vec::new()), "{rel}");
        for name in ["user.foo", "security.selinux"] {
            assert_eq!(lgetxattr(&p, name), Err(libc::EOPNOTSUPP), "{rel} {name}");
        }
        // ACLs are answered by the kernel (FUSE_POSIX_ACL): none.
        assert_eq!(
            lgetxattr(&p, "system.posix_acl_access"),
            Err(libc::ENODATA),
            "{rel}"
        );
    }
    let out = run_ok(Command::new("ls").arg("-la").arg(m.path("bin")));
    assert!(out.contains("busybox"));
}
