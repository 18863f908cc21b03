//! The on-disk index parser on arbitrary bytes: an index it accepts must
//! be safe to walk with every accessor the mount uses.
#![no_main]
use layerfs::layer::index::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = Index::from_bytes(data.to_vec(), "fuzz") {
        let _ = idx.tar_size();
        for i in 0..idx.len() {
            let e = idx.entry(i);
            let _ = idx.name(&e);
            let _ = idx.target(&e);
            let _ = idx.xattrs(&e).count();
            let _ = e.rdev();
            if e.is_dir() {
                let _ = idx.children(&e);
                let _ = idx.lookup(&e, b"a");
                let _ = idx.unlisted(&e);
            }
            let p = idx.path(i);
            let _ = idx.lookup_path(&p);
        }
    }
});
