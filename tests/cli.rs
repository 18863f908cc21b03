//! The store and the command line without mounts: references, tags,
//! listings, removal, deduplication, and bad input that must leave the store
//! exactly as it was.

mod common;

use std::process::Command;

use common::*;

#[test]
fn images_history_inspect_and_json() {
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &["--tag", "extra:v1"]);
    let text = store.ok(&["images"]);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains(&id[..12]) && text.contains("extra:v1"),
        "{text}"
    );

    let v: serde_json::Value = serde_json::from_str(&store.ok(&["images", "--json"])).unwrap();
    let img = &v.as_array().unwrap()[0];
    assert_eq!(img["id"], id);
    assert_eq!(img["layers"], 3);
    assert!(img["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "extra:v1"));
    assert!(img["size"].as_u64().unwrap() > 1_000_000);

    let h: serde_json::Value =
        serde_json::from_str(&store.ok(&["history", "extra:v1", "--json"])).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[0]["index"], 2, "top layer first");
    assert_eq!(h[2]["index"], 0);
    // The bottom layer's chain id is its diff id.
    assert_eq!(
        format!("sha256:{}", h[2]["layer"].as_str().unwrap()),
        h[2]["diff_id"].as_str().unwrap()
    );

    let cfg: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", &id])).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    // The image id is the digest of the config as stored.
    let raw = std::fs::read(store.root().join("images").join(&id).join("config.json")).unwrap();
    assert_eq!(layerfs::oci::sha256_hex(&raw), id);
}

#[test]
fn references_resolve_by_id_prefix_and_tag_forms() {
    let store = TestStore::new();
    let id = store.import(
        &fixture("multi.docker.tar"),
        &["--tag", "docker.io/library/bb:1.0"],
    );
    for r in [
        id.clone(),
        format!("sha256:{id}"),
        id[..12].to_string(),
        "bb:1.0".into(),
        "docker.io/library/bb:1.0".into(),
        "localhost/bb:1.0".into(),
    ] {
        assert!(!store.ok(&["history", &r, "--json"]).is_empty(), "{r}");
        let cfg = store.ok(&["inspect", &r]);
        assert!(cfg.contains("diff_ids"), "{r}");
    }
    store.ok(&["tag", &id[..8], "short"]);
    assert!(
        store.ok(&["inspect", "short"]).contains("diff_ids"),
        "name means name:latest"
    );
    assert!(store.ok(&["inspect", "short:latest"]).contains("diff_ids"));

    let err = store.fails(&["inspect", "nosuch"]);
    assert!(err.contains("no image \"nosuch\""), "{err}");
    let err = store.fails(&["tag", &id, &"a".repeat(64)]);
    assert!(err.contains("invalid tag"), "{err}");
}

#[test]
fn ambiguous_prefix_lists_the_candidates() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let mut ids: Vec<String> = Vec::new();
    // Import rootfs tars until two image ids share their first hex digit.
    for i in 0..40 {
        let p = dir.path().join(format!("r{i}.tar"));
        let m = Meta {
            mtime: 1_700_000_000,
            ..M644
        };
        Tar::create(&p)
            .file_m("f", format!("content {i}").as_bytes(), m)
            .finish();
        let id = store.import(&p, &[]);
        if let Some(other) = ids.iter().find(|o| o[..1] == id[..1]) {
            let err = store.fails(&["inspect", &id[..1]]);
            assert!(err.contains("ambiguous"), "{err}");
            assert!(
                err.contains(other.as_str()) && err.contains(id.as_str()),
                "{err}"
            );
            return;
        }
        ids.push(id);
    }
    panic!("no shared prefix among 40 ids");
}

#[test]
fn layers_are_stored_once_and_rm_frees_only_unused_ones() {
    let store = TestStore::new();
    let a = store.import(&fixture("multi.docker.tar"), &[]);
    let layers = || {
        std::fs::read_dir(store.root().join("layers"))
            .unwrap()
            .count()
    };
    assert_eq!(layers(), 3);
    let before = store.fingerprint();
    // The same image again, through another format: nothing new is stored.
    let b = store.import(&fixture("multi.oci"), &[]);
    assert_eq!(layers(), 3, "layers stored twice");
    if a == b {
        assert_eq!(before, store.fingerprint());
    }
    // A different image on the same base shares its layers.
    store.import(&fixture("edge.docker.tar"), &[]);
    let n = layers();
    store.ok(&["rm", &a]);
    if a != b {
        assert_eq!(
            layers(),
            n,
            "layers still used by the OCI import were removed"
        );
        store.ok(&["rm", &b]);
    }
    assert_eq!(layers(), n - 3);
    let err = store.fails(&["rm", &a]);
    assert!(err.contains("no image"), "{err}");
}

#[test]
fn oci_ref_selects_a_manifest() {
    let store = TestStore::new();
    let p = format!("{}:multi:latest", fixture("multi.oci").display());
    let id = store.import(std::path::Path::new(&p), &[]);
    assert!(store.ok(&["images"]).contains(&id[..12]));
    let p = format!("{}:nosuch", fixture("multi.oci").display());
    let err = store.fails(&["import", &p]);
    assert!(
        err.contains("nosuch") && err.contains("multi:latest"),
        "{err}"
    );
}

#[test]
fn import_from_stdin() {
    let store = TestStore::new();
    let f = std::fs::File::open(fixture("edge-rootfs.tar.gz")).unwrap();
    let out = store
        .cmd()
        .arg("import")
        .arg("-")
        .stdin(f)
        .output()
        .unwrap();
    let id = succeeded("layerfs import -", out).trim().to_string();
    assert_eq!(id, store.import(&fixture("edge-rootfs.tar.gz"), &[]));
}

