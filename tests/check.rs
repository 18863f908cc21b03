//! `layerfs check`: a flipped byte in a layer tar, a damaged index or
//! record, a dangling tag are found; `--repair` removes what is broken
//! (with the images that need it, saying so) and leaves the rest working.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};

use common::*;

fn layers_of(store: &TestStore, id: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.root().join("images").join(id).join("image.json")).unwrap(),
    )
    .unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn check_finds_and_repairs_damage() {
    let store = TestStore::new();
    let multi = store.import(&fixture("multi.docker.tar"), &[]);
    let edge = store.import(&fixture("edge.docker.tar"), &[]);
    let out = store.ok(&["check"]);
    assert!(
        out.contains("checked 2 images") && out.contains(": 0 problems"),
        "{out}"
    );

    // A flipped byte in the middle of one of edge's layer tars.
    let bad = layers_of(&store, &edge).last().unwrap().clone();
    assert!(!layers_of(&store, &multi).contains(&bad));
    let tar = store.root().join("layers").join(&bad).join("layer.tar");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tar)
        .unwrap();
    let mid = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(mid)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(mid)).unwrap();
    f.write_all(&[b[0] ^ 0x20]).unwrap();
    drop(f);
    // A tag naming an image that is not there.
    let tags_path = store.root().join("tags.json");
    let mut tags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tags_path).unwrap_or_else(|_| b"{}".to_vec()))
            .unwrap();
    tags["ghost:latest"] = serde_json::json!("ab".repeat(32));
    std::fs::write(&tags_path, tags.to_string()).unwrap();

    let err = store.fails(&["check"]);
    assert!(err.contains("2 problem(s) found"), "{err}");
    let out = store.run(&["check", "--json"]);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = r["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["kind"] == "layer"
        && p["subject"] == bad.as_str()
        && p["what"]
            .as_str()
            .unwrap()
            .contains("does not match its diff id")));
    assert!(problems
        .iter()
        .any(|p| p["kind"] == "tag" && p["subject"] == "ghost:latest"));
    // Checking only multi finds nothing: the damage is edge's.
    store.ok(&["check", &multi]);

    let out = store.ok(&["check", "--repair"]);
    assert!(
        out.contains(&format!("removed image {}", &edge[..12])),
        "{out}"
    );
    assert!(
        out.contains(&format!("and with it image(s) {}", &edge[..12])),
        "{out}"
    );
    assert!(!store.root().join("layers").join(&bad).exists());
    assert!(!store.root().join("images").join(&edge).exists());
    let out = store.ok(&["check"]);
    assert!(
        out.contains("checked 1 images") && out.contains(": 0 problems"),
        "{out}"
    );
    // multi is whole.
    store.ok(&[
        "export",
        &multi,
        "-o",
        store.dir.path().join("m.tar").to_str().unwrap(),
    ]);

    // A damaged index and a damaged record are found too.
    let l0 = layers_of(&store, &multi)[0].clone();
    let idx = store.root().join("layers").join(&l0).join("index");
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&idx, &bytes).unwrap();
    let err = store.fails(&["check"]);
    assert!(err.contains("1 problem(s)"), "{err}");
    let out = String::from_utf8(store.run(&["check"]).stdout).unwrap();
    assert!(out.contains("index:") && out.contains("checksum"), "{out}");
    bytes[n - 1] ^= 1;
    std::fs::write(&idx, &bytes).unwrap();
    std::fs::write(
        store.root().join("images").join(&multi).join("image.json"),
        b"{}",
    )
    .unwrap();
    let out = store.run(&["images"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BROKEN"),
        "{:?}",
        out
    );
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["images", "--json"])).unwrap();
    assert!(v[0]["broken"]
        .as_str()
        .unwrap()
        .contains("corrupt store file"));
    let out = String::from_utf8(store.run(&["check"]).stdout).unwrap();
    assert!(out.contains(&format!("image {}", &multi[..12])), "{out}");
}
