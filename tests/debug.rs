//! The debugging and round-trip commands: `ls`, `layers`, `diff`, `commit`,
//! `export`, `save`, against hand-computed expectations on the fixtures,
//! a second computation of the `layers` figures in Python (tarfile over
//! the archive's layers), the oracle's merged trees, and skopeo.
//!
//! Long file: the debugging commands' cases share the fixtures' expected
//! figures; and each file of tests/ is a test binary of its own, so a split
//! would be one more binary to build and link in CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

/// `(path, status, layer index, hidden_by index)` of `ls --json` rows.
fn rows(v: &Value) -> Vec<(String, String, u64, Option<u64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["layer"]["index"].as_u64().unwrap(),
                r["hidden_by"]["index"].as_u64(),
            )
        })
        .collect()
}

fn s(p: &str, st: &str, l: u64, h: Option<u64>) -> (String, String, u64, Option<u64>) {
    (p.to_string(), st.to_string(), l, h)
}

#[test]
fn ls_names_the_layer_of_each_entry_and_what_hides_what() {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    // multi (fixtures/README.md): layer 0 has everything, layer 1 deletes
    // etc/os-release-extra and usr/share/doc/pkg/sub, layer 2 replaces
    // opt/data (opaque) with one file, new.
    let v = json(&store.ok(&["ls", "multi", "/opt/data", "--json"]));
    assert_eq!(rows(&v), vec![s("/opt/data/new", "visible", 2, None)]);
    let v = json(&store.ok(&["ls", "multi", "/opt/data", "-a", "--json"]));
    assert_eq!(
        rows(&v),
        vec![
            s("/opt/data/.wh..wh..opq", "opaque", 2, None),
            s("/opt/data/file1", "shadowed", 0, Some(2)),
            s("/opt/data/file2", "shadowed", 0, Some(2)),
            s("/opt/data/file3", "shadowed", 0, Some(2)),
            s("/opt/data/file4", "shadowed", 0, Some(2)),
            s("/opt/data/new", "visible", 2, None),
            s("/opt/data/old-only-in-layer0", "shadowed", 0, Some(2)),
        ]
    );
    let v = json(&store.ok(&["ls", "multi", "etc", "-a", "--json"]));
    assert_eq!(
        rows(&v),
        vec![
            s("/etc/.wh.os-release-extra", "whiteout", 1, None),
            s("/etc/group", "visible", 0, None),
            s("/etc/os-release", "visible", 0, None),
            s("/etc/os-release-extra", "shadowed", 0, Some(1)),
            s("/etc/passwd", "visible", 0, None),
        ]
    );
    // A file: itself, with its metadata.
    let v = json(&store.ok(&["ls", "multi", "bin/su-fake", "--json"]));
    assert_eq!(v[0]["mode"], 0o4755);
    assert_eq!(v[0]["type"], "file");
    let v = json(&store.ok(&["ls", "multi", "bin/sh", "--json"]));
    assert_eq!(v[0]["target"], "busybox");
    // Text output: INDEX:LAYER, then the name.
    let text = store.ok(&["ls", "multi", "opt/data"]);
    let l2 = json(&store.ok(&["history", "multi", "--json"]))[0]["layer"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(text, format!("2:{:<13}  new\n", &l2[..12]));
    let long = store.ok(&["ls", "multi", "bin", "-l"]);
    assert!(long.contains("-rwsr-xr-x"), "{long}");
    assert!(long.contains("sh -> busybox"), "{long}");
    // -R: every visible path once.
    let all = json(&store.ok(&["ls", "multi", "-R", "--json"]));
    let paths: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let oracle_tree = json(&oracle(&[
        "--image",
        fixture("multi.docker.tar").to_str().unwrap(),
    ]));
    let mut want: Vec<String> = oracle_tree
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.is_empty())
        .map(|k| format!("/{k}"))
        .collect();
    want.sort();
    let mut got: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    got.sort();
    assert_eq!(got, want);

    let err = store.fails(&["ls", "multi", "etc/os-release-extra"]);
    assert!(err.contains("hidden by layer 1:"), "{err}");
    let err = store.fails(&["ls", "multi", "no/such"]);
    assert!(err.contains("no such file"), "{err}");
    let err = store.fails(&["ls", "nosuch:tag"]);
    assert!(err.contains("no image"), "{err}");
}

/// The `layers` figures computed again in Python, from the archive's layer
/// tars with tarfile, following README's definitions.
const LAYERS_MODEL: &str = r#"
import json, sys, tarfile, os, posixpath
arch = sys.argv[1]
t = tarfile.open(arch)
man = json.load(t.extractfile("manifest.json"))[0]
def norm(n):
    return "/".join(c for c in n.split("/") if c not in ("", "."))
