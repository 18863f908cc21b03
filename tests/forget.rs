//! Nodes forgotten by the kernel (`echo 2 > /proc/sys/vm/drop_caches`
//! makes it evict every unused inode, and the daemon gets their FORGETs)
//! and looked up again: `st_ino` must come back the same. In a test file of
//! its own: dropping the kernel's caches would make the LOOKUP counts of
//! `rw_mount.rs`, whose tests run in parallel with each other, flaky.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

/// st_ino survives the kernel forgetting nodes on a writable mount: of
/// lower files, of files copied up (a chmod of a hard-linked one), of a
/// lower directory renamed (copied up whole, opaque) and of new objects
/// and their hard links, each looked up again after `drop_caches`; hard
/// links share theirs, no two other paths do. Then once more after a
/// second round of changes on top of forgotten nodes.
#[test]
fn inode_numbers_survive_forgetting_and_copy_up() {
    use std::os::unix::fs::PermissionsExt;
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    if !drop_kernel_caches() {
        return;
    }
    let branch = tempfile::tempdir().unwrap();
    let m = Mount::rw(&store, &id, &branch.path().join("rw"));
    let first = inode_numbers(&m.dir);
    let ino = |p: &str| std::fs::symlink_metadata(m.path(p)).unwrap().ino();
    let a = ino("usr/share/doc/pkg/a");
    assert_eq!(a, ino("usr/share/doc/pkg/a-link"));
    assert!(drop_kernel_caches());
    assert_eq!(first, inode_numbers(&m.dir), "lower nodes forgotten");
    // Changes, each through nodes the kernel forgot.
    let chmod = |p: &str, mode| {
        std::fs::set_permissions(m.path(p), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod("usr/share/doc/pkg/a", 0o600);
    let data = ino("opt/data");
    std::fs::rename(m.path("opt/data"), m.path("opt/data2")).unwrap();
    std::fs::create_dir(m.path("new")).unwrap();
    std::fs::write(m.path("new/f"), b"x").unwrap();
    std::fs::hard_link(m.path("new/f"), m.path("new/g")).unwrap();
    let changed = inode_numbers(&m.dir);
    assert_only_hard_links_share(&changed);
    assert_eq!(ino("usr/share/doc/pkg/a"), a, "copy-up");
    assert_eq!(ino("usr/share/doc/pkg/a-link"), a, "copy-up, other name");
    assert_eq!(ino("opt/data2"), data, "renamed lower directory");
    assert_eq!(ino("new/f"), ino("new/g"));
    for (p, i) in &first {
        if let Some((_, j)) = changed.iter().find(|(q, _)| q == p) {
            assert_eq!(i, j, "{}", p.display());
        }
    }
    assert!(drop_kernel_caches());
    assert_eq!(
        changed,
        inode_numbers(&m.dir),
        "after forgetting the changes"
    );
    // A second copy-up of an object forgotten since its first.
    chmod("usr/share/doc/pkg/a-link", 0o640);
    std::fs::remove_file(m.path("new/g")).unwrap();
    assert!(drop_kernel_caches());
    let last = inode_numbers(&m.dir);
    assert_only_hard_links_share(&last);
    for (p, i) in &last {
        let j = changed.iter().find(|(q, _)| q == p).map(|(_, j)| j);
        assert_eq!(Some(i), j, "{}", p.display());
    }
}
