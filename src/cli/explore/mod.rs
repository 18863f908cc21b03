//! `layerfs explore IMAGE`: a terminal UI as dive's, with the layer list on
//! the left and the tree as of the selected layer on the right.
//!
//! [`Explorer`] is the whole state machine (selection, pane, collapsed
//! directories, filter, which rows are shown) and is pure: keys go in
//! through [`Explorer::key`], the rows to draw come out of
//! [`Explorer::rows`] and [`Explorer::layer_lines`]. Only [`tui`] (and in
//! it [`explore`]) touches the terminal (ratatui over crossterm).

use std::collections::HashSet;

use crate::cli::render::human_size;
use crate::layer::index::Kind;
use crate::union::inspect::{join, Change, TreeNode};

mod tui;
pub(crate) use tui::explore;

/// One layer of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LayerInfo {
    /// Index in the image, 0 = bottom.
    pub index: usize,
    /// Short chain id.
    pub id: String,
    /// Bytes of the layer tar.
    pub size: u64,
    /// The config history's `created_by`.
    pub created_by: String,
}

/// Which pane the up/down keys move in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pane {
    /// The layer list.
    Layers,
    /// The tree.
    Tree,
}

/// A key, as the state machine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    /// Up arrow (or `k`).
    Up,
    /// Down arrow (or `j`).
    Down,
    /// Tab.
    Tab,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Any other character.
    Char(char),
}

/// One row of the tree pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// Path from the image root, no leading `/`.
    pub path: Vec<u8>,
    /// The tree-drawing prefix (`│   ├── `).
    pub prefix: String,
    /// The entry's name.
    pub name: String,
    /// File bytes (summed for a directory).
    pub size: u64,
    /// What the selected layer did to it.
    pub change: Option<Change>,
    /// Is it a directory?
    pub dir: bool,
    /// Is it a collapsed directory?
    pub collapsed: bool,
}

impl Row {
    /// The row as drawn: `SIZE MARK PREFIXNAME/` (`+` after a collapsed
    /// directory's slash).
    pub(crate) fn line(&self) -> String {
        let mark = self.change.map(Change::letter).unwrap_or(' ');
        let tail = match (self.dir, self.collapsed) {
            (true, true) => "/+",
            (true, false) => "/",
            _ => "",
        };
        format!(
            "{:>8} {mark} {}{}{tail}",
            human_size(self.size),
            self.prefix,
            self.name
        )
    }
}

/// Builds the tree as of a layer (by position in the list).
type Loader<'a> = Box<dyn FnMut(usize) -> TreeNode + 'a>;

/// The state of the UI.
pub(crate) struct Explorer<'a> {
    /// Bottom first (as dive lists them).
    layers: Vec<LayerInfo>,
    /// The tree as of each layer, same order, built when the layer is
    /// first selected (an image of many layers opens as fast as one).
    trees: Vec<Option<TreeNode>>,
    /// Builds `trees`.
    load: Loader<'a>,
    /// Selected layer (position in `layers`).
    pub layer: usize,
    /// Selected row of the tree pane.
    pub cursor: usize,
    /// The pane up/down move in.
    pub pane: Pane,
    /// Paths of collapsed directories.
    collapsed: HashSet<Vec<u8>>,
    /// Show only what the selected layer changed (and the directories
    /// leading to it).
    pub only_changed: bool,
    /// Show only entries whose name contains this (and the directories
    /// leading to them).
    pub filter: String,
    /// Typing into the filter.
    pub editing: bool,
    /// Entries largest first (directories by the total under them), else
    /// by name.
    pub by_size: bool,
    /// `q` was pressed.
    pub quit: bool,
    /// First line of the created_by pane shown (`[` and `]` scroll it);
    /// back to 0 when another layer is selected.
    pub detail_top: usize,
}