layers = []
for name in man["Layers"]:
    m = t.getmember(name)
    while m.issym() or m.islnk():
        m = t.getmember(norm(posixpath.join(posixpath.dirname(m.name), m.linkname)) if m.issym() else m.linkname)
    data = t.extractfile(m).read()
    import io
    lt = tarfile.open(fileobj=io.BytesIO(data))
    own, wh, opq = {}, set(), set()
    for e in lt.getmembers():
        p = norm(e.name)
        comps = p.split("/") if p else []
        if any(c.startswith(".wh..wh.") and c != ".wh..wh..opq" for c in comps):
            continue
        base = comps[-1] if comps else ""
        parent = "/".join(comps[:-1])
        if base == ".wh..wh..opq":
            opq.add(parent)
        elif base.startswith(".wh."):
            wh.add("/".join(comps[:-1] + [base[4:]]))
        elif p:
            kind = "dir" if e.isdir() else "file" if (e.isreg() or e.islnk()) else "other"
            own[p] = (kind, e.size if e.isreg() else 0)
        for i in range(1, len(comps)):
            own.setdefault("/".join(comps[:i]), ("dir", 0))
    wh -= set(own)
    layers.append((own, wh, opq, len(data)))

def under(view, d):
    return [p for p in view if p.startswith(d + "/")]

view = {}  # path -> (layer, kind, size)
out = []
cum, mins, nodes = {}, {}, {}
for i, (own, wh, opq, size) in enumerate(layers):
    lower = dict(view)
    added = modified = deleted = 0
    for w in wh:
        if w in lower:
            deleted += 1
    for d in opq:
        if lower.get(d, (0, ""))[1] == "dir":
            kids = {p for p in lower if posixpath.dirname(p) == d}
            deleted += len([k for k in kids if k not in own and k not in wh])
    for p, (k, sz) in own.items():
        if k != "dir":
            if p in lower: modified += 1
            else: added += 1
    # dive's nodes: leaves of the layer's own tree, whiteouts included.
    for p in list(own) + list(wh):
        if p in own and own[p][0] == "dir" and any(q.startswith(p + "/") for q in own) :
            continue
        if p in wh:
            sz = sum(v[2] for q, v in lower.items() if q.startswith(p + "/")) if lower.get(p, (0, ""))[1] == "dir" else 0
        else:
            sz = own[p][1]
        cum[p] = cum.get(p, 0) + sz
        mins[p] = min(mins.get(p, sz), sz)
        nodes[p] = nodes.get(p, 0) + 1
    # apply the layer
    for w in wh:
        for q in [w] + under(view, w):
            view.pop(q, None)
    for d in opq:
        for q in under(view, d):
            view.pop(q, None)
    for p in sorted(own):
        k, sz = own[p]
        if k != "dir":
            for q in under(view, p):
                view.pop(q)
            view[p] = (i, k, sz)
        elif view.get(p, (0, "dir"))[1] != "dir" or p not in view:
            view[p] = (i, k, 0)
    out.append({"added": added, "modified": modified, "deleted": deleted, "size": size,
                "file_bytes": sum(v[1] for v in own.values())})
for i, o in enumerate(out):
    shown = sum(v[2] for v in view.values() if v[0] == i)
    o["wasted"] = o["file_bytes"] - shown
tot_cum = sum(cum.values())
print(json.dumps({
    "layers": out[::-1],
    "view_bytes": sum(v[2] for v in view.values()),
    "efficiency": sum(mins.values()) / tot_cum if tot_cum else 1.0,
    "wasted_bytes": sum(cum[p] for p in cum if nodes[p] >= 2),
}))
"#;

/// Appended to `LAYERS_MODEL`: a second JSON line with, per layer (top
/// first), the files whose bytes the final view does not show, largest
/// first, each with the nearest layer above that replaced or deleted it.
const WASTED_MODEL: &str = r#"
def hider(i, p):
    comps = p.split("/")
    anc = ["/".join(comps[:k]) for k in range(len(comps))]
    for j in range(i + 1, len(layers)):
        own, wh, opq, _ = layers[j]
        if p in own:
            return j, "replaced"
        if p in wh or any(a in opq or a in wh or (a in own and own[a][0] != "dir") for a in anc):
            return j, "deleted"
    return None, "deleted"
res = []
for i, (own, wh, opq, size) in enumerate(layers):
    files = []
    for p, (k, sz) in own.items():
        if k == "file" and sz > 0 and view.get(p, (None,))[0] != i:
            j, how = hider(i, p)
            files.append(["/" + p, sz, j, how])
    files.sort(key=lambda f: (-f[1], f[0]))
    res.append({"index": i, "wasted": sum(f[1] for f in files), "files": files})
print(json.dumps(res[::-1]))
"#;

fn python(script: &str, args: &[&str]) -> String {
    run_ok(Command::new("python3").arg("-c").arg(script).args(args))
}

