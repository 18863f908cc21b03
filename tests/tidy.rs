//! The rules of the house, checked on the source (ARCHITECTURE.md,
//! "Codemap"): modules depend only on modules below them; `unsafe` lives
//! in `sys/` only; fuser is used by `fuse/` and `mount/` only; no source
//! file is longer than 800 lines without saying why at its top.

use std::path::{Path, PathBuf};

/// The top-level modules from the top (the command line) down; a module
/// may use the ones after it. Modules on one line (one entry) are peers.
const LAYERS: &[&[&str]] = &[
    &["main", "cli"],
    &["mount"],
    &["registry"],
    &["image"],
    &["fuse"],
    &["fs"],
    &["upper"],
    &["union"],
    &["layer"],
    &["store"],
    &["oci", "bundle", "idmap"],
    &["sys"],
];

/// Files longer than this must say why in their first lines.
const MAX_LINES: usize = 800;
/// The phrase that gives the reason.
const LONG_REASON: &str = "Long file:";

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources() -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The file's path under src/, and its top-level module (`lib` for lib.rs).
fn module_of(p: &Path) -> (String, String) {
    let rel = p
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let top = rel
        .split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string();
    (rel, top)
}

/// The lines of code: comments (`//`, `//!`, `///`) left out, and string
/// literals blanked, so a word in a message is not taken for code.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let mut code = String::new();
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
            } else if c == '"' {
                in_str = true;
            } else if c == '/' && prev == '/' {
                code.pop();
                break;
            } else {
                code.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
        }
        out.push((i + 1, code));
    }
    out
}

/// Every `crate::NAME` a line of code names.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `layerfs_crate::`, say
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn every_top_module_has_a_layer() {
    for p in sources() {
        let (rel, top) = module_of(&p);
        if top == "lib" {
            continue;
        }
        assert!(
            rank(&top).is_some(),
            "{rel}: module {top} is not in LAYERS of tests/tidy.rs (and ARCHITECTURE.md)"
        );
    }
}

#[test]
fn dependencies_point_down() {
    let mut bad = Vec::new();
    for p in sources() {
        let (rel, top) = module_of(&p);
        let Some(own) = rank(&top) else { continue };
        let text = std::fs::read_to_string(&p).unwrap();
        // Unit tests may use what they like to build their cases.
        let text = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
        for (n, code) in code_lines(text) {
            for name in crate_refs(&code) {
                match rank(&name) {
                    Some(r) if r >= own => {}
                    Some(_) => bad.push(format!("{rel}:{n}: {top} uses crate::{name}, above it")),
                    None => bad.push(format!("{rel}:{n}: crate::{name} is no known module")),
                }
            }
        }
    }
    assert!(bad.is_empty(), "upward dependencies:\n{}", bad.join("\n"));
}

#[test]
fn unsafe_only_in_sys() {
    let mut bad = Vec::new();
    for p in sources() {
        let (rel, top) = module_of(&p);
        if top == "sys" {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (n, code) in code_lines(&text) {
            let has = code
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == "unsafe");
            if has {
                bad.push(format!("{rel}:{n}: {}", code.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe outside src/sys/:\n{}",
        bad.join("\n")
    );
}

#[test]
fn fuser_only_in_fuse_and_mount() {
    let mut bad = Vec::new();
    for p in sources() {
        let (rel, top) = module_of(&p);
        if top == "fuse" || top == "mount" {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (n, code) in code_lines(&text) {
            if code.contains("fuser::") || code.contains("use fuser") {
                bad.push(format!("{rel}:{n}: {}", code.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "fuser outside fuse/ and mount/:\n{}",
        bad.join("\n")
    );
}

#[test]
fn long_files_say_why() {
    let mut bad = Vec::new();
    for p in sources() {
        let (rel, _) = module_of(&p);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines = text.lines().count();
        let head: String = text.lines().take(30).collect::<Vec<_>>().join("\n");
        if lines > MAX_LINES && !head.contains(LONG_REASON) {
            bad.push(format!("{rel}: {lines} lines"));
        }
    }
    assert!(
        bad.is_empty(),
        "files over {MAX_LINES} lines without a {LONG_REASON:?} note in their first 30 lines:\n{}",
        bad.join("\n")
    );
}

/// The checker itself: comments and strings do not count, real uses do.
#[test]
fn the_checks_see_code_only() {
    let text = "// crate::cli in a comment\nlet s = \"crate::cli unsafe\";\nuse crate::sys::lstat; // crate::fs\nunsafe { x() }";
    let lines = code_lines(text);
    let refs: Vec<String> = lines.iter().flat_map(|(_, c)| crate_refs(c)).collect();
    assert_eq!(refs, ["sys"]);
    assert!(lines.iter().any(|(n, c)| *n == 4 && c.contains("unsafe")));
    assert!(!lines.iter().any(|(n, c)| *n == 2 && c.contains("unsafe")));
    assert_eq!(rank("cli"), Some(0));
    assert!(rank("sys") > rank("fs"));
}
