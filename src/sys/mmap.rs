//! The one memory map of layerfs: a whole file, read-only.

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Maps all of `file` read-only.
///
/// Only for files that nobody modifies while mapped: layer tars and index
/// files of the store (written once into `tmp/`, published by rename,
/// never written again, removed only when no mount uses the layer) and a
/// layer tar being imported (ours alone in `tmp/` until it is published).
/// A truncation of such a file by another program would be a corruption
/// of the store that mmap cannot guard against (the reader would get
/// SIGBUS); layerfs itself never does it.
pub fn map_readonly(file: &File) -> io::Result<Mmap> {
    // SAFETY: see above: the files mapped here are immutable while mapped,
    // and the map is read-only.
    unsafe { Mmap::map(file) }
}
