//! A rename of a lower directory copies its files up (a layer diff has no
//! redirects), and that data copy is made before the namespace lock is
//! taken: the rest of the mount keeps answering while a big directory is
//! being renamed. (It used to copy under the lock: a lookup waited for the
//! whole copy.)

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A rootfs tar: `a/big/blob` of `size` bytes, `a/big/small`, and
/// `other/f`. (The kernel itself holds the directory a rename happens in:
/// the probe looks up a name elsewhere.)
fn image(path: &std::path::Path, size: u64) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, len) in [("a/big/blob", size), ("a/big/small", 5), ("other/f", 5)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, std::io::repeat(b'x').take(len))
            .unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn renaming_a_big_lower_directory_stalls_nothing_else() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let tar = store.dir.path().join("img.tar");
    image(&tar, 128 << 20);
    let id = store.import(&tar, &[]);
    std::fs::remove_file(&tar).unwrap();
    let rw = store.dir.path().join("rw");
    let m = Mount::rw(&store, &id, &rw);
    let done = Arc::new(AtomicBool::new(false));
    let (from, to) = (m.path("a/big"), m.path("a/big2"));
    let flag = done.clone();
    let mover = std::thread::spawn(move || {
        let r = std::fs::rename(&from, &to);
        flag.store(true, Ordering::SeqCst);
        r
    });
    // Let the rename start its copy, then ask for a name nobody looked up
    // yet (a LOOKUP the daemon answers under `ns`).
    std::thread::sleep(Duration::from_millis(40));
    let md = std::fs::metadata(m.path("other/f")).unwrap();
    let renaming = !done.load(Ordering::SeqCst);
    mover.join().unwrap().unwrap();
    assert_eq!(md.len(), 5);
    assert!(
        renaming,
        "the lookup waited until the rename of the 128 MiB directory was done"
    );
    // The rename itself is right: the data moved, the old name is gone.
    assert_eq!(
        std::fs::metadata(m.path("a/big2/blob")).unwrap().len(),
        128 << 20
    );
    assert_eq!(std::fs::read(m.path("a/big2/small")).unwrap(), b"xxxxx");
    assert!(!m.path("a/big").exists());
    assert!(rw.join("a/big2/blob").is_file() && rw.join("a/.wh.big").exists());
}