impl<'a> Explorer<'a> {
    /// The state for `layers` (bottom first, at least one), `load(i)`
    /// giving the tree as of `layers[i]`; layer 0 selected, the layer pane
    /// focused.
    pub(crate) fn new(
        layers: Vec<LayerInfo>,
        load: impl FnMut(usize) -> TreeNode + 'a,
    ) -> Explorer<'a> {
        assert!(!layers.is_empty());
        let mut e = Explorer {
            trees: vec![None; layers.len()],
            layers,
            load: Box::new(load),
            layer: 0,
            cursor: 0,
            pane: Pane::Layers,
            collapsed: HashSet::new(),
            only_changed: false,
            filter: String::new(),
            editing: false,
            by_size: false,
            quit: false,
            detail_top: 0,
        };
        e.select();
        e
    }

    /// The selected layer.
    pub(crate) fn selected(&self) -> &LayerInfo {
        &self.layers[self.layer]
    }

    /// The lines of the layer pane: `INDEX  SIZE  CREATED_BY`.
    pub(crate) fn layer_lines(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|l| format!("{:>3} {:>8}  {}", l.index, human_size(l.size), l.created_by))
            .collect()
    }

    /// The selected layer's whole `created_by`, as lines of at most
    /// `width` characters.
    pub(crate) fn detail_lines(&self, width: usize) -> Vec<String> {
        wrap(&self.selected().created_by, width)
    }

    /// The created_by pane's title and the lines it shows, `height` of
    /// them from [`Explorer::detail_top`] (kept to the last full page), for
    /// a pane `width` characters wide inside its border. A command longer
    /// than the pane says which lines are shown and how to scroll.
    pub(crate) fn detail_view(&mut self, width: usize, height: usize) -> (String, Vec<String>) {
        let all = self.detail_lines(width);
        let index = self.selected().index;
        let height = height.max(1);
        self.detail_top = self.detail_top.min(all.len().saturating_sub(height));
        let shown: Vec<String> = all
            .iter()
            .skip(self.detail_top)
            .take(height)
            .cloned()
            .collect();
        let title = if all.len() > height {
            format!(
                " Command of layer {index} (lines {}-{} of {}, [ ] scroll) ",
                self.detail_top + 1,
                self.detail_top + shown.len(),
                all.len()
            )
        } else {
            format!(" Command of layer {index} ")
        };
        (title, shown)
    }

    /// Does `n` pass the change and name filters (itself, or something
    /// below it)?
    fn keep(&self, n: &TreeNode) -> bool {
        if self.only_changed && !n.has_change() {
            return false;
        }
        self.filter.is_empty()
            || String::from_utf8_lossy(&n.name).contains(self.filter.as_str())
            || n.children.iter().any(|c| self.keep(c))
    }

    /// The rows of the tree pane, top to bottom.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut out = Vec::new();
        let tree = self.trees[self.layer]
            .as_ref()
            .expect("loaded on selection");
        self.walk(tree, &[], "", &mut out);
        out
    }

    fn walk(&self, node: &TreeNode, path: &[u8], prefix: &str, out: &mut Vec<Row>) {
        let mut kids: Vec<&TreeNode> = node.children.iter().filter(|c| self.keep(c)).collect();
        if self.by_size {
            kids.sort_by(|a, b| TreeNode::size_order(a, b));
        }
        for (i, c) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            let p = join(path, &c.name);
            let dir = c.kind == Kind::Dir;
            let collapsed = dir && self.collapsed.contains(&p);
            out.push(Row {
                path: p.clone(),
                prefix: format!("{prefix}{}", if last { "└── " } else { "├── " }),
                name: String::from_utf8_lossy(&c.name).into_owned(),
                size: c.size,
                change: c.change,
                dir,
                collapsed,
            });
            if dir && !collapsed {
                let inner = format!("{prefix}{}", if last { "    " } else { "│   " });
                self.walk(c, &p, &inner, out);
            }
        }
    }

    /// Applies one key.
    pub(crate) fn key(&mut self, k: Key) {
        if self.editing {
            match k {
                Key::Char(c) => self.filter.push(c),
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Enter => self.editing = false,
                Key::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                _ => {}
            }
            self.clamp();
            return;
        }
        match (k, self.pane) {
            (Key::Char('q'), _) => self.quit = true,
            (Key::Tab, Pane::Layers) => self.pane = Pane::Tree,
            (Key::Tab, Pane::Tree) => self.pane = Pane::Layers,
            (Key::Char('c'), _) => self.only_changed = !self.only_changed,
            (Key::Char('s'), _) => self.by_size = !self.by_size,
            (Key::Char('/'), _) => self.editing = true,
            (Key::Esc, _) => self.filter.clear(),
            (Key::Char(']'), _) => self.detail_top += 1,
            (Key::Char('['), _) => self.detail_top = self.detail_top.saturating_sub(1),
            (Key::Up | Key::Char('k'), Pane::Layers) if self.layer > 0 => {
                self.layer -= 1;
                self.cursor = 0;
                self.detail_top = 0;
            }
            (Key::Down | Key::Char('j'), Pane::Layers) if self.layer + 1 < self.layers.len() => {
                self.layer += 1;
                self.cursor = 0;
                self.detail_top = 0;
            }
            (Key::Up | Key::Char('k'), Pane::Tree) => self.cursor = self.cursor.saturating_sub(1),
            (Key::Down | Key::Char('j'), Pane::Tree) => self.cursor += 1,
            (Key::Enter | Key::Char(' '), Pane::Tree) => {
                if let Some(r) = self.rows().get(self.cursor) {
                    if r.dir && !self.collapsed.remove(&r.path) {
                        self.collapsed.insert(r.path.clone());
                    }
                }
            }
            _ => {}
        }
        self.select();
        self.clamp();
    }

    /// Builds the selected layer's tree if it is not built yet.
    fn select(&mut self) {
        if self.trees[self.layer].is_none() {
            self.trees[self.layer] = Some((self.load)(self.layer));
        }
    }

    /// How many layers' trees are built.
    #[cfg(test)]
    fn loaded(&self) -> usize {
        self.trees.iter().filter(|t| t.is_some()).count()
    }

    /// Keeps the tree cursor on a row.
    fn clamp(&mut self) {
        let n = self.rows().len();
        self.cursor = self.cursor.min(n.saturating_sub(1));
    }
}

