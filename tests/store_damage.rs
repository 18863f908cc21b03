//! Damage to one image's files stays with that image: the other images
//! keep working for every command, and nothing the damaged image may need
//! is freed.

mod common;

use common::*;

#[test]
fn one_corrupt_image_record_breaks_only_its_image() {
    let store = TestStore::new();
    let good = store.import(&fixture("multi.docker.tar"), &[]);
    let bad = store.import(&fixture("edge.docker.tar"), &[]);
    let rec = store.root().join("images").join(&bad).join("image.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    let bad_layers: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(!bad_layers.is_empty());
    std::fs::write(&rec, b"{ not json").unwrap();
    let count = || {
        std::fs::read_dir(store.root().join("layers"))
            .unwrap()
            .count()
    };
    let layers_before = count();

    let out = store.run(&["images"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&good[..12]), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bad[..12]) && err.contains("corrupt store file"),
        "{err}"
    );

    // The good image resolves, inspects, exports, and mounts.
    store.ok(&["history", &good[..12]]);
    store.ok(&["inspect", "multi"]);
    let t = tempfile::tempdir().unwrap();
    store.ok(&[
        "export",
        "multi",
        "-o",
        t.path().join("x.tar").to_str().unwrap(),
    ]);
    if fuse_available() {
        let m = Mount::new(&store, "multi", &[]);
        assert!(m.path("bin/busybox").is_file());
    }
    // A writer (import) runs, and its recovery frees nothing the damaged
    // image may use.
    let third = store.import(&fixture("legacy.docker.tar"), &[]);
    let layers_after_import = count();
    assert!(layers_after_import > layers_before);
    // rm of a good image works, but keeps layers a damaged record might name.
    let out = store.run(&["rm", &third]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeping the layers"));
    assert_eq!(count(), layers_after_import);
    store.ok(&["rm", &good]);
    assert_eq!(count(), layers_after_import);
    for l in &bad_layers {
        assert!(
            store
                .root()
                .join("layers")
                .join(l)
                .join("layer.tar")
                .is_file(),
            "{l}"
        );
    }
    // The damaged image itself says what is wrong.
    let err = store.fails(&["history", &bad]);
    assert!(err.contains("corrupt store file"), "{err}");
}