#[test]
fn layers_figures_agree_with_a_second_computation() {
    for fx in ["multi.docker.tar", "edge.docker.tar"] {
        let store = TestStore::new();
        let id = store.import(&fixture(fx), &[]);
        let got = json(&store.ok(&["layers", &id, "--json"]));
        let want = json(&python(LAYERS_MODEL, &[fixture(fx).to_str().unwrap()]));
        let gl = got["layers"].as_array().unwrap();
        let wl = want["layers"].as_array().unwrap();
        assert_eq!(gl.len(), wl.len(), "{fx}");
        for (g, w) in gl.iter().zip(wl) {
            for k in [
                "added",
                "modified",
                "deleted",
                "size",
                "file_bytes",
                "wasted",
            ] {
                assert_eq!(g[k], w[k], "{fx} layer {}: {k}\n{g}\n{w}", g["index"]);
            }
        }
        for k in ["view_bytes", "wasted_bytes"] {
            assert_eq!(got[k], want[k], "{fx}: {k}");
        }
        let (ge, we) = (
            got["efficiency"].as_f64().unwrap(),
            want["efficiency"].as_f64().unwrap(),
        );
        assert!((ge - we).abs() < 1e-9, "{fx}: efficiency {ge} vs {we}");
    }
    // Hand-computed, multi: layer 2 adds opt/data/new and deletes the five
    // files of the opaque opt/data; layer 1 deletes two paths.
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let v = json(&store.ok(&["layers", "multi", "--json"]));
    let top = &v["layers"][0];
    assert_eq!(
        (top["index"].as_u64(), top["added"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(top["deleted"], 5);
    assert_eq!(v["layers"][1]["deleted"], 2);
    let diff = store.ok(&["layers", "multi", "--diff", "1"]);
    assert_eq!(
        diff,
        "C /etc\nD /etc/os-release-extra\nC /usr\nC /usr/share\nC /usr/share/doc\n\
         C /usr/share/doc/pkg\nD /usr/share/doc/pkg/sub\n"
    );
    let text = store.ok(&["layers", "multi"]);
    assert!(text.starts_with("INDEX"), "{text}");
    assert!(text.contains("dive's measure"), "{text}");
    let err = store.fails(&["layers", "multi", "--diff", "3"]);
    assert!(err.contains("layers 0 to 2"), "{err}");
}

/// `[path, size, hidden_by index, how]` of the files of `layers --wasted
/// --json`'s layers.
fn wasted_files(layer: &Value) -> Value {
    let files: Vec<Value> = layer["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::json!([f["path"], f["size"], f["hidden_by"]["index"], f["how"]]))
        .collect();
    Value::Array(files)
}

#[test]
fn layers_wasted_lists_the_files_that_make_up_the_wasted_column() {
    for fx in ["multi.docker.tar", "edge.docker.tar"] {
        let store = TestStore::new();
        let id = store.import(&fixture(fx), &[]);
        let got = json(&store.ok(&["layers", &id, "--wasted", "--json"]));
        let script = format!("{LAYERS_MODEL}{WASTED_MODEL}");
        let out = python(&script, &[fixture(fx).to_str().unwrap()]);
        let want = json(out.lines().last().unwrap());
        let column = json(&store.ok(&["layers", &id, "--json"]));
        let gl = got["layers"].as_array().unwrap();
        let wl = want.as_array().unwrap();
        assert_eq!(gl.len(), wl.len(), "{fx}");
        let mut total = 0;
        for (k, (g, w)) in gl.iter().zip(wl).enumerate() {
            assert_eq!(g["index"], w["index"], "{fx}");
            assert_eq!(wasted_files(g), w["files"], "{fx} layer {}", g["index"]);
            // The listed files add up to the layer's WASTED column.
            assert_eq!(g["wasted"], column["layers"][k]["wasted"], "{fx}");
            assert_eq!(g["wasted"], w["wasted"], "{fx}");
            total += g["wasted"].as_u64().unwrap();
        }
        // One definition: stored minus shown.
        assert_eq!(got["wasted"].as_u64(), Some(total), "{fx}");
        assert_eq!(column["wasted"].as_u64(), Some(total), "{fx}");
        assert_eq!(
            total,
            column["file_bytes"].as_u64().unwrap() - column["view_bytes"].as_u64().unwrap(),
            "{fx}"
        );
    }
    // Hand-computed, multi (fixtures/README.md): layer 1 deletes
    // etc/os-release-extra and the directory usr/share/doc/pkg/sub (files
    // one, two), layer 2 makes opt/data opaque (file1..file4,
    // old-only-in-layer0): all files of layer 0, nothing of layers 1 and 2.
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let v = json(&store.ok(&["layers", "multi", "--wasted", "--json"]));
    let l = v["layers"].as_array().unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[0]["files"], serde_json::json!([]));
    assert_eq!(l[1]["files"], serde_json::json!([]));
    assert_eq!(l[2]["index"], 0);
    let mut got: Vec<(String, u64, &str)> = l[2]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["hidden_by"]["index"].as_u64().unwrap(),
                f["how"].as_str().unwrap(),
            )
        })
        .collect();
    let sizes: Vec<u64> = l[2]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "largest first: {sizes:?}"
    );
    got.sort();
    let d = |p: &str, by: u64| (p.to_string(), by, "deleted");
    assert_eq!(
        got,
        vec![
            d("/etc/os-release-extra", 1),
            d("/opt/data/file1", 2),
            d("/opt/data/file2", 2),
            d("/opt/data/file3", 2),
            d("/opt/data/file4", 2),
            d("/opt/data/old-only-in-layer0", 2),
            d("/usr/share/doc/pkg/sub/one", 1),
            d("/usr/share/doc/pkg/sub/two", 1),
        ]
    );
    let text = store.ok(&["layers", "multi", "--wasted"]);
    assert!(text.contains("/opt/data/file1  [deleted by 2:"), "{text}");
    let err = store.fails(&["layers", "multi", "--wasted", "--diff", "1"]);
    assert!(err.contains("cannot be used with"), "{err}");
}

/// Writes `files` (path, content; a path ending in `/` is a directory) under
/// `root`.
fn build_tree(root: &Path, files: &[(&str, &str)]) {
    for (p, data) in files {
        let path = root.join(p);
        if p.ends_with('/') {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
        }
    }
}

