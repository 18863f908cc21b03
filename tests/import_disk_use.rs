//! Disk use of compressed imports (issue 14): a compressed archive's
//! layers are on disk once, not twice (the decompressed archive and the
//! layer copy); a layer stops at `--max-layer-size` and before the store's
//! filesystem is full; an ENOSPC names the layer being written, not a
//! decompression error. Each runs out of space for real on a small tmpfs
//! store, and the store is left as it was with `tmp/` empty.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// A tar holding one file `zero` of `mib` MiB of zeros (a compression
/// bomb once compressed), written to `dir/name`.
fn zeros_tar(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("zero")).unwrap();
    f.set_len(mib * MIB).unwrap();
    let out = dir.join(name);
    // Without -S, tar stores the zeros, not a sparse map.
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&out)
            .arg("zero"),
    );
    std::fs::remove_dir_all(&src).unwrap();
    out
}

/// Compresses `file` with `tool` (`gzip` or `zstd`) to `file.EXT`; the
/// original is removed.
fn compress(file: &Path, tool: &str) -> PathBuf {
    let ext = if tool == "gzip" { "gz" } else { "zst" };
    let out = PathBuf::from(format!("{}.{ext}", file.display()));
    let mut c = Command::new(tool);
    if tool == "zstd" {
        c.args(["-q", "-3", "--rm"]);
    } else {
        c.args(["-1"]);
    }
    run_ok(c.arg(file));
    assert!(out.is_file(), "{tool} wrote no {}", out.display());
    out
}

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// A docker-archive directory tree in `dir/name.d` with one layer, the
/// uncompressed tar `layer` (its member is `layer.tar`, or `layer.tar.gz`
/// when `gzip_layer`); returns the tar of it at `dir/name`.
fn docker_archive(dir: &Path, name: &str, layer: &Path, gzip_layer: bool) -> PathBuf {
    let tree = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&tree).unwrap();
    let diff_id = sha256_file(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    std::fs::write(tree.join(&config_name), &config).unwrap();
    let member = if gzip_layer {
        std::fs::copy(layer, tree.join("layer.tar")).unwrap();
        compress(&tree.join("layer.tar"), "gzip");
        "layer.tar.gz"
    } else {
        std::fs::rename(layer, tree.join("layer.tar")).unwrap();
        "layer.tar"
    };
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["bomb:latest"],
        "Layers": [member],
    }]);
    std::fs::write(
        tree.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let out = dir.join(name);
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(&out)
            .args([config_name.as_str(), member, "manifest.json"]),
    );
    std::fs::remove_dir_all(&tree).unwrap();
    out
}

