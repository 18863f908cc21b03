//! Staging one layer blob under `tmp/`: decompress, hash (the blob's
//! digest and the diff id), write `layer.tar`, index it. A blob in a file
//! is read where it lies ([`stage_layer`]; an uncompressed one is copied
//! in the kernel); a blob still arriving is read as a stream
//! ([`stage_stream`]).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::limits::{Limits, Meter};
use super::{decompressor, detect_compression, Compression};
use crate::layer::index::build::BuildStats;
use crate::layer::index::write_index_of;
use crate::store::{Staging, Store};

/// A staged layer: its directory, diff id, index counts and tar size.
pub(super) type Staged = (Staging, String, BuildStats, u64);

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
    progress: Option<ProgressBar>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        if let Some(p) = &self.progress {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

/// The decompressing path of [`stage_layer`]: writes the uncompressed
/// tar to `tar_path`; returns its diff id and size.
fn stage_compressed(
    blob: Box<dyn Read + Send>,
    tar_path: &Path,
    expect_blob: Option<&str>,
    label: &str,
    progress: Option<ProgressBar>,
    meter: &mut Meter,
) -> Result<(String, u64)> {
    let mut hashing = Hashing {
        inner: blob,
        hash: Sha256::new(),
        count: 0,
        progress,
    };
    let (diff_id, size) = {
        let (mut dec, comp) = decompressor(BufReader::with_capacity(1 << 20, &mut hashing))
            .with_context(|| format!("{label}: reading"))?;
        let out = crate::store::create_private(tar_path)?;
        meter.check_free(0)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        // An uncompressed blob is its own layer tar: its digest is the diff
        // id, hashed once by `hashing`.
        let mut h = (comp != Compression::None).then(Sha256::new);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match dec.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => bail!("{label}: corrupt {comp:?} data: {e}"),
            };
            if let Some(h) = h.as_mut() {
                h.update(&buf[..n]);
            }
            // Errors of the writer are told from those of the reader.
            meter.grow(n as u64)?;
            out.write_all(&buf[..n]).map_err(|e| meter.write_error(e))?;
            meter.wrote(n as u64);
            size += n as u64;
        }
        let f = out
            .into_inner()
            .map_err(|e| meter.write_error(e.into_error()))?;
        f.sync_all().map_err(|e| meter.write_error(e))?;
        (h.map(|h| hex::encode(h.finalize())), size)
    };
    // Drain what the decompressor did not need (trailing padding) so the
    // blob digest covers the whole blob.
    io::copy(&mut hashing, &mut io::sink())?;
    let blob_digest = hex::encode(hashing.hash.clone().finalize());
    if let Some(expect) = expect_blob {
        if blob_digest != expect {
            bail!("{label}: blob does not match its digest: descriptor says sha256:{expect}, content is sha256:{blob_digest}");
        }
    }
    Ok((diff_id.unwrap_or(blob_digest), size))
}

/// Copies `size` bytes of `src` at `off` (an uncompressed layer tar) to
/// `dst` in the kernel (`copy_file_range`) while this thread hashes what
/// landed in `dst`, chunk by chunk behind the copy, so the digest is the
/// stored bytes' own; writeback of each chunk starts as soon as it is
/// copied, so the final fsync has little left to wait for. Returns the
/// sha256 of the copy. With `punch` (a writable handle on `src`, a spool
/// of ours read for the last time), each chunk's blocks are freed from
/// `src` once copied, so the bytes are on disk once, not twice.
fn copy_and_hash(
    src: &File,
    off: u64,
    size: u64,
    dst: &File,
    progress: Option<&ProgressBar>,
    meter: &mut Meter,
    punch: Option<&File>,
) -> Result<String> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 16 << 20;
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
    std::thread::scope(|scope| {
        let copier = scope.spawn(move || -> Result<()> {
            let mut buf = Vec::new();
            let mut at = 0u64;
            crate::sys::advise_sequential(src);
            while at < size {
                let len = CHUNK.min(size - at);
                // Have the disk read the next chunk while this one copies.
                let next = CHUNK.min(size - at - len);
                if next > 0 {
                    crate::sys::prefetch(src, off + at + len, next);
                }
                // Without punching, the whole size was checked up front;
                // with it, the source shrinks as the copy grows.
                if punch.is_some() {
                    meter.grow(len)?;
                }
                let mut done = crate::sys::copy_range_at(src, off + at, dst, at, len)
                    .map_err(|e| meter.write_error(io::Error::from_raw_os_error(e)))?;
                // Where the kernel cannot copy, copy through user space.
                while done < len {
                    buf.resize(CHUNK as usize, 0);
                    let want = (len - done) as usize;
                    let n = src.read_at(&mut buf[..want], off + at + done)?;
                    if n == 0 {
                        bail!("the source ended early");
                    }
                    dst.write_all_at(&buf[..n], at + done)
                        .map_err(|e| meter.write_error(e))?;
                    done += n as u64;
                }
                meter.wrote(len);
                if let Some(p) = punch {
                    // Best effort: a filesystem without holes keeps both.
                    let _ = crate::sys::punch_hole(p, off + at, len);
                }
                crate::sys::start_writeback(dst, at, len);
                if tx.send((at, len)).is_err() {
                    break;
                }
                at += len;
            }
            Ok(())
        });
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK as usize];
        for (at, len) in rx {
            let b = &mut buf[..len as usize];
            dst.read_exact_at(b, at)?;
            h.update(&*b);
            if let Some(p) = progress {
                p.inc(len);
            }
        }
        copier.join().expect("copy thread panicked")?;
        Ok(hex::encode(h.finalize()))
    })
}