/// The layer tars of a docker-archive fixture, extracted to `dir`, bottom
/// first.
fn fixture_layers(name: &str, dir: &Path) -> Vec<PathBuf> {
    let st = Command::new("tar")
        .arg("-xf")
        .arg(fixture(name))
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let m = json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap());
    m[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| dir.join(l.as_str().unwrap()))
        .collect()
}

/// A store with the `multi` image, and a directory holding a hand-made
/// branch (its path returned too) with `files` (see `build_tree`).
fn multi_and_branch(files: &[(&str, &str)]) -> (TestStore, tempfile::TempDir, PathBuf) {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let work = tempfile::tempdir().unwrap();
    let rw = work.path().join("rw");
    build_tree(&rw, files);
    (store, work, rw)
}

#[test]
fn diff_and_commit_of_a_hand_made_branch() {
    let (store, work, rw) = multi_and_branch(&[
        (".wh..wh.layerfs/work/", ""),
        (".wh..wh.layerfs/lock", ""),
        ("etc/motd", "hello\n"),
        ("etc/.wh.os-release", ""),
        ("etc/.wh.never-existed", ""),
        ("opt/data/.wh..wh..opq", ""),
        ("opt/data/fresh", "fresh\n"),
        ("newdir/sub/file", "x"),
    ]);
    std::os::unix::fs::symlink("../etc/motd", rw.join("newdir/link")).unwrap();
    std::fs::hard_link(rw.join("etc/motd"), rw.join("newdir/motd-link")).unwrap();
    let rws = rw.to_str().unwrap();

    let expected = "C /etc\nA /etc/motd\nD /etc/os-release\nA /newdir\nA /newdir/link\n\
                    A /newdir/motd-link\nA /newdir/sub\nA /newdir/sub/file\nC /opt\nC /opt/data\n\
                    A /opt/data/fresh\nD /opt/data/new\n";
    assert_eq!(store.ok(&["diff", rws, "--image", "multi"]), expected);
    let v = json(&store.ok(&["diff", rws, "--image", "multi", "--json"]));
    assert_eq!(v[0], serde_json::json!({"change": "C", "path": "/etc"}));
    let err = store.fails(&["diff", rws]);
    assert!(err.contains("--image"), "{err}");

    let id = store.ok(&[
        "commit",
        rws,
        "--image",
        "multi",
        "--tag",
        "committed",
        "-m",
        "hand made",
        "--author",
        "tester",
        "--change",
        r#"CMD ["/bin/echo", "hi"]"#,
        "--change",
        "ENV NEW=1",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let cfg = json(&store.ok(&["inspect", "committed"]));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/echo", "hi"]));
    assert!(cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("NEW=1")));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    let hist = cfg["history"].as_array().unwrap();
    assert_eq!(hist.last().unwrap()["comment"], "hand made");
    assert_eq!(cfg["author"], "tester");
    // The new layer's changes are the branch's.
    assert_eq!(
        store
            .ok(&["layers", "committed", "--diff", "3"])
            .replace("C /\n", ""),
        expected
    );

    // Expected tree: the oracle's merge of the image's layers plus the
    // branch as GNU tar archives it (README: that tar is a layer).
    let x = tempfile::tempdir().unwrap();
    let mut layers: Vec<String> = fixture_layers("multi.docker.tar", x.path())
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let gnu = x.path().join("rw.tar");
    gnu_tar_of_branch(&rw, &gnu, false);
    layers.push(gnu.display().to_string());
    let args: Vec<&str> = layers.iter().map(String::as_str).collect();
    let expected_tree = oracle(&args);
    let tree = json(&expected_tree);
    assert_eq!(tree["newdir/motd-link"]["nlink"], 2);
    assert!(tree.get("opt/data/new").is_none() && tree.get("etc/os-release").is_none());

    // Through export (no mount needed)...
    let exp = x.path().join("export.tar");
    store.ok(&["export", id, "-o", exp.to_str().unwrap()]);
    assert_same_tree(
        "commit/export",
        &expected_tree,
        &oracle(&[exp.to_str().unwrap()]),
        &[],
    );
    // ...and through a read-only mount of the new image.
    if fuse_available() {
        let m = Mount::new(&store, "committed", &[]);
        assert_same_tree("commit/mount", &expected_tree, &snapshot(&m.dir), &[]);
    }

    // Bad input.
    let plain = work.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let err = store.fails(&["commit", plain.to_str().unwrap(), "--image", "multi"]);
    assert!(err.contains("not a layerfs read-write branch"), "{err}");
    let err = store.fails(&["diff", plain.to_str().unwrap(), "--image", "multi"]);
    assert!(err.contains("not a layerfs read-write branch"), "{err}");
    let err = store.fails(&["commit", rws, "--image", "nosuch"]);
    assert!(err.contains("no image"), "{err}");
    let err = store.fails(&["commit", rws, "--image", "multi", "--change", "RUN true"]);
    assert!(err.contains("not supported"), "{err}");
    let err = store.fails(&["commit", rws, "--image", "multi", "--tag", &"a".repeat(64)]);
    assert!(err.contains("invalid tag"), "{err}");
}

/// A rootless branch records owners and device types in
/// `user.containers.override_stat`; the committed layer has the real ones.
#[test]
fn commit_honours_the_rootless_override_xattr() {
    let (store, _work, rw) = multi_and_branch(&[
        (".wh..wh.layerfs/", ""),
        ("dev/null", ""),
        ("etc/shadow", "s"),
    ]);
    let set = |p: &str, v: &str| {
        layerfs::sys::lsetxattr(
            &rw.join(p),
            b"user.containers.override_stat",
            v.as_bytes(),
            0,
        )
    };
    if set("dev/null", "0:0:0666:char-1-3").is_err() {
        eprintln!("SKIP: this filesystem refuses user xattrs");
        return;
    }
    set("etc/shadow", "0:42:0640:file").unwrap();
    let id = store.ok(&["commit", rw.to_str().unwrap(), "--image", "multi"]);
    let v = json(&store.ok(&["ls", id.trim(), "dev/null", "--json"]));
    assert_eq!(v[0]["type"], "char");
    assert_eq!(v[0]["rdev"], serde_json::json!([1, 3]));
    assert_eq!(v[0]["mode"], 0o666);
    let v = json(&store.ok(&["ls", id.trim(), "etc/shadow", "--json"]));
    assert_eq!(
        (v[0]["gid"].as_u64(), v[0]["mode"].as_u64()),
        (Some(42), Some(0o640))
    );
}

#[test]
fn export_is_the_merged_tree() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    for fx in ["multi.docker.tar", "edge.docker.tar"] {
        let id = store.import(&fixture(fx), &[]);
        let out = dir.path().join(format!("{fx}.export.tar"));
        store.ok(&["export", &id, "-o", out.to_str().unwrap()]);
        let want = oracle(&["--image", fixture(fx).to_str().unwrap()]);
        assert_same_tree(fx, &want, &oracle(&[out.to_str().unwrap()]), &[]);
        // Re-imported as a rootfs, it mounts as the same tree (checked by
        // `ls -R` here: every path, same types).
        let rid = store.import(&out, &[]);
        let a = json(&store.ok(&["ls", &id, "-R", "--json"]));
        let b = json(&store.ok(&["ls", &rid, "-R", "--json"]));
        let strip = |v: &Value| -> Vec<(String, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| (r["path"].to_string(), r["type"].to_string()))
                .collect()
        };
        assert_eq!(strip(&a), strip(&b), "{fx}");
    }
    // --exclude drops a subtree; --replace swaps content (keeping the
    // entry's owner and mode) or adds a file.
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let out = dir.path().join("x.tar");
    store.ok(&[
        "export",
        "multi",
        "-o",
        out.to_str().unwrap(),
        "--exclude",
        "/usr/share",
        "--exclude",
        "home/user/secret",
        "--replace",
        &format!("etc/passwd={}", hosts.display()),
        "--replace",
        &format!("/etc/hosts={}", hosts.display()),
    ]);
    let t = json(&oracle(&[out.to_str().unwrap()]));
    assert!(t.get("usr").is_some() && t.get("usr/share").is_none());
    assert!(t.get("home/user").is_some() && t.get("home/user/secret").is_none());
    assert_eq!(t["etc/passwd"]["size"], 20);
    assert_eq!(t["etc/hosts"]["size"], 20);
    assert_eq!(t["etc/hosts"]["mode"], 0o644);
    let err = store.fails(&[
        "export",
        "multi",
        "-o",
        out.to_str().unwrap(),
        "--replace",
        &format!("no/dir/f={}", hosts.display()),
    ]);
    assert!(err.contains("not in the exported tree"), "{err}");
    let err = store.fails(&["export", "multi", "-o", "/dev/null/x", "--replace", "etc"]);
    assert!(err.contains("PATH=FILE"), "{err}");
}

