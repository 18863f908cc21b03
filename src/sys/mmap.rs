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

/// Maps `len` bytes of `file` from byte `offset` read-only (any offset:
/// the map starts at the page below it, the slice at `offset`).
///
/// For the same files as [`map_readonly`], when only a window of a large
/// file is needed at a time: the index builder walks a layer tar 32 MiB
/// at a time, so a tar of any size costs only its current window in
/// resident memory (unmapping a window lets its pages go).
pub fn map_range_readonly(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: as for `map_readonly`: the file is not modified while
    // mapped, and the map is read-only. memmap2 checks nothing about the
    // range against the file's length; a window past its end would fault
    // on access, so the callers map only inside the length they read.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)
    }
}
