//! The read-write branch of a `diff` or `commit` target, and what it lies
//! on.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::image::commit::check_branch;
use crate::mount::Source;
use crate::store::{MountRecord, Store};

/// The branch directory of `target` (a live read-write mount's, or
/// `target` itself), with the live mount's record if there is one.
pub(crate) fn branch_of(
    store: &Store,
    target: &Path,
    plain: bool,
) -> Result<(PathBuf, Option<MountRecord>)> {
    let canon = target
        .canonicalize()
        .with_context(|| format!("{}", target.display()))?;
    let mounts = store.mounts()?;
    if let Some(m) = mounts.iter().find(|m| m.mountpoint == canon) {
        let rw = m.rw.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{} is a read-only mount: it has no changes",
                canon.display()
            )
        })?;
        return Ok((rw, Some(m.clone())));
    }
    let rw = check_branch(&canon, plain)?;
    let m = mounts.into_iter().find(|m| m.rw.as_deref() == Some(&rw));
    Ok((rw, m))
}

/// The branch of `target` and what it lies on: `image`, else the live
/// mount's image or directories, else the image the branch records.
pub(crate) fn branch_and_base(
    store: &Store,
    target: &Path,
    image: Option<&str>,
    plain: bool,
) -> Result<(PathBuf, Source)> {
    let (rw, m) = branch_of(store, target, plain)?;
    if let Some(i) = image {
        return Ok((rw, Source::Image(store.resolve(i)?)));
    }
    if let Some(source) = m.as_ref().and_then(Source::of_record) {
        return Ok((rw, source));
    }
    match crate::upper::branch_image(&rw) {
        Some(id) => Ok((rw, Source::Image(id))),
        None => bail!(
            "{}: which image is it a branch of? Give --image IMAGE (the branch does not record it)",
            rw.display()
        ),
    }
}
