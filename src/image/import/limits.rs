//! Bounds on what an import writes under the store's `tmp/`: a largest
//! layer (`--max-layer-size`), a free-space margin kept on the store's
//! filesystem (`--min-free`, checked with `statvfs` as a layer grows), and
//! write errors told apart from decompression errors (an `ENOSPC` reads
//! "no space left on device while writing layer X").

use std::io;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

/// The default `--max-layer-size`: 64 GiB, larger than any layer a real
/// image is likely to carry, and small enough that a compression bomb stops
/// long before it fills a large disk. The free-space check stops a smaller
/// disk earlier anyway.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

/// Free space is checked each time this many more bytes have been written.
const CHECK_EVERY: u64 = 4 << 20;

/// Limits of one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed layer accepted; `None` for no limit.
    pub max_layer_size: Option<u64>,
    /// Bytes kept free on the store's filesystem; `None` for the default
    /// (5% of the filesystem, at most 1 GiB).
    pub min_free: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_size: Some(DEFAULT_MAX_LAYER_SIZE),
            min_free: None,
        }
    }
}

/// Parses a size: a number of bytes with an optional binary suffix (`K`,
/// `M`, `G`, `T`, optionally followed by `iB` or `B`); `none` is no limit.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 512M, 64G or none)"))?;
    let shift = match suffix
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?} is not a size (like 512M, 64G or none)")),
    };
    n.checked_mul(1u64 << shift)
        .map(Some)
        .ok_or_else(|| format!("{s:?} is too large a size"))
}

/// Counts what is written to one file under `tmp/` and enforces
/// [`Limits`] on it.
pub(super) struct Meter<'a> {
    what: String,
    root: &'a Path,
    max: Option<u64>,
    min_free: Option<u64>,
    written: u64,
    next_check: u64,
}

impl<'a> Meter<'a> {
    /// A meter for `what` ("layer 0 (x.tar)"), written in the store at
    /// `root`; `max` is the size limit of this file, if any.
    pub(super) fn new(what: &str, root: &'a Path, max: Option<u64>, limits: &Limits) -> Self {
        Meter {
            what: what.to_string(),
            root,
            max,
            min_free: limits.min_free,
            written: 0,
            next_check: 0,
        }
    }

    /// Refuses a file of `size` bytes past the size limit.
    pub(super) fn check_size(&self, size: u64) -> Result<()> {
        if let Some(max) = self.max {
            if size > max {
                bail!(
                    "{} is larger than --max-layer-size ({}): stopped after {} bytes",
                    self.what,
                    human(max),
                    self.written
                );
            }
        }
        Ok(())
    }

    /// Before `n` more bytes are written: refuses them past the size limit
    /// or when the filesystem would keep less than its margin free.
    pub(super) fn grow(&mut self, n: u64) -> Result<()> {
        let after = self.written.saturating_add(n);
        self.check_size(after)?;
        if after >= self.next_check {
            self.check_free(n)?;
            self.next_check = after.saturating_add(CHECK_EVERY);
        }
        Ok(())
    }

    /// After `n` bytes were written.
    pub(super) fn wrote(&mut self, n: u64) {
        self.written += n;
    }

    /// Fails unless `need` more bytes fit while the margin stays free.
    pub(super) fn check_free(&self, need: u64) -> Result<()> {
        let Ok(st) = crate::sys::statvfs(self.root) else {
            return Ok(());
        };
        let frsize = st.f_frsize;
        let free = st.f_bavail.saturating_mul(frsize);
        let total = st.f_blocks.saturating_mul(frsize);
        let margin = self.min_free.unwrap_or((total / 20).min(1 << 30));
        if free < margin.saturating_add(need) {
            bail!(
                "stopped writing {} after {} bytes: the store's filesystem ({}) has {} free and {} more are needed, keeping {} free (--min-free)",
                self.what,
                self.written,
                self.root.display(),
                human(free),
                human(need),
                human(margin)
            );
        }
        Ok(())
    }

    /// The error for a failed write (or fsync) of the file.
    pub(super) fn write_error(&self, e: io::Error) -> anyhow::Error {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            anyhow!(
                "no space left on device while writing {} ({} bytes written)",
                self.what,
                self.written
            )
        } else {
            anyhow!(
                "writing {} ({} bytes written): {e}",
                self.what,
                self.written
            )
        }
    }
}

/// `n` bytes for people: "8.0 GiB (8589934592 bytes)".
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("none"), Ok(None));
        assert_eq!(parse_size("512"), Ok(Some(512)));
        assert_eq!(parse_size("4K"), Ok(Some(4096)));
        assert_eq!(parse_size("8MiB"), Ok(Some(8 << 20)));
        assert_eq!(parse_size("64g"), Ok(Some(64 << 30)));
        assert_eq!(parse_size("2GB"), Ok(Some(2 << 30)));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
