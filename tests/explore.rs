//! `layerfs explore` for real: run in a detached tmux session of a fixed
//! size, driven with send-keys, its screen read with capture-pane and
//! compared with `layers --json` and `tree` (themselves tested against a
//! Python computation over the layer tars in tests/debug.rs) and with
//! hand-computed lines of the `multi` fixture (fixtures/README.md).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        Tmux {
            sock: dir.path().join("tmux.sock"),
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        run_ok(Command::new("tmux").arg("-S").arg(&self.sock).args(args))
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "x"];
        a.extend_from_slice(keys);
        self.run(&a);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "x"])
    }

    /// The screen once `pred` holds for it (fails after 10 s).
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("screen never showed {what}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .arg("kill-server")
            .output();
    }
}

/// The rows of the tree pane (right of `││`), without the cursor mark, with
/// runs of spaces squeezed.
fn tree_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| l.split_once("││").map(|(_, r)| r))
        .map(|r| squeeze(r.trim_end().trim_end_matches('│').trim_start_matches('>')))
        .filter(|r| !r.is_empty())
        .collect()
}

/// The rows of the layer pane (between the first `│` and `││`).
fn layer_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| l.split_once("││").map(|(left, _)| left))
        .map(|l| l.trim_start_matches('│').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `tree IMAGE --layer N [--only-changed]` lines without the root line,
/// squeezed.
fn tree_of(store: &TestStore, image: &str, layer: &str, only_changed: bool) -> Vec<String> {
    let mut args = vec!["tree", image, "--layer", layer];
    if only_changed {
        args.push("--only-changed");
    }
    store.ok(&args).lines().skip(1).map(squeeze).collect()
}

/// `tree_of` the `multi` image.
fn tree_cli(store: &TestStore, layer: &str, only_changed: bool) -> Vec<String> {
    tree_of(store, "multi", layer, only_changed)
}

/// The text of the bottom pane (the selected layer's whole `created_by`,
/// wrapped), its lines joined, all whitespace dropped; and its title.
fn command_pane(screen: &str) -> (String, String) {
    let (title, lines) = command_lines(screen);
    (title, no_space(&lines.concat()))
}

/// The title and the text lines of the bottom pane.
fn command_lines(screen: &str) -> (String, Vec<String>) {
    let mut lines = screen
        .lines()
        .skip_while(|l| !l.starts_with("┌ Command of layer"));
    let title = lines.next().unwrap_or("").to_string();
    let text = lines
        .take_while(|l| !l.starts_with('└'))
        .map(|l| l.trim().trim_matches('│').trim().to_string())
        .collect();
    (title, text)
}

fn no_space(s: &str) -> String {
    s.split_whitespace().collect()
}

/// The title line of the tree pane.
fn title(screen: &str) -> &str {
    screen.lines().next().unwrap_or("")
}

#[test]
fn explore_under_tmux_shows_layers_tree_marks_changes_and_quits() {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let layers: Value = serde_json::from_str(&store.ok(&["layers", "multi", "--json"])).unwrap();
    let tmux = Tmux::new();
    let cmd = format!(
        "{} --root {} explore multi; echo EXIT=$?; sleep 600",
        bin(),
        store.root().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "x",
        "-x",
        "160",
        "-y",
        "60",
        "sh",
        "-c",
        &cmd,
    ]);

    // Layer 0 selected: the layer list (bottom first, index and
    // created_by as `layers` gives them) and layer 0's tree, all added.
    let want0 = tree_cli(&store, "0", false);
    let s = tmux.wait("layer 0's tree", |s| {
        title(s).contains("Layer 0 (") && tree_rows(s) == want0
    });
    let rows = layer_rows(&s);
    assert_eq!(rows.len(), 3, "{s}");
    for (i, r) in rows.iter().enumerate() {
        let l = &layers["layers"][2 - i];
        assert_eq!(l["index"], i, "{s}");
        let created_by = l["created_by"].as_str().unwrap();
        let want = format!("{i} ");
        let r = r.trim_start_matches('>').trim_start();
        assert!(r.starts_with(&want), "row {i}: {r}");
        // The pane is narrower than the created_by: its start is shown.
        let shown = squeeze(r.rsplit_once("B  ").unwrap().1);
        assert!(
            created_by.starts_with(&shown),
            "row {i}: {shown} / {created_by}"
        );
    }
    assert!(rows[0].starts_with('>'), "layer 0 selected: {s}");
    // The bottom pane shows layer 0's created_by whole.
    let cb = |i: usize| layers["layers"][2 - i]["created_by"].as_str().unwrap();
    let (t, text) = command_pane(&s);
    assert!(t.contains("Command of layer 0"), "{s}");
    assert_eq!(text, no_space(cb(0)), "{s}");
    assert!(
        tree_rows(&s).contains(&"19B A │ ├── os-release-extra".to_string()),
        "{s}"
    );

    // Layer 1: the marks change (hand-computed: it deletes
    // etc/os-release-extra and usr/share/doc/pkg/sub).
    tmux.keys(&["j"]);
    let want = tree_cli(&store, "1", false);
    let s = tmux.wait("layer 1's tree", |s| {
        title(s).contains("Layer 1 (") && tree_rows(s) == want
    });
    let rows = tree_rows(&s);
    assert!(
        rows.contains(&"0B D │ ├── os-release-extra".to_string()),
        "{s}"
    );
    assert!(rows.contains(&"204B C ├── etc/".to_string()), "{s}");
    assert!(rows.contains(&"110B │ ├── os-release".to_string()), "{s}");
    let (t, text) = command_pane(&s);
    assert!(t.contains("Command of layer 1"), "{s}");
    assert_eq!(text, no_space(cb(1)), "{s}");

    // c: only what layer 1 changed, and the directories leading to it.
    tmux.keys(&["c"]);
    let want = tree_cli(&store, "1", true);
    let s = tmux.wait("layer 1's changes", |s| {
        title(s).contains("[changes only]") && tree_rows(s) == want
    });
    assert_eq!(
        tree_rows(&s),
        vec![
            "204B C ├── etc/",
            "0B D │ └── os-release-extra",
            "79B C └── usr/",
            "79B C └── share/",
            "79B C └── doc/",
            "79B C └── pkg/",
            "0B D └── sub/",
        ],
        "{s}"
    );
    // Down arrow to layer 2, still changes only: opt/data made opaque.
    tmux.keys(&["Down"]);
    let want = tree_cli(&store, "2", true);
    let s = tmux.wait("layer 2's changes", |s| {
        title(s).contains("Layer 2 (") && tree_rows(s) == want
    });
    assert!(tree_rows(&s).contains(&"4B A ├── new".to_string()), "{s}");
    assert!(tree_rows(&s).contains(&"0B D ├── file1".to_string()), "{s}");
    tmux.keys(&["c"]);
    let want = tree_cli(&store, "2", false);
    tmux.wait("layer 2's whole tree", |s| {
        !title(s).contains("[changes") && tree_rows(s) == want
    });

    // s: largest first, as `tree --sort size` orders them; s again: by
    // name.
    tmux.keys(&["s"]);
    let by_size: Vec<String> = store
        .ok(&["tree", "multi", "--layer", "2", "--sort", "size"])
        .lines()
        .skip(1)
        .map(squeeze)
        .collect();
    assert_ne!(by_size, want, "the fixture's order differs by size");
    let s = tmux.wait("layer 2 by size", |s| {
        title(s).contains("[by size]") && tree_rows(s) == by_size
    });
    let (_, text) = command_pane(&s);
    assert_eq!(text, no_space(cb(2)), "{s}");
    tmux.keys(&["s"]);
    tmux.wait("layer 2 by name again", |s| {
        !title(s).contains("[by size]") && tree_rows(s) == want
    });

    // Tab to the tree, Enter collapses the first directory (bin).
    tmux.keys(&["Tab", "Enter"]);
    let s = tmux.wait("bin collapsed", |s| {
        tree_rows(s).first().is_some_and(|r| r.ends_with("bin/+"))
    });
    assert_eq!(tree_rows(&s)[0], "2.0MB ├── bin/+", "{s}");
    assert!(!tree_rows(&s).iter().any(|r| r.contains("busybox")), "{s}");
    assert_eq!(tree_rows(&s)[1], "204B ├── etc/", "{s}");
    tmux.keys(&["Space"]);
    tmux.wait("bin expanded", |s| {
        tree_rows(s)
            .get(1)
            .is_some_and(|r| r.ends_with("── busybox"))
    });

    // / filters by name: "file" leaves opt/data/file1..4 (gone in layer 2,
    // marked D) under their directories.
    tmux.keys(&["/", "f", "i", "l", "e", "Enter"]);
    let s = tmux.wait("the filter", |s| {
        title(s).contains("[filter: file]") && tree_rows(s).len() == 6
    });
    let rows = tree_rows(&s);
    assert_eq!(&rows[..2], ["4B C └── opt/", "4B C └── data/"], "{s}");
    assert!(
        rows[2..]
            .iter()
            .all(|r| r.contains("D") && r.contains("file")),
        "{s}"
    );

    // q: the program ends (and gives the terminal back).
    tmux.keys(&["q"]);
    let s = tmux.wait("the exit", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(!s.contains("Layer 2 ("), "alternate screen left: {s}");
}

#[test]
fn explore_under_tmux_an_empty_layer_changes_nothing() {
    // edge (fixtures/README.md): layer 3 is an empty tar (RUN true).
    let store = TestStore::new();
    store.import(&fixture("edge.docker.tar"), &[]);
    assert_eq!(tree_of(&store, "edge", "3", true), Vec::<String>::new());
    let tmux = Tmux::new();
    let cmd = format!(
        "{} --root {} explore edge; echo EXIT=$?; sleep 600",
        bin(),
        store.root().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "x",
        "-x",
        "120",
        "-y",
        "40",
        "sh",
        "-c",
        &cmd,
    ]);
    tmux.wait("layer 0", |s| title(s).contains("Layer 0 ("));
    tmux.keys(&["j", "j", "j", "c"]);
    let s = tmux.wait("layer 3's changes", |s| {
        title(s).contains("Layer 3 (") && title(s).contains("[changes only]")
    });
    assert_eq!(tree_rows(&s), vec!["(this layer changes nothing)"], "{s}");
    // Back to layer 2, which changes things, then quit.
    tmux.keys(&["k"]);
    let want = tree_of(&store, "edge", "2", true);
    assert!(!want.is_empty());
    // Its long ustar names are cut at the pane's edge.
    let s = tmux.wait("layer 2's changes", |s| {
        let rows = tree_rows(s);
        rows.len() == want.len()
            && rows
                .iter()
                .zip(&want)
                .all(|(r, w)| w.starts_with(r.as_str()))
    });
    assert!(s.contains("ustar-prefix-uuuu"), "{s}");
    tmux.keys(&["q"]);
    let s = tmux.wait("the exit", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
}

#[test]
fn explore_under_tmux_wraps_a_long_created_by_in_a_narrow_terminal() {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let layers: Value = serde_json::from_str(&store.ok(&["layers", "multi", "--json"])).unwrap();
    // Layer 2's (72 characters) takes three lines of a 30-column screen.
    let cb = layers["layers"][0]["created_by"].as_str().unwrap();
    assert!(cb.len() > 2 * 28, "{cb}");
    let tmux = Tmux::new();
    let cmd = format!(
        "{} --root {} explore multi; echo EXIT=$?; sleep 600",
        bin(),
        store.root().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "x",
        "-x",
        "30",
        "-y",
        "30",
        "sh",
        "-c",
        &cmd,
    ]);
    tmux.wait("layer 0", |s| command_lines(s).0.contains("layer 0"));
    tmux.keys(&["j", "j"]);
    let s = tmux.wait("layer 2's command", |s| {
        command_lines(s).0.contains("layer 2")
    });
    let (_, lines) = command_lines(&s);
    assert!(lines.len() >= 3, "wrapped: {s}");
    assert!(lines.iter().all(|l| l.chars().count() <= 28), "{s}");
    // Broken at spaces only: the lines joined by one space are the text.
    assert_eq!(lines.join(" "), squeeze(cb), "{s}");
    tmux.keys(&["q"]);
    let s = tmux.wait("the exit", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
}

/// On a screen too short for the whole created_by, the command pane shows
/// a page of it, `]` and `[` scroll it, and the status line still names
/// every key in 30 columns.
#[test]
fn explore_under_tmux_scrolls_a_long_created_by() {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let layers: Value = serde_json::from_str(&store.ok(&["layers", "multi", "--json"])).unwrap();
    let cb = layers["layers"][0]["created_by"].as_str().unwrap();
    let tmux = Tmux::new();
    let cmd = format!(
        "{} --root {} explore multi; echo EXIT=$?; sleep 600",
        bin(),
        store.root().display()
    );
    // 9 rows: the command pane gets a third, one line inside its border.
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "x",
        "-x",
        "30",
        "-y",
        "9",
        "sh",
        "-c",
        &cmd,
    ]);
    tmux.wait("layer 0", |s| command_lines(s).0.contains("layer 0"));
    tmux.keys(&["j", "j"]);
    let s = tmux.wait("layer 2's command", |s| {
        command_lines(s).0.contains("layer 2")
    });
    let first = command_lines(&s).1;
    assert_eq!(first.len(), 1, "{s}");
    assert!(squeeze(cb).starts_with(&first[0]), "{s}");
    assert!(
        s.lines().last().unwrap().contains("[ ] q"),
        "help line: {s}"
    );
    tmux.keys(&["]"]);
    let s = tmux.wait("the second line", |s| command_lines(s).1 != first);
    let second = command_lines(&s).1;
    assert_eq!(second.len(), 1, "{s}");
    assert!(
        squeeze(cb).starts_with(&format!("{} {}", first[0], second[0])),
        "{s}"
    );
    tmux.keys(&["["]);
    tmux.wait("the first line again", |s| command_lines(s).1 == first);
    tmux.keys(&["q"]);
    let s = tmux.wait("the exit", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
}

#[test]
fn explore_without_a_terminal_says_so() {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let err = store.fails(&["explore", "multi"]);
    assert!(err.contains("explore needs a terminal"), "{err}");
    let err = store.fails(&["explore", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
}
