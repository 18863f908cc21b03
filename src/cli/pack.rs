//! Images out of branches and the store: commit, export, save.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::branch::branch_and_base;
use super::{absolute, CommitArgs, ExportArgs};
use crate::image::commit::{commit as commit_branch, CommitOptions};
use crate::image::export::{
    export as export_tar, save as save_images, ExportOptions, ImageLayers, SaveFormat,
};
use crate::mount::Source;
use crate::store::Store;

/// `commit RWDIR`: prints the new image id.
pub(crate) fn commit(store: &Store, out: &mut impl Write, a: CommitArgs) -> Result<()> {
    let (rw, id) = match branch_and_base(store, &a.rwdir, a.image.as_deref(), a.plain)? {
        (rw, Source::Image(id)) => (rw, id),
        (rw, Source::Dirs(_)) => bail!(
            "{}: a branch of directory branches has no image to commit onto; give --image IMAGE",
            rw.display()
        ),
    };
    let opts = CommitOptions {
        message: a.message,
        author: a.author,
        changes: a.changes,
        tags: a.tags,
        plain: a.plain,
    };
    let new = commit_branch(store, &id, &rw, &opts)?;
    writeln!(out, "{new}")?;
    Ok(())
}

/// `export IMAGE [-o FILE]`: the merged tree as one tar, to FILE (written
/// whole, then renamed into place) or to stdout (not a terminal).
pub(crate) fn export(store: &Store, out: &mut impl Write, a: ExportArgs) -> Result<()> {
    let id = store.resolve(&a.image)?;
    let img = ImageLayers::open(store, &id)?;
    let mut opts = ExportOptions {
        exclude: a.exclude,
        replace: Vec::new(),
    };
    for r in a.replace {
        let (p, f) = r
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--replace {r:?}: expected PATH=FILE"))?;
        opts.replace.push((p.to_string(), PathBuf::from(f)));
    }
    match a.output {
        Some(o) => {
            let tmp = o.with_file_name(format!(
                ".{}.tmp-{}",
                o.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            let r = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))
                .and_then(|f| export_tar(&img, &opts, f))
                .and_then(|()| Ok(std::fs::rename(&tmp, &o)?));
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!("refusing to write a tar to a terminal; give -o FILE or redirect stdout");
            }
            export_tar(&img, &opts, out)
        }
    }
}

/// `save IMAGE... -o OUT`.
pub(crate) fn save(
    store: &Store,
    images: &[String],
    output: &Path,
    format: SaveFormat,
) -> Result<()> {
    let mut ids: Vec<String> = Vec::new();
    for i in images {
        let id = store.resolve(i)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    save_images(store, &ids, &absolute(output), format)
}