/// Each bad input fails with a message naming the problem and leaves the
/// store byte-for-byte as it was (a good image was imported before).
#[test]
fn bad_input_is_refused_and_leaves_the_store_unchanged() {
    let store = TestStore::new();
    store.import(&fixture("edge.docker.tar"), &["--tag", "good"]);
    let before = store.fingerprint();
    let cases: &[(&str, &str)] = &[
        ("bad/corrupt-gzip.tar.gz", "corrupt"),
        ("bad/truncated.tar", "truncated"),
        ("bad/digest-mismatch.docker.tar", "diff_id mismatch"),
        ("bad/missing-blob.oci", "missing"),
        ("bad/manifest-escape.docker.tar", "outside the archive"),
        ("bad/manifest-absolute.docker.tar", "outside the archive"),
        ("bad/symlink-escape.docker.tar", "outside the archive"),
        ("bad/dotdot.tar", "'..'"),
        ("bad/absolute.tar", "absolute path"),
        ("bad/oci-digest-mismatch.oci", "does not match its digest"),
    ];
    for (name, needle) in cases {
        let fx = fixture(name);
        assert!(fx.exists(), "fixture {name} missing");
        let err = store.fails(&["import", fx.to_str().unwrap()]);
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: expected {needle:?} in: {err}"
        );
        assert_eq!(store.fingerprint(), before, "{name} changed the store");
        let tmp = std::fs::read_dir(store.root().join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "{name} left staging files");
    }
    let err = store.fails(&["import", "/nonexistent/image.tar"]);
    assert!(err.contains("/nonexistent/image.tar"), "{err}");
    assert_eq!(store.fingerprint(), before);
}

/// A store file from another layerfs (unknown index version) or damaged on
/// disk gives a clear error instead of a crash or a wrong tree.
#[test]
fn unknown_index_version_and_corrupt_store_files_are_reported() {
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.root().join("images").join(&id).join("image.json")).unwrap(),
    )
    .unwrap();
    let top = rec["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let index = store.root().join("layers").join(&top).join("index");
    let good = std::fs::read(&index).unwrap();
    let mp = tempfile::tempdir().unwrap();

    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&index, &bad).unwrap();
    let err = store.fails(&["mount", &id, mp.path().to_str().unwrap()]);
    assert!(err.contains("index format version 99"), "{err}");

    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    std::fs::write(&index, &bad).unwrap();
    let err = store.fails(&["mount", &id, mp.path().to_str().unwrap()]);
    assert!(err.contains("corrupt index"), "{err}");
    std::fs::write(&index, &good).unwrap();

    std::fs::write(
        store.root().join("images").join(&id).join("image.json"),
        b"{garbage",
    )
    .unwrap();
    // The damage stays with the image: `images` lists it as broken.
    let out = store.ok(&["images"]);
    assert!(out.contains("BROKEN: corrupt store file"), "{out}");
    assert!(!layerfs::mount::is_fuse_mount(mp.path()));
}

/// kill -9 of an import at any moment leaves the store as it was before
/// (readers see no trace) or as after; the next writer finishes or cleans up.
#[test]
fn killed_import_leaves_no_partial_state() {
    let dir = tempfile::tempdir().unwrap();
    // A rootfs big enough that the import takes a while.
    let big = dir.path().join("big.tar");
    {
        let mut t = Tar::create(&big);
        let mut seed = 1u64;
        for i in 0..64 {
            let data: Vec<u8> = (0..1 << 20)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            t.file_m(&format!("d/f{i}"), &data, Meta { mtime: 0, ..M644 });
        }
        t.finish();
    }
    let reference = TestStore::new();
    let want = reference.import(&big, &[]);

    for delay_ms in [5u64, 20, 60, 120, 250, 500] {
        let store = TestStore::new();
        store.import(&fixture("edge-rootfs.tar.gz"), &["--tag", "base"]);
        let before = store.fingerprint();
        let mut child = store.cmd().arg("import").arg(&big).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // SAFETY: killing our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        // Readers see the old store or the new one, nothing in between.
        let listed = store.ok(&["images", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let n = v.as_array().unwrap().len();
        assert!(n == 1 || n == 2, "{listed}");
        if n == 1 {
            // Not published: apart from what the next writer cleans up
            // (tmp/, a journal to roll forward), nothing changed.
            let after: Vec<_> = store
                .fingerprint()
                .into_iter()
                .filter(|(p, _, _)| p != "publish.json")
                .collect();
            let journal = store.root().join("publish.json").exists();
            if !journal {
                assert_eq!(after, before, "killed after {delay_ms} ms");
            }
        }
        // The next writer recovers; importing again gives the right image.
        assert_eq!(store.import(&big, &[]), want);
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
            0
        );
        assert!(!store.root().join("publish.json").exists());
        let layers = std::fs::read_dir(store.root().join("layers"))
            .unwrap()
            .count();
        assert_eq!(layers, 2, "one layer per image, no orphans");
    }
}

#[test]
fn default_root_follows_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .env("LAYERFS_ROOT", dir.path().join("s"))
        .arg("images")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("s/VERSION").exists());
    // --root overrides the environment.
    let out = Command::new(bin())
        .env("LAYERFS_ROOT", dir.path().join("s"))
        .args(["--root", dir.path().join("t").to_str().unwrap(), "images"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("t/VERSION").exists());
}