/// Reads one layer blob (`size` bytes of `src` at `off`) into a staging
/// directory: decompress, hash (the blob's digest and the uncompressed
/// diff id), write `layer.tar`, build and write its index. `expect_blob`
/// is the descriptor digest, if the format has one. An uncompressed blob
/// is its own layer tar: copied in the kernel and hashed once. `punch`
/// frees the copied bytes from `src` (see [`copy_and_hash`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn stage_layer(
    store: &Store,
    src: File,
    off: u64,
    size: u64,
    expect_blob: Option<&str>,
    label: &str,
    progress: Option<ProgressBar>,
    limits: &Limits,
    punch: Option<File>,
) -> Result<Staged> {
    use std::os::unix::fs::FileExt;
    let dir = store.staging("layer")?;
    let tar_path = dir.path().join("layer.tar");
    let mut head = [0u8; 8];
    let n = src.read_at(&mut head, off)?.min(size as usize);
    let mut meter = Meter::new(label, store.root(), limits.max_layer_size, limits);
    let (diff_id, size) = if detect_compression(&head[..n]) == Compression::None {
        // The size is known: refuse a layer too large, or one the disk
        // cannot hold, before copying.
        meter.check_size(size)?;
        if punch.is_none() {
            meter.check_free(size)?;
        }
        // Read back too: the digest is taken from the copy.
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tar_path)
            .with_context(|| format!("creating {}", tar_path.display()))?;
        let digest = copy_and_hash(
            &src,
            off,
            size,
            &out,
            progress.as_ref(),
            &mut meter,
            punch.as_ref(),
        )
        .with_context(|| format!("{label}: copying"))?;
        out.sync_all().map_err(|e| meter.write_error(e))?;
        if let Some(expect) = expect_blob {
            if digest != expect {
                bail!("{label}: blob does not match its digest: descriptor says sha256:{expect}, content is sha256:{digest}");
            }
        }
        (digest, size)
    } else {
        let blob = io::Read::take(
            {
                let mut f = src;
                io::Seek::seek(&mut f, io::SeekFrom::Start(off))?;
                f
            },
            size,
        );
        stage_compressed(
            Box::new(blob),
            &tar_path,
            expect_blob,
            label,
            progress,
            &mut meter,
        )?
    };
    let stats = index_staged(&dir, label)?;
    Ok((dir, diff_id, stats, size))
}

/// Like [`stage_layer`], for a blob read as a stream (`pull`: a
/// [`super::FollowReader`] on a blob still downloading), decompressed and
/// hashed as it comes, even when uncompressed (no kernel copy: the bytes
/// are not all there yet).
pub(super) fn stage_stream(
    store: &Store,
    blob: Box<dyn Read + Send>,
    expect_blob: Option<&str>,
    label: &str,
    limits: &Limits,
) -> Result<Staged> {
    let dir = store.staging("layer")?;
    let tar_path = dir.path().join("layer.tar");
    let mut meter = Meter::new(label, store.root(), limits.max_layer_size, limits);
    let (diff_id, size) = stage_compressed(blob, &tar_path, expect_blob, label, None, &mut meter)?;
    let stats = index_staged(&dir, label)?;
    Ok((dir, diff_id, stats, size))
}

/// Indexes `layer.tar` of `dir` where it lies (mapped a window at a
/// time, not read into memory), writing the `index` beside it as it is
/// built.
fn index_staged(dir: &Staging, label: &str) -> Result<BuildStats> {
    // The staged tar is ours alone until it is published, and is not
    // written again: it may be mapped (see `sys::map_range_readonly`).
    let tar_file = File::open(dir.path().join("layer.tar"))?;
    let mut f = crate::store::create_private(&dir.path().join("index"))?;
    let stats =
        write_index_of(&tar_file, &mut f).with_context(|| format!("{label}: bad layer tar"))?;
    f.sync_all()?;
    Ok(stats)
}