/// `text` in lines of at most `width` characters (at least 1), broken at
/// whitespace (runs of it become one space), words longer than a line cut.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        if len > 0 && len + 1 + word.len() > width {
            out.push(std::mem::take(&mut line));
            len = 0;
        }
        // A word longer than a line starts one (pushed above) and is cut.
        while word.len() > width {
            let rest = word.split_off(width);
            out.push(word.into_iter().collect());
            word = rest;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        len += word.len();
        line.extend(word);
    }
    if len > 0 || out.is_empty() {
        out.push(line);
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        kind: Kind,
        size: u64,
        change: Option<Change>,
        kids: Vec<TreeNode>,
    ) -> TreeNode {
        TreeNode {
            name: name.into(),
            kind,
            size,
            change,
            children: kids,
        }
    }

    fn file(name: &str, size: u64, change: Option<Change>) -> TreeNode {
        node(name, Kind::File, size, change, vec![])
    }

    /// Two layers: layer 0 adds etc/{passwd,motd} and opt/a; layer 1
    /// changes etc/passwd and deletes opt/a.
    fn sample() -> Explorer<'static> {
        let l0 = node(
            "",
            Kind::Dir,
            15,
            None,
            vec![
                node(
                    "etc",
                    Kind::Dir,
                    9,
                    Some(Change::Added),
                    vec![
                        file("motd", 5, Some(Change::Added)),
                        file("passwd", 4, Some(Change::Added)),
                    ],
                ),
                node(
                    "opt",
                    Kind::Dir,
                    6,
                    Some(Change::Added),
                    vec![file("a", 6, Some(Change::Added))],
                ),
            ],
        );
        let l1 = node(
            "",
            Kind::Dir,
            12,
            None,
            vec![
                node(
                    "etc",
                    Kind::Dir,
                    12,
                    Some(Change::Changed),
                    vec![
                        file("motd", 5, None),
                        file("passwd", 7, Some(Change::Changed)),
                    ],
                ),
                node(
                    "opt",
                    Kind::Dir,
                    0,
                    Some(Change::Changed),
                    vec![file("a", 0, Some(Change::Deleted))],
                ),
            ],
        );
        let info = |i: usize| LayerInfo {
            index: i,
            id: format!("id{i}"),
            size: 1000 * (i as u64 + 1),
            created_by: format!("step {i}"),
        };
        let trees = [l0, l1];
        Explorer::new(vec![info(0), info(1)], move |i| trees[i].clone())
    }

    /// A created_by longer than its pane shows a page at a time: `]` and
    /// `[` scroll it within bounds, the title says which lines, and another
    /// layer starts at its top.
    #[test]
    fn a_long_command_scrolls_in_its_pane() {
        let mut e = sample();
        e.layers[0].created_by = (1..=10)
            .map(|i| format!("word{i:02}"))
            .collect::<Vec<_>>()
            .join(" ");
        // 10 words of 6 characters: one per line at width 6, 3 shown.
        let (title, shown) = e.detail_view(6, 3);
        assert_eq!(shown, ["word01", "word02", "word03"]);
        assert!(title.contains("lines 1-3 of 10"), "{title}");
        for _ in 0..4 {
            e.key(Key::Char(']'));
        }
        let (title, shown) = e.detail_view(6, 3);
        assert_eq!(shown, ["word05", "word06", "word07"]);
        assert!(title.contains("lines 5-7 of 10"), "{title}");
        for _ in 0..20 {
            e.key(Key::Char(']'));
        }
        let (_, shown) = e.detail_view(6, 3);
        assert_eq!(
            shown,
            ["word08", "word09", "word10"],
            "stops at the last page"
        );
        e.key(Key::Char('['));
        assert_eq!(e.detail_view(6, 3).1, ["word07", "word08", "word09"]);
        // A command that fits has the plain title and no scrolling.
        e.key(Key::Down);
        let (title, shown) = e.detail_view(6, 3);
        assert_eq!(title, " Command of layer 1 ");
        assert_eq!(shown, ["step 1"]);
        assert_eq!(e.detail_top, 0);
    }

    fn lines(e: &Explorer<'_>) -> Vec<String> {
        e.rows().iter().map(Row::line).collect()
    }

    #[test]
    fn rows_show_the_tree_of_the_selected_layer_with_its_marks() {
        let mut e = sample();
        assert_eq!(
            e.layer_lines(),
            vec!["  0    1.0kB  step 0", "  1    2.0kB  step 1"]
        );
        assert_eq!(
            lines(&e),
            vec![
                "      9B A ├── etc/",
                "      5B A │   ├── motd",
                "      4B A │   └── passwd",
                "      6B A └── opt/",
                "      6B A     └── a",
            ]
        );
        e.key(Key::Down);
        assert_eq!((e.layer, e.loaded()), (1, 2));
        assert_eq!(
            lines(&e),
            vec![
                "     12B C ├── etc/",
                "      5B   │   ├── motd",
                "      7B C │   └── passwd",
                "      0B C └── opt/",
                "      0B D     └── a",
            ]
        );
        // No layer below 0 or above the last.
        e.key(Key::Char('j'));
        assert_eq!(e.layer, 1);
        e.key(Key::Char('k'));
        e.key(Key::Up);
        assert_eq!(e.layer, 0);
    }

    #[test]
    fn tab_moves_the_keys_to_the_tree_and_enter_collapses() {
        let mut e = sample();
        e.key(Key::Tab);
        assert_eq!(e.pane, Pane::Tree);
        e.key(Key::Down);
        e.key(Key::Down);
        e.key(Key::Down);
        assert_eq!((e.layer, e.cursor), (0, 3));
        assert_eq!(e.rows()[3].name, "opt");
        e.key(Key::Enter);
        assert_eq!(lines(&e).last().unwrap(), "      6B A └── opt/+");
        assert_eq!(e.rows().len(), 4);
        e.key(Key::Down); // already on the last row
        assert_eq!(e.cursor, 3);
        e.key(Key::Char(' '));
        assert_eq!(e.rows().len(), 5);
        // Enter on a file does nothing.
        e.key(Key::Down);
        e.key(Key::Enter);
        assert_eq!(e.rows().len(), 5);
        // Collapse etc, then the cursor past the end is pulled back.
        e.key(Key::Up);
        e.key(Key::Up);
        e.key(Key::Up);
        e.key(Key::Up);
        assert_eq!(e.cursor, 0);
        e.key(Key::Enter);
        assert_eq!(e.rows().len(), 3);
        e.key(Key::Tab);
        e.key(Key::Down);
        assert_eq!((e.layer, e.pane), (1, Pane::Layers));
        assert_eq!(e.rows()[0].line(), "     12B C ├── etc/+");
        e.key(Key::Char('q'));
        assert!(e.quit);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("a b  c", 10), vec!["a b c"]);
        assert_eq!(
            wrap("/bin/sh -c apt-get update && apt-get install", 12),
            vec!["/bin/sh -c", "apt-get", "update &&", "apt-get", "install"]
        );
        // Exactly the width fits.
        assert_eq!(wrap("abc def", 7), vec!["abc def"]);
        assert_eq!(wrap("abc def", 6), vec!["abc", "def"]);
        assert_eq!(wrap("x abcdefghij y", 4), vec!["x", "abcd", "efgh", "ij y"]);
        assert_eq!(wrap("ab", 0), vec!["a", "b"]);
        // Nothing is lost: the words come back in order.
        let t = "RUN /bin/sh -c set -eux; apt-get update; rm -rf /var/lib/apt/lists/*";
        for w in 1..40 {
            let l = wrap(t, w);
            assert!(l.iter().all(|x| x.chars().count() <= w), "{w}: {l:?}");
            assert_eq!(l.concat().replace(' ', ""), t.replace(' ', ""), "{w}");
        }
    }

    #[test]
    fn the_detail_is_the_whole_created_by_of_the_selected_layer() {
        let mut e = sample();
        e.layers[1].created_by = "/bin/sh -c echo one two three".into();
        assert_eq!(e.detail_lines(80), vec!["step 0"]);
        e.key(Key::Down);
        assert_eq!(
            e.detail_lines(14),
            vec!["/bin/sh -c", "echo one two", "three"]
        );
    }

    #[test]
    fn s_sorts_by_size_largest_first_and_back_to_names() {
        let mut e = sample();
        e.key(Key::Char('s'));
        assert!(e.by_size);
        // etc (9) before opt (6); in etc motd (5) before passwd (4).
        assert_eq!(
            lines(&e),
            vec![
                "      9B A ├── etc/",
                "      5B A │   ├── motd",
                "      4B A │   └── passwd",
                "      6B A └── opt/",
                "      6B A     └── a",
            ]
        );
        e.key(Key::Down);
        // Layer 1: passwd (7) before motd (5); etc (12) before opt (0).
        let names: Vec<String> = e.rows().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, vec!["etc", "passwd", "motd", "opt", "a"]);
        assert_eq!(e.rows()[1].prefix, "│   ├── ");
        assert_eq!(e.rows()[2].prefix, "│   └── ");
        // Ties by name; sorting combines with the filter.
        e.key(Key::Char('/'));
        e.key(Key::Char('s'));
        e.key(Key::Enter);
        let names: Vec<String> = e.rows().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, vec!["etc", "passwd"]);
        assert!(e.by_size, "s typed into the filter is text");
        e.key(Key::Esc);
        e.key(Key::Char('s'));
        assert!(!e.by_size);
        let names: Vec<String> = e.rows().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, vec!["etc", "motd", "passwd", "opt", "a"]);
    }

    #[test]
    fn c_shows_only_changes_and_slash_filters_by_name() {
        let mut e = sample();
        e.key(Key::Down);
        e.key(Key::Char('c'));
        assert_eq!(
            lines(&e),
            vec![
                "     12B C ├── etc/",
                "      7B C │   └── passwd",
                "      0B C └── opt/",
                "      0B D     └── a",
            ]
        );
        e.key(Key::Char('c'));
        assert_eq!(e.rows().len(), 5);
        e.key(Key::Char('/'));
        assert!(e.editing);
        // While typing, q and c are text.
        for c in "mot".chars() {
            e.key(Key::Char(c));
        }
        assert!(!e.quit && !e.only_changed);
        assert_eq!(
            lines(&e),
            vec!["     12B C └── etc/", "      5B       └── motd"]
        );
        e.key(Key::Backspace);
        e.key(Key::Backspace);
        e.key(Key::Backspace);
        assert_eq!(e.rows().len(), 5);
        e.key(Key::Char('a'));
        e.key(Key::Enter);
        assert!(!e.editing);
        assert_eq!(e.filter, "a");
        // "a" is in passwd and a; both pass, with their directories.
        let names: Vec<String> = e.rows().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, vec!["etc", "passwd", "opt", "a"]);
        // Filter and changes combine.
        e.key(Key::Char('c'));
        e.key(Key::Esc);
        assert!(e.filter.is_empty());
        assert_eq!(e.rows().len(), 4);
    }
}
