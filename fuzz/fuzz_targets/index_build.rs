//! The tar index builder on arbitrary bytes: it must return an error or an
//! index that the index parser accepts and whose every path looks up.
#![no_main]
use layerfs::layer::index::{build::build_index, Index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((bytes, _stats)) = build_index(data) {
        let idx = Index::from_bytes(bytes, "fuzz").expect("a built index validates");
        for i in 0..idx.len() {
            let p = idx.path(i);
            assert!(
                idx.lookup_path(&p).is_some(),
                "path {p:?} of entry {i} looks up"
            );
        }
    }
});