/// An OCI layout with one uncompressed layer `layer`, as a tar at
/// `dir/name`.
fn oci_archive(dir: &Path, name: &str, layer: &Path) -> PathBuf {
    let tree = dir.join(format!("{name}.d"));
    let blobs = tree.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let diff_id = sha256_file(layer);
    let size = std::fs::metadata(layer).unwrap().len();
    std::fs::rename(layer, blobs.join(&diff_id)).unwrap();
    let blob = |data: &[u8]| -> String {
        let d = hex::encode(Sha256::digest(data));
        std::fs::write(blobs.join(&d), data).unwrap();
        d
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .unwrap();
    let config_digest = blob(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{diff_id}"),
            "size": size,
        }],
    }))
    .unwrap();
    let manifest_digest = blob(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(tree.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(
        tree.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let out = dir.join(name);
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(&out)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    std::fs::remove_dir_all(&tree).unwrap();
    out
}

/// Nothing is left under the store's `tmp/`.
fn assert_tmp_empty(store: &TestStore) {
    let tmp = store.root().join("tmp");
    if tmp.exists() {
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "tmp/ holds {left:?}");
    }
}

/// The one layer of `id` has the size of the uncompressed tar.
fn assert_layer_size(store: &TestStore, id: &str, size: u64) {
    let out = store.ok(&["history", id, "--json"]);
    assert!(out.contains(&size.to_string()), "{out}");
}

/// Makes a test archive.
type Maker<'a> = Box<dyn Fn() -> PathBuf + 'a>;

/// Compressed archives of a layer of 160 MiB import into a 300 MiB store:
/// the decompressed archive and the layer copy would need 320 MiB, so
/// this only works when the layer's bytes are on disk once.
#[test]
fn a_compressed_archive_is_on_disk_once() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let cases: Vec<(&str, Maker)> = vec![
        (
            "rootfs.tar.zst",
            Box::new(|| compress(&zeros_tar(w, "rootfs.tar", 160), "zstd")),
        ),
        (
            "docker-archive.tar.gz",
            Box::new(|| {
                let l = zeros_tar(w, "l.tar", 160);
                let a = docker_archive(w, "docker.tar", &l, false);
                compress(&a, "gzip")
            }),
        ),
        (
            "oci-archive.tar.zst",
            Box::new(|| {
                let l = zeros_tar(w, "l.tar", 160);
                let a = oci_archive(w, "oci.tar", &l);
                compress(&a, "zstd")
            }),
        ),
    ];
    let layer_size = std::fs::metadata(zeros_tar(w, "probe.tar", 160))
        .unwrap()
        .len();
    for (what, make) in cases {
        let Some(store) = TestStore::on_tmpfs(300) else {
            return;
        };
        let archive = make();
        let out = store.run(&["import", archive.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_layer_size(&store, &id, layer_size);
        assert_tmp_empty(&store);
        std::fs::remove_file(&archive).unwrap();
    }
}

/// `--max-layer-size` stops a layer as it grows, streamed (a gzip layer)
/// or copied (an uncompressed layer inside a zstd rootfs), naming it; the
/// store is unchanged.
#[test]
fn max_layer_size_stops_a_bomb() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let before = store.fingerprint();

    let l = zeros_tar(w, "l.tar", 64);
    let gz_layer = docker_archive(w, "bomb.tar", &l, true);
    let err = store.fails(&[
        "import",
        gz_layer.to_str().unwrap(),
        "--max-layer-size",
        "16M",
    ]);
    assert!(
        err.contains("layer 0 (layer.tar.gz) is larger than --max-layer-size (16.0 MiB"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
    assert_tmp_empty(&store);

    let zst = compress(&zeros_tar(w, "rootfs.tar", 64), "zstd");
    let err = store.fails(&["import", zst.to_str().unwrap(), "--max-layer-size", "16M"]);
    assert!(
        err.contains("is larger than --max-layer-size (16.0 MiB"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
    assert_tmp_empty(&store);

    // The same archive imports without the limit.
    store.ok(&["import", zst.to_str().unwrap(), "--max-layer-size", "none"]);
}

/// On a 64 MiB store, a gzip layer of 128 MiB stops before the disk is
/// full (the default margin), with a message naming the layer and the free
/// space; the store is unchanged.
#[test]
fn a_layer_stops_before_the_disk_is_full() {
    let Some(store) = TestStore::on_tmpfs(64) else {
        return;
    };
    store.import(&fixture("multi.docker.tar"), &[]);
    let before = store.fingerprint();
    let work = tempfile::tempdir().unwrap();
    let l = zeros_tar(work.path(), "l.tar", 128);
    let a = docker_archive(work.path(), "big.tar", &l, true);
    let err = store.fails(&["import", a.to_str().unwrap()]);
    assert!(
        err.contains("stopped writing layer 0 (layer.tar.gz) after")
            && err.contains("the store's filesystem")
            && err.contains("--min-free"),
        "{err}"
    );
    assert_eq!(store.fingerprint(), before);
    assert_tmp_empty(&store);
}

/// With no margin (`--min-free 0`), an 8 MiB store really runs out of
/// space: the error is ENOSPC on the layer (streamed from a gzip layer,
/// and the decompressed archive of a .tar.gz), not corrupt data; the store
/// is unchanged.
#[test]
fn enospc_names_the_layer_not_the_decompressor() {
    let Some(store) = TestStore::on_tmpfs(8) else {
        return;
    };
    store.import(&fixture("multi.docker.tar"), &[]);
    let before = store.fingerprint();
    let work = tempfile::tempdir().unwrap();
    let l = zeros_tar(work.path(), "l.tar", 32);
    let a = docker_archive(work.path(), "big.tar", &l, true);
    let err = store.fails(&["import", a.to_str().unwrap(), "--min-free", "0"]);
    assert!(
        err.contains("no space left on device while writing layer 0 (layer.tar.gz) ("),
        "{err}"
    );
    assert!(!err.contains("corrupt"), "{err}");
    assert_eq!(store.fingerprint(), before);
    assert_tmp_empty(&store);

    let gz = compress(&zeros_tar(work.path(), "rootfs.tar", 32), "gzip");
    let err = store.fails(&["import", gz.to_str().unwrap(), "--min-free", "0"]);
    assert!(
        err.contains("no space left on device while writing the decompressed archive"),
        "{err}"
    );
    assert!(!err.contains("corrupt"), "{err}");
    assert_eq!(store.fingerprint(), before);
    assert_tmp_empty(&store);
}
