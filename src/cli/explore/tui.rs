//! The terminal side of `explore`: reads keys, draws [`Explorer`]'s rows
//! with ratatui over crossterm. All state lives in the pure model.

use std::io::IsTerminal;

use anyhow::{bail, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Borders, List, ListState, Paragraph};

use super::{Explorer, Key, LayerInfo, Pane, Row};
use crate::cli::render::short;
use crate::cli::store::image_config;
use crate::image::export::ImageLayers;
use crate::layer::index::Kind;
use crate::oci::layer_created_by;
use crate::store::Store;
use crate::union::inspect::{self, TreeNode};

/// `explore IMAGE`.
pub(crate) fn explore(store: &Store, image: &str) -> Result<()> {
    let id = store.resolve(image)?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("explore needs a terminal (use `layerfs tree` or `layers` in scripts)");
    }
    let img = ImageLayers::open(store, &id)?;
    let rec = store.image(&id)?;
    let n = img.layers.len();
    let created_by = layer_created_by(&image_config(store, &id)?, n);
    let mut layers = Vec::new();
    for (i, created_by) in created_by.into_iter().enumerate() {
        let pos = (n - 1 - i) as u16;
        layers.push(LayerInfo {
            index: i,
            id: short(&img.layers[pos as usize].chain_id).to_string(),
            size: store.layer(&rec.layers[i])?.size,
            created_by,
        });
    }
    // The root is in every view: `tree` of "" always gives a node.
    let load = |i: usize| {
        inspect::tree(&img.layers, (n - 1 - i) as u16, b"").unwrap_or(TreeNode {
            name: Vec::new(),
            kind: Kind::Dir,
            size: 0,
            change: None,
            children: Vec::new(),
        })
    };
    let mut ui = Explorer::new(layers, load);
    let mut term = ratatui::init();
    let res = run(&mut term, &mut ui);
    ratatui::restore();
    res
}

fn run(term: &mut ratatui::DefaultTerminal, ui: &mut Explorer<'_>) -> Result<()> {
    while !ui.quit {
        term.draw(|f| draw(f, ui))?;
        if let Event::Key(k) = event::read()? {
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let key = match k.code {
                KeyCode::Up => Key::Up,
                KeyCode::Down => Key::Down,
                KeyCode::Tab => Key::Tab,
                KeyCode::Enter => Key::Enter,
                KeyCode::Esc => Key::Esc,
                KeyCode::Backspace => Key::Backspace,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break,
                KeyCode::Char(c) => Key::Char(c),
                _ => continue,
            };
            ui.key(key);
        }
    }
    Ok(())
}

fn draw(f: &mut ratatui::Frame, ui: &mut Explorer<'_>) {
    let area = f.area();
    let detail = ui.detail_lines(area.width.saturating_sub(2) as usize);
    // The whole created_by, up to a third of the screen.
    let dh = (detail.len() as u16 + 2).min((area.height / 3).max(3));
    let [main, cmd, status] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Min(3),
            Constraint::Length(dh),
            Constraint::Length(1),
        ])
        .areas(area);
    let [left, right] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .areas(main);
    let focus = |p: Pane| {
        if ui.pane == p {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        }
    };
    let hl = Style::default().add_modifier(Modifier::REVERSED);
    let layers = List::new(ui.layer_lines())
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(focus(Pane::Layers))
                .title(if ui.pane == Pane::Layers {
                    " Layers * "
                } else {
                    " Layers "
                }),
        )
        .highlight_symbol("> ")
        .highlight_style(hl);
    let mut ls = ListState::default().with_selected(Some(ui.layer));
    f.render_stateful_widget(layers, left, &mut ls);

    let rows = ui.rows();
    let sel = ui.selected();
    let mut title = format!(" Layer {} ({}) ", sel.index, sel.id);
    if ui.only_changed {
        title.push_str("[changes only] ");
    }
    if !ui.filter.is_empty() {
        title.push_str(&format!("[filter: {}] ", ui.filter));
    }
    if ui.by_size {
        title.push_str("[by size] ");
    }
    if ui.pane == Pane::Tree {
        title.push_str("* ");
    }
    let mut lines: Vec<String> = rows.iter().map(Row::line).collect();
    if lines.is_empty() {
        lines.push(if !ui.filter.is_empty() {
            "(no name contains the filter)".into()
        } else if ui.only_changed {
            "(this layer changes nothing)".into()
        } else {
            "(empty)".into()
        });
    }
    let tree = List::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(focus(Pane::Tree))
                .title(title),
        )
        .highlight_symbol("> ")
        .highlight_style(hl);
    let mut ts = ListState::default().with_selected((!rows.is_empty()).then_some(ui.cursor));
    f.render_stateful_widget(tree, right, &mut ts);

    let (cmd_title, shown) = ui.detail_view(
        area.width.saturating_sub(2) as usize,
        dh.saturating_sub(2) as usize,
    );
    f.render_widget(
        Paragraph::new(shown.join("\n"))
            .block(Block::default().borders(Borders::ALL).title(cmd_title)),
        cmd,
    );

    let help = if ui.editing {
        format!("filter: {}_   (Enter: keep, Esc: clear)", ui.filter)
    } else {
        help_line(area.width as usize).into()
    };
    f.render_widget(Paragraph::new(help), status);
}

/// The key help of the status line: the longest wording that fits in
/// `width` columns (every key is named in all of them).
fn help_line(width: usize) -> &'static str {
    const TIERS: [&str; 3] = [
        "↑↓/jk move  Tab pane  Enter/Space collapse  c changes  s size/name  / filter  [ ] command  q quit",
        "↑↓ move  Tab pane  ⏎ collapse  c changes  s sort  / filter  [ ] cmd  q quit",
        "↑↓ Tab ⏎ c s / [ ] q",
    ];
    TIERS
        .into_iter()
        .find(|t| t.chars().count() <= width)
        .unwrap_or(TIERS[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status line names every key in whatever width it gets.
    #[test]
    fn the_help_line_fits_the_width() {
        for width in [20, 40, 79, 80, 94, 120, 200] {
            let h = help_line(width);
            assert!(h.chars().count() <= width, "{width}: {h}");
            for key in ["↑↓", "Tab", "c", "s", "/", "[ ]", "q"] {
                assert!(h.contains(key), "{width}: {h} lacks {key}");
            }
        }
        assert!(help_line(80).contains("filter"), "80 columns get words");
        assert!(
            help_line(100).contains("Enter/Space"),
            "100 columns get it all"
        );
    }
}