fn skopeo_available() -> bool {
    if Command::new("skopeo").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "skopeo is missing and CI is set"
    );
    eprintln!("SKIP: skopeo not installed (apt-get install skopeo)");
    false
}

#[test]
fn save_round_trips_byte_exact_through_skopeo_and_import() {
    let store = TestStore::new();
    let multi = store.import(&fixture("multi.oci"), &[]);
    let edge = store.import(&fixture("edge.docker.tar"), &[]);
    let dir = tempfile::tempdir().unwrap();
    for (format, name) in [
        ("docker-archive", "both.tar"),
        ("oci-archive", "both.oci.tar"),
        ("oci", "both.oci"),
    ] {
        let out = dir.path().join(name);
        store.ok(&[
            "save",
            "multi",
            &edge[..12],
            "-o",
            out.to_str().unwrap(),
            "--format",
            format,
        ]);
        // Re-import: same ids, same tags, same layer records.
        let again = TestStore::new();
        let ids = again.ok(&["import", out.to_str().unwrap()]);
        let ids: Vec<&str> = ids.lines().collect();
        assert_eq!(ids, vec![multi.as_str(), edge.as_str()], "{format}");
        assert!(again.ok(&["images"]).contains("edge:latest"), "{format}");
        let layers = |s: &TestStore| {
            let mut v: Vec<_> = s
                .fingerprint()
                .into_iter()
                .filter(|(p, _, _)| p.ends_with("layer.tar") || p.ends_with("config.json"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(layers(&again), layers(&store), "{format}: not byte-exact");
    }
    // docker-archive members: each layer named by its diff id, whose
    // sha256 it is.
    let tar = dir.path().join("both.tar");
    let x = tempfile::tempdir().unwrap();
    let layers = {
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(x.path())
            .status();
        assert!(st.unwrap().success());
        let m = json(&std::fs::read_to_string(x.path().join("manifest.json")).unwrap());
        assert_eq!(m[0]["RepoTags"], serde_json::json!(["multi:latest"]));
        m[0]["Layers"].as_array().unwrap().clone()
    };
    for l in layers {
        let name = l.as_str().unwrap();
        let data = std::fs::read(x.path().join(name)).unwrap();
        assert_eq!(format!("{}.tar", layerfs::oci::sha256_hex(&data)), name);
    }
    if !skopeo_available() {
        return;
    }
    let tars = tar.to_str().unwrap();
    let v = json(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{tars}:multi:latest")),
    ));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
    let oci = dir.path().join("copied");
    run_ok(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("docker-archive:{tars}:edge:latest"))
            .arg(format!("oci:{}:edge", oci.display())),
    );
    // skopeo rewrites the config for OCI, so the image id changes; the
    // layers are the same bytes.
    let back = TestStore::new();
    let id = back.import(Path::new(&format!("{}:edge", oci.display())), &[]);
    let chain = |s: &TestStore, i: &str| {
        let h = json(&s.ok(&["history", i, "--json"]));
        let v: Vec<Value> = h
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["layer"].clone())
            .collect();
        v
    };
    assert_eq!(chain(&back, &id), chain(&store, &edge));
    let single = dir.path().join("multi.tar");
    store.ok(&["save", "multi", "-o", single.to_str().unwrap()]);
    run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", single.display())),
    );
    for (t, p) in [("oci-archive", "both.oci.tar"), ("oci", "both.oci")] {
        run_ok(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("{t}:{}:multi:latest", dir.path().join(p).display())),
        );
    }

    // Bad input.
    let err = store.fails(&["save", "nosuch", "-o", single.to_str().unwrap()]);
    assert!(err.contains("no image"), "{err}");
    let err = store.fails(&[
        "save",
        "multi",
        "-o",
        dir.path().join("both.oci").to_str().unwrap(),
        "--format",
        "oci",
    ]);
    assert!(err.contains("not an empty directory"), "{err}");
    let err = store.fails(&["save", "multi", "-o", "x", "--format", "zip"]);
    assert!(err.contains("unknown format"), "{err}");
}

/// `diff MOUNTPOINT` and `commit MOUNTPOINT` find the branch and the image
/// from the mount's record.
#[test]
fn diff_of_a_live_mount() {
    let Some((store, _)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let rw = work.path().join("rw");
    let m = Mount::new(&store, "multi", &["--rw", rw.to_str().unwrap()]);
    std::fs::write(m.path("etc/motd"), "hi\n").unwrap();
    std::fs::remove_file(m.path("etc/os-release")).unwrap();
    std::fs::remove_dir_all(m.path("usr/share/doc")).unwrap();
    let want = "C /etc\nA /etc/motd\nD /etc/os-release\nC /usr\nC /usr/share\nD /usr/share/doc\n";
    assert_eq!(store.ok(&["diff", m.dir.to_str().unwrap()]), want);
    assert_eq!(store.ok(&["diff", rw.to_str().unwrap()]), want);
    let id = store.ok(&["commit", m.dir.to_str().unwrap()]);
    let v = json(&store.ok(&["ls", id.trim(), "etc/motd", "--json"]));
    assert_eq!(v[0]["layer"]["index"], 3);
    assert_eq!(v[0]["size"], 3);
    drop(m);
    let ro = Mount::new(&store, "multi", &[]);
    let err = store.fails(&["diff", ro.dir.to_str().unwrap()]);
    assert!(err.contains("read-only mount"), "{err}");
}

/// `podman load` (a third-party loader) takes what `save` writes, and
/// keeps the image id: the config is byte-exact.
#[test]
fn saved_archive_loads_into_podman_with_the_same_id() {
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "podman is missing and CI is set"
        );
        eprintln!("SKIP: podman not installed (apt-get install podman)");
        return;
    }
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("multi.tar");
    store.ok(&["save", "multi", "-o", tar.to_str().unwrap()]);
    // A private podman store, so the test touches nothing of the machine's.
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(dir.path().join("storage"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        run_ok(&mut c)
    };
    let out = podman(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains("multi:latest"), "{out}");
    let images = podman(&["images", "--no-trunc", "--format", "{{.ID}}"]);
    assert_eq!(images.trim(), format!("sha256:{id}"));
}

/// `why` on a path created, chmod-ed, deleted and re-created across four
/// layers (and a fifth that changes its content), and on a file that a
/// parent's whiteout and an opaque parent remove: the steps computed by
/// hand from the layers below.
#[test]
fn why_tells_the_history_of_a_path_across_layers() {
    let m600 = Meta {
        mode: 0o600,
        ..M644
    };
    let mut l0 = Tar::new();
    l0.dir("etc", 0o755)
        .file("etc/f", b"one")
        .dir("srv", 0o755)
        .dir("srv/d", 0o755)
        .file("srv/d/x", b"x");
    let mut l1 = Tar::new();
    l1.dir("etc", 0o755)
        .file_m("etc/f", b"one", m600)
        .dir("srv", 0o755)
        .file("srv/.wh.d", b"");
    let mut l2 = Tar::new();
    l2.dir("etc", 0o755)
        .file("etc/.wh.f", b"")
        .dir("srv", 0o755)
        .dir("srv/d", 0o755)
        .file("srv/d/x", b"y");
    let mut l3 = Tar::new();
    l3.dir("etc", 0o755)
        .file("etc/f", b"two")
        .dir("srv", 0o755)
        .file("srv/.wh..wh..opq", b"");
    let mut l4 = Tar::new();
    l4.dir("etc", 0o755).file_m("etc/f", b"three", m600);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("why.docker.tar");
    docker_archive(
        &archive,
        &[
            l0.finish(),
            l1.finish(),
            l2.finish(),
            l3.finish(),
            l4.finish(),
        ],
        &[
            "make f",
            "chmod 600 f",
            "rm f",
            "echo two > f",
            "echo three > f; chmod 600 f",
        ],
    );
    let store = TestStore::new();
    let id = store.import(&archive, &[]);
    let v = json(&store.ok(&["why", &id, "/etc/f", "--json"]));
    let got: Vec<(u64, &str, &str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["event"].as_str().unwrap(),
                r["detail"].as_str().unwrap(),
                r["created_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, "created", "created (file)", "make f"),
            (
                1,
                "metadata",
                "mode changed, content the same",
                "chmod 600 f"
            ),
            (2, "deleted", "deleted by a whiteout", "rm f"),
            (
                3,
                "recreated",
                "re-created (file) after a lower layer removed it",
                "echo two > f"
            ),
            (
                4,
                "modified",
                "content changed, and mode",
                "echo three > f; chmod 600 f"
            ),
        ]
    );
    let text = store.ok(&["why", &id, "srv/d/x"]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("    ")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("0:") && lines[0].ends_with("created (file)"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("1:")
            && lines[1].ends_with("deleted with its parent /srv/d (whiteout)"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2:")
            && lines[2].ends_with("re-created (file) after a lower layer removed it"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("3:") && lines[3].ends_with("hidden by the opaque directory /srv"),
        "{text}"
    );
    // A path no layer has: a clear error.
    let err = store.fails(&["why", &id, "/nowhere"]);
    assert!(err.contains("/nowhere: no layer of image"), "{err}");
}

/// Every (path, type, size) of a `tree --json` row, directories' sizes as
/// printed, and the change marks.
fn tree_rows(v: &Value, path: &str, out: &mut Vec<(String, String, u64, String)>) {
    let p = if path.is_empty() {
        String::new()
    } else {
        path.to_string()
    };
    out.push((
        p.clone(),
        v["type"].as_str().unwrap().to_string(),
        v["size"].as_u64().unwrap(),
        v["change"].as_str().unwrap_or("").to_string(),
    ));
    for c in v["children"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap();
        let cp = if p.is_empty() {
            name.to_string()
        } else {
            format!("{p}/{name}")
        };
        tree_rows(c, &cp, out);
    }
}

/// `tree` of the multi fixture: its entries, types and sizes are the
/// Python oracle's merged tree, with every directory's size the sum of
/// the file sizes below it (summed here); as of layer 1 it marks what
/// that layer changed, by hand: the whiteouts of layer 1 as D.
#[test]
fn tree_sizes_and_changes_match_the_oracle() {
    let store = TestStore::new();
    let fx = fixture("multi.docker.tar");
    let id = store.import(&fx, &[]);
    let merged = json(&oracle(&["--image", fx.to_str().unwrap()]));
    let merged = merged.as_object().unwrap();
    let mut expected: Vec<(String, String, u64)> = merged
        .iter()
        .map(|(p, e)| {
            let kind = e["type"].as_str().unwrap().to_string();
            let size = if kind == "dir" {
                merged
                    .iter()
                    .filter(|(q, f)| {
                        (p.is_empty() || q.starts_with(&format!("{p}/"))) && f["type"] == "file"
                    })
                    .map(|(_, f)| f["size"].as_u64().unwrap())
                    .sum()
            } else {
                e["size"].as_u64().unwrap_or(0)
            };
            (p.clone(), kind, size)
        })
        .collect();
    expected.sort();
    let mut rows = Vec::new();
    tree_rows(&json(&store.ok(&["tree", &id, "--json"])), "", &mut rows);
    // Deleted entries (the top layer's, marked D) are not in the view.
    let mut got: Vec<(String, String, u64)> = rows
        .iter()
        .filter(|r| r.3 != "D")
        .map(|(p, k, s, _)| (p.clone(), k.clone(), *s))
        .collect();
    got.sort();
    assert!(got.len() > 20, "{got:?}");
    assert_eq!(got, expected);
    // The top layer changed only /opt/data: its opaque marker deletes the
    // four lower files and the one only in layer 0; `new` is added.
    let mut rows = Vec::new();
    let top = json(&store.ok(&["tree", &id, "/opt", "--only-changed", "--json"]));
    tree_rows(&top, "opt", &mut rows);
    let changed: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.3.as_str())).collect();
    assert_eq!(
        changed,
        [
            ("opt", "C"),
            ("opt/data", "C"),
            ("opt/data/file1", "D"),
            ("opt/data/file2", "D"),
            ("opt/data/file3", "D"),
            ("opt/data/file4", "D"),
            ("opt/data/new", "A"),
            ("opt/data/old-only-in-layer0", "D"),
        ]
    );
    // As of layer 1: its two whiteouts.
    let text = store.ok(&["tree", &id, "--layer", "1", "--only-changed"]);
    let marked: Vec<&str> = text.lines().filter(|l| l.contains(" D ")).collect();
    assert_eq!(marked.len(), 2, "{text}");
    assert!(
        marked[0].ends_with("os-release-extra") && marked[1].ends_with("sub/"),
        "{text}"
    );
    // Depth 1 shows the root's entries only, sizes summed all the same.
    let d1 = store.ok(&["tree", &id, "--depth", "1"]);
    assert_eq!(
        d1.lines().count(),
        1 + merged
            .keys()
            .filter(|k| !k.is_empty() && !k.contains('/'))
            .count(),
        "{d1}"
    );
    let err = store.fails(&["tree", &id, "--layer", "9"]);
    assert!(err.contains("--layer 9: image"), "{err}");
}

/// `diff --image A --image B` of the multi fixture and an image committed
/// on it from a hand-made branch that moves a file unchanged, changes one,
/// deletes a directory, adds a hard link: its A/C/D lines are those
/// computed here from the Python oracle's merged trees of both images
/// (B saved by layerfs, read by the oracle), with the move as one rename
/// line and the link named.
#[test]
fn diff_of_two_images_matches_the_oracle_trees() {
    let (store, work, rw) = multi_and_branch(&[
        (".wh..wh.layerfs/work/", ""),
        ("etc/.wh.passwd", ""),
        ("etc/passwd.moved", "(the lower passwd, below)"),
        ("etc/group", "changed\n"),
        ("usr/share/.wh.doc", ""),
        ("newdir/f", "n"),
    ]);
    std::fs::hard_link(rw.join("newdir/f"), rw.join("newdir/g")).unwrap();
    // The moved file: the lower one's bytes (from `export`), mode and owner.
    let flat = work.path().join("multi.tar");
    store.ok(&["export", "multi", "-o", flat.to_str().unwrap()]);
    let mut a = tar::Archive::new(std::fs::File::open(&flat).unwrap());
    let mut passwd = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str().unwrap().trim_start_matches("./") == "etc/passwd" {
            std::io::Read::read_to_end(&mut e, &mut passwd).unwrap();
        }
    }
    assert!(!passwd.is_empty());
    std::fs::write(rw.join("etc/passwd.moved"), &passwd).unwrap();
    std::fs::set_permissions(
        rw.join("etc/passwd.moved"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let b = store.ok(&[
        "commit",
        rw.to_str().unwrap(),
        "--image",
        "multi",
        "--tag",
        "b",
    ]);
    let b = b.trim();
    let saved = work.path().join("b.tar");
    store.ok(&["save", b, "-o", saved.to_str().unwrap()]);

    let tree = |args: &[&str]| json(&oracle(args));
    let ta = tree(&["--image", fixture("multi.docker.tar").to_str().unwrap()]);
    let tb = tree(&["--image", saved.to_str().unwrap()]);
    let (ta, tb) = (ta.as_object().unwrap(), tb.as_object().unwrap());
    let same = |x: &Value, y: &Value| {
        ["type", "mode", "uid", "gid", "size", "sha256", "target"]
            .iter()
            .all(|k| x.get(k) == y.get(k))
    };
    let mut expected: std::collections::BTreeMap<String, char> = Default::default();
    for (p, x) in ta {
        match tb.get(p) {
            None => {
                expected.insert(p.clone(), 'D');
            }
            Some(y) if !same(x, y) => {
                expected.insert(p.clone(), 'C');
            }
            _ => {}
        }
    }
    for p in tb.keys().filter(|p| !ta.contains_key(*p)) {
        expected.insert(p.clone(), 'A');
    }
    let changed: Vec<String> = expected.keys().cloned().collect();
    for p in changed {
        let mut q = p.as_str();
        while let Some(i) = q.rfind('/') {
            q = &q[..i];
            if ta.contains_key(q) && tb.contains_key(q) {
                expected.entry(q.to_string()).or_insert('C');
            }
        }
    }
    expected.remove("");
    let rows = json(&store.ok(&["diff", "--image", "multi", "--image", b, "--json"]));
    let mut got: std::collections::BTreeMap<String, char> = Default::default();
    let mut renames = Vec::new();
    for r in rows.as_array().unwrap() {
        let path = r["path"]
            .as_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string();
        let c = r["change"].as_str().unwrap().chars().next().unwrap();
        if c == 'R' {
            let from = r["from"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string();
            renames.push((from.clone(), path.clone()));
            got.insert(from, 'D');
            got.insert(path, 'A');
        } else {
            got.insert(path, c);
        }
    }
    assert_eq!(got, expected, "{rows:#}");
    assert_eq!(
        renames,
        [("etc/passwd".to_string(), "etc/passwd.moved".to_string())],
        "{rows:#}"
    );
    let text = store.ok(&["diff", "--image", "multi", "--image", "b"]);
    assert!(
        text.contains("R /etc/passwd -> /etc/passwd.moved\n"),
        "{text}"
    );
    assert!(
        text.contains("A /newdir/g  (hard link of /newdir/f)\n"),
        "{text}"
    );
    assert!(text.contains("D /usr/share/doc\n"), "{text}");
    let err = store.fails(&["diff", "--image", "multi"]);
    assert!(err.contains("--image A --image B"), "{err}");
}
